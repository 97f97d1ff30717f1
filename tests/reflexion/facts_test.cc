#include "core/reflexion/facts.h"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "core/reflexion/analyzer.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/validation.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace reflexion::core {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;

google::protobuf::Struct Json(absl::string_view json) {
  google::protobuf::Struct s;
  auto st = google::protobuf::util::JsonStringToMessage(std::string(json), &s);
  EXPECT_TRUE(st.ok()) << st.ToString() << "\n" << json;
  return s;
}

// A pod whose one container "app" has `status` (a v1.ContainerStatus body
// without name) and `spec_extra` in its spec.
std::string PodJson(absl::string_view status, absl::string_view spec_extra = "",
                    absl::string_view pod_status_extra = "",
                    absl::string_view phase = "Running") {
  return absl::StrCat(
      R"({"apiVersion":"v1","kind":"Pod",
        "metadata":{"name":"web-1","namespace":"shop"},
        "spec":{"containers":[{"name":"app","image":"shop/web:v2")",
      spec_extra.empty() ? "" : ",", spec_extra, R"(}]},
        "status":{"phase":")",
      phase, R"(")", pod_status_extra.empty() ? "" : ",", pod_status_extra,
      status.empty() ? "" : R"(,"containerStatuses":[{"name":"app",)", status,
      status.empty() ? "" : "}]", "}}");
}

google::protobuf::Struct Event(absl::string_view reason,
                               absl::string_view message,
                               absl::string_view type = "Warning") {
  google::protobuf::Struct e;
  (*e.mutable_fields())["reason"].set_string_value(std::string(reason));
  (*e.mutable_fields())["message"].set_string_value(std::string(message));
  (*e.mutable_fields())["type"].set_string_value(std::string(type));
  return e;
}

v1::Incident PodIncident(const std::string& pod_json,
                         std::vector<google::protobuf::Struct> events = {},
                         std::string logs = "") {
  v1::Incident in;
  *in.mutable_pod() = Json(pod_json);
  for (auto& e : events) *in.add_pod_events() = std::move(e);
  in.set_logs(std::move(logs));
  EXPECT_TRUE(NormalizeIncident(&in, "incident.").ok());
  return in;
}

v1::Analysis AnalyzeFully(const v1::Incident& in,
                          const v1::Diagnosis& dx = {}) {
  v1::Analysis a = Analyze(in, dx, false);
  if (NeedsDeepAnalysis(a)) a = Analyze(in, dx, true);
  return a;
}

std::string Waiting(absl::string_view reason, absl::string_view message) {
  return absl::StrCat(
      R"("ready":false,"restartCount":0,"state":{"waiting":{"reason":")",
      reason, R"(","message":")", message, R"("}})");
}

std::string Crashing(int exit_code, absl::string_view reason = "Error") {
  return absl::StrCat(
      R"("ready":false,"restartCount":5,
         "state":{"waiting":{"reason":"CrashLoopBackOff","message":"back-off"}},
         "lastState":{"terminated":{"reason":")",
      reason, R"(","exitCode":)", exit_code, "}}");
}

// ---------------------------------------------------------------- facts

constexpr char kFullPod[] = R"({
  "metadata": {"name": "api-7d9f-x2", "namespace": "shop",
    "labels": {"app": "api", "pod-template-hash": "7d9f"},
    "ownerReferences": [{"kind": "ReplicaSet", "name": "api-7d9f"}]},
  "spec": {
    "nodeSelector": {"disk": "ssd"},
    "affinity": {"nodeAffinity": {}},
    "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "imagePullSecrets": [{"name": "regcred"}],
    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "api-data"}},
                {"name": "cfg", "configMap": {"name": "api-config"}},
                {"name": "tls", "secret": {"secretName": "api-tls", "optional": true}}],
    "initContainers": [{"name": "migrate", "image": "shop/migrate:3",
                        "command": ["/migrate", "up"]}],
    "containers": [{"name": "api", "image": "shop/api:3",
      "resources": {"requests": {"memory": "256Mi", "cpu": "250m", "nvidia.com/gpu": "1"},
                    "limits": {"memory": "1Gi", "cpu": "2"}},
      "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                        "periodSeconds": 10, "failureThreshold": 3},
      "readinessProbe": {"tcpSocket": {"port": 8080}},
      "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef":
                {"name": "db-creds", "key": "password"}}},
              {"name": "MODE", "valueFrom": {"configMapKeyRef":
                {"name": "api-config", "key": "mode", "optional": true}}}],
      "envFrom": [{"secretRef": {"name": "api-env"}}]}]},
  "status": {"phase": "Running", "reason": "", "message": "",
    "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
    "initContainerStatuses": [{"name": "migrate", "ready": true, "restartCount": 0,
      "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}],
    "containerStatuses": [{"name": "api", "ready": false, "restartCount": 4,
      "image": "shop/api:3",
      "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m"}},
      "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137, "signal": 9}}}]}
})";

TEST(FactsTest, ExtractsEveryFactOfAFullPod) {
  v1::Incident in;
  *in.mutable_pod() = Json(kFullPod);
  IncidentFacts f = ExtractFacts(in);
  EXPECT_TRUE(f.pod.present);
  EXPECT_EQ(f.pod.name, "api-7d9f-x2");
  EXPECT_EQ(f.pod.phase, "Running");
  EXPECT_EQ(f.pod.pod_template_hash, "7d9f");
  ASSERT_EQ(f.pod.owners.size(), 1u);
  EXPECT_EQ(f.pod.owners[0].first, "ReplicaSet");
  ASSERT_EQ(f.pod.node_selector.size(), 1u);
  EXPECT_EQ(f.pod.node_selector[0].second, "ssd");
  EXPECT_TRUE(f.pod.has_node_affinity);
  EXPECT_THAT(f.pod.tolerations, Contains("gpu:NoSchedule"));
  EXPECT_THAT(f.pod.pvc_claims, Contains("api-data"));
  EXPECT_THAT(f.pod.image_pull_secrets, Contains("regcred"));
  ASSERT_EQ(f.pod.volume_refs.size(), 2u);
  EXPECT_EQ(f.pod.volume_refs[1].name, "api-tls");
  EXPECT_TRUE(f.pod.volume_refs[1].optional);
  ASSERT_EQ(f.pod.conditions.size(), 1u);
  EXPECT_EQ(f.pod.conditions[0].reason, "ContainersNotReady");

  ASSERT_EQ(f.containers.size(), 2u);
  const ContainerFacts& init = f.containers[0];
  EXPECT_TRUE(init.init);
  EXPECT_EQ(init.name, "migrate");
  EXPECT_EQ(init.state.kind, "terminated");
  EXPECT_EQ(init.command, (std::vector<std::string>{"/migrate", "up"}));
  const ContainerFacts& api = f.containers[1];
  EXPECT_FALSE(api.init);
  EXPECT_EQ(api.state.reason, "CrashLoopBackOff");
  EXPECT_EQ(api.last_state.reason, "OOMKilled");
  EXPECT_EQ(api.last_state.exit_code, 137);
  EXPECT_EQ(api.last_state.signal, 9);
  EXPECT_EQ(api.restart_count, 4);
  EXPECT_EQ(api.resources.memory_request_bytes, 256 << 20);
  EXPECT_EQ(api.resources.memory_limit_bytes, int64_t{1} << 30);
  EXPECT_EQ(api.resources.cpu_request_millis, 250);
  EXPECT_EQ(api.resources.cpu_limit_millis, 2000);
  ASSERT_EQ(api.resources.extended_requests.size(), 1u);
  EXPECT_EQ(api.resources.extended_requests[0].first, "nvidia.com/gpu");
  EXPECT_TRUE(api.liveness.present);
  EXPECT_EQ(api.liveness.type, "httpGet");
  EXPECT_EQ(api.liveness.failure_threshold, 3);
  EXPECT_EQ(api.readiness.type, "tcpSocket");
  EXPECT_FALSE(api.startup.present);
  ASSERT_EQ(api.config_refs.size(), 3u);
  EXPECT_EQ(api.config_refs[0].kind, "Secret");
  EXPECT_EQ(api.config_refs[0].key, "password");
  EXPECT_TRUE(api.config_refs[1].optional);
  EXPECT_EQ(api.config_refs[2].via, "envFrom");
  EXPECT_TRUE(f.ignored.empty());
}

TEST(FactsTest, WrongTypesAreIgnoredAndNamedWhileTheRestIsRead) {
  v1::Incident in;
  *in.mutable_pod() = Json(R"({"metadata":{"name":"p"},
    "spec":{"containers":"not a list"},
    "status":{"phase":"Running","containerStatuses":[
      {"name":"app","restartCount":"many","ready":"yes",
       "state":{"waiting":{"reason":"CrashLoopBackOff"}},
       "lastState":{"terminated":{"exitCode":1e300,"reason":"Error"}}}, 7]}})");
  IncidentFacts f = ExtractFacts(in);
  ASSERT_EQ(f.containers.size(), 1u);
  EXPECT_EQ(f.containers[0].state.reason, "CrashLoopBackOff");
  EXPECT_EQ(f.containers[0].last_state.reason, "Error");
  EXPECT_FALSE(f.containers[0].last_state.exit_code.has_value());
  EXPECT_THAT(f.ignored, Contains("pod.spec.containers: a string, not a list"));
  EXPECT_THAT(f.ignored,
              Contains(HasSubstr("containerStatuses[0].restartCount")));
  EXPECT_THAT(f.ignored, Contains(HasSubstr("containerStatuses[1]")));
  EXPECT_THAT(f.ignored, Contains(HasSubstr("exitCode: not an integer")));
}

TEST(FactsTest, IgnoredListIsBounded) {
  std::string statuses;
  for (int i = 0; i < 30; ++i) {
    absl::StrAppend(&statuses, i ? "," : "",
                    R"({"name":"c","restartCount":"x","ready":"y"})");
  }
  v1::Incident in;
  *in.mutable_pod() = Json(
      absl::StrCat(R"({"status":{"containerStatuses":[)", statuses, "]}}"));
  IncidentFacts f = ExtractFacts(in);
  EXPECT_EQ(f.ignored.size(), static_cast<size_t>(kMaxIgnored));
  EXPECT_THAT(f.ignored.back(), HasSubstr("more"));
}

TEST(FactsTest, ParsesKubernetesQuantities) {
  EXPECT_EQ(ParseMemoryBytes("512Mi"), 512 << 20);
  EXPECT_EQ(ParseMemoryBytes("1G"), 1000000000);
  EXPECT_EQ(ParseMemoryBytes("1.5Gi"), 1610612736);
  EXPECT_EQ(ParseMemoryBytes("129e6"), 129000000);
  EXPECT_EQ(ParseMemoryBytes("128974848"), 128974848);
  EXPECT_EQ(ParseCpuMillis("250m"), 250);
  EXPECT_EQ(ParseCpuMillis("0.5"), 500);
  EXPECT_EQ(ParseCpuMillis("2"), 2000);
  EXPECT_EQ(ParseMemoryBytes("-1Gi"), std::nullopt);
  EXPECT_EQ(ParseMemoryBytes("9999999Ei"), std::nullopt);
  EXPECT_EQ(ParseMemoryBytes("12Qi"), std::nullopt);
  EXPECT_EQ(ParseMemoryBytes(""), std::nullopt);
}

TEST(FactsTest, FlatStatusesAndEventsFeedTheSameFacts) {
  v1::Incident in;
  in.set_error_type("CrashLoopBackOff");
  auto* c = in.add_container_statuses();
  c->set_name("app");
  c->set_last_termination_reason("Error");
  c->set_last_exit_code(1);
  in.add_events()->set_reason("BackOff");
  IncidentFacts f = ExtractFacts(in);
  ASSERT_EQ(f.containers.size(), 1u);
  EXPECT_EQ(f.containers[0].source, kSourceStatuses);
  EXPECT_EQ(f.containers[0].last_state.exit_code, 1);
  ASSERT_EQ(f.events.size(), 1u);
  EXPECT_EQ(f.events[0].source, kSourceEvents);
  EXPECT_TRUE(f.HasIncidentObservations());
}

// ---------------------------------------------------------------- precedence

v1::Diagnosis InventiveDiagnosis() {
  v1::Diagnosis dx;
  dx.set_source("simulated");
  auto* c = dx.add_container_statuses();
  c->set_name("app");
  c->set_waiting_reason("ErrImagePull");
  c->set_waiting_message("pull access denied");
  auto* e = dx.add_events();
  e->set_reason("Unhealthy");
  e->set_message("Liveness probe failed: timeout");
  e = dx.add_events();
  e->set_reason("Killing");
  e->set_message("Container app failed liveness probe, will be restarted");
  dx.set_logs("dial tcp 10.0.0.1:5432: connection refused\n");
  return dx;
}

TEST(PrecedenceTest, ExecutorObservationsCannotChangeThePodsSignature) {
  v1::Incident in = PodIncident(PodJson(Crashing(137, "OOMKilled")));
  v1::Analysis plain = AnalyzeFully(in);
  v1::Analysis with_dx = AnalyzeFully(in, InventiveDiagnosis());
  EXPECT_EQ(plain.signature(), "OOMKilled/memory_limit_too_low");
  EXPECT_EQ(with_dx.signature(), plain.signature());
  EXPECT_EQ(with_dx.container(), "app");
  for (const v1::Fact& f : with_dx.facts()) {
    EXPECT_THAT(f.text(), ::testing::Not(HasSubstr("probe"))) << f.source();
    EXPECT_THAT(f.text(), ::testing::Not(HasSubstr("connection refused")));
  }
}

TEST(PrecedenceTest, ExecutorEventsCannotTurnAnAppErrorIntoAProbeFailure) {
  v1::Incident in = PodIncident(PodJson(Crashing(1)));
  EXPECT_EQ(AnalyzeFully(in, InventiveDiagnosis()).signature(),
            "CrashLoopBackOff/app_error");
}

TEST(PrecedenceTest, ExecutorLogsCannotOverrideFlatIncidentStatuses) {
  v1::Incident in;
  in.set_error_type("CrashLoopBackOff");
  auto* c = in.add_container_statuses();
  c->set_name("app");
  c->set_last_termination_reason("Error");
  c->set_last_exit_code(139);
  EXPECT_EQ(AnalyzeFully(in, InventiveDiagnosis()).signature(),
            "CrashLoopBackOff/segfault");
}

TEST(PrecedenceTest, ExecutorAddsTheMemoryLimitOnlyWhenTheSpecHasNone) {
  v1::Diagnosis dx;
  dx.set_source("simulated");
  dx.set_memory_limit_bytes(64 << 20);
  v1::Incident with_limit =
      PodIncident(PodJson(Crashing(137, "OOMKilled"),
                          R"("resources":{"limits":{"memory":"1Gi"}})"));
  v1::Analysis a = AnalyzeFully(with_limit, dx);
  EXPECT_EQ(a.features().at("memory_limit_bytes"), "1073741824");
  EXPECT_THAT(a.facts(), Contains(::testing::Property(
                             &v1::Fact::source, std::string(kSourcePod))));
  v1::Incident without = PodIncident(PodJson(Crashing(137, "OOMKilled")));
  a = AnalyzeFully(without, dx);
  EXPECT_EQ(a.features().at("memory_limit_bytes"), "67108864");
  bool sourced = false;
  for (const v1::Fact& f : a.facts()) {
    if (absl::StrContains(f.text(), "memory limit")) {
      sourced = f.source() == "executor:simulated";
    }
  }
  EXPECT_TRUE(sourced);
}

TEST(PrecedenceTest, ExecutorRolloutTurnsAnAppErrorIntoABadRelease) {
  v1::Diagnosis dx;
  dx.set_source("http");
  dx.set_recent_rollout(true);
  v1::Analysis a = AnalyzeFully(PodIncident(PodJson(Crashing(2))), dx);
  EXPECT_EQ(a.signature(), "CrashLoopBackOff/bad_release");
  EXPECT_THAT(a.facts(), Contains(::testing::Property(
                             &v1::Fact::source, std::string("executor:http"))));
}

TEST(PrecedenceTest, LegacyIncidentUsesExecutorObservationsSourcedAsSuch) {
  v1::Incident in;
  in.set_pod_name("w");
  in.set_namespace_("d");
  in.set_error_type("ImagePullBackOff");
  v1::Diagnosis dx = InventiveDiagnosis();
  v1::Analysis a = AnalyzeFully(in, dx);
  EXPECT_EQ(a.signature(), "ImagePullBackOff/registry_auth");
  EXPECT_EQ(a.container(), "app");
  ASSERT_GT(a.facts_size(), 0);
  EXPECT_EQ(a.facts(0).source(), "executor:simulated");
}

// ---------------------------------------------------------------- causes

struct CauseCase {
  const char* name;
  std::string pod;
  std::vector<google::protobuf::Struct> events;
  std::string logs;
  const char* signature;
  const char* container;
};
void PrintTo(const CauseCase& c, std::ostream* os) { *os << c.name; }

google::protobuf::Struct Scheduling(absl::string_view message) {
  return Event("FailedScheduling", message);
}

std::string PendingPod(absl::string_view spec_extra = "") {
  return PodJson("", spec_extra,
                 R"("conditions":[{"type":"PodScheduled","status":"False",
                     "reason":"Unschedulable"}])",
                 "Pending");
}

std::string InitPod(absl::string_view init_status) {
  return absl::StrCat(
      R"({"metadata":{"name":"p","namespace":"d"},
         "spec":{"initContainers":[{"name":"init"}],"containers":[{"name":"app"}]},
         "status":{"phase":"Pending","initContainerStatuses":[{"name":"init",)",
      init_status, R"(}],"containerStatuses":[{"name":"app","ready":false,
         "restartCount":0,"state":{"waiting":{"reason":"PodInitializing"}}}]}})");
}

std::vector<CauseCase> CauseCases() {
  return {
      {"ImagePullNotFound",
       PodJson(Waiting("ImagePullBackOff", "Back-off")),
       {Event("Failed", "Failed to pull image: manifest unknown")},
       "",
       "ImagePullBackOff/image_not_found",
       "app"},
      {"ErrImagePullAuth",
       PodJson(Waiting("ErrImagePull", "pull access denied for x")),
       {},
       "",
       "ImagePullBackOff/registry_auth",
       "app"},
      {"ImagePullUnreachable",
       PodJson(Waiting("ErrImagePull",
                       "dial tcp: lookup reg.example: no such host")),
       {},
       "",
       "ImagePullBackOff/registry_unreachable",
       "app"},
      {"ImagePullRateLimited",
       PodJson(
           Waiting("ErrImagePull", "429 Too Many Requests - toomanyrequests")),
       {},
       "",
       "ImagePullBackOff/rate_limited",
       "app"},
      {"InvalidImageName",
       PodJson(Waiting("InvalidImageName", "couldn't parse image reference")),
       {},
       "",
       "InvalidImageName/invalid_reference",
       "app"},
      {"MissingConfigMap",
       PodJson(Waiting("CreateContainerConfigError",
                       "configmap \\\"app-config\\\" not found")),
       {},
       "",
       "CreateContainerConfigError/missing_configmap",
       "app"},
      {"MissingSecret",
       PodJson(Waiting("CreateContainerConfigError",
                       "secret \\\"db\\\" not found")),
       {},
       "",
       "CreateContainerConfigError/missing_secret",
       "app"},
      {"MissingKey",
       PodJson(Waiting("CreateContainerConfigError",
                       "couldn't find key password in Secret shop/db")),
       {},
       "",
       "CreateContainerConfigError/missing_config_key",
       "app"},
      {"CreateContainerError",
       PodJson(Waiting("CreateContainerError",
                       "executable file not found in $PATH")),
       {},
       "",
       "CreateContainerError/command_not_found",
       "app"},
      {"RunContainerError",
       PodJson(Waiting("RunContainerError", "permission denied")),
       {},
       "",
       "RunContainerError/command_not_executable",
       "app"},
      {"ContainerCreatingFailedMount",
       PodJson(Waiting("ContainerCreating", ""), "", "", "Pending"),
       {Event("FailedMount",
              "MountVolume.SetUp failed for volume \"c\" : configmap \"c\" "
              "not found")},
       "",
       "ContainerCreating/missing_configmap",
       "app"},
      {"Exit0",
       PodJson(Crashing(0, "Completed")),
       {},
       "",
       "CrashLoopBackOff/command_exits",
       "app"},
      {"Exit1",
       PodJson(Crashing(1)),
       {},
       "",
       "CrashLoopBackOff/app_error",
       "app"},
      {"Exit2",
       PodJson(Crashing(2)),
       {},
       "",
       "CrashLoopBackOff/app_error",
       "app"},
      {"Exit125",
       PodJson(Crashing(125)),
       {},
       "",
       "CrashLoopBackOff/container_runtime_error",
       "app"},
      {"Exit126",
       PodJson(Crashing(126)),
       {},
       "",
       "CrashLoopBackOff/command_not_executable",
       "app"},
      {"Exit127",
       PodJson(Crashing(127)),
       {},
       "",
       "CrashLoopBackOff/command_not_found",
       "app"},
      {"Exit128StartError",
       PodJson(Crashing(128, "StartError")),
       {},
       "",
       "CrashLoopBackOff/start_error",
       "app"},
      {"Exit137Oom",
       PodJson(Crashing(137, "OOMKilled")),
       {},
       "",
       "OOMKilled/memory_limit_too_low",
       "app"},
      {"Exit137Liveness",
       PodJson(Crashing(137)),
       {Event("Unhealthy", "Liveness probe failed: HTTP probe failed"),
        Event("Killing",
              "Container app failed liveness probe, will be "
              "restarted",
              "Normal")},
       "",
       "CrashLoopBackOff/probe_failure",
       "app"},
      {"Exit137Killed",
       PodJson(Crashing(137)),
       {},
       "",
       "CrashLoopBackOff/killed",
       "app"},
      {"Exit139",
       PodJson(Crashing(139)),
       {},
       "",
       "CrashLoopBackOff/segfault",
       "app"},
      {"Exit143Liveness",
       PodJson(Crashing(143)),
       {Event("Unhealthy", "Liveness probe failed: timeout")},
       "",
       "CrashLoopBackOff/probe_failure",
       "app"},
      {"Exit143",
       PodJson(Crashing(143)),
       {},
       "",
       "CrashLoopBackOff/terminated",
       "app"},
      {"DependencyUnavailable",
       PodJson(Crashing(1)),
       {},
       "starting\nError: could not connect to database at db:5432\n",
       "CrashLoopBackOff/dependency_unavailable",
       "app"},
      {"CertificateExpired",
       PodJson(Crashing(1)),
       {},
       "x509: certificate has expired or is not yet valid\n",
       "CrashLoopBackOff/certificate_expired",
       "app"},
      {"AuthenticationFailed",
       PodJson(Crashing(1)),
       {},
       "FATAL: password authentication failed for user \"app\"\n",
       "CrashLoopBackOff/authentication_failed",
       "app"},
      {"InitContainerCrash",
       InitPod(Crashing(1)),
       {},
       "",
       "InitContainerError/app_error",
       "init"},
      {"InitContainerImage",
       InitPod(Waiting("ImagePullBackOff", "manifest unknown")),
       {},
       "",
       "InitContainerError/image_not_found",
       "init"},
      {"NotReady",
       PodJson(R"("ready":false,"restartCount":0,"state":{"running":{}})",
               R"("readinessProbe":{"httpGet":{"port":80}})"),
       {Event("Unhealthy", "Readiness probe failed: HTTP 503")},
       "",
       "NotReady/readiness_probe_failure",
       "app"},
      {"InsufficientCpu",
       PendingPod(),
       {Scheduling("0/3 nodes are available: 3 Insufficient cpu.")},
       "",
       "Pending/insufficient_cpu",
       ""},
      {"InsufficientMemory",
       PendingPod(),
       {Scheduling("0/3 nodes are available: 3 Insufficient memory.")},
       "",
       "Pending/insufficient_memory",
       ""},
      {"InsufficientGpu",
       PendingPod(),
       {Scheduling("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")},
       "",
       "Pending/insufficient_extended_resource",
       ""},
      {"NodeSelector",
       PendingPod(),
       {Scheduling("0/3 nodes are available: 3 node(s) didn't match Pod's "
                   "node affinity/selector.")},
       "",
       "Pending/node_selector_mismatch",
       ""},
      {"NodeAffinity",
       PendingPod(),
       {Scheduling("0/3 nodes are available: 3 node(s) didn't match pod's "
                   "node affinity.")},
       "",
       "Pending/node_affinity_mismatch",
       ""},
      {"TaintNew",
       PendingPod(),
       {Scheduling("0/1 nodes are available: 1 node(s) had untolerated taint "
                   "{node-role.kubernetes.io/control-plane: }.")},
       "",
       "Pending/untolerated_taint",
       ""},
      {"TaintOld",
       PendingPod(),
       {Scheduling("0/1 nodes are available: 1 node(s) had taint {dedicated: "
                   "infra}, that the pod didn't tolerate.")},
       "",
       "Pending/untolerated_taint",
       ""},
      {"UnboundVolume",
       PendingPod(),
       {Scheduling("0/3 nodes are available: pod has unbound immediate "
                   "PersistentVolumeClaims. preemption: 0/3 nodes are "
                   "available: 3 Preemption is not helpful for scheduling.")},
       "",
       "Pending/unbound_volume",
       ""},
      {"VolumeNodeAffinity",
       PendingPod(),
       {Scheduling("0/3 nodes are available: 3 node(s) had volume node "
                   "affinity conflict.")},
       "",
       "Pending/volume_node_affinity_conflict",
       ""},
      {"HostPort",
       PendingPod(),
       {Scheduling("0/3 nodes are available: 3 node(s) didn't have free ports "
                   "for the requested pod ports.")},
       "",
       "Pending/host_port_conflict",
       ""},
      {"SchedulingMostNodesWins",
       PendingPod(),
       {Scheduling("0/5 nodes are available: 2 Insufficient cpu, 3 node(s) "
                   "had untolerated taint {a: b}.")},
       "",
       "Pending/untolerated_taint",
       ""},
      {"SchedulingTieGoesToTheActionable",
       PendingPod(),
       {Scheduling("0/4 nodes are available: 2 Insufficient memory, 2 node(s) "
                   "had untolerated taint {a: b}.")},
       "",
       "Pending/insufficient_memory",
       ""},
      {"EvictedMemoryPressure",
       PodJson(
           "", "",
           R"("reason":"Evicted","message":"The node was low on resource: memory. Container app was using 300Mi, request is 256Mi.")",
           "Failed"),
       {},
       "",
       "Evicted/memory_pressure",
       ""},
      {"EvictedOverRequest",
       PodJson(
           "", "",
           R"("reason":"Evicted","message":"The node was low on resource: memory. Threshold quantity: 100Mi, available: 36Mi. Container app was using 1.2Gi, request is 256Mi, has larger consumption of memory. ")",
           "Failed"),
       {},
       "",
       "Evicted/over_memory_request",
       "app"},
      {"EvictedEphemeral",
       PodJson(
           "", "",
           R"("reason":"Evicted","message":"Pod ephemeral local storage usage exceeds the total limit of containers 1Gi. ")",
           "Failed"),
       {},
       "",
       "Evicted/ephemeral_storage",
       ""},
  };
}

class CauseTest : public ::testing::TestWithParam<CauseCase> {};

TEST_P(CauseTest, SmallPodHasItsSignatureAndContainer) {
  const CauseCase& c = GetParam();
  v1::Incident in = PodIncident(c.pod, c.events, c.logs);
  ASSERT_TRUE(ValidateIncident(in, "incident.").ok())
      << ValidateIncident(in, "incident.");
  v1::Analysis a = AnalyzeFully(in);
  EXPECT_EQ(a.signature(), c.signature);
  EXPECT_EQ(a.container(), c.container);
  EXPECT_GT(a.facts_size(), 0);
  EXPECT_EQ(a.evidence_size() > 0, a.facts_size() > 0);
}

INSTANTIATE_TEST_SUITE_P(Causes, CauseTest, ::testing::ValuesIn(CauseCases()),
                         [](const ::testing::TestParamInfo<CauseCase>& info) {
                           return std::string(info.param.name);
                         });

// ---------------------------------------------------------------- mutations

// Random damage to a Struct tree: deletions, type changes, absurd numbers,
// deep nesting, long and random (valid UTF-8) strings, huge lists.
class Mutator {
 public:
  explicit Mutator(uint32_t seed) : rng_(seed) {}

  void Mutate(google::protobuf::Struct* s) {
    std::vector<google::protobuf::Value*> values;
    Collect(s, &values);
    if (values.empty()) return;
    google::protobuf::Value* v = values[Pick(values.size())];
    switch (Pick(10)) {
      case 0:
        v->set_null_value(google::protobuf::NULL_VALUE);
        break;
      case 1:
        v->set_number_value(Number());
        break;
      case 2:
        v->set_string_value(RandomString());
        break;
      case 3:
        v->set_bool_value(Pick(2) == 1);
        break;
      case 4: {  // deep nesting
        google::protobuf::Value* at = v;
        for (int i = 0; i < 60; ++i) {
          at = &(*at->mutable_struct_value()->mutable_fields())["state"];
        }
        at->set_string_value("bottom");
        break;
      }
      case 5: {  // a big list
        auto* l = v->mutable_list_value();
        for (int i = 0; i < 300; ++i) l->add_values()->set_number_value(i);
        break;
      }
      case 6:
        v->mutable_struct_value()->clear_fields();
        break;
      case 7:
        v->mutable_list_value()->add_values()->set_string_value(RandomString());
        break;
      default:
        if (v->has_struct_value() && v->struct_value().fields_size() > 0) {
          auto* fields = v->mutable_struct_value()->mutable_fields();
          auto it = fields->begin();
          std::advance(it, Pick(fields->size()));
          fields->erase(it);
        } else {
          v->set_string_value(std::string(5000, 'x'));
        }
    }
  }

 private:
  size_t Pick(size_t n) {
    return std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
  }

  double Number() {
    const double kSpecial[] = {
        std::nan(""), std::numeric_limits<double>::infinity(),
        -1e300,       1e300,
        -1,           137,
        0.5,          9.3e18,
        -9.3e18,      2147483648.0};
    return kSpecial[Pick(std::size(kSpecial))];
  }

  std::string RandomString() {
    const char* kPieces[] = {"a",
                             "Z",
                             " ",
                             "\"",
                             "{",
                             "}",
                             ":",
                             ",",
                             "\n",
                             "\u00e9",
                             "\u20ac",
                             "\U0001F600",
                             "Mi",
                             "Gi",
                             "OOMKilled",
                             "not found",
                             "Insufficient cpu"};
    std::string s;
    size_t n = Pick(2) ? Pick(20) : Pick(3000);
    for (size_t i = 0; i < n; ++i) s += kPieces[Pick(std::size(kPieces))];
    return s;
  }

  void Collect(google::protobuf::Struct* s,
               std::vector<google::protobuf::Value*>* out, int depth = 0) {
    if (depth > 12) return;
    for (auto& [k, v] : *s->mutable_fields()) Collect(&v, out, depth);
  }
  void Collect(google::protobuf::Value* v,
               std::vector<google::protobuf::Value*>* out, int depth) {
    out->push_back(v);
    if (v->has_struct_value())
      Collect(v->mutable_struct_value(), out, depth + 1);
    if (v->has_list_value()) {
      for (auto& item : *v->mutable_list_value()->mutable_values()) {
        Collect(&item, out, depth + 1);
      }
    }
  }

  std::mt19937 rng_;
};

TEST(MutationTest, DamagedPodsNeverCrashAndAlwaysYieldValidUtf8) {
  std::vector<std::string> seeds = {
      kFullPod, PodJson(Crashing(137, "OOMKilled")), PendingPod(),
      InitPod(
          Waiting("CreateContainerConfigError", "secret \\\"s\\\" not found")),
      PodJson(
          "", "",
          R"("reason":"Evicted","message":"The node was low on resource: memory. Container app was using 1.2Gi, request is 256Mi.")",
          "Failed")};
  Mutator m(20260101);
  std::mt19937 rng(7);
  int ok = 0, rejected = 0;
  for (int round = 0; round < 3000; ++round) {
    v1::Incident in;
    *in.mutable_pod() = Json(seeds[round % seeds.size()]);
    int mutations = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < mutations; ++i) m.Mutate(in.mutable_pod());
    *in.add_pod_events() =
        Scheduling("0/3 nodes are available: 3 Insufficient cpu.");
    google::protobuf::Struct ev = Event("Unhealthy", "Liveness probe failed");
    m.Mutate(&ev);
    *in.add_pod_events() = ev;
    absl::Status s = NormalizeIncident(&in, "incident.");
    if (s.ok()) s = ValidateIncident(in, "incident.");
    ASSERT_TRUE(s.ok() || s.code() == absl::StatusCode::kInvalidArgument) << s;
    if (!s.ok()) {
      ++rejected;
      continue;
    }
    ++ok;
    for (bool deep : {false, true}) {
      v1::Analysis a = Analyze(in, {}, deep);
      ASSERT_EQ(FindInvalidUtf8(a), "") << "round " << round;
      ASSERT_FALSE(a.signature().empty());
      ASSERT_LE(a.ignored_size(), kMaxIgnored);
      for (const v1::Fact& f : a.facts()) ASSERT_LE(f.text().size(), 300u);
    }
  }
  // The test must exercise the analyzer, not only the validator.
  EXPECT_GT(ok, 1000) << rejected << " rejected";
}

}  // namespace
}  // namespace reflexion::core

#pragma once

// Facts before judgement: one typed structure read from an incident (its
// v1.Pod object, v1.Event objects, flat statuses, events, logs and message)
// before any cause is decided. Every fact records where it came from. Facts
// from the incident always win: an executor's diagnosis may only add what the
// incident lacks (MergeExecutorDiagnosis).
//
// Reading never fails and never crashes: a field of the wrong type, an absurd
// number or an oversized list is skipped and noted in `ignored` (bounded).
// Every string held here is valid UTF-8 and clipped at a character boundary.

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Sources, as Fact.source spells them.
inline constexpr char kSourcePod[] = "incident.pod";
inline constexpr char kSourcePodEvents[] = "incident.pod_events";
inline constexpr char kSourceStatuses[] = "incident.container_statuses";
inline constexpr char kSourceEvents[] = "incident.events";
inline constexpr char kSourceLogs[] = "incident.logs";
inline constexpr char kSourceErrorMessage[] = "incident.error_message";

// Bounds on what is read (the rest is ignored, and that is noted once).
inline constexpr int kMaxIgnored = 32;
inline constexpr int kMaxFactContainers = 64;
inline constexpr int kMaxFactEvents = 256;
inline constexpr int kMaxFactListItems = 128;  // env, volumes, tolerations...
inline constexpr size_t kMaxFactText = 1024;   // one message or name

// A container state (v1.ContainerState): which of waiting / running /
// terminated it is, and what it says.
struct ContainerStateFacts {
  std::string kind;  // "waiting", "running", "terminated" or "" (unknown)
  std::string reason;
  std::string message;
  std::optional<int64_t> exit_code;  // terminated only
  std::optional<int64_t> signal;     // terminated only
};

// A reference from a container or the pod to a ConfigMap or Secret.
struct ConfigRefFacts {
  std::string kind;  // "ConfigMap" or "Secret"
  std::string name;
  std::string key;  // configMapKeyRef / secretKeyRef key; "" for whole objects
  bool optional = false;
  std::string via;  // "env", "envFrom", "volume", "imagePullSecret"
};

struct ProbeFacts {
  bool present = false;
  std::string type;  // "httpGet", "tcpSocket", "exec", "grpc" or ""
  std::optional<int64_t> initial_delay_seconds;
  std::optional<int64_t> period_seconds;
  std::optional<int64_t> timeout_seconds;
  std::optional<int64_t> failure_threshold;
  std::optional<int64_t> success_threshold;
};

struct ResourceFacts {
  std::optional<int64_t> memory_request_bytes;
  std::optional<int64_t> memory_limit_bytes;
  std::string memory_limit_source;  // "" = the pod spec
  std::optional<int64_t> cpu_request_millis;
  std::optional<int64_t> cpu_limit_millis;
  // Other resources (nvidia.com/gpu, ephemeral-storage, ...): name and the
  // quantity as written, requests then limits.
  std::vector<std::pair<std::string, std::string>> extended_requests;
  std::vector<std::pair<std::string, std::string>> extended_limits;
};

// One container or init container: its spec and its status, merged by name.
struct ContainerFacts {
  std::string name;
  bool init = false;
  std::string image;
  bool has_spec = false;
  bool has_status = false;
  std::string source;  // where the status came from
  ContainerStateFacts state;
  ContainerStateFacts last_state;
  int64_t restart_count = 0;
  bool ready = false;
  ResourceFacts resources;
  ProbeFacts liveness, readiness, startup;
  std::vector<ConfigRefFacts> config_refs;  // env, envFrom, volume mounts
  std::vector<std::string> command;         // command then args
};

struct ConditionFacts {
  std::string type, status, reason, message;
};

// An event about the pod, from pod_events (v1.Event) or the flat events.
struct EventFacts {
  std::string type;  // "Normal", "Warning" or ""
  std::string reason;
  std::string message;
  int64_t count = 1;
  // The container it is about, from involvedObject.fieldPath
  // ("spec.containers{app}"), "" when it is the pod's.
  std::string container;
  std::string source;
};

struct PodFacts {
  bool present = false;  // the incident carries a pod object
  std::string name, namespace_name;
  std::string phase, reason, message;
  std::vector<ConditionFacts> conditions;
  std::vector<std::pair<std::string, std::string>> node_selector;
  bool has_affinity = false;
  bool has_node_affinity = false;
  std::vector<std::string> tolerations;  // "key=value:Effect" / "key:Exists"
  std::vector<std::string> pvc_claims;
  std::vector<ConfigRefFacts> volume_refs;  // configMap / secret volumes
  std::vector<std::string> image_pull_secrets;
  std::vector<std::pair<std::string, std::string>> owners;  // kind, name
  std::string pod_template_hash;
};

// Everything known about an incident, incident facts first.
struct IncidentFacts {
  std::string error_type;     // as reported
  std::string error_message;  // incident.error_message
  PodFacts pod;
  std::vector<ContainerFacts> containers;  // init containers first
  std::vector<EventFacts> events;
  std::string logs;
  std::string logs_source;
  // Added by an executor only when the incident does not say.
  std::string last_healthy_image;
  std::vector<std::string> available_pull_secrets;
  std::optional<bool> recent_rollout;
  std::string executor_source;  // "executor:<name>" once merged
  // What could not be read, at most kMaxIgnored entries (the last one says
  // how many more were dropped).
  std::vector<std::string> ignored;
  int ignored_dropped = 0;

  // Whether the incident itself carries observations (a pod object, flat
  // statuses, events or logs); then an executor's observations are unused.
  bool HasIncidentObservations() const;
  // The container named `name`, or null.
  const ContainerFacts* FindContainer(absl::string_view name) const;
  // Notes what was ignored, respecting kMaxIgnored.
  void Ignore(std::string what);
};

// Reads every fact of `incident`. Never fails; see `ignored`. Pure and
// thread-safe.
IncidentFacts ExtractFacts(const reflexion::v1::Incident& incident);

// Adds what `diagnosis` knows and the incident does not: last healthy image,
// available pull secrets, recent rollout, the memory limit of containers
// whose spec has none; its container statuses, events and logs only when the
// incident has no observations of its own (a legacy caller). Everything
// added is sourced "executor:<executor_name>". Never overrides a fact read
// from the incident.
void MergeExecutorDiagnosis(IncidentFacts* facts,
                            const reflexion::v1::Diagnosis& diagnosis,
                            absl::string_view executor_name);

// Kubernetes quantities: "512Mi", "1G", "1.5Gi", "128974848", "129e6" as
// bytes; "250m", "2", "0.5" as millicores. nullopt for anything malformed,
// negative or beyond int64.
std::optional<int64_t> ParseMemoryBytes(absl::string_view quantity);
std::optional<int64_t> ParseCpuMillis(absl::string_view quantity);

}  // namespace reflexion::core

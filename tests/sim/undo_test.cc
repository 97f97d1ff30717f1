// The simulated cluster's changes, undo and planted regressions.

#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/regression.h"
#include "core/sim/scenario.h"
#include "core/sim/simulated_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/sim/sim_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::sim {
namespace {

using ::reflexion::sim::testing::Diagnose;
using ::reflexion::sim::testing::Execute;
using ::reflexion::sim::testing::MakeAction;
using ::reflexion::sim::testing::MakeIncident;
using ::reflexion::sim::testing::Observe;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Optional;
namespace v1 = ::reflexion::v1;

constexpr uint64_t kSeed = 20240514;
constexpr char kPod[] = "web-7d4b9c-x2k4p";
constexpr char kFields[] = "Deployment/web spec.template.spec.containers[app].";

// A crash-looping web pod (3 restarts); `extra` is appended to the
// scenario (e.g. a regressions or workload section).
std::string WebScenario(const std::string& extra = "") {
  return absl::StrCat(
      "scenarios:\n"
      "  - id: web\n"
      "    error_types: [CrashLoopBackOff]\n"
      "    signals:\n"
      "      container:\n"
      "        name: app\n"
      "        image: shop/web:v2\n"
      "        restart_count: 3\n"
      "        last_termination_reason: Error\n"
      "        last_exit_code: 1\n"
      "        waiting_reason: CrashLoopBackOff\n"
      "      last_healthy_image: shop/web:v1\n"
      "      available_pull_secrets: [regcred]\n"
      "      memory_limit_bytes: 268435456\n"
      "    actions:\n"
      "      delete_pod: {success: 0.5}\n"
      "      patch_image: {success: 0}\n"
      "      rollback_deployment: {success: 0}\n",
      extra);
}

std::unique_ptr<SimulatedCluster> Cluster(const std::string& yaml) {
  absl::StatusOr<std::unique_ptr<SimulatedCluster>> c =
      SimulatedCluster::FromYaml(yaml, kSeed);
  EXPECT_THAT(c, IsOk());
  return c.ok() ? *std::move(c) : nullptr;
}

v1::Incident WebIncident() {
  v1::Incident in = MakeIncident("shop", kPod, "CrashLoopBackOff");
  v1::ContainerStatus* c = in.add_container_statuses();
  c->set_name("app");
  c->set_restart_count(3);
  c->set_waiting_reason("CrashLoopBackOff");
  c->set_last_termination_reason("Error");
  c->set_last_exit_code(1);
  return in;
}

v1::Action Act(v1::ActionType type, const std::string& key) {
  v1::Action a = MakeAction("shop", kPod, type, key);
  a.set_tier(core::FindAction(type)->tier);
  *a.mutable_params() = core::ClampParams({});
  if (type == v1::ACTION_TYPE_PATCH_IMAGE) a.set_image("shop/web:v1");
  if (type == v1::ACTION_TYPE_ATTACH_PULL_SECRET) a.set_pull_secret("regcred");
  return a;
}

v1::ValueChange Change(const std::string& path, const std::string& before,
                       const std::string& after) {
  v1::ValueChange c;
  c.set_path(path);
  c.set_before(before);
  c.set_after(after);
  return c;
}

MATCHER_P3(IsChange, path, before, after, "") {
  return arg.path() == path && arg.before() == before && arg.after() == after;
}

std::vector<v1::ValueChange> ChangesOf(const v1::ExecutionResult& r) {
  return {r.changes().begin(), r.changes().end()};
}

// The undo of `original` as the workflow builds it.
v1::Action UndoOf(const v1::ExecutionResult& original, const std::string& key) {
  absl::StatusOr<v1::Action> undo =
      core::BuildUndo(original.action(), ChangesOf(original), key);
  EXPECT_THAT(undo, IsOk());
  return undo.ok() ? *undo : v1::Action();
}

// Diagnoses the web pod and runs `type`, returning its result.
v1::ExecutionResult Apply(SimulatedCluster& cluster, v1::ActionType type,
                          const std::string& key) {
  absl::StatusOr<v1::ExecutionResult> r = Execute(cluster, Act(type, key));
  EXPECT_THAT(r, IsOk());
  return r.ok() ? *r : v1::ExecutionResult();
}

// ------------------------------------------------------------------ changes

TEST(SimulatedChangesTest, EveryAppliedActionReportsTheValuesItChanged) {
  const std::string f = kFields;
  struct Want {
    v1::ActionType type;
    std::vector<v1::ValueChange> changes;
  };
  const std::vector<Want> wants = {
      {v1::ACTION_TYPE_DELETE_POD,
       {Change(absl::StrCat("Pod/", kPod), "present", "deleted")}},
      {v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT,
       {Change("Deployment/web revision", "2", "template of revision 1"),
        Change(f + "image", "shop/web:v2", "shop/web:v1")}},
      {v1::ACTION_TYPE_PATCH_IMAGE,
       {Change(f + "image", "shop/web:v2", "shop/web:v1")}},
      {v1::ACTION_TYPE_ATTACH_PULL_SECRET,
       {Change("ServiceAccount/default imagePullSecrets", "[]", "[regcred]"),
        Change(absl::StrCat("Pod/", kPod), "present", "deleted")}},
      {v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT,  // x1.5
       {Change(f + "resources.limits.memory", "256Mi", "384Mi")}},
      {v1::ACTION_TYPE_RELAX_PROBES,  // x2
       {Change(f + "livenessProbe.initialDelaySeconds", "10", "20"),
        Change(f + "livenessProbe.timeoutSeconds", "1", "2"),
        Change(f + "readinessProbe.initialDelaySeconds", "5", "10"),
        Change(f + "readinessProbe.timeoutSeconds", "1", "2")}},
      {v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS,  // x0.75
       {Change(f + "resources.requests.cpu", "250m", "187m"),
        Change(f + "resources.requests.memory", "256Mi", "192Mi")}},
  };
  for (const Want& w : wants) {
    auto cluster = Cluster(WebScenario());
    ASSERT_NE(cluster, nullptr);
    ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
    v1::ExecutionResult r = Apply(*cluster, w.type, "wf/1");
    EXPECT_TRUE(r.applied());
    ASSERT_EQ(r.changes_size(), static_cast<int>(w.changes.size()))
        << core::FindAction(w.type)->name << ": " << r.DebugString();
    for (size_t i = 0; i < w.changes.size(); ++i) {
      EXPECT_THAT(r.changes(static_cast<int>(i)),
                  IsChange(w.changes[i].path(), w.changes[i].before(),
                           w.changes[i].after()))
          << core::FindAction(w.type)->name << " change " << i;
    }
  }
}

TEST(SimulatedChangesTest, ChangesAccumulateOnTheModelOfThePod) {
  auto cluster = Cluster(WebScenario());
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  Apply(*cluster, v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf/1");
  v1::ExecutionResult second =
      Apply(*cluster, v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf/2");
  ASSERT_EQ(second.changes_size(), 1);
  EXPECT_EQ(second.changes(0).before(), "384Mi");
  EXPECT_EQ(second.changes(0).after(), "576Mi");
  // A new incident (Diagnose) starts from the scenario again.
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::ExecutionResult third =
      Apply(*cluster, v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf/3");
  EXPECT_EQ(third.changes(0).before(), "256Mi");
}

TEST(SimulatedChangesTest, ThePodObjectIsTheModelWhenTheIncidentHasOne) {
  auto cluster = Cluster(WebScenario());
  ASSERT_NE(cluster, nullptr);
  v1::Incident in =
      MakeIncident("shop", "cart-5f6d7-abcde", "CrashLoopBackOff");
  auto& pod = *in.mutable_pod()->mutable_fields();
  pod["kind"].set_string_value("Pod");
  auto& meta = *pod["metadata"].mutable_struct_value()->mutable_fields();
  meta["name"].set_string_value("cart-5f6d7-abcde");
  meta["namespace"].set_string_value("shop");
  auto& owner = *meta["ownerReferences"]
                     .mutable_list_value()
                     ->add_values()
                     ->mutable_struct_value()
                     ->mutable_fields();
  owner["kind"].set_string_value("ReplicaSet");
  owner["name"].set_string_value("cart-5f6d7");
  owner["controller"].set_bool_value(true);
  auto& c = *pod["spec"]
                 .mutable_struct_value()
                 ->mutable_fields()
                 ->
                 operator[]("containers")
                 .mutable_list_value()
                 ->add_values()
                 ->mutable_struct_value()
                 ->mutable_fields();
  c["name"].set_string_value("cart");
  c["image"].set_string_value("shop/cart:7");
  auto& limits = *c["resources"]
                      .mutable_struct_value()
                      ->mutable_fields()
                      ->
                      operator[]("limits")
                      .mutable_struct_value()
                      ->mutable_fields();
  limits["memory"].set_string_value("1Gi");
  (*c["livenessProbe"]
        .mutable_struct_value()
        ->mutable_fields())["periodSeconds"]
      .set_number_value(10);
  ASSERT_THAT(Diagnose(*cluster, in), IsOk());
  v1::Action a = MakeAction("shop", "cart-5f6d7-abcde",
                            v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf/1");
  *a.mutable_params() = core::ClampParams({});
  a.mutable_params()->set_memory_factor(2);
  absl::StatusOr<v1::ExecutionResult> r = Execute(*cluster, a);
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->changes_size(), 1);
  EXPECT_THAT(r->changes(0),
              IsChange("Deployment/cart spec.template.spec.containers[cart]."
                       "resources.limits.memory",
                       "1024Mi", "2048Mi"));
  // Probe timings the pod leaves unset are the Kubernetes defaults; a probe
  // it does not have is not there to relax.
  a.set_type(v1::ACTION_TYPE_RELAX_PROBES);
  a.set_idempotency_key("wf/2");
  r = Execute(*cluster, a);
  ASSERT_THAT(r, IsOk());
  ASSERT_EQ(r->changes_size(), 1) << r->DebugString();
  EXPECT_THAT(r->changes(0), IsChange("Deployment/cart spec.template.spec."
                                      "containers[cart].livenessProbe."
                                      "timeoutSeconds",
                                      "1 (default)", "2"));
}

// --------------------------------------------------------------------- undo

TEST(SimulatedUndoTest, UndoRestoresTheRecordedValuesAndReportsItsChanges) {
  auto cluster = Cluster(WebScenario());
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::ExecutionResult patched =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/1");
  absl::StatusOr<v1::ExecutionResult> undone =
      Execute(*cluster, UndoOf(patched, "wf/undo"));
  ASSERT_THAT(undone, IsOk());
  EXPECT_TRUE(undone->applied());
  ASSERT_EQ(undone->changes_size(), 1);
  EXPECT_THAT(undone->changes(0), IsChange(std::string(kFields) + "image",
                                           "shop/web:v1", "shop/web:v2"));
  EXPECT_THAT(undone->message(), HasSubstr("undid wf/1"));
  // The model has the old image again.
  v1::ExecutionResult again =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/2");
  ASSERT_EQ(again.changes_size(), 1);
  EXPECT_EQ(again.changes(0).before(), "shop/web:v2");
}

TEST(SimulatedUndoTest, ARollbacksUndoRollsForwardToTheRecordedRevision) {
  auto cluster = Cluster(WebScenario());
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::ExecutionResult rolled =
      Apply(*cluster, v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT, "wf/1");
  absl::StatusOr<v1::ExecutionResult> undone =
      Execute(*cluster, UndoOf(rolled, "wf/undo"));
  ASSERT_THAT(undone, IsOk());
  ASSERT_EQ(undone->changes_size(), 2);
  EXPECT_THAT(undone->changes(0), IsChange("Deployment/web revision",
                                           "template of revision 1", "2"));
  EXPECT_THAT(undone->changes(1), IsChange(std::string(kFields) + "image",
                                           "shop/web:v1", "shop/web:v2"));
}

TEST(SimulatedUndoTest, UndoIsIdempotentByKey) {
  auto cluster = Cluster(WebScenario());
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::ExecutionResult patched =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/1");
  const v1::Action undo = UndoOf(patched, "wf/undo");
  ASSERT_THAT(Execute(*cluster, undo), IsOk());
  absl::StatusOr<v1::ExecutionResult> twice = Execute(*cluster, undo);
  ASSERT_THAT(twice, IsOk());
  EXPECT_TRUE(twice->deduplicated());
  EXPECT_EQ(twice->changes_size(), 1);  // the first result
  ASSERT_EQ(cluster->ExecutionLog().size(), 2u);
  EXPECT_EQ(cluster->ExecutionLog()[1].type, v1::ACTION_TYPE_UNDO);
}

TEST(SimulatedUndoTest, AValueChangedSinceIsLeftAloneAndNamed) {
  auto cluster = Cluster(WebScenario());
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::ExecutionResult memory =
      Apply(*cluster, v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf/1");
  v1::ExecutionResult patched =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/2");
  // Someone set another image since the patch.
  v1::Action other = Act(v1::ACTION_TYPE_PATCH_IMAGE, "wf/3");
  other.set_image("shop/web:v3");
  ASSERT_THAT(Execute(*cluster, other), IsOk());
  // Only the patch's image: refused, nothing restored.
  absl::StatusOr<v1::ExecutionResult> r =
      Execute(*cluster, UndoOf(patched, "wf/undo-1"));
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->applied());
  EXPECT_EQ(r->changes_size(), 0);
  EXPECT_THAT(r->message(), HasSubstr("is now \"shop/web:v3\", not "
                                      "\"shop/web:v1\": changed since"));
  // Together with the memory limit: that one is restored, the image named.
  v1::Action both = UndoOf(memory, "wf/undo-2");
  *both.add_restore() = patched.changes(0);
  r = Execute(*cluster, both);
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(r->applied());
  ASSERT_EQ(r->changes_size(), 1);
  EXPECT_THAT(r->changes(0),
              IsChange(std::string(kFields) + "resources.limits.memory",
                       "384Mi", "256Mi"));
  EXPECT_THAT(r->message(), HasSubstr("not restored: "));
}

TEST(SimulatedUndoTest, AnUnknownPathIsRefusedByName) {
  auto cluster = Cluster(WebScenario());
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::ExecutionResult patched =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/1");
  v1::Action undo = UndoOf(patched, "wf/undo");
  *undo.add_restore() = Change("ConfigMap/app data.x", "a", "b");
  absl::StatusOr<v1::ExecutionResult> r = Execute(*cluster, undo);
  ASSERT_THAT(r, IsOk());
  EXPECT_FALSE(r->applied());
  EXPECT_THAT(r->message(),
              HasSubstr("\"ConfigMap/app data.x\" is not a value"));
  // Nothing was restored: the image is still the patched one.
  v1::ExecutionResult again =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/2");
  EXPECT_EQ(again.changes_size(), 0);  // already shop/web:v1
}

TEST(SimulatedUndoTest, UndoWithoutUndoOfOrRestoreIsInvalidArgument) {
  auto cluster = Cluster(WebScenario());
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::Action undo = Act(v1::ACTION_TYPE_UNDO, "wf/undo");
  undo.set_undo_of("wf/1");
  EXPECT_THAT(
      Execute(*cluster, undo),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("restore")));
  *undo.add_restore() = Change(std::string(kFields) + "image", "a", "b");
  undo.clear_undo_of();
  EXPECT_THAT(
      Execute(*cluster, undo),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("undo_of")));
}

// --------------------------------------------------------------- regressions

TEST(SimulatedRegressionTest, APlantedRegressionIsUndoneToTheOriginalFailure) {
  auto cluster =
      Cluster(WebScenario("    regressions: {patch_image: OOMKilled}\n"));
  ASSERT_NE(cluster, nullptr);
  const v1::Incident incident = WebIncident();
  ASSERT_THAT(Diagnose(*cluster, incident), IsOk());
  v1::Analysis analysis;
  analysis.set_error_family("CrashLoopBackOff");
  analysis.set_container("app");

  v1::ExecutionResult patched =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/1");
  absl::StatusOr<v1::Observation> worse = Observe(*cluster, patched.action());
  ASSERT_THAT(worse, IsOk());
  EXPECT_FALSE(worse->recovered());
  EXPECT_EQ(worse->failure_reason(), "OOMKilled");
  EXPECT_GT(worse->restarts(), 6);  // 2 x 3 restarts before
  EXPECT_THAT(core::DetectRegression(incident, analysis, patched, *worse),
              Optional(HasSubstr("from CrashLoopBackOff to OOMKilled")));

  const v1::Action undo = UndoOf(patched, "wf/undo");
  absl::StatusOr<v1::ExecutionResult> undone = Execute(*cluster, undo);
  ASSERT_THAT(undone, IsOk());
  ASSERT_TRUE(undone->applied());
  absl::StatusOr<v1::Observation> back = Observe(*cluster, undo);
  ASSERT_THAT(back, IsOk());
  EXPECT_FALSE(back->recovered());  // failing as before, not healthy
  EXPECT_EQ(back->failure_reason(), "CrashLoopBackOff");
  EXPECT_LE(back->restarts(), 5);
  EXPECT_EQ(core::DetectRegression(incident, analysis, *undone, *back),
            std::nullopt);
}

TEST(SimulatedRegressionTest, UndoingTheUndoReAppliesTheRegression) {
  auto cluster =
      Cluster(WebScenario("    regressions: {patch_image: OOMKilled}\n"));
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::ExecutionResult patched =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/1");
  absl::StatusOr<v1::ExecutionResult> undone =
      Execute(*cluster, UndoOf(patched, "wf/undo"));
  ASSERT_THAT(undone, IsOk());
  const v1::Action redo = UndoOf(*undone, "wf/redo");
  absl::StatusOr<v1::ExecutionResult> redone = Execute(*cluster, redo);
  ASSERT_THAT(redone, IsOk());
  ASSERT_EQ(redone->changes_size(), 1);
  EXPECT_EQ(redone->changes(0).after(), "shop/web:v1");  // the patch again
  absl::StatusOr<v1::Observation> obs = Observe(*cluster, redo);
  ASSERT_THAT(obs, IsOk());
  EXPECT_EQ(obs->failure_reason(), "OOMKilled");
}

TEST(SimulatedRegressionTest, APartlyHealthyWorkloadFailsFullyAndComesBack) {
  auto cluster =
      Cluster(WebScenario("    regressions: {patch_image: OOMKilled}\n"
                          "    workload: {replicas: 3, ready: 2}\n"));
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, WebIncident()), IsOk());
  v1::ExecutionResult patched =
      Apply(*cluster, v1::ACTION_TYPE_PATCH_IMAGE, "wf/1");
  absl::StatusOr<v1::Observation> worse = Observe(*cluster, patched.action());
  ASSERT_THAT(worse, IsOk());
  EXPECT_EQ(worse->workload_replicas(), 3);
  EXPECT_EQ(worse->workload_ready_before(), 2);
  EXPECT_EQ(worse->workload_ready_after(), 0);
  const v1::Action undo = UndoOf(patched, "wf/undo");
  ASSERT_THAT(Execute(*cluster, undo), IsOk());
  absl::StatusOr<v1::Observation> back = Observe(*cluster, undo);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->workload_ready_before(), 0);
  EXPECT_EQ(back->workload_ready_after(), 2);
}

TEST(SimulatedRegressionTest, OtherActionsKeepTheirOutcomes) {
  auto plain = Cluster(WebScenario());
  auto planted =
      Cluster(WebScenario("    regressions: {patch_image: OOMKilled}\n"));
  ASSERT_NE(plain, nullptr);
  ASSERT_NE(planted, nullptr);
  for (int i = 0; i < 40; ++i) {
    const std::string key = absl::StrCat("wf/", i);
    for (SimulatedCluster* c : {plain.get(), planted.get()}) {
      ASSERT_THAT(Diagnose(*c, WebIncident()), IsOk());
      ASSERT_THAT(Execute(*c, Act(v1::ACTION_TYPE_DELETE_POD, key)), IsOk());
    }
    absl::StatusOr<v1::Observation> a =
        Observe(*plain, Act(v1::ACTION_TYPE_DELETE_POD, key));
    absl::StatusOr<v1::Observation> b =
        Observe(*planted, Act(v1::ACTION_TYPE_DELETE_POD, key));
    ASSERT_THAT(a, IsOk());
    ASSERT_THAT(b, IsOk());
    EXPECT_EQ(a->SerializeAsString(), b->SerializeAsString()) << key;
  }
}

TEST(SimulatedRegressionTest, RegressionsAndWorkloadAreValidated) {
  struct Bad {
    std::string extra;
    std::string message;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"    regressions: {undo: OOMKilled}\n", "regressions.undo"},
           {"    regressions: {frobnicate: OOMKilled}\n", "unknown action"},
           {"    regressions: {patch_image: 'OOM Killed'}\n",
            "not a failure reason"},
           {"    regressions: {}\n", "non-empty map"},
           {"    workload: {replicas: 3, ready: 3}\n", "workload.ready"},
           {"    workload: {replicas: 0}\n", "workload.replicas"},
           {"    workload: {ready: 1}\n", "workload.replicas: missing"},
           {"    workload: {replicas: 2, spare: 1}\n", "unknown field"},
       }) {
    EXPECT_THAT(
        ParseScenarios(WebScenario(bad.extra)),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(bad.message)))
        << bad.extra;
  }
  EXPECT_THAT(ParseScenarios(WebScenario("      undo: {success: 1}\n")),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("actions.undo: undo is not a strategy")));
}

// ------------------------------------------------------------------ journal

TEST(SimulatedUndoJournalTest, ChangesAndUndoSurviveARestart) {
  const std::string path = ::testing::TempDir() + "/sim-undo-journal-" +
                           std::to_string(::getpid()) + ".log";
  std::remove(path.c_str());
  v1::ExecutionResult memory;
  {
    auto first = Cluster(WebScenario());
    ASSERT_NE(first, nullptr);
    ASSERT_THAT(first->EnableJournal(path), IsOk());
    ASSERT_THAT(Diagnose(*first, WebIncident()), IsOk());
    memory = Apply(*first, v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf/1");
    Apply(*first, v1::ACTION_TYPE_PATCH_IMAGE, "wf/2");
    ASSERT_THAT(Execute(*first, UndoOf(memory, "wf/undo")), IsOk());
  }
  auto second = Cluster(WebScenario());
  ASSERT_NE(second, nullptr);
  ASSERT_THAT(second->EnableJournal(path), IsOk());
  EXPECT_EQ(second->ExecutionLog().size(), 3u);
  // A re-sent action answers with its first changes.
  absl::StatusOr<v1::ExecutionResult> again =
      Execute(*second, Act(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf/1"));
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated());
  ASSERT_EQ(again->changes_size(), 1);
  EXPECT_EQ(again->changes(0).after(), "384Mi");
  // The model was replayed: the memory limit is back at 256Mi and the
  // patched image stays, so only the limit can be raised again from 256Mi.
  v1::ExecutionResult raised =
      Apply(*second, v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf/3");
  ASSERT_EQ(raised.changes_size(), 1);
  EXPECT_EQ(raised.changes(0).before(), "256Mi");
  v1::ExecutionResult patched =
      Apply(*second, v1::ACTION_TYPE_PATCH_IMAGE, "wf/4");
  EXPECT_EQ(patched.changes_size(), 0);  // already shop/web:v1
  std::remove(path.c_str());
}

}  // namespace
}  // namespace reflexion::sim

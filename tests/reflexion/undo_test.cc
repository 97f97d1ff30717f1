// Unit tests of undo in the domain: the catalog's undo entry, inverses,
// ValidateAction for undo, BuildUndo and DetectRegression.

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/regression.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::core {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Optional;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kPrecondition = absl::StatusCode::kFailedPrecondition;

constexpr char kImagePath[] =
    "Deployment/web spec.template.spec.containers[app].image";
constexpr char kMemoryPath[] =
    "Deployment/web spec.template.spec.containers[app].resources.limits.memory";

v1::ValueChange Change(std::string path, std::string before,
                       std::string after) {
  v1::ValueChange c;
  c.set_path(std::move(path));
  c.set_before(std::move(before));
  c.set_after(std::move(after));
  return c;
}

v1::Action Applied(v1::ActionType type, std::string key = "wf-1/attempt-1") {
  v1::Action a;
  a.set_type(type);
  a.set_tier(FindAction(type)->tier);
  a.set_pod_name("web-7d4b9c-x2k4p");
  a.set_namespace_("shop");
  *a.mutable_params() = ClampParams({});
  a.set_idempotency_key(std::move(key));
  if (type == v1::ACTION_TYPE_PATCH_IMAGE) a.set_image("web:v2.3.8");
  return a;
}

v1::Action ValidUndo() {
  absl::StatusOr<v1::Action> undo =
      BuildUndo(Applied(v1::ACTION_TYPE_PATCH_IMAGE),
                {Change(kImagePath, "web:v2.3.9", "web:v2.3.8")}, "wf-1/undo");
  EXPECT_THAT(undo, IsOk());
  return undo.ok() ? *undo : v1::Action();
}

// ------------------------------------------------------------------ catalog

TEST(UndoCatalogTest, UndoIsATierAActionButNeverAStrategy) {
  const ActionSpec* spec = FindAction(v1::ACTION_TYPE_UNDO);
  ASSERT_NE(spec, nullptr);
  EXPECT_STREQ(spec->name, "undo");
  EXPECT_EQ(spec->tier, v1::SAFETY_TIER_A);
  EXPECT_FALSE(spec->strategy);
  EXPECT_EQ(FindActionByName("undo"), nullptr);
  for (const v1::Strategy& s : DefaultStrategies(absl::UnixEpoch())) {
    EXPECT_NE(s.action_type(), v1::ACTION_TYPE_UNDO) << s.name();
  }
  for (const char* family : kKnownFamilies) {
    for (const std::string& name : StrategiesFor(family)) {
      EXPECT_NE(name, "undo") << family;
    }
  }
  for (const std::string& name : StrategiesFor("SomethingUnknown")) {
    EXPECT_NE(name, "undo");
  }
}

TEST(UndoCatalogTest, EveryOtherActionIsStillAStrategy) {
  int strategies = 0;
  for (const ActionSpec& spec : Catalog()) {
    if (spec.type == v1::ACTION_TYPE_UNDO) continue;
    EXPECT_TRUE(spec.strategy) << spec.name;
    EXPECT_EQ(FindActionByName(spec.name), &spec) << spec.name;
    ++strategies;
  }
  EXPECT_EQ(DefaultStrategies(absl::UnixEpoch()).size(),
            static_cast<size_t>(strategies));
}

TEST(UndoCatalogTest, InversesFollowTheCatalogTable) {
  for (v1::ActionType t :
       {v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT, v1::ACTION_TYPE_PATCH_IMAGE,
        v1::ACTION_TYPE_ATTACH_PULL_SECRET,
        v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, v1::ACTION_TYPE_RELAX_PROBES,
        v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS, v1::ACTION_TYPE_UNDO}) {
    EXPECT_TRUE(HasInverse(t)) << t;
  }
  for (v1::ActionType t :
       {v1::ACTION_TYPE_DELETE_POD, v1::ACTION_TYPE_CREATE_MISSING_CONFIG,
        v1::ACTION_TYPE_RELAX_NODE_SELECTOR, v1::ACTION_TYPE_SCALE_NODE_POOL,
        v1::ACTION_TYPE_UNSPECIFIED, static_cast<v1::ActionType>(99)}) {
    EXPECT_FALSE(HasInverse(t)) << t;
  }
  for (const ActionSpec& spec : Catalog()) {
    EXPECT_NE(std::string(spec.inverse), "") << spec.name;
  }
}

// --------------------------------------------------------- ValidateAction

TEST(UndoValidateTest, BuiltUndoIsValid) {
  EXPECT_THAT(ValidateAction(ValidUndo()), IsOk());
}

TEST(UndoValidateTest, UndoNeedsUndoOfWithinItsLimit) {
  v1::Action a = ValidUndo();
  a.clear_undo_of();
  EXPECT_THAT(ValidateAction(a), StatusIs(kInvalid, HasSubstr("undo_of")));
  a.set_undo_of(std::string(129, 'k'));
  EXPECT_THAT(ValidateAction(a), StatusIs(kInvalid, HasSubstr("undo_of")));
  a.set_undo_of(std::string(128, 'k'));
  EXPECT_THAT(ValidateAction(a), IsOk());
}

TEST(UndoValidateTest, UndoNeedsOneToThirtyTwoRestoreEntries) {
  v1::Action a = ValidUndo();
  a.clear_restore();
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("action.restore")));
  for (int i = 0; i < 32; ++i) {
    *a.add_restore() = Change(absl::StrCat(kImagePath, i), "a", "b");
  }
  EXPECT_THAT(ValidateAction(a), IsOk());
  *a.add_restore() = Change(kImagePath, "a", "b");
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("action.restore has 33")));
}

TEST(UndoValidateTest, RestoreEntriesAreBoundedAndNamedByIndex) {
  v1::Action a = ValidUndo();
  *a.add_restore() = Change(std::string(513, 'p'), "a", "b");
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("action.restore[1].path")));
  a.mutable_restore(1)->set_path("");
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("action.restore[1].path")));
  *a.mutable_restore(1) = Change(kMemoryPath, std::string(1025, 'v'), "b");
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("action.restore[1].before")));
  *a.mutable_restore(1) = Change(kMemoryPath, "a", std::string(1025, 'v'));
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("action.restore[1].after")));
  *a.mutable_restore(1) = Change(kMemoryPath, "a", std::string(1024, 'v'));
  EXPECT_THAT(ValidateAction(a), IsOk());
}

TEST(UndoValidateTest, RestoreMustBeValidUtf8) {
  v1::Action a = ValidUndo();
  a.mutable_restore(0)->set_after("web:\xc3");
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("action.restore[0].after is not "
                                           "valid UTF-8")));
  a.mutable_restore(0)->set_after("web:v2");
  a.mutable_restore(0)->set_path("Deployment/\xff image");
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("action.restore[0].path")));
}

TEST(UndoValidateTest, OtherActionsCarryNoUndoFields) {
  v1::Action a = Applied(v1::ACTION_TYPE_PATCH_IMAGE);
  ASSERT_THAT(ValidateAction(a), IsOk());
  a.set_undo_of("wf-0/attempt-1");
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("for undo only")));
  a.clear_undo_of();
  *a.add_restore() = Change(kImagePath, "a", "b");
  EXPECT_THAT(ValidateAction(a),
              StatusIs(kInvalid, HasSubstr("for undo only")));
}

TEST(UndoValidateTest, UndoTierMustBeA) {
  v1::Action a = ValidUndo();
  a.set_tier(v1::SAFETY_TIER_B);
  EXPECT_THAT(ValidateAction(a), StatusIs(kInvalid, HasSubstr("action.tier")));
}

// ---------------------------------------------------------------- BuildUndo

TEST(BuildUndoTest, RestoresEveryReportedChangeOfTheSamePod) {
  const v1::Action original = Applied(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
  absl::StatusOr<v1::Action> undo =
      BuildUndo(original, {Change(kMemoryPath, "256Mi", "384Mi")}, "wf-1/u1");
  ASSERT_THAT(undo, IsOk());
  EXPECT_EQ(undo->type(), v1::ACTION_TYPE_UNDO);
  EXPECT_EQ(undo->tier(), v1::SAFETY_TIER_A);
  EXPECT_EQ(undo->pod_name(), original.pod_name());
  EXPECT_EQ(undo->namespace_(), original.namespace_());
  EXPECT_EQ(undo->undo_of(), "wf-1/attempt-1");
  EXPECT_EQ(undo->idempotency_key(), "wf-1/u1");
  ASSERT_EQ(undo->restore_size(), 1);
  EXPECT_EQ(undo->restore(0).path(), kMemoryPath);
  EXPECT_EQ(undo->restore(0).before(), "256Mi");
  EXPECT_EQ(undo->restore(0).after(), "384Mi");
  EXPECT_EQ(DescribeAction(*undo), "undo of wf-1/attempt-1 (1 values)");
}

TEST(BuildUndoTest, DeletePodHasNothingToRestore) {
  EXPECT_THAT(BuildUndo(Applied(v1::ACTION_TYPE_DELETE_POD),
                        {Change("Pod/web-7d4b9c-x2k4p", "present", "deleted")},
                        "wf-1/u1"),
              StatusIs(kPrecondition, HasSubstr("controller recreated")));
}

TEST(BuildUndoTest, TierCIsUndoneByTheHuman) {
  v1::Action a = Applied(v1::ACTION_TYPE_CREATE_MISSING_CONFIG);
  EXPECT_THAT(BuildUndo(a, {Change("ConfigMap/app data.key", "", "x")}, "u"),
              StatusIs(kPrecondition, HasSubstr("human")));
}

TEST(BuildUndoTest, EmptyChangesIsFailedPrecondition) {
  EXPECT_THAT(BuildUndo(Applied(v1::ACTION_TYPE_PATCH_IMAGE), {}, "wf-1/u1"),
              StatusIs(kPrecondition, HasSubstr("nothing to undo")));
}

TEST(BuildUndoTest, PodDeletionInsideAnActionIsLeftOut) {
  // attach_pull_secret reports the service account and the pod it deleted.
  absl::StatusOr<v1::Action> undo = BuildUndo(
      Applied(v1::ACTION_TYPE_ATTACH_PULL_SECRET),
      {Change("ServiceAccount/default imagePullSecrets", "[]", "[regcred]"),
       Change("Pod/web-7d4b9c-x2k4p", "present", "deleted")},
      "wf-1/u1");
  ASSERT_THAT(undo, IsOk());
  ASSERT_EQ(undo->restore_size(), 1);
  EXPECT_EQ(undo->restore(0).path(), "ServiceAccount/default imagePullSecrets");
  // Only the deletion: nothing restorable.
  EXPECT_THAT(BuildUndo(Applied(v1::ACTION_TYPE_ATTACH_PULL_SECRET),
                        {Change("Pod/web-7d4b9c-x2k4p", "present", "deleted")},
                        "wf-1/u1"),
              StatusIs(kPrecondition));
}

TEST(BuildUndoTest, UnchangedValuesAreLeftOut) {
  absl::StatusOr<v1::Action> undo =
      BuildUndo(Applied(v1::ACTION_TYPE_RELAX_PROBES),
                {Change("Deployment/web spec.template.spec.containers[app]."
                        "livenessProbe.timeoutSeconds",
                        "1", "1"),
                 Change("Deployment/web spec.template.spec.containers[app]."
                        "livenessProbe.initialDelaySeconds",
                        "10", "20")},
                "wf-1/u1");
  ASSERT_THAT(undo, IsOk());
  ASSERT_EQ(undo->restore_size(), 1);
  EXPECT_EQ(undo->restore(0).after(), "20");
}

TEST(BuildUndoTest, UndoOfAnUndoReAppliesTheOriginal) {
  const v1::Action first = ValidUndo();
  // What the executor reported for the undo: the image set back.
  absl::StatusOr<v1::Action> redo = BuildUndo(
      first, {Change(kImagePath, "web:v2.3.8", "web:v2.3.9")}, "wf-1/redo");
  ASSERT_THAT(redo, IsOk());
  EXPECT_EQ(redo->undo_of(), "wf-1/undo");
  ASSERT_EQ(redo->restore_size(), 1);
  EXPECT_EQ(redo->restore(0).before(), "web:v2.3.8");  // re-applied
  EXPECT_EQ(redo->restore(0).after(), "web:v2.3.9");
  EXPECT_THAT(ValidateAction(*redo), IsOk());
}

TEST(BuildUndoTest, KeysAreRequiredAndBounded) {
  v1::Action a = Applied(v1::ACTION_TYPE_PATCH_IMAGE);
  const std::vector<v1::ValueChange> changes = {
      Change(kImagePath, "web:v2.3.9", "web:v2.3.8")};
  EXPECT_THAT(BuildUndo(a, changes, ""),
              StatusIs(kInvalid, HasSubstr("idempotency_key")));
  a.clear_idempotency_key();
  EXPECT_THAT(BuildUndo(a, changes, "u"),
              StatusIs(kInvalid, HasSubstr("original.idempotency_key")));
  a.set_idempotency_key(std::string(129, 'k'));
  EXPECT_THAT(BuildUndo(a, changes, "u"),
              StatusIs(kInvalid, HasSubstr("original.idempotency_key")));
}

TEST(BuildUndoTest, ChangesOutsideTheLimitsAreInvalidArgumentNamingTheField) {
  const v1::Action a = Applied(v1::ACTION_TYPE_PATCH_IMAGE);
  EXPECT_THAT(
      BuildUndo(a,
                {Change(kImagePath, "a", "b"), Change(kImagePath, "\xff", "b")},
                "u"),
      StatusIs(kInvalid, HasSubstr("changes[1].before")));
  EXPECT_THAT(BuildUndo(a, {Change(std::string(600, 'p'), "a", "b")}, "u"),
              StatusIs(kInvalid, HasSubstr("changes[0].path")));
  std::vector<v1::ValueChange> many;
  for (int i = 0; i < 33; ++i) {
    many.push_back(Change(absl::StrCat(kImagePath, i), "a", "b"));
  }
  EXPECT_THAT(BuildUndo(a, many, "u"),
              StatusIs(kInvalid, HasSubstr("more than 32")));
}

// --------------------------------------------------------- DetectRegression

struct Case {
  v1::Incident incident;
  v1::Analysis analysis;
  v1::ExecutionResult execution;
  v1::Observation observation;
};

// A crash-looping pod (exit code 1, 7 restarts) that patch_image was
// applied to, observed failing the same way.
Case CrashLoopNotFixed() {
  Case c;
  c.incident.set_pod_name("web-7d4b9c-x2k4p");
  c.incident.set_namespace_("shop");
  c.incident.set_error_type("CrashLoopBackOff");
  v1::ContainerStatus* st = c.incident.add_container_statuses();
  st->set_name("app");
  st->set_restart_count(7);
  st->set_waiting_reason("CrashLoopBackOff");
  st->set_last_termination_reason("Error");
  st->set_last_exit_code(1);
  c.analysis.set_error_family("CrashLoopBackOff");
  c.analysis.set_cause("bad_release");
  c.analysis.set_container("app");
  *c.execution.mutable_action() = Applied(v1::ACTION_TYPE_PATCH_IMAGE);
  c.execution.set_applied(true);
  c.observation.set_window_s(300);
  c.observation.set_restarts(4);
  c.observation.set_failure_reason("CrashLoopBackOff");
  return c;
}

std::optional<std::string> Detect(const Case& c) {
  return DetectRegression(c.incident, c.analysis, c.execution, c.observation);
}

TEST(DetectRegressionTest, SameFailureAgainIsAFailedFixNotARegression) {
  EXPECT_EQ(Detect(CrashLoopNotFixed()), std::nullopt);
}

TEST(DetectRegressionTest, ANewFailureModeIsARegression) {
  Case c = CrashLoopNotFixed();
  c.observation.set_failure_reason("OOMKilled");
  EXPECT_THAT(Detect(c),
              Optional(HasSubstr("the pod went from CrashLoopBackOff to "
                                 "OOMKilled after patch_image")));
}

TEST(DetectRegressionTest, AnotherNameOfTheSameFamilyIsNoNewMode) {
  Case c = CrashLoopNotFixed();
  c.incident.set_error_type("ErrImagePull");
  c.incident.clear_container_statuses();
  c.analysis.set_error_family("ImagePullBackOff");
  c.observation.set_restarts(0);
  c.observation.set_failure_reason("ImagePullBackOff");
  EXPECT_EQ(Detect(c), std::nullopt);
  c.observation.set_failure_reason("ErrImagePull");
  EXPECT_EQ(Detect(c), std::nullopt);
  // The image now pulls and crashes: a new failure mode.
  c.observation.set_failure_reason("CrashLoopBackOff");
  EXPECT_THAT(Detect(c), Optional(HasSubstr("to CrashLoopBackOff")));
}

TEST(DetectRegressionTest, CrashLoopBackOffAfterAnOomIsTheSameMode) {
  Case c = CrashLoopNotFixed();
  c.incident.set_error_type("OOMKilled");
  c.analysis.set_error_family("OOMKilled");
  c.incident.mutable_container_statuses(0)->set_last_termination_reason(
      "OOMKilled");
  c.execution.mutable_action()->set_type(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
  c.observation.set_failure_reason("CrashLoopBackOff");
  EXPECT_EQ(Detect(c), std::nullopt);
}

TEST(DetectRegressionTest, TheAnalysedFamilyCountsAsTheOriginalFailure) {
  // Reported as CrashLoopBackOff, analysed as an OOM kill: OOMKilled again
  // is the same failure.
  Case c = CrashLoopNotFixed();
  c.analysis.set_error_family("OOMKilled");
  c.incident.clear_container_statuses();
  c.observation.set_failure_reason("OOMKilled");
  EXPECT_EQ(Detect(c), std::nullopt);
}

TEST(DetectRegressionTest, APodStillStartingIsNotANewMode) {
  Case c = CrashLoopNotFixed();
  c.observation.set_restarts(0);
  c.observation.set_failure_reason("ContainerCreating");
  EXPECT_EQ(Detect(c), std::nullopt);
}

TEST(DetectRegressionTest, MoreThanTwiceTheRestartsIsARegression) {
  Case c = CrashLoopNotFixed();  // 7 restarts before
  c.observation.set_restarts(14);
  EXPECT_EQ(Detect(c), std::nullopt);
  c.observation.set_restarts(15);
  EXPECT_THAT(Detect(c), Optional(HasSubstr("15 restarts in the 300s window "
                                            "after patch_image")));
}

TEST(DetectRegressionTest, RestartsOfAPodThatNeverRanNeedMoreThanTheFloor) {
  Case c = CrashLoopNotFixed();
  c.incident.mutable_container_statuses(0)->set_restart_count(0);
  c.observation.set_restarts(kRegressionRestartFloor);
  EXPECT_EQ(Detect(c), std::nullopt);
  c.observation.set_restarts(kRegressionRestartFloor + 1);
  EXPECT_THAT(Detect(c), Optional(HasSubstr("restarts")));
}

TEST(DetectRegressionTest, TheAnalysedContainersRestartsAreTheBaseline) {
  Case c = CrashLoopNotFixed();
  v1::ContainerStatus* sidecar = c.incident.add_container_statuses();
  sidecar->set_name("proxy");
  sidecar->set_restart_count(40);
  c.observation.set_restarts(15);  // > 2 x 7 for app, < 2 x 40 for proxy
  EXPECT_THAT(Detect(c), Optional(HasSubstr("restarted 7 times before")));
  c.analysis.clear_container();  // then the highest count
  EXPECT_EQ(Detect(c), std::nullopt);
}

TEST(DetectRegressionTest, APartlyHealthyWorkloadNowFullyFailingIsARegression) {
  Case c = CrashLoopNotFixed();
  c.observation.set_workload_replicas(3);
  c.observation.set_workload_ready_before(2);
  c.observation.set_workload_ready_after(2);
  EXPECT_EQ(Detect(c), std::nullopt);
  c.observation.set_workload_ready_after(0);
  EXPECT_THAT(Detect(c), Optional(HasSubstr("2 of 3 replicas ready before")));
  // Not reported by the executor: nothing to judge.
  c.observation.set_workload_replicas(0);
  EXPECT_EQ(Detect(c), std::nullopt);
  // Nothing was ready before: still not worse.
  c.observation.set_workload_replicas(3);
  c.observation.set_workload_ready_before(0);
  EXPECT_EQ(Detect(c), std::nullopt);
}

TEST(DetectRegressionTest, OnlyAnAppliedActionWithAnInverseRegresses) {
  Case c = CrashLoopNotFixed();
  c.observation.set_failure_reason("OOMKilled");
  ASSERT_NE(Detect(c), std::nullopt);
  Case dry = c;
  dry.execution.set_dry_run(true);
  EXPECT_EQ(Detect(dry), std::nullopt);
  Case not_applied = c;
  not_applied.execution.set_applied(false);
  EXPECT_EQ(Detect(not_applied), std::nullopt);
  Case deleted = c;
  deleted.execution.mutable_action()->set_type(v1::ACTION_TYPE_DELETE_POD);
  EXPECT_EQ(Detect(deleted), std::nullopt);
  Case tier_c = c;
  tier_c.execution.mutable_action()->set_type(
      v1::ACTION_TYPE_CREATE_MISSING_CONFIG);
  EXPECT_EQ(Detect(tier_c), std::nullopt);
  Case undo = c;
  undo.execution.mutable_action()->set_type(v1::ACTION_TYPE_UNDO);
  EXPECT_NE(Detect(undo), std::nullopt);
}

TEST(DetectRegressionTest, ASuccessfulObservationNeverRegresses) {
  Case c = CrashLoopNotFixed();
  c.observation.set_success(true);
  c.observation.set_failure_reason("");
  c.observation.set_restarts(50);
  EXPECT_EQ(Detect(c), std::nullopt);
}

TEST(DetectRegressionTest, ReadsTheOriginalFailureFromThePodObject) {
  Case c = CrashLoopNotFixed();
  c.incident.clear_container_statuses();
  auto& pod = *c.incident.mutable_pod()->mutable_fields();
  pod["kind"].set_string_value("Pod");
  auto& status = *pod["status"].mutable_struct_value()->mutable_fields();
  auto* cs = status["containerStatuses"].mutable_list_value()->add_values();
  auto& f = *cs->mutable_struct_value()->mutable_fields();
  f["name"].set_string_value("app");
  f["restartCount"].set_number_value(9);
  auto& last = *f["lastState"].mutable_struct_value()->mutable_fields();
  auto& term = *last["terminated"].mutable_struct_value()->mutable_fields();
  term["reason"].set_string_value("OOMKilled");
  term["exitCode"].set_number_value(137);
  // OOMKilled was already one of the pod's faces: not a new mode.
  c.observation.set_failure_reason("OOMKilled");
  c.observation.set_restarts(18);  // 2 x 9
  EXPECT_EQ(Detect(c), std::nullopt);
  c.observation.set_restarts(19);
  EXPECT_THAT(Detect(c), Optional(HasSubstr("restarted 9 times before")));
}

}  // namespace
}  // namespace reflexion::core

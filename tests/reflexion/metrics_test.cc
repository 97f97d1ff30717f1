// Metrics computed from stored data, and the content-based reflection
// judge, on hand-computed data.
#include "core/reflexion/metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/events.h"
#include "core/reflexion/heuristic_reflector.h"
#include "core/reflexion/reflection_quality.h"
#include "core/reflexion/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::core {
namespace {

using ::reflexion::testing::IsOk;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

// ------------------------------------------------------ reflection quality

// An attempt that raised memory x1.5 on an OOMKilled pod and failed.
ReflectionRequest OomAttempt(bool success) {
  ReflectionRequest r;
  r.analysis.set_error_family("OOMKilled");
  r.analysis.set_cause("memory_limit_too_low");
  r.analysis.set_signature("OOMKilled/memory_limit_too_low");
  r.analysis.add_evidence("Last State: Terminated Reason: OOMKilled");
  r.selection.mutable_strategy()->set_name("increase_memory_limit");
  r.selection.mutable_strategy()->mutable_params()->set_memory_factor(1.5);
  r.selection.mutable_action()->set_type(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
  r.observation.set_success(success);
  r.observation.set_failure_reason(success ? "" : "OOMKilled");
  r.observation.add_signals("container checkout exceeded its memory limit");
  return r;
}

v1::Reflection Text(const std::string& text) {
  v1::Reflection r;
  r.set_text(text);
  return r;
}

TEST(ReflectionQualityTest, ASpecificAgreeingReflectionWithANextStepScoresOne) {
  ReflectionQuality q = JudgeReflection(
      OomAttempt(false),
      Text("increase_memory_limit with memory_factor x1.5 did not stop the "
           "OOMKilled restarts: memory_limit_too_low remains. Raise "
           "memory_factor to 2."));
  EXPECT_DOUBLE_EQ(q.evidence, 1.0);   // family, cause, strategy, param, value
  EXPECT_DOUBLE_EQ(q.next_step, 1.0);  // names a parameter
  EXPECT_DOUBLE_EQ(q.agreement, 1.0);  // says it failed; it did
  EXPECT_NEAR(q.score, 1.0, 1e-12);
}

TEST(ReflectionQualityTest, AVagueReflectionScoresLow) {
  ReflectionQuality q = JudgeReflection(
      OomAttempt(false), Text("Something went wrong. We should look into it."));
  EXPECT_DOUBLE_EQ(q.evidence, 0.0);
  EXPECT_DOUBLE_EQ(q.next_step, 0.0);
  EXPECT_DOUBLE_EQ(q.agreement, 0.5);  // says neither
  EXPECT_DOUBLE_EQ(q.score, 0.0);
}

TEST(ReflectionQualityTest, CallingAFailureASuccessLosesTheAgreement) {
  ReflectionQuality q = JudgeReflection(
      OomAttempt(false), Text("increase_memory_limit worked: the OOMKilled pod "
                              "with memory_limit_too_low is healthy."));
  EXPECT_DOUBLE_EQ(q.evidence, 1.0);   // family, cause, strategy
  EXPECT_DOUBLE_EQ(q.next_step, 0.0);  // only names the strategy that failed
  EXPECT_DOUBLE_EQ(q.agreement, 0.0);
  EXPECT_DOUBLE_EQ(q.score, 0.0);
  // The same words on the attempt that did succeed agree, and naming what
  // worked is the next step.
  q = JudgeReflection(OomAttempt(true),
                      Text("increase_memory_limit worked: the OOMKilled pod "
                           "with memory_limit_too_low is healthy."));
  EXPECT_DOUBLE_EQ(q.agreement, 1.0);
  EXPECT_DOUBLE_EQ(q.next_step, 1.0);
  EXPECT_DOUBLE_EQ(q.score, 1.0);
}

TEST(ReflectionQualityTest, EvidenceCountsFactsOfTheObservation) {
  // One fact: a distinctive word of the observation's signal.
  ReflectionQuality q =
      JudgeReflection(OomAttempt(false), Text("The checkout pod failed "
                                              "again; it exceeded its limit."));
  EXPECT_DOUBLE_EQ(q.evidence, 2.0 / 3.0);  // "checkout", "exceeded"
  EXPECT_DOUBLE_EQ(q.agreement, 1.0);
}

TEST(ReflectionQualityTest, AProposedChangeOrAnotherStrategyIsANextStep) {
  v1::Reflection change = Text("It failed.");
  change.add_proposed_changes()->set_strategy("increase_memory_limit");
  EXPECT_DOUBLE_EQ(JudgeReflection(OomAttempt(false), change).next_step, 1.0);
  EXPECT_DOUBLE_EQ(
      JudgeReflection(OomAttempt(false), Text("It failed; try delete_pod."))
          .next_step,
      1.0);
  // A strategy name inside another word is not one.
  EXPECT_DOUBLE_EQ(
      JudgeReflection(OomAttempt(false), Text("It failed; xdelete_pods."))
          .next_step,
      0.0);
}

TEST(ReflectionQualityTest,
     RecommendedStrategyIsTheFieldOrTheOneTheTextPrefers) {
  v1::Reflection r;
  r.set_recommended_strategy("rollback_deployment");
  EXPECT_EQ(RecommendedStrategy(r, "delete_pod"), "rollback_deployment");
  r.set_recommended_strategy("rm_rf");  // not in the catalog
  r.set_text("delete_pod does not pull the lever. Prefer relax_probes.");
  EXPECT_EQ(RecommendedStrategy(r, "delete_pod"), "relax_probes");
  // The strategy tried is not a recommendation; no cue, no recommendation.
  EXPECT_EQ(RecommendedStrategy(Text("Prefer delete_pod."), "delete_pod"), "");
  EXPECT_EQ(RecommendedStrategy(Text("relax_probes ran."), "delete_pod"), "");
}

TEST(ReflectionQualityTest, AnUnexplainedFailureScoresAtMostOneHalf) {
  // Specific and agreeing, but no next step.
  ReflectionQuality q = JudgeReflection(
      OomAttempt(false),
      Text("increase_memory_limit x1.5 did not help: still OOMKilled, "
           "memory_limit_too_low."));
  EXPECT_DOUBLE_EQ(q.evidence, 1.0);
  EXPECT_DOUBLE_EQ(q.next_step, 0.0);
  EXPECT_DOUBLE_EQ(q.score, 0.5);
}

TEST(ReflectionQualityTest, HeuristicQualityFollowsTheContentNotTheRuleBranch) {
  // The same rule branch (an unexplained failure), with and without the
  // deep depth's anomalies and evidence in the text.
  ReflectionRequest r = OomAttempt(false);
  r.selection.mutable_strategy()->set_name("delete_pod");
  r.selection.mutable_action()->set_type(v1::ACTION_TYPE_DELETE_POD);
  r.observation.add_anomalies("restart count climbing on checkout");
  r.depth = ReflectionDepth::kShallow;
  v1::Reflection shallow = HeuristicReflector::ReflectNow(r);
  r.depth = ReflectionDepth::kDeep;
  v1::Reflection deep = HeuristicReflector::ReflectNow(r);
  EXPECT_DOUBLE_EQ(shallow.quality(), JudgeReflection(r, shallow).score);
  EXPECT_GT(deep.quality(), shallow.quality());
  // A meta reflection that names the lever recommends it, and is judged
  // higher than the reflection it re-examines.
  r.meta = true;
  r.previous = shallow;
  v1::Reflection meta = HeuristicReflector::ReflectNow(r);
  EXPECT_EQ(meta.recommended_strategy(), "increase_memory_limit");
  EXPECT_GT(meta.quality(), shallow.quality());
}

// ---------------------------------------------------------- incident result

TEST(IncidentResultTest, ResolutionTimeIsWallTimeAndSimulatedTimeIsApart) {
  WorkflowRunResult run;
  run.status = absl::OkStatus();
  run.last_sequence = 7;
  run.steps = 0;
  run.last_node = "learn";
  *run.state.mutable_started_at() = ToProto(kT0);
  run.state.set_executor_seconds(150);  // 30 s to recovery + 120 s window
  run.state.mutable_observation()->set_success(true);
  v1::IncidentResult r = MakeIncidentResult(run, kT0 + absl::Seconds(2.5));
  EXPECT_EQ(r.status(), v1::WORKFLOW_STATUS_RESOLVED);
  EXPECT_DOUBLE_EQ(r.resolution_time(), 2.5);
  EXPECT_DOUBLE_EQ(r.simulated_resolution_time(), 150);
}

// ---------------------------------------------------------- learning metrics

// One episode, committed in time order.
void AddEpisode(InMemoryKnowledgeStore& store, const std::string& workflow,
                int attempt, const std::string& strategy, bool success,
                absl::Time& t, const std::string& type = "OOMKilled",
                const std::string& meta_recommends = "") {
  LearningCommit c;
  v1::Episode& e = c.episode;
  e.set_id(absl::StrCat(workflow, "/", attempt));
  e.set_workflow_id(workflow);
  *e.mutable_time() = ToProto(t += absl::Seconds(1));
  e.set_error_type(type);
  e.set_signature(absl::StrCat(type, "/cause"));
  e.set_strategy(strategy);
  e.set_attempt(attempt);
  e.set_success(success);
  e.set_confidence(0.5);
  e.set_reflection_quality(success ? 0.9 : 0.5);
  if (!meta_recommends.empty()) {
    e.set_meta_reflection(true);
    e.set_meta_recommended_strategy(meta_recommends);
  }
  ASSERT_THAT(store.CommitLearning(c), IsOk());
}

TEST(LearningMetricsTest, NoEpisodesLeaveEveryRateAbsent) {
  InMemoryKnowledgeStore store;
  absl::StatusOr<v1::GetMetricsResponse> m = ComputeLearningMetrics(store);
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->incidents(), 0);
  EXPECT_FALSE(m->has_success_rate());
  EXPECT_FALSE(m->has_first_attempt_success_rate());
  EXPECT_FALSE(m->has_mean_attempts());
  EXPECT_FALSE(m->has_brier_score());
  EXPECT_FALSE(m->has_mean_reflection_quality());
  EXPECT_FALSE(m->has_reflection_quality_trend());
  EXPECT_FALSE(m->has_meta_recommendation_success_rate());
  EXPECT_EQ(m->meta_recommendations_followed(), 0);
  EXPECT_FALSE(m->has_mean_time_to_resolution_s());
}

TEST(LearningMetricsTest, ThirdsAreAbsentBelowSixIncidentsOfAType) {
  InMemoryKnowledgeStore store;
  absl::Time t = kT0;
  // 5 OOMKilled incidents, all failing their first attempt: the thirds
  // would read 0, and 0 would be a lie.
  for (int i = 0; i < 5; ++i) {
    AddEpisode(store, absl::StrCat("oom", i), 1, "delete_pod", false, t);
  }
  // 6 Evicted incidents: the first two fail at attempt 1, the rest succeed.
  for (int i = 0; i < 6; ++i) {
    AddEpisode(store, absl::StrCat("ev", i), 1, "delete_pod", i >= 2, t,
               "Evicted");
  }
  absl::StatusOr<v1::GetMetricsResponse> m = ComputeLearningMetrics(store);
  ASSERT_THAT(m, IsOk());
  ASSERT_EQ(m->error_types_size(), 2);
  const v1::ErrorTypeMetrics& ev = m->error_types(0);
  const v1::ErrorTypeMetrics& oom = m->error_types(1);
  ASSERT_EQ(ev.error_type(), "Evicted");
  EXPECT_EQ(oom.incidents(), 5);
  EXPECT_DOUBLE_EQ(oom.first_attempt_success_rate(), 0.0);
  EXPECT_FALSE(oom.has_first_third_first_attempt_success());
  EXPECT_FALSE(oom.has_last_third_first_attempt_success());
  EXPECT_FALSE(oom.has_learning_velocity());
  ASSERT_TRUE(ev.has_first_third_first_attempt_success());
  EXPECT_DOUBLE_EQ(ev.first_third_first_attempt_success(), 0.0);  // ev0, ev1
  EXPECT_DOUBLE_EQ(ev.last_third_first_attempt_success(), 1.0);   // ev4, ev5
  EXPECT_DOUBLE_EQ(ev.learning_velocity(), 1.0);
  EXPECT_DOUBLE_EQ(m->first_attempt_success_rate(), 4.0 / 11.0);
  // Qualities: 9 x 0.5 (failures) and 0.9 x 4, oldest first; halves of 5.
  // Oldest 5: oom0-4 (0.5); newest 5: ev1 (0.5), ev2-5 (0.9).
  EXPECT_NEAR(m->reflection_quality_trend(), (0.5 + 4 * 0.9) / 5 - 0.5, 1e-12);
}

TEST(LearningMetricsTest, AMetaRecommendationCountsWhenALaterAttemptRunsIt) {
  InMemoryKnowledgeStore store;
  absl::Time t = kT0;
  // wf1 fails with delete_pod; its meta reflection recommends
  // increase_memory_limit, which wf1's second attempt runs and resolves.
  AddEpisode(store, "wf1", 1, "delete_pod", false, t, "OOMKilled",
             "increase_memory_limit");
  AddEpisode(store, "wf1", 2, "increase_memory_limit", true, t);
  // wf2 recommends rollback_deployment; wf3 (same signature) runs
  // delete_pod (not following), then rollback_deployment, which fails.
  AddEpisode(store, "wf2", 1, "delete_pod", false, t, "OOMKilled",
             "rollback_deployment");
  AddEpisode(store, "wf3", 1, "delete_pod", false, t);
  AddEpisode(store, "wf3", 2, "rollback_deployment", false, t);
  // Counted once: a second rollback_deployment does not count again.
  AddEpisode(store, "wf4", 1, "rollback_deployment", true, t);
  // A recommendation on another signature is not followed by OOMKilled's.
  AddEpisode(store, "wf5", 1, "delete_pod", false, t, "Evicted",
             "relax_probes");
  AddEpisode(store, "wf6", 1, "relax_probes", true, t);
  absl::StatusOr<v1::GetMetricsResponse> m = ComputeLearningMetrics(store);
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->meta_recommendations_followed(), 2);
  ASSERT_TRUE(m->has_meta_recommendation_success_rate());
  EXPECT_DOUBLE_EQ(m->meta_recommendation_success_rate(), 0.5);
}

// ---------------------------------------------------------- workflow metrics

// Stores one workflow whose latest checkpoint is `state` after `node`.
void PutWorkflow(InMemoryCheckpointStore& store, const std::string& id,
                 WorkflowPhase phase, const std::string& node,
                 v1::WorkflowState state, absl::Duration elapsed) {
  state.set_workflow_id(id);
  *state.mutable_started_at() = ToProto(kT0);
  Checkpoint cp;
  cp.workflow_id = id;
  cp.step = 3;
  cp.node = node;
  cp.next_node = IsTerminal(phase) ? "__end__" : node;
  cp.time = kT0 + elapsed;
  cp.state = state.SerializeAsString();
  ASSERT_THAT(store.Put(cp, phase, 0, false), IsOk());
}

TEST(WorkflowMetricsTest, CountsWorkflowsByTheirStoredOutcome) {
  InMemoryCheckpointStore store;
  v1::WorkflowState resolved;
  resolved.set_attempt(1);
  resolved.mutable_observation()->set_success(true);
  resolved.set_executor_seconds(100);
  PutWorkflow(store, "wf-a", WorkflowPhase::kCompleted, "learn", resolved,
              absl::Seconds(4));
  resolved.set_executor_seconds(50);
  resolved.set_attempt(2);
  PutWorkflow(store, "wf-b", WorkflowPhase::kCompleted, "learn", resolved,
              absl::Seconds(2));
  v1::WorkflowState escalated;
  escalated.mutable_escalation()->set_reason("missing secret");
  PutWorkflow(store, "wf-c", WorkflowPhase::kCompleted, "human_escalation",
              escalated, absl::Seconds(60));  // before any attempt
  escalated.set_attempt(3);
  PutWorkflow(store, "wf-d", WorkflowPhase::kCompleted, "human_escalation",
              escalated, absl::Seconds(60));
  PutWorkflow(store, "wf-e", WorkflowPhase::kWaiting, "human_escalation",
              escalated, absl::Seconds(1));
  PutWorkflow(store, "wf-f", WorkflowPhase::kRunning, "execute_fix", escalated,
              absl::Seconds(1));
  PutWorkflow(store, "wf-g", WorkflowPhase::kFailed, "execute_fix", escalated,
              absl::Seconds(1));
  PutWorkflow(store, "wf-h", WorkflowPhase::kCancelled, "execute_fix",
              escalated, absl::Seconds(1));
  v1::GetMetricsResponse m;
  ASSERT_THAT(AddWorkflowMetrics(store, m), IsOk());
  EXPECT_TRUE(m.workflow_counts_stored());
  EXPECT_EQ(m.workflows_started(), 8);
  EXPECT_EQ(m.workflows_resolved(), 2);
  EXPECT_EQ(m.workflows_escalated(), 2);  // the waiting one is not
  EXPECT_EQ(m.escalated_before_attempt(), 1);
  EXPECT_EQ(m.workflows_waiting(), 1);
  EXPECT_EQ(m.workflows_failed(), 1);
  EXPECT_EQ(m.workflows_cancelled(), 1);
  EXPECT_DOUBLE_EQ(m.mean_time_to_resolution_s(), 3.0);  // (4 + 2) / 2
  EXPECT_DOUBLE_EQ(m.mean_simulated_resolution_time_s(), 75.0);
}

TEST(WorkflowMetricsTest, NoResolvedWorkflowLeavesTheTimesAbsent) {
  InMemoryCheckpointStore store;
  v1::WorkflowState waiting;
  PutWorkflow(store, "wf-a", WorkflowPhase::kWaiting, "human_escalation",
              waiting, absl::Seconds(1));
  v1::GetMetricsResponse m;
  ASSERT_THAT(AddWorkflowMetrics(store, m), IsOk());
  EXPECT_EQ(m.workflows_started(), 1);
  EXPECT_EQ(m.workflows_waiting(), 1);
  EXPECT_EQ(m.workflows_escalated(), 0);
  EXPECT_FALSE(m.has_mean_time_to_resolution_s());
  EXPECT_FALSE(m.has_mean_simulated_resolution_time_s());
}

}  // namespace
}  // namespace reflexion::core

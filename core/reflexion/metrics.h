#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/ports/checkpoint_store.h"
#include "core/ports/knowledge_store.h"
#include "reflexion/v1/reflexion.pb.h"

namespace reflexion::core {

// Minimum incidents of one error type for its oldest/newest-third
// first-attempt success (and learning_velocity): below it they are absent.
// 6 makes each third at least 2 incidents.
inline constexpr int kMinIncidentsForThirds = 6;

// Learning metrics computed from every stored episode (one pass, oldest
// first). Formulas (also in the GetMetricsResponse field comments):
// - an incident is a workflow id among episodes; it is resolved when any of
//   its episodes succeeded, resolved first time when its attempt-1 episode
//   succeeded;
// - success_rate = resolved / incidents; first_attempt_success_rate =
//   resolved first time / incidents; mean_attempts = mean of the highest
//   attempt number per incident (absent with no incidents);
// - per error type, incidents in time order (of their first episode) are cut
//   in thirds of floor(n / 3); first/last third first-attempt success are
//   the rates over the oldest/newest third, learning_velocity = last -
//   first; absent below kMinIncidentsForThirds incidents of the type;
// - brier_score = mean over episodes of (confidence - success)^2;
// - mean_reflection_quality over episodes, reflection_quality_trend = mean
//   of the newest half minus the oldest half (absent below 2 episodes);
// - meta_recommendations_followed: episodes with a meta reflection naming a
//   strategy X (meta_recommended_strategy) whose signature later has an
//   episode running X; the first such episode's success counts for it;
//   meta_recommendation_success_rate = those successes / followed (absent
//   when none was followed).
// Fills the episode-derived fields of GetMetricsResponse; the caller adds
// the workflow figures (AddWorkflowMetrics) and live counters. Errors from
// the store are returned.
absl::StatusOr<reflexion::v1::GetMetricsResponse> ComputeLearningMetrics(
    KnowledgeStore& store);

// Adds the workflow figures from the checkpoint store's records to `m`
// (and sets workflow_counts_stored): one workflow per record, so a resume or
// a continuation is not a new start and a fork (its own record) is one.
// - workflows_started = records in any phase;
// - workflows_waiting / workflows_cancelled / workflows_failed = records in
//   phase waiting / cancelled / failed;
// - a completed record's outcome is its final checkpoint's state read as the
//   result was (MakeIncidentResult): RESOLVED or ESCALATED;
//   escalated_before_attempt = ESCALATED with WorkflowState.attempt 0;
// - mean_time_to_resolution_s = mean over RESOLVED of the wall time from
//   WorkflowState.started_at to the final checkpoint's time;
//   mean_simulated_resolution_time_s = mean over the same of
//   WorkflowState.executor_seconds (both absent when none resolved).
// A completed record whose final checkpoint cannot be read or parsed is
// counted as started only (logged). Store errors are returned; `m` may then
// be partly filled. Reads one checkpoint per completed workflow.
absl::Status AddWorkflowMetrics(CheckpointStore& checkpoints,
                                reflexion::v1::GetMetricsResponse& m);

}  // namespace reflexion::core

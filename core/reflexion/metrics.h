#pragma once

#include "absl/status/statusor.h"
#include "core/ports/knowledge_store.h"
#include "reflexion/v1/reflexion.pb.h"

namespace reflexion::core {

// Learning metrics computed from every stored episode (one pass, oldest
// first). Formulas:
// - an incident is a workflow id; it is resolved when any of its episodes
//   succeeded, resolved first time when its attempt-1 episode succeeded;
// - success_rate = resolved / incidents; first_attempt_success_rate =
//   resolved first time / incidents; mean_attempts = mean of the highest
//   attempt number per incident;
// - per error type, incidents in time order (of their first episode) are cut
//   in thirds; first/last third first-attempt success are the rates over the
//   oldest/newest third, learning_velocity = last - first;
// - brier_score = mean over episodes of (confidence - success)^2;
// - mean_reflection_quality over episodes, reflection_quality_trend = mean
//   of the newest half minus the oldest half;
// - mean_time_to_resolution_s = mean time_to_recovery_s of successful
//   episodes.
// Fills the episode-derived fields of GetMetricsResponse; the caller adds
// live counters. Errors from the store are returned.
absl::StatusOr<reflexion::v1::GetMetricsResponse> ComputeLearningMetrics(
    KnowledgeStore& store);

}  // namespace reflexion::core

#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// P(X < Y) for independent X ~ Beta(a_x, b_x) and Y ~ Beta(a_y, b_y), by a
// deterministic midpoint integration of f_Y(y) * F_X(y) on a 4000-point grid
// (each density normalised on the grid; error well below 1e-3 for the
// parameters learn sees). Requires finite a_*, b_* >= 1. Pure, thread-safe.
double ProbabilityBelow(double a_x, double b_x, double a_y, double b_y);

// Settings of the automatic rollback (WorkflowConfig).
struct RollbackRule {
  // A version is judged once it has at least this many trials
  // (reflexion.rollback_min_trials; 0 disables automatic rollback).
  int min_trials = 5;
  // Rolled back when P(its success rate < its parent's) exceeds this.
  double threshold = 0.95;
};

// The automatic rollback of `history` (every version of one strategy,
// oldest first) given `stats` (its VersionStats, GetVersionStats): when the
// latest version was learned from a reflection (author "reflector:..."), has
// a parent, at least rule.min_trials trials, and its success rate is below
// its parent's with probability > rule.threshold under their Beta
// posteriors (VersionStats alpha/beta, uniform prior), returns the new
// version: latest + 1, parent_version = the latest, the parent's params,
// author "auto-rollback", reason with the figures, created_at = `now`.
// Versions made by a human or by a rollback are never judged (no
// oscillation). nullopt otherwise. Pure, thread-safe.
std::optional<reflexion::v1::Strategy> JudgeLatestVersion(
    const std::vector<reflexion::v1::Strategy>& history,
    const std::vector<reflexion::v1::VersionStats>& stats,
    const RollbackRule& rule, absl::Time now);

// The version that makes `target`'s parameters current again after
// `latest`: latest + 1, parent_version = latest, target's params,
// `author`, `reason`, created_at = `now`. Pure.
reflexion::v1::Strategy RollbackVersion(const reflexion::v1::Strategy& latest,
                                        const reflexion::v1::Strategy& target,
                                        const std::string& author,
                                        const std::string& reason,
                                        absl::Time now);

}  // namespace reflexion::core

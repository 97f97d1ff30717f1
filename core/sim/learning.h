#pragma once

// The learning benchmark (bench/learning): five strategy-selection policies
// side by side on the same incidents of the simulated cluster, with the
// same seeds, scored against the scenarios' hidden causes.
//
// - random: uniform over the eligible automated (tier A/B) strategies;
//   escalates only when none is left.
// - static: the catalog's expert default per error family (its first
//   eligible strategy in catalog order, core::StrategiesFor), then the next.
// - greedy: the highest posterior mean (Beta per signature and strategy from
//   the catalog's priors, updated by every outcome; no exploration), the
//   original service's "highest confidence"; escalates when nothing is
//   eligible or the best mean is below SelectorOptions'
//   min_candidate_confidence. Predicts its posterior mean.
// - ours: the service itself: core::ReflexionWorkflow (selector, learning,
//   reflection, undo) on an in-memory knowledge store with the heuristic
//   reflector and a FakeClock, one incident after the other. Predicts the
//   selection's confidence (Episode.confidence).
// - oracle: knows each incident's scenario: runs the eligible automated
//   strategy most likely to hold (success x (1 - relapse), with the memory
//   factor the scenario needs), or escalates at once when none reaches
//   kFixThreshold. Predicts that true probability.
//
// Every policy runs on its own SimulatedCluster with the same seed; the
// cluster draws an outcome from the incident and the action (see
// SimulatedCluster::Execute), not from ids, so the same action on the same
// incident fares the same under every policy.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::sim {

enum class BenchPolicy { kRandom, kStatic, kGreedy, kOurs, kOracle };

// Every policy, in report order.
inline constexpr BenchPolicy kBenchPolicies[] = {
    BenchPolicy::kRandom, BenchPolicy::kStatic, BenchPolicy::kGreedy,
    BenchPolicy::kOurs, BenchPolicy::kOracle};

// "random", "static", "greedy", "ours", "oracle".
absl::string_view BenchPolicyName(BenchPolicy policy);
// Inverse of BenchPolicyName; kInvalidArgument naming the value otherwise.
absl::StatusOr<BenchPolicy> BenchPolicyFromName(absl::string_view name);

// An automated strategy "fixes" a cause when its probability of a fix that
// holds is at least this.
inline constexpr double kFixThreshold = 0.5;

// One incident of a run and what the scenarios say about it.
struct BenchIncident {
  reflexion::v1::Incident incident;  // namespace, pod_name, error_type
  std::string scenario_id;           // hidden cause (the simulator's choice)
  std::string signature;             // the service's analysis of it
  // Whether some eligible automated strategy fixes it (kFixThreshold).
  bool fixable = false;
  // The oracle's first choice ("" when it escalates at once) and its
  // probability of a fix that holds.
  std::string best_strategy;
  double best_probability = 0;
};

// Generates `count` incidents (1..100000) from a scenario document: for
// incident i a scenario drawn with probability weight / sum of weights
// from (seed, i), one of its error types (for a catch-all: its container's
// last termination or waiting reason when no other scenario lists it, else
// "Unknown"), in namespace "bench", with the first pod name
// "<scenario id>-<i>-<j>" (j = 0, 1, ...) the simulator (simulator seed =
// `seed`) assigns to that scenario. kInvalidArgument for an invalid
// document or count; kFailedPrecondition when no pod name within 1000
// tries lands on a scenario (its share among its error types is tiny).
absl::StatusOr<std::vector<BenchIncident>> MakeBenchIncidents(
    absl::string_view scenarios_yaml, uint64_t seed, int count);

// One fix attempt.
struct BenchAttempt {
  std::string strategy;
  bool success = false;
  std::optional<double> predicted;  // the policy's success probability
};

// One incident as a policy handled it.
struct BenchEpisode {
  int index = 0;  // position in the run, 0-based
  std::string signature;
  std::string scenario_id;
  bool fixable = false;
  std::vector<BenchAttempt> attempts;
  bool resolved = false;
  bool escalated = false;  // ended with a human (at once or after attempts)

  // Attempts that did not resolve the incident.
  int Wasted() const;
  // Resolved on attempt 1, or escalated without an attempt when nothing
  // automatable fixes the cause.
  bool FirstDecisionRight() const;
};

// How one policy runs.
struct BenchRunOptions {
  BenchPolicy policy = BenchPolicy::kOurs;
  // simulator.seed and reflexion.seed, and the seed of random's choices.
  uint64_t seed = 1;
  int max_attempts = 3;  // workflow.max_retry_count
  // ours only: reflexion.cost_escalation and reflexion.cost_failed_attempt
  // (absent: the server's defaults).
  std::optional<double> cost_escalation;
  std::optional<double> cost_failed_attempt;
  // ours only: before incident `plant_bad_version_at` (0-based; negative:
  // never) a version of increase_memory_limit authored "reflector:planted"
  // (as if a reflection had proposed it) with the
  // catalog's smallest memory_factor (x1.1, too small for every OOM of the
  // embedded suite) is made current, so that the automatic rollback can be
  // seen at work.
  int plant_bad_version_at = -1;
};

// A strategy version that appeared in ours' store during a run.
struct BenchVersion {
  int incident = 0;  // before which incident (0-based) it was seen
  reflexion::v1::Strategy strategy;
};

// Runs `incidents` (from MakeBenchIncidents with the same document and
// seed) under one policy on a fresh simulated cluster and fresh memory.
// Deterministic: the same arguments give the same episodes. Errors from
// the scenario document, the cluster or the workflow are returned.
// With `versions` (ours only), every strategy version after the catalog's
// that appeared during the run, in order (the planted one included).
absl::StatusOr<std::vector<BenchEpisode>> RunBenchPolicy(
    absl::string_view scenarios_yaml,
    const std::vector<BenchIncident>& incidents, const BenchRunOptions& options,
    std::vector<BenchVersion>* versions = nullptr);

// Figures of episodes [from, to) of a run (window) or of a whole run.
struct BenchFigures {
  int episodes = 0;
  double first_attempt_success = 0;  // resolved on attempt 1 / episodes
  double first_decision_right = 0;   // FirstDecisionRight / episodes
  int attempts = 0;
  int wasted = 0;
  int escalations = 0;
  int resolved = 0;
  std::optional<double> brier;  // mean (predicted - success)^2, if any
};
BenchFigures Figures(const std::vector<BenchEpisode>& episodes, size_t from,
                     size_t to);
// First decision right over the episodes whose signature had at least
// `after` earlier episodes in the run; nullopt when there are none.
std::optional<double> FirstDecisionRightAfter(
    const std::vector<BenchEpisode>& episodes, int after);

}  // namespace reflexion::sim

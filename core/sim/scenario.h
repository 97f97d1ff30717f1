#pragma once

// The simulated cluster's model: scenarios with a hidden root cause,
// observable signals and per-action outcome probabilities, parsed from YAML.
//
// YAML shape (every field is checked; unknown fields and fields given twice
// are errors):
//
//   scenarios:
//     - id: crash-oom                   # unique, required
//       error_types: [CrashLoopBackOff] # required; "*" = catch-all
//       weight: 1                       # > 0, default 1
//       root_cause: "..."               # hidden, never observable
//       signals:                        # what Diagnose returns
//         container: {name, image, restart_count, last_termination_reason,
//                     last_exit_code, waiting_reason, waiting_message}
//         events: [{type, reason, message, count}]
//         logs: "..."
//         last_healthy_image: "..."
//         available_pull_secrets: [regcred]
//         recent_rollout: false
//         memory_limit_bytes: 268435456
//       actions:                        # catalog name -> model
//         increase_memory_limit: {success: 0.9, relapse: 0, recovery_s: 40,
//                                 min_memory_factor: 1.5,
//                                 success_below: 0.05}
//
//       regressions:                    # optional: catalog name -> the
//         patch_image: OOMKilled        # failure that action causes
//       workload: {replicas: 3, ready: 2}  # optional, see WorkloadModel
//
// A planted regression makes the pod worse after that action: it never
// recovers, its failure reason becomes the given one (1 to 64 characters of
// [A-Za-z0-9_.-]) and it restarts more than twice its restart_count and
// more than 5 times in the window (what core/reflexion/regression.h calls
// more restarts); with a workload, no replica is ready at the end. An undo
// of that action brings the pod back to its original failing state. Undo
// itself cannot be listed under actions or regressions.
//
// Text in signals may contain "{pod}" and "{namespace}", replaced by the
// diagnosed pod's names.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::sim {

// The error type entry that makes a scenario a catch-all.
inline constexpr absl::string_view kCatchAll = "*";

// How one action fares against one scenario.
struct ActionModel {
  // Probability that the pod becomes Ready, in [0, 1].
  double success = 0;
  // Probability that a recovered pod fails again within the window, [0, 1].
  double relapse = 0;
  // Mean seconds from the action to Ready, > 0.
  double recovery_s = 30;
  // increase_memory_limit only: below this memory_factor the action
  // succeeds with probability success_below instead of success.
  std::optional<double> min_memory_factor;
  double success_below = 0.05;

  // The success probability for an action with `params`.
  double SuccessProbability(const reflexion::v1::StrategyParams& params) const;
};

// The failing pod's workload (scenario `workload`): desired replicas (>= 1)
// and how many are ready while the pod fails (0 to replicas - 1: the pod is
// one of the others). Reported in every observation (Observation
// .workload_*): all ready after a fix that holds, none after a planted
// regression, `ready` otherwise.
struct WorkloadModel {
  int32_t replicas = 0;  // 0: the scenario has no workload section
  int32_t ready = 0;
};

// One failure mode of a pod.
struct Scenario {
  std::string id;
  // Reported error types this scenario explains; kCatchAll for any other.
  std::vector<std::string> error_types;
  double weight = 1;
  // Hidden ground truth, for humans reading the YAML and for tests.
  std::string root_cause;
  // Observable signals: at most one container status; source unset.
  reflexion::v1::Diagnosis signals;
  // Listed actions; an unlisted action never succeeds.
  absl::flat_hash_map<int, ActionModel> actions;
  // Planted regressions: action type -> the failure reason it causes.
  absl::flat_hash_map<int, std::string> regressions;
  WorkloadModel workload;

  // Whether `error_type` is listed (exact, case-sensitive match).
  bool Matches(absl::string_view error_type) const;
  bool IsCatchAll() const { return Matches(kCatchAll); }
  // The model of `type`, or null when the action is not listed.
  const ActionModel* FindAction(reflexion::v1::ActionType type) const;
  // The failure reason planted for `type`, or null.
  const std::string* FindRegression(reflexion::v1::ActionType type) const;
};

// Parses and validates a scenario document. kInvalidArgument for malformed
// YAML or an invalid scenario; the message names the scenario id (or its
// index) and the field, e.g.
//   scenario "crash-oom": actions.delete_pod.success: 1.5 is outside [0, 1]
// Never throws: yaml-cpp's exceptions are caught here.
absl::StatusOr<std::vector<Scenario>> ParseScenarios(
    absl::string_view yaml_text);

// Catalog name of an action type without prefix ("delete_pod"), derived
// from the proto enum; "" for UNSPECIFIED and unknown values.
std::string ActionName(reflexion::v1::ActionType type);
// Inverse of ActionName; kInvalidArgument for an unknown name.
absl::StatusOr<reflexion::v1::ActionType> ActionTypeFromName(
    absl::string_view name);

}  // namespace reflexion::sim

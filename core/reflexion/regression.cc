#include "core/reflexion/regression.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/facts.h"
#include "core/reflexion/utf8.h"

namespace reflexion::core {
namespace {

// A reason copied into the message (foreign bytes, clipped).
std::string Quoted(absl::string_view s) { return ToValidUtf8Clipped(s, 64); }

bool IsCrashFamily(absl::string_view family) {
  return family == "CrashLoopBackOff" || family == "OOMKilled" ||
         family == "RunContainerError";
}

// Reasons a pod shows while it is still starting: the fix is not done yet.
bool IsStarting(absl::string_view reason) {
  return reason == "ContainerCreating" || reason == "PodInitializing";
}

}  // namespace

std::optional<std::string> DetectRegression(
    const v1::Incident& incident, const v1::Analysis& analysis,
    const v1::ExecutionResult& execution, const v1::Observation& observation) {
  if (!execution.applied() || execution.dry_run()) return std::nullopt;
  const v1::ActionType type = execution.action().type();
  if (!HasInverse(type)) return std::nullopt;
  if (observation.success()) return std::nullopt;
  const ActionSpec* spec = FindAction(type);
  const std::string after = absl::StrCat(" after ", spec->name);

  const IncidentFacts facts = ExtractFacts(incident);
  // Every face the original failure showed.
  std::vector<std::string> before = {FamilyOf(incident.error_type()),
                                     FamilyOf(analysis.error_family())};
  for (const ContainerFacts& c : facts.containers) {
    for (const ContainerStateFacts* st : {&c.state, &c.last_state}) {
      if (!st->reason.empty()) before.push_back(FamilyOf(st->reason));
    }
  }
  before.erase(std::remove(before.begin(), before.end(), std::string()),
               before.end());
  const std::string original =
      !analysis.error_family().empty()
          ? analysis.error_family()
          : (before.empty() ? std::string("failing") : before.front());

  // A new failure mode.
  const std::string now = FamilyOf(observation.failure_reason());
  if (!now.empty() && !IsStarting(now) &&
      std::find(before.begin(), before.end(), now) == before.end()) {
    const bool same_crash =
        now == "CrashLoopBackOff" &&
        std::any_of(before.begin(), before.end(),
                    [](const std::string& f) { return IsCrashFamily(f); });
    if (!same_crash) {
      return absl::StrCat("regression: the pod went from ", Quoted(original),
                          " to ", Quoted(now), after);
    }
  }

  // More restarts.
  int64_t baseline = 0;
  bool found = false;
  for (const ContainerFacts& c : facts.containers) {
    if (!analysis.container().empty() && c.name == analysis.container()) {
      baseline = c.restart_count;
      found = true;
    }
  }
  if (!found) {
    for (const ContainerFacts& c : facts.containers) {
      baseline = std::max(baseline, c.restart_count);
    }
  }
  const int64_t limit = std::max<int64_t>(
      kRegressionRestartFloor,
      kRegressionRestartFactor * std::max<int64_t>(0, baseline));
  if (observation.restarts() > limit) {
    return absl::StrCat("regression: ", observation.restarts(),
                        " restarts in the ", observation.window_s(), "s window",
                        after, " (the pod had restarted ", baseline,
                        " times before; more than ", limit,
                        " is worse than not fixed)");
  }

  // A partly healthy workload now fully failing.
  if (observation.workload_replicas() > 0 &&
      observation.workload_ready_before() > 0 &&
      observation.workload_ready_after() == 0) {
    return absl::StrCat("regression: the workload had ",
                        observation.workload_ready_before(), " of ",
                        observation.workload_replicas(),
                        " replicas ready before and none at the end of the "
                        "window",
                        after);
  }
  return std::nullopt;
}

}  // namespace reflexion::core

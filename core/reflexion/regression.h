#pragma once

// Regression detection: did an applied fix make the pod worse than it was?
// A worse pod gets the action's inverse at once (BuildUndo); a pod that is
// merely not fixed does not (that is a failed attempt, learned as such).

#include <optional>
#include <string>

#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Restarts in the observation window above which a pod "restarts more":
// more than both this floor and kRegressionRestartFactor times the restart
// count the incident reported (its lifetime count before the fix). The
// floor is what a crash-looping pod that the fix did not help shows anyway:
// a rollout starts a fresh pod whose kubelet back-off (10 s, doubling)
// allows about 5 restarts in a 5-minute window; the factor keeps a pod
// that was already crash-looping from being judged on its usual pace.
inline constexpr int kRegressionRestartFloor = 5;
inline constexpr int kRegressionRestartFactor = 2;

// Returns why `observation` shows that the fix in `execution` made the pod
// worse than `incident` (as analysed in `analysis`), or nullopt. Only an
// applied action (execution.applied, not a dry run) with an automatic
// inverse (HasInverse of execution.action.type) can regress; a successful
// observation never does. A regression is one of:
//
// - a new failure mode: observation.failure_reason is non-empty and of a
//   failure family (FamilyOf) that is none of the incident's: its
//   error_type, the analysis' error_family, and its containers' waiting and
//   termination reasons. CrashLoopBackOff after a crash family
//   (CrashLoopBackOff, OOMKilled, RunContainerError) is the same mode — the
//   waiting state of a crash does not name its cause — and a pod still
//   starting at the end of the window (ContainerCreating, PodInitializing)
//   is a fix not yet done, not a new mode;
// - more restarts: observation.restarts > max(kRegressionRestartFloor,
//   kRegressionRestartFactor x the incident's restart count of the
//   analysed container, else the highest of its containers);
// - a workload that was partly healthy now fully failing: the executor
//   reported the workload (observation.workload_replicas > 0) with at
//   least one ready replica before the action
//   (workload_ready_before > 0) and none at the end of the window
//   (workload_ready_after == 0).
//
// The same failure again with a similar number of restarts is a failed
// fix, not a regression. Pure and thread-safe; the reason names the
// evidence, e.g. "regression: the pod went from CrashLoopBackOff to
// OOMKilled after patch_image".
std::optional<std::string> DetectRegression(
    const reflexion::v1::Incident& incident,
    const reflexion::v1::Analysis& analysis,
    const reflexion::v1::ExecutionResult& execution,
    const reflexion::v1::Observation& observation);

}  // namespace reflexion::core

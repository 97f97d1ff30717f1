#include "core/reflexion/heuristic_reflector.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/reflection_quality.h"

namespace reflexion::core {
namespace {

// Which lever addresses which cause: the knowledge meta-reflection uses to
// explain a failure the first reflection could not.
struct Lever {
  const char* cause;
  const char* lever;
  const char* strategy;
};
constexpr Lever kLevers[] = {
    {"image_not_found", "point the container at an image that exists",
     "patch_image"},
    {"registry_auth", "give the kubelet registry credentials",
     "attach_pull_secret"},
    {"registry_unreachable",
     "restore the image reference whose registry resolved",
     "rollback_deployment"},
    {"registry_network_error", "pull afresh from a new pod", "delete_pod"},
    {"invalid_reference", "restore a well-formed image reference",
     "rollback_deployment"},
    {"bad_release", "return to the last healthy revision",
     "rollback_deployment"},
    {"app_error", "return to the last healthy revision", "rollback_deployment"},
    {"probe_failure", "give the container more time before probes kill it",
     "relax_probes"},
    {"memory_limit_too_low", "give the container more memory",
     "increase_memory_limit"},
    {"jvm_heap", "give the JVM more memory (its heap follows the limit)",
     "increase_memory_limit"},
    {"memory_regression", "undo the release that grew memory use",
     "rollback_deployment"},
    {"missing_config_key", "return to a revision that does not need the key",
     "rollback_deployment"},
    {"missing_configmap", "create the missing ConfigMap (human)",
     "create_missing_config"},
    {"missing_secret", "create the missing Secret (human)",
     "create_missing_config"},
    {"insufficient_resources", "make the pod fit a node",
     "lower_resource_requests"},
    {"node_selector_mismatch", "undo the scheduling constraint",
     "rollback_deployment"},
    {"memory_pressure", "reschedule the pod away from the pressured node",
     "delete_pod"},
    {"storage_regression", "undo the release that fills the disk",
     "rollback_deployment"},
    {"segfault", "return to the last healthy revision", "rollback_deployment"},
};

const Lever* LeverFor(absl::string_view cause) {
  for (const Lever& l : kLevers) {
    if (cause == l.cause) return &l;
  }
  return nullptr;
}

std::string StrategyName(const v1::StrategySelection& sel) {
  return sel.strategy().name().empty() ? "the fix" : sel.strategy().name();
}

v1::Reflection Meta(const ReflectionRequest& r) {
  v1::Reflection out;
  out.set_meta(true);
  out.set_reflector("heuristic");
  out.set_depth("deep");
  const std::string name = StrategyName(r.selection);
  const std::string& sig = r.analysis.signature();
  const Lever* lever = LeverFor(r.analysis.cause());
  std::string text = absl::StrCat(
      "Re-examining the reflection on attempt ", r.attempt, " (quality ",
      absl::StrFormat("%.2f", r.previous.quality()), "). ");
  if (lever != nullptr) {
    absl::StrAppend(&text, "For ", sig, " the lever is to ", lever->lever, "; ",
                    name);
    if (name == lever->strategy) {
      absl::StrAppend(&text,
                      " pulls that lever, so the failure points at its "
                      "parameters or at a second cause.");
      out.add_lessons(absl::StrCat(sig, ": ", name,
                                   " is the right lever but was not enough"));
    } else {
      absl::StrAppend(&text, " does not, which explains the failure. Prefer ",
                      lever->strategy, ".");
      out.set_recommended_strategy(lever->strategy);
      out.add_lessons(
          absl::StrCat(sig, ": prefer ", lever->strategy, " over ", name));
    }
  } else {
    absl::StrAppend(&text, "No known lever for ", sig,
                    "; the evidence is thin, so the next attempt should be "
                    "the most conservative reversible action.");
    out.add_lessons(absl::StrCat(sig, ": unexplained failure of ", name));
  }
  if (!r.observation.signals().empty()) {
    absl::StrAppend(&text, " Last signal: ", r.observation.signals(0));
  }
  out.set_text(text);
  // Judged from the content, as every reflector's (reflection_quality.h).
  out.set_quality(JudgeReflection(r, out).score);
  return out;
}

}  // namespace

v1::Reflection HeuristicReflector::ReflectNow(const ReflectionRequest& r) {
  if (r.meta) return Meta(r);
  v1::Reflection out;
  out.set_reflector("heuristic");
  out.set_depth(DepthName(r.depth));
  const v1::Observation& obs = r.observation;
  const std::string name = StrategyName(r.selection);
  const std::string& sig = r.analysis.signature();
  const v1::Action& action = r.selection.action();
  std::string text;

  if (obs.success()) {
    text = absl::StrFormat(
        "%s resolved %s on attempt %d: the pod was healthy after %.0fs and "
        "stayed healthy for the %.0fs window.",
        DescribeAction(action), sig, r.attempt, obs.time_to_recovery_s(),
        obs.window_s());
    out.add_lessons(absl::StrFormat("%s: %s works (healthy after %.0fs)", sig,
                                    name, obs.time_to_recovery_s()));
    if (r.attempt > 1 && !r.tried_strategies.empty()) {
      absl::StrAppend(&text, " Earlier attempts (",
                      absl::StrJoin(r.tried_strategies.begin(),
                                    r.tried_strategies.end() - 1, ", "),
                      ") did not; start with ", name, " next time.");
    }
  } else if (obs.recovered()) {
    text = absl::StrFormat(
        "%s brought the pod up after %.0fs but it relapsed within the %.0fs "
        "window (%d restarts): it relieves the symptom, not the cause of %s.",
        DescribeAction(action), obs.time_to_recovery_s(), obs.window_s(),
        obs.restarts(), sig);
    out.add_lessons(
        absl::StrCat(sig, ": ", name, " only relieves symptoms (relapse)"));
  } else if (action.type() == v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT &&
             (obs.failure_reason() == "OOMKilled" ||
              r.analysis.error_family() == "OOMKilled")) {
    double next = std::min(3.0, action.params().memory_factor() * 1.35);
    text = absl::StrFormat(
        "Raising memory x%.2g was not enough: the container is still "
        "OOMKilled. The lever is right; the raise is too small.",
        action.params().memory_factor());
    out.add_lessons(absl::StrFormat("%s: memory x%.2g too small", sig,
                                    action.params().memory_factor()));
    if (r.depth != ReflectionDepth::kShallow &&
        next > action.params().memory_factor() + 0.05) {
      v1::StrategyChange* change = out.add_proposed_changes();
      change->set_strategy(name);
      *change->mutable_params() = r.selection.strategy().params();
      change->mutable_params()->set_memory_factor(next);
      change->set_reason(absl::StrFormat("still OOMKilled after x%.2g on %s",
                                         action.params().memory_factor(), sig));
    }
  } else if (action.type() == v1::ACTION_TYPE_RELAX_PROBES &&
             r.analysis.cause() == "probe_failure") {
    double next = std::min(5.0, action.params().probe_factor() * 1.5);
    text = absl::StrFormat(
        "Relaxing probes x%.2g did not stop the restarts; if the probe still "
        "fails the delay is too short.",
        action.params().probe_factor());
    out.add_lessons(absl::StrFormat("%s: probe relax x%.2g too small", sig,
                                    action.params().probe_factor()));
    if (r.depth != ReflectionDepth::kShallow &&
        next > action.params().probe_factor() + 0.05) {
      v1::StrategyChange* change = out.add_proposed_changes();
      change->set_strategy(name);
      *change->mutable_params() = r.selection.strategy().params();
      change->mutable_params()->set_probe_factor(next);
      change->set_reason(
          absl::StrFormat("probes still failing after x%.2g on %s",
                          action.params().probe_factor(), sig));
    }
  } else {
    text = absl::StrFormat(
        "%s did not change the failure: the pod is still %s after the %.0fs "
        "window. The attempt gives no evidence of why.",
        DescribeAction(action),
        obs.failure_reason().empty() ? "failing" : obs.failure_reason(),
        obs.window_s());
    out.add_lessons(absl::StrCat(sig, ": ", name, " did not help"));
    // Unexplained: no next step, so its judged quality is low and
    // meta-reflection looks again.
  }
  if (r.depth == ReflectionDepth::kDeep) {
    for (const std::string& anomaly : obs.anomalies()) {
      absl::StrAppend(&text, " Anomaly: ", anomaly, ".");
    }
    if (!r.analysis.evidence().empty()) {
      absl::StrAppend(&text, " Evidence: ", r.analysis.evidence(0), ".");
    }
  }
  out.set_text(text);
  // Judged from the content, as every reflector's (reflection_quality.h).
  out.set_quality(JudgeReflection(r, out).score);
  return out;
}

void HeuristicReflector::Reflect(const ReflectionRequest& request,
                                 Callback<v1::Reflection> done) {
  std::move(done)(ReflectNow(request));
}

}  // namespace reflexion::core

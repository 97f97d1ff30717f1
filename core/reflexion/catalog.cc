#include "core/reflexion/catalog.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/reflexion/pod_object.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "core/status_macros.h"
#include "google/protobuf/descriptor.h"

namespace reflexion::core {
namespace {

using reflexion::v1::Action;
using reflexion::v1::ActionType;
using reflexion::v1::SafetyTier;
using reflexion::v1::Strategy;
using reflexion::v1::StrategyParams;

// One ValueChange within the limits of types.proto; `field` names it in
// the error, e.g. "action.restore[2]".
absl::Status CheckChange(const v1::ValueChange& c, absl::string_view field) {
  if (c.path().empty() || c.path().size() > kMaxChangePath) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".path must be 1 to ",
                                                   kMaxChangePath, " bytes (",
                                                   c.path().size(), ")"));
  }
  struct Part {
    const char* name;
    const std::string& value;
    size_t max;
  };
  for (const Part& p : {Part{"path", c.path(), kMaxChangePath},
                        Part{"before", c.before(), kMaxChangeValue},
                        Part{"after", c.after(), kMaxChangeValue}}) {
    if (p.value.size() > p.max) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".", p.name, " is ", p.value.size(),
                       " bytes; at most ", p.max));
    }
    if (!IsValidUtf8(p.value)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".", p.name, " is not valid UTF-8"));
    }
  }
  return absl::OkStatus();
}

// Parameter bounds (documented in types.proto).
constexpr double kMemoryMin = 1.1, kMemoryMax = 3.0, kMemoryDefault = 1.5;
constexpr double kProbeMin = 1.5, kProbeMax = 5.0, kProbeDefault = 2.0;
constexpr double kRequestsMin = 0.3, kRequestsMax = 0.9,
                 kRequestsDefault = 0.75;

struct FamilyEntry {
  const char* family;
  const char* strategy;
  Prior prior;
};

// Priors per error family: deliberately weak (a few pseudo-trials), so that
// what works for each root-cause signature is learned, not assumed. Tier C
// entries are what a human would most likely do; they are recommended on
// escalation, never executed automatically.
constexpr FamilyEntry kFamilyTable[] = {
    {"ImagePullBackOff", "patch_image", {2.0, 2.0}},
    {"ImagePullBackOff", "rollback_deployment", {1.8, 2.2}},
    {"ImagePullBackOff", "attach_pull_secret", {1.6, 2.4}},
    {"ImagePullBackOff", "delete_pod", {1.2, 2.8}},
    {"InvalidImageName", "rollback_deployment", {2.4, 1.6}},
    {"InvalidImageName", "patch_image", {2.2, 1.8}},
    {"CrashLoopBackOff", "rollback_deployment", {2.0, 2.0}},
    {"CrashLoopBackOff", "delete_pod", {1.8, 2.2}},
    {"CrashLoopBackOff", "relax_probes", {1.6, 2.4}},
    {"CrashLoopBackOff", "increase_memory_limit", {1.4, 2.6}},
    {"OOMKilled", "increase_memory_limit", {2.2, 1.8}},
    {"OOMKilled", "rollback_deployment", {1.8, 2.2}},
    {"OOMKilled", "delete_pod", {1.2, 2.8}},
    {"CreateContainerConfigError", "rollback_deployment", {2.0, 2.0}},
    {"CreateContainerConfigError", "create_missing_config", {2.0, 2.0}},
    {"CreateContainerConfigError", "delete_pod", {1.0, 3.0}},
    {"Pending", "lower_resource_requests", {2.0, 2.0}},
    {"Pending", "rollback_deployment", {1.8, 2.2}},
    {"Pending", "delete_pod", {1.2, 2.8}},
    {"Pending", "scale_node_pool", {1.8, 2.2}},
    {"Pending", "relax_node_selector", {1.6, 2.4}},
    {"Evicted", "delete_pod", {2.0, 2.0}},
    {"Evicted", "rollback_deployment", {1.6, 2.4}},
    {"Evicted", "lower_resource_requests", {1.4, 2.6}},
    {"Evicted", "increase_memory_limit", {1.2, 2.8}},
    {"ImagePullBackOff", "create_missing_config", {1.0, 3.0}},
    {"Pending", "create_missing_config", {1.0, 3.0}},
    {"CreateContainerError", "rollback_deployment", {2.0, 2.0}},
    {"CreateContainerError", "patch_image", {1.8, 2.2}},
    {"CreateContainerError", "delete_pod", {1.2, 2.8}},
    {"CreateContainerError", "create_missing_config", {1.6, 2.4}},
    {"RunContainerError", "rollback_deployment", {2.0, 2.0}},
    {"RunContainerError", "patch_image", {1.8, 2.2}},
    {"RunContainerError", "delete_pod", {1.2, 2.8}},
    {"ContainerCreating", "delete_pod", {1.8, 2.2}},
    {"ContainerCreating", "rollback_deployment", {1.6, 2.4}},
    {"ContainerCreating", "create_missing_config", {1.6, 2.4}},
    {"ContainerCreating", "scale_node_pool", {1.0, 3.0}},
    // Init containers fail for every reason a container does.
    {"InitContainerError", "rollback_deployment", {2.0, 2.0}},
    {"InitContainerError", "delete_pod", {1.8, 2.2}},
    {"InitContainerError", "patch_image", {1.6, 2.4}},
    {"InitContainerError", "attach_pull_secret", {1.2, 2.8}},
    {"InitContainerError", "increase_memory_limit", {1.2, 2.8}},
    {"InitContainerError", "create_missing_config", {1.2, 2.8}},
    {"NotReady", "relax_probes", {2.0, 2.0}},
    {"NotReady", "rollback_deployment", {1.8, 2.2}},
    {"NotReady", "delete_pod", {1.4, 2.6}},
};

// Generic set for families the catalog does not know (after deep analysis).
constexpr FamilyEntry kGenericTable[] = {
    {"*", "rollback_deployment", {1.6, 2.4}},
    {"*", "delete_pod", {1.4, 2.6}},
};

struct CauseOverride {
  const char* cause;
  const char* strategy;  // "*": every strategy the cause lists no entry for
  Prior prior;
};

// What the cause says about each strategy, whatever the family (an init
// container's OOM is fixed as a container's). The first choice gets a prior
// worth some fifteen trials, the rest stay weak so that learning can still
// overturn them. Where only a human can fix the cause, every automatable
// prior is low enough that select_strategy's cost decision escalates at once
// (SelectorOptions::cost_escalation) and recommends the tier-C action; where
// nothing in the catalog fixes it, every strategy is below
// min_candidate_confidence and it escalates as "nothing confident".
constexpr CauseOverride kCauseOverrides[] = {
    // Memory.
    {"memory_limit_too_low", "increase_memory_limit", {12.0, 3.0}},
    {"memory_limit_too_low", "rollback_deployment", {1.5, 4.0}},
    {"memory_limit_too_low", "delete_pod", {1.0, 6.0}},
    {"memory_limit_too_low", "*", {1.0, 6.0}},
    {"jvm_heap", "increase_memory_limit", {12.0, 3.0}},
    {"jvm_heap", "rollback_deployment", {1.5, 4.0}},
    {"jvm_heap", "*", {1.0, 6.0}},
    {"memory_regression", "rollback_deployment", {12.0, 3.0}},
    {"memory_regression", "increase_memory_limit", {3.0, 3.0}},
    {"memory_regression", "*", {1.0, 6.0}},
    // Releases and images.
    {"bad_release", "rollback_deployment", {12.0, 3.0}},
    {"bad_release", "delete_pod", {1.0, 6.0}},
    {"bad_release", "*", {1.0, 6.0}},
    {"image_not_found", "patch_image", {12.0, 3.0}},
    {"image_not_found", "rollback_deployment", {6.0, 3.0}},
    // A tag that does not exist is not pulled by a retry or a credential.
    {"image_not_found", "*", {1.0, 12.0}},
    {"invalid_reference", "patch_image", {12.0, 3.0}},
    {"invalid_reference", "rollback_deployment", {6.0, 3.0}},
    {"invalid_reference", "*", {1.0, 6.0}},
    // Docker Hub's anonymous pull limit: authenticated pulls (an existing
    // pull secret) get a higher one.
    {"rate_limited", "attach_pull_secret", {10.0, 4.0}},
    {"rate_limited", "*", {1.0, 9.0}},
    {"registry_auth", "attach_pull_secret", {12.0, 3.0}},
    {"registry_auth", "create_missing_config", {6.0, 3.0}},
    {"registry_auth", "*", {1.0, 6.0}},
    // Config: a human creates the missing object. A missing Secret or
    // ConfigMap is most often one not synced yet (an operator, an ordering
    // problem): nothing automated helps. A key missing from an existing
    // ConfigMap is most often read by a new revision: an SRE rolls back
    // (tier A) first and creates the key later.
    {"missing_secret", "create_missing_config", {8.0, 2.0}},
    {"missing_secret", "*", {1.0, 6.0}},
    {"missing_configmap", "create_missing_config", {8.0, 2.0}},
    {"missing_configmap", "*", {1.0, 6.0}},
    {"missing_config_key", "create_missing_config", {8.0, 2.0}},
    {"missing_config_key", "rollback_deployment", {7.0, 4.0}},
    {"missing_config_key", "*", {1.0, 6.0}},
    // Scheduling.
    {"unbound_volume", "create_missing_config", {8.0, 2.0}},
    {"unbound_volume", "scale_node_pool", {2.0, 4.0}},
    {"unbound_volume", "*", {1.0, 9.0}},
    {"volume_node_affinity_conflict", "scale_node_pool", {8.0, 2.0}},
    {"volume_node_affinity_conflict", "*", {1.0, 9.0}},
    {"untolerated_taint", "relax_node_selector", {8.0, 2.0}},
    {"untolerated_taint", "scale_node_pool", {4.0, 4.0}},
    {"untolerated_taint", "*", {1.0, 6.0}},
    // A selector or affinity that matches no node came with a revision
    // far more often than nodes lost their labels: roll back first.
    {"node_selector_mismatch", "relax_node_selector", {8.0, 2.0}},
    {"node_selector_mismatch", "rollback_deployment", {6.0, 4.0}},
    {"node_selector_mismatch", "*", {1.0, 6.0}},
    {"node_affinity_mismatch", "relax_node_selector", {8.0, 2.0}},
    {"node_affinity_mismatch", "rollback_deployment", {6.0, 4.0}},
    {"node_affinity_mismatch", "*", {1.0, 6.0}},
    {"pod_affinity_mismatch", "relax_node_selector", {6.0, 3.0}},
    {"pod_affinity_mismatch", "*", {1.0, 6.0}},
    {"insufficient_cpu", "lower_resource_requests", {10.0, 4.0}},
    {"insufficient_cpu", "scale_node_pool", {6.0, 4.0}},
    {"insufficient_cpu", "*", {1.0, 6.0}},
    {"insufficient_memory", "lower_resource_requests", {10.0, 4.0}},
    {"insufficient_memory", "scale_node_pool", {6.0, 4.0}},
    {"insufficient_memory", "*", {1.0, 6.0}},
    {"insufficient_ephemeral_storage", "lower_resource_requests", {8.0, 4.0}},
    {"insufficient_ephemeral_storage", "scale_node_pool", {6.0, 4.0}},
    {"insufficient_ephemeral_storage", "*", {1.0, 6.0}},
    // A GPU cannot be requested by a factor less: a human adds nodes.
    {"insufficient_extended_resource", "scale_node_pool", {8.0, 2.0}},
    {"insufficient_extended_resource", "*", {1.0, 6.0}},
    {"host_port_conflict", "scale_node_pool", {6.0, 3.0}},
    {"host_port_conflict", "*", {1.0, 6.0}},
    {"too_many_pods", "scale_node_pool", {8.0, 2.0}},
    {"too_many_pods", "*", {1.0, 6.0}},
    // Probes on a healthy app.
    {"probe_failure", "relax_probes", {12.0, 3.0}},
    {"probe_failure", "delete_pod", {1.0, 5.0}},
    {"probe_failure", "*", {1.0, 6.0}},
    {"readiness_probe_failure", "relax_probes", {12.0, 3.0}},
    {"readiness_probe_failure", "*", {1.0, 6.0}},
    // Evicted far over its memory request: give it what it uses.
    {"over_memory_request", "increase_memory_limit", {12.0, 3.0}},
    {"over_memory_request", "*", {1.0, 6.0}},
    // A runtime failure inside a running pod (exit 125: the container's
    // runtime CLI failed) is not fixed by a restart; see kFamilyCause for
    // the create-time glitch a recreate does fix.
    {"container_runtime_error", "*", {1.0, 12.0}},
    // The program itself fails (its command, its exit, a crash): a restart
    // or a blind rollback does not fix it. Without a rollout to blame
    // (bad_release), a human looks.
    {"command_exits", "*", {1.0, 12.0}},
    {"app_error", "*", {1.0, 12.0}},
    {"command_not_found", "*", {1.0, 12.0}},
    {"command_not_executable", "*", {1.0, 12.0}},
    {"start_error", "*", {1.0, 12.0}},
    {"killed", "*", {1.0, 12.0}},
    // The node or the platform, not the pod: the kubelet already retries
    // mounts and sandboxes.
    // An unresolvable or unreachable registry: most often the image
    // reference changed (a mistyped host); rolling back reverts it (tier A)
    // while the kubelet keeps retrying. Nothing else in the catalog helps.
    {"registry_unreachable", "rollback_deployment", {6.0, 4.0}},
    // ... or the registry dropped connections for a while: a new pod pulls
    // afresh (tier A), the SRE's next move.
    {"registry_unreachable", "delete_pod", {4.0, 4.0}},
    {"registry_unreachable", "*", {1.0, 12.0}},
    // The name resolved, the connection did not (a timeout, a reset, a
    // refused port): the registry or the path to it; a new pod pulls
    // afresh, perhaps from another node. A rollback helps only if the
    // reference changed too: weak.
    {"registry_network_error", "delete_pod", {8.0, 4.0}},
    {"registry_network_error", "rollback_deployment", {1.0, 6.0}},
    {"registry_network_error", "*", {1.0, 12.0}},
    {"volume_mount_failed", "*", {1.0, 12.0}},
    {"sandbox_creation_failed", "*", {1.0, 12.0}},
    // Evicted for filling its own ephemeral storage (an emptyDir, logs):
    // its controller has already replaced it and the replacement fills up
    // again; a human bounds the volume or the logging. After a rollout the
    // new revision is what writes more: roll back.
    {"ephemeral_storage", "*", {1.0, 6.0}},
    {"storage_regression", "rollback_deployment", {12.0, 3.0}},
    {"storage_regression", "*", {1.0, 6.0}},
    // Evicted because the node ran low on memory (the pod within its
    // request): a new pod is scheduled where memory is free.
    {"memory_pressure", "delete_pod", {10.0, 3.0}},
    {"memory_pressure", "*", {1.0, 6.0}},
    // Rejected or evicted for the node's disk: recreate it elsewhere (a
    // controller's pod) or nothing: requests do not cover disk pressure.
    {"disk_pressure", "delete_pod", {2.0, 2.0}},
    {"disk_pressure", "*", {1.0, 12.0}},
    // App-level causes nothing in the catalog fixes.
    {"dependency_unavailable", "*", {1.0, 12.0}},
    {"certificate_expired", "*", {1.0, 12.0}},
    {"authentication_failed", "*", {1.0, 12.0}},
};

// The catalog table. `inverse` says how each action is undone: an
// ACTION_TYPE_UNDO that sets every value the action reported changing
// (ExecutionResult.changes) from its `after` back to its `before`.
std::vector<ActionSpec> BuildCatalog() {
  return {
      {v1::ACTION_TYPE_DELETE_POD, "delete_pod", v1::SAFETY_TIER_A,
       "Delete the pod so its controller recreates it",
       "none needed: the controller recreated the pod, nothing to restore",
       false, true},
      {v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT, "rollback_deployment",
       v1::SAFETY_TIER_A, "Roll the workload back to its last healthy revision",
       "roll forward to the revision before the rollback", true, true},
      {v1::ACTION_TYPE_PATCH_IMAGE, "patch_image", v1::SAFETY_TIER_B,
       "Set the container image to the last healthy image",
       "set the previous image again", true, true},
      {v1::ACTION_TYPE_ATTACH_PULL_SECRET, "attach_pull_secret",
       v1::SAFETY_TIER_B,
       "Attach an existing image pull secret to the pod's service account",
       "detach the secret: the service account's previous pull secrets", true,
       true},
      {v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "increase_memory_limit",
       v1::SAFETY_TIER_B,
       "Raise the container memory limit by a bounded factor (x1.1..x3, "
       "capped)",
       "set the previous memory limit again", true, true},
      {v1::ACTION_TYPE_RELAX_PROBES, "relax_probes", v1::SAFETY_TIER_B,
       "Relax probe initial delays and timeouts by a bounded factor",
       "set the previous probe timings again", true, true},
      {v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS, "lower_resource_requests",
       v1::SAFETY_TIER_B,
       "Lower resource requests by a bounded factor so the pod fits a node",
       "set the previous requests again", true, true},
      {v1::ACTION_TYPE_CREATE_MISSING_CONFIG, "create_missing_config",
       v1::SAFETY_TIER_C, "Create the missing ConfigMap or Secret key",
       "tier C: the human who ran it undoes it", false, true},
      {v1::ACTION_TYPE_RELAX_NODE_SELECTOR, "relax_node_selector",
       v1::SAFETY_TIER_C, "Relax the pod's node selector or affinity",
       "tier C: the human who ran it undoes it", false, true},
      {v1::ACTION_TYPE_SCALE_NODE_POOL, "scale_node_pool", v1::SAFETY_TIER_C,
       "Add capacity to a node pool", "tier C: the human who ran it undoes it",
       false, true},
      {v1::ACTION_TYPE_UNDO, "undo", v1::SAFETY_TIER_A,
       "Set the values an earlier action changed back to what they were",
       "undo the undo: re-apply the values it reverted", true, false},
  };
}

}  // namespace

const std::vector<ActionSpec>& Catalog() {
  static const std::vector<ActionSpec>* catalog =
      new std::vector<ActionSpec>(BuildCatalog());
  return *catalog;
}

const ActionSpec* FindAction(ActionType type) {
  for (const ActionSpec& spec : Catalog()) {
    if (spec.type == type) return &spec;
  }
  return nullptr;
}

const ActionSpec* FindActionByName(absl::string_view name) {
  for (const ActionSpec& spec : Catalog()) {
    if (spec.strategy && name == spec.name) return &spec;
  }
  return nullptr;
}

bool HasInverse(ActionType type) {
  const ActionSpec* spec = FindAction(type);
  return spec != nullptr && spec->has_inverse;
}

std::string FamilyOf(absl::string_view error_type) {
  if (error_type == "ErrImagePull") return "ImagePullBackOff";
  if (error_type == "Unschedulable" || error_type == "FailedScheduling") {
    return "Pending";
  }
  return std::string(error_type);
}

bool IsKnownFamily(absl::string_view family) {
  for (const char* f : kKnownFamilies) {
    if (family == f) return true;
  }
  return false;
}

std::vector<Strategy> DefaultStrategies(absl::Time now) {
  std::vector<Strategy> out;
  for (const ActionSpec& spec : Catalog()) {
    if (!spec.strategy) continue;
    Strategy s;
    s.set_name(spec.name);
    s.set_action_type(spec.type);
    s.set_tier(spec.tier);
    s.set_version(1);
    *s.mutable_params() = ClampParams(StrategyParams());
    s.set_description(spec.description);
    s.set_author("catalog");
    s.set_reason("catalog default");
    *s.mutable_created_at() = ToProto(now);
    for (const FamilyEntry& e : kFamilyTable) {
      if (absl::string_view(e.strategy) == spec.name) {
        s.add_error_types(e.family);
      }
    }
    for (const FamilyEntry& e : kGenericTable) {
      if (absl::string_view(e.strategy) == spec.name) s.add_error_types("*");
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> StrategiesFor(absl::string_view family) {
  std::vector<std::string> out;
  if (IsKnownFamily(family)) {
    for (const FamilyEntry& e : kFamilyTable) {
      if (family == e.family) out.emplace_back(e.strategy);
    }
  } else {
    for (const FamilyEntry& e : kGenericTable) out.emplace_back(e.strategy);
  }
  return out;
}

// Where the family changes what a cause calls for (checked first).
struct FamilyCauseOverride {
  const char* family;
  const char* cause;
  const char* strategy;  // "*": every other strategy
  Prior prior;
};
constexpr FamilyCauseOverride kFamilyCause[] = {
    // CreateContainerError "name is reserved" and similar create-time
    // runtime glitches: recreating the pod is the known fix.
    {"CreateContainerError",
     "container_runtime_error",
     "delete_pod",
     {8.0, 4.0}},
    {"CreateContainerError", "container_runtime_error", "*", {1.0, 9.0}},
};

bool HasCausePrior(absl::string_view family, absl::string_view cause,
                   absl::string_view strategy) {
  for (const FamilyCauseOverride& o : kFamilyCause) {
    if (family == o.family && cause == o.cause &&
        (strategy == o.strategy || absl::string_view(o.strategy) == "*")) {
      return true;
    }
  }
  for (const CauseOverride& o : kCauseOverrides) {
    if (cause == o.cause &&
        (strategy == o.strategy || absl::string_view(o.strategy) == "*")) {
      return true;
    }
  }
  return false;
}

Prior PriorFor(absl::string_view family, absl::string_view cause,
               absl::string_view strategy) {
  for (const FamilyCauseOverride& o : kFamilyCause) {
    if (family == o.family && cause == o.cause && strategy == o.strategy) {
      return o.prior;
    }
  }
  for (const FamilyCauseOverride& o : kFamilyCause) {
    if (family == o.family && cause == o.cause &&
        absl::string_view(o.strategy) == "*") {
      return o.prior;
    }
  }
  for (const CauseOverride& o : kCauseOverrides) {
    if (cause == o.cause && strategy == o.strategy) return o.prior;
  }
  for (const CauseOverride& o : kCauseOverrides) {
    if (cause == o.cause && absl::string_view(o.strategy) == "*") {
      return o.prior;
    }
  }
  if (IsKnownFamily(family)) {
    for (const FamilyEntry& e : kFamilyTable) {
      if (family == e.family && strategy == e.strategy) return e.prior;
    }
  } else {
    for (const FamilyEntry& e : kGenericTable) {
      if (strategy == e.strategy) return e.prior;
    }
  }
  return {1.0, 3.0};
}

const std::vector<ParamSpec>& ParamSpecs() {
  static const auto* specs = new std::vector<ParamSpec>{
      {"memory_factor", v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, kMemoryMin,
       kMemoryMax, kMemoryDefault, "new memory limit = old limit x factor"},
      {"probe_factor", v1::ACTION_TYPE_RELAX_PROBES, kProbeMin, kProbeMax,
       kProbeDefault, "probe timeouts and initial delay x factor"},
      {"requests_factor", v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS, kRequestsMin,
       kRequestsMax, kRequestsDefault,
       "new CPU/memory requests = old requests x factor", -1},
  };
  return *specs;
}

bool ActsHarder(v1::ActionType action, const StrategyParams& a,
                const StrategyParams& b) {
  const ParamSpec* spec = ParamOf(action);
  if (spec == nullptr) return false;
  const StrategyParams ca = ClampParams(a), cb = ClampParams(b);
  return (ParamValue(ca, *spec) - ParamValue(cb, *spec)) * spec->stronger >
         1e-9;
}

std::string DescribeParams(v1::ActionType action,
                           const StrategyParams& params) {
  const ParamSpec* spec = ParamOf(action);
  if (spec == nullptr) return "no parameters";
  return absl::StrFormat("%s %.3g", spec->name,
                         ParamValue(ClampParams(params), *spec));
}

const ParamSpec* ParamOf(v1::ActionType action) {
  for (const ParamSpec& p : ParamSpecs()) {
    if (p.action == action) return &p;
  }
  return nullptr;
}

// The StrategyParams field a ParamSpec names, by reflection on the message
// (so a new parameter is one ParamSpecs entry).
namespace {
const google::protobuf::FieldDescriptor* FieldOf(const ParamSpec& spec) {
  return StrategyParams::descriptor()->FindFieldByName(spec.name);
}
}  // namespace

double ParamValue(const StrategyParams& params, const ParamSpec& spec) {
  const auto* f = FieldOf(spec);
  return f == nullptr ? 0 : params.GetReflection()->GetDouble(params, f);
}

void SetParam(StrategyParams& params, const ParamSpec& spec, double value) {
  if (const auto* f = FieldOf(spec)) {
    params.GetReflection()->SetDouble(&params, f, value);
  }
}

StrategyParams ClampParams(const StrategyParams& params) {
  auto clamp = [](double v, double lo, double hi, double def) {
    if (!(v > 0)) return def;  // unset, zero, negative or NaN
    return std::clamp(v, lo, hi);
  };
  StrategyParams out;
  out.set_memory_factor(
      clamp(params.memory_factor(), kMemoryMin, kMemoryMax, kMemoryDefault));
  out.set_probe_factor(
      clamp(params.probe_factor(), kProbeMin, kProbeMax, kProbeDefault));
  out.set_requests_factor(clamp(params.requests_factor(), kRequestsMin,
                                kRequestsMax, kRequestsDefault));
  return out;
}

absl::StatusOr<Action> BuildAction(const Strategy& strategy,
                                   const v1::Incident& incident,
                                   const v1::Diagnosis& diagnosis,
                                   absl::string_view idempotency_key) {
  const ActionSpec* spec = FindActionByName(strategy.name());
  if (spec == nullptr || spec->type != strategy.action_type()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "strategy '", strategy.name(), "' is not in the action catalog"));
  }
  Action action;
  action.set_type(spec->type);
  action.set_tier(spec->tier);  // from the catalog, never from the strategy
  action.set_pod_name(incident.pod_name());
  action.set_namespace_(incident.namespace_());
  *action.mutable_params() = ClampParams(strategy.params());
  action.set_idempotency_key(std::string(idempotency_key));
  if (incident.has_pod()) {
    // What the pod object says about its controller: deleting a bare pod
    // loses it, and only a Deployment's ReplicaSet can be rolled back.
    bool controlled = false, deployment = false;
    for (const PodOwner& o : ReadPodOwners(incident.pod())) {
      if (o.controller.value_or(true)) controlled = true;
      if (o.kind == "ReplicaSet") deployment = true;
    }
    if (spec->type == v1::ACTION_TYPE_DELETE_POD && !controlled) {
      return absl::FailedPreconditionError(
          "the pod has no controller: deleting it would lose it");
    }
    if (spec->type == v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT && !deployment) {
      return absl::FailedPreconditionError(
          "the pod is not part of a Deployment: nothing to roll back");
    }
  }
  if (spec->type == v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT &&
      diagnosis.first_revision()) {
    return absl::FailedPreconditionError(
        "the workload has no earlier revision to roll back to");
  }
  if (spec->type == v1::ACTION_TYPE_PATCH_IMAGE) {
    if (diagnosis.last_healthy_image().empty()) {
      return absl::FailedPreconditionError("no last healthy image is known");
    }
    action.set_image(diagnosis.last_healthy_image());
  }
  if (spec->type == v1::ACTION_TYPE_ATTACH_PULL_SECRET) {
    if (diagnosis.available_pull_secrets().empty()) {
      return absl::FailedPreconditionError(
          "no image pull secret exists in the namespace");
    }
    action.set_pull_secret(diagnosis.available_pull_secrets(0));
  }
  return action;
}

absl::Status ValidateAction(const Action& action) {
  const ActionSpec* spec = FindAction(action.type());
  if (spec == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("action.type ", action.type(), " is not in the catalog"));
  }
  if (action.tier() != spec->tier) {
    return absl::InvalidArgumentError(absl::StrCat(
        "action.tier does not match the catalog tier of ", spec->name));
  }
  if (action.pod_name().empty()) {
    return absl::InvalidArgumentError("action.pod_name is empty");
  }
  if (action.namespace_().empty()) {
    return absl::InvalidArgumentError("action.namespace is empty");
  }
  const StrategyParams& p = action.params();
  if (p.memory_factor() < kMemoryMin || p.memory_factor() > kMemoryMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("action.params.memory_factor %g outside [%g, %g]",
                        p.memory_factor(), kMemoryMin, kMemoryMax));
  }
  if (p.probe_factor() < kProbeMin || p.probe_factor() > kProbeMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("action.params.probe_factor %g outside [%g, %g]",
                        p.probe_factor(), kProbeMin, kProbeMax));
  }
  if (p.requests_factor() < kRequestsMin ||
      p.requests_factor() > kRequestsMax) {
    return absl::InvalidArgumentError(
        absl::StrFormat("action.params.requests_factor %g outside [%g, %g]",
                        p.requests_factor(), kRequestsMin, kRequestsMax));
  }
  if (action.type() == v1::ACTION_TYPE_PATCH_IMAGE && action.image().empty()) {
    return absl::InvalidArgumentError("action.image is empty for patch_image");
  }
  if (action.type() == v1::ACTION_TYPE_ATTACH_PULL_SECRET &&
      action.pull_secret().empty()) {
    return absl::InvalidArgumentError(
        "action.pull_secret is empty for attach_pull_secret");
  }
  if (action.type() != v1::ACTION_TYPE_UNDO) {
    if (!action.undo_of().empty() || action.restore_size() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "action.undo_of and action.restore are for undo only, not ",
          spec->name));
    }
    return absl::OkStatus();
  }
  if (action.undo_of().empty()) {
    return absl::InvalidArgumentError("action.undo_of is empty for undo");
  }
  if (action.undo_of().size() > kMaxUndoOf || !IsValidUtf8(action.undo_of())) {
    return absl::InvalidArgumentError(
        absl::StrCat("action.undo_of must be valid UTF-8 of at most ",
                     kMaxUndoOf, " bytes"));
  }
  if (action.restore_size() == 0 || action.restore_size() > kMaxRestore) {
    return absl::InvalidArgumentError(
        absl::StrCat("action.restore has ", action.restore_size(),
                     " entries; undo needs 1 to ", kMaxRestore));
  }
  for (int i = 0; i < action.restore_size(); ++i) {
    REFLEXION_RETURN_IF_ERROR(CheckChange(
        action.restore(i), absl::StrCat("action.restore[", i, "]")));
  }
  return absl::OkStatus();
}

absl::StatusOr<Action> BuildUndo(const Action& original,
                                 const std::vector<v1::ValueChange>& changes,
                                 absl::string_view idempotency_key) {
  const ActionSpec* spec = FindAction(original.type());
  if (spec == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "original.type ", original.type(), " is not in the catalog"));
  }
  if (!spec->has_inverse) {
    return absl::FailedPreconditionError(absl::StrCat(
        spec->name, " cannot be undone automatically: ", spec->inverse));
  }
  if (original.idempotency_key().empty()) {
    return absl::InvalidArgumentError(
        "original.idempotency_key is empty: nothing to name in undo_of");
  }
  if (original.idempotency_key().size() > kMaxUndoOf ||
      !IsValidUtf8(original.idempotency_key())) {
    return absl::InvalidArgumentError(
        absl::StrCat("original.idempotency_key must be valid UTF-8 of at most ",
                     kMaxUndoOf, " bytes to be named in undo_of"));
  }
  if (idempotency_key.empty()) {
    return absl::InvalidArgumentError("idempotency_key is empty");
  }
  Action undo;
  undo.set_type(v1::ACTION_TYPE_UNDO);
  undo.set_tier(FindAction(v1::ACTION_TYPE_UNDO)->tier);
  undo.set_pod_name(original.pod_name());
  undo.set_namespace_(original.namespace_());
  *undo.mutable_params() = ClampParams(original.params());
  undo.set_idempotency_key(std::string(idempotency_key));
  undo.set_undo_of(original.idempotency_key());
  for (size_t i = 0; i < changes.size(); ++i) {
    const v1::ValueChange& c = changes[i];
    REFLEXION_RETURN_IF_ERROR(CheckChange(c, absl::StrCat("changes[", i, "]")));
    // "Pod/web-1" present -> deleted: an object's existence, which only its
    // controller restores.
    if (!absl::StrContains(c.path(), ' ')) continue;
    if (c.before() == c.after()) continue;
    if (undo.restore_size() == kMaxRestore) {
      return absl::InvalidArgumentError(absl::StrCat(
          "changes: more than ", kMaxRestore,
          " restorable values; an undo restores at most ", kMaxRestore));
    }
    *undo.add_restore() = c;
  }
  if (undo.restore_size() == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(spec->name, " ", original.idempotency_key(),
                     " reported no restorable change (", changes.size(),
                     " changes): nothing to undo"));
  }
  return undo;
}

std::string DescribeAction(const Action& action) {
  const ActionSpec* spec = FindAction(action.type());
  std::string name = spec ? spec->name : "unknown_action";
  switch (action.type()) {
    case v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT:
      return absl::StrFormat("%s x%.2g", name, action.params().memory_factor());
    case v1::ACTION_TYPE_RELAX_PROBES:
      return absl::StrFormat("%s x%.2g", name, action.params().probe_factor());
    case v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS:
      return absl::StrFormat("%s x%.2g", name,
                             action.params().requests_factor());
    case v1::ACTION_TYPE_PATCH_IMAGE:
      return absl::StrCat(name, " -> ", action.image());
    case v1::ACTION_TYPE_ATTACH_PULL_SECRET:
      return absl::StrCat(name, " ", action.pull_secret());
    case v1::ACTION_TYPE_UNDO:
      return absl::StrCat(name, " of ", action.undo_of(), " (",
                          action.restore_size(), " values)");
    default:
      return name;
  }
}

}  // namespace reflexion::core

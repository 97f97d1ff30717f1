#pragma once

// The closed, safety-tiered action catalog and the strategies built on it.
// Nothing outside this table is ever executed: an action is built here from
// a strategy, a pod and the executor's diagnosis, with every parameter
// clamped to its documented bounds.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// One catalog action.
struct ActionSpec {
  reflexion::v1::ActionType type;
  const char* name;  // strategy name, e.g. "increase_memory_limit"
  reflexion::v1::SafetyTier tier;
  const char* description;
};

// Error families the catalog knows. Reported types are normalised to these
// (ErrImagePull -> ImagePullBackOff, Unschedulable/FailedScheduling ->
// Pending).
inline constexpr const char* kKnownFamilies[] = {"ImagePullBackOff",
                                                 "InvalidImageName",
                                                 "CrashLoopBackOff",
                                                 "OOMKilled",
                                                 "CreateContainerConfigError",
                                                 "CreateContainerError",
                                                 "RunContainerError",
                                                 "ContainerCreating",
                                                 "InitContainerError",
                                                 "NotReady",
                                                 "Pending",
                                                 "Evicted"};

// Every catalog action, in ActionType order.
const std::vector<ActionSpec>& Catalog();

// The spec of `type`, or null for UNSPECIFIED / unknown values.
const ActionSpec* FindAction(reflexion::v1::ActionType type);
// The spec named `name`, or null.
const ActionSpec* FindActionByName(absl::string_view name);

// Normalises a reported error type to its family; returns the reported type
// unchanged when the catalog does not know it.
std::string FamilyOf(absl::string_view error_type);
// Whether `family` is one of kKnownFamilies.
bool IsKnownFamily(absl::string_view family);

// The catalog's version-1 strategies (author "catalog"), one per action.
std::vector<reflexion::v1::Strategy> DefaultStrategies(absl::Time now);

// The strategies that apply to `family` (a known family, or any other name
// for the generic fallback set), by name.
std::vector<std::string> StrategiesFor(absl::string_view family);

// Beta prior of success of `strategy` for (`family`, `cause`): the cause's
// entry for the strategy when there is one, else the cause's default for
// every other strategy (causes nothing in the catalog fixes), else the
// family's.
struct Prior {
  double alpha;
  double beta;
};
Prior PriorFor(absl::string_view family, absl::string_view cause,
               absl::string_view strategy);

// One bounded strategy parameter (a StrategyParams field) and the one
// action it shapes.
struct ParamSpec {
  const char* name;  // the StrategyParams field, e.g. "memory_factor"
  reflexion::v1::ActionType action;
  double min;
  double max;
  double default_value;
  const char* meaning;
};
// Every strategy parameter, in StrategyParams field order.
const std::vector<ParamSpec>& ParamSpecs();
// The parameter of `action`, or null for an action without one.
const ParamSpec* ParamOf(reflexion::v1::ActionType action);
// The value of `spec`'s field in `params`, and setting it.
double ParamValue(const reflexion::v1::StrategyParams& params,
                  const ParamSpec& spec);
void SetParam(reflexion::v1::StrategyParams& params, const ParamSpec& spec,
              double value);

// Clamps every parameter to its bounds and fills unset ones with defaults.
reflexion::v1::StrategyParams ClampParams(
    const reflexion::v1::StrategyParams& params);

// Builds the concrete action for `strategy` on `incident`'s pod.
// kFailedPrecondition when the strategy cannot apply here (patch_image
// without a known last healthy image, attach_pull_secret without an existing
// secret); kInvalidArgument for a strategy outside the catalog.
absl::StatusOr<reflexion::v1::Action> BuildAction(
    const reflexion::v1::Strategy& strategy,
    const reflexion::v1::Incident& incident,
    const reflexion::v1::Diagnosis& diagnosis,
    absl::string_view idempotency_key);

// Checks an action from any source (an LLM, a caller) against the catalog:
// known type, tier matching the catalog, parameters within bounds, target
// set. kInvalidArgument naming the field otherwise.
absl::Status ValidateAction(const reflexion::v1::Action& action);

// Short human description of an action, e.g. "increase_memory_limit x1.5".
std::string DescribeAction(const reflexion::v1::Action& action);

}  // namespace reflexion::core

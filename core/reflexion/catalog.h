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
  // How it is undone (ACTION_TYPE_UNDO with the values the action reported
  // changing), or why it needs no automatic undo.
  const char* inverse;
  // Whether it has an automatic inverse (see HasInverse).
  bool has_inverse;
  // Whether it is a selectable strategy. False only for undo, which the
  // service chooses on a regression or an operator asks for.
  bool strategy;
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

// Every catalog action, in ActionType order (undo included: filter on
// ActionSpec::strategy for the strategies).
const std::vector<ActionSpec>& Catalog();

// The spec of `type` (undo included), or null for UNSPECIFIED / unknown
// values.
const ActionSpec* FindAction(reflexion::v1::ActionType type);
// The spec of the strategy named `name`, or null. Undo is not a strategy:
// FindActionByName("undo") is null, so no human decision, fork, LLM
// proposal or simulated attempt can name it.
const ActionSpec* FindActionByName(absl::string_view name);

// Whether an applied action of `type` can be undone automatically by an
// ACTION_TYPE_UNDO restoring the values it reported changing: true for
// rollback_deployment, patch_image, attach_pull_secret,
// increase_memory_limit, relax_probes, lower_resource_requests and undo
// itself (undoing an undo re-applies); false for delete_pod (the controller
// recreated the pod: nothing to restore), tier C (the human undoes what
// they did) and UNSPECIFIED / unknown values.
bool HasInverse(reflexion::v1::ActionType type);

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
// Whether PriorFor's answer comes from what the cause says (an entry for
// the family and cause, or for the cause), not only from the family table.
bool HasCausePrior(absl::string_view family, absl::string_view cause,
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
  // +1 when a larger value acts harder (a larger raise), -1 when a smaller
  // one does (lower requests).
  int stronger = 1;
};
// Whether `a` sets the parameter of `action` harder than `b` does (false
// for an action without a parameter).
bool ActsHarder(reflexion::v1::ActionType action,
                const reflexion::v1::StrategyParams& a,
                const reflexion::v1::StrategyParams& b);
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
// set; for undo: undo_of set (at most kMaxUndoOf bytes) and 1 to
// kMaxRestore restore entries, each with a path of 1 to kMaxChangePath
// bytes and values of at most kMaxChangeValue bytes, all valid UTF-8; for
// every other type: no undo_of and no restore. kInvalidArgument naming the
// field otherwise (e.g. "action.restore[2].path").
absl::Status ValidateAction(const reflexion::v1::Action& action);

// Limits of an undo action (Action.undo_of, Action.restore, ValueChange).
inline constexpr size_t kMaxUndoOf = 128;
inline constexpr int kMaxRestore = 32;
inline constexpr size_t kMaxChangePath = 512;
inline constexpr size_t kMaxChangeValue = 1024;

// Builds the ACTION_TYPE_UNDO of `original` (as executed, with its
// idempotency key) from the values it reported changing (its
// ExecutionResult.changes): same pod, tier A, undo_of = the original's
// idempotency key, restore = the restorable changes in order, each to be
// set from `after` back to `before`. A change that names an object without
// a field (e.g. "Pod/web-1" present -> deleted) is not restorable and is
// left out, as is one whose before equals its after. Undoing an undo is
// allowed: its restore re-applies what the undo reverted.
// Errors: kFailedPrecondition when nothing can be restored (the original
// has no inverse — delete_pod, tier C — or no restorable change is left);
// kInvalidArgument when the original has no idempotency key (or one longer
// than kMaxUndoOf), `idempotency_key` is empty, or a change breaks the
// ValueChange limits (more than kMaxRestore restorable changes, a path over
// kMaxChangePath bytes, a value over kMaxChangeValue bytes, invalid UTF-8),
// naming `changes[i].path` etc.
absl::StatusOr<reflexion::v1::Action> BuildUndo(
    const reflexion::v1::Action& original,
    const std::vector<reflexion::v1::ValueChange>& changes,
    absl::string_view idempotency_key);

// Short human description of an action, e.g. "increase_memory_limit x1.5".
std::string DescribeAction(const reflexion::v1::Action& action);
// "memory_factor 2.03": the parameter of `action` in `params` (clamped);
// "no parameters" for an action without one.
std::string DescribeParams(reflexion::v1::ActionType action,
                           const reflexion::v1::StrategyParams& params);

}  // namespace reflexion::core

#include "core/sim/scenario.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/status_macros.h"
#include "google/protobuf/descriptor.h"

namespace reflexion::sim {
namespace {

using reflexion::v1::ActionType;

constexpr absl::string_view kActionPrefix = "ACTION_TYPE_";

// Where a value sits, for error messages: `scenario "crash-oom"` plus
// `actions.delete_pod.success`.
struct Where {
  std::string scope;
  std::string path;

  Where Field(absl::string_view name) const {
    return {scope,
            path.empty() ? std::string(name) : absl::StrCat(path, ".", name)};
  }
  Where Index(size_t i) const {
    return {scope, absl::StrCat(path, "[", i, "]")};
  }
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        path.empty() ? absl::StrCat(scope, ": ", what)
                     : absl::StrCat(scope, ": ", path, ": ", what));
  }
};

// " (line N)" for a node read from text. Only for defined nodes: yaml-cpp
// throws on Mark() of a missing one.
std::string LineOf(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return "";
  return absl::StrCat(" (line ", mark.line + 1, ")");
}

// Field `name` of `map`, or nullopt when absent or null. (yaml-cpp returns
// an invalid node for a missing key, on which most calls throw.)
std::optional<YAML::Node> Get(const YAML::Node& map, absl::string_view name) {
  const YAML::Node node = map[std::string(name)];
  if (!node.IsDefined() || node.IsNull()) return std::nullopt;
  return node;
}

// Checks that `node` is a map whose keys are all in `known`, each given
// once (yaml-cpp keeps both entries of a duplicate key; Get sees the first).
absl::Status CheckMap(const YAML::Node& node, const Where& where,
                      std::initializer_list<absl::string_view> known) {
  if (!node.IsMap()) {
    return where.Error(absl::StrCat("expected a map", LineOf(node)));
  }
  absl::flat_hash_set<std::string> seen;
  for (const auto& entry : node) {
    if (!entry.first.IsScalar()) {
      return where.Error(
          absl::StrCat("keys must be strings", LineOf(entry.first)));
    }
    const std::string& key = entry.first.Scalar();
    bool found = false;
    for (absl::string_view k : known) found = found || k == key;
    if (!found) {
      return where.Field(key).Error(
          absl::StrCat("unknown field", LineOf(entry.first),
                       "; known fields: ", absl::StrJoin(known, ", ")));
    }
    if (!seen.insert(key).second) {
      return where.Field(key).Error(
          absl::StrCat("given twice", LineOf(entry.first)));
    }
  }
  return absl::OkStatus();
}

// Reads scalar `node` as a T (yaml-cpp's conversion, which throws).
template <typename T>
absl::StatusOr<T> As(const YAML::Node& node, const Where& where,
                     absl::string_view type_name) {
  if (!node.IsScalar()) {
    return where.Error(absl::StrCat("expected ", type_name, LineOf(node)));
  }
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    return where.Error(absl::StrCat("expected ", type_name, ", got \"",
                                    node.Scalar(), "\"", LineOf(node)));
  }
}

// Reads optional field `name` of `map` into *out; leaves *out alone when
// the field is absent or null.
template <typename T>
absl::Status Read(const YAML::Node& map, absl::string_view name,
                  const Where& where, absl::string_view type_name, T* out) {
  std::optional<YAML::Node> node = Get(map, name);
  if (!node.has_value()) return absl::OkStatus();
  REFLEXION_ASSIGN_OR_RETURN(*out, As<T>(*node, where.Field(name), type_name));
  return absl::OkStatus();
}

// Like Read, for a field that must be present.
template <typename T>
absl::Status ReadRequired(const YAML::Node& map, absl::string_view name,
                          const Where& where, absl::string_view type_name,
                          T* out) {
  if (!Get(map, name).has_value()) return where.Field(name).Error("missing");
  return Read(map, name, where, type_name, out);
}

absl::Status ReadStrings(const YAML::Node& map, absl::string_view name,
                         const Where& where, std::vector<std::string>* out) {
  std::optional<YAML::Node> node = Get(map, name);
  if (!node.has_value()) return absl::OkStatus();
  const Where field = where.Field(name);
  if (!node->IsSequence()) {
    return field.Error(
        absl::StrCat("expected a list of strings", LineOf(*node)));
  }
  for (size_t i = 0; i < node->size(); ++i) {
    REFLEXION_ASSIGN_OR_RETURN(
        std::string s, As<std::string>((*node)[i], field.Index(i), "a string"));
    if (s.empty()) return field.Index(i).Error("must not be empty");
    out->push_back(std::move(s));
  }
  return absl::OkStatus();
}

absl::Status CheckProbability(double p, const Where& where) {
  if (!(p >= 0 && p <= 1)) {
    return where.Error(absl::StrCat(p, " is outside [0, 1]"));
  }
  return absl::OkStatus();
}

absl::Status CheckPositive(double v, const Where& where) {
  if (!(v > 0 && std::isfinite(v))) {
    return where.Error(absl::StrCat(v, " must be a finite number > 0"));
  }
  return absl::OkStatus();
}

absl::Status ParseContainer(const YAML::Node& node, const Where& where,
                            reflexion::v1::ContainerStatus* c) {
  REFLEXION_RETURN_IF_ERROR(
      CheckMap(node, where,
               {"name", "image", "restart_count", "last_termination_reason",
                "last_exit_code", "waiting_reason", "waiting_message"}));
  std::string s;
  int32_t i = 0;
  REFLEXION_RETURN_IF_ERROR(Read(node, "name", where, "a string", &s));
  c->set_name(s);
  s.clear();
  REFLEXION_RETURN_IF_ERROR(Read(node, "image", where, "a string", &s));
  c->set_image(s);
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "restart_count", where, "an integer", &i));
  if (i < 0) return where.Field("restart_count").Error("must be >= 0");
  c->set_restart_count(i);
  s.clear();
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "last_termination_reason", where, "a string", &s));
  c->set_last_termination_reason(s);
  i = 0;
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "last_exit_code", where, "an integer", &i));
  c->set_last_exit_code(i);
  s.clear();
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "waiting_reason", where, "a string", &s));
  c->set_waiting_reason(s);
  s.clear();
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "waiting_message", where, "a string", &s));
  c->set_waiting_message(s);
  c->set_ready(false);
  return absl::OkStatus();
}

absl::Status ParseEvent(const YAML::Node& node, const Where& where,
                        reflexion::v1::PodEvent* e) {
  REFLEXION_RETURN_IF_ERROR(
      CheckMap(node, where, {"type", "reason", "message", "count"}));
  std::string type = "Warning";
  REFLEXION_RETURN_IF_ERROR(Read(node, "type", where, "a string", &type));
  if (type != "Normal" && type != "Warning") {
    return where.Field("type").Error(
        absl::StrCat("\"", type, "\" is neither Normal nor Warning"));
  }
  e->set_type(type);
  std::string reason;
  REFLEXION_RETURN_IF_ERROR(
      ReadRequired(node, "reason", where, "a string", &reason));
  e->set_reason(reason);
  std::string message;
  REFLEXION_RETURN_IF_ERROR(Read(node, "message", where, "a string", &message));
  e->set_message(message);
  int32_t count = 1;
  REFLEXION_RETURN_IF_ERROR(Read(node, "count", where, "an integer", &count));
  if (count < 1) return where.Field("count").Error("must be >= 1");
  e->set_count(count);
  return absl::OkStatus();
}

absl::Status ParseSignals(const YAML::Node& node, const Where& where,
                          reflexion::v1::Diagnosis* d) {
  REFLEXION_RETURN_IF_ERROR(CheckMap(
      node, where,
      {"container", "events", "logs", "last_healthy_image",
       "available_pull_secrets", "recent_rollout", "memory_limit_bytes"}));
  if (std::optional<YAML::Node> c = Get(node, "container"); c.has_value()) {
    REFLEXION_RETURN_IF_ERROR(ParseContainer(*c, where.Field("container"),
                                             d->add_container_statuses()));
  }
  if (std::optional<YAML::Node> events = Get(node, "events");
      events.has_value()) {
    const Where field = where.Field("events");
    if (!events->IsSequence()) {
      return field.Error(absl::StrCat("expected a list", LineOf(*events)));
    }
    for (size_t i = 0; i < events->size(); ++i) {
      REFLEXION_RETURN_IF_ERROR(
          ParseEvent((*events)[i], field.Index(i), d->add_events()));
    }
  }
  std::string s;
  REFLEXION_RETURN_IF_ERROR(Read(node, "logs", where, "a string", &s));
  d->set_logs(s);
  s.clear();
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "last_healthy_image", where, "a string", &s));
  d->set_last_healthy_image(s);
  std::vector<std::string> secrets;
  REFLEXION_RETURN_IF_ERROR(
      ReadStrings(node, "available_pull_secrets", where, &secrets));
  for (std::string& secret : secrets) {
    d->add_available_pull_secrets(std::move(secret));
  }
  bool rollout = false;
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "recent_rollout", where, "a boolean", &rollout));
  d->set_recent_rollout(rollout);
  int64_t limit = 0;
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "memory_limit_bytes", where, "an integer", &limit));
  if (limit < 0) return where.Field("memory_limit_bytes").Error("must be >= 0");
  d->set_memory_limit_bytes(limit);
  return absl::OkStatus();
}

absl::StatusOr<ActionModel> ParseActionModel(const YAML::Node& node,
                                             ActionType type,
                                             const Where& where) {
  REFLEXION_RETURN_IF_ERROR(CheckMap(node, where,
                                     {"success", "relapse", "recovery_s",
                                      "min_memory_factor", "success_below"}));
  ActionModel m;
  REFLEXION_RETURN_IF_ERROR(
      ReadRequired(node, "success", where, "a number", &m.success));
  REFLEXION_RETURN_IF_ERROR(
      CheckProbability(m.success, where.Field("success")));
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "relapse", where, "a number", &m.relapse));
  REFLEXION_RETURN_IF_ERROR(
      CheckProbability(m.relapse, where.Field("relapse")));
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "recovery_s", where, "a number", &m.recovery_s));
  REFLEXION_RETURN_IF_ERROR(
      CheckPositive(m.recovery_s, where.Field("recovery_s")));
  const bool memory = type == reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT;
  if (Get(node, "min_memory_factor").has_value()) {
    if (!memory) {
      return where.Field("min_memory_factor")
          .Error("only applies to increase_memory_limit");
    }
    double f = 0;
    REFLEXION_RETURN_IF_ERROR(
        Read(node, "min_memory_factor", where, "a number", &f));
    REFLEXION_RETURN_IF_ERROR(
        CheckPositive(f, where.Field("min_memory_factor")));
    m.min_memory_factor = f;
  }
  if (Get(node, "success_below").has_value()) {
    if (!m.min_memory_factor.has_value()) {
      return where.Field("success_below").Error("needs min_memory_factor");
    }
    REFLEXION_RETURN_IF_ERROR(
        Read(node, "success_below", where, "a number", &m.success_below));
    REFLEXION_RETURN_IF_ERROR(
        CheckProbability(m.success_below, where.Field("success_below")));
  }
  return m;
}

// A failure reason as Kubernetes reports one: 1 to 64 of [A-Za-z0-9_.-].
bool IsReason(absl::string_view r) {
  if (r.empty() || r.size() > 64) return false;
  for (char c : r) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' &&
        c != '.' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::Status ParseRegressions(const YAML::Node& node, const Where& where,
                              absl::flat_hash_map<int, std::string>* out) {
  if (!node.IsMap() || node.size() == 0) {
    return where.Error(absl::StrCat(
        "expected a non-empty map of action name to failure reason",
        LineOf(node)));
  }
  for (const auto& entry : node) {
    REFLEXION_ASSIGN_OR_RETURN(std::string name,
                               As<std::string>(entry.first, where, "a name"));
    const Where field = where.Field(name);
    absl::StatusOr<ActionType> type = ActionTypeFromName(name);
    if (!type.ok()) return field.Error(type.status().message());
    if (*type == reflexion::v1::ACTION_TYPE_UNDO) {
      return field.Error("undo cannot plant a regression");
    }
    REFLEXION_ASSIGN_OR_RETURN(
        std::string reason, As<std::string>(entry.second, field, "a string"));
    if (!IsReason(reason)) {
      return field.Error(absl::StrCat(
          "\"", reason,
          "\" is not a failure reason (1 to 64 of [A-Za-z0-9_.-])"));
    }
    if (!out->emplace(*type, std::move(reason)).second) {
      return field.Error("listed twice");
    }
  }
  return absl::OkStatus();
}

absl::Status ParseWorkload(const YAML::Node& node, const Where& where,
                           WorkloadModel* w) {
  REFLEXION_RETURN_IF_ERROR(CheckMap(node, where, {"replicas", "ready"}));
  REFLEXION_RETURN_IF_ERROR(
      ReadRequired(node, "replicas", where, "an integer", &w->replicas));
  if (w->replicas < 1 || w->replicas > 10000) {
    return where.Field("replicas").Error("must be in [1, 10000]");
  }
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "ready", where, "an integer", &w->ready));
  if (w->ready < 0 || w->ready >= w->replicas) {
    return where.Field("ready").Error(
        absl::StrCat("must be in [0, replicas - 1 = ", w->replicas - 1,
                     "]: the failing pod is one of the replicas"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Scenario> ParseScenario(const YAML::Node& node, size_t index) {
  Where where{absl::StrCat("scenarios[", index, "]"), ""};
  if (!node.IsMap()) {
    return where.Error(absl::StrCat("expected a map", LineOf(node)));
  }
  Scenario s;
  REFLEXION_RETURN_IF_ERROR(ReadRequired(node, "id", where, "a string", &s.id));
  if (s.id.empty()) return where.Field("id").Error("must not be empty");
  where.scope = absl::StrCat("scenario \"", s.id, "\"");
  REFLEXION_RETURN_IF_ERROR(
      CheckMap(node, where,
               {"id", "error_types", "weight", "root_cause", "signals",
                "actions", "regressions", "workload"}));

  if (!Get(node, "error_types").has_value()) {
    return where.Field("error_types").Error("missing");
  }
  REFLEXION_RETURN_IF_ERROR(
      ReadStrings(node, "error_types", where, &s.error_types));
  if (s.error_types.empty()) {
    return where.Field("error_types").Error("must list at least one type");
  }
  REFLEXION_RETURN_IF_ERROR(Read(node, "weight", where, "a number", &s.weight));
  REFLEXION_RETURN_IF_ERROR(CheckPositive(s.weight, where.Field("weight")));
  REFLEXION_RETURN_IF_ERROR(
      Read(node, "root_cause", where, "a string", &s.root_cause));
  if (std::optional<YAML::Node> signals = Get(node, "signals");
      signals.has_value()) {
    REFLEXION_RETURN_IF_ERROR(
        ParseSignals(*signals, where.Field("signals"), &s.signals));
  }

  std::optional<YAML::Node> actions = Get(node, "actions");
  const Where actions_where = where.Field("actions");
  if (!actions.has_value()) return actions_where.Error("missing");
  if (!actions->IsMap() || actions->size() == 0) {
    return actions_where.Error(absl::StrCat(
        "expected a non-empty map of action name to model", LineOf(*actions)));
  }
  for (const auto& entry : *actions) {
    REFLEXION_ASSIGN_OR_RETURN(
        std::string name,
        As<std::string>(entry.first, actions_where, "a name"));
    const Where action_where = actions_where.Field(name);
    absl::StatusOr<ActionType> type = ActionTypeFromName(name);
    if (!type.ok()) return action_where.Error(type.status().message());
    REFLEXION_ASSIGN_OR_RETURN(
        ActionModel model, ParseActionModel(entry.second, *type, action_where));
    if (*type == reflexion::v1::ACTION_TYPE_UNDO) {
      return action_where.Error(
          "undo is not a strategy: its outcome is the pod's original failure");
    }
    if (!s.actions.emplace(*type, model).second) {
      return action_where.Error("listed twice");
    }
  }
  if (std::optional<YAML::Node> regressions = Get(node, "regressions");
      regressions.has_value()) {
    REFLEXION_RETURN_IF_ERROR(ParseRegressions(
        *regressions, where.Field("regressions"), &s.regressions));
  }
  if (std::optional<YAML::Node> workload = Get(node, "workload");
      workload.has_value()) {
    REFLEXION_RETURN_IF_ERROR(
        ParseWorkload(*workload, where.Field("workload"), &s.workload));
  }
  return s;
}

absl::StatusOr<std::vector<Scenario>> ParseDocument(const YAML::Node& root) {
  const Where where{"scenarios", ""};
  if (!root.IsMap() || !Get(root, "scenarios").has_value()) {
    return where.Error(
        "missing: the document must be a map with a 'scenarios' list");
  }
  REFLEXION_RETURN_IF_ERROR(
      CheckMap(root, Where{"document", ""}, {"scenarios"}));
  const YAML::Node list = root["scenarios"];
  if (!list.IsSequence()) {
    return where.Error(absl::StrCat("expected a list", LineOf(list)));
  }
  if (list.size() == 0) return where.Error("no scenarios");
  std::vector<Scenario> scenarios;
  absl::flat_hash_map<std::string, size_t> index_of;
  for (size_t i = 0; i < list.size(); ++i) {
    REFLEXION_ASSIGN_OR_RETURN(Scenario s, ParseScenario(list[i], i));
    if (auto [it, inserted] = index_of.emplace(s.id, i); !inserted) {
      return absl::InvalidArgumentError(
          absl::StrCat("scenario \"", s.id, "\": id: duplicate (scenarios[",
                       it->second, "] and scenarios[", i, "])"));
    }
    scenarios.push_back(std::move(s));
  }
  return scenarios;
}

}  // namespace

double ActionModel::SuccessProbability(
    const reflexion::v1::StrategyParams& params) const {
  if (min_memory_factor.has_value() &&
      params.memory_factor() < *min_memory_factor) {
    return success_below;
  }
  return success;
}

bool Scenario::Matches(absl::string_view error_type) const {
  for (const std::string& t : error_types) {
    if (t == error_type) return true;
  }
  return false;
}

const ActionModel* Scenario::FindAction(reflexion::v1::ActionType type) const {
  auto it = actions.find(type);
  return it == actions.end() ? nullptr : &it->second;
}

const std::string* Scenario::FindRegression(
    reflexion::v1::ActionType type) const {
  auto it = regressions.find(type);
  return it == regressions.end() ? nullptr : &it->second;
}

std::string ActionName(ActionType type) {
  if (type == reflexion::v1::ACTION_TYPE_UNSPECIFIED ||
      !reflexion::v1::ActionType_IsValid(type)) {
    return "";
  }
  std::string name = reflexion::v1::ActionType_Name(type);
  if (absl::StartsWith(name, kActionPrefix)) {
    name.erase(0, kActionPrefix.size());
  }
  absl::AsciiStrToLower(&name);
  return name;
}

absl::StatusOr<ActionType> ActionTypeFromName(absl::string_view name) {
  const google::protobuf::EnumDescriptor* d =
      reflexion::v1::ActionType_descriptor();
  std::vector<std::string> known;
  for (int i = 0; i < d->value_count(); ++i) {
    const auto type = static_cast<ActionType>(d->value(i)->number());
    std::string n = ActionName(type);
    if (n.empty()) continue;
    if (n == name) return type;
    known.push_back(std::move(n));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown action \"", name,
                   "\"; known actions: ", absl::StrJoin(known, ", ")));
}

absl::StatusOr<std::vector<Scenario>> ParseScenarios(
    absl::string_view yaml_text) {
  // Every yaml-cpp call below may throw; this is the one place we convert.
  try {
    return ParseDocument(YAML::Load(std::string(yaml_text)));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("scenarios: malformed YAML: ", e.what()));
  }
}

}  // namespace reflexion::sim

#include "core/reflexion/pod_object.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_split.h"

namespace reflexion::core {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

const Value* FindPath(const Struct& object, absl::string_view path) {
  const Struct* at = &object;
  const Value* value = nullptr;
  for (absl::string_view part : absl::StrSplit(path, '.')) {
    if (at == nullptr) return nullptr;
    auto it = at->fields().find(std::string(part));
    if (it == at->fields().end()) return nullptr;
    value = &it->second;
    at = value->has_struct_value() ? &value->struct_value() : nullptr;
  }
  return value;
}

std::optional<std::string> StringAt(const Struct& object,
                                    absl::string_view path) {
  const Value* v = FindPath(object, path);
  if (v == nullptr || !v->has_string_value()) return std::nullopt;
  return v->string_value();
}

std::optional<int64_t> IntAt(const Struct& object, absl::string_view path) {
  const Value* v = FindPath(object, path);
  if (v == nullptr || !v->has_number_value()) return std::nullopt;
  double d = v->number_value();
  if (!std::isfinite(d) || d != std::floor(d) || d < -9.2e18 || d > 9.2e18) {
    return std::nullopt;
  }
  return static_cast<int64_t>(d);
}

const Struct* StructAt(const Struct& object, absl::string_view path) {
  const Value* v = FindPath(object, path);
  return v != nullptr && v->has_struct_value() ? &v->struct_value() : nullptr;
}

const ListValue* ListAt(const Struct& object, absl::string_view path) {
  const Value* v = FindPath(object, path);
  return v != nullptr && v->has_list_value() ? &v->list_value() : nullptr;
}

namespace {

// The failure a container status reports ("" when it is fine).
std::string FailureOf(const Struct& status) {
  if (auto r = StringAt(status, "state.waiting.reason");
      r && !r->empty() && *r != "ContainerCreating" &&
      *r != "PodInitializing") {
    return *r;
  }
  if (auto r = StringAt(status, "state.terminated.reason");
      r && !r->empty() && *r != "Completed") {
    return *r;
  }
  if (auto r = StringAt(status, "lastState.terminated.reason");
      r && !r->empty() && *r != "Completed") {
    return *r;
  }
  return "";
}

}  // namespace

std::vector<PodOwner> ReadPodOwners(const Struct& pod) {
  std::vector<PodOwner> out;
  const google::protobuf::ListValue* owners =
      ListAt(pod, "metadata.ownerReferences");
  if (owners == nullptr) return out;
  for (const google::protobuf::Value& v : owners->values()) {
    if (!v.has_struct_value()) continue;
    const Struct& o = v.struct_value();
    PodOwner owner;
    owner.kind = StringAt(o, "kind").value_or("");
    owner.name = StringAt(o, "name").value_or("");
    const google::protobuf::Value* c = FindPath(o, "controller");
    if (c != nullptr && c->has_bool_value()) owner.controller = c->bool_value();
    out.push_back(std::move(owner));
  }
  return out;
}

PodIdentity ReadPodIdentity(const Struct& pod) {
  PodIdentity id;
  id.name = StringAt(pod, "metadata.name").value_or("");
  id.namespace_name = StringAt(pod, "metadata.namespace").value_or("");
  // A pod-level failure (Evicted, and the like) names the incident; its
  // containers merely ended with it.
  if (StringAt(pod, "status.phase").value_or("") == "Failed") {
    if (auto reason = StringAt(pod, "status.reason");
        reason && !reason->empty()) {
      id.error_type = *reason;
      return id;
    }
  }
  for (const char* list :
       {"status.initContainerStatuses", "status.containerStatuses"}) {
    const ListValue* statuses = ListAt(pod, list);
    if (statuses == nullptr) continue;
    for (const Value& v : statuses->values()) {
      if (!v.has_struct_value()) continue;
      std::string failure = FailureOf(v.struct_value());
      if (!failure.empty()) {
        id.error_type = failure;
        return id;
      }
    }
  }
  if (auto reason = StringAt(pod, "status.reason");
      reason && !reason->empty()) {
    id.error_type = *reason;
    return id;
  }
  // Scheduled but a container is still being created (a volume that does
  // not mount, a sandbox that fails), or never scheduled.
  bool scheduled = false;
  if (const ListValue* conditions = ListAt(pod, "status.conditions")) {
    for (const Value& c : conditions->values()) {
      if (!c.has_struct_value()) continue;
      if (StringAt(c.struct_value(), "type").value_or("") == "PodScheduled" &&
          StringAt(c.struct_value(), "status").value_or("") == "True") {
        scheduled = true;
      }
    }
  }
  bool creating = false, not_ready = false;
  if (const ListValue* statuses = ListAt(pod, "status.containerStatuses")) {
    for (const Value& v : statuses->values()) {
      if (!v.has_struct_value()) continue;
      const Struct& st = v.struct_value();
      if (StringAt(st, "state.waiting.reason").value_or("") ==
          "ContainerCreating") {
        creating = true;
      }
      const Value* ready = FindPath(st, "ready");
      if (ready != nullptr && ready->has_bool_value() && !ready->bool_value() &&
          FindPath(st, "state.running") != nullptr) {
        not_ready = true;
      }
    }
  }
  const std::string phase = StringAt(pod, "status.phase").value_or("");
  if (phase == "Pending") {
    id.error_type = creating || scheduled ? "ContainerCreating" : "Pending";
  } else if (phase == "Running" && not_ready) {
    id.error_type = "NotReady";
  }
  return id;
}

}  // namespace reflexion::core

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

PodIdentity ReadPodIdentity(const Struct& pod) {
  PodIdentity id;
  id.name = StringAt(pod, "metadata.name").value_or("");
  id.namespace_name = StringAt(pod, "metadata.namespace").value_or("");
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
  std::string phase = StringAt(pod, "status.phase").value_or("");
  if (phase == "Pending") {
    id.error_type = "Pending";
  } else if (phase == "Running") {
    // Running but never ready (a failing readiness probe).
    if (const ListValue* statuses = ListAt(pod, "status.containerStatuses")) {
      for (const Value& v : statuses->values()) {
        if (!v.has_struct_value()) continue;
        const Struct& st = v.struct_value();
        const Value* ready = FindPath(st, "ready");
        if (StructAt(st, "state.running") != nullptr && ready != nullptr &&
            ready->has_bool_value() && !ready->bool_value()) {
          id.error_type = "NotReady";
          break;
        }
      }
    }
  }
  return id;
}

}  // namespace reflexion::core

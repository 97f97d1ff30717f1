#pragma once

// Reading Kubernetes objects (v1.Pod, v1.Event) carried as
// google.protobuf.Struct, as the API returns them. Every accessor tolerates
// malformed input: a missing field or one of the wrong type reads as absent,
// never as an error or a crash.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/struct.pb.h"

namespace reflexion::core {

// The value at a dotted path of object fields ("status.phase"), or null
// when any step is missing or not an object.
const google::protobuf::Value* FindPath(const google::protobuf::Struct& object,
                                        absl::string_view path);
// The string at `path`; nullopt when absent or not a string.
std::optional<std::string> StringAt(const google::protobuf::Struct& object,
                                    absl::string_view path);
// The number at `path` as an integer; nullopt when absent, not a number, not
// integral or out of int64 range.
std::optional<int64_t> IntAt(const google::protobuf::Struct& object,
                             absl::string_view path);
// The object at `path`; null when absent or not an object.
const google::protobuf::Struct* StructAt(const google::protobuf::Struct& object,
                                         absl::string_view path);
// The list at `path`; null when absent or not a list.
const google::protobuf::ListValue* ListAt(
    const google::protobuf::Struct& object, absl::string_view path);

// What an incident needs from a pod object when the caller did not say:
// metadata.name, metadata.namespace, and the reported failure — the waiting
// reason of the first failing container (init containers first), else its
// last termination reason, else status.reason (e.g. Evicted), else
// "ContainerCreating" for a scheduled pod whose containers are still being
// created, "Pending" for an unscheduled one, "NotReady" for a running pod
// with a running container that is not ready. Empty strings when unknown.
struct PodIdentity {
  std::string name;
  std::string namespace_name;
  std::string error_type;
};
PodIdentity ReadPodIdentity(const google::protobuf::Struct& pod);

// One entry of metadata.ownerReferences (entries that are not objects are
// skipped; missing strings read as "").
struct PodOwner {
  std::string kind;
  std::string name;
  // The `controller` flag; nullopt when absent or not a bool.
  std::optional<bool> controller;
};
std::vector<PodOwner> ReadPodOwners(const google::protobuf::Struct& pod);

}  // namespace reflexion::core

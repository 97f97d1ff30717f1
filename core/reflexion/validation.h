#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Limits on incident fields (documented in types.proto).
inline constexpr size_t kMaxPodName = 253;
inline constexpr size_t kMaxNamespace = 63;
inline constexpr size_t kMaxErrorType = 64;
inline constexpr size_t kMaxMessage = 4096;
inline constexpr size_t kMaxLogs = 64 * 1024;
inline constexpr size_t kMaxRequestId = 128;
inline constexpr int kMaxContainers = 32;
inline constexpr int kMaxEvents = 64;
inline constexpr size_t kMaxShortField = 512;
// Incident.pod, serialized; Incident.pod_events after folding.
inline constexpr size_t kMaxPodBytes = 1 << 20;
inline constexpr int kMaxPodEvents = 256;

// Whether `s` is a DNS-1123 subdomain (pod names).
bool IsDns1123Subdomain(absl::string_view s);
// Whether `s` is a DNS-1123 label (namespaces).
bool IsDns1123Label(absl::string_view s);

// Prepares an incident that carries Kubernetes objects, before
// ValidateIncident: pod_name, namespace and error_type left empty are read
// from `pod` (metadata, the failing container's state); pod_events with the
// same reason and message are folded into one whose count is their sum (the
// first one's other fields are kept). kInvalidArgument naming the field for
// a pod over kMaxPodBytes serialized or more than kMaxPodEvents events after
// folding. Thread-compatible.
absl::Status NormalizeIncident(reflexion::v1::Incident* incident,
                               absl::string_view prefix);

// Checks every field of an incident. kInvalidArgument whose message starts
// with the field's path under `prefix` (e.g. "incident.pod_name: ...",
// "incident.events[3].message: must be valid UTF-8"). Messages never quote
// field values. Thread-safe.
absl::Status ValidateIncident(const reflexion::v1::Incident& incident,
                              absl::string_view prefix);

// The request_id to echo on a rejection of an incident that may have failed
// validation: valid UTF-8 of at most kMaxRequestId bytes, clipped at a
// character boundary. Thread-safe.
std::string RequestIdForRejection(absl::string_view request_id);

}  // namespace reflexion::core

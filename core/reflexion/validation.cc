#include "core/reflexion/validation.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/reflexion/pod_object.h"
#include "core/reflexion/utf8.h"

namespace reflexion::core {
namespace {

bool IsLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

absl::Status Bad(absl::string_view prefix, absl::string_view field,
                 absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(prefix, field, ": ", why));
}

absl::Status CheckLength(absl::string_view prefix, absl::string_view field,
                         absl::string_view value, size_t max) {
  if (value.size() > max) {
    return Bad(
        prefix, field,
        absl::StrCat("is ", value.size(), " bytes, at most ", max, " allowed"));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsDns1123Label(absl::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  if (!IsLowerAlnum(s.front()) || !IsLowerAlnum(s.back())) return false;
  for (char c : s) {
    if (!IsLowerAlnum(c) && c != '-') return false;
  }
  return true;
}

bool IsDns1123Subdomain(absl::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  for (absl::string_view part : absl::StrSplit(s, '.')) {
    if (part.empty() || !IsLowerAlnum(part.front()) ||
        !IsLowerAlnum(part.back())) {
      return false;
    }
    for (char c : part) {
      if (!IsLowerAlnum(c) && c != '-') return false;
    }
  }
  return true;
}

absl::Status NormalizeIncident(v1::Incident* in, absl::string_view prefix) {
  if (in->has_pod()) {
    if (in->pod().ByteSizeLong() > kMaxPodBytes) {
      return Bad(prefix, "pod", "at most 1 MiB serialized");
    }
    PodIdentity id = ReadPodIdentity(in->pod());
    if (in->pod_name().empty()) in->set_pod_name(id.name);
    if (in->namespace_().empty()) in->set_namespace_(id.namespace_name);
    if (in->error_type().empty()) in->set_error_type(id.error_type);
  }
  if (in->pod_events_size() > 1) {
    google::protobuf::RepeatedPtrField<google::protobuf::Struct> folded;
    absl::flat_hash_map<std::string, int> index;  // reason \0 message
    for (google::protobuf::Struct& e : *in->mutable_pod_events()) {
      std::string key =
          absl::StrCat(StringAt(e, "reason").value_or(""), std::string(1, '\0'),
                       StringAt(e, "message").value_or(""));
      int64_t count = std::max<int64_t>(1, IntAt(e, "count").value_or(1));
      auto [it, fresh] = index.try_emplace(key, folded.size());
      if (fresh) {
        *folded.Add() = std::move(e);
        (*folded[it->second].mutable_fields())["count"].set_number_value(
            static_cast<double>(count));
        continue;
      }
      google::protobuf::Value& total =
          (*folded[it->second].mutable_fields())["count"];
      total.set_number_value(
          std::min(1e15, total.number_value() + static_cast<double>(count)));
    }
    in->mutable_pod_events()->Swap(&folded);
  }
  if (in->pod_events_size() > kMaxPodEvents) {
    return Bad(prefix, "pod_events",
               absl::StrCat("at most ", kMaxPodEvents,
                            " events (after folding duplicates)"));
  }
  return absl::OkStatus();
}

absl::Status ValidateIncident(const v1::Incident& in,
                              absl::string_view prefix) {
  if (in.has_pod() && in.pod().ByteSizeLong() > kMaxPodBytes) {
    return Bad(prefix, "pod", "at most 1 MiB serialized");
  }
  if (in.pod_events_size() > kMaxPodEvents) {
    return Bad(prefix, "pod_events",
               absl::StrCat("at most ", kMaxPodEvents,
                            " events (after folding duplicates)"));
  }
  // First, over every string field (present and future): the checks below
  // and everything downstream may assume valid UTF-8.
  if (std::string path = FindInvalidUtf8(in); !path.empty()) {
    return Bad(prefix, path, "must be valid UTF-8");
  }
  if (in.pod_name().empty()) return Bad(prefix, "pod_name", "is required");
  if (in.pod_name().size() > kMaxPodName) {
    return CheckLength(prefix, "pod_name", in.pod_name(), kMaxPodName);
  }
  if (!IsDns1123Subdomain(in.pod_name())) {
    return Bad(prefix, "pod_name",
               "must be a DNS-1123 subdomain (lowercase alphanumerics, '-' "
               "and '.', starting and ending alphanumeric)");
  }
  if (in.namespace_().empty()) return Bad(prefix, "namespace", "is required");
  if (in.namespace_().size() > kMaxNamespace) {
    return CheckLength(prefix, "namespace", in.namespace_(), kMaxNamespace);
  }
  if (!IsDns1123Label(in.namespace_())) {
    return Bad(prefix, "namespace",
               "must be a DNS-1123 label (lowercase alphanumerics and '-', "
               "starting and ending alphanumeric)");
  }
  if (in.error_type().empty()) return Bad(prefix, "error_type", "is required");
  if (in.error_type().size() > kMaxErrorType) {
    return CheckLength(prefix, "error_type", in.error_type(), kMaxErrorType);
  }
  for (char c : in.error_type()) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    if (!ok) {
      return Bad(prefix, "error_type",
                 "may contain only letters, digits, '_', '.' and '-'");
    }
  }
  auto check = [&](absl::string_view field, absl::string_view v, size_t max) {
    return CheckLength(prefix, field, v, max);
  };
  absl::Status s;
  if (!(s = check("error_message", in.error_message(), kMaxMessage)).ok()) {
    return s;
  }
  if (!(s = check("logs", in.logs(), kMaxLogs)).ok()) return s;
  if (!(s = check("request_id", in.request_id(), kMaxRequestId)).ok()) return s;
  if (in.container_statuses_size() > kMaxContainers) {
    return Bad(prefix, "container_statuses",
               absl::StrCat("has ", in.container_statuses_size(),
                            " entries, at most ", kMaxContainers, " allowed"));
  }
  for (int i = 0; i < in.container_statuses_size(); ++i) {
    const auto& c = in.container_statuses(i);
    std::string f = absl::StrCat("container_statuses[", i, "].");
    if (!(s = check(f + "name", c.name(), kMaxPodName)).ok()) return s;
    if (!(s = check(f + "image", c.image(), kMaxShortField)).ok()) return s;
    if (!(s = check(f + "last_termination_reason", c.last_termination_reason(),
                    kMaxShortField))
             .ok()) {
      return s;
    }
    if (!(s = check(f + "waiting_reason", c.waiting_reason(), kMaxShortField))
             .ok()) {
      return s;
    }
    if (!(s = check(f + "waiting_message", c.waiting_message(), kMaxMessage))
             .ok()) {
      return s;
    }
  }
  if (in.events_size() > kMaxEvents) {
    return Bad(prefix, "events",
               absl::StrCat("has ", in.events_size(), " entries, at most ",
                            kMaxEvents, " allowed"));
  }
  for (int i = 0; i < in.events_size(); ++i) {
    const auto& e = in.events(i);
    std::string f = absl::StrCat("events[", i, "].");
    if (!(s = check(f + "type", e.type(), kMaxShortField)).ok()) return s;
    if (!(s = check(f + "reason", e.reason(), kMaxShortField)).ok()) return s;
    if (!(s = check(f + "message", e.message(), kMaxMessage)).ok()) return s;
  }
  if (in.has_executor_facts()) {
    const v1::Diagnosis& d = in.executor_facts();
    const std::string f = "executor_facts.";
    if (!(s = check(f + "logs", d.logs(), kMaxLogs)).ok()) return s;
    if (!(s = check(f + "last_healthy_image", d.last_healthy_image(),
                    kMaxShortField))
             .ok()) {
      return s;
    }
    if (d.container_statuses_size() > kMaxContainers) {
      return Bad(prefix, f + "container_statuses",
                 absl::StrCat("at most ", kMaxContainers, " allowed"));
    }
    if (d.events_size() > kMaxEvents) {
      return Bad(prefix, f + "events",
                 absl::StrCat("at most ", kMaxEvents, " allowed"));
    }
    if (d.available_pull_secrets_size() > kMaxContainers) {
      return Bad(prefix, f + "available_pull_secrets",
                 absl::StrCat("at most ", kMaxContainers, " allowed"));
    }
    for (int i = 0; i < d.available_pull_secrets_size(); ++i) {
      if (!IsDns1123Subdomain(d.available_pull_secrets(i))) {
        return Bad(prefix, absl::StrCat(f, "available_pull_secrets[", i, "]"),
                   "must be a DNS-1123 subdomain (a Secret name)");
      }
    }
    if (d.memory_limit_bytes() < 0) {
      return Bad(prefix, f + "memory_limit_bytes", "must not be negative");
    }
    // Every other string of it is bounded by the message size limit and
    // checked for UTF-8 when it is decoded.
  }
  return absl::OkStatus();
}

std::string RequestIdForRejection(absl::string_view request_id) {
  return ToValidUtf8Clipped(request_id, kMaxRequestId);
}

}  // namespace reflexion::core

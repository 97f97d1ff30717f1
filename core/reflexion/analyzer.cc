#include "core/reflexion/analyzer.h"

#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/utf8.h"

namespace reflexion::core {
namespace {

constexpr size_t kEvidenceMax = 240;

// Quoted text comes from the incident or the executor: made valid UTF-8, then
// clipped at a character boundary (a clipped character once made checkpoints
// undecodable).
std::string Clip(absl::string_view s) {
  std::string valid = ToValidUtf8(s);
  if (valid.size() <= kEvidenceMax) return valid;
  return absl::StrCat(ClipUtf8(valid, kEvidenceMax), "...");
}

bool ContainsAny(absl::string_view haystack,
                 std::initializer_list<absl::string_view> needles) {
  for (absl::string_view n : needles) {
    if (absl::StrContains(haystack, n)) return true;
  }
  return false;
}

struct Facts {
  std::string termination_reason;
  int exit_code = 0;
  std::string text;  // lowercased messages: waiting, events, error message
  std::string logs;  // lowercased log tail
  bool recent_rollout = false;
  bool probe_failure = false;
  std::vector<std::string> evidence;
};

Facts Collect(const v1::Incident& in, const v1::Diagnosis& dx) {
  Facts f;
  f.recent_rollout = dx.recent_rollout();
  std::vector<const v1::ContainerStatus*> statuses;
  for (const auto& c : in.container_statuses()) statuses.push_back(&c);
  for (const auto& c : dx.container_statuses()) statuses.push_back(&c);
  std::vector<std::string> texts;
  if (!in.error_message().empty()) texts.push_back(in.error_message());
  for (const auto* c : statuses) {
    if (!c->last_termination_reason().empty() && f.termination_reason.empty()) {
      f.termination_reason = c->last_termination_reason();
      f.exit_code = c->last_exit_code();
      f.evidence.push_back(absl::StrCat(
          "container ", c->name(), ": last termination ",
          c->last_termination_reason(), " (exit ", c->last_exit_code(), ")"));
    }
    if (!c->waiting_message().empty()) {
      texts.push_back(c->waiting_message());
      f.evidence.push_back(absl::StrCat("container ", c->name(), " waiting (",
                                        c->waiting_reason(),
                                        "): ", Clip(c->waiting_message())));
    }
  }
  std::vector<const v1::PodEvent*> events;
  for (const auto& e : in.events()) events.push_back(&e);
  for (const auto& e : dx.events()) events.push_back(&e);
  for (const auto* e : events) {
    texts.push_back(e->message());
    f.evidence.push_back(
        absl::StrCat("event ", e->reason(), ": ", Clip(e->message())));
    if (e->reason() == "Unhealthy" &&
        ContainsAny(absl::AsciiStrToLower(e->message()),
                    {"liveness probe failed", "readiness probe failed",
                     "startup probe failed"})) {
      f.probe_failure = true;
    }
  }
  f.text = absl::AsciiStrToLower(absl::StrJoin(texts, "\n"));
  f.logs = absl::AsciiStrToLower(
      absl::StrCat(in.logs(), in.logs().empty() ? "" : "\n", dx.logs()));
  if (f.recent_rollout)
    f.evidence.push_back("a new revision was rolled out recently");
  return f;
}

std::string ImagePullCause(const Facts& f) {
  if (ContainsAny(f.text,
                  {"unauthorized", "authentication required", "access denied",
                   "pull access denied", "403 forbidden", "denied:"})) {
    return "registry_auth";
  }
  if (ContainsAny(f.text, {"manifest unknown", "not found"})) {
    return "image_not_found";
  }
  if (ContainsAny(f.text, {"i/o timeout", "connection refused", "no such host",
                           "tls handshake timeout", "deadline exceeded",
                           "connection reset"})) {
    return "registry_unreachable";
  }
  return "unclassified";
}

std::string CrashCause(const Facts& f, bool deep) {
  if (f.probe_failure || f.exit_code == 143) return "probe_failure";
  if (f.exit_code == 127 || f.exit_code == 126) return "command_not_found";
  if (f.exit_code == 139) return "segfault";
  if (f.exit_code != 0) return f.recent_rollout ? "bad_release" : "app_error";
  if (deep) {
    if (ContainsAny(f.logs, {"panic:", "exception", "fatal"})) {
      return f.recent_rollout ? "bad_release" : "app_error";
    }
  }
  return "unclassified";
}

std::string ConfigCause(const Facts& f) {
  if (absl::StrContains(f.text, "couldn't find key")) {
    return "missing_config_key";
  }
  if (ContainsAny(f.text, {"configmap \"", "configmaps \""}) &&
      absl::StrContains(f.text, "not found")) {
    return "missing_configmap";
  }
  if (ContainsAny(f.text, {"secret \"", "secrets \""}) &&
      absl::StrContains(f.text, "not found")) {
    return "missing_secret";
  }
  return "unclassified";
}

std::string PendingCause(const Facts& f) {
  if (ContainsAny(f.text, {"insufficient memory", "insufficient cpu",
                           "insufficient ephemeral-storage"})) {
    return "insufficient_resources";
  }
  if (ContainsAny(f.text,
                  {"didn't match pod's node affinity",
                   "didn't match node selector", "node affinity/selector"})) {
    return "node_selector_mismatch";
  }
  if (absl::StrContains(f.text, "untolerated taint"))
    return "untolerated_taint";
  if (absl::StrContains(f.text, "unbound immediate persistentvolumeclaims")) {
    return "unbound_volume";
  }
  return "unclassified";
}

std::string EvictedCause(const Facts& f) {
  if (ContainsAny(f.text, {"ephemeral local storage", "ephemeral-storage"})) {
    return "ephemeral_storage";
  }
  if (absl::StrContains(f.text, "low on resource: memory")) {
    return "memory_pressure";
  }
  return "unclassified";
}

std::string UnknownFamilyCause(const Facts& f, bool deep) {
  if (f.exit_code == 139 ||
      (deep && absl::StrContains(f.logs, "segmentation fault"))) {
    return "segfault";
  }
  if (f.exit_code == 137) return "killed";
  if (f.exit_code == 127 || f.exit_code == 126) return "command_not_found";
  if (f.exit_code != 0) return f.recent_rollout ? "bad_release" : "app_error";
  if (deep && ContainsAny(f.logs, {"panic:", "exception", "fatal"})) {
    return f.recent_rollout ? "bad_release" : "app_error";
  }
  return "unclassified";
}

}  // namespace

v1::Analysis Analyze(const v1::Incident& incident, const v1::Diagnosis& dx,
                     bool deep) {
  Facts f = Collect(incident, dx);
  std::string family = FamilyOf(incident.error_type());
  // An OOM kill reported as CrashLoopBackOff is an OOM.
  if ((family == "CrashLoopBackOff" || !IsKnownFamily(family)) &&
      f.termination_reason == "OOMKilled") {
    family = "OOMKilled";
  }
  std::string cause;
  if (family == "ImagePullBackOff") {
    cause = ImagePullCause(f);
  } else if (family == "InvalidImageName") {
    cause = "invalid_reference";
  } else if (family == "CrashLoopBackOff") {
    cause = CrashCause(f, deep);
  } else if (family == "OOMKilled") {
    cause = f.recent_rollout ? "memory_regression" : "memory_limit_too_low";
  } else if (family == "CreateContainerConfigError") {
    cause = ConfigCause(f);
  } else if (family == "Pending") {
    cause = PendingCause(f);
  } else if (family == "Evicted") {
    cause = EvictedCause(f);
  } else {
    cause = UnknownFamilyCause(f, deep);
  }

  v1::Analysis a;
  a.set_error_family(family);
  a.set_cause(cause);
  a.set_signature(absl::StrCat(family, "/", cause));
  a.set_known(IsKnownFamily(family));
  a.set_deep(deep);
  auto& features = *a.mutable_features();
  if (!f.termination_reason.empty()) {
    features["termination_reason"] = f.termination_reason;
    features["exit_code"] = absl::StrCat(f.exit_code);
  }
  features["recent_rollout"] = f.recent_rollout ? "true" : "false";
  if (f.probe_failure) features["probe_failure"] = "true";
  if (dx.memory_limit_bytes() > 0) {
    features["memory_limit_bytes"] = absl::StrCat(dx.memory_limit_bytes());
  }
  if (!dx.last_healthy_image().empty()) {
    features["last_healthy_image"] = dx.last_healthy_image();
  }
  size_t evidence_cap = deep ? 12 : 6;
  for (const std::string& e : f.evidence) {
    if (static_cast<size_t>(a.evidence_size()) >= evidence_cap) break;
    a.add_evidence(e);
  }
  if (deep) {
    // Quote (never interpret) the log lines that look like the failure.
    std::string raw = absl::StrCat(incident.logs(), "\n", dx.logs());
    int quoted = 0;
    for (absl::string_view line : absl::StrSplit(raw, '\n')) {
      std::string lower = absl::AsciiStrToLower(line);
      if (ContainsAny(lower,
                      {"panic", "fatal", "error", "exception",
                       "segmentation fault", "killed", "out of memory"})) {
        a.add_evidence(absl::StrCat("log: \"", Clip(line), "\""));
        if (++quoted == 3) break;
      }
    }
  }
  // Names, reasons and features are copied unclipped from the incident and
  // the diagnosis; a diagnosis is foreign bytes. One walk, nothing to do in
  // the usual case.
  RepairUtf8(&a);
  return a;
}

bool NeedsDeepAnalysis(const v1::Analysis& analysis) {
  return !analysis.deep() &&
         (!analysis.known() || analysis.cause() == "unclassified");
}

}  // namespace reflexion::core

#include "server/policy_config.h"

#include <functional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "core/reflexion/utf8.h"
#include "server/config_text.h"

namespace reflexion::server {
namespace {

using config_text::Bad;
using config_text::KindOf;
using config_text::Quote;

// A scalar's text, which must be valid UTF-8 (it ends up in reasons).
absl::Status ReadText(const YAML::Node& n, const std::string& key,
                      std::string& out) {
  if (!n.IsScalar()) {
    return Bad(key, absl::StrCat("must be a scalar, not ", KindOf(n)));
  }
  if (!core::IsValidUtf8(n.Scalar())) {
    return Bad(key, "is not valid UTF-8");
  }
  out = n.Scalar();
  return absl::OkStatus();
}

// A cluster or namespace name: not empty, no '/'.
absl::Status ReadName(const YAML::Node& n, const std::string& key,
                      std::string& out) {
  std::string v;
  absl::Status s = ReadText(n, key, v);
  if (!s.ok()) return s;
  if (v.empty()) return Bad(key, "must not be empty");
  if (v.find('/') != std::string::npos) {
    return Bad(key, absl::StrCat("\"", Quote(v), "\" must not contain '/'"));
  }
  out = std::move(v);
  return absl::OkStatus();
}

// "ns" or "cluster/ns", both parts non-empty.
absl::Status CheckNamespaceRef(const std::string& key, const std::string& v) {
  std::vector<absl::string_view> parts = absl::StrSplit(v, '/');
  for (absl::string_view p : parts) {
    if (p.empty() || parts.size() > 2) {
      return Bad(key, absl::StrCat("\"", Quote(v),
                                   "\" is not \"namespace\" or "
                                   "\"cluster/namespace\""));
    }
  }
  return absl::OkStatus();
}

absl::Status ReadNumber(const YAML::Node& n, const std::string& key, double lo,
                        double hi, double& out) {
  std::string text;
  absl::Status s = ReadText(n, key, text);
  if (!s.ok()) return s;
  double v = 0;
  if (!absl::SimpleAtod(text, &v) || !(v >= lo && v <= hi)) {
    return Bad(key, absl::StrCat("\"", Quote(text), "\" must be a number from ",
                                 lo, " to ", hi));
  }
  out = v;
  return absl::OkStatus();
}

absl::Status ReadCount(const YAML::Node& n, const std::string& key, int lo,
                       int hi, int& out) {
  std::string text;
  absl::Status s = ReadText(n, key, text);
  if (!s.ok()) return s;
  int v = 0;
  if (!absl::SimpleAtoi(text, &v) || v < lo || v > hi) {
    return Bad(
        key, absl::StrCat("\"", Quote(text), "\" must be a whole number from ",
                          lo, " to ", hi));
  }
  out = v;
  return absl::OkStatus();
}

// A duration: "8h", "10m", "1h30m", "90s", or a number of seconds.
absl::Status ReadDuration(const YAML::Node& n, const std::string& key,
                          absl::Duration lo, absl::Duration hi,
                          absl::Duration& out) {
  std::string text;
  absl::Status s = ReadText(n, key, text);
  if (!s.ok()) return s;
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d)) {
    return Bad(key, absl::StrCat("\"", Quote(text),
                                 "\" is not a duration (e.g. 90s, 10m, 8h)"));
  }
  if (d < lo || d > hi) {
    return Bad(key, absl::StrCat("\"", Quote(text), "\" must be from ",
                                 absl::FormatDuration(lo), " to ",
                                 absl::FormatDuration(hi)));
  }
  out = d;
  return absl::OkStatus();
}

absl::Status ReadMode(const YAML::Node& n, const std::string& key,
                      v1::PolicyMode& out) {
  std::string text;
  absl::Status s = ReadText(n, key, text);
  if (!s.ok()) return s;
  if (!core::ParsePolicyMode(text, &out)) {
    return Bad(key, absl::StrCat("\"", Quote(text),
                                 "\" is not a mode: enforce, dry-run, shadow "
                                 "or off"));
  }
  return absl::OkStatus();
}

// Calls `fn(leaf, node)` for each entry of a map (null = no entries); keys
// must be distinct scalars.
absl::Status ForEachEntry(
    const YAML::Node& n, const std::string& key,
    const std::function<absl::Status(const std::string&, const YAML::Node&)>&
        fn) {
  if (n.IsNull()) return absl::OkStatus();
  if (!n.IsMap())
    return Bad(key, absl::StrCat("must be a map, not ", KindOf(n)));
  std::set<std::string> seen;
  for (const auto& entry : n) {
    if (!entry.first.IsScalar()) {
      return Bad(key, absl::StrCat("a key must be a string, not ",
                                   KindOf(entry.first)));
    }
    const std::string leaf = entry.first.Scalar();
    if (!core::IsValidUtf8(leaf)) {
      return Bad(absl::StrCat(key, ".", leaf), "is not valid UTF-8");
    }
    if (!seen.insert(leaf).second) {
      return Bad(absl::StrCat(key, ".", leaf), "is given twice");
    }
    absl::Status s = fn(leaf, entry.second);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

// Calls `fn(index_key, node)` for each element of a sequence (null = none).
absl::Status ForEachElement(
    const YAML::Node& n, const std::string& key,
    const std::function<absl::Status(const std::string&, const YAML::Node&)>&
        fn) {
  if (n.IsNull()) return absl::OkStatus();
  if (!n.IsSequence()) {
    return Bad(key, absl::StrCat("must be a list, not ", KindOf(n)));
  }
  for (size_t i = 0; i < n.size(); ++i) {
    absl::Status s = fn(absl::StrCat(key, "[", i, "]"), n[i]);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ReadNamespaceList(const YAML::Node& n, const std::string& key,
                               std::vector<std::string>& out) {
  std::vector<std::string> list;
  absl::Status s =
      ForEachElement(n, key, [&](const std::string& k, const YAML::Node& e) {
        std::string v;
        absl::Status st = ReadText(e, k, v);
        if (!st.ok()) return st;
        st = CheckNamespaceRef(k, v);
        if (!st.ok()) return st;
        list.push_back(std::move(v));
        return absl::OkStatus();
      });
  if (s.ok()) out = std::move(list);
  return s;
}

absl::Status ReadClusterList(const YAML::Node& n, const std::string& key,
                             std::vector<std::string>& out) {
  std::vector<std::string> list;
  absl::Status s =
      ForEachElement(n, key, [&](const std::string& k, const YAML::Node& e) {
        std::string v;
        absl::Status st = ReadName(e, k, v);
        if (st.ok()) list.push_back(std::move(v));
        return st;
      });
  if (s.ok()) out = std::move(list);
  return s;
}

absl::Status ReadRateLimit(const YAML::Node& n, const std::string& key,
                           core::RateLimit& out) {
  core::RateLimit limit = out;
  absl::Status s =
      ForEachEntry(n, key, [&](const std::string& leaf, const YAML::Node& v) {
        const std::string k = absl::StrCat(key, ".", leaf);
        if (leaf == "per_hour") return ReadNumber(v, k, 0, 1e6, limit.per_hour);
        if (leaf == "burst") return ReadNumber(v, k, 1, 1e6, limit.burst);
        return Bad(k, "is not a known key (per_hour, burst)");
      });
  if (s.ok()) out = limit;
  return s;
}

bool ParseWeekday(absl::string_view text, int* day) {
  static constexpr const char* kDays[] = {"sunday",    "monday",   "tuesday",
                                          "wednesday", "thursday", "friday",
                                          "saturday"};
  const std::string lower = absl::AsciiStrToLower(text);
  for (int i = 0; i < 7; ++i) {
    const absl::string_view full = kDays[i];
    if (lower == full || lower == full.substr(0, 3)) {
      *day = i;
      return true;
    }
  }
  return false;
}

// "HH:MM" (or "H:MM"), 00:00 to 23:59.
bool ParseMinuteOfDay(absl::string_view text, int* minute) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  if (parts.size() != 2 || parts[0].empty() || parts[0].size() > 2 ||
      parts[1].size() != 2) {
    return false;
  }
  int h = 0, m = 0;
  for (char c : text) {
    if (c != ':' && !absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  if (!absl::SimpleAtoi(parts[0], &h) || !absl::SimpleAtoi(parts[1], &m) ||
      h > 23 || m > 59) {
    return false;
  }
  *minute = h * 60 + m;
  return true;
}

absl::Status ReadTime(const YAML::Node& n, const std::string& key,
                      absl::Time& out) {
  std::string text;
  absl::Status s = ReadText(n, key, text);
  if (!s.ok()) return s;
  std::string err;
  if (!absl::ParseTime(absl::RFC3339_full, text, &out, &err)) {
    return Bad(key, absl::StrCat("\"", Quote(text),
                                 "\" is not an RFC 3339 time (e.g. "
                                 "2026-12-24T12:00:00Z)"));
  }
  return absl::OkStatus();
}

absl::Status ReadFreezeWindow(const YAML::Node& n, const std::string& key,
                              core::FreezeWindow& w) {
  bool has_days = false, has_start = false, has_duration = false;
  absl::Status s =
      ForEachEntry(n, key, [&](const std::string& leaf, const YAML::Node& v) {
        const std::string k = absl::StrCat(key, ".", leaf);
        if (leaf == "name") {
          absl::Status st = ReadText(v, k, w.name);
          if (st.ok() && w.name.empty()) return Bad(k, "must not be empty");
          return st;
        }
        if (leaf == "days") {
          has_days = true;
          w.days = 0;
          return ForEachElement(
              v, k, [&](const std::string& dk, const YAML::Node& d) {
                std::string text;
                absl::Status st = ReadText(d, dk, text);
                if (!st.ok()) return st;
                int day = 0;
                if (!ParseWeekday(text, &day)) {
                  return Bad(dk, absl::StrCat("\"", Quote(text),
                                              "\" is not a weekday (sun, mon, "
                                              "tue, wed, thu, fri, sat)"));
                }
                w.days |= static_cast<uint8_t>(1u << day);
                return absl::OkStatus();
              });
        }
        if (leaf == "start") {
          has_start = true;
          std::string text;
          absl::Status st = ReadText(v, k, text);
          if (!st.ok()) return st;
          if (!ParseMinuteOfDay(text, &w.start_minute)) {
            return Bad(k, absl::StrCat("\"", Quote(text), "\" is not HH:MM"));
          }
          return absl::OkStatus();
        }
        if (leaf == "duration") {
          has_duration = true;
          return ReadDuration(v, k, absl::Minutes(1), absl::Hours(7 * 24),
                              w.duration);
        }
        if (leaf == "from" || leaf == "until") {
          absl::Time t;
          absl::Status st = ReadTime(v, k, t);
          if (st.ok()) (leaf == "from" ? w.from : w.until) = t;
          return st;
        }
        if (leaf == "clusters") return ReadClusterList(v, k, w.clusters);
        if (leaf == "namespaces") return ReadNamespaceList(v, k, w.namespaces);
        return Bad(k,
                   "is not a known key (name, days, start, duration, from, "
                   "until, clusters, namespaces)");
      });
  if (!s.ok()) return s;
  if (!n.IsMap()) return Bad(key, "must be a map with a name");
  if (w.name.empty()) return Bad(absl::StrCat(key, ".name"), "is required");
  const bool weekly = has_days || has_start || has_duration;
  const bool absolute = w.from.has_value() || w.until.has_value();
  if (weekly == absolute) {
    return Bad(key,
               "give either days, start and duration (weekly) or from and "
               "until (absolute)");
  }
  if (weekly) {
    if (!has_days || w.days == 0) {
      return Bad(absl::StrCat(key, ".days"), "is required: at least one day");
    }
    if (!has_start) return Bad(absl::StrCat(key, ".start"), "is required");
    if (!has_duration) {
      return Bad(absl::StrCat(key, ".duration"), "is required");
    }
  } else {
    if (!w.from.has_value()) {
      return Bad(absl::StrCat(key, ".from"), "is required");
    }
    if (!w.until.has_value()) {
      return Bad(absl::StrCat(key, ".until"), "is required");
    }
    if (*w.until <= *w.from) {
      return Bad(absl::StrCat(key, ".until"), "must be after from");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyPolicyKey(const std::string& key, const YAML::Node& v,
                            core::PolicyConfig& p, bool* own_namespace_set) {
  if (key == "policy.mode") return ReadMode(v, key, p.mode);
  if (key == "policy.clusters" || key == "policy.namespaces") {
    const bool clusters = key == "policy.clusters";
    std::map<std::string, v1::PolicyMode> modes;
    absl::Status s =
        ForEachEntry(v, key, [&](const std::string& leaf, const YAML::Node& e) {
          const std::string k = absl::StrCat(key, ".", leaf);
          if (clusters ? (leaf.empty() || leaf.find('/') != std::string::npos)
                       : !CheckNamespaceRef(k, leaf).ok()) {
            return Bad(k, clusters ? "is not a cluster name (no '/')"
                                   : "is not \"namespace\" or "
                                     "\"cluster/namespace\"");
          }
          return ReadMode(e, k, modes[leaf]);
        });
    if (!s.ok()) return s;
    (clusters ? p.clusters : p.namespaces) = std::move(modes);
    return absl::OkStatus();
  }
  if (key == "policy.allow_namespaces") {
    return ReadNamespaceList(v, key, p.allow_namespaces);
  }
  if (key == "policy.deny_namespaces") {
    return ReadNamespaceList(v, key, p.deny_namespaces);
  }
  if (key == "policy.own_namespace") {
    absl::Status s = ReadName(v, key, p.own_namespace);
    if (s.ok() && own_namespace_set != nullptr) *own_namespace_set = true;
    return s;
  }
  if (key == "policy.default_cluster") {
    return ReadName(v, key, p.default_cluster);
  }
  if (key == "policy.limit_simulated") {
    if (!v.IsScalar() || (v.Scalar() != "true" && v.Scalar() != "false")) {
      return Bad(key, "must be true or false");
    }
    p.limit_simulated = v.Scalar() == "true";
    return absl::OkStatus();
  }
  if (key == "policy.rate_limits") {
    core::PolicyConfig copy = p;
    absl::Status s =
        ForEachEntry(v, key, [&](const std::string& leaf, const YAML::Node& e) {
          const std::string k = absl::StrCat(key, ".", leaf);
          if (leaf == "workload") return ReadRateLimit(e, k, copy.per_workload);
          if (leaf == "namespace") {
            return ReadRateLimit(e, k, copy.per_namespace);
          }
          if (leaf == "cluster") return ReadRateLimit(e, k, copy.per_cluster);
          return Bad(k, "is not a known key (workload, namespace, cluster)");
        });
    if (!s.ok()) return s;
    p.per_workload = copy.per_workload;
    p.per_namespace = copy.per_namespace;
    p.per_cluster = copy.per_cluster;
    return absl::OkStatus();
  }
  if (key == "policy.breaker") {
    core::BreakerConfig b = p.breaker;
    absl::Status s =
        ForEachEntry(v, key, [&](const std::string& leaf, const YAML::Node& e) {
          const std::string k = absl::StrCat(key, ".", leaf);
          if (leaf == "window") {
            return ReadDuration(e, k, absl::Seconds(1), absl::Hours(24),
                                b.window);
          }
          if (leaf == "namespace_incidents") {
            return ReadCount(e, k, 0, core::Policy::kMaxWindowIncidents,
                             b.namespace_incidents);
          }
          if (leaf == "cluster_incidents") {
            return ReadCount(e, k, 0, core::Policy::kMaxWindowIncidents,
                             b.cluster_incidents);
          }
          if (leaf == "workload_share") {
            return ReadNumber(e, k, 0, 1, b.workload_share);
          }
          if (leaf == "workload_min_pods") {
            return ReadCount(
                e, k, 0, static_cast<int>(core::Policy::kMaxPodsPerWorkload),
                b.workload_min_pods);
          }
          return Bad(k,
                     "is not a known key (window, namespace_incidents, "
                     "cluster_incidents, workload_share, workload_min_pods)");
        });
    if (s.ok()) p.breaker = b;
    return s;
  }
  if (key == "policy.freeze_windows") {
    std::vector<core::FreezeWindow> windows;
    std::set<std::string> names;
    absl::Status s =
        ForEachElement(v, key, [&](const std::string& k, const YAML::Node& e) {
          core::FreezeWindow w;
          absl::Status st = ReadFreezeWindow(e, k, w);
          if (!st.ok()) return st;
          if (!names.insert(w.name).second) {
            return Bad(absl::StrCat(k, ".name"),
                       absl::StrCat("\"", Quote(w.name), "\" is given twice"));
          }
          windows.push_back(std::move(w));
          return absl::OkStatus();
        });
    if (s.ok()) p.freeze_windows = std::move(windows);
    return s;
  }
  return Bad(key,
             "is not a known key (policy.mode, clusters, namespaces, "
             "allow_namespaces, deny_namespaces, own_namespace, "
             "default_cluster, rate_limits, breaker, freeze_windows)");
}

}  // namespace reflexion::server

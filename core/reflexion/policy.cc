#include "core/reflexion/policy.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <deque>
#include <list>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"

namespace reflexion::core {
namespace {

using v1::PolicyDecision;

constexpr size_t kMaxFieldBytes = 256;
constexpr size_t kMaxConfigRefs = 16;
// A namespace window keeps at least this many incidents even when the
// namespace count breaker is off: the workload-share breaker names its
// suspected cause from them.
constexpr int kMinNamespaceWindow = 100;

std::string Clean(absl::string_view s) {
  return ToValidUtf8Clipped(s, kMaxFieldBytes);
}

// The incident with its strings made safe and its defaults applied.
struct Scope {
  std::string cluster, ns, pod, workload, signature, node, image;
  std::vector<std::string> config_refs;
  int replicas = 0;
  std::string workflow_id;
  std::string ns_scope;        // "cluster/ns"
  std::string workload_scope;  // "cluster/ns/Kind/name" ("" = no workload)
};

Scope Normalize(const IncidentScope& in, const PolicyConfig& config) {
  Scope s;
  s.cluster = Clean(in.cluster.empty() ? config.default_cluster : in.cluster);
  s.ns = Clean(in.namespace_.empty() ? "default" : in.namespace_);
  s.pod = Clean(in.pod);
  if (!in.workload_name.empty()) {
    s.workload = Clean(
        absl::StrCat(in.workload_kind.empty() ? "Workload" : in.workload_kind,
                     "/", in.workload_name));
  }
  s.signature = Clean(in.signature);
  s.node = Clean(in.node);
  s.image = Clean(in.image);
  absl::flat_hash_set<std::string> seen;
  for (const std::string& ref : in.config_refs) {
    if (s.config_refs.size() >= kMaxConfigRefs) break;
    std::string r = Clean(ref);
    if (!r.empty() && seen.insert(r).second) s.config_refs.push_back(r);
  }
  s.replicas = std::max(0, in.replicas);
  s.workflow_id = Clean(in.workflow_id);
  s.ns_scope = absl::StrCat(s.cluster, "/", s.ns);
  if (!s.workload.empty()) {
    s.workload_scope = absl::StrCat(s.ns_scope, "/", s.workload);
  }
  return s;
}

// "ns" matches the namespace in any cluster, "cluster/ns" in one.
bool ListMatches(const std::vector<std::string>& list, const Scope& s) {
  for (const std::string& entry : list) {
    if (entry == s.ns || entry == s.ns_scope) return true;
  }
  return false;
}

std::string FormatTimeUtc(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// A wait for humans: "45s", "7m", "1h5m" (rounded up).
std::string FormatWait(absl::Duration d) {
  // Whole milliseconds first: refill arithmetic in doubles may leave
  // 180.00000000000003 s, which is "3m", not "4m".
  const int64_t ms = std::llround(absl::ToDoubleMilliseconds(d));
  int64_t secs = (ms + 999) / 1000;
  if (secs < 1) secs = 1;
  if (secs < 60) return absl::StrCat(secs, "s");
  const int64_t mins = (secs + 59) / 60;
  if (mins < 60) return absl::StrCat(mins, "m");
  return mins % 60 == 0 ? absl::StrCat(mins / 60, "h")
                        : absl::StrCat(mins / 60, "h", mins % 60, "m");
}

std::string FormatNumber(double v) { return absl::StrFormat("%g", v); }

PolicyDecision Decision(PolicyDecision::Verdict verdict, v1::PolicyMode mode,
                        absl::string_view rule, std::string reason,
                        absl::string_view scope) {
  PolicyDecision d;
  d.set_verdict(verdict);
  d.set_mode(mode);
  d.set_rule(std::string(rule));
  d.set_reason(std::move(reason));
  d.set_scope(std::string(scope));
  return d;
}

// A map with at most `capacity` entries; touching an entry makes it the
// most recently used, inserting beyond capacity evicts the least recently
// used.
template <typename V>
class LruMap {
 public:
  explicit LruMap(size_t capacity) : capacity_(capacity) {}

  V& Touch(const std::string& key) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      items_.splice(items_.begin(), items_, it->second);
      return it->second->second;
    }
    items_.emplace_front(key, V{});
    index_[key] = items_.begin();
    if (items_.size() > capacity_) {
      index_.erase(items_.back().first);
      items_.pop_back();
    }
    return items_.front().second;
  }

  void Erase(const std::string& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    items_.erase(it->second);
    index_.erase(it);
  }

  template <typename Pred>
  void EraseIf(Pred pred) {
    for (auto it = items_.begin(); it != items_.end();) {
      if (pred(it->second)) {
        index_.erase(it->first);
        it = items_.erase(it);
      } else {
        ++it;
      }
    }
  }

  size_t size() const { return items_.size(); }

 private:
  using List = std::list<std::pair<std::string, V>>;
  size_t capacity_;
  List items_;
  absl::flat_hash_map<std::string, typename List::iterator> index_;
};

// One admitted incident, as the breaker windows remember it (shared by the
// cluster and the namespace window).
struct Record {
  absl::Time at;
  std::string node, image, signature, workload;
  std::vector<std::string> config_refs;
};

struct Window {
  std::string cluster, ns;  // ns "" for a cluster window
  std::deque<std::shared_ptr<const Record>> records;

  void Add(std::shared_ptr<const Record> r, absl::Time now,
           absl::Duration window, size_t cap) {
    records.push_back(std::move(r));
    Expire(now, window);
    while (records.size() > cap) records.pop_front();
  }
  void Expire(absl::Time now, absl::Duration window) {
    while (!records.empty() && records.front()->at <= now - window) {
      records.pop_front();
    }
  }
};

struct WorkloadPods {
  std::string cluster, ns;
  absl::flat_hash_map<std::string, absl::Time> pods;  // pod -> last failure

  void Add(const std::string& pod, absl::Time now, absl::Duration window) {
    pods[pod] = now;
    for (auto it = pods.begin(); it != pods.end();) {
      if (it->second <= now - window) {
        pods.erase(it++);
      } else {
        ++it;
      }
    }
    while (pods.size() > Policy::kMaxPodsPerWorkload) {
      auto oldest = pods.begin();
      for (auto it = pods.begin(); it != pods.end(); ++it) {
        if (it->second < oldest->second) oldest = it;
      }
      pods.erase(oldest);
    }
  }
};

// A token bucket with the actions of the last hour in minute slots (for the
// reason's "N actions in the last hour").
struct Bucket {
  bool initialised = false;
  double tokens = 0;
  absl::Time last;
  struct Slot {
    int64_t minute = -1;
    int32_t count = 0;
  };
  std::array<Slot, 60> slots;

  static int64_t MinuteOf(absl::Time t) {
    return absl::ToUnixSeconds(t) / 60;  // after 1970: the clock's domain
  }
  void Refill(const RateLimit& limit, absl::Time now) {
    const double cap = std::max(1.0, limit.burst);
    if (!initialised) {
      initialised = true;
      tokens = cap;
      last = now;
      return;
    }
    if (now > last) {
      tokens = std::min(cap, tokens + absl::ToDoubleSeconds(now - last) *
                                          limit.per_hour / 3600.0);
      last = now;
    }
  }
  // A token, allowing for rounding in the refill arithmetic.
  bool HasToken() const { return tokens >= 1.0 - 1e-9; }
  void Take(absl::Time now) {
    tokens -= 1;
    const int64_t m = MinuteOf(now);
    Slot& slot = slots[static_cast<size_t>(((m % 60) + 60) % 60)];
    if (slot.minute != m) slot = Slot{m, 0};
    ++slot.count;
  }
  int LastHour(absl::Time now) const {
    const int64_t m = MinuteOf(now);
    int n = 0;
    for (const Slot& s : slots) {
      if (s.minute > m - 60 && s.minute <= m) n += s.count;
    }
    return n;
  }
  absl::Duration NextToken(const RateLimit& limit) const {
    return absl::Seconds(std::max(0.0, 1.0 - tokens) * 3600.0 / limit.per_hour);
  }
};

struct OpenBreaker {
  v1::BreakerState state;
  std::string cluster, ns;  // ns "" for a cluster breaker
};

int SaturatingInc(int v) { return v == INT32_MAX ? v : v + 1; }

// The suspected common cause of the incidents in `records` and the figures
// behind it.
struct Cause {
  std::string suspected;
  std::vector<std::string> evidence;
};

Cause SuspectedCause(const std::deque<std::shared_ptr<const Record>>& records) {
  const int n = static_cast<int>(records.size());
  enum Kind { kNode, kConfig, kImage, kSignature, kWorkload, kKinds };
  std::array<absl::flat_hash_map<std::string, int>, kKinds> counts;
  for (const auto& r : records) {
    if (!r->node.empty()) ++counts[kNode][r->node];
    for (const std::string& ref : r->config_refs) ++counts[kConfig][ref];
    if (!r->image.empty()) ++counts[kImage][r->image];
    if (!r->signature.empty()) ++counts[kSignature][r->signature];
    if (!r->workload.empty()) ++counts[kWorkload][r->workload];
  }
  auto line = [n](int kind, const std::string& value, int count) {
    switch (kind) {
      case kNode:
        return absl::StrCat("node ", value, ": ", count, " of ", n,
                            " incidents");
      case kConfig:
        return absl::StrCat(value, " referenced by ", count, " of ", n,
                            " incidents");
      case kImage:
        return absl::StrCat("image ", value, ": ", count, " of ", n,
                            " incidents");
      case kSignature:
        return absl::StrCat("signature ", value, ": ", count, " of ", n,
                            " incidents");
      default:
        return absl::StrCat("workload ", value, ": ", count, " of ", n,
                            " incidents");
    }
  };
  // Per kind, the values by count (ties by value, for determinism).
  struct Entry {
    int kind;
    std::string value;
    int count;
  };
  std::vector<Entry> top, second;
  for (int k = 0; k < kKinds; ++k) {
    std::vector<std::pair<std::string, int>> v(counts[k].begin(),
                                               counts[k].end());
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    if (!v.empty()) top.push_back({k, v[0].first, v[0].second});
    if (v.size() > 1) second.push_back({k, v[1].first, v[1].second});
  }
  // Most shared first; on a tie the kind listed first (node, config, image,
  // signature, workload): the more specific suspect.
  std::stable_sort(top.begin(), top.end(), [](const Entry& a, const Entry& b) {
    return a.count > b.count;
  });
  Cause cause;
  if (top.empty()) {
    cause.suspected =
        "no common cause: the incidents name no node, config, image, "
        "signature or workload";
    return cause;
  }
  const Entry& best = top[0];
  const std::string best_line = line(best.kind, best.value, best.count);
  if (best.count < 2 || best.count * 2 < n) {
    cause.suspected = absl::StrCat(
        "no common cause; the most shared attribute is ", best_line);
  } else {
    cause.suspected = best_line;
  }
  for (size_t i = 1; i < top.size(); ++i) {
    cause.evidence.push_back(line(top[i].kind, top[i].value, top[i].count));
  }
  for (const Entry& e : second) {
    if (e.kind == best.kind) {
      cause.evidence.push_back(line(e.kind, e.value, e.count));
    }
  }
  return cause;
}

// Whether `w` covers `now`; if so, sets `*end` to when it ends.
bool FreezeActive(const FreezeWindow& w, absl::Time now, absl::Time* end) {
  if (w.from.has_value() || w.until.has_value()) {
    if (!w.from.has_value() || !w.until.has_value()) return false;
    if (now >= *w.from && now < *w.until) {
      *end = *w.until;
      return true;
    }
    return false;
  }
  const int64_t kWeek = 7 * 86400;
  const int64_t dur = absl::ToInt64Seconds(w.duration);
  if (dur <= 0 || w.days == 0) return false;
  const int64_t unix = absl::ToUnixSeconds(now);
  // 1970-01-01 was a Thursday (weekday 4): seconds since Sunday 00:00 UTC.
  const int64_t week_second = (((unix + 4 * 86400) % kWeek) + kWeek) % kWeek;
  bool active = false;
  for (int day = 0; day < 7; ++day) {
    if ((w.days & (1u << day)) == 0) continue;
    const int64_t start = day * 86400 + int64_t{w.start_minute} * 60;
    // Each occurrence at most a week long (the config enforces it), so the
    // latest start at or before now is the only one that can cover it.
    const int64_t since = (((week_second - start) % kWeek) + kWeek) % kWeek;
    if (since < dur) {
      const absl::Time e = now + absl::Seconds(dur - since);
      if (!active || e > *end) *end = e;
      active = true;
    }
  }
  return active;
}

bool FreezeApplies(const FreezeWindow& w, const Scope& s) {
  if (!w.clusters.empty() && std::find(w.clusters.begin(), w.clusters.end(),
                                       s.cluster) == w.clusters.end()) {
    return false;
  }
  return w.namespaces.empty() || ListMatches(w.namespaces, s);
}

}  // namespace

absl::string_view PolicyModeName(v1::PolicyMode mode) {
  switch (mode) {
    case v1::POLICY_MODE_ENFORCE:
      return "enforce";
    case v1::POLICY_MODE_DRY_RUN:
      return "dry-run";
    case v1::POLICY_MODE_SHADOW:
      return "shadow";
    case v1::POLICY_MODE_OFF:
      return "off";
    default:
      return "unspecified";
  }
}

bool ParsePolicyMode(absl::string_view name, v1::PolicyMode* mode) {
  for (v1::PolicyMode m : {v1::POLICY_MODE_ENFORCE, v1::POLICY_MODE_DRY_RUN,
                           v1::POLICY_MODE_SHADOW, v1::POLICY_MODE_OFF}) {
    if (name == PolicyModeName(m)) {
      *mode = m;
      return true;
    }
  }
  return false;
}

struct Policy::State {
  LruMap<Window> cluster_windows{kMaxTrackedScopes};
  LruMap<Window> namespace_windows{kMaxTrackedScopes};
  LruMap<WorkloadPods> workloads{kMaxTrackedScopes};
  LruMap<Bucket> workload_buckets{kMaxTrackedScopes};
  LruMap<Bucket> namespace_buckets{kMaxTrackedScopes};
  LruMap<Bucket> cluster_buckets{kMaxTrackedScopes};
  std::map<std::string, OpenBreaker> open;  // by scope
};

namespace {

// The mode for a scope and the key that set it.
struct ModeSource {
  v1::PolicyMode mode;
  std::string source;
};

ModeSource ResolveMode(const PolicyConfig& c, absl::string_view cluster,
                       absl::string_view ns) {
  const std::string cl(cluster.empty() ? c.default_cluster : cluster);
  const std::string n(ns.empty() ? "default" : ns);
  const std::string full = absl::StrCat(cl, "/", n);
  if (auto it = c.namespaces.find(full); it != c.namespaces.end()) {
    return {it->second, absl::StrCat("policy.namespaces \"", full, "\"")};
  }
  if (auto it = c.namespaces.find(n); it != c.namespaces.end()) {
    return {it->second, absl::StrCat("policy.namespaces \"", n, "\"")};
  }
  if (auto it = c.clusters.find(cl); it != c.clusters.end()) {
    return {it->second, absl::StrCat("policy.clusters \"", cl, "\"")};
  }
  return {c.mode, "policy.mode"};
}

// Why `s` is denied, or "" when it is not.
std::string NamespaceDenial(const PolicyConfig& c, const Scope& s) {
  if (s.ns == c.own_namespace) {
    return absl::StrCat("namespace ", s.ns_scope,
                        " is the service's own namespace "
                        "(policy.own_namespace): it is never automated");
  }
  if (ListMatches(c.deny_namespaces, s)) {
    return absl::StrCat("namespace ", s.ns_scope,
                        " is in policy.deny_namespaces: it is never automated");
  }
  if (!c.allow_namespaces.empty() && !ListMatches(c.allow_namespaces, s)) {
    return absl::StrCat("namespace ", s.ns_scope,
                        " is not in policy.allow_namespaces: it is never "
                        "automated");
  }
  return "";
}

// The open breaker holding `s` (cluster first), or null.
const OpenBreaker* HoldingBreaker(const std::map<std::string, OpenBreaker>& o,
                                  const Scope& s) {
  if (auto it = o.find(s.cluster); it != o.end()) return &it->second;
  if (auto it = o.find(s.ns_scope); it != o.end()) return &it->second;
  return nullptr;
}

std::string HeldReason(const OpenBreaker& b) {
  return absl::StrCat(
      "the blast-radius breaker for ", b.state.scope(), " is open since ",
      FormatTimeUtc(FromProto(b.state.tripped_at())), " (", b.state.incidents(),
      " incidents; suspected cause: ", b.state.suspected_cause(),
      "): automation is held there until a human clears it");
}

std::string FailClosedReason() {
  return absl::StrCat(
      Policy::kMaxOpenBreakers,
      " blast-radius breakers are open (the bound): automation is held "
      "everywhere until a human clears some");
}

// The config with every number in the range the engine assumes (the config
// parser enforces these ranges already; a config built in code may not).
PolicyConfig Sanitized(PolicyConfig c) {
  auto finite_or = [](double v, double fallback) {
    return std::isfinite(v) ? v : fallback;
  };
  for (RateLimit* r : {&c.per_workload, &c.per_namespace, &c.per_cluster}) {
    r->per_hour = std::max(0.0, finite_or(r->per_hour, 0));
    r->burst = std::max(1.0, finite_or(r->burst, 1));
  }
  BreakerConfig& b = c.breaker;
  b.window = std::max(b.window, absl::Seconds(1));
  b.namespace_incidents =
      std::clamp(b.namespace_incidents, 0, Policy::kMaxWindowIncidents);
  b.cluster_incidents =
      std::clamp(b.cluster_incidents, 0, Policy::kMaxWindowIncidents);
  b.workload_share = std::clamp(finite_or(b.workload_share, 0), 0.0, 1.0);
  b.workload_min_pods = std::clamp(
      b.workload_min_pods, 0, static_cast<int>(Policy::kMaxPodsPerWorkload));
  for (FreezeWindow& w : c.freeze_windows) {
    w.days &= 0x7f;
    w.start_minute = std::clamp(w.start_minute, 0, 24 * 60 - 1);
    w.duration =
        std::clamp(w.duration, absl::ZeroDuration(), absl::Hours(7 * 24));
  }
  if (c.default_cluster.empty()) c.default_cluster = "local";
  return c;
}

}  // namespace

Policy::Policy(PolicyConfig config, const Clock* clock)
    : config_(Sanitized(std::move(config))),
      clock_(clock),
      state_(std::make_unique<State>()) {}

Policy::~Policy() = default;

v1::PolicyMode Policy::ModeFor(absl::string_view cluster,
                               absl::string_view ns) const {
  return ResolveMode(config_, cluster, ns).mode;
}

Admission Policy::Admit(const IncidentScope& incident) {
  const Scope s = Normalize(incident, config_);
  const ModeSource mode = ResolveMode(config_, s.cluster, s.ns);
  Admission out;
  if (std::string why = NamespaceDenial(config_, s); !why.empty()) {
    out.decision = Decision(PolicyDecision::VERDICT_DENY, mode.mode,
                            "namespace_denied", std::move(why), s.ns_scope);
    return out;
  }
  if (mode.mode == v1::POLICY_MODE_OFF) {
    out.decision =
        Decision(PolicyDecision::VERDICT_DENY, mode.mode, "mode_off",
                 absl::StrCat("mode off for ", s.ns_scope, " (", mode.source,
                              "): incidents there are refused"),
                 s.ns_scope);
    return out;
  }
  const absl::Time now = clock_->Now();
  const BreakerConfig& bc = config_.breaker;
  absl::MutexLock lock(&mu_);
  State& st = *state_;
  if (st.open.size() >= kMaxOpenBreakers) {
    out.held_by_breaker = true;
    out.decision = Decision(PolicyDecision::VERDICT_ALLOW, mode.mode,
                            "breaker_open", FailClosedReason(), s.ns_scope);
    return out;
  }
  // Held: counted in each breaker holding it, not in any window.
  const OpenBreaker* holding = nullptr;
  for (const std::string* key : {&s.cluster, &s.ns_scope}) {
    auto it = st.open.find(*key);
    if (it == st.open.end()) continue;
    it->second.state.set_held_incidents(
        SaturatingInc(it->second.state.held_incidents()));
    if (holding == nullptr) holding = &it->second;
  }
  if (holding != nullptr) {
    out.held_by_breaker = true;
    out.decision = Decision(PolicyDecision::VERDICT_ALLOW, mode.mode,
                            "breaker_open", HeldReason(*holding), s.ns_scope);
    return out;
  }

  auto record = std::make_shared<Record>();
  record->at = now;
  record->node = s.node;
  record->image = s.image;
  record->signature = s.signature;
  record->workload = s.workload;
  record->config_refs = s.config_refs;

  // What trips, most general first.
  std::string trip_scope, trip_cluster, trip_ns, figures;
  const Window* trip_window = nullptr;

  Window* cluster_window = nullptr;
  if (bc.cluster_incidents > 0) {
    const int limit = std::min(bc.cluster_incidents, kMaxWindowIncidents);
    cluster_window = &st.cluster_windows.Touch(s.cluster);
    cluster_window->cluster = s.cluster;
    cluster_window->Add(record, now, bc.window, static_cast<size_t>(limit));
    if (static_cast<int>(cluster_window->records.size()) >= limit) {
      trip_scope = s.cluster;
      trip_cluster = s.cluster;
      trip_window = cluster_window;
      figures =
          absl::StrCat(cluster_window->records.size(), " incidents in cluster ",
                       s.cluster, " within ", absl::FormatDuration(bc.window),
                       " (limit ", bc.cluster_incidents, ")");
    }
  }
  const int ns_limit = std::min(bc.namespace_incidents, kMaxWindowIncidents);
  Window& ns_window = st.namespace_windows.Touch(s.ns_scope);
  ns_window.cluster = s.cluster;
  ns_window.ns = s.ns;
  ns_window.Add(
      record, now, bc.window,
      static_cast<size_t>(std::min(std::max(ns_limit, kMinNamespaceWindow),
                                   kMaxWindowIncidents)));
  if (trip_window == nullptr && ns_limit > 0 &&
      static_cast<int>(ns_window.records.size()) >= ns_limit) {
    trip_scope = s.ns_scope;
    trip_cluster = s.cluster;
    trip_ns = s.ns;
    trip_window = &ns_window;
    figures =
        absl::StrCat(ns_window.records.size(), " incidents in namespace ",
                     s.ns_scope, " within ", absl::FormatDuration(bc.window),
                     " (limit ", bc.namespace_incidents, ")");
  }
  if (bc.workload_min_pods > 0 && !s.workload_scope.empty() && !s.pod.empty()) {
    WorkloadPods& wp = st.workloads.Touch(s.workload_scope);
    wp.cluster = s.cluster;
    wp.ns = s.ns;
    wp.Add(s.pod, now, bc.window);
    int64_t needed = bc.workload_min_pods;
    if (s.replicas > 0) {
      needed = std::max<int64_t>(
          needed, static_cast<int64_t>(
                      std::ceil(bc.workload_share * s.replicas - 1e-9)));
    }
    needed = std::min<int64_t>(needed, kMaxPodsPerWorkload);
    const int64_t failing = static_cast<int64_t>(wp.pods.size());
    if (trip_window == nullptr && failing >= needed) {
      trip_scope = s.ns_scope;
      trip_cluster = s.cluster;
      trip_ns = s.ns;
      trip_window = &ns_window;
      figures = absl::StrCat(
          failing, " distinct pods of ", s.workload, " in ", s.ns_scope,
          " failing within ", absl::FormatDuration(bc.window),
          s.replicas > 0 ? absl::StrCat(" of ", s.replicas, " replicas")
                         : std::string(" (replicas unknown)"),
          " (limit: at least ", bc.workload_min_pods, " pods",
          s.replicas > 0
              ? absl::StrCat(" and ", FormatNumber(bc.workload_share * 100),
                             "% of replicas")
              : std::string(),
          ")");
    }
  }
  if (trip_window == nullptr) {
    out.decision = Decision(
        PolicyDecision::VERDICT_ALLOW, mode.mode, "allowed",
        absl::StrCat("incident in ", s.ns_scope, " admitted (mode ",
                     PolicyModeName(mode.mode), ", ", mode.source, ")"),
        s.ns_scope);
    return out;
  }

  Cause cause = SuspectedCause(trip_window->records);
  OpenBreaker b;
  b.cluster = trip_cluster;
  b.ns = trip_ns;
  b.state.set_scope(trip_scope);
  *b.state.mutable_tripped_at() = ToProto(now);
  b.state.set_incidents(static_cast<int32_t>(trip_window->records.size()));
  *b.state.mutable_window() = ToProto(bc.window);
  b.state.set_suspected_cause(cause.suspected);
  b.state.add_evidence(figures);
  for (std::string& e : cause.evidence) b.state.add_evidence(std::move(e));
  b.state.set_workflow_id(s.workflow_id);
  b.state.set_held_incidents(0);
  out.tripped = b.state;
  out.held_by_breaker = true;
  out.decision = Decision(
      PolicyDecision::VERDICT_ALLOW, mode.mode, "breaker_open",
      absl::StrCat("this incident tripped the blast-radius breaker for ",
                   trip_scope, ": ", figures,
                   "; suspected cause: ", cause.suspected,
                   ". Automation is held there until a human clears it"),
      s.ns_scope);
  st.open.emplace(trip_scope, std::move(b));
  return out;
}

PolicyDecision Policy::CheckAction(const IncidentScope& incident,
                                   const v1::Action& action,
                                   bool requested_dry_run) {
  const Scope s = Normalize(incident, config_);
  const ModeSource mode = ResolveMode(config_, s.cluster, s.ns);
  auto decide = [&](PolicyDecision::Verdict verdict, absl::string_view rule,
                    std::string reason, absl::string_view scope) {
    PolicyDecision d =
        Decision(verdict, mode.mode, rule, std::move(reason), scope);
    *d.mutable_action() = action;
    return d;
  };
  if (std::string why = NamespaceDenial(config_, s); !why.empty()) {
    return decide(PolicyDecision::VERDICT_DENY, "namespace_denied",
                  std::move(why), s.ns_scope);
  }
  if (action.type() == v1::ACTION_TYPE_UNSPECIFIED ||
      !v1::ActionType_IsValid(action.type())) {
    return decide(PolicyDecision::VERDICT_DENY, "invalid_action",
                  absl::StrCat("action type ", static_cast<int>(action.type()),
                               " is not in the catalog"),
                  s.ns_scope);
  }
  if (mode.mode == v1::POLICY_MODE_OFF) {
    return decide(PolicyDecision::VERDICT_DENY, "mode_off",
                  absl::StrCat("mode off for ", s.ns_scope, " (", mode.source,
                               "): nothing is automated there"),
                  s.ns_scope);
  }
  const absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  State& st = *state_;
  if (st.open.size() >= kMaxOpenBreakers) {
    return decide(PolicyDecision::VERDICT_DENY, "breaker_open",
                  FailClosedReason(), s.ns_scope);
  }
  if (const OpenBreaker* b = HoldingBreaker(st.open, s); b != nullptr) {
    return decide(PolicyDecision::VERDICT_DENY, "breaker_open", HeldReason(*b),
                  b->state.scope());
  }
  if (mode.mode == v1::POLICY_MODE_SHADOW) {
    return decide(
        PolicyDecision::VERDICT_SHADOW, "mode_shadow",
        absl::StrCat("mode shadow for ", s.ns_scope, " (", mode.source,
                     "): the action is recorded, not executed"),
        s.ns_scope);
  }
  if (mode.mode == v1::POLICY_MODE_DRY_RUN) {
    return decide(
        PolicyDecision::VERDICT_DRY_RUN, "mode_dry_run",
        absl::StrCat("mode dry-run for ", s.ns_scope, " (", mode.source,
                     "): the action is validated, not executed"),
        s.ns_scope);
  }
  if (requested_dry_run) {
    return decide(PolicyDecision::VERDICT_DRY_RUN, "requested_dry_run",
                  absl::StrCat("a dry run was requested for ", s.ns_scope,
                               ": the action is validated, not executed"),
                  s.ns_scope);
  }
  const std::string described =
      absl::StrCat(v1::ActionType_Name(action.type()), " in ", s.ns_scope);
  if (action.type() == v1::ACTION_TYPE_UNDO) {
    return decide(PolicyDecision::VERDICT_ALLOW, "allowed",
                  absl::StrCat(described,
                               " allowed (undo is exempt from rate limits "
                               "and freeze windows)"),
                  s.ns_scope);
  }
  for (const FreezeWindow& w : config_.freeze_windows) {
    absl::Time end;
    if (!FreezeApplies(w, s) || !FreezeActive(w, now, &end)) continue;
    return decide(
        PolicyDecision::VERDICT_DENY, "freeze_window",
        absl::StrCat("freeze window \"", w.name, "\" is in force for ",
                     s.ns_scope, " until ", FormatTimeUtc(end), " (in ",
                     FormatWait(end - now),
                     "): no change runs there until then (undo excepted)"),
        s.ns_scope);
  }

  // Rate limits: every bucket must hold a token before any is taken.
  struct Check {
    const RateLimit* limit;
    Bucket* bucket;
    const char* rule;
    std::string scope, name;
  };
  std::vector<Check> checks;
  const std::string workload_scope =
      s.workload_scope.empty() ? absl::StrCat(s.ns_scope, "/Pod/", s.pod)
                               : s.workload_scope;
  const std::string workload_name = absl::StrCat(
      s.workload.empty() ? absl::StrCat("Pod/", s.pod) : s.workload);
  if (config_.per_workload.per_hour > 0) {
    // "Deployment payments/web in cluster prod".
    const size_t slash = workload_name.find('/');
    checks.push_back({&config_.per_workload,
                      &st.workload_buckets.Touch(workload_scope),
                      "rate_limit_workload", workload_scope,
                      absl::StrCat(workload_name.substr(0, slash), " ", s.ns,
                                   "/", workload_name.substr(slash + 1),
                                   " in cluster ", s.cluster)});
  }
  if (config_.per_namespace.per_hour > 0) {
    checks.push_back({&config_.per_namespace,
                      &st.namespace_buckets.Touch(s.ns_scope),
                      "rate_limit_namespace", s.ns_scope,
                      absl::StrCat("namespace ", s.ns_scope)});
  }
  if (config_.per_cluster.per_hour > 0) {
    checks.push_back(
        {&config_.per_cluster, &st.cluster_buckets.Touch(s.cluster),
         "rate_limit_cluster", s.cluster, absl::StrCat("cluster ", s.cluster)});
  }
  for (Check& c : checks) c.bucket->Refill(*c.limit, now);
  for (const Check& c : checks) {
    if (c.bucket->HasToken()) continue;
    return decide(
        PolicyDecision::VERDICT_DENY, c.rule,
        absl::StrCat("rate limit for ", c.name, ": ", c.bucket->LastHour(now),
                     " actions in the last hour (limit ",
                     FormatNumber(c.limit->per_hour), "/h, burst ",
                     FormatNumber(std::max(1.0, c.limit->burst)), "); next in ",
                     FormatWait(c.bucket->NextToken(*c.limit))),
        c.scope);
  }
  for (Check& c : checks) c.bucket->Take(now);
  return decide(
      PolicyDecision::VERDICT_ALLOW, "allowed",
      absl::StrCat(described, " allowed (mode enforce, ", mode.source, ")"),
      s.ns_scope);
}

std::vector<v1::BreakerState> Policy::OpenBreakers() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::BreakerState> out;
  out.reserve(state_->open.size());
  for (const auto& [scope, b] : state_->open) out.push_back(b.state);
  return out;
}

absl::Status Policy::ClearBreaker(absl::string_view scope) {
  if (scope.empty()) {
    return absl::InvalidArgumentError("scope: must not be empty");
  }
  absl::MutexLock lock(&mu_);
  State& st = *state_;
  auto it = st.open.find(std::string(scope));
  if (it == st.open.end()) {
    return absl::NotFoundError(absl::StrCat(
        "scope: no blast-radius breaker is open for \"", Clean(scope), "\""));
  }
  const std::string cluster = it->second.cluster;
  const std::string ns = it->second.ns;
  st.open.erase(it);
  // The window starts afresh: the burst that tripped it does not re-trip.
  auto in_scope = [&](const auto& v) {
    return v.cluster == cluster && (ns.empty() || v.ns == ns);
  };
  if (ns.empty()) st.cluster_windows.Erase(cluster);
  st.namespace_windows.EraseIf(in_scope);
  st.workloads.EraseIf(in_scope);
  return absl::OkStatus();
}

std::vector<v1::BreakerState> Policy::SnapshotBreakers() const {
  return OpenBreakers();
}

void Policy::RestoreBreakers(const std::vector<v1::BreakerState>& open) {
  absl::MutexLock lock(&mu_);
  State& st = *state_;
  for (const v1::BreakerState& in : open) {
    if (in.scope().empty()) continue;
    OpenBreaker b;
    b.state = in;
    RepairUtf8(&b.state);
    const std::string& scope = b.state.scope();
    // Namespaces hold no '/': the last one separates cluster and namespace.
    const size_t slash = scope.rfind('/');
    if (slash == std::string::npos) {
      b.cluster = scope;
    } else {
      b.cluster = scope.substr(0, slash);
      b.ns = scope.substr(slash + 1);
    }
    if (st.open.count(scope) == 0 && st.open.size() >= kMaxOpenBreakers) {
      continue;
    }
    st.open[scope] = std::move(b);
  }
}

size_t Policy::TrackedScopes() const {
  absl::MutexLock lock(&mu_);
  const State& st = *state_;
  return st.cluster_windows.size() + st.namespace_windows.size() +
         st.workloads.size() + st.workload_buckets.size() +
         st.namespace_buckets.size() + st.cluster_buckets.size();
}

}  // namespace reflexion::core

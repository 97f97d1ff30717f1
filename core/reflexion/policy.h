#pragma once

// The safety policy: before every automated action on a cluster, whether it
// may run. Namespace allow/deny lists, a mode per cluster and namespace
// (enforce, dry-run, shadow, off), token-bucket rate limits per workload,
// namespace and cluster, a blast-radius breaker per namespace and cluster,
// and freeze windows. Pure and deterministic: time comes only from the
// injected Clock, nothing is done, only decided.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/clock.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// A token bucket: `burst` actions at once, refilled at `per_hour`.
struct RateLimit {
  double per_hour = 0;  // 0 = unlimited
  double burst = 0;     // bucket size; values below 1 count as 1
};

// A period in which no mutating action runs (undo excepted).
struct FreezeWindow {
  std::string name;
  // Weekly (when `from`/`until` are unset): starts on each day in `days`
  // (bit i = weekday i, 0 = Sunday) at `start_minute` (minute of the day,
  // UTC) and lasts `duration` (it may cross midnight and the week's end).
  uint8_t days = 0;
  int start_minute = 0;
  absl::Duration duration;
  // Absolute: [from, until). Both set, or neither.
  std::optional<absl::Time> from, until;
  // Where it applies; empty = everywhere. A namespace entry is "ns" (in any
  // cluster) or "cluster/ns".
  std::vector<std::string> clusters, namespaces;
};

struct BreakerConfig {
  // The sliding window incidents are counted over.
  absl::Duration window = absl::Minutes(10);
  // Incidents in one cluster/namespace within window → trip (0 = off).
  int namespace_incidents = 20;
  // Incidents in one cluster within window → trip (0 = off).
  int cluster_incidents = 60;
  // Failing share of a workload's pods (when replicas are known) → trip the
  // namespace ...
  double workload_share = 0.5;
  // ... and at least this many distinct failing pods (0 = off).
  int workload_min_pods = 3;
};

struct PolicyConfig {
  // Empty = every namespace not denied. Entries "ns" or "cluster/ns".
  std::vector<std::string> allow_namespaces;
  // Entries "ns" or "cluster/ns".
  std::vector<std::string> deny_namespaces = {"kube-system", "kube-public"};
  // Always denied (the service's own), whatever the lists say.
  std::string own_namespace = "reflexion";
  v1::PolicyMode mode = v1::POLICY_MODE_ENFORCE;     // default
  std::map<std::string, v1::PolicyMode> clusters;    // cluster -> mode
  std::map<std::string, v1::PolicyMode> namespaces;  // "ns" or "cluster/ns"
  RateLimit per_workload{6, 3}, per_namespace{30, 10}, per_cluster{120, 30};
  BreakerConfig breaker;
  std::vector<FreezeWindow> freeze_windows;
  // Cluster of incidents not from an agent session (empty `cluster`).
  std::string default_cluster = "local";
  // The server's built-in simulated cluster (executor.type simulated, the
  // default) is exempt from rate limits and blast-radius breakers unless
  // this is set (policy.limit_simulated): nothing real is touched there, and
  // the demo and load drivers push far more incidents than a cluster would.
  // Namespace lists, modes and freeze windows apply to it as to any cluster.
  // Read by the server's wiring, not by Policy.
  bool limit_simulated = false;
};

// What the policy knows about an incident. Strings are untrusted: they are
// made valid UTF-8 and clipped (256 bytes each, 16 config refs) before they
// are kept or put into a reason.
struct IncidentScope {
  std::string cluster;     // "" = PolicyConfig::default_cluster
  std::string namespace_;  // "" = "default"
  std::string pod, workload_kind, workload_name, signature, node;
  // ConfigMaps/Secrets the pod references ("ConfigMap/x").
  std::vector<std::string> config_refs;
  std::string image;
  int replicas = 0;  // the workload's desired replicas, 0 = unknown
  // The incident's workflow: recorded as BreakerState.workflow_id when this
  // incident trips a breaker (it becomes the aggregated escalation).
  std::string workflow_id;
};

struct Admission {
  // VERDICT_ALLOW (rule "allowed", or "breaker_open" when held), or
  // VERDICT_DENY (rule "namespace_denied" or "mode_off"): the caller answers
  // PERMISSION_DENIED and runs nothing.
  v1::PolicyDecision decision;
  // Set once, on the incident that tripped a breaker.
  std::optional<v1::BreakerState> tripped;
  // A breaker is open for the incident's scope (it may be the one this
  // incident tripped): automation stops, the incident goes to a human.
  bool held_by_breaker = false;
};

// The policy engine. Thread-safe (one mutex; every call is short and does no
// I/O). `clock` is not owned and must outlive the Policy. The config is
// expected to be validated (server/policy_config.h); numbers out of the
// ranges documented there are clamped, never trusted.
//
// Bounds (each structure that grows with traffic):
//  - breaker windows per cluster, per cluster/namespace and failing-pod sets
//    per workload: at most kMaxTrackedScopes each; at the bound the least
//    recently used is evicted (it comes back empty, so a scope idle for
//    longest loses its count). Each window keeps at most its trip
//    threshold of incidents (clamped to kMaxWindowIncidents); a workload at
//    most kMaxPodsPerWorkload failing pods (the oldest goes first; a
//    workload needing more to trip trips at that many);
//  - rate buckets per workload, namespace and cluster: at most
//    kMaxTrackedScopes each, least recently used evicted (an evicted bucket
//    comes back full: only scopes idle for longest lose their debt);
//  - open breakers: at most kMaxOpenBreakers. Open breakers are never
//    evicted: when that many are open the policy fails closed, every
//    incident is held and every action denied ("breaker_open") until a human
//    clears some.
class Policy {
 public:
  static constexpr size_t kMaxTrackedScopes = 10'000;
  static constexpr size_t kMaxOpenBreakers = 10'000;
  static constexpr int kMaxWindowIncidents = 10'000;
  static constexpr size_t kMaxPodsPerWorkload = 1'000;

  Policy(PolicyConfig config, const Clock* clock);
  ~Policy();
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

  // An incident arrives. Denied namespace or mode off → VERDICT_DENY (the
  // caller answers PERMISSION_DENIED and runs nothing). Otherwise counts it
  // for the breakers (incidents held by an open breaker are not counted);
  // returns `tripped` when this incident trips one (exactly once per trip;
  // a cluster trip wins over a namespace trip on the same incident),
  // `held_by_breaker` when one is open (a cluster breaker holds every
  // namespace of its cluster), and counts the held incident in that
  // breaker's `held_incidents`.
  Admission Admit(const IncidentScope& incident);

  // Before each action. In order: namespace denied ("namespace_denied");
  // mode off ("mode_off"); an open breaker for the namespace or cluster
  // ("breaker_open"); the mode (most specific wins: cluster/ns > ns >
  // cluster > default; a request for a dry run gets at most a dry run,
  // shadow stays shadow): VERDICT_DRY_RUN ("mode_dry_run",
  // "requested_dry_run") or VERDICT_SHADOW ("mode_shadow"), which execute
  // nothing and so take no token; then, except for ACTION_TYPE_UNDO, a
  // freeze window ("freeze_window", the reason names it and when it ends)
  // and the rate limits per workload, namespace, cluster (token buckets;
  // "rate_limit_workload", "rate_limit_namespace", "rate_limit_cluster",
  // the reason says when the next token comes). An ALLOW takes one token
  // from each bucket. An action of no catalog type is denied
  // ("invalid_action"). Tier C is not the policy's business.
  v1::PolicyDecision CheckAction(const IncidentScope& incident,
                                 const v1::Action& action,
                                 bool requested_dry_run);

  // The mode in force for a namespace of a cluster ("" = default cluster).
  v1::PolicyMode ModeFor(absl::string_view cluster, absl::string_view ns) const;

  // The open breakers, ordered by scope.
  std::vector<v1::BreakerState> OpenBreakers() const;

  // A human clears a breaker ("cluster" or "cluster/namespace"): automation
  // resumes in its scope, and its windows start afresh (a cluster's clear
  // also empties the windows of its namespaces), so the same burst does not
  // re-trip at once. kInvalidArgument for an empty scope, kNotFound when no
  // breaker is open for it.
  absl::Status ClearBreaker(absl::string_view scope);

  // Open breakers survive a restart: the caller persists this snapshot and
  // restores it at start. RestoreBreakers adds (or replaces, by scope) the
  // given breakers; entries with an empty scope are skipped, at most
  // kMaxOpenBreakers are kept.
  std::vector<v1::BreakerState> SnapshotBreakers() const;
  void RestoreBreakers(const std::vector<v1::BreakerState>& open);

  // How many scopes the breaker windows and rate buckets track now (all
  // kinds together; at most 6 * kMaxTrackedScopes). For tests and metrics.
  size_t TrackedScopes() const;

  const PolicyConfig& config() const { return config_; }

 private:
  struct State;
  const PolicyConfig config_;
  const Clock* const clock_;
  mutable absl::Mutex mu_;
  std::unique_ptr<State> state_ ABSL_GUARDED_BY(mu_);
};

// "enforce", "dry-run", "shadow", "off" (and "unspecified").
absl::string_view PolicyModeName(v1::PolicyMode mode);
// The inverse of PolicyModeName for the four valid modes.
bool ParsePolicyMode(absl::string_view name, v1::PolicyMode* mode);

}  // namespace reflexion::core

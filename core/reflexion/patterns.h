#pragma once

// Patterns across incidents (ListPatterns), computed on read from what the
// service stores: error-namespace correlations, temporal bursts, strategy
// effectiveness with Beta credible intervals, and anomalies. Pure functions
// of plain inputs (no store, no clock): the server gathers the inputs and
// passes `now`. The rules are documented in reflexion.proto
// (ListPatternsResponse and its item messages) and restated here.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "reflexion/v1/reflexion.pb.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// ---------------------------------------------------------------------------
// The Beta distribution.
// ---------------------------------------------------------------------------

// The regularized incomplete beta function I_x(a, b) = P(X <= x) for
// X ~ Beta(a, b), by the continued fraction of Numerical Recipes (modified
// Lentz, using the symmetry I_x(a,b) = 1 - I_{1-x}(b,a) where the fraction
// converges slowly). Absolute error below 1e-12 for a, b up to about 1e3;
// lgamma's rounding makes it about 1e-10 at 1e5 and 1e-9 at 1e6.
// Requires finite a > 0, b > 0 (CHECKed: callers pass posteriors); x is
// clamped to [0, 1]. Pure, thread-safe.
double RegularizedIncompleteBeta(double a, double b, double x);

// The p-quantile of Beta(a, b): the x in [0, 1] with I_x(a, b) = p, by
// bisection on RegularizedIncompleteBeta to an interval below 1e-12 (the
// CDF is continuous and increasing, so bisection always converges). p is
// clamped to [0, 1]; 0 gives 0 and 1 gives 1. Same requirements on a, b.
double BetaQuantile(double a, double b, double p);

// ---------------------------------------------------------------------------
// Rules (also in reflexion.proto).
// ---------------------------------------------------------------------------

// Bursts: count >= max(min_count, expected + kBurstSigmas * sqrt(expected)).
inline constexpr double kBurstSigmas = 3.0;
// Slow resolution: the baseline is the up to kSlowHistory most recent
// earlier successful episodes of the signature, at least kSlowMinHistory of
// them; slow when time_to_recovery_s > max(median + kSlowMadFactor * 1.4826
// * MAD, kSlowMedianFactor * median), with median > 0.
inline constexpr int kSlowMinHistory = 5;
inline constexpr int kSlowHistory = 50;
inline constexpr double kSlowMadFactor = 3.0;
inline constexpr double kMadToSigma = 1.4826;
inline constexpr double kSlowMedianFactor = 3.0;
// Strategy drop: the last kDropRecent episodes of a (signature, strategy)
// against the earlier ones, at least kDropMinEarlier of them; a drop when
// the kDropUpperQuantile quantile of Beta(1 + recent successes, 1 + recent
// failures) < (1 + earlier successes) / (2 + earlier attempts).
inline constexpr int kDropRecent = 10;
inline constexpr int kDropMinEarlier = 10;
inline constexpr double kDropUpperQuantile = 0.95;
// Effectiveness: the equal-tailed interval between these quantiles (90%).
inline constexpr double kIntervalLower = 0.05;
inline constexpr double kIntervalUpper = 0.95;
// What the server reads at most (documented in ListPatternsResponse): the
// most recently updated workflow records and the newest episodes.
inline constexpr int64_t kMaxPatternWorkflows = 100000;
inline constexpr int64_t kMaxPatternEpisodes = 100000;

// Request defaults and bounds.
inline constexpr int kDefaultPatternMinCount = 5;
inline constexpr int kMaxPatternMinCount = 1000000;
inline constexpr int kDefaultPatternLimit = 50;
inline constexpr int kMaxPatternLimit = 1000;

// ---------------------------------------------------------------------------
// Inputs and options.
// ---------------------------------------------------------------------------

// One stored workflow record, as much as the patterns need (the server
// reads it from the record's latest checkpoint, WorkflowState).
struct WorkflowSummary {
  std::string workflow_id;
  // WorkflowState.started_at (when the incident was admitted).
  absl::Time time = absl::InfinitePast();
  // WorkflowState.incident.namespace.
  std::string namespace_name;
  // WorkflowState.cluster (else the session's); "" = the default cluster.
  std::string cluster;
  // The reported error type (used for the family when not analysed yet).
  std::string error_type;
  // WorkflowState.analysis.signature; "" when the workflow was not
  // analysed (it then has a family but no signature).
  std::string signature;
};

// The validated request, with `now`.
struct PatternOptions {
  // Filters ("" = any); see ListPatternsRequest.
  std::string signature;
  std::string namespace_name;
  std::string cluster;
  int min_count = kDefaultPatternMinCount;
  absl::Duration window = absl::Minutes(10);
  int limit = kDefaultPatternLimit;
  // Zero: no lookback bound.
  absl::Duration lookback = absl::ZeroDuration();
  reflexion::v1::ListPatternsRequest::Grouping correlate_by =
      reflexion::v1::ListPatternsRequest::GROUPING_FAMILY;
  // The time of the computation (the server's clock).
  absl::Time now = absl::UnixEpoch();
  // The cluster of an episode or workflow recorded without one.
  std::string default_cluster = "default";
};

// Checks `request` and returns its options (defaults filled in, `now` and
// `default_cluster` set). kInvalidArgument naming the field: signature over
// 256 bytes, not UTF-8 or with NUL; namespace or cluster not a DNS-1123
// label; min_count outside 0..1000000; window negative, over 7 days, under
// a second (when set), or not a valid Duration; limit outside 0..1000;
// lookback negative, over 3650 days or invalid; correlate_by unknown.
absl::StatusOr<PatternOptions> PatternOptionsFromRequest(
    const reflexion::v1::ListPatternsRequest& request, absl::Time now,
    absl::string_view default_cluster);

// What ComputePatterns reads. The caller filters nothing but the principal's
// scope (ComputePatterns applies the request's filters).
struct PatternInputs {
  // Episodes in any order (sorted by (time, id) inside).
  std::vector<reflexion::v1::Episode> episodes;
  // Stored workflow records; an episode whose workflow_id is here belongs
  // to that incident, any other workflow id among episodes is an incident
  // of its own.
  std::vector<WorkflowSummary> workflows;
  // The stored posteriors (KnowledgeStore::GetStats("")) when the caller has
  // no scope; nullopt: effectiveness always counts episodes. They are used
  // only without namespace, cluster and lookback filters.
  std::optional<std::vector<reflexion::v1::StrategyStats>> stats;
  // Set when the server read fewer than were stored (copied to the
  // response).
  bool workflows_capped = false;
  bool episodes_capped = false;
};

// Computes every section of ListPatternsResponse (rules in its comments and
// above), each sorted as documented and cut to options.limit items with the
// count before the cut in *_found. Deterministic: ties are broken by name
// and id. Time and memory are linear in the inputs but for sorting (and
// kSlowHistory per successful episode). Pure, thread-safe.
reflexion::v1::ListPatternsResponse ComputePatterns(
    const PatternInputs& inputs, const PatternOptions& options);

// The family of a signature: its part before the first '/' (the whole
// string when there is none).
std::string SignatureFamily(absl::string_view signature);

}  // namespace reflexion::core

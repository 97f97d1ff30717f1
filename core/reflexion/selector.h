#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/reflexion/catalog.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// What select_strategy may do when a choice is uncertain.
struct SelectorOptions {
  // Posterior mean at or above which a choice counts as confident
  // (reflexion.strategy_confidence_threshold).
  double confidence_threshold = 0.7;
  // Below the threshold: true = escalate to a human, false = run the
  // (tier A/B) choice as exploration (reflexion.below_threshold: escalate |
  // explore) ...
  bool escalate_below_threshold = false;
  // ... or run it once a human approves it (reflexion.below_threshold: ask).
  bool ask_below_threshold = false;
  // reflexion.tier_c: escalate (false) = tier C is only recommended when
  // the incident is escalated | ask (true) = a tier-C candidate that beats
  // the best eligible one by tier_c_margin waits for a human's approval.
  bool ask_tier_c = false;
  // When every eligible candidate's mean is below this, nothing confident is
  // left and the incident is escalated (reflexion.min_candidate_confidence).
  double min_candidate_confidence = 0.1;
  // With ask_tier_c: a tier-C candidate whose mean beats the best eligible
  // one by this margin is offered for approval. Without it tier C only
  // shapes the recommendation of an escalation; it never decides one.
  double tier_c_margin = 0.2;
  // Escalation is a decision with a cost. One more attempt with the best
  // eligible candidate (posterior mean p, tier t) costs
  //   (1 - p) * cost_failed_attempt + BlastRisk(t)
  // and saves p * cost_escalation (a failed attempt still ends with a
  // human): the selector escalates at once when the saving does not cover
  // the cost. The posteriors are the signature's history, so a cause that
  // nothing automated fixes stops being tried once its means fall.
  // reflexion.cost_failed_attempt / reflexion.cost_escalation, both > 0.
  // With the defaults a tier-A attempt is worth it from p > 1/3 (tier B
  // 0.37): bench/learning measured 2 against 3 (README there).
  double cost_failed_attempt = 1.0;
  double cost_escalation = 2.0;
  // Discounting for drift (reflexion.posterior_half_life; zero = off): the
  // evidence in a stored posterior counts half after this long without an
  // update, i.e. alpha = prior + (alpha - prior) * 0.5^(age / half_life).
  absl::Duration posterior_half_life = absl::ZeroDuration();
  // The time the ages above are measured at (set by the caller from its
  // Clock; InfinitePast = no discounting).
  absl::Time now = absl::InfinitePast();
  // Conservative exploration (reflexion.critical_namespaces,
  // reflexion.critical_margin): in these namespaces a candidate whose lower
  // credible bound (5% quantile, normal approximation of the Beta) is below
  // the best lower bound by more than critical_margin is not tried.
  std::vector<std::string> critical_namespaces;
  double critical_margin = 0.1;
  // The signature's retry record (StrategyStats.retry_trials/successes
  // summed over its strategies) speaks for one more attempt after a failed
  // one once it holds at least this many retries
  // (reflexion.min_retry_trials; 0 = never): the escalation decision then
  // uses the lower of the best candidate's mean and the record's posterior
  // mean (1 + successes) / (2 + trials), so a signature whose retries keep
  // failing is handed to a human after its first failed attempt.
  int min_retry_trials = 3;
};

// Blast risk of one attempt at `tier`, in units of cost_failed_attempt:
// tier A (delete, roll back) 0, tier B (bounded spec changes) 0.1; tier C
// is never automated.
double BlastRisk(reflexion::v1::SafetyTier tier);

// The 5% lower credible bound of Beta(a, b), normal approximation, clamped
// to [0, 1].
double LowerCredibleBound(double a, double b);

struct SelectionOutcome {
  // Set when a strategy was chosen (selection.needs_approval says whether a
  // human must approve it first).
  bool chosen = false;
  reflexion::v1::StrategySelection selection;
  // Set when the incident must go to a human instead.
  std::string escalation_reason;
  reflexion::v1::Action recommended_action;  // may be unset
};

// What one strategy did on the related signatures (summed StrategyStats),
// for the hierarchical prior.
struct RelatedRecord {
  int64_t trials = 0;
  int64_t successes = 0;
};
// By strategy name.
using RelatedRecords = absl::flat_hash_map<std::string, RelatedRecord>;

// At most this many pseudo-trials are borrowed from related signatures.
inline constexpr double kMaxBorrowedTrials = 4;

// The prior of (analysis' signature, strategy): the catalog's (PriorFor);
// where the catalog knows nothing of the cause for this strategy (only its
// family table speaks, HasCausePrior is false), it borrows strength from
// the same strategy on the related signatures (empirical Bayes):
// min(trials, kMaxBorrowedTrials) pseudo-trials at their success rate
// (successes + 0.5) / (trials + 1) are added to the catalog's.
Prior HierarchicalPrior(const reflexion::v1::Analysis& analysis,
                        absl::string_view strategy,
                        const RelatedRecords& related);

// Sums the StrategyStats of the signatures related to `analysis`' one: the
// same cause reported under another family (an init container's
// OOMKilled/... and a container's, a segfault in a crash loop and one seen
// as Error). Signatures of one family with other causes are not related (a
// probe fix says nothing about a segfault), nor is an unclassified cause.
RelatedRecords RelatedRecordsOf(
    const reflexion::v1::Analysis& analysis,
    const std::vector<reflexion::v1::StrategyStats>& all_stats);

// Parameters proposed for a strategy already tried in this workflow (the
// reflection on its attempt said the lever is right and the raise too
// small): the strategy may be tried once more with them.
struct RetryWith {
  reflexion::v1::StrategyParams params;  // clamped by the catalog
  std::string reason;                    // for StrategyCandidate.params_source
};

// Deterministic 64-bit FNV-1a, stable across runs and platforms.
uint64_t StableHash(absl::string_view text, uint64_t seed = 0);

// Thompson sampling over Beta posteriors of success per (signature,
// strategy). `strategies` holds the latest version of every strategy by
// name; `stats` the stored posteriors of the analysis' signature by
// strategy name (absent ones start from HierarchicalPrior with `family`); a
// posterior's tuned_params replace its version's parameters in the action while
// that version is current (tuned_version). Strategies in `tried` are not chosen
// again unless `retry` names them (then with the retry's parameters), nor those
// in `excluded` (name -> why, e.g. the agent does not execute its action). Tier
// C is chosen only with options.ask_tier_c, and then needs approval; otherwise
// the best tier-C candidate is only recommended when the incident is escalated.
// The incident is escalated when nothing is eligible, when the best mean is
// below min_candidate_confidence, or when escalating costs less than one
// more attempt (see cost_escalation). The draw is seeded by `rng_seed`, so a
// given state always selects the same way. Pure; thread-compatible.
SelectionOutcome SelectStrategy(
    const reflexion::v1::Analysis& analysis,
    const reflexion::v1::Incident& incident,
    const reflexion::v1::Diagnosis& diagnosis,
    const absl::flat_hash_map<std::string, reflexion::v1::Strategy>& strategies,
    const absl::flat_hash_map<std::string, reflexion::v1::StrategyStats>& stats,
    const std::vector<std::string>& tried, int attempt,
    absl::string_view idempotency_key, uint64_t rng_seed,
    const SelectorOptions& options,
    const absl::flat_hash_map<std::string, std::string>& excluded = {},
    const absl::flat_hash_map<std::string, RetryWith>& retry = {},
    const RelatedRecords& family = {});

}  // namespace reflexion::core

#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
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
  // A tier-C candidate that beats the best eligible one by tier_c_margin:
  // false = escalate with it as the recommended action, true = ask a human
  // to approve running it (reflexion.tier_c: escalate | ask).
  bool ask_tier_c = false;
  // When every eligible candidate's mean is below this, nothing confident is
  // left and the incident is escalated (reflexion.min_candidate_confidence).
  double min_candidate_confidence = 0.1;
  // A tier-C candidate whose mean beats the best eligible one by this margin
  // is escalated as the recommended action.
  double tier_c_margin = 0.2;
};

struct SelectionOutcome {
  // Set when a strategy was chosen (selection.needs_approval says whether a
  // human must approve it first).
  bool chosen = false;
  reflexion::v1::StrategySelection selection;
  // Set when the incident must go to a human instead.
  std::string escalation_reason;
  reflexion::v1::Action recommended_action;  // may be unset
};

// Deterministic 64-bit FNV-1a, stable across runs and platforms.
uint64_t StableHash(absl::string_view text, uint64_t seed = 0);

// Thompson sampling over Beta posteriors of success per (signature,
// strategy). `strategies` holds the latest version of every strategy by
// name; `stats` the stored posteriors of the analysis' signature by
// strategy name (absent ones start from the catalog prior). Strategies in
// `tried` are not chosen again, nor those in `excluded` (name -> why, e.g.
// the agent does not execute its action). Tier C is chosen only with
// options.ask_tier_c, and then needs approval. The draw is seeded by
// `rng_seed`, so a given state always selects the same way.
SelectionOutcome SelectStrategy(
    const reflexion::v1::Analysis& analysis,
    const reflexion::v1::Incident& incident,
    const reflexion::v1::Diagnosis& diagnosis,
    const absl::flat_hash_map<std::string, reflexion::v1::Strategy>& strategies,
    const absl::flat_hash_map<std::string, reflexion::v1::StrategyStats>& stats,
    const std::vector<std::string>& tried, int attempt,
    absl::string_view idempotency_key, uint64_t rng_seed,
    const SelectorOptions& options,
    const absl::flat_hash_map<std::string, std::string>& excluded = {});

}  // namespace reflexion::core

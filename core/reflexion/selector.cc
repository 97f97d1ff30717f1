#include "core/reflexion/selector.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/time_util.h"

namespace reflexion::core {
namespace {

double SampleBeta(std::mt19937_64& rng, double a, double b) {
  std::gamma_distribution<double> ga(a, 1.0), gb(b, 1.0);
  double x = ga(rng);
  double y = gb(rng);
  if (x + y <= 0) return 0.5;
  return x / (x + y);
}

// The prior plus the stored evidence, discounted by age when a half-life is
// set (the evidence decays, the prior stays).
void Discount(const SelectorOptions& options, const Prior& prior,
              const v1::StrategyStats& st, double& a, double& b) {
  if (options.posterior_half_life <= absl::ZeroDuration() ||
      options.now == absl::InfinitePast() || !st.has_updated_at()) {
    return;
  }
  const double age =
      absl::ToDoubleSeconds(options.now - FromProto(st.updated_at()));
  if (!(age > 0)) return;
  const double w =
      std::exp2(-age / absl::ToDoubleSeconds(options.posterior_half_life));
  a = prior.alpha + std::max(0.0, a - prior.alpha) * w;
  b = prior.beta + std::max(0.0, b - prior.beta) * w;
}

}  // namespace

double BlastRisk(v1::SafetyTier tier) {
  switch (tier) {
    case v1::SAFETY_TIER_A:
      return 0.0;
    case v1::SAFETY_TIER_B:
      return 0.1;
    default:
      return 1.0;
  }
}

double LowerCredibleBound(double a, double b) {
  if (!(a > 0) || !(b > 0)) return 0;
  const double n = a + b;
  const double mean = a / n;
  const double sd = std::sqrt(a * b / (n * n * (n + 1)));
  return std::clamp(mean - 1.645 * sd, 0.0, 1.0);
}

Prior HierarchicalPrior(const v1::Analysis& analysis,
                        absl::string_view strategy,
                        const RelatedRecords& related) {
  Prior p = PriorFor(analysis.error_family(), analysis.cause(), strategy);
  if (HasCausePrior(analysis.error_family(), analysis.cause(), strategy)) {
    return p;
  }
  auto it = related.find(strategy);
  if (it == related.end() || it->second.trials <= 0) return p;
  const double n = static_cast<double>(it->second.trials);
  const double rate =
      (static_cast<double>(it->second.successes) + 0.5) / (n + 1.0);
  const double k = std::min(n, kMaxBorrowedTrials);
  p.alpha += k * rate;
  p.beta += k * (1 - rate);
  return p;
}

RelatedRecords RelatedRecordsOf(const v1::Analysis& analysis,
                                const std::vector<v1::StrategyStats>& all) {
  RelatedRecords out;
  if (analysis.cause().empty() || analysis.cause() == "unclassified") {
    return out;
  }
  const std::string suffix = absl::StrCat("/", analysis.cause());
  for (const v1::StrategyStats& st : all) {
    if (st.signature() == analysis.signature() ||
        !absl::EndsWith(st.signature(), suffix)) {
      continue;
    }
    RelatedRecord& r = out[st.strategy()];
    r.trials += st.trials();
    r.successes += st.successes();
  }
  return out;
}

uint64_t StableHash(absl::string_view text, uint64_t seed) {
  uint64_t h = 1469598103934665603ULL ^ (seed * 0x9E3779B97F4A7C15ULL);
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  // splitmix64 finaliser for better low bits.
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

SelectionOutcome SelectStrategy(
    const v1::Analysis& analysis, const v1::Incident& incident,
    const v1::Diagnosis& diagnosis,
    const absl::flat_hash_map<std::string, v1::Strategy>& strategies,
    const absl::flat_hash_map<std::string, v1::StrategyStats>& stats,
    const std::vector<std::string>& tried, int attempt,
    absl::string_view idempotency_key, uint64_t rng_seed,
    const SelectorOptions& options,
    const absl::flat_hash_map<std::string, std::string>& excluded,
    const absl::flat_hash_map<std::string, RetryWith>& retry,
    const RelatedRecords& family) {
  std::mt19937_64 rng(rng_seed);
  SelectionOutcome out;
  v1::StrategySelection& sel = out.selection;
  sel.set_attempt(attempt);

  struct Eligible {
    const v1::Strategy* strategy;
    v1::Action action;
    double mean;
    double sample;
    int64_t trials;
    double lcb;
    v1::SafetyTier tier;
    v1::StrategyCandidate* cand;
  };
  std::vector<Eligible> eligible;
  const v1::Strategy* best_c = nullptr;
  double best_c_mean = -1;

  for (const std::string& name : StrategiesFor(analysis.error_family())) {
    auto sit = strategies.find(name);
    if (sit == strategies.end()) continue;
    const v1::Strategy& strategy = sit->second;
    Prior prior = HierarchicalPrior(analysis, name, family);
    double a = prior.alpha, b = prior.beta;
    int64_t trials = 0;
    const v1::StrategyParams* tuned = nullptr;
    if (auto st = stats.find(name); st != stats.end()) {
      a = st->second.alpha();
      b = st->second.beta();
      trials = st->second.trials();
      Discount(options, prior, st->second, a, b);
      if (st->second.has_tuned_params() &&
          st->second.tuned_version() == strategy.version()) {
        tuned = &st->second.tuned_params();
      }
    }
    auto again = retry.find(name);
    double mean = a / (a + b);
    v1::StrategyCandidate* cand = sel.add_candidates();
    cand->set_strategy(name);
    cand->set_version(strategy.version());
    cand->set_mean(mean);
    cand->set_trials(trials);
    cand->set_tier(strategy.tier());
    if (auto ex = excluded.find(name); ex != excluded.end()) {
      cand->set_excluded_reason(ex->second);
      continue;
    }
    if (std::find(tried.begin(), tried.end(), name) != tried.end() &&
        again == retry.end()) {
      cand->set_excluded_reason("already tried in this workflow");
      continue;
    }
    const ActionSpec* spec = FindActionByName(name);
    if (spec == nullptr) {
      cand->set_excluded_reason("not in the action catalog");
      continue;
    }
    if (spec->tier == v1::SAFETY_TIER_C) {
      cand->set_excluded_reason("tier C: needs human approval");
      if (mean > best_c_mean) {
        best_c_mean = mean;
        best_c = &strategy;
      }
      continue;
    }
    // The parameters: a raise proposed in this workflow, else those learned
    // for the signature, else the version's.
    v1::Strategy with = strategy;
    if (again != retry.end()) {
      *with.mutable_params() = ClampParams(again->second.params);
      cand->set_params_source(again->second.reason);
    } else if (tuned != nullptr) {
      *with.mutable_params() = ClampParams(*tuned);
      cand->set_params_source(
          absl::StrCat("learned for ", analysis.signature()));
    }
    absl::StatusOr<v1::Action> action =
        BuildAction(with, incident, diagnosis, idempotency_key);
    if (!action.ok()) {
      cand->set_excluded_reason(std::string(action.status().message()));
      continue;
    }
    double sample = SampleBeta(rng, a, b);
    cand->set_sample(sample);
    eligible.push_back({&strategy, *std::move(action), mean, sample, trials,
                        LowerCredibleBound(a, b), spec->tier, cand});
  }

  // Conservative exploration in a critical namespace: only candidates whose
  // lower credible bound is within the margin of the best one's.
  if (std::find(options.critical_namespaces.begin(),
                options.critical_namespaces.end(),
                incident.namespace_()) != options.critical_namespaces.end() &&
      !eligible.empty()) {
    double best_lcb = 0;
    for (const Eligible& e : eligible) best_lcb = std::max(best_lcb, e.lcb);
    std::vector<Eligible> kept;
    for (Eligible& e : eligible) {
      if (e.lcb < best_lcb - options.critical_margin) {
        e.cand->clear_sample();
        e.cand->set_excluded_reason(absl::StrFormat(
            "critical namespace %s: lower credible bound %.2f is more than "
            "%.2f below the best one's %.2f",
            incident.namespace_(), e.lcb, options.critical_margin, best_lcb));
        continue;
      }
      kept.push_back(std::move(e));
    }
    eligible = std::move(kept);
  }

  auto recommend_c = [&]() {
    if (best_c == nullptr) return;
    absl::StatusOr<v1::Action> a =
        BuildAction(*best_c, incident, diagnosis, idempotency_key);
    if (a.ok()) out.recommended_action = *std::move(a);
  };

  // With ask_tier_c: choose the best tier-C candidate, pending approval.
  auto ask_c = [&]() {
    if (!options.ask_tier_c || best_c == nullptr) return false;
    absl::StatusOr<v1::Action> a =
        BuildAction(*best_c, incident, diagnosis, idempotency_key);
    if (!a.ok()) return false;
    out.chosen = true;
    *sel.mutable_strategy() = *best_c;
    *sel.mutable_action() = *std::move(a);
    sel.set_confidence(best_c_mean);
    sel.set_selection_reason("tier_c_approval");
    sel.set_needs_approval(true);
    sel.set_approval_reason(absl::StrFormat(
        "the most likely fix for %s is %s (tier C, %.0f%% expected "
        "success): a human must approve it",
        analysis.signature(), best_c->name(), 100 * best_c_mean));
    return true;
  };

  if (eligible.empty()) {
    if (ask_c()) return out;
    out.escalation_reason =
        "no automatable strategy is left for " + analysis.signature();
    recommend_c();
    return out;
  }
  double best_mean = 0;
  const Eligible* best_mean_e = nullptr;
  const Eligible* chosen = nullptr;
  for (const Eligible& e : eligible) {
    if (best_mean_e == nullptr || e.mean > best_mean) {
      best_mean = e.mean;
      best_mean_e = &e;
    }
    if (chosen == nullptr || e.sample > chosen->sample) chosen = &e;
  }
  if (best_c != nullptr && best_c_mean >= best_mean + options.tier_c_margin &&
      ask_c()) {
    return out;
  }
  // What an escalation recommends: the most likely fix, tier C included
  // (and the reason names it).
  auto recommend = [&]() {
    if (best_c != nullptr && best_c_mean > best_mean) {
      recommend_c();
      absl::StrAppendFormat(&out.escalation_reason,
                            "; the most likely fix is %s (tier C, %.0f%% "
                            "expected success), which needs a human",
                            best_c->name(), 100 * best_c_mean);
    } else {
      out.recommended_action = best_mean_e->action;
    }
  };
  if (best_mean < options.min_candidate_confidence) {
    out.escalation_reason = absl::StrFormat(
        "nothing confident is left for %s: best remaining strategy %s has "
        "%.0f%% expected success",
        analysis.signature(), best_mean_e->strategy->name(), 100 * best_mean);
    recommend();
    return out;
  }
  {
    // After a failed attempt, the signature's record of retries.
    double p = best_mean;
    std::string retry_note;
    if (attempt >= 2 && options.min_retry_trials > 0) {
      int64_t rt = 0, rs = 0;
      for (const auto& [name, st] : stats) {
        rt += st.retry_trials();
        rs += st.retry_successes();
      }
      const double retry_mean = (1.0 + rs) / (2.0 + rt);
      if (rt >= options.min_retry_trials && retry_mean < p) {
        p = retry_mean;
        retry_note = absl::StrFormat(
            " (after a failed attempt: %d of %d retries on this signature "
            "fixed it, %.0f%%)",
            rs, rt, 100 * retry_mean);
      }
    }
    const double attempt_cost =
        (1 - p) * options.cost_failed_attempt +
        BlastRisk(best_mean_e->tier) * options.cost_failed_attempt;
    const double saving = p * options.cost_escalation;
    if (saving <= attempt_cost) {
      out.escalation_reason = absl::StrFormat(
          "a human is cheaper for %s: the best remaining strategy %s has "
          "%.0f%% expected success%s, so one more attempt costs %.2f and "
          "saves %.2f of the escalation's %.2f",
          analysis.signature(), best_mean_e->strategy->name(), 100 * p,
          retry_note, attempt_cost, saving, options.cost_escalation);
      recommend();
      return out;
    }
  }
  if (options.escalate_below_threshold &&
      chosen->mean < options.confidence_threshold) {
    out.escalation_reason = absl::StrFormat(
        "confidence %.2f in %s is below the threshold %.2f", chosen->mean,
        chosen->strategy->name(), options.confidence_threshold);
    out.recommended_action = chosen->action;
    return out;
  }

  if (options.ask_below_threshold &&
      chosen->mean < options.confidence_threshold) {
    sel.set_needs_approval(true);
    sel.set_approval_reason(absl::StrFormat(
        "confidence %.2f in %s is below the threshold %.2f: a human must "
        "approve it",
        chosen->mean, chosen->strategy->name(), options.confidence_threshold));
  }

  bool any_history = false;
  for (const Eligible& e : eligible) any_history |= e.trials > 0;
  std::string reason;
  if (!any_history) {
    reason = "default_fallback";
  } else if (chosen == best_mean_e) {
    reason = "highest_confidence_learned";
  } else {
    reason = "exploration";
  }
  out.chosen = true;
  *sel.mutable_strategy() = *chosen->strategy;
  *sel.mutable_action() = chosen->action;
  sel.set_confidence(chosen->mean);
  sel.set_selection_reason(reason);
  return out;
}

}  // namespace reflexion::core

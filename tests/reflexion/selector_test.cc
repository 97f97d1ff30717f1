// SelectStrategy as a decision procedure: Thompson draws from the stored
// Beta posteriors, tier C never automated, escalation as a cost decision
// learned from a signature's history, conservative exploration in critical
// namespaces and discounting of old evidence.
#include "core/reflexion/selector.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::core {
namespace {

using ::reflexion::testing::IsOk;
using ::testing::HasSubstr;

using Strategies = absl::flat_hash_map<std::string, v1::Strategy>;
using StatsMap = absl::flat_hash_map<std::string, v1::StrategyStats>;

Strategies CatalogStrategies() {
  Strategies out;
  for (auto& s : DefaultStrategies(absl::UnixEpoch())) out[s.name()] = s;
  return out;
}

v1::Analysis AnalysisOf(absl::string_view family, absl::string_view cause) {
  v1::Analysis a;
  a.set_error_family(std::string(family));
  a.set_cause(std::string(cause));
  a.set_signature(absl::StrCat(family, "/", cause));
  return a;
}

v1::Incident IncidentIn(absl::string_view ns, absl::string_view type) {
  v1::Incident in;
  in.set_pod_name("web-1");
  in.set_namespace_(std::string(ns));
  in.set_error_type(std::string(type));
  return in;
}

v1::StrategyStats Stats(absl::string_view strategy, double a, double b,
                        int trials) {
  v1::StrategyStats s;
  s.set_strategy(std::string(strategy));
  s.set_alpha(a);
  s.set_beta(b);
  s.set_trials(trials);
  s.set_mean(a / (a + b));
  return s;
}

const v1::StrategyCandidate* CandidateOf(const SelectionOutcome& out,
                                         absl::string_view name) {
  for (const auto& c : out.selection.candidates()) {
    if (c.strategy() == name) return &c;
  }
  return nullptr;
}

TEST(SelectorPosteriorTest, DrawsFollowTheStoredBetaPosterior) {
  const Strategies strategies = CatalogStrategies();
  const v1::Analysis a = AnalysisOf("CrashLoopBackOff", "");
  const v1::Incident in = IncidentIn("shop", "CrashLoopBackOff");
  StatsMap stats;
  stats["rollback_deployment"] = Stats("rollback_deployment", 6, 4, 6);
  SelectorOptions opts;
  opts.cost_escalation = 100;  // always try: only the draws matter here
  const int n = 4000;
  double sum = 0, sum_sq = 0;
  for (int seed = 0; seed < n; ++seed) {
    SelectionOutcome out =
        SelectStrategy(a, in, {}, strategies, stats, {}, 1, "k", seed, opts);
    const v1::StrategyCandidate* c = CandidateOf(out, "rollback_deployment");
    ASSERT_NE(c, nullptr);
    EXPECT_DOUBLE_EQ(c->mean(), 0.6);
    sum += c->sample();
    sum_sq += c->sample() * c->sample();
  }
  const double mean = sum / n;
  const double var = sum_sq / n - mean * mean;
  // Beta(6, 4): mean 0.6, variance 6*4 / (10^2 * 11) = 0.02182; the
  // standard error of the mean over 4000 draws is 0.0023.
  EXPECT_NEAR(mean, 0.6, 0.01);
  EXPECT_NEAR(var, 24.0 / 1100.0, 0.002);
}

TEST(SelectorPosteriorTest, LearnedOutcomesMoveTheMeanTheSelectorReads) {
  InMemoryKnowledgeStore store;
  const v1::Analysis a = AnalysisOf("CrashLoopBackOff", "probe_failure");
  const Prior prior = PriorFor(a.error_family(), a.cause(), "relax_probes");
  for (int i = 0; i < 5; ++i) {
    LearningCommit c;
    c.episode.set_id(absl::StrCat("e", i));
    c.episode.set_workflow_id(absl::StrCat("w", i));
    *c.episode.mutable_time() = ToProto(absl::FromUnixSeconds(100 + i));
    c.episode.set_signature(a.signature());
    c.episode.set_strategy("relax_probes");
    c.episode.set_success(i < 2);  // 2 successes, 3 failures
    c.prior_alpha = prior.alpha;
    c.prior_beta = prior.beta;
    ASSERT_THAT(store.CommitLearning(c), IsOk());
  }
  absl::StatusOr<std::vector<v1::StrategyStats>> stats =
      store.GetStats(a.signature());
  ASSERT_THAT(stats, IsOk());
  StatsMap by_name;
  for (auto& s : *stats) by_name[s.strategy()] = s;
  SelectionOutcome out =
      SelectStrategy(a, IncidentIn("shop", "CrashLoopBackOff"), {},
                     CatalogStrategies(), by_name, {}, 1, "k", 1, {});
  const v1::StrategyCandidate* c = CandidateOf(out, "relax_probes");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->trials(), 5);
  EXPECT_NEAR(c->mean(), (prior.alpha + 2) / (prior.alpha + prior.beta + 5),
              1e-12);
}

TEST(SelectorPosteriorTest, SameSeedSameDrawsDifferentSeedsDiffer) {
  const Strategies strategies = CatalogStrategies();
  const v1::Analysis a = AnalysisOf("CrashLoopBackOff", "");
  const v1::Incident in = IncidentIn("shop", "CrashLoopBackOff");
  SelectionOutcome x =
      SelectStrategy(a, in, {}, strategies, {}, {}, 1, "k", 42, {});
  SelectionOutcome y =
      SelectStrategy(a, in, {}, strategies, {}, {}, 1, "k", 42, {});
  SelectionOutcome z =
      SelectStrategy(a, in, {}, strategies, {}, {}, 1, "k", 43, {});
  ASSERT_EQ(x.selection.candidates_size(), y.selection.candidates_size());
  bool differs = false;
  for (int i = 0; i < x.selection.candidates_size(); ++i) {
    EXPECT_EQ(x.selection.candidates(i).sample(),
              y.selection.candidates(i).sample());
    differs |= x.selection.candidates(i).sample() !=
               z.selection.candidates(i).sample();
  }
  EXPECT_TRUE(differs);
}

TEST(SelectorTierCTest, NeverAutoSelectsTierCEvenWhenItIsTheBestKnownFix) {
  const Strategies strategies = CatalogStrategies();
  const v1::Analysis a =
      AnalysisOf("CreateContainerConfigError", "missing_config_key");
  const v1::Incident in = IncidentIn("shop", "CreateContainerConfigError");
  StatsMap stats;
  stats["create_missing_config"] = Stats("create_missing_config", 99, 1, 98);
  int chosen = 0;
  for (int seed = 0; seed < 200; ++seed) {
    SelectionOutcome out = SelectStrategy(a, in, {}, strategies, stats, {}, 1,
                                          "k", seed, SelectorOptions());
    if (out.chosen) {
      ++chosen;
      EXPECT_NE(out.selection.strategy().tier(), v1::SAFETY_TIER_C);
      EXPECT_NE(out.selection.action().tier(), v1::SAFETY_TIER_C);
      EXPECT_FALSE(out.selection.needs_approval());
    }
  }
  // The rollback (tier A) is worth trying first.
  EXPECT_GT(chosen, 0);
  // Once it has been tried, the escalation recommends the tier-C fix.
  SelectionOutcome out =
      SelectStrategy(a, in, {}, strategies, stats, {"rollback_deployment"}, 2,
                     "k", 1, SelectorOptions());
  EXPECT_FALSE(out.chosen);
  EXPECT_EQ(out.recommended_action.type(),
            v1::ACTION_TYPE_CREATE_MISSING_CONFIG);
  EXPECT_THAT(out.escalation_reason, HasSubstr("create_missing_config"));
}

// Runs `incidents` workflows of up to 3 attempts on one signature against a
// planted outcome (`works`: strategy -> success probability, others fail),
// learning every outcome into a real in-memory store. Returns, per
// incident, whether it was escalated before any attempt.
std::vector<bool> RunPlanted(
    const v1::Analysis& a,
    const absl::flat_hash_map<std::string, double>& works, int incidents) {
  InMemoryKnowledgeStore store;
  const Strategies strategies = CatalogStrategies();
  const v1::Incident in = IncidentIn("shop", a.error_family());
  std::mt19937_64 outcome_rng(7);
  std::uniform_real_distribution<double> u(0, 1);
  std::vector<bool> at_once;
  int episode = 0;
  for (int i = 0; i < incidents; ++i) {
    std::vector<std::string> tried;
    bool escalated_at_once = false;
    for (int attempt = 1; attempt <= 3; ++attempt) {
      absl::StatusOr<std::vector<v1::StrategyStats>> stats =
          store.GetStats(a.signature());
      EXPECT_THAT(stats, IsOk());
      StatsMap by_name;
      for (auto& s : *stats) by_name[s.strategy()] = s;
      SelectionOutcome out = SelectStrategy(
          a, in, {}, strategies, by_name, tried, attempt, "k",
          StableHash(absl::StrCat(i, "/", attempt)), SelectorOptions());
      if (!out.chosen) {
        escalated_at_once = attempt == 1;
        break;
      }
      const std::string name = out.selection.strategy().name();
      tried.push_back(name);
      auto w = works.find(name);
      const bool success = w != works.end() && u(outcome_rng) < w->second;
      const Prior prior = PriorFor(a.error_family(), a.cause(), name);
      LearningCommit c;
      c.episode.set_id(absl::StrCat("e", ++episode));
      c.episode.set_workflow_id(absl::StrCat("w", i));
      *c.episode.mutable_time() = ToProto(absl::FromUnixSeconds(episode));
      c.episode.set_signature(a.signature());
      c.episode.set_strategy(name);
      c.episode.set_success(success);
      c.prior_alpha = prior.alpha;
      c.prior_beta = prior.beta;
      EXPECT_THAT(store.CommitLearning(c), IsOk());
      if (success) break;
    }
    at_once.push_back(escalated_at_once);
  }
  return at_once;
}

TEST(SelectorCostTest, EscalatesAtOnceForAPlantedUnfixableCauseAfterEvidence) {
  // Evicted with a cause the catalog has no opinion on: family priors, so
  // the first incidents are tried.
  const std::vector<bool> at_once =
      RunPlanted(AnalysisOf("Evicted", "planted_unfixable"), {}, 30);
  EXPECT_FALSE(at_once[0]) << "no evidence yet: worth an attempt";
  int first = -1;
  for (int i = 0; i < 30; ++i) {
    if (at_once[i]) {
      first = i;
      break;
    }
  }
  ASSERT_GE(first, 1);
  EXPECT_LE(first, 5) << "escalates at once after a few failed incidents";
  for (int i = first; i < 30; ++i) EXPECT_TRUE(at_once[i]) << i;
}

TEST(SelectorCostTest, KeepsTryingAPlantedFixableCause) {
  const std::vector<bool> at_once =
      RunPlanted(AnalysisOf("Evicted", "planted_fixable"),
                 {{"lower_resource_requests", 0.9}}, 30);
  for (int i = 0; i < 30; ++i) EXPECT_FALSE(at_once[i]) << i;
}

TEST(SelectorCostTest, ACheaperEscalationEscalatesSooner) {
  const Strategies strategies = CatalogStrategies();
  const v1::Analysis a = AnalysisOf("CrashLoopBackOff", "");
  const v1::Incident in = IncidentIn("shop", "CrashLoopBackOff");
  // rollback_deployment has the best mean, 0.5 (family prior 2/2).
  SelectorOptions cheap;
  cheap.cost_escalation = 0.9;  // 0.5 * 0.9 <= 0.5 * 1: escalate
  SelectionOutcome out =
      SelectStrategy(a, in, {}, strategies, {}, {}, 1, "k", 1, cheap);
  EXPECT_FALSE(out.chosen);
  EXPECT_THAT(out.escalation_reason, HasSubstr("a human is cheaper"));
  EXPECT_EQ(out.recommended_action.type(), v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT);
  SelectorOptions dear;
  dear.cost_escalation = 1.1;  // 0.55 > 0.5: try
  EXPECT_TRUE(
      SelectStrategy(a, in, {}, strategies, {}, {}, 1, "k", 1, dear).chosen);
}

TEST(SelectorCriticalTest, CriticalNamespaceNeverTriesAnUncertainStrategy) {
  const Strategies strategies = CatalogStrategies();
  const v1::Analysis a = AnalysisOf("CrashLoopBackOff", "");
  StatsMap stats;
  stats["rollback_deployment"] = Stats("rollback_deployment", 40, 10, 48);
  SelectorOptions opts;
  opts.critical_namespaces = {"payments"};
  opts.critical_margin = 0.1;
  int explored_elsewhere = 0;
  for (int seed = 0; seed < 300; ++seed) {
    SelectionOutcome critical =
        SelectStrategy(a, IncidentIn("payments", "CrashLoopBackOff"), {},
                       strategies, stats, {}, 1, "k", seed, opts);
    ASSERT_TRUE(critical.chosen);
    EXPECT_EQ(critical.selection.strategy().name(), "rollback_deployment");
    const v1::StrategyCandidate* d = CandidateOf(critical, "delete_pod");
    ASSERT_NE(d, nullptr);
    EXPECT_THAT(d->excluded_reason(), HasSubstr("critical namespace payments"));
    SelectionOutcome other =
        SelectStrategy(a, IncidentIn("shop", "CrashLoopBackOff"), {},
                       strategies, stats, {}, 1, "k", seed, opts);
    ASSERT_TRUE(other.chosen);
    explored_elsewhere +=
        other.selection.strategy().name() != "rollback_deployment";
  }
  EXPECT_GT(explored_elsewhere, 0) << "elsewhere Thompson still explores";
}

TEST(SelectorCriticalTest, LowerCredibleBoundIsBelowTheMeanAndTightens) {
  EXPECT_LT(LowerCredibleBound(8, 2), 0.8);
  EXPECT_GT(LowerCredibleBound(80, 20), LowerCredibleBound(8, 2));
  EXPECT_NEAR(LowerCredibleBound(800, 200), 0.8, 0.03);
  EXPECT_EQ(LowerCredibleBound(0, 1), 0);
}

TEST(SelectorDiscountTest, OldEvidenceCountsHalfAfterOneHalfLife) {
  const Strategies strategies = CatalogStrategies();
  const v1::Analysis a = AnalysisOf("CrashLoopBackOff", "");
  const Prior prior = PriorFor(a.error_family(), a.cause(), "delete_pod");
  StatsMap stats;
  stats["delete_pod"] =
      Stats("delete_pod", prior.alpha, prior.beta + 10, 10);  // 10 failures
  *stats["delete_pod"].mutable_updated_at() = ToProto(absl::UnixEpoch());
  SelectorOptions opts;
  opts.cost_escalation = 100;
  opts.now = absl::UnixEpoch() + absl::Hours(24 * 30);
  const v1::Incident in = IncidentIn("shop", "CrashLoopBackOff");
  auto mean_of = [&](const SelectorOptions& o) {
    SelectionOutcome out =
        SelectStrategy(a, in, {}, strategies, stats, {}, 1, "k", 1, o);
    const v1::StrategyCandidate* c = CandidateOf(out, "delete_pod");
    return c == nullptr ? -1.0 : c->mean();
  };
  EXPECT_NEAR(mean_of(opts), prior.alpha / (prior.alpha + prior.beta + 10),
              1e-12)
      << "no half-life: no discounting";
  opts.posterior_half_life = absl::Hours(24 * 30);
  EXPECT_NEAR(mean_of(opts), prior.alpha / (prior.alpha + prior.beta + 5),
              1e-12);
}

}  // namespace
}  // namespace reflexion::core

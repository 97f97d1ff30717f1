// ListPatterns' computation (core/reflexion/patterns.h) on planted data: the
// Beta quantile against known values, lift, bursts, effectiveness intervals,
// anomalies, filters, limit and request validation.
#include "core/reflexion/patterns.h"

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::core {
namespace {

namespace v1 = ::reflexion::v1;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);
constexpr char kOom[] = "OOMKilled/memory_limit_too_low";
constexpr char kPull[] = "ImagePullBackOff/image_not_found";
constexpr char kCrash[] = "CrashLoopBackOff/app_error";

// ------------------------------------------------------------------ Beta

// Reference values: for integer parameters I_x(a, b) = P(Binom(a + b - 1, x)
// >= a), summed exactly and inverted by bisection in python3 (no scipy on
// this machine): see the report of the change that added this test.
TEST(BetaTest, UniformQuantilesAreLinear) {
  for (double p : {0.0, 0.01, 0.05, 0.25, 0.5, 0.9, 0.95, 1.0}) {
    EXPECT_NEAR(BetaQuantile(1, 1, p), p, 1e-10) << p;
    EXPECT_NEAR(RegularizedIncompleteBeta(1, 1, p), p, 1e-12) << p;
  }
}

TEST(BetaTest, MatchesTheBinomialIdentityForIntegerParameters) {
  // I_x(2, 2) = 3x^2 - 2x^3; its 5% quantile is 0.13535 (0.0976 is not a
  // quantile of Beta(2, 2): I_0.0976(2, 2) = 0.0267).
  EXPECT_NEAR(BetaQuantile(2, 2, 0.05), 0.1353503621715838, 1e-9);
  EXPECT_NEAR(BetaQuantile(2, 2, 0.95), 0.8646496378284161, 1e-9);
  for (double x : {0.1, 0.3, 0.5, 0.8}) {
    EXPECT_NEAR(RegularizedIncompleteBeta(2, 2, x), 3 * x * x - 2 * x * x * x,
                1e-12);
  }
  // Beta(6, 4): I_0.5 = P(Binom(9, 0.5) >= 6) = 130 / 512.
  EXPECT_NEAR(RegularizedIncompleteBeta(6, 4, 0.5), 0.25390625, 1e-12);
  EXPECT_NEAR(RegularizedIncompleteBeta(6, 4, 0.3), 0.025294842, 1e-9);
  EXPECT_NEAR(BetaQuantile(6, 4, 0.05), 0.34494136594370317, 1e-9);
  EXPECT_NEAR(BetaQuantile(6, 4, 0.5), 0.6069151671893704, 1e-9);
  EXPECT_NEAR(BetaQuantile(6, 4, 0.95), 0.8312495040126759, 1e-9);
  EXPECT_NEAR(BetaQuantile(8, 4, 0.05), 0.43562581171076964, 1e-9);
  EXPECT_NEAR(BetaQuantile(8, 4, 0.95), 0.8649245270803587, 1e-9);
}

TEST(BetaTest, MatchesClosedFormsAndSymmetry) {
  // Beta(1, b): 1 - (1 - p)^(1/b); Beta(a, 1): p^(1/a).
  for (double p : {0.05, 0.5, 0.95}) {
    EXPECT_NEAR(BetaQuantile(1, 11, p), 1 - std::pow(1 - p, 1.0 / 11), 1e-10);
    EXPECT_NEAR(BetaQuantile(3.5, 1, p), std::pow(p, 1 / 3.5), 1e-10);
  }
  // I_x(a, b) = 1 - I_{1-x}(b, a), also for fractional ones.
  for (auto [a, b, x] : std::vector<std::tuple<double, double, double>>{
           {0.5, 0.5, 0.2}, {2.2, 1.8, 0.7}, {300, 700, 0.31}}) {
    EXPECT_NEAR(RegularizedIncompleteBeta(a, b, x),
                1 - RegularizedIncompleteBeta(b, a, 1 - x), 1e-12);
  }
  // Large parameters: lgamma's rounding costs digits.
  EXPECT_NEAR(RegularizedIncompleteBeta(5e4, 5e4, 0.5), 0.5, 1e-9);
  EXPECT_NEAR(BetaQuantile(1e6, 1e6, 0.5), 0.5, 1e-9);
  // Beta(0.5, 0.5) is the arcsine law: F(x) = 2/pi asin(sqrt x).
  EXPECT_NEAR(RegularizedIncompleteBeta(0.5, 0.5, 0.2),
              2 / M_PI * std::asin(std::sqrt(0.2)), 1e-10);
  EXPECT_NEAR(BetaQuantile(500, 500, 0.5), 0.5, 1e-9);
  EXPECT_DOUBLE_EQ(RegularizedIncompleteBeta(3, 4, -1), 0);
  EXPECT_DOUBLE_EQ(RegularizedIncompleteBeta(3, 4, 2), 1);
}

// ------------------------------------------------------------- planting

WorkflowSummary Wf(const std::string& id, absl::Time t, const std::string& ns,
                   const std::string& signature,
                   const std::string& cluster = "") {
  WorkflowSummary w;
  w.workflow_id = id;
  w.time = t;
  w.namespace_name = ns;
  w.cluster = cluster;
  w.signature = signature;
  w.error_type = SignatureFamily(signature);
  return w;
}

v1::Episode Ep(const std::string& id, const std::string& workflow, absl::Time t,
               const std::string& ns, const std::string& signature,
               const std::string& strategy, bool success, double ttr = 0,
               const std::string& cluster = "") {
  v1::Episode e;
  e.set_id(id);
  e.set_workflow_id(workflow);
  *e.mutable_time() = ToProto(t);
  e.set_namespace_(ns);
  e.set_signature(signature);
  e.set_error_type(SignatureFamily(signature));
  e.set_strategy(strategy);
  e.set_success(success);
  e.set_time_to_recovery_s(ttr);
  e.set_cluster(cluster);
  e.set_attempt(1);
  return e;
}

PatternOptions Opts(absl::Time now) {
  PatternOptions o;
  o.now = now;
  return o;
}

// 30 incidents: batch has 8 of the 11 OOMs.
//   batch: 8 OOM, 2 pull          (10)
//   web:   2 OOM, 10 pull         (12)
//   api:   1 OOM, 7 crash         (8)
std::vector<WorkflowSummary> LiftData() {
  std::vector<WorkflowSummary> w;
  int n = 0;
  auto add = [&](const std::string& ns, const std::string& sig, int count) {
    for (int i = 0; i < count; ++i, ++n) {
      w.push_back(
          Wf(absl::StrCat("wf-", n), kT0 + absl::Minutes(n * 37), ns, sig));
    }
  };
  add("batch", kOom, 8);
  add("batch", kPull, 2);
  add("web", kOom, 2);
  add("web", kPull, 10);
  add("api", kOom, 1);
  add("api", kCrash, 7);
  return w;
}

const v1::PatternCorrelation* Find(const v1::ListPatternsResponse& r,
                                   const std::string& error,
                                   const std::string& ns) {
  for (const auto& c : r.correlations()) {
    if (c.error() == error && c.namespace_() == ns) return &c;
  }
  return nullptr;
}

// ---------------------------------------------------------- correlation

TEST(PatternsTest, TheNamespaceWithMostOomsHasTheHighestOomLift) {
  PatternInputs in;
  in.workflows = LiftData();
  v1::ListPatternsResponse r = ComputePatterns(in, Opts(kT0 + absl::Hours(48)));
  EXPECT_EQ(r.incidents(), 30);
  const v1::PatternCorrelation* batch = Find(r, "OOMKilled", "batch");
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->count(), 8);
  EXPECT_EQ(batch->namespace_total(), 10);
  EXPECT_EQ(batch->error_total(), 11);
  EXPECT_EQ(batch->total(), 30);
  EXPECT_NEAR(batch->lift(), (8.0 / 10) / (11.0 / 30), 1e-12);
  // The highest OOM lift is batch's; web's (2 < min_count, lift < 1) and
  // api's (1) are not listed.
  const v1::PatternCorrelation* top_oom = nullptr;
  for (const auto& c : r.correlations()) {
    if (c.error() == "OOMKilled" && top_oom == nullptr) top_oom = &c;
    EXPECT_GT(c.lift(), 1.0);
    EXPECT_GE(c.count(), 5);
  }
  ASSERT_NE(top_oom, nullptr);
  EXPECT_EQ(top_oom->namespace_(), "batch");
  EXPECT_EQ(Find(r, "OOMKilled", "web"), nullptr);
  // Sorted by lift: api/crash (7/8 / 7/30 = 3.75) first.
  ASSERT_EQ(r.correlations_size(), 3);
  EXPECT_EQ(r.correlations(0).error(), "CrashLoopBackOff");
  EXPECT_NEAR(r.correlations(0).lift(), 3.75, 1e-12);
  EXPECT_EQ(r.correlations(1).error(), "OOMKilled");
  EXPECT_EQ(r.correlations(2).error(), "ImagePullBackOff");
  EXPECT_EQ(r.correlations(2).namespace_(), "web");
  EXPECT_EQ(r.correlations_found(), 3);
}

TEST(PatternsTest, AnIncidentIsAWorkflowNotAnAttempt) {
  PatternInputs in;
  in.workflows = LiftData();
  // Three attempts of one batch OOM workflow, and an OOM workflow known only
  // by its two episodes (its record expired).
  for (int a = 0; a < 3; ++a) {
    in.episodes.push_back(Ep(absl::StrCat("e", a), "wf-0",
                             kT0 + absl::Minutes(a), "batch", kOom,
                             "increase_memory_limit", a == 2));
  }
  in.episodes.push_back(
      Ep("x1", "gone-1", kT0, "batch", kOom, "increase_memory_limit", false));
  in.episodes.push_back(Ep("x2", "gone-1", kT0 + absl::Minutes(1), "batch",
                           kOom, "increase_memory_limit", true));
  v1::ListPatternsResponse r = ComputePatterns(in, Opts(kT0 + absl::Hours(48)));
  EXPECT_EQ(r.incidents(), 31);
  EXPECT_EQ(r.episodes(), 5);
  const v1::PatternCorrelation* batch = Find(r, "OOMKilled", "batch");
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->count(), 9);
  EXPECT_EQ(batch->total(), 31);
}

TEST(PatternsTest, CorrelatesBySignatureWhenAsked) {
  PatternInputs in;
  in.workflows = LiftData();
  // A second OOM cause in batch, so family and signature differ.
  for (int i = 0; i < 5; ++i) {
    in.workflows.push_back(
        Wf(absl::StrCat("leak-", i), kT0, "batch", "OOMKilled/memory_leak"));
  }
  PatternOptions o = Opts(kT0 + absl::Hours(48));
  o.correlate_by = v1::ListPatternsRequest::GROUPING_SIGNATURE;
  v1::ListPatternsResponse r = ComputePatterns(in, o);
  ASSERT_NE(Find(r, kOom, "batch"), nullptr);
  EXPECT_EQ(Find(r, kOom, "batch")->count(), 8);
  ASSERT_NE(Find(r, "OOMKilled/memory_leak", "batch"), nullptr);
  EXPECT_EQ(Find(r, "OOMKilled", "batch"), nullptr);
  // By family the two causes are one error.
  o.correlate_by = v1::ListPatternsRequest::GROUPING_FAMILY;
  r = ComputePatterns(in, o);
  ASSERT_NE(Find(r, "OOMKilled", "batch"), nullptr);
  EXPECT_EQ(Find(r, "OOMKilled", "batch")->count(), 13);
}

TEST(PatternsTest, MinCountDropsSmallPairs) {
  PatternInputs in;
  in.workflows = LiftData();
  PatternOptions o = Opts(kT0 + absl::Hours(48));
  o.min_count = 9;
  v1::ListPatternsResponse r = ComputePatterns(in, o);
  ASSERT_EQ(r.correlations_size(), 1);
  EXPECT_EQ(r.correlations(0).namespace_(), "web");
  EXPECT_EQ(r.correlations(0).count(), 10);
}

// --------------------------------------------------------------- bursts

TEST(PatternsTest, APlantedBurstIsFoundAndTheBackgroundIsNot) {
  PatternInputs in;
  // One OOM an hour for 48 hours, then 8 within 4 minutes at 30h15m.
  for (int h = 0; h < 48; ++h) {
    in.workflows.push_back(
        Wf(absl::StrCat("bg-", h), kT0 + absl::Hours(h), "batch", kOom));
  }
  const absl::Time burst = kT0 + absl::Hours(30) + absl::Minutes(15);
  for (int i = 0; i < 8; ++i) {
    in.workflows.push_back(Wf(absl::StrCat("burst-", i),
                              burst + absl::Seconds(30 * i), "batch", kOom));
  }
  const absl::Time now = kT0 + absl::Hours(48);
  v1::ListPatternsResponse r = ComputePatterns(in, Opts(now));
  ASSERT_EQ(r.bursts_size(), 1);
  const v1::PatternBurst& b = r.bursts(0);
  EXPECT_EQ(b.signature(), kOom);
  EXPECT_EQ(FromProto(b.window_start()), burst);
  EXPECT_EQ(FromProto(b.window_end()), burst + absl::Minutes(10));
  EXPECT_EQ(b.count(), 8);
  EXPECT_EQ(b.history_incidents(), 56);
  EXPECT_DOUBLE_EQ(b.history_s(), 48 * 3600.0);
  EXPECT_NEAR(b.expected(), 56.0 / (48 * 3600) * 600, 1e-12);
  EXPECT_NEAR(b.threshold(), 5.0, 1e-12);  // max(5, 0.19 + 3 sqrt(0.19))
  EXPECT_EQ(FromProto(r.history_start()), kT0);
}

TEST(PatternsTest, ASteadyStreamIsNoBurst) {
  PatternInputs in;
  // One a minute for 10 hours: 10 per window, expected 10, threshold 19.5.
  for (int m = 0; m < 600; ++m) {
    in.workflows.push_back(
        Wf(absl::StrCat("s-", m), kT0 + absl::Minutes(m), "web", kPull));
  }
  v1::ListPatternsResponse r = ComputePatterns(in, Opts(kT0 + absl::Hours(10)));
  EXPECT_EQ(r.bursts_size(), 0);
  EXPECT_EQ(r.incidents(), 600);
  // The same stream after 9 silent days is more than its history predicts.
  r = ComputePatterns(in, Opts(kT0 + absl::Hours(10 * 24)));
  EXPECT_GT(r.bursts_size(), 0);
}

TEST(PatternsTest, ShortHistoryPredictsItsOwnBurst) {
  // Everything the memory holds is 8 incidents in 4 minutes: the history is
  // one window long, so 8 are expected and none is a burst.
  PatternInputs in;
  for (int i = 0; i < 8; ++i) {
    in.workflows.push_back(
        Wf(absl::StrCat("b-", i), kT0 + absl::Seconds(30 * i), "batch", kOom));
  }
  v1::ListPatternsResponse r =
      ComputePatterns(in, Opts(kT0 + absl::Minutes(5)));
  EXPECT_EQ(r.bursts_size(), 0);
}

// --------------------------------------------------------- effectiveness

TEST(PatternsTest, EffectivenessFromTheStoredPosteriorHasItsInterval) {
  PatternInputs in;
  v1::StrategyStats s;
  s.set_signature(kOom);
  s.set_strategy("increase_memory_limit");
  s.set_alpha(8);  // prior 1 + 7 successes
  s.set_beta(4);   // prior 1 + 3 failures
  s.set_trials(10);
  s.set_successes(7);
  in.stats = std::vector<v1::StrategyStats>{s};
  v1::ListPatternsResponse r = ComputePatterns(in, Opts(kT0));
  ASSERT_EQ(r.effectiveness_size(), 1);
  const v1::PatternEffectiveness& p = r.effectiveness(0);
  EXPECT_EQ(p.source(), v1::PatternEffectiveness::SOURCE_STORED_POSTERIOR);
  EXPECT_EQ(p.trials(), 10);
  EXPECT_EQ(p.successes(), 7);
  EXPECT_DOUBLE_EQ(p.prior_alpha(), 1);
  EXPECT_DOUBLE_EQ(p.prior_beta(), 1);
  EXPECT_NEAR(p.mean(), 8.0 / 12, 1e-12);
  EXPECT_NEAR(p.lower(), 0.43562581171076964, 1e-9);
  EXPECT_NEAR(p.upper(), 0.8649245270803587, 1e-9);
}

TEST(PatternsTest, EffectivenessCountsEpisodesWithTheCatalogPriorWhenFiltered) {
  const Prior prior =
      PriorFor("OOMKilled", "memory_limit_too_low", "increase_memory_limit");
  ASSERT_DOUBLE_EQ(prior.alpha, 12);  // the catalog's, for the figures below
  ASSERT_DOUBLE_EQ(prior.beta, 3);
  PatternInputs in;
  for (int i = 0; i < 10; ++i) {
    in.episodes.push_back(Ep(absl::StrCat("e", i), absl::StrCat("w", i),
                             kT0 + absl::Minutes(i), "batch", kOom,
                             "increase_memory_limit", i < 7));
  }
  // Another namespace's episodes do not count.
  in.episodes.push_back(
      Ep("o", "wo", kT0, "web", kOom, "increase_memory_limit", false));
  // The stored posterior says something else: with a namespace filter it is
  // not used (it spans every namespace).
  v1::StrategyStats s;
  s.set_signature(kOom);
  s.set_strategy("increase_memory_limit");
  s.set_alpha(1);
  s.set_beta(50);
  s.set_trials(50);
  in.stats = std::vector<v1::StrategyStats>{s};
  PatternOptions o = Opts(kT0 + absl::Hours(1));
  o.namespace_name = "batch";
  v1::ListPatternsResponse r = ComputePatterns(in, o);
  ASSERT_EQ(r.effectiveness_size(), 1);
  const v1::PatternEffectiveness& p = r.effectiveness(0);
  EXPECT_EQ(p.source(), v1::PatternEffectiveness::SOURCE_EPISODES);
  EXPECT_EQ(p.trials(), 10);
  EXPECT_EQ(p.successes(), 7);
  EXPECT_DOUBLE_EQ(p.prior_alpha(), 12);
  EXPECT_DOUBLE_EQ(p.prior_beta(), 3);
  // Beta(19, 6).
  EXPECT_NEAR(p.mean(), 19.0 / 25, 1e-12);
  EXPECT_NEAR(p.lower(), 0.6108606526401017, 1e-9);
  EXPECT_NEAR(p.upper(), 0.8850894294356577, 1e-9);
}

// ------------------------------------------------------------ anomalies

TEST(PatternsTest, ASlowResolutionIsFoundAgainstItsSignaturesHistory) {
  PatternInputs in;
  const double ttrs[] = {50, 55, 60, 65, 70, 58, 62, 61, 59, 60};
  int i = 0;
  for (double t : ttrs) {
    in.episodes.push_back(Ep(absl::StrCat("e", i), absl::StrCat("w", i),
                             kT0 + absl::Minutes(i), "batch", kOom,
                             "increase_memory_limit", true, t));
    ++i;
  }
  in.episodes.push_back(Ep("slow", "w-slow", kT0 + absl::Minutes(i), "batch",
                           kOom, "increase_memory_limit", true, 600));
  // A failure is never a slow resolution.
  in.episodes.push_back(Ep("fail", "w-fail", kT0 + absl::Minutes(i + 1),
                           "batch", kOom, "increase_memory_limit", false,
                           5000));
  v1::ListPatternsResponse r = ComputePatterns(in, Opts(kT0 + absl::Hours(1)));
  ASSERT_EQ(r.anomalies_size(), 1);
  const v1::PatternAnomaly& a = r.anomalies(0);
  EXPECT_EQ(a.kind(), v1::PatternAnomaly::KIND_SLOW_RESOLUTION);
  EXPECT_EQ(a.signature(), kOom);
  EXPECT_EQ(a.strategy(), "increase_memory_limit");
  EXPECT_EQ(a.episode_id(), "slow");
  EXPECT_EQ(a.workflow_id(), "w-slow");
  EXPECT_DOUBLE_EQ(a.value(), 600);
  EXPECT_DOUBLE_EQ(a.baseline(), 60);  // the median of the ten
  EXPECT_THAT(a.detail(), HasSubstr("600.0s"));
  EXPECT_THAT(a.detail(), HasSubstr("median 60.0s"));
}

TEST(PatternsTest, SteadyResolutionsAndShortHistoriesAreNoAnomaly) {
  PatternInputs in;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> ttr(40, 80);
  for (int i = 0; i < 200; ++i) {
    in.episodes.push_back(Ep(absl::StrCat("e", i), absl::StrCat("w", i),
                             kT0 + absl::Minutes(i), "batch", kOom,
                             "increase_memory_limit", true, ttr(rng)));
  }
  // Four earlier ones are too few to judge a slow fifth.
  for (int i = 0; i < 4; ++i) {
    in.episodes.push_back(Ep(absl::StrCat("p", i), absl::StrCat("wp", i),
                             kT0 + absl::Minutes(i), "web", kPull,
                             "patch_image", true, 10));
  }
  in.episodes.push_back(Ep("p-slow", "wp-slow", kT0 + absl::Minutes(10), "web",
                           kPull, "patch_image", true, 1000));
  v1::ListPatternsResponse r = ComputePatterns(in, Opts(kT0 + absl::Hours(5)));
  EXPECT_EQ(r.anomalies_size(), 0);
}

TEST(PatternsTest, AStrategysSuddenDropIsFoundAndASteadyRateIsNot) {
  PatternInputs in;
  // 20 successes, then 10 failures: Beta(1, 11)'s 95% quantile 0.238 is
  // below the earlier mean 21/22.
  for (int i = 0; i < 30; ++i) {
    in.episodes.push_back(Ep(absl::StrCat("d", i), absl::StrCat("wd", i),
                             kT0 + absl::Minutes(i), "batch", kOom,
                             "increase_memory_limit", i < 20));
  }
  // 70% throughout (7 of every 10): no drop.
  for (int i = 0; i < 40; ++i) {
    in.episodes.push_back(Ep(absl::StrCat("s", i), absl::StrCat("ws", i),
                             kT0 + absl::Minutes(i), "web", kPull,
                             "patch_image", i % 10 < 7));
  }
  v1::ListPatternsResponse r = ComputePatterns(in, Opts(kT0 + absl::Hours(1)));
  ASSERT_EQ(r.anomalies_size(), 1);
  const v1::PatternAnomaly& a = r.anomalies(0);
  EXPECT_EQ(a.kind(), v1::PatternAnomaly::KIND_STRATEGY_DROP);
  EXPECT_EQ(a.signature(), kOom);
  EXPECT_EQ(a.strategy(), "increase_memory_limit");
  EXPECT_EQ(a.episode_id(), "d29");
  EXPECT_DOUBLE_EQ(a.value(), 0);
  EXPECT_NEAR(a.baseline(), 21.0 / 22, 1e-12);
  EXPECT_THAT(a.detail(), HasSubstr("0 of the last 10"));
  EXPECT_THAT(a.detail(), HasSubstr("20 of 20 before"));
}

// --------------------------------------------------------------- filters

TEST(PatternsTest, FiltersSelectSignatureFamilyNamespaceClusterAndTime) {
  PatternInputs in;
  in.workflows = LiftData();  // cluster "" = the default cluster
  for (int i = 0; i < 6; ++i) {
    in.workflows.push_back(Wf(absl::StrCat("prod-", i), kT0 + absl::Hours(47),
                              "batch", kOom, "prod"));
    in.episodes.push_back(Ep(absl::StrCat("pe", i), absl::StrCat("prod-", i),
                             kT0 + absl::Hours(47), "batch", kOom,
                             "increase_memory_limit", true, 0, "prod"));
  }
  in.episodes.push_back(
      Ep("old", "wf-0", kT0, "batch", kOom, "increase_memory_limit", true));
  in.episodes.push_back(
      Ep("webe", "wf-12", kT0, "web", kPull, "patch_image", true));
  const absl::Time now = kT0 + absl::Hours(48);

  PatternOptions o = Opts(now);
  o.signature = "OOMKilled";  // a family: every OOM signature
  v1::ListPatternsResponse r = ComputePatterns(in, o);
  EXPECT_EQ(r.incidents(), 17);
  EXPECT_EQ(r.episodes(), 7);
  for (const auto& c : r.correlations()) EXPECT_EQ(c.error(), "OOMKilled");
  o.signature = kPull;  // a whole signature
  r = ComputePatterns(in, o);
  EXPECT_EQ(r.incidents(), 12);
  EXPECT_EQ(r.episodes(), 1);
  o.signature = "OOMKilled/other_cause";
  r = ComputePatterns(in, o);
  EXPECT_EQ(r.incidents(), 0);

  o = Opts(now);
  o.namespace_name = "web";
  r = ComputePatterns(in, o);
  EXPECT_EQ(r.incidents(), 12);
  EXPECT_EQ(r.episodes(), 1);
  for (const auto& c : r.correlations()) EXPECT_EQ(c.namespace_(), "web");
  // The totals still span every namespace (else every lift would be 1).
  ASSERT_NE(Find(r, "ImagePullBackOff", "web"), nullptr);
  EXPECT_EQ(Find(r, "ImagePullBackOff", "web")->total(), 36);

  o = Opts(now);
  o.cluster = "prod";
  r = ComputePatterns(in, o);
  EXPECT_EQ(r.incidents(), 6);
  EXPECT_EQ(r.episodes(), 6);
  o.cluster = "default";
  r = ComputePatterns(in, o);
  EXPECT_EQ(r.incidents(), 30);
  EXPECT_EQ(r.episodes(), 2);

  o = Opts(now);
  o.lookback = absl::Hours(2);
  r = ComputePatterns(in, o);
  EXPECT_EQ(r.incidents(), 6);
  EXPECT_EQ(r.episodes(), 6);
  EXPECT_EQ(FromProto(r.history_start()), now - absl::Hours(2));
  ASSERT_GT(r.effectiveness_size(), 0);
  EXPECT_EQ(r.effectiveness(0).source(),
            v1::PatternEffectiveness::SOURCE_EPISODES);
}

TEST(PatternsTest, LimitCutsEverySectionAndFoundCountsThemAll) {
  PatternInputs in;
  in.workflows = LiftData();
  for (int i = 0; i < 30; ++i) {
    in.episodes.push_back(Ep(absl::StrCat("d", i), absl::StrCat("wd", i),
                             kT0 + absl::Minutes(i), "batch", kOom,
                             "increase_memory_limit", i < 20));
    in.episodes.push_back(Ep(absl::StrCat("c", i), absl::StrCat("wc", i),
                             kT0 + absl::Minutes(i), "api", kCrash,
                             "delete_pod", i < 20));
  }
  for (int i = 0; i < 8; ++i) {
    in.workflows.push_back(Wf(absl::StrCat("b1-", i),
                              kT0 + absl::Hours(20) + absl::Seconds(i), "web",
                              kPull));
    in.workflows.push_back(Wf(absl::StrCat("b2-", i),
                              kT0 + absl::Hours(30) + absl::Seconds(i), "api",
                              kCrash));
  }
  PatternOptions o = Opts(kT0 + absl::Hours(48));
  v1::ListPatternsResponse all = ComputePatterns(in, o);
  ASSERT_GE(all.correlations_size(), 2);
  ASSERT_GE(all.bursts_size(), 2);
  ASSERT_EQ(all.effectiveness_size(), 2);  // episodes: no stored posteriors
  ASSERT_EQ(all.anomalies_size(), 2);
  o.limit = 1;
  v1::ListPatternsResponse r = ComputePatterns(in, o);
  EXPECT_EQ(r.correlations_size(), 1);
  EXPECT_EQ(r.bursts_size(), 1);
  EXPECT_EQ(r.effectiveness_size(), 1);
  EXPECT_EQ(r.anomalies_size(), 1);
  EXPECT_EQ(r.correlations_found(), all.correlations_size());
  EXPECT_EQ(r.bursts_found(), all.bursts_size());
  EXPECT_EQ(r.effectiveness_found(), 2);
  EXPECT_EQ(r.anomalies_found(), 2);
  // The first of each order is kept: the highest lift, the newest burst.
  EXPECT_EQ(r.correlations(0).SerializeAsString(),
            all.correlations(0).SerializeAsString());
  EXPECT_EQ(r.bursts(0).signature(), kCrash);
}

// ------------------------------------------------------------ validation

TEST(PatternOptionsTest, DefaultsAreFilledIn) {
  absl::StatusOr<PatternOptions> o =
      PatternOptionsFromRequest(v1::ListPatternsRequest(), kT0, "default");
  ASSERT_THAT(o, IsOk());
  EXPECT_EQ(o->min_count, 5);
  EXPECT_EQ(o->window, absl::Minutes(10));
  EXPECT_EQ(o->limit, 50);
  EXPECT_EQ(o->lookback, absl::ZeroDuration());
  EXPECT_EQ(o->correlate_by, v1::ListPatternsRequest::GROUPING_FAMILY);
  EXPECT_EQ(o->now, kT0);
}

TEST(PatternOptionsTest, EveryBadFieldIsNamed) {
  struct Case {
    std::function<void(v1::ListPatternsRequest&)> set;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](auto& r) { r.set_signature(std::string(257, 'a')); }, "signature"},
      {[](auto& r) { r.set_signature(std::string("a\0b", 3)); }, "signature"},
      {[](auto& r) { r.set_namespace_("Not_A_Label"); }, "namespace"},
      {[](auto& r) { r.set_cluster("prod/1"); }, "cluster"},
      {[](auto& r) { r.set_min_count(-1); }, "min_count"},
      {[](auto& r) { r.set_min_count(1000001); }, "min_count"},
      {[](auto& r) { r.mutable_window()->set_seconds(-5); }, "window"},
      {[](auto& r) { r.mutable_window()->set_nanos(5000); }, "window"},
      {[](auto& r) { r.mutable_window()->set_seconds(8 * 86400); }, "window"},
      {[](auto& r) {
         r.mutable_window()->set_seconds(1);
         r.mutable_window()->set_nanos(-1);
       },
       "window"},
      {[](auto& r) { r.set_limit(-1); }, "limit"},
      {[](auto& r) { r.set_limit(1001); }, "limit"},
      {[](auto& r) { r.mutable_lookback()->set_seconds(-1); }, "lookback"},
      {[](auto& r) { r.mutable_lookback()->set_seconds(3651LL * 86400); },
       "lookback"},
      {[](auto& r) {
         r.set_correlate_by(static_cast<v1::ListPatternsRequest::Grouping>(9));
       },
       "correlate_by"},
  };
  for (const Case& c : cases) {
    v1::ListPatternsRequest r;
    c.set(r);
    EXPECT_THAT(PatternOptionsFromRequest(r, kT0, "default"),
                StatusIs(absl::StatusCode::kInvalidArgument,
                         ::testing::StartsWith(c.field + ":")))
        << r.ShortDebugString();
  }
  v1::ListPatternsRequest ok;
  ok.set_signature("OOMKilled");
  ok.set_namespace_("team-a");
  ok.set_cluster("prod");
  ok.set_min_count(1);
  ok.mutable_window()->set_seconds(7 * 86400);
  ok.set_limit(1000);
  ok.mutable_lookback()->set_seconds(3600);
  ok.set_correlate_by(v1::ListPatternsRequest::GROUPING_SIGNATURE);
  absl::StatusOr<PatternOptions> o = PatternOptionsFromRequest(ok, kT0, "d");
  ASSERT_THAT(o, IsOk());
  EXPECT_EQ(o->window, absl::Hours(7 * 24));
  EXPECT_EQ(o->lookback, absl::Hours(1));
  EXPECT_EQ(o->limit, 1000);
  EXPECT_EQ(o->default_cluster, "d");
}

}  // namespace
}  // namespace reflexion::core

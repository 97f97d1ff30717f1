// The learning benchmark's policies and figures (core/sim/learning.h) on
// small runs of the embedded scenarios.

#include "core/sim/learning.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/sim/default_scenarios.h"
#include "core/sim/simulated_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::sim {
namespace {

namespace v1 = ::reflexion::v1;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<BenchIncident> Incidents(uint64_t seed, int n) {
  absl::StatusOr<std::vector<BenchIncident>> in =
      MakeBenchIncidents(DefaultScenariosYaml(), seed, n);
  EXPECT_THAT(in, IsOk());
  return in.ok() ? *std::move(in) : std::vector<BenchIncident>();
}

std::vector<BenchEpisode> RunPolicy(
    BenchPolicy policy, uint64_t seed,
    const std::vector<BenchIncident>& incidents) {
  BenchRunOptions options;
  options.policy = policy;
  options.seed = seed;
  absl::StatusOr<std::vector<BenchEpisode>> eps =
      RunBenchPolicy(DefaultScenariosYaml(), incidents, options);
  EXPECT_THAT(eps, IsOk()) << BenchPolicyName(policy);
  return eps.ok() ? *std::move(eps) : std::vector<BenchEpisode>();
}

// Strategy and outcome per attempt, one line per episode.
std::vector<std::string> Trace(const std::vector<BenchEpisode>& eps) {
  std::vector<std::string> out;
  for (const BenchEpisode& e : eps) {
    std::string line = e.signature;
    for (const BenchAttempt& a : e.attempts) {
      line += " " + a.strategy + (a.success ? "+" : "-");
    }
    if (e.escalated) line += " escalated";
    out.push_back(line);
  }
  return out;
}

TEST(LearningBenchTest, SameSeedsGiveIdenticalEpisodesAndAnotherSeedOthers) {
  const std::vector<BenchIncident> a = Incidents(1, 100);
  const std::vector<BenchIncident> b = Incidents(1, 100);
  const std::vector<BenchIncident> c = Incidents(2, 100);
  ASSERT_EQ(a.size(), 100u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].incident.pod_name(), b[i].incident.pod_name());
    EXPECT_EQ(a[i].scenario_id, b[i].scenario_id);
  }
  for (BenchPolicy p : kBenchPolicies) {
    const std::vector<std::string> first = Trace(RunPolicy(p, 1, a));
    ASSERT_EQ(first.size(), 100u) << BenchPolicyName(p);
    EXPECT_EQ(first, Trace(RunPolicy(p, 1, b))) << BenchPolicyName(p);
    EXPECT_NE(first, Trace(RunPolicy(p, 2, c))) << BenchPolicyName(p);
  }
}

TEST(LearningBenchTest, EveryIncidentLandsOnItsScenario) {
  const std::vector<BenchIncident> in = Incidents(3, 200);
  ASSERT_EQ(in.size(), 200u);
  absl::StatusOr<std::unique_ptr<SimulatedCluster>> cluster =
      SimulatedCluster::WithDefaultScenarios(3);
  ASSERT_THAT(cluster, IsOk());
  int scenarios_seen = 0;
  std::vector<std::string> seen;
  for (const BenchIncident& bi : in) {
    std::optional<absl::StatusOr<v1::Diagnosis>> dx;
    (*cluster)->Diagnose(bi.incident, [&](absl::StatusOr<v1::Diagnosis> d) {
      dx = std::move(d);
    });
    ASSERT_TRUE(dx.has_value() && dx->ok());
    EXPECT_EQ(*(*cluster)->ScenarioOf("bench", bi.incident.pod_name()),
              bi.scenario_id);
    if (std::find(seen.begin(), seen.end(), bi.scenario_id) == seen.end()) {
      seen.push_back(bi.scenario_id);
      ++scenarios_seen;
    }
  }
  EXPECT_GE(scenarios_seen, 12);  // 17 scenarios, some rare
}

TEST(LearningBenchTest,
     OracleEscalatesAtOnceExactlyWhenNothingAutomatableFixes) {
  const std::vector<BenchIncident> in = Incidents(1, 200);
  const std::vector<BenchEpisode> eps = RunPolicy(BenchPolicy::kOracle, 1, in);
  ASSERT_EQ(eps.size(), in.size());
  int unfixable = 0;
  for (const BenchEpisode& e : eps) {
    EXPECT_EQ(e.attempts.empty(), !e.fixable) << e.scenario_id;
    unfixable += !e.fixable;
    if (!e.attempts.empty()) {
      EXPECT_EQ(e.attempts.front().strategy, in[e.index].best_strategy);
    }
  }
  EXPECT_GT(unfixable, 0);  // config-missing-secret needs a human
}

TEST(LearningBenchTest,
     FirstDecisionRightCountsEarlyEscalationOnlyWhenUnfixable) {
  BenchEpisode e;
  e.escalated = true;
  e.fixable = false;
  EXPECT_TRUE(e.FirstDecisionRight());
  e.fixable = true;
  EXPECT_FALSE(e.FirstDecisionRight());
  e.attempts.push_back({"delete_pod", false, 0.4});
  e.attempts.push_back({"rollback_deployment", true, 0.6});
  EXPECT_FALSE(e.FirstDecisionRight());
  EXPECT_EQ(e.Wasted(), 1);
  BenchFigures f = Figures({e}, 0, 1);
  EXPECT_EQ(f.wasted, 1);
  ASSERT_TRUE(f.brier.has_value());
  EXPECT_DOUBLE_EQ(*f.brier, (0.16 + 0.16) / 2);
}

TEST(LearningBenchTest, BadArgumentsAreInvalidArgument) {
  EXPECT_THAT(
      MakeBenchIncidents(DefaultScenariosYaml(), 1, 0),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("incidents")));
  EXPECT_THAT(MakeBenchIncidents("scenarios: 3", 1, 10),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(BenchPolicyFromName("smart"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("smart")));
  BenchRunOptions options;
  options.max_attempts = 0;
  EXPECT_THAT(
      RunBenchPolicy(DefaultScenariosYaml(), {}, options),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_attempts")));
}

// On a fixed seed and a small run the service wastes under half the fix
// attempts of greedy highest-confidence. Measured 2026-12-01 (200
// incidents): seed 1 ours 25 vs greedy 78 wasted attempts (seed 2: 27 vs
// 93, seed 3: 19 vs 75). The target over 400 incidents (at most a
// third of greedy's) is reported by bench/learning.
TEST(LearningBenchTest, OursWastesUnderHalfTheAttemptsOfGreedy) {
  const std::vector<BenchIncident> in = Incidents(1, 200);
  const BenchFigures ours =
      Figures(RunPolicy(BenchPolicy::kOurs, 1, in), 0, 200);
  const BenchFigures greedy =
      Figures(RunPolicy(BenchPolicy::kGreedy, 1, in), 0, 200);
  ASSERT_EQ(ours.episodes, 200);
  ASSERT_EQ(greedy.episodes, 200);
  EXPECT_LT(2 * ours.wasted, greedy.wasted)
      << "ours " << ours.wasted << " greedy " << greedy.wasted;
}

// A bad version planted as if a reflection had proposed it (x1.1 for every
// OOM) is rolled back automatically to its parent's parameters; the run
// also shows the versions ours learned (x2.03 from the batch job's OOMs).
TEST(LearningBenchTest, APlantedBadVersionIsRolledBackAutomatically) {
  const std::vector<BenchIncident> in = Incidents(1, 300);
  BenchRunOptions options;
  options.policy = BenchPolicy::kOurs;
  options.seed = 1;
  options.plant_bad_version_at = 150;
  std::vector<BenchVersion> versions;
  ASSERT_THAT(RunBenchPolicy(DefaultScenariosYaml(), in, options, &versions),
              IsOk());
  int planted = -1;
  const v1::Strategy* before = nullptr;
  const v1::Strategy* rollback = nullptr;
  for (const BenchVersion& v : versions) {
    if (v.strategy.author() == "reflector:planted") {
      planted = v.strategy.version();
      EXPECT_EQ(v.incident, 150);
      EXPECT_DOUBLE_EQ(v.strategy.params().memory_factor(), 1.1);
    } else if (planted < 0 && v.strategy.name() == "increase_memory_limit") {
      before = &v.strategy;
    } else if (planted > 0 && v.strategy.author() == "auto-rollback") {
      rollback = &v.strategy;
      break;
    }
  }
  ASSERT_GT(planted, 0);
  ASSERT_NE(before, nullptr) << "no version learned before the plant";
  EXPECT_EQ(before->author(), "reflector:heuristic");
  ASSERT_NE(rollback, nullptr) << "the planted version was not rolled back";
  EXPECT_EQ(rollback->parent_version(), planted);
  EXPECT_EQ(rollback->version(), planted + 1);
  EXPECT_DOUBLE_EQ(rollback->params().memory_factor(),
                   before->params().memory_factor());
  EXPECT_THAT(rollback->reason(),
              HasSubstr(absl::StrCat("version ", planted, " succeeded 0 of")));
}

}  // namespace
}  // namespace reflexion::sim

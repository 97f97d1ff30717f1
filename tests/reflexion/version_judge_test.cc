// The automatic rollback's judgement (core/reflexion/version_judge.h) on
// hand-made version records.

#include "core/reflexion/version_judge.h"

#include <vector>

#include "absl/time/time.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reflexion::core {
namespace {

namespace v1 = ::reflexion::v1;
using ::testing::HasSubstr;

std::vector<v1::Strategy> TwoVersions(const std::string& author) {
  v1::Strategy v1s;
  v1s.set_name("increase_memory_limit");
  v1s.set_version(1);
  v1s.set_author("catalog");
  v1s.mutable_params()->set_memory_factor(1.5);
  v1::Strategy v2s = v1s;
  v2s.set_version(2);
  v2s.set_parent_version(1);
  v2s.set_author(author);
  v2s.mutable_params()->set_memory_factor(1.1);
  return {v1s, v2s};
}

std::vector<v1::VersionStats> Stats(int t1, int s1, int t2, int s2) {
  return {MakeVersionStats("increase_memory_limit", 1, t1, s1),
          MakeVersionStats("increase_memory_limit", 2, t2, s2)};
}

TEST(ProbabilityBelowTest, MatchesClosedForms) {
  // Symmetric: one half.
  EXPECT_NEAR(ProbabilityBelow(3, 4, 3, 4), 0.5, 1e-3);
  // X ~ Beta(1, 6), Y ~ U(0, 1): P(X < Y) = E[1 - X] = 6 / 7.
  EXPECT_NEAR(ProbabilityBelow(1, 6, 1, 1), 6.0 / 7.0, 1e-3);
  // X ~ U(0, 1), Y ~ Beta(2, 1): P(X < Y) = E[Y] = 2 / 3.
  EXPECT_NEAR(ProbabilityBelow(1, 1, 2, 1), 2.0 / 3.0, 1e-3);
  // Large counts do not underflow.
  EXPECT_GT(ProbabilityBelow(10, 400, 400, 10), 0.999);
  EXPECT_LT(ProbabilityBelow(400, 10, 10, 400), 0.001);
}

TEST(JudgeLatestVersionTest, RollsBackAVersionCrediblyWorseThanItsParent) {
  const absl::Time now = absl::FromUnixSeconds(1'700'000'000);
  std::optional<v1::Strategy> back =
      JudgeLatestVersion(TwoVersions("reflector:heuristic"),
                         Stats(20, 18, 5, 0), RollbackRule(), now);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->version(), 3);
  EXPECT_EQ(back->parent_version(), 2);
  EXPECT_EQ(back->author(), "auto-rollback");
  EXPECT_DOUBLE_EQ(back->params().memory_factor(), 1.5);
  EXPECT_EQ(back->created_at().seconds(), 1'700'000'000);
  EXPECT_THAT(back->reason(), HasSubstr("version 2 succeeded 0 of 5"));
  EXPECT_THAT(back->reason(), HasSubstr("parent version 1 18 of 20"));
}

TEST(JudgeLatestVersionTest, KeepsAGoodVersion) {
  EXPECT_FALSE(JudgeLatestVersion(TwoVersions("reflector:heuristic"),
                                  Stats(20, 10, 6, 5), RollbackRule(),
                                  absl::UnixEpoch())
                   .has_value());
}

TEST(JudgeLatestVersionTest, WaitsForTheMinimumTrials) {
  RollbackRule rule;
  rule.min_trials = 5;
  EXPECT_FALSE(JudgeLatestVersion(TwoVersions("reflector:heuristic"),
                                  Stats(40, 40, 4, 0), rule, absl::UnixEpoch())
                   .has_value());
  rule.min_trials = 0;  // disabled
  EXPECT_FALSE(JudgeLatestVersion(TwoVersions("reflector:heuristic"),
                                  Stats(40, 40, 40, 0), rule, absl::UnixEpoch())
                   .has_value());
}

TEST(JudgeLatestVersionTest, NeverJudgesAHumansOrARollbacksVersion) {
  for (const char* author : {"human:alice", "auto-rollback", "catalog"}) {
    EXPECT_FALSE(JudgeLatestVersion(TwoVersions(author), Stats(40, 40, 40, 0),
                                    RollbackRule(), absl::UnixEpoch())
                     .has_value())
        << author;
  }
}

TEST(JudgeLatestVersionTest, AnUntriedParentNeedsStrongerEvidence) {
  // Parent never tried (uniform): 0 of 5 gives P = 6/7 < 0.95 ...
  std::vector<v1::VersionStats> stats = {
      MakeVersionStats("increase_memory_limit", 2, 5, 0)};
  EXPECT_FALSE(JudgeLatestVersion(TwoVersions("reflector:heuristic"), stats,
                                  RollbackRule(), absl::UnixEpoch())
                   .has_value());
  // ... 0 of 20 gives 21/22 > 0.95.
  stats = {MakeVersionStats("increase_memory_limit", 2, 20, 0)};
  EXPECT_TRUE(JudgeLatestVersion(TwoVersions("reflector:heuristic"), stats,
                                 RollbackRule(), absl::UnixEpoch())
                  .has_value());
}

}  // namespace
}  // namespace reflexion::core

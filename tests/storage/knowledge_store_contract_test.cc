// The KnowledgeStore contract: every test runs against the in-memory fake
// and the RocksDB store (a fresh temp dir per test).

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/ports/knowledge_store.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "storage/rocksdb_db.h"
#include "storage/rocksdb_knowledge_store.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion {
namespace {

namespace v1 = ::reflexion::v1;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

// ---------------------------------------------------------------------------
// Backends.
// ---------------------------------------------------------------------------

class InMemoryBackend {
 public:
  core::KnowledgeStore& store() { return store_; }

 private:
  core::InMemoryKnowledgeStore store_;
};

std::unique_ptr<storage::RocksDb> OpenOrDie(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<storage::RocksDb>> db =
      storage::RocksDb::Open(dir);
  CHECK(db.ok()) << db.status();
  return *std::move(db);
}

class RocksDbBackend {
 public:
  RocksDbBackend() : db_(OpenOrDie(dir_.path())), store_(db_.get()) {}
  core::KnowledgeStore& store() { return store_; }

 private:
  testing::TempDir dir_;  // destroyed last: after the DB is closed
  std::unique_ptr<storage::RocksDb> db_;
  storage::RocksDbKnowledgeStore store_;
};

template <typename Backend>
class KnowledgeStoreContractTest : public ::testing::Test {
 protected:
  core::KnowledgeStore& store() { return backend_.store(); }

 private:
  Backend backend_;
};

struct BackendName {
  template <typename T>
  static std::string GetName(int) {
    if constexpr (std::is_same_v<T, InMemoryBackend>) return "InMemory";
    return "RocksDb";
  }
};

using Backends = ::testing::Types<InMemoryBackend, RocksDbBackend>;
TYPED_TEST_SUITE(KnowledgeStoreContractTest, Backends, BackendName);

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

constexpr char kSignature[] = "OOMKilled/limit_too_low";
constexpr char kStrategy[] = "increase_memory_limit";

v1::Strategy MakeStrategy(const std::string& name, int version) {
  v1::Strategy s;
  s.set_name(name);
  s.set_version(version);
  s.set_parent_version(version - 1);
  s.set_action_type(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
  s.set_tier(v1::SAFETY_TIER_B);
  s.set_description(absl::StrCat(name, " v", version));
  s.mutable_params()->set_memory_factor(1.0 + version / 10.0);
  return s;
}

v1::Episode MakeEpisode(const std::string& id, int64_t seconds,
                        int32_t nanos = 0) {
  v1::Episode e;
  e.set_id(id);
  e.set_workflow_id("wf-" + id);
  e.mutable_time()->set_seconds(seconds);
  e.mutable_time()->set_nanos(nanos);
  e.set_pod_name("pod-a");
  e.set_namespace_("default");
  e.set_error_type("OOMKilled");
  e.set_signature(kSignature);
  e.set_attempt(1);
  e.set_strategy(kStrategy);
  e.set_strategy_version(1);
  return e;
}

core::LearningCommit MakeCommit(v1::Episode episode, bool success,
                                double prior_alpha = 1.0,
                                double prior_beta = 1.0) {
  core::LearningCommit c;
  episode.set_success(success);
  c.episode = std::move(episode);
  c.prior_alpha = prior_alpha;
  c.prior_beta = prior_beta;
  return c;
}

std::vector<int> Versions(const std::vector<v1::Strategy>& strategies) {
  std::vector<int> out;
  for (const auto& s : strategies) out.push_back(s.version());
  return out;
}

std::vector<std::string> Ids(const std::vector<v1::Episode>& episodes) {
  std::vector<std::string> out;
  for (const auto& e : episodes) out.push_back(e.id());
  return out;
}

std::vector<std::string> AllIdsOldestFirst(core::KnowledgeStore& store) {
  std::vector<std::string> out;
  EXPECT_THAT(store.ForEachEpisode([&](const v1::Episode& e) {
    out.push_back(e.id());
    return true;
  }),
              IsOk());
  return out;
}

// Follows page tokens to the end; returns the ids in order, or fails the
// test on an error or a runaway token chain.
std::vector<std::string> PageThrough(core::KnowledgeStore& store,
                                     core::EpisodeQuery query,
                                     int* pages = nullptr) {
  std::vector<std::string> out;
  int n = 0;
  do {
    absl::StatusOr<core::EpisodePage> page = store.ListEpisodes(query);
    EXPECT_THAT(page, IsOk());
    if (!page.ok() || ++n > 10'000) break;
    for (const auto& e : page->episodes) out.push_back(e.id());
    query.page_token = page->next_page_token;
  } while (!query.page_token.empty());
  if (pages != nullptr) *pages = n;
  return out;
}

bool SameProto(const google::protobuf::Message& a,
               const google::protobuf::Message& b) {
  return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

// ---------------------------------------------------------------------------
// Strategies.
// ---------------------------------------------------------------------------

TYPED_TEST(KnowledgeStoreContractTest,
           AppendsVersionsAndReadsThemBackOldestFirst) {
  for (int v = 1; v <= 3; ++v) {
    REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("s", v)));
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto history,
                                 this->store().GetStrategyHistory("s"));
  ASSERT_THAT(Versions(history), ElementsAre(1, 2, 3));
  for (int v = 1; v <= 3; ++v) {
    EXPECT_TRUE(SameProto(history[v - 1], MakeStrategy("s", v)));
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto latest, this->store().ListStrategies());
  ASSERT_THAT(latest, SizeIs(1));
  EXPECT_TRUE(SameProto(latest[0], MakeStrategy("s", 3)));
}

TYPED_TEST(KnowledgeStoreContractTest,
           ListsTheLatestVersionOfEveryStrategyOrderedByName) {
  REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("b", 1)));
  REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("ab", 1)));
  REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("a", 1)));
  REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("a", 2)));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto latest, this->store().ListStrategies());
  std::vector<std::string> names;
  for (const auto& s : latest) names.push_back(s.name());
  EXPECT_THAT(names, ElementsAre("a", "ab", "b"));
  EXPECT_THAT(Versions(latest), ElementsAre(2, 1, 1));
}

TYPED_TEST(KnowledgeStoreContractTest, RejectsAVersionGap) {
  REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("s", 1)));
  EXPECT_THAT(this->store().PutStrategyVersion(MakeStrategy("s", 3)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto history,
                                 this->store().GetStrategyHistory("s"));
  EXPECT_THAT(Versions(history), ElementsAre(1));
}

TYPED_TEST(KnowledgeStoreContractTest, RejectsADuplicateVersionAndKeepsTheOld) {
  REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("s", 1)));
  REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("s", 2)));
  v1::Strategy again = MakeStrategy("s", 2);
  again.set_description("overwrite attempt");
  EXPECT_THAT(this->store().PutStrategyVersion(again),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto history,
                                 this->store().GetStrategyHistory("s"));
  ASSERT_THAT(Versions(history), ElementsAre(1, 2));
  EXPECT_EQ(history[1].description(), "s v2");
}

TYPED_TEST(KnowledgeStoreContractTest, RejectsAFirstVersionOtherThanOne) {
  EXPECT_THAT(this->store().PutStrategyVersion(MakeStrategy("s", 2)),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(this->store().GetStrategyHistory("s"),
              StatusIs(absl::StatusCode::kNotFound));
}

TYPED_TEST(KnowledgeStoreContractTest,
           RejectsAnEmptyNameANulInTheNameOrAVersionBelowOne) {
  EXPECT_THAT(this->store().PutStrategyVersion(MakeStrategy("", 1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name")));
  EXPECT_THAT(
      this->store().PutStrategyVersion(MakeStrategy(std::string("a\0b", 3), 1)),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("name")));
  EXPECT_THAT(
      this->store().PutStrategyVersion(MakeStrategy("s", 0)),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("version")));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto latest, this->store().ListStrategies());
  EXPECT_THAT(latest, IsEmpty());
}

TYPED_TEST(KnowledgeStoreContractTest, HistoryOfAnUnknownStrategyIsNotFound) {
  // "ab" shares a prefix with "a" but is another strategy.
  REFLEXION_ASSERT_OK(this->store().PutStrategyVersion(MakeStrategy("ab", 1)));
  EXPECT_THAT(this->store().GetStrategyHistory("a"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("a")));
  EXPECT_THAT(this->store().GetStrategyHistory(""),
              StatusIs(absl::StatusCode::kNotFound));
}

// ---------------------------------------------------------------------------
// Learning.
// ---------------------------------------------------------------------------

TYPED_TEST(KnowledgeStoreContractTest,
           ReplayingACommitOfTheSameEpisodeWritesNothingMore) {
  REFLEXION_ASSERT_OK_AND_ASSIGN(
      core::LearningResult first,
      this->store().CommitLearning(MakeCommit(MakeEpisode("e1", 100), true)));
  // The same learn step replayed after a crash, a little later.
  REFLEXION_ASSERT_OK_AND_ASSIGN(
      core::LearningResult replay,
      this->store().CommitLearning(MakeCommit(MakeEpisode("e1", 101), true)));
  EXPECT_TRUE(SameProto(replay.stats, first.stats));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto stats,
                                 this->store().GetStats(kSignature));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].trials(), 1);
  core::EpisodeQuery q;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto page, this->store().ListEpisodes(q));
  EXPECT_THAT(page.episodes, SizeIs(1));
}

TYPED_TEST(KnowledgeStoreContractTest,
           TunedParametersAreKeptWithThePosteriorUntilReplaced) {
  core::LearningCommit c = MakeCommit(MakeEpisode("e1", 100), true);
  v1::StrategyStats r;
  r.mutable_tuned_params()->set_memory_factor(2.025);
  r.set_tuned_version(3);
  r.set_base_trials(4);
  r.set_base_failures(2);
  r.set_tuned_trials(1);
  r.set_tuned_successes(1);
  c.params_record = r;
  REFLEXION_ASSERT_OK(this->store().CommitLearning(c));
  // A later commit without tuned parameters leaves them.
  REFLEXION_ASSERT_OK(
      this->store().CommitLearning(MakeCommit(MakeEpisode("e2", 200), false)));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto stats,
                                 this->store().GetStats(kSignature));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].trials(), 2);
  ASSERT_TRUE(stats[0].has_tuned_params());
  EXPECT_DOUBLE_EQ(stats[0].tuned_params().memory_factor(), 2.025);
  EXPECT_EQ(stats[0].tuned_version(), 3);
  EXPECT_EQ(stats[0].base_trials(), 4);
  EXPECT_EQ(stats[0].base_failures(), 2);
  EXPECT_EQ(stats[0].tuned_trials(), 1);
  EXPECT_EQ(stats[0].tuned_successes(), 1);
  core::LearningCommit d = MakeCommit(MakeEpisode("e3", 300), true);
  r.mutable_tuned_params()->set_memory_factor(2.7);
  r.set_tuned_version(4);
  r.set_tuned_trials(2);
  d.params_record = r;
  REFLEXION_ASSERT_OK(this->store().CommitLearning(d));
  REFLEXION_ASSERT_OK_AND_ASSIGN(stats, this->store().GetStats(kSignature));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_DOUBLE_EQ(stats[0].tuned_params().memory_factor(), 2.7);
  EXPECT_EQ(stats[0].tuned_version(), 4);
  EXPECT_EQ(stats[0].tuned_trials(), 2);
  // A record without tuned parameters clears them.
  core::LearningCommit e = MakeCommit(MakeEpisode("e4", 400), true);
  r.clear_tuned_params();
  e.params_record = r;
  REFLEXION_ASSERT_OK(this->store().CommitLearning(e));
  REFLEXION_ASSERT_OK_AND_ASSIGN(stats, this->store().GetStats(kSignature));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_FALSE(stats[0].has_tuned_params());
}

TYPED_TEST(KnowledgeStoreContractTest,
           CommitCreatesThePosteriorFromThePriorThenCountsEachTrial) {
  REFLEXION_ASSERT_OK_AND_ASSIGN(
      core::LearningResult first,
      this->store().CommitLearning(MakeCommit(MakeEpisode("e1", 100), true,
                                              /*prior_alpha=*/2.0,
                                              /*prior_beta=*/3.0)));
  EXPECT_DOUBLE_EQ(first.mean_before, 2.0 / 5.0);
  EXPECT_EQ(first.stats.signature(), kSignature);
  EXPECT_EQ(first.stats.strategy(), kStrategy);
  EXPECT_DOUBLE_EQ(first.stats.alpha(), 3.0);
  EXPECT_DOUBLE_EQ(first.stats.beta(), 3.0);
  EXPECT_EQ(first.stats.trials(), 1);
  EXPECT_EQ(first.stats.successes(), 1);
  EXPECT_DOUBLE_EQ(first.stats.mean(), 0.5);
  EXPECT_EQ(first.stats.updated_at().seconds(), 100);

  // The prior of a later commit is ignored: the posterior exists.
  REFLEXION_ASSERT_OK_AND_ASSIGN(
      core::LearningResult second,
      this->store().CommitLearning(MakeCommit(MakeEpisode("e2", 200), false,
                                              /*prior_alpha=*/50.0,
                                              /*prior_beta=*/50.0)));
  EXPECT_DOUBLE_EQ(second.mean_before, 0.5);
  EXPECT_DOUBLE_EQ(second.stats.alpha(), 3.0);
  EXPECT_DOUBLE_EQ(second.stats.beta(), 4.0);
  EXPECT_EQ(second.stats.trials(), 2);
  EXPECT_EQ(second.stats.successes(), 1);
  EXPECT_DOUBLE_EQ(second.stats.mean(), 3.0 / 7.0);
  EXPECT_EQ(second.stats.updated_at().seconds(), 200);

  REFLEXION_ASSERT_OK_AND_ASSIGN(auto stats,
                                 this->store().GetStats(kSignature));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_TRUE(SameProto(stats[0], second.stats));
}

TYPED_TEST(KnowledgeStoreContractTest,
           CommitAppendsItsNewVersionInTheSameWrite) {
  REFLEXION_ASSERT_OK(
      this->store().PutStrategyVersion(MakeStrategy(kStrategy, 1)));
  core::LearningCommit c = MakeCommit(MakeEpisode("e1", 100), true);
  c.new_version = MakeStrategy(kStrategy, 2);
  REFLEXION_ASSERT_OK(this->store().CommitLearning(c));

  REFLEXION_ASSERT_OK_AND_ASSIGN(auto history,
                                 this->store().GetStrategyHistory(kStrategy));
  ASSERT_THAT(Versions(history), ElementsAre(1, 2));
  EXPECT_TRUE(SameProto(history[1], MakeStrategy(kStrategy, 2)));
  EXPECT_THAT(AllIdsOldestFirst(this->store()), ElementsAre("e1"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto stats, this->store().GetStats(""));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].trials(), 1);
}

TYPED_TEST(KnowledgeStoreContractTest, CommitWithABadNewVersionWritesNothing) {
  REFLEXION_ASSERT_OK(
      this->store().PutStrategyVersion(MakeStrategy(kStrategy, 1)));
  REFLEXION_ASSERT_OK(
      this->store().CommitLearning(MakeCommit(MakeEpisode("e1", 100), true)));

  for (int bad : {1, 3}) {  // a duplicate and a gap
    SCOPED_TRACE(bad);
    core::LearningCommit c = MakeCommit(MakeEpisode("e2", 200), false);
    c.new_version = MakeStrategy(kStrategy, bad);
    EXPECT_THAT(this->store().CommitLearning(c),
                StatusIs(absl::StatusCode::kFailedPrecondition));
  }
  EXPECT_THAT(AllIdsOldestFirst(this->store()), ElementsAre("e1"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto page, this->store().ListEpisodes({}));
  EXPECT_THAT(Ids(page.episodes), ElementsAre("e1"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto stats, this->store().GetStats(""));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].trials(), 1);
  EXPECT_DOUBLE_EQ(stats[0].beta(), 1.0);
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto history,
                                 this->store().GetStrategyHistory(kStrategy));
  EXPECT_THAT(Versions(history), ElementsAre(1));
}

TYPED_TEST(KnowledgeStoreContractTest,
           CommitWithAMissingOrInvalidFieldIsInvalidArgumentAndWritesNothing) {
  struct Case {
    std::string field;  // must appear in the message
    std::function<void(core::LearningCommit&)> mutate;
  };
  const std::vector<Case> cases = {
      {"id", [](auto& c) { c.episode.clear_id(); }},
      {"workflow_id", [](auto& c) { c.episode.clear_workflow_id(); }},
      {"time", [](auto& c) { c.episode.clear_time(); }},
      {"time", [](auto& c) { c.episode.mutable_time()->set_nanos(-1); }},
      {"signature", [](auto& c) { c.episode.clear_signature(); }},
      {"signature",
       [](auto& c) { c.episode.set_signature(std::string("a\0b", 3)); }},
      {"strategy", [](auto& c) { c.episode.clear_strategy(); }},
      {"prior", [](auto& c) { c.prior_alpha = 0; }},
      {"prior", [](auto& c) { c.prior_beta = -1; }},
      {"name", [](auto& c) { c.new_version = MakeStrategy("", 1); }},
  };
  for (const Case& tc : cases) {
    SCOPED_TRACE(tc.field);
    core::LearningCommit c = MakeCommit(MakeEpisode("e1", 100), true);
    tc.mutate(c);
    EXPECT_THAT(
        this->store().CommitLearning(c),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(tc.field)));
  }
  EXPECT_THAT(AllIdsOldestFirst(this->store()), IsEmpty());
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto stats, this->store().GetStats(""));
  EXPECT_THAT(stats, IsEmpty());
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto latest, this->store().ListStrategies());
  EXPECT_THAT(latest, IsEmpty());
}

TYPED_TEST(KnowledgeStoreContractTest,
           ConcurrentCommitsOnOnePosteriorLoseNoUpdate) {
  constexpr int kThreads = 8;
  constexpr int kCommitsPerThread = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kCommitsPerThread; ++i) {
        v1::Episode e = MakeEpisode(absl::StrCat("t", t, "-", i), 1000 + i);
        EXPECT_THAT(this->store().CommitLearning(MakeCommit(e, i % 4 == 0)),
                    IsOk());
      }
    });
  }
  for (std::thread& t : threads) t.join();

  constexpr int kTotal = kThreads * kCommitsPerThread;
  constexpr int kSuccesses = kThreads * (kCommitsPerThread / 4);
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto stats,
                                 this->store().GetStats(kSignature));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].trials(), kTotal);
  EXPECT_EQ(stats[0].successes(), kSuccesses);
  EXPECT_DOUBLE_EQ(stats[0].alpha(), 1.0 + kSuccesses);
  EXPECT_DOUBLE_EQ(stats[0].beta(), 1.0 + (kTotal - kSuccesses));
  EXPECT_THAT(AllIdsOldestFirst(this->store()), SizeIs(kTotal));
}

TYPED_TEST(KnowledgeStoreContractTest,
           ConcurrentCommitsProposingTheSameVersionAppendItOnce) {
  REFLEXION_ASSERT_OK(
      this->store().PutStrategyVersion(MakeStrategy(kStrategy, 1)));
  constexpr int kThreads = 8;
  std::atomic<int> appended{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t, &appended] {
      core::LearningCommit c =
          MakeCommit(MakeEpisode(absl::StrCat("e", t), 100 + t), true);
      c.new_version = MakeStrategy(kStrategy, 2);
      absl::StatusOr<core::LearningResult> r = this->store().CommitLearning(c);
      if (r.ok()) {
        ++appended;
      } else {
        EXPECT_THAT(r, StatusIs(absl::StatusCode::kFailedPrecondition));
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(appended.load(), 1);
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto history,
                                 this->store().GetStrategyHistory(kStrategy));
  EXPECT_THAT(Versions(history), ElementsAre(1, 2));
  EXPECT_THAT(AllIdsOldestFirst(this->store()), SizeIs(1));
}

// ---------------------------------------------------------------------------
// Stats.
// ---------------------------------------------------------------------------

TYPED_TEST(KnowledgeStoreContractTest,
           GetStatsReturnsOneSignatureOrAllOrderedBySignatureThenStrategy) {
  struct Row {
    const char* signature;
    const char* strategy;
  };
  // "a" is a prefix of "ab": the separator keeps them apart.
  const Row rows[] = {{"ab", "x"}, {"a", "z"}, {"a", "y"}, {"b", "x"}};
  int n = 0;
  for (const Row& r : rows) {
    v1::Episode e = MakeEpisode(absl::StrCat("e", n), 100 + n);
    ++n;
    e.set_signature(r.signature);
    e.set_strategy(r.strategy);
    REFLEXION_ASSERT_OK(this->store().CommitLearning(MakeCommit(e, true)));
  }
  auto keys = [](const std::vector<v1::StrategyStats>& stats) {
    std::vector<std::string> out;
    for (const auto& s : stats) {
      out.push_back(absl::StrCat(s.signature(), "|", s.strategy()));
    }
    return out;
  };
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto one, this->store().GetStats("a"));
  EXPECT_THAT(keys(one), ElementsAre("a|y", "a|z"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto all, this->store().GetStats(""));
  EXPECT_THAT(keys(all), ElementsAre("a|y", "a|z", "ab|x", "b|x"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto none, this->store().GetStats("c"));
  EXPECT_THAT(none, IsEmpty());
}

// ---------------------------------------------------------------------------
// Episodes.
// ---------------------------------------------------------------------------

TYPED_TEST(KnowledgeStoreContractTest, StoresEveryEpisodeFieldAsGiven) {
  v1::Episode e = MakeEpisode("e1", 1'700'000'000, 123'456'000);
  e.set_attempt(3);
  e.set_strategy_version(2);
  e.set_confidence(0.75);
  e.set_selection_reason("exploration");
  e.set_time_to_recovery_s(12.5);
  e.set_reflection("raise the limit further next time");
  e.set_reflection_quality(0.8);
  e.add_lessons("limit too low");
  e.add_lessons("check the heap");
  REFLEXION_ASSERT_OK(this->store().CommitLearning(MakeCommit(e, true)));
  e.set_success(true);
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto page, this->store().ListEpisodes({}));
  ASSERT_THAT(page.episodes, SizeIs(1));
  EXPECT_TRUE(SameProto(page.episodes[0], e))
      << page.episodes[0].ShortDebugString();
}

TYPED_TEST(KnowledgeStoreContractTest,
           ListsEpisodesNewestFirstAndPagingVisitsEachExactlyOnce) {
  // Committed out of order; pairs share a time and are ordered by id, and
  // one is before the epoch.
  std::vector<std::pair<std::string, int64_t>> episodes = {
      {"e07", 700}, {"e01", 100}, {"e05", 500}, {"e02", 200}, {"e10", 900},
      {"e03", 300}, {"e09", 900}, {"e04", 300}, {"e00", -5},  {"e06", 600},
      {"e08", 800}, {"e11", 950}, {"e12", 960},
  };
  for (const auto& [id, t] : episodes) {
    REFLEXION_ASSERT_OK(
        this->store().CommitLearning(MakeCommit(MakeEpisode(id, t), true)));
  }
  const std::vector<std::string> newest_first = {
      "e12", "e11", "e10", "e09", "e08", "e07", "e06",
      "e05", "e04", "e03", "e02", "e01", "e00"};
  core::EpisodeQuery q;
  q.page_size = 4;
  int pages = 0;
  EXPECT_EQ(PageThrough(this->store(), q, &pages), newest_first);
  EXPECT_EQ(pages, 4);
  q.page_size = 1000;
  EXPECT_EQ(PageThrough(this->store(), q, &pages), newest_first);
  EXPECT_EQ(pages, 1);
}

TYPED_TEST(KnowledgeStoreContractTest, AnExactlyFullLastPageHasNoNextToken) {
  for (int i = 0; i < 6; ++i) {
    REFLEXION_ASSERT_OK(this->store().CommitLearning(
        MakeCommit(MakeEpisode(absl::StrCat("e", i), i), true)));
  }
  core::EpisodeQuery q;
  q.page_size = 3;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto first, this->store().ListEpisodes(q));
  EXPECT_THAT(Ids(first.episodes), ElementsAre("e5", "e4", "e3"));
  ASSERT_FALSE(first.next_page_token.empty());
  q.page_token = first.next_page_token;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto second, this->store().ListEpisodes(q));
  EXPECT_THAT(Ids(second.episodes), ElementsAre("e2", "e1", "e0"));
  EXPECT_EQ(second.next_page_token, "");
}

TYPED_TEST(KnowledgeStoreContractTest,
           PageSizeZeroMeansOneHundredAndLargerSizesAreClampedToOneThousand) {
  for (int i = 0; i < 1001; ++i) {
    REFLEXION_ASSERT_OK(this->store().CommitLearning(
        MakeCommit(MakeEpisode(absl::StrCat("e", i), i), true)));
  }
  core::EpisodeQuery q;
  q.page_size = 0;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto dflt, this->store().ListEpisodes(q));
  EXPECT_THAT(dflt.episodes, SizeIs(100));
  q.page_size = 5000;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto big, this->store().ListEpisodes(q));
  EXPECT_THAT(big.episodes, SizeIs(1000));
  EXPECT_FALSE(big.next_page_token.empty());
  q.page_size = -7;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto tiny, this->store().ListEpisodes(q));
  EXPECT_THAT(Ids(tiny.episodes), ElementsAre("e1000"));
}

// Six episodes across two signatures, three workflows, two error types, two
// namespaces and two pods.
void CommitMixedEpisodes(core::KnowledgeStore& store) {
  struct Row {
    const char* id;
    const char* signature;
    const char* workflow;
    const char* error_type;
    const char* ns;
    const char* pod;
  };
  const Row rows[] = {
      {"e0", "A/x", "wf1", "OOMKilled", "prod", "p1"},
      {"e1", "B/y", "wf1", "OOMKilled", "prod", "p1"},
      {"e2", "A/x", "wf2", "CrashLoopBackOff", "dev", "p2"},
      {"e3", "A/x", "wf3", "OOMKilled", "dev", "p1"},
      {"e4", "B/y", "wf2", "CrashLoopBackOff", "prod", "p2"},
      {"e5", "A/x", "wf1", "OOMKilled", "prod", "p2"},
  };
  int t = 0;
  for (const Row& r : rows) {
    v1::Episode e = MakeEpisode(r.id, 100 + t++);
    e.set_signature(r.signature);
    e.set_workflow_id(r.workflow);
    e.set_error_type(r.error_type);
    e.set_namespace_(r.ns);
    e.set_pod_name(r.pod);
    ASSERT_THAT(store.CommitLearning(MakeCommit(e, true)), IsOk());
  }
}

TYPED_TEST(KnowledgeStoreContractTest, FiltersEpisodesBySignature) {
  ASSERT_NO_FATAL_FAILURE(CommitMixedEpisodes(this->store()));
  core::EpisodeQuery q;
  q.page_size = 1;  // pages through the index
  q.signature = "A/x";
  EXPECT_THAT(PageThrough(this->store(), q),
              ElementsAre("e5", "e3", "e2", "e0"));
  q.signature = "A";
  EXPECT_THAT(PageThrough(this->store(), q), IsEmpty());
}

TYPED_TEST(KnowledgeStoreContractTest, FiltersEpisodesByWorkflowId) {
  ASSERT_NO_FATAL_FAILURE(CommitMixedEpisodes(this->store()));
  core::EpisodeQuery q;
  q.page_size = 2;
  q.workflow_id = "wf1";
  EXPECT_THAT(PageThrough(this->store(), q), ElementsAre("e5", "e1", "e0"));
  q.workflow_id = "wf";
  EXPECT_THAT(PageThrough(this->store(), q), IsEmpty());
}

TYPED_TEST(KnowledgeStoreContractTest, FiltersEpisodesByErrorType) {
  ASSERT_NO_FATAL_FAILURE(CommitMixedEpisodes(this->store()));
  core::EpisodeQuery q;
  q.page_size = 1;
  q.error_type = "CrashLoopBackOff";
  EXPECT_THAT(PageThrough(this->store(), q), ElementsAre("e4", "e2"));
}

TYPED_TEST(KnowledgeStoreContractTest, FiltersEpisodesByNamespace) {
  ASSERT_NO_FATAL_FAILURE(CommitMixedEpisodes(this->store()));
  core::EpisodeQuery q;
  q.page_size = 1;
  q.namespace_name = "dev";
  EXPECT_THAT(PageThrough(this->store(), q), ElementsAre("e3", "e2"));
}

TYPED_TEST(KnowledgeStoreContractTest, FiltersEpisodesByPodName) {
  ASSERT_NO_FATAL_FAILURE(CommitMixedEpisodes(this->store()));
  core::EpisodeQuery q;
  q.page_size = 2;
  q.pod_name = "p2";
  EXPECT_THAT(PageThrough(this->store(), q), ElementsAre("e5", "e4", "e2"));
}

TYPED_TEST(KnowledgeStoreContractTest, CombinesEveryFilter) {
  ASSERT_NO_FATAL_FAILURE(CommitMixedEpisodes(this->store()));
  core::EpisodeQuery q;
  q.page_size = 1;
  q.signature = "A/x";
  q.workflow_id = "wf1";
  EXPECT_THAT(PageThrough(this->store(), q), ElementsAre("e5", "e0"));
  q.pod_name = "p1";
  EXPECT_THAT(PageThrough(this->store(), q), ElementsAre("e0"));
  q.workflow_id.clear();
  q.namespace_name = "dev";
  q.error_type = "OOMKilled";
  EXPECT_THAT(PageThrough(this->store(), q), ElementsAre("e3"));
}

TYPED_TEST(KnowledgeStoreContractTest, AMalformedPageTokenIsInvalidArgument) {
  REFLEXION_ASSERT_OK(
      this->store().CommitLearning(MakeCommit(MakeEpisode("e1", 100), true)));
  for (const char* token : {"zz", "abc", "00", "not a token",
                            "0123456789ABCDEF01", "0123456789abcdef0g"}) {
    SCOPED_TRACE(token);
    core::EpisodeQuery q;
    q.page_token = token;
    EXPECT_THAT(
        this->store().ListEpisodes(q),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("page_token")));
  }
}

TYPED_TEST(KnowledgeStoreContractTest, ForEachEpisodeVisitsOldestFirst) {
  for (auto [id, t] : std::vector<std::pair<const char*, int>>{
           {"c", 3}, {"a", 1}, {"b", 2}, {"b2", 2}}) {
    REFLEXION_ASSERT_OK(
        this->store().CommitLearning(MakeCommit(MakeEpisode(id, t), true)));
  }
  EXPECT_THAT(AllIdsOldestFirst(this->store()),
              ElementsAre("a", "b", "b2", "c"));
}

TYPED_TEST(KnowledgeStoreContractTest,
           ForEachEpisodeStopsWhenTheCallbackReturnsFalse) {
  for (int i = 0; i < 5; ++i) {
    REFLEXION_ASSERT_OK(this->store().CommitLearning(
        MakeCommit(MakeEpisode(absl::StrCat("e", i), i), true)));
  }
  std::vector<std::string> seen;
  REFLEXION_ASSERT_OK(this->store().ForEachEpisode([&](const v1::Episode& e) {
    seen.push_back(e.id());
    return seen.size() < 2;
  }));
  EXPECT_THAT(seen, ElementsAre("e0", "e1"));
}

TYPED_TEST(KnowledgeStoreContractTest, ForEachEpisodeMayCallBackIntoTheStore) {
  REFLEXION_ASSERT_OK(
      this->store().CommitLearning(MakeCommit(MakeEpisode("e1", 1), true)));
  int visited = 0;
  REFLEXION_ASSERT_OK(this->store().ForEachEpisode([&](const v1::Episode& e) {
    ++visited;
    EXPECT_THAT(this->store().CommitLearning(
                    MakeCommit(MakeEpisode(e.id() + "-again", 2), true)),
                IsOk());
    return true;
  }));
  EXPECT_EQ(visited, 1);
  EXPECT_THAT(AllIdsOldestFirst(this->store()), ElementsAre("e1", "e1-again"));
}

// ---------------------------------------------------------------------------
// Version records, retention, ClearMemory.
// ---------------------------------------------------------------------------

TYPED_TEST(KnowledgeStoreContractTest, CountsTrialsPerStrategyVersion) {
  int n = 0;
  auto learn = [&](int version, bool success) {
    v1::Episode e = MakeEpisode(absl::StrCat("v", n), n);
    ++n;
    e.set_strategy_version(version);
    REFLEXION_ASSERT_OK(this->store().CommitLearning(MakeCommit(e, success)));
  };
  learn(1, true);
  learn(1, false);
  learn(2, false);
  learn(2, false);
  learn(2, true);
  absl::StatusOr<std::vector<v1::VersionStats>> stats =
      this->store().GetVersionStats(kStrategy);
  REFLEXION_ASSERT_OK(stats);
  ASSERT_THAT(*stats, SizeIs(2));
  EXPECT_EQ((*stats)[0].version(), 1);
  EXPECT_EQ((*stats)[0].trials(), 2);
  EXPECT_EQ((*stats)[0].successes(), 1);
  EXPECT_EQ((*stats)[1].version(), 2);
  EXPECT_EQ((*stats)[1].trials(), 3);
  EXPECT_EQ((*stats)[1].successes(), 1);
  EXPECT_DOUBLE_EQ((*stats)[1].alpha(), 2.0);
  EXPECT_DOUBLE_EQ((*stats)[1].beta(), 3.0);
  EXPECT_DOUBLE_EQ((*stats)[1].mean(), 0.4);
  // A replayed commit counts once.
  v1::Episode again = MakeEpisode("v4", 4);
  again.set_strategy_version(2);
  REFLEXION_ASSERT_OK(this->store().CommitLearning(MakeCommit(again, true)));
  stats = this->store().GetVersionStats(kStrategy);
  REFLEXION_ASSERT_OK(stats);
  EXPECT_EQ((*stats)[1].trials(), 3);
  absl::StatusOr<std::vector<v1::VersionStats>> none =
      this->store().GetVersionStats("no_such_strategy");
  REFLEXION_ASSERT_OK(none);
  EXPECT_THAT(*none, IsEmpty());
}

TYPED_TEST(KnowledgeStoreContractTest,
           RetentionByCountRemovesTheOldestAndKeepsWhatWasLearned) {
  for (int i = 0; i < 6; ++i) {
    REFLEXION_ASSERT_OK(this->store().CommitLearning(
        MakeCommit(MakeEpisode(absl::StrCat("e", i), 100 + i), i % 2 == 0)));
  }
  absl::StatusOr<int64_t> removed =
      this->store().RetainEpisodes(4, absl::InfinitePast());
  REFLEXION_ASSERT_OK(removed);
  EXPECT_EQ(*removed, 2);
  EXPECT_THAT(AllIdsOldestFirst(this->store()),
              ElementsAre("e2", "e3", "e4", "e5"));
  // The indexes follow: a signature listing sees only what is left.
  core::EpisodeQuery q;
  q.signature = kSignature;
  EXPECT_THAT(PageThrough(this->store(), q),
              ElementsAre("e5", "e4", "e3", "e2"));
  q = core::EpisodeQuery();
  q.workflow_id = "wf-e0";
  EXPECT_THAT(PageThrough(this->store(), q), IsEmpty());
  // Posteriors and version records are kept.
  absl::StatusOr<std::vector<v1::StrategyStats>> stats =
      this->store().GetStats(kSignature);
  REFLEXION_ASSERT_OK(stats);
  ASSERT_THAT(*stats, SizeIs(1));
  EXPECT_EQ((*stats)[0].trials(), 6);
  absl::StatusOr<std::vector<v1::VersionStats>> versions =
      this->store().GetVersionStats(kStrategy);
  REFLEXION_ASSERT_OK(versions);
  ASSERT_THAT(*versions, SizeIs(1));
  EXPECT_EQ((*versions)[0].trials(), 6);
  // Under the bound: nothing to do.
  removed = this->store().RetainEpisodes(4, absl::InfinitePast());
  REFLEXION_ASSERT_OK(removed);
  EXPECT_EQ(*removed, 0);
  EXPECT_THAT(
      this->store().RetainEpisodes(-1, absl::InfinitePast()),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_episodes")));
}

TYPED_TEST(KnowledgeStoreContractTest, RetentionByAgeRemovesOnlyOlderEpisodes) {
  for (int i = 0; i < 5; ++i) {
    REFLEXION_ASSERT_OK(this->store().CommitLearning(
        MakeCommit(MakeEpisode(absl::StrCat("e", i), 100 + i), true)));
  }
  // Older than t = 102 s: e0 and e1; e2 (exactly at the cut-off) stays.
  absl::StatusOr<int64_t> removed =
      this->store().RetainEpisodes(0, absl::FromUnixSeconds(102));
  REFLEXION_ASSERT_OK(removed);
  EXPECT_EQ(*removed, 2);
  EXPECT_THAT(AllIdsOldestFirst(this->store()), ElementsAre("e2", "e3", "e4"));
  // Both bounds: age first, then count.
  removed = this->store().RetainEpisodes(1, absl::FromUnixSeconds(103));
  REFLEXION_ASSERT_OK(removed);
  EXPECT_EQ(*removed, 2);
  EXPECT_THAT(AllIdsOldestFirst(this->store()), ElementsAre("e4"));
}

TYPED_TEST(KnowledgeStoreContractTest,
           ClearMemoryOfOneSignatureKeepsTheOthers) {
  REFLEXION_ASSERT_OK(
      this->store().CommitLearning(MakeCommit(MakeEpisode("a1", 1), true)));
  REFLEXION_ASSERT_OK(
      this->store().CommitLearning(MakeCommit(MakeEpisode("a2", 2), false)));
  v1::Episode other = MakeEpisode("b1", 3);
  other.set_signature("ImagePullBackOff/image_not_found");
  REFLEXION_ASSERT_OK(this->store().CommitLearning(MakeCommit(other, true)));
  absl::StatusOr<core::MemoryCleared> cleared =
      this->store().ClearMemory(kSignature);
  REFLEXION_ASSERT_OK(cleared);
  EXPECT_EQ(cleared->episodes, 2);
  EXPECT_EQ(cleared->posteriors, 1);
  EXPECT_THAT(AllIdsOldestFirst(this->store()), ElementsAre("b1"));
  absl::StatusOr<std::vector<v1::StrategyStats>> stats =
      this->store().GetStats("");
  REFLEXION_ASSERT_OK(stats);
  ASSERT_THAT(*stats, SizeIs(1));
  EXPECT_EQ((*stats)[0].signature(), "ImagePullBackOff/image_not_found");
  core::EpisodeQuery q;
  q.signature = kSignature;
  EXPECT_THAT(PageThrough(this->store(), q), IsEmpty());
  // Version records stay.
  absl::StatusOr<std::vector<v1::VersionStats>> versions =
      this->store().GetVersionStats(kStrategy);
  REFLEXION_ASSERT_OK(versions);
  ASSERT_THAT(*versions, SizeIs(1));
  EXPECT_EQ((*versions)[0].trials(), 3);
}

TYPED_TEST(KnowledgeStoreContractTest, ClearMemoryOfEverythingEmptiesIt) {
  REFLEXION_ASSERT_OK(
      this->store().CommitLearning(MakeCommit(MakeEpisode("a1", 1), true)));
  v1::Episode other = MakeEpisode("b1", 3);
  other.set_signature("ImagePullBackOff/image_not_found");
  REFLEXION_ASSERT_OK(this->store().CommitLearning(MakeCommit(other, true)));
  REFLEXION_ASSERT_OK(
      this->store().PutStrategyVersion(MakeStrategy(kStrategy, 1)));
  absl::StatusOr<core::MemoryCleared> cleared = this->store().ClearMemory("");
  REFLEXION_ASSERT_OK(cleared);
  EXPECT_EQ(cleared->episodes, 2);
  EXPECT_EQ(cleared->posteriors, 2);
  EXPECT_THAT(AllIdsOldestFirst(this->store()), IsEmpty());
  absl::StatusOr<std::vector<v1::StrategyStats>> stats =
      this->store().GetStats("");
  REFLEXION_ASSERT_OK(stats);
  EXPECT_THAT(*stats, IsEmpty());
  absl::StatusOr<std::vector<v1::Strategy>> history =
      this->store().GetStrategyHistory(kStrategy);
  REFLEXION_ASSERT_OK(history);
  EXPECT_THAT(*history, SizeIs(1));
}

}  // namespace
}  // namespace reflexion

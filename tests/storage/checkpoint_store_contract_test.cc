// The CheckpointStore contract: every test runs against the in-memory fake
// and the RocksDB store (a fresh temp dir per test).

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/ports/checkpoint_store.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/rocksdb_checkpoint_store.h"
#include "storage/rocksdb_db.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion {
namespace {

using core::Checkpoint;
using core::WorkflowPhase;
using core::WorkflowRecord;
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
  core::CheckpointStore& store() { return store_; }

 private:
  core::InMemoryCheckpointStore store_;
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
  core::CheckpointStore& store() { return store_; }

 private:
  testing::TempDir dir_;  // destroyed last: after the DB is closed
  std::unique_ptr<storage::RocksDb> db_;
  storage::RocksDbCheckpointStore store_;
};

template <typename Backend>
class CheckpointStoreContractTest : public ::testing::Test {
 protected:
  core::CheckpointStore& store() { return backend_.store(); }

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
TYPED_TEST_SUITE(CheckpointStoreContractTest, Backends, BackendName);

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

constexpr WorkflowPhase kRunning = WorkflowPhase::kRunning;
constexpr WorkflowPhase kWaiting = WorkflowPhase::kWaiting;
constexpr WorkflowPhase kCompleted = WorkflowPhase::kCompleted;
constexpr WorkflowPhase kFailed = WorkflowPhase::kFailed;
constexpr WorkflowPhase kCancelled = WorkflowPhase::kCancelled;

// Step s of workflow `id` happened at T(s).
absl::Time T(int64_t seconds) {
  return absl::FromUnixSeconds(1'700'000'000 + seconds);
}

Checkpoint MakeCheckpoint(const std::string& id, uint64_t step) {
  Checkpoint c;
  c.workflow_id = id;
  c.step = step;
  c.node = step == 0 ? "" : absl::StrCat("node", step);
  c.next_node = absl::StrCat("node", step + 1);
  c.last_sequence = 10 * step;
  c.time = T(static_cast<int64_t>(step));
  c.state = absl::StrCat("state of ", id, " after step ", step);
  return c;
}

// Puts steps [first, last] of `id` with `phase` and `keep_last`.
void PutSteps(core::CheckpointStore& store, const std::string& id,
              uint64_t first, uint64_t last, WorkflowPhase phase = kRunning,
              int keep_last = 0) {
  for (uint64_t s = first; s <= last; ++s) {
    ASSERT_THAT(store.Put(MakeCheckpoint(id, s), phase, keep_last, false),
                IsOk())
        << id << " step " << s;
  }
}

std::vector<uint64_t> Steps(const std::vector<Checkpoint>& checkpoints) {
  std::vector<uint64_t> out;
  for (const Checkpoint& c : checkpoints) out.push_back(c.step);
  return out;
}

std::vector<uint64_t> StoredSteps(core::CheckpointStore& store,
                                  const std::string& id) {
  absl::StatusOr<std::vector<Checkpoint>> list = store.List(id, 0);
  EXPECT_THAT(list, IsOk());
  return list.ok() ? Steps(*list) : std::vector<uint64_t>();
}

std::vector<std::string> Ids(const std::vector<WorkflowRecord>& records) {
  std::vector<std::string> out;
  for (const WorkflowRecord& r : records) out.push_back(r.workflow_id);
  return out;
}

std::vector<std::string> IdsInPhase(core::CheckpointStore& store,
                                    WorkflowPhase phase) {
  absl::StatusOr<std::vector<WorkflowRecord>> records =
      store.ListByPhase(phase);
  EXPECT_THAT(records, IsOk());
  return records.ok() ? Ids(*records) : std::vector<std::string>();
}

void ExpectSameCheckpoint(const Checkpoint& got, const Checkpoint& want) {
  EXPECT_EQ(got.workflow_id, want.workflow_id);
  EXPECT_EQ(got.step, want.step);
  EXPECT_EQ(got.node, want.node);
  EXPECT_EQ(got.next_node, want.next_node);
  EXPECT_EQ(got.last_sequence, want.last_sequence);
  EXPECT_EQ(got.time, want.time);
  EXPECT_EQ(got.state, want.state);
  EXPECT_EQ(got.parent_workflow_id, want.parent_workflow_id);
  EXPECT_EQ(got.parent_step, want.parent_step);
  EXPECT_EQ(got.error, want.error);
}

// ---------------------------------------------------------------------------
// Put and reads.
// ---------------------------------------------------------------------------

TYPED_TEST(CheckpointStoreContractTest,
           PutCheckpointsAreReadBackByLatestGetAndListNewestFirst) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 3));
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint latest, this->store().Latest("wf"));
  ExpectSameCheckpoint(latest, MakeCheckpoint("wf", 3));
  for (uint64_t s = 0; s <= 3; ++s) {
    REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint c, this->store().Get("wf", s));
    ExpectSameCheckpoint(c, MakeCheckpoint("wf", s));
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto list, this->store().List("wf", 0));
  EXPECT_THAT(Steps(list), ElementsAre(3, 2, 1, 0));
}

TYPED_TEST(CheckpointStoreContractTest, ListReturnsAtMostLimitNewestFirst) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 5));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto two, this->store().List("wf", 2));
  EXPECT_THAT(Steps(two), ElementsAre(5, 4));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto many, this->store().List("wf", 100));
  EXPECT_THAT(Steps(many), ElementsAre(5, 4, 3, 2, 1, 0));
}

TYPED_TEST(CheckpointStoreContractTest,
           AnUnknownWorkflowHasNoRecordNoCheckpointAndAnEmptyList) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf-1", 0, 1));
  EXPECT_THAT(this->store().GetWorkflow("wf"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("wf")));
  EXPECT_THAT(this->store().Latest("wf"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(this->store().Get("wf", 0),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(this->store().Get("wf-1", 7),
              StatusIs(absl::StatusCode::kNotFound));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto list, this->store().List("wf", 0));
  EXPECT_THAT(list, IsEmpty());
}

TYPED_TEST(CheckpointStoreContractTest,
           WorkflowsWhoseIdsPrefixEachOtherKeepSeparateHistories) {
  // Ids that look like the RocksDB store's key prefixes, and ids that are
  // prefixes of one another.
  for (const std::string id : {"a", "ab", "a\x01", "r", "p", "e", "p\x01"}) {
    SCOPED_TRACE(id);
    ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), id, 0, id.size()));
  }
  for (const std::string id : {"a", "ab", "a\x01", "r", "p", "e", "p\x01"}) {
    SCOPED_TRACE(id);
    REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint latest, this->store().Latest(id));
    EXPECT_EQ(latest.workflow_id, id);
    EXPECT_EQ(latest.step, id.size());
    EXPECT_THAT(StoredSteps(this->store(), id), SizeIs(id.size() + 1));
  }
  EXPECT_THAT(IdsInPhase(this->store(), kRunning),
              ElementsAre("a", "a\x01", "ab", "e", "p", "p\x01", "r"));
}

TYPED_TEST(CheckpointStoreContractTest,
           EveryCheckpointFieldRoundTripsIncludingBinaryState) {
  Checkpoint c;
  c.workflow_id = "wf-binary";
  c.step = 0xfedcba9876543210ULL;
  c.node = "diagnose";
  c.next_node = "__end__";
  c.last_sequence = 0x0102030405060708ULL;
  c.time = absl::FromUnixNanos(1'700'000'123'456'789'123);
  c.state = std::string("\0\x01\xff state \0 with NULs\0", 22);
  c.state.append(100'000, '\x7f');
  c.parent_workflow_id = "wf-parent";
  c.parent_step = 41;
  c.error = "UNAVAILABLE: executor down";
  REFLEXION_ASSERT_OK(this->store().Put(c, kWaiting, 0, true));
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint got,
                                 this->store().Get("wf-binary", c.step));
  ExpectSameCheckpoint(got, c);
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint latest,
                                 this->store().Latest("wf-binary"));
  ExpectSameCheckpoint(latest, c);
  // Times before the epoch survive too.
  Checkpoint old = MakeCheckpoint("wf-old", 0);
  old.time = absl::FromUnixNanos(-1'234'567'891);
  REFLEXION_ASSERT_OK(this->store().Put(old, kRunning, 0, false));
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint got_old,
                                 this->store().Latest("wf-old"));
  EXPECT_EQ(got_old.time, old.time);
}

TYPED_TEST(CheckpointStoreContractTest, ForkMetadataRoundTrips) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "parent", 0, 4));
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint source,
                                 this->store().Get("parent", 2));
  Checkpoint fork = source;
  fork.workflow_id = "child";
  fork.parent_workflow_id = "parent";
  fork.parent_step = 2;
  fork.time = T(100);
  REFLEXION_ASSERT_OK(this->store().Put(fork, kRunning, 0, true));
  // The fork continues from the parent's step number.
  Checkpoint next = MakeCheckpoint("child", 3);
  REFLEXION_ASSERT_OK(this->store().Put(next, kRunning, 0, false));

  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint first,
                                 this->store().Get("child", 2));
  ExpectSameCheckpoint(first, fork);
  EXPECT_EQ(first.parent_workflow_id, "parent");
  EXPECT_EQ(first.parent_step, 2u);
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint latest,
                                 this->store().Latest("child"));
  EXPECT_EQ(latest.parent_workflow_id, "");
  EXPECT_EQ(latest.parent_step, 0u);
  // The parent is untouched.
  EXPECT_THAT(StoredSteps(this->store(), "parent"), ElementsAre(4, 3, 2, 1, 0));
}

// ---------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------

TYPED_TEST(CheckpointStoreContractTest, StepZeroIsAllowedAsTheFirstCheckpoint) {
  REFLEXION_ASSERT_OK(
      this->store().Put(MakeCheckpoint("wf", 0), kRunning, 0, false));
  REFLEXION_ASSERT_OK_AND_ASSIGN(WorkflowRecord r,
                                 this->store().GetWorkflow("wf"));
  EXPECT_EQ(r.last_step, 0u);
  // ... but only once.
  EXPECT_THAT(this->store().Put(MakeCheckpoint("wf", 0), kRunning, 0, false),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TYPED_TEST(CheckpointStoreContractTest,
           ANonIncreasingStepIsFailedPreconditionAndWritesNothing) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 5, kRunning, 3));
  for (uint64_t bad : {5, 4, 0}) {
    SCOPED_TRACE(bad);
    Checkpoint c = MakeCheckpoint("wf", bad);
    c.state = "overwrite attempt";
    c.time = T(1000);
    EXPECT_THAT(
        this->store().Put(c, kCompleted, 1, true),
        StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("wf")));
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(WorkflowRecord r,
                                 this->store().GetWorkflow("wf"));
  EXPECT_EQ(r.phase, kRunning);
  EXPECT_EQ(r.last_step, 5u);
  EXPECT_EQ(r.updated, T(5));
  EXPECT_THAT(StoredSteps(this->store(), "wf"), ElementsAre(5, 4, 3));
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint c5, this->store().Get("wf", 5));
  ExpectSameCheckpoint(c5, MakeCheckpoint("wf", 5));
  EXPECT_THAT(IdsInPhase(this->store(), kCompleted), IsEmpty());
  EXPECT_THAT(IdsInPhase(this->store(), kRunning), ElementsAre("wf"));
  // The workflow still accepts its next step.
  REFLEXION_EXPECT_OK(
      this->store().Put(MakeCheckpoint("wf", 6), kRunning, 3, false));
}

TYPED_TEST(CheckpointStoreContractTest,
           AnEmptyOrNulWorkflowIdIsInvalidArgumentEverywhere) {
  for (const std::string& id : {std::string(), std::string("a\0b", 3)}) {
    SCOPED_TRACE(id.size());
    EXPECT_THAT(
        this->store().Put(MakeCheckpoint(id, 0), kRunning, 0, false),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("workflow_id")));
    EXPECT_THAT(this->store().SetPhase(id, kFailed, T(1), false),
                StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(this->store().GetWorkflow(id),
                StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(this->store().Latest(id),
                StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(this->store().Get(id, 0),
                StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_THAT(this->store().List(id, 0),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(IdsInPhase(this->store(), kRunning), IsEmpty());
  EXPECT_THAT(this->store().GetWorkflow("a"),
              StatusIs(absl::StatusCode::kNotFound));
}

TYPED_TEST(CheckpointStoreContractTest,
           NegativeCountsAndUnknownPhasesAreInvalidArgument) {
  const auto bad_phase = static_cast<WorkflowPhase>(9);
  EXPECT_THAT(
      this->store().Put(MakeCheckpoint("wf", 0), kRunning, -1, false),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("keep_last")));
  EXPECT_THAT(this->store().Put(MakeCheckpoint("wf", 0), bad_phase, 0, false),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(this->store().GetWorkflow("wf"),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 0));
  EXPECT_THAT(this->store().SetPhase("wf", bad_phase, T(1), false),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(this->store().List("wf", -1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
  EXPECT_THAT(this->store().ListByPhase(bad_phase),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      this->store().ExpireFinished(T(100), -1),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max_workflows")));
}

// ---------------------------------------------------------------------------
// Retention by count.
// ---------------------------------------------------------------------------

TYPED_TEST(CheckpointStoreContractTest,
           KeepLastPrunesTheOldestSoExactlyKRemain) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 9, kRunning, 3));
  EXPECT_THAT(StoredSteps(this->store(), "wf"), ElementsAre(9, 8, 7));
  for (uint64_t pruned = 0; pruned <= 6; ++pruned) {
    EXPECT_THAT(this->store().Get("wf", pruned),
                StatusIs(absl::StatusCode::kNotFound))
        << pruned;
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint latest, this->store().Latest("wf"));
  EXPECT_EQ(latest.step, 9u);
}

TYPED_TEST(CheckpointStoreContractTest, KeepLastZeroKeepsEveryCheckpoint) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 24, kRunning, 0));
  EXPECT_THAT(StoredSteps(this->store(), "wf"), SizeIs(25));
  REFLEXION_EXPECT_OK(this->store().Get("wf", 0));
}

TYPED_TEST(CheckpointStoreContractTest,
           KeepLastCountsCheckpointsNotStepsWhenStepsHaveGaps) {
  // A fork starts at its parent's step, and its first write keeps all.
  for (uint64_t s : {5, 9}) {
    REFLEXION_ASSERT_OK(
        this->store().Put(MakeCheckpoint("wf", s), kRunning, 0, false));
  }
  for (uint64_t s : {10, 20, 21}) {
    REFLEXION_ASSERT_OK(
        this->store().Put(MakeCheckpoint("wf", s), kRunning, 3, false));
    EXPECT_THAT(StoredSteps(this->store(), "wf"), SizeIs(3)) << s;
  }
  EXPECT_THAT(StoredSteps(this->store(), "wf"), ElementsAre(21, 20, 10));
  // A smaller keep_last prunes more; keep_last 0 then keeps everything again.
  REFLEXION_ASSERT_OK(
      this->store().Put(MakeCheckpoint("wf", 30), kRunning, 1, false));
  EXPECT_THAT(StoredSteps(this->store(), "wf"), ElementsAre(30));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 31, 34, kRunning, 0));
  EXPECT_THAT(StoredSteps(this->store(), "wf"),
              ElementsAre(34, 33, 32, 31, 30));
  REFLEXION_ASSERT_OK(
      this->store().Put(MakeCheckpoint("wf", 40), kRunning, 2, false));
  EXPECT_THAT(StoredSteps(this->store(), "wf"), ElementsAre(40, 34));
}

// ---------------------------------------------------------------------------
// Records and phases.
// ---------------------------------------------------------------------------

TYPED_TEST(CheckpointStoreContractTest,
           TheRecordFollowsThePhaseLastStepAndTimeOfEachPut) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 2, kRunning));
  REFLEXION_ASSERT_OK_AND_ASSIGN(WorkflowRecord r,
                                 this->store().GetWorkflow("wf"));
  EXPECT_EQ(r.workflow_id, "wf");
  EXPECT_EQ(r.phase, kRunning);
  EXPECT_EQ(r.last_step, 2u);
  EXPECT_EQ(r.updated, T(2));

  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 3, 3, kWaiting));
  REFLEXION_ASSERT_OK_AND_ASSIGN(r, this->store().GetWorkflow("wf"));
  EXPECT_EQ(r.phase, kWaiting);
  EXPECT_EQ(r.last_step, 3u);
  EXPECT_EQ(r.updated, T(3));

  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 7, 7, kCompleted));
  REFLEXION_ASSERT_OK_AND_ASSIGN(r, this->store().GetWorkflow("wf"));
  EXPECT_EQ(r.phase, kCompleted);
  EXPECT_EQ(r.last_step, 7u);
  EXPECT_EQ(r.updated, T(7));
}

TYPED_TEST(CheckpointStoreContractTest,
           SetPhaseChangesOnlyThePhaseAndTheUpdateTime) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 4, kWaiting));
  REFLEXION_ASSERT_OK(this->store().SetPhase("wf", kCancelled, T(50), true));
  REFLEXION_ASSERT_OK_AND_ASSIGN(WorkflowRecord r,
                                 this->store().GetWorkflow("wf"));
  EXPECT_EQ(r.phase, kCancelled);
  EXPECT_EQ(r.last_step, 4u);
  EXPECT_EQ(r.updated, T(50));
  EXPECT_THAT(StoredSteps(this->store(), "wf"), ElementsAre(4, 3, 2, 1, 0));
  // The next Put still needs a later step.
  EXPECT_THAT(this->store().Put(MakeCheckpoint("wf", 4), kRunning, 0, false),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TYPED_TEST(CheckpointStoreContractTest, SetPhaseOfAnUnknownWorkflowIsNotFound) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf-1", 0, 0));
  EXPECT_THAT(this->store().SetPhase("wf", kCancelled, T(1), false),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("wf")));
  EXPECT_THAT(this->store().GetWorkflow("wf"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(IdsInPhase(this->store(), kCancelled), IsEmpty());
}

TYPED_TEST(CheckpointStoreContractTest,
           ListByPhaseReturnsExactlyTheWorkflowsInThatPhaseOrderedById) {
  // Created out of id order.
  for (const char* id : {"d", "b", "a", "c", "e"}) {
    ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), id, 0, 1));
  }
  REFLEXION_ASSERT_OK(
      this->store().Put(MakeCheckpoint("b", 2), kWaiting, 0, false));
  REFLEXION_ASSERT_OK(this->store().SetPhase("d", kWaiting, T(9), false));
  REFLEXION_ASSERT_OK(
      this->store().Put(MakeCheckpoint("a", 2), kCompleted, 0, false));
  REFLEXION_ASSERT_OK(this->store().SetPhase("b", kRunning, T(9), false));
  REFLEXION_ASSERT_OK(
      this->store().Put(MakeCheckpoint("b", 3), kFailed, 0, false));
  REFLEXION_ASSERT_OK(this->store().SetPhase("c", kCancelled, T(9), false));
  REFLEXION_ASSERT_OK(this->store().SetPhase("c", kCancelled, T(10), false));
  REFLEXION_ASSERT_OK(this->store().SetPhase("e", kWaiting, T(9), false));
  REFLEXION_ASSERT_OK(this->store().SetPhase("e", kRunning, T(10), false));

  EXPECT_THAT(IdsInPhase(this->store(), kRunning), ElementsAre("e"));
  EXPECT_THAT(IdsInPhase(this->store(), kWaiting), ElementsAre("d"));
  EXPECT_THAT(IdsInPhase(this->store(), kCompleted), ElementsAre("a"));
  EXPECT_THAT(IdsInPhase(this->store(), kFailed), ElementsAre("b"));
  EXPECT_THAT(IdsInPhase(this->store(), kCancelled), ElementsAre("c"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto waiting,
                                 this->store().ListByPhase(kWaiting));
  ASSERT_THAT(waiting, SizeIs(1));
  EXPECT_EQ(waiting[0].last_step, 1u);
  EXPECT_EQ(waiting[0].updated, T(9));
}

TYPED_TEST(CheckpointStoreContractTest,
           ListByPhaseAndGetWorkflowReportTheLastWriteOfEachWorkflow) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "a", 0, 6, kRunning, 2));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "b", 0, 2, kRunning));
  // A phase change, then more steps in the new phase, then a same-phase
  // SetPhase: each write moves last_step or updated.
  REFLEXION_ASSERT_OK(this->store().SetPhase("b", kWaiting, T(40), false));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "b", 3, 4, kWaiting));
  REFLEXION_ASSERT_OK(this->store().SetPhase("a", kRunning, T(70), false));

  REFLEXION_ASSERT_OK_AND_ASSIGN(auto running,
                                 this->store().ListByPhase(kRunning));
  ASSERT_THAT(Ids(running), ElementsAre("a"));
  EXPECT_EQ(running[0].last_step, 6u);
  EXPECT_EQ(running[0].updated, T(70));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto waiting,
                                 this->store().ListByPhase(kWaiting));
  ASSERT_THAT(Ids(waiting), ElementsAre("b"));
  EXPECT_EQ(waiting[0].last_step, 4u);
  EXPECT_EQ(waiting[0].updated, T(4));
  REFLEXION_ASSERT_OK_AND_ASSIGN(WorkflowRecord b,
                                 this->store().GetWorkflow("b"));
  EXPECT_EQ(b.phase, kWaiting);
  EXPECT_EQ(b.last_step, 4u);
  EXPECT_EQ(b.updated, T(4));
}

// ---------------------------------------------------------------------------
// Retention by age.
// ---------------------------------------------------------------------------

TYPED_TEST(CheckpointStoreContractTest,
           ExpireFinishedDeletesOnlyTerminalWorkflowsUpdatedBeforeTheCutoff) {
  // Finished at T(1), T(2), T(3) and T(20); live ones last updated at T(1).
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "done", 0, 1, kCompleted));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "failed", 0, 2, kFailed));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "cancelled", 0, 0));
  REFLEXION_ASSERT_OK(
      this->store().SetPhase("cancelled", kCancelled, T(3), false));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "recent", 0, 0));
  REFLEXION_ASSERT_OK(
      this->store().Put(MakeCheckpoint("recent", 20), kCompleted, 0, false));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "running", 0, 1, kRunning));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "waiting", 0, 1, kWaiting));

  // T(3) itself is not before the cutoff.
  REFLEXION_ASSERT_OK_AND_ASSIGN(int n, this->store().ExpireFinished(T(3), 0));
  EXPECT_EQ(n, 2);
  for (const char* gone : {"done", "failed"}) {
    EXPECT_THAT(this->store().GetWorkflow(gone),
                StatusIs(absl::StatusCode::kNotFound))
        << gone;
  }
  for (const char* kept : {"cancelled", "recent", "running", "waiting"}) {
    REFLEXION_EXPECT_OK(this->store().GetWorkflow(kept)) << kept;
    REFLEXION_EXPECT_OK(this->store().Latest(kept)) << kept;
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(1000), 0));
  EXPECT_EQ(n, 2);
  EXPECT_THAT(IdsInPhase(this->store(), kRunning), ElementsAre("running"));
  EXPECT_THAT(IdsInPhase(this->store(), kWaiting), ElementsAre("waiting"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(1000), 0));
  EXPECT_EQ(n, 0);
}

TYPED_TEST(CheckpointStoreContractTest,
           ExpireFinishedHonoursMaxWorkflowsOldestFirst) {
  // wf-i finishes at T(10 - i): the highest id is the oldest.
  for (int i = 0; i < 5; ++i) {
    const std::string id = absl::StrCat("wf-", i);
    Checkpoint c = MakeCheckpoint(id, 0);
    c.time = T(10 - i);
    REFLEXION_ASSERT_OK(this->store().Put(c, kCompleted, 0, false));
  }
  std::vector<std::string> expired;
  REFLEXION_ASSERT_OK_AND_ASSIGN(
      int n, this->store().ExpireFinished(T(100), 2, &expired));
  EXPECT_EQ(n, 2);
  EXPECT_THAT(expired, ElementsAre("wf-4", "wf-3"));
  EXPECT_THAT(IdsInPhase(this->store(), kCompleted),
              ElementsAre("wf-0", "wf-1", "wf-2"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(100), 2));
  EXPECT_EQ(n, 2);
  EXPECT_THAT(IdsInPhase(this->store(), kCompleted), ElementsAre("wf-0"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(100), 2));
  EXPECT_EQ(n, 1);
}

TYPED_TEST(CheckpointStoreContractTest,
           ExpiryFindsAWorkflowThatEndedEarlierThanOnesAlreadyExpired) {
  Checkpoint late = MakeCheckpoint("late", 0);
  late.time = T(50);
  REFLEXION_ASSERT_OK(this->store().Put(late, kCompleted, 3, false));
  REFLEXION_ASSERT_OK_AND_ASSIGN(int n,
                                 this->store().ExpireFinished(T(100), 0));
  EXPECT_EQ(n, 1);
  // Written after that call, with an older time (a clock stepped back).
  for (int i = 0; i < 3; ++i) {
    Checkpoint early = MakeCheckpoint(absl::StrCat("early-", i), 0);
    early.time = T(10 + i);
    REFLEXION_ASSERT_OK(this->store().Put(early, kFailed, 3, false));
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(100), 2));
  EXPECT_EQ(n, 2);
  EXPECT_THAT(IdsInPhase(this->store(), kFailed), ElementsAre("early-2"));
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(100), 0));
  EXPECT_EQ(n, 1);
  EXPECT_THAT(IdsInPhase(this->store(), kFailed), IsEmpty());
}

TYPED_TEST(CheckpointStoreContractTest,
           ExpiryUsesTheLatestUpdateOfAWorkflowThatFinishedTwice) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 1, kFailed));
  // Re-finished later (cancelled after failing), then resumed and finished.
  REFLEXION_ASSERT_OK(this->store().SetPhase("wf", kCancelled, T(50), false));
  REFLEXION_ASSERT_OK_AND_ASSIGN(int n, this->store().ExpireFinished(T(10), 0));
  EXPECT_EQ(n, 0);
  REFLEXION_ASSERT_OK(this->store().SetPhase("wf", kRunning, T(60), false));
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(55), 0));
  EXPECT_EQ(n, 0);
  REFLEXION_ASSERT_OK(
      this->store().Put(MakeCheckpoint("wf", 70), kCompleted, 0, false));
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(65), 0));
  EXPECT_EQ(n, 0);
  REFLEXION_ASSERT_OK_AND_ASSIGN(n, this->store().ExpireFinished(T(71), 0));
  EXPECT_EQ(n, 1);
}

TYPED_TEST(CheckpointStoreContractTest,
           AnExpiredWorkflowIsGoneAndItsIdCanStartAgainFromStepZero) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 5, kRunning, 3));
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 6, 6, kCompleted, 3));
  REFLEXION_ASSERT_OK_AND_ASSIGN(int n,
                                 this->store().ExpireFinished(T(100), 0));
  ASSERT_EQ(n, 1);
  EXPECT_THAT(this->store().GetWorkflow("wf"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(this->store().Latest("wf"),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(this->store().Get("wf", 6),
              StatusIs(absl::StatusCode::kNotFound));
  EXPECT_THAT(StoredSteps(this->store(), "wf"), IsEmpty());
  EXPECT_THAT(IdsInPhase(this->store(), kCompleted), IsEmpty());

  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 1, kRunning, 3));
  EXPECT_THAT(StoredSteps(this->store(), "wf"), ElementsAre(1, 0));
  EXPECT_THAT(IdsInPhase(this->store(), kRunning), ElementsAre("wf"));
}

// ---------------------------------------------------------------------------
// Concurrency.
// ---------------------------------------------------------------------------

TYPED_TEST(CheckpointStoreContractTest,
           ConcurrentPutsOnDistinctWorkflowsAllLand) {
  constexpr int kThreads = 8;
  constexpr uint64_t kSteps = 500;
  absl::Notification start;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.WaitForNotification();
      const std::string id = absl::StrCat("wf-", t);
      for (uint64_t s = 0; s < kSteps; ++s) {
        // Half the workflows prune, half keep everything.
        EXPECT_THAT(this->store().Put(MakeCheckpoint(id, s), kRunning,
                                      t % 2 == 0 ? 0 : 5, false),
                    IsOk());
      }
    });
  }
  start.Notify();
  for (std::thread& t : threads) t.join();
  for (int t = 0; t < kThreads; ++t) {
    const std::string id = absl::StrCat("wf-", t);
    REFLEXION_ASSERT_OK_AND_ASSIGN(WorkflowRecord r,
                                   this->store().GetWorkflow(id));
    EXPECT_EQ(r.last_step, kSteps - 1);
    EXPECT_THAT(StoredSteps(this->store(), id),
                SizeIs(t % 2 == 0 ? kSteps : 5));
  }
  EXPECT_THAT(IdsInPhase(this->store(), kRunning), SizeIs(kThreads));
}

TYPED_TEST(CheckpointStoreContractTest,
           ConcurrentPutsOfTheSameStepAcceptExactlyOne) {
  ASSERT_NO_FATAL_FAILURE(PutSteps(this->store(), "wf", 0, 0));
  for (uint64_t step = 1; step <= 20; ++step) {
    absl::Notification start;
    std::atomic<int> accepted{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        start.WaitForNotification();
        Checkpoint c = MakeCheckpoint("wf", step);
        c.state = absl::StrCat("writer ", t);
        absl::Status s = this->store().Put(c, kRunning, 2, false);
        if (s.ok()) {
          ++accepted;
        } else {
          EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition));
        }
      });
    }
    start.Notify();
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(accepted.load(), 1) << step;
  }
  EXPECT_THAT(StoredSteps(this->store(), "wf"), ElementsAre(20, 19));
}

}  // namespace
}  // namespace reflexion

// RocksDB-only behaviour of the checkpoint store: persistence across a
// reopen, storage bounded by retention, values that do not decode.

#include "storage/rocksdb_checkpoint_store.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "storage/rocksdb_db.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::storage {
namespace {

using core::Checkpoint;
using core::WorkflowPhase;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::reflexion::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

absl::Time T(int64_t seconds) {
  return absl::FromUnixSeconds(1'700'000'000 + seconds);
}

Checkpoint MakeCheckpoint(const std::string& id, uint64_t step) {
  Checkpoint c;
  c.workflow_id = id;
  c.step = step;
  c.node = absl::StrCat("node", step);
  c.next_node = absl::StrCat("node", step + 1);
  c.last_sequence = 3 * step;
  c.time = T(static_cast<int64_t>(step));
  c.state = std::string(200, static_cast<char>('a' + step % 26));
  return c;
}

std::vector<uint64_t> StoredSteps(core::CheckpointStore& store,
                                  const std::string& id) {
  std::vector<uint64_t> out;
  absl::StatusOr<std::vector<Checkpoint>> list = store.List(id, 0);
  EXPECT_THAT(list, IsOk());
  if (list.ok()) {
    for (const Checkpoint& c : *list) out.push_back(c.step);
  }
  return out;
}

// Every key of a column family, tombstones excluded.
int CountKeys(RocksDb& db, absl::string_view cf) {
  std::unique_ptr<rocksdb::Iterator> it(
      db.db()->NewIterator(rocksdb::ReadOptions(), db.ColumnFamily(cf)));
  int n = 0;
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++n;
  EXPECT_TRUE(it->status().ok()) << it->status().ToString();
  return n;
}

TEST(RocksDbCheckpointStoreTest, ReopeningTheDbFindsEveryRecordAndCheckpoint) {
  TempDir dir;
  {
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
    RocksDbCheckpointStore store(db.get());
    for (uint64_t s = 0; s <= 9; ++s) {
      REFLEXION_ASSERT_OK(store.Put(MakeCheckpoint("running", s),
                                    WorkflowPhase::kRunning, 3, false));
    }
    REFLEXION_ASSERT_OK(store.Put(MakeCheckpoint("waiting", 0),
                                  WorkflowPhase::kWaiting, 3, true));
    REFLEXION_ASSERT_OK(store.Put(MakeCheckpoint("done", 0),
                                  WorkflowPhase::kRunning, 0, false));
    REFLEXION_ASSERT_OK(store.Put(MakeCheckpoint("done", 1),
                                  WorkflowPhase::kCompleted, 0, false));
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbCheckpointStore store(db.get());

  REFLEXION_ASSERT_OK_AND_ASSIGN(auto running,
                                 store.ListByPhase(WorkflowPhase::kRunning));
  ASSERT_THAT(running, SizeIs(1));
  EXPECT_EQ(running[0].workflow_id, "running");
  EXPECT_EQ(running[0].last_step, 9u);
  EXPECT_EQ(running[0].updated, T(9));
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto waiting,
                                 store.ListByPhase(WorkflowPhase::kWaiting));
  ASSERT_THAT(waiting, SizeIs(1));
  EXPECT_EQ(waiting[0].workflow_id, "waiting");
  EXPECT_THAT(StoredSteps(store, "running"), ElementsAre(9, 8, 7));
  EXPECT_THAT(StoredSteps(store, "done"), ElementsAre(1, 0));
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint latest, store.Latest("running"));
  EXPECT_EQ(latest.state, MakeCheckpoint("running", 9).state);
  EXPECT_EQ(latest.next_node, "node10");

  // The reopened store knows the last step and prunes what it did not write.
  EXPECT_THAT(store.Put(MakeCheckpoint("running", 9), WorkflowPhase::kRunning,
                        3, false),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  REFLEXION_ASSERT_OK(store.Put(MakeCheckpoint("running", 10),
                                WorkflowPhase::kRunning, 2, false));
  EXPECT_THAT(StoredSteps(store, "running"), ElementsAre(10, 9));
  REFLEXION_ASSERT_OK_AND_ASSIGN(int expired, store.ExpireFinished(T(100), 0));
  EXPECT_EQ(expired, 1);
  EXPECT_THAT(store.GetWorkflow("done"), StatusIs(absl::StatusCode::kNotFound));
}

TEST(RocksDbCheckpointStoreTest, StorageStaysBoundedByKeepLastAndExpiry) {
  constexpr int kWorkflows = 2000;
  constexpr uint64_t kSteps = 20;
  constexpr int kKeepLast = 3;
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbCheckpointStore store(db.get());
  // Step-major, as interleaved workflows write; the last step finishes each.
  for (uint64_t s = 0; s < kSteps; ++s) {
    const WorkflowPhase phase =
        s + 1 == kSteps ? WorkflowPhase::kCompleted : WorkflowPhase::kRunning;
    for (int w = 0; w < kWorkflows; ++w) {
      ASSERT_THAT(store.Put(MakeCheckpoint(absl::StrCat("wf-", w), s), phase,
                            kKeepLast, false),
                  IsOk());
    }
  }
  for (int w = 0; w < kWorkflows; w += 97) {
    EXPECT_THAT(StoredSteps(store, absl::StrCat("wf-", w)),
                ElementsAre(19, 18, 17));
  }
  EXPECT_EQ(CountKeys(*db, "checkpoints"), kWorkflows * kKeepLast);
  // Per finished workflow: the record and its expiry entry.
  EXPECT_EQ(CountKeys(*db, "workflows"), kWorkflows * 2);

  REFLEXION_ASSERT_OK_AND_ASSIGN(int expired, store.ExpireFinished(T(1000), 0));
  EXPECT_EQ(expired, kWorkflows);
  EXPECT_EQ(CountKeys(*db, "checkpoints"), 0);
  EXPECT_EQ(CountKeys(*db, "workflows"), 0);
}

// Entries (puts and deletes) in a family's active memtable: what the WAL
// and the memtable received, before any flush.
uint64_t MemtableEntries(RocksDb& db, absl::string_view cf) {
  uint64_t n = 0;
  EXPECT_TRUE(db.db()->GetIntProperty(
      db.ColumnFamily(cf), "rocksdb.num-entries-active-mem-table", &n));
  return n;
}

// A store whose plain PutAsync writes wait for a batch-starting write.
RocksDbCheckpointStore::Options Patient() {
  RocksDbCheckpointStore::Options options;
  options.max_delay = absl::Hours(1);
  return options;
}

TEST(RocksDbCheckpointStoreTest,
     QueuedStepsAreOneBatchInOrderAndPrunedStepsAreNeverWritten) {
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbCheckpointStore store(db.get(), Patient());
  constexpr uint64_t kSteps = 20;
  absl::Mutex mu;
  std::vector<std::string> order;
  for (uint64_t s = 0; s < kSteps; ++s) {
    const WorkflowPhase phase =
        s + 1 == kSteps ? WorkflowPhase::kCompleted : WorkflowPhase::kRunning;
    store.PutAsync(MakeCheckpoint("wf", s), phase, 3, false,
                   [&, s](absl::Status status) {
                     EXPECT_THAT(status, IsOk()) << "step " << s;
                     absl::MutexLock lock(&mu);
                     order.push_back(absl::StrCat(s));
                   });
  }
  // Nothing asked for a write yet: nothing is written.
  EXPECT_EQ(store.batches_written(), 0u);
  EXPECT_EQ(MemtableEntries(*db, "checkpoints"), 0u);
  absl::Notification written;
  store.AfterWrites([&] {
    absl::MutexLock lock(&mu);
    order.push_back("barrier");
    written.Notify();
  });
  written.WaitForNotification();

  std::vector<std::string> want;
  for (uint64_t s = 0; s < kSteps; ++s) want.push_back(absl::StrCat(s));
  want.push_back("barrier");
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(order, want);
  }
  EXPECT_EQ(store.batches_written(), 1u);
  EXPECT_THAT(StoredSteps(store, "wf"), ElementsAre(19, 18, 17));
  // 20 puts and 17 prunes became the 3 retained checkpoints; the record and
  // the expiry entry were written once each (not the running phase entry,
  // added and removed in the same batch).
  EXPECT_EQ(MemtableEntries(*db, "checkpoints"), 3u);
  EXPECT_EQ(MemtableEntries(*db, "workflows"), 2u);
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto completed,
                                 store.ListByPhase(WorkflowPhase::kCompleted));
  ASSERT_THAT(completed, SizeIs(1));
  EXPECT_EQ(completed[0].last_step, kSteps - 1);
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto running,
                                 store.ListByPhase(WorkflowPhase::kRunning));
  EXPECT_THAT(running, SizeIs(0));
}

TEST(RocksDbCheckpointStoreTest, ARejectedQueuedWriteFailsAloneInItsBatch) {
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbCheckpointStore store(db.get(), Patient());
  std::vector<absl::Status> statuses(4);
  const uint64_t steps[] = {0, 1, 1, 2};  // the second 1 repeats a step
  for (int i = 0; i < 4; ++i) {
    store.PutAsync(MakeCheckpoint("wf", steps[i]), WorkflowPhase::kRunning, 0,
                   false, [&, i](absl::Status s) { statuses[i] = s; });
  }
  // A blocking Put starts the batch and returns after the writes before it.
  REFLEXION_ASSERT_OK(
      store.Put(MakeCheckpoint("other", 0), WorkflowPhase::kRunning, 0, false));
  EXPECT_EQ(store.batches_written(), 1u);
  EXPECT_THAT(statuses[0], IsOk());
  EXPECT_THAT(statuses[1], IsOk());
  EXPECT_THAT(statuses[2],
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("wf")));
  EXPECT_THAT(statuses[3], IsOk());
  EXPECT_THAT(StoredSteps(store, "wf"), ElementsAre(2, 1, 0));
}

TEST(RocksDbCheckpointStoreTest, ExpiryRacingWritersLeavesAConsistentStore) {
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbCheckpointStore store(db.get());
  constexpr int kThreads = 3;
  constexpr int kWorkflowsPerThread = 300;
  std::atomic<bool> stop{false};
  std::atomic<int> expired{0};
  std::thread expirer([&] {
    while (!stop.load()) {
      absl::StatusOr<int> n = store.ExpireFinished(T(1000), 50);
      ASSERT_THAT(n, IsOk());
      expired += *n;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int w = 0; w < kWorkflowsPerThread; ++w) {
        const std::string id = absl::StrCat("wf-", t, "-", w);
        for (uint64_t s = 0; s < 6; ++s) {
          const WorkflowPhase phase =
              s == 5 ? WorkflowPhase::kCompleted : WorkflowPhase::kRunning;
          store.PutAsync(MakeCheckpoint(id, s), phase, 2, false,
                         [](absl::Status st) { ASSERT_THAT(st, IsOk()); });
        }
      }
    });
  }
  for (std::thread& w : writers) w.join();
  absl::Notification written;
  store.AfterWrites([&] { written.Notify(); });
  written.WaitForNotification();
  stop = true;
  expirer.join();
  REFLEXION_ASSERT_OK_AND_ASSIGN(int rest, store.ExpireFinished(T(1000), 0));
  EXPECT_EQ(expired + rest, kThreads * kWorkflowsPerThread);
  EXPECT_EQ(CountKeys(*db, "checkpoints"), 0);
  EXPECT_EQ(CountKeys(*db, "workflows"), 0);
}

TEST(RocksDbCheckpointStoreTest,
     AWorkflowWrittenBetweenAnExpiryScanAndItsDeletionIsKept) {
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbCheckpointStore store(db.get(), Patient());
  REFLEXION_ASSERT_OK(
      store.Put(MakeCheckpoint("wf", 0), WorkflowPhase::kCompleted, 0, false));
  // Queued, not yet written when ExpireFinished reads the expiry index: the
  // finished workflow goes on (a resumed or forked id), written just before
  // the deletion would be.
  absl::Notification written;
  store.PutAsync(MakeCheckpoint("wf", 1), WorkflowPhase::kRunning, 0, false,
                 [&](absl::Status s) {
                   EXPECT_THAT(s, IsOk());
                   written.Notify();
                 });
  REFLEXION_ASSERT_OK_AND_ASSIGN(int expired, store.ExpireFinished(T(100), 0));
  EXPECT_TRUE(written.HasBeenNotified());
  EXPECT_EQ(expired, 0);
  REFLEXION_ASSERT_OK_AND_ASSIGN(core::WorkflowRecord record,
                                 store.GetWorkflow("wf"));
  EXPECT_EQ(record.phase, WorkflowPhase::kRunning);
  EXPECT_THAT(StoredSteps(store, "wf"), ElementsAre(1, 0));
}

TEST(RocksDbCheckpointStoreTest,
     FinishedWorkflowsOfAnOlderBuildAreListedAndExpired) {
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbCheckpointStore store(db.get());
  REFLEXION_ASSERT_OK(
      store.Put(MakeCheckpoint("old", 0), WorkflowPhase::kFailed, 0, false));
  // What an older build wrote: a phase entry for a finished workflow and a
  // one-byte expiry value (no flag, no steps).
  rocksdb::ColumnFamilyHandle* workflows = db->ColumnFamily("workflows");
  std::unique_ptr<rocksdb::Iterator> it(
      db->db()->NewIterator(rocksdb::ReadOptions(), workflows));
  it->Seek("e");
  ASSERT_TRUE(it->Valid() && it->key().starts_with("e"));
  const std::string expiry_key = it->key().ToString();
  it.reset();
  const char failed = static_cast<char>(WorkflowPhase::kFailed);
  ASSERT_TRUE(db->db()
                  ->Put(rocksdb::WriteOptions(), workflows, expiry_key,
                        std::string(1, failed))
                  .ok());
  ASSERT_TRUE(db->db()
                  ->Put(rocksdb::WriteOptions(), workflows,
                        std::string("p") + failed + "old", "")
                  .ok());

  REFLEXION_ASSERT_OK_AND_ASSIGN(auto listed,
                                 store.ListByPhase(WorkflowPhase::kFailed));
  ASSERT_THAT(listed, SizeIs(1));
  EXPECT_EQ(listed[0].workflow_id, "old");
  REFLEXION_ASSERT_OK_AND_ASSIGN(int expired, store.ExpireFinished(T(100), 0));
  EXPECT_EQ(expired, 1);
  EXPECT_EQ(CountKeys(*db, "workflows"), 0);
  EXPECT_EQ(CountKeys(*db, "checkpoints"), 0);
}

TEST(RocksDbCheckpointStoreTest, StoredValuesThatDoNotDecodeAreDataLoss) {
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbCheckpointStore store(db.get());
  REFLEXION_ASSERT_OK(
      store.Put(MakeCheckpoint("wf", 0), WorkflowPhase::kRunning, 0, false));
  const std::string checkpoint_key("wf\0\0\0\0\0\0\0\0\0", 11);
  ASSERT_TRUE(db->db()
                  ->Put(rocksdb::WriteOptions(),
                        db->ColumnFamily("checkpoints"), checkpoint_key,
                        "\x01 truncated")
                  .ok());
  ASSERT_TRUE(db->db()
                  ->Put(rocksdb::WriteOptions(), db->ColumnFamily("workflows"),
                        "rwf", "garbage")
                  .ok());
  EXPECT_THAT(store.Get("wf", 0),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("checkpoints")));
  EXPECT_THAT(store.Latest("wf"), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store.List("wf", 0), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(store.GetWorkflow("wf"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("wf")));
  EXPECT_THAT(store.ListByPhase(WorkflowPhase::kRunning),
              StatusIs(absl::StatusCode::kDataLoss));
}

}  // namespace
}  // namespace reflexion::storage

// RocksDB-only behaviour of the checkpoint store: persistence across a
// reopen, storage bounded by retention, values that do not decode.

#include "storage/rocksdb_checkpoint_store.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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
  // Per workflow: the record, its phase entry, its expiry entry.
  EXPECT_EQ(CountKeys(*db, "workflows"), kWorkflows * 3);

  REFLEXION_ASSERT_OK_AND_ASSIGN(int expired, store.ExpireFinished(T(1000), 0));
  EXPECT_EQ(expired, kWorkflows);
  EXPECT_EQ(CountKeys(*db, "checkpoints"), 0);
  EXPECT_EQ(CountKeys(*db, "workflows"), 0);
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

// RocksDB under faults: a disk that fills up (and empties again) at run
// time or at startup, a damaged newest WAL, corrupt metadata files.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/rocksdb_checkpoint_store.h"
#include "storage/rocksdb_db.h"
#include "tests/storage/failing_file_system.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::storage {
namespace {

using core::Checkpoint;
using core::WorkflowPhase;
using ::reflexion::testing::FailingFileSystem;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::reflexion::testing::TempDir;
using ::testing::HasSubstr;

Checkpoint MakeCheckpoint(const std::string& id, uint64_t step) {
  Checkpoint c;
  c.workflow_id = id;
  c.step = step;
  c.node = absl::StrCat("node", step);
  c.next_node = absl::StrCat("node", step + 1);
  c.last_sequence = step;
  c.time = absl::FromUnixSeconds(1'700'000'000 + static_cast<int64_t>(step));
  c.state = std::string(300, static_cast<char>('a' + step % 26));
  return c;
}

class DiskFullTest : public ::testing::Test {
 protected:
  DiskFullTest()
      : fs_(std::make_shared<FailingFileSystem>()),
        env_(FailingFileSystem::NewEnv(fs_)) {}
  RocksDbOptions Options(bool sync) {
    RocksDbOptions options;
    options.sync_writes = sync;
    options.env = env_.get();
    return options;
  }

  TempDir dir_;
  std::shared_ptr<FailingFileSystem> fs_;
  std::unique_ptr<rocksdb::Env> env_;
};

TEST_F(DiskFullTest,
       WritesFailWithResourceExhaustedThenWorkAgainWhenSpaceReturns) {
  {
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db,
                                   RocksDb::Open(dir_.path(), Options(true)));
    RocksDbCheckpointStore store(db.get());
    for (uint64_t s = 0; s < 3; ++s) {
      REFLEXION_ASSERT_OK(
          store.Put(MakeCheckpoint("wf", s), WorkflowPhase::kRunning, 0, true));
    }
    REFLEXION_EXPECT_OK(db->Writable());
    absl::Mutex mu;
    std::vector<absl::StatusCode> heard;
    db->SetWritableListener([&](const absl::Status& s) {
      absl::MutexLock lock(&mu);
      heard.push_back(s.code());
    });
    fs_->SetFull(true);
    // Before the fix, RocksDB's file logger aborted the process here.
    EXPECT_THAT(
        store.Put(MakeCheckpoint("wf", 3), WorkflowPhase::kRunning, 0, true),
        StatusIs(absl::StatusCode::kResourceExhausted));
    EXPECT_THAT(db->Writable(),
                StatusIs(absl::StatusCode::kResourceExhausted,
                         HasSubstr("disk full at " + dir_.path())));
    EXPECT_THAT(
        store.Put(MakeCheckpoint("wf", 3), WorkflowPhase::kRunning, 0, false),
        StatusIs(absl::StatusCode::kResourceExhausted));
    // Reads are still served.
    REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint latest, store.Latest("wf"));
    EXPECT_EQ(latest.step, 2u);
    EXPECT_THAT(db->TryResume(),
                StatusIs(absl::StatusCode::kResourceExhausted));

    fs_->SetFull(false);
    // RocksDB's SstFileManager notices the space within seconds (or a
    // Resume gets there first).
    (void)db->TryResume();
    ASSERT_TRUE(db->AwaitWritable(absl::Seconds(30)));
    REFLEXION_EXPECT_OK(
        store.Put(MakeCheckpoint("wf", 4), WorkflowPhase::kRunning, 0, true));
    db->SetWritableListener(nullptr);
    // Told the state at once, then once of each change, however many
    // writes failed.
    absl::MutexLock lock(&mu);
    EXPECT_THAT(heard,
                ::testing::ElementsAre(absl::StatusCode::kOk,
                                       absl::StatusCode::kResourceExhausted,
                                       absl::StatusCode::kOk));
  }
  // Nothing acknowledged is lost, and the DB opens without complaint.
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir_.path()));
  EXPECT_FALSE(db->recovery().data_loss);
  RocksDbCheckpointStore store(db.get());
  REFLEXION_ASSERT_OK_AND_ASSIGN(std::vector<Checkpoint> list,
                                 store.List("wf", 0));
  std::vector<uint64_t> steps;
  for (const Checkpoint& c : list) steps.push_back(c.step);
  EXPECT_THAT(steps, ::testing::ElementsAre(4, 2, 1, 0));
}

// RocksDB 7.8 does not resume from a failed WAL write other than ENOSPC:
// the DB stays read-only (UNAVAILABLE) until the process restarts.
TEST_F(DiskFullTest, AnIoErrorIsUnavailableAndReadsGoOn) {
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db,
                                 RocksDb::Open(dir_.path(), Options(false)));
  RocksDbCheckpointStore store(db.get());
  REFLEXION_ASSERT_OK(
      store.Put(MakeCheckpoint("wf", 0), WorkflowPhase::kRunning, 0, false));
  fs_->SetIoError(true);
  EXPECT_THAT(
      store.Put(MakeCheckpoint("wf", 1), WorkflowPhase::kRunning, 0, false),
      StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(db->Writable(),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(dir_.path())));
  REFLEXION_ASSERT_OK_AND_ASSIGN(Checkpoint latest, store.Latest("wf"));
  EXPECT_EQ(latest.step, 0u);
  fs_->SetIoError(false);
  EXPECT_THAT(db->TryResume(), StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(DiskFullTest, OpeningOnAFullDiskFailsNamingTheDirWithoutAborting) {
  {
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db,
                                   RocksDb::Open(dir_.path(), Options(true)));
    RocksDbCheckpointStore store(db.get());
    REFLEXION_ASSERT_OK(
        store.Put(MakeCheckpoint("wf", 0), WorkflowPhase::kRunning, 0, true));
  }
  fs_->SetFull(true);
  EXPECT_THAT(
      RocksDb::Open(dir_.path(), Options(true)).status(),
      StatusIs(absl::StatusCode::kResourceExhausted,
               HasSubstr("disk full: cannot open RocksDB at " + dir_.path())));
  fs_->SetFull(false);
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db,
                                 RocksDb::Open(dir_.path(), Options(true)));
  RocksDbCheckpointStore store(db.get());
  REFLEXION_EXPECT_OK(store.Latest("wf").status());
}

// The newest WAL file of a closed DB (highest number).
std::string NewestWal(const std::string& dir) {
  std::string newest;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && name.substr(name.size() - 4) == ".log" &&
        name > newest) {
      newest = name;
    }
  }
  return newest;
}

struct Damage {
  double keep;  // fraction of the newest WAL kept
  bool sync;    // workflow.durability sync (else async)
};

class DamagedWalTest : public ::testing::TestWithParam<Damage> {};

TEST_P(DamagedWalTest, OpenRefusesUnlessDataLossIsAcceptedThenReportsIt) {
  TempDir dir;
  constexpr int kWorkflows = 200;
  {
    RocksDbOptions options;
    options.sync_writes = GetParam().sync;
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path(), options));
    RocksDbCheckpointStore store(db.get());
    // As the engine writes: one checkpoint per step, the last one final.
    for (int w = 0; w < kWorkflows; ++w) {
      const std::string id = absl::StrCat("wf-", w);
      REFLEXION_ASSERT_OK(store.Put(
          MakeCheckpoint(id, 0), WorkflowPhase::kRunning, 0, GetParam().sync));
      REFLEXION_ASSERT_OK(store.Put(MakeCheckpoint(id, 1),
                                    WorkflowPhase::kCompleted, 0,
                                    GetParam().sync));
    }
  }
  const std::string wal = NewestWal(dir.path());
  ASSERT_FALSE(wal.empty());
  const std::string path = absl::StrCat(dir.path(), "/", wal);
  const auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(
      path,
      static_cast<uintmax_t>(static_cast<double>(size) * GetParam().keep));

  // Before the fix this opened silently with the workflows gone.
  absl::StatusOr<std::unique_ptr<RocksDb>> refused = RocksDb::Open(dir.path());
  EXPECT_THAT(refused.status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(wal)));
  EXPECT_THAT(refused.status().message(), HasSubstr("--accept_data_loss"));
  // A refusal changes nothing: it refuses again.
  EXPECT_THAT(RocksDb::Open(dir.path()).status(),
              StatusIs(absl::StatusCode::kDataLoss));

  RocksDbOptions accept;
  accept.accept_data_loss = true;
  {
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path(), accept));
    EXPECT_TRUE(db->recovery().data_loss);
    EXPECT_GT(db->recovery().lost_sequences, 0u);
    EXPECT_THAT(db->recovery().description, HasSubstr(wal));
    // What remains is a consistent prefix: every workflow up to some point
    // whole, none after it.
    RocksDbCheckpointStore store(db.get());
    int present = 0;
    bool gap = false;
    for (int w = 0; w < kWorkflows; ++w) {
      absl::StatusOr<core::WorkflowRecord> r =
          store.GetWorkflow(absl::StrCat("wf-", w));
      if (r.ok()) {
        EXPECT_FALSE(gap) << "wf-" << w << " recovered after a lost one";
        ++present;
        REFLEXION_EXPECT_OK(store.Latest(r->workflow_id).status());
      } else {
        EXPECT_THAT(r.status(), StatusIs(absl::StatusCode::kNotFound));
        gap = true;
      }
    }
    EXPECT_LT(present, kWorkflows);
    REFLEXION_EXPECT_OK(store.Put(MakeCheckpoint("after", 0),
                                  WorkflowPhase::kRunning, 0, true));
  }
  // The accepted loss is reported once; the next start is clean.
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  EXPECT_FALSE(db->recovery().data_loss);
  RocksDbCheckpointStore store(db.get());
  REFLEXION_EXPECT_OK(store.Latest("after").status());
}

INSTANTIATE_TEST_SUITE_P(TruncatedWal, DamagedWalTest,
                         ::testing::Values(Damage{0.5, true}, Damage{0.0, true},
                                           Damage{0.5, false},
                                           Damage{0.0, false}),
                         [](const ::testing::TestParamInfo<Damage>& info) {
                           return absl::StrCat(
                               info.param.keep == 0 ? "Empty" : "Half",
                               info.param.sync ? "Sync" : "Async");
                         });

TEST(DamagedWalTest, ACleanRestartAfterACrashIsNotALoss) {
  TempDir dir;
  {
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
    RocksDbCheckpointStore store(db.get());
    REFLEXION_ASSERT_OK(
        store.Put(MakeCheckpoint("wf", 0), WorkflowPhase::kRunning, 0, false));
  }
  for (int i = 0; i < 2; ++i) {
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
    EXPECT_FALSE(db->recovery().data_loss);
  }
}

// Garbage in a metadata file: our kDataLoss naming the dir, no abort.
class CorruptMetadataTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CorruptMetadataTest, OpenFailsWithDataLossNamingTheDir) {
  TempDir dir;
  {
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
    RocksDbCheckpointStore store(db.get());
    REFLEXION_ASSERT_OK(
        store.Put(MakeCheckpoint("wf", 0), WorkflowPhase::kRunning, 0, true));
  }
  std::string target;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    const std::string name = e.path().filename().string();
    if (name.rfind(GetParam(), 0) == 0) target = e.path().string();
  }
  ASSERT_FALSE(target.empty());
  {
    std::ofstream out(target, std::ios::binary | std::ios::trunc);
    out << "this is not a " << GetParam() << " file\n";
  }
  EXPECT_THAT(RocksDb::Open(dir.path()).status(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(dir.path())));
}

INSTANTIATE_TEST_SUITE_P(Garbage, CorruptMetadataTest,
                         ::testing::Values("CURRENT", "MANIFEST"));

}  // namespace
}  // namespace reflexion::storage

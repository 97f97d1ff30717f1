// RocksDB-only behaviour: persistence, locking, column family evolution,
// corrupt values and the status conversion.

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/rocksdb_db.h"
#include "storage/rocksdb_knowledge_store.h"
#include "storage/rocksdb_status.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::storage {
namespace {

namespace v1 = ::reflexion::v1;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::reflexion::testing::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::NotNull;
using ::testing::SizeIs;

v1::Strategy MakeStrategy(const std::string& name, int version) {
  v1::Strategy s;
  s.set_name(name);
  s.set_version(version);
  s.set_description(absl::StrCat(name, " v", version));
  return s;
}

core::LearningCommit MakeCommit(const std::string& id, int64_t seconds,
                                bool success) {
  core::LearningCommit c;
  c.episode.set_id(id);
  c.episode.set_workflow_id("wf-" + id);
  c.episode.mutable_time()->set_seconds(seconds);
  c.episode.set_signature("OOMKilled/limit_too_low");
  c.episode.set_strategy("increase_memory_limit");
  c.episode.set_success(success);
  return c;
}

// Creates a DB at `dir` with exactly the given column families (plus
// "default"), as an older or newer build would have left it.
void CreateRawDb(const std::string& dir, const std::vector<std::string>& cfs) {
  rocksdb::DBOptions options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()}};
  for (const std::string& cf : cfs) {
    descriptors.emplace_back(cf, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(options, dir, descriptors, &handles, &db).ok());
  for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  ASSERT_TRUE(db->Close().ok());
  delete db;
}

TEST(RocksDbTest, ReopeningTheDbFindsEveryVersionPosteriorAndEpisode) {
  TempDir dir;
  {
    REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
    RocksDbKnowledgeStore store(db.get());
    REFLEXION_ASSERT_OK(
        store.PutStrategyVersion(MakeStrategy("increase_memory_limit", 1)));
    core::LearningCommit c = MakeCommit("e1", 100, true);
    c.new_version = MakeStrategy("increase_memory_limit", 2);
    REFLEXION_ASSERT_OK(store.CommitLearning(c));
    REFLEXION_ASSERT_OK(store.CommitLearning(MakeCommit("e2", 200, false)));
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbKnowledgeStore store(db.get());
  REFLEXION_ASSERT_OK_AND_ASSIGN(
      auto history, store.GetStrategyHistory("increase_memory_limit"));
  ASSERT_THAT(history, SizeIs(2));
  EXPECT_EQ(history[1].description(), "increase_memory_limit v2");
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto stats, store.GetStats(""));
  ASSERT_THAT(stats, SizeIs(1));
  EXPECT_EQ(stats[0].trials(), 2);
  EXPECT_EQ(stats[0].successes(), 1);
  core::EpisodeQuery q;
  q.signature = "OOMKilled/limit_too_low";
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto page, store.ListEpisodes(q));
  ASSERT_THAT(page.episodes, SizeIs(2));
  EXPECT_EQ(page.episodes[0].id(), "e2");
  EXPECT_EQ(page.episodes[1].id(), "e1");
  // The version check still sees the stored latest.
  EXPECT_THAT(
      store.PutStrategyVersion(MakeStrategy("increase_memory_limit", 2)),
      StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(RocksDbTest, SyncWritesAreDurableAcrossAReopen) {
  TempDir dir;
  {
    REFLEXION_ASSERT_OK_AND_ASSIGN(
        auto db,
        RocksDb::Open(dir.path(), RocksDbOptions{.sync_writes = true}));
    EXPECT_TRUE(db->options().sync_writes);
    RocksDbKnowledgeStore store(db.get());
    REFLEXION_ASSERT_OK(store.CommitLearning(MakeCommit("e1", 100, true)));
  }
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbKnowledgeStore store(db.get());
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto page, store.ListEpisodes({}));
  EXPECT_THAT(page.episodes, SizeIs(1));
}

TEST(RocksDbTest, OpeningADirAlreadyOpenInThisProcessFailsNamingTheDir) {
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto first, RocksDb::Open(dir.path()));
  EXPECT_THAT(RocksDb::Open(dir.path()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(dir.path())));
  // The first handle still works.
  RocksDbKnowledgeStore store(first.get());
  EXPECT_THAT(store.PutStrategyVersion(MakeStrategy("s", 1)), IsOk());
}

TEST(RocksDbTest, OpeningADirLockedByAnotherProcessFailsNamingTheDir) {
  TempDir dir;
  { REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path())); }
  const std::string lock_file = dir.path() + "/LOCK";
  int ready[2], release[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(release), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // The child takes RocksDB's lock (an fcntl write lock on LOCK), reports,
    // and holds it until the parent closes `release`. Only async-signal-safe
    // calls here.
    close(ready[0]);
    close(release[1]);
    int fd = open(lock_file.c_str(), O_RDWR);
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    char ok = (fd >= 0 && fcntl(fd, F_SETLK, &fl) == 0) ? '1' : '0';
    if (write(ready[1], &ok, 1) != 1) _exit(1);
    char c;
    while (read(release[0], &c, 1) > 0) {
    }
    _exit(0);
  }
  close(ready[1]);
  close(release[0]);
  // Releases and reaps the child however the test ends.
  struct Reaper {
    int fd;
    pid_t pid;
    ~Reaper() {
      close(fd);
      int status = 0;
      waitpid(pid, &status, 0);
    }
  } reaper{release[1], pid};
  char ok = 0;
  ASSERT_EQ(read(ready[0], &ok, 1), 1);
  close(ready[0]);
  ASSERT_EQ(ok, '1') << "the child could not lock " << lock_file;

  EXPECT_THAT(RocksDb::Open(dir.path()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(dir.path())));
}

TEST(RocksDbTest, AnOlderDbWithoutTheNewerColumnFamiliesOpensAndGainsThem) {
  TempDir dir;
  CreateRawDb(dir.path(), {"strategies"});
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  for (absl::string_view cf : kColumnFamilies) {
    EXPECT_THAT(db->ColumnFamily(cf), NotNull()) << cf;
  }
  RocksDbKnowledgeStore store(db.get());
  EXPECT_THAT(store.CommitLearning(MakeCommit("e1", 100, true)), IsOk());
}

TEST(RocksDbTest, ADbWithAColumnFamilyUnknownToThisBuildStillOpens) {
  TempDir dir;
  CreateRawDb(dir.path(), {"strategies", "from_a_newer_build"});
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  RocksDbKnowledgeStore store(db.get());
  EXPECT_THAT(store.PutStrategyVersion(MakeStrategy("s", 1)), IsOk());
}

TEST(RocksDbTest, AStoredValueThatDoesNotParseIsDataLoss) {
  TempDir dir;
  REFLEXION_ASSERT_OK_AND_ASSIGN(auto db, RocksDb::Open(dir.path()));
  const std::string key("s\0\0\0\0\1", 6);
  ASSERT_TRUE(db->db()
                  ->Put(rocksdb::WriteOptions(), db->ColumnFamily("strategies"),
                        key, "\xff\xff\xff garbage")
                  .ok());
  RocksDbKnowledgeStore store(db.get());
  EXPECT_THAT(store.ListStrategies(),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("strategies")));
  EXPECT_THAT(store.GetStrategyHistory("s"),
              StatusIs(absl::StatusCode::kDataLoss));
}

TEST(RocksDbTest, AnEmptyDirIsInvalidArgument) {
  EXPECT_THAT(RocksDb::Open(""), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RocksDbStatusTest, MapsEachRocksDbCodeToItsCanonicalCode) {
  struct Case {
    rocksdb::Status from;
    absl::StatusCode to;
  };
  const Case cases[] = {
      {rocksdb::Status::OK(), absl::StatusCode::kOk},
      {rocksdb::Status::NotFound("k"), absl::StatusCode::kNotFound},
      {rocksdb::Status::Corruption("bad block"), absl::StatusCode::kDataLoss},
      {rocksdb::Status::InvalidArgument("x"),
       absl::StatusCode::kInvalidArgument},
      {rocksdb::Status::NotSupported("x"), absl::StatusCode::kUnimplemented},
      {rocksdb::Status::IOError("disk"), absl::StatusCode::kUnavailable},
      {rocksdb::Status::NoSpace("full"), absl::StatusCode::kResourceExhausted},
      {rocksdb::Status::Busy("x"), absl::StatusCode::kUnavailable},
      {rocksdb::Status::TryAgain("x"), absl::StatusCode::kUnavailable},
      {rocksdb::Status::TimedOut("x"), absl::StatusCode::kDeadlineExceeded},
      {rocksdb::Status::Aborted("x"), absl::StatusCode::kAborted},
      {rocksdb::Status::MergeInProgress("x"), absl::StatusCode::kInternal},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.from.ToString());
    EXPECT_EQ(FromRocksDbStatus(c.from, "op").code(), c.to);
  }
}

TEST(RocksDbStatusTest, TheMessageNamesTheOperationAndKeepsRocksDbs) {
  absl::Status s = FromRocksDbStatus(rocksdb::Status::Corruption("bad block"),
                                     "read stats key \"a\"");
  EXPECT_THAT(
      s, StatusIs(absl::StatusCode::kDataLoss,
                  HasSubstr("read stats key \"a\": Corruption: bad block")));
}

}  // namespace
}  // namespace reflexion::storage

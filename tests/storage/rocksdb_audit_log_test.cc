// RocksDbAuditLog beyond the contract: reopening, an older DB without the
// family, damaged bytes, a cut tail across a reopen.

#include "storage/rocksdb_audit_log.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/audit_chain.h"
#include "core/reflexion/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/rocksdb_db.h"
#include "tests/storage/failing_file_system.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::storage {
namespace {

namespace v1 = ::reflexion::v1;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::AuditEntry MakeEntry(int i) {
  v1::AuditEntry e;
  *e.mutable_time() =
      core::ToProto(absl::FromUnixSeconds(1'700'000'000) + absl::Minutes(i));
  e.set_kind(v1::AuditEntry::KIND_ACTION);
  e.set_principal("alice");
  e.set_cluster("prod");
  e.set_namespace_("payments");
  e.set_workflow_id(absl::StrCat("wf-1-", i));
  e.set_detail(absl::StrCat("entry ", i));
  return e;
}

class RocksDbAuditLogTest : public ::testing::Test {
 protected:
  void Open() {
    log_.reset();
    db_.reset();
    absl::StatusOr<std::unique_ptr<RocksDb>> db = RocksDb::Open(dir_.path());
    ASSERT_THAT(db, IsOk());
    db_ = *std::move(db);
    absl::StatusOr<std::unique_ptr<RocksDbAuditLog>> log =
        RocksDbAuditLog::Open(db_.get());
    ASSERT_THAT(log, IsOk());
    log_ = *std::move(log);
  }
  void Close() {
    log_.reset();
    db_.reset();
  }
  void SetUp() override { Open(); }

  v1::AuditEntry Append(int i) {
    absl::StatusOr<v1::AuditEntry> e = log_->Append(MakeEntry(i));
    EXPECT_THAT(e, IsOk());
    return e.ok() ? *e : v1::AuditEntry();
  }
  std::vector<uint64_t> ListSeqs() {
    absl::StatusOr<core::AuditPage> page = log_->List({});
    EXPECT_THAT(page, IsOk());
    std::vector<uint64_t> out;
    if (page.ok()) {
      for (const auto& e : page->entries) out.push_back(e.seq());
    }
    return out;
  }
  void PutRaw(uint64_t seq, const std::string& value) {
    ASSERT_TRUE(db_->db()
                    ->Put(rocksdb::WriteOptions(), db_->ColumnFamily("audit"),
                          RocksDbAuditLog::EntryKey(seq), value)
                    .ok());
  }
  void DeleteRaw(uint64_t seq) {
    ASSERT_TRUE(db_->db()
                    ->Delete(rocksdb::WriteOptions(),
                             db_->ColumnFamily("audit"),
                             RocksDbAuditLog::EntryKey(seq))
                    .ok());
  }

  testing::TempDir dir_;
  std::unique_ptr<RocksDb> db_;
  std::unique_ptr<RocksDbAuditLog> log_;
};

TEST_F(RocksDbAuditLogTest, EntriesSurviveAReopenAndTheChainContinues) {
  Append(1);
  Append(2);
  const v1::AuditEntry third = Append(3);
  Open();
  EXPECT_THAT(ListSeqs(), ElementsAre(1, 2, 3));
  const v1::AuditEntry fourth = Append(4);
  EXPECT_EQ(fourth.seq(), 4u);
  EXPECT_EQ(fourth.prev_hash(), third.hash());
  absl::StatusOr<core::AuditVerification> v = log_->Verify();
  ASSERT_THAT(v, IsOk());
  EXPECT_TRUE(v->ok) << v->problem;
  EXPECT_EQ(v->checked, 4u);
}

TEST_F(RocksDbAuditLogTest, RetentionSurvivesAReopen) {
  for (int i = 1; i <= 4; ++i) Append(i);
  ASSERT_THAT(
      log_->Retain(absl::FromUnixSeconds(1'700'000'000) + absl::Minutes(3)),
      IsOk());
  Open();
  absl::StatusOr<core::AuditPage> page = log_->List({});
  ASSERT_THAT(page, IsOk());
  EXPECT_EQ(page->anchor.seq(), 2u);
  EXPECT_THAT(ListSeqs(), ElementsAre(3, 4));
  EXPECT_EQ(Append(5).seq(), 5u);
  absl::StatusOr<core::AuditVerification> v = log_->Verify();
  ASSERT_THAT(v, IsOk());
  EXPECT_TRUE(v->ok) << v->problem;
}

TEST_F(RocksDbAuditLogTest, AnOlderDbWithoutTheAuditFamilyOpensAndGainsIt) {
  Close();
  testing::TempDir old_dir;
  {
    // A DB as an older build left it: some families, no "audit".
    rocksdb::DBOptions options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {"strategies", {}},
        {"events", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(
        rocksdb::DB::Open(options, old_dir.path(), families, &handles, &raw)
            .ok());
    for (auto* h : handles) ASSERT_TRUE(raw->DestroyColumnFamilyHandle(h).ok());
    delete raw;
  }
  std::vector<std::string> before;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(),
                                              old_dir.path(), &before)
                  .ok());
  ASSERT_THAT(before, ::testing::Not(Contains("audit")));
  {
    absl::StatusOr<std::unique_ptr<RocksDb>> db = RocksDb::Open(old_dir.path());
    ASSERT_THAT(db, IsOk());
    absl::StatusOr<std::unique_ptr<RocksDbAuditLog>> log =
        RocksDbAuditLog::Open(db->get());
    ASSERT_THAT(log, IsOk());
    absl::StatusOr<v1::AuditEntry> e = (*log)->Append(MakeEntry(1));
    ASSERT_THAT(e, IsOk());
    EXPECT_EQ(e->seq(), 1u);
  }
  std::vector<std::string> after;
  ASSERT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(),
                                              old_dir.path(), &after)
                  .ok());
  EXPECT_THAT(after, Contains("audit"));
}

TEST_F(RocksDbAuditLogTest, UnparseableBytesAreNamedByVerifyAndList) {
  for (int i = 1; i <= 4; ++i) Append(i);
  PutRaw(3, "\xff\xff\xff not a message");
  absl::StatusOr<core::AuditVerification> v = log_->Verify();
  ASSERT_THAT(v, IsOk());
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->first_bad_seq, 3u);
  EXPECT_THAT(v->problem, HasSubstr("entry 3: cannot be parsed"));
  EXPECT_THAT(log_->List({}),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("entry 3")));
  // Retention keeps the damaged entry (and what follows).
  absl::StatusOr<int64_t> removed = log_->Retain(absl::InfiniteFuture());
  ASSERT_THAT(removed, IsOk());
  EXPECT_EQ(*removed, 2);
}

TEST_F(RocksDbAuditLogTest, AnEntryMovedToAnotherKeyIsNamed) {
  for (int i = 1; i <= 3; ++i) Append(i);
  std::string value;
  ASSERT_TRUE(db_->db()
                  ->Get(rocksdb::ReadOptions(), db_->ColumnFamily("audit"),
                        RocksDbAuditLog::EntryKey(3), &value)
                  .ok());
  PutRaw(2, value);  // entry 3's bytes under key 2
  absl::StatusOr<core::AuditVerification> v = log_->Verify();
  ASSERT_THAT(v, IsOk());
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->first_bad_seq, 2u);
  EXPECT_THAT(v->problem, HasSubstr("entry 2: stored under seq 2 but says "
                                    "seq 3"));
}

TEST_F(RocksDbAuditLogTest, ACutTailIsNotReusedAfterAReopen) {
  for (int i = 1; i <= 5; ++i) Append(i);
  DeleteRaw(5);
  DeleteRaw(4);
  Open();
  // The recorded last seq wins: the next entry is 6, and the gap shows.
  EXPECT_EQ(Append(6).seq(), 6u);
  absl::StatusOr<core::AuditVerification> v = log_->Verify();
  ASSERT_THAT(v, IsOk());
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->problem, "entries 4..5 missing (after 3 comes 6)");
}

TEST_F(RocksDbAuditLogTest, AnEntryPutBeyondTheLastIsKeptNotOverwritten) {
  for (int i = 1; i <= 2; ++i) Append(i);
  v1::AuditEntry forged = MakeEntry(3);
  forged.set_seq(3);
  forged.set_hash("forged");
  PutRaw(3, forged.SerializeAsString());
  Open();
  EXPECT_EQ(Append(4).seq(), 4u);
  absl::StatusOr<core::AuditVerification> v = log_->Verify();
  ASSERT_THAT(v, IsOk());
  EXPECT_FALSE(v->ok);
  EXPECT_EQ(v->first_bad_seq, 3u);
  EXPECT_THAT(v->problem, HasSubstr("entry 3: hash mismatch"));
}

TEST(RocksDbAuditLogDiskFullTest, ARefusedAppendUsesNoSeqAndTheChainGoesOn) {
  testing::TempDir dir;
  auto fs = std::make_shared<testing::FailingFileSystem>();
  std::unique_ptr<rocksdb::Env> env = testing::FailingFileSystem::NewEnv(fs);
  RocksDbOptions options;
  options.env = env.get();
  options.resume_interval = absl::ZeroDuration();
  absl::StatusOr<std::unique_ptr<RocksDb>> db =
      RocksDb::Open(dir.path(), options);
  ASSERT_THAT(db, IsOk());
  absl::StatusOr<std::unique_ptr<RocksDbAuditLog>> log =
      RocksDbAuditLog::Open(db->get());
  ASSERT_THAT(log, IsOk());
  ASSERT_THAT((*log)->Append(MakeEntry(1)), IsOk());
  fs->SetFull(true);
  // The caller must not send the action: the append is refused.
  EXPECT_THAT((*log)->Append(MakeEntry(2)),
              StatusIs(absl::StatusCode::kResourceExhausted));
  fs->SetFull(false);
  (void)(*db)->TryResume();
  ASSERT_TRUE((*db)->AwaitWritable(absl::Seconds(30)));
  absl::StatusOr<v1::AuditEntry> next = (*log)->Append(MakeEntry(3));
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(next->seq(), 2u);
  absl::StatusOr<core::AuditVerification> v = (*log)->Verify();
  ASSERT_THAT(v, IsOk());
  EXPECT_TRUE(v->ok) << v->problem;
  EXPECT_EQ(v->checked, 2u);
}

}  // namespace
}  // namespace reflexion::storage

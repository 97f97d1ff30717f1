// The AuditLog contract: every test runs against the in-memory fake and the
// RocksDB log (a fresh temp dir per test). Tampering goes around the log:
// the fake's test hooks, the RocksDB family's raw keys.

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/ports/audit_log.h"
#include "core/ports/in_memory_audit_log.h"
#include "core/reflexion/audit_chain.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "storage/rocksdb_audit_log.h"
#include "storage/rocksdb_db.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion {
namespace {

namespace v1 = ::reflexion::v1;
using ::google::protobuf::util::MessageDifferencer;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;

// ---------------------------------------------------------------------------
// Backends: a log, re-creatable with another scan limit, and raw access to
// its stored entries for the tamper tests.
// ---------------------------------------------------------------------------

class InMemoryBackend {
 public:
  InMemoryBackend() { Reset(core::kAuditScanLimit); }
  core::AuditLog& log() { return *log_; }
  void Reset(int scan_limit) {
    log_ = std::make_unique<core::InMemoryAuditLog>(1'000'000, scan_limit);
  }
  // Rewrites stored entry `seq` with `edit` (its hash left as is unless
  // `edit` changes it).
  void Tamper(uint64_t seq, const std::function<void(v1::AuditEntry&)>& edit) {
    v1::AuditEntry* e = log_->MutableEntryForTest(seq);
    ASSERT_NE(e, nullptr) << "no entry " << seq;
    edit(*e);
  }
  void Erase(uint64_t seq) { ASSERT_TRUE(log_->EraseEntryForTest(seq)); }

 private:
  std::unique_ptr<core::InMemoryAuditLog> log_;
};

std::unique_ptr<storage::RocksDb> OpenOrDie(const std::string& dir) {
  absl::StatusOr<std::unique_ptr<storage::RocksDb>> db =
      storage::RocksDb::Open(dir);
  CHECK(db.ok()) << db.status();
  return *std::move(db);
}

class RocksDbBackend {
 public:
  RocksDbBackend() : db_(OpenOrDie(dir_.path())) {
    Reset(core::kAuditScanLimit);
  }
  core::AuditLog& log() { return *log_; }
  void Reset(int scan_limit) {
    log_.reset();
    absl::StatusOr<std::unique_ptr<storage::RocksDbAuditLog>> log =
        storage::RocksDbAuditLog::Open(db_.get(), scan_limit);
    CHECK(log.ok()) << log.status();
    log_ = *std::move(log);
  }
  void Tamper(uint64_t seq, const std::function<void(v1::AuditEntry&)>& edit) {
    rocksdb::ColumnFamilyHandle* cf = db_->ColumnFamily("audit");
    const std::string key = storage::RocksDbAuditLog::EntryKey(seq);
    std::string value;
    ASSERT_TRUE(db_->db()->Get(rocksdb::ReadOptions(), cf, key, &value).ok())
        << "no entry " << seq;
    v1::AuditEntry e;
    ASSERT_TRUE(e.ParseFromString(value));
    edit(e);
    ASSERT_TRUE(
        db_->db()
            ->Put(rocksdb::WriteOptions(), cf, key, e.SerializeAsString())
            .ok());
  }
  void Erase(uint64_t seq) {
    ASSERT_TRUE(db_->db()
                    ->Delete(rocksdb::WriteOptions(),
                             db_->ColumnFamily("audit"),
                             storage::RocksDbAuditLog::EntryKey(seq))
                    .ok());
  }

 private:
  testing::TempDir dir_;  // destroyed last: after the DB is closed
  std::unique_ptr<storage::RocksDb> db_;
  std::unique_ptr<storage::RocksDbAuditLog> log_;
};

template <typename Backend>
class AuditLogContractTest : public ::testing::Test {
 protected:
  core::AuditLog& log() { return backend_.log(); }
  Backend& backend() { return backend_; }

  // Appends `entry`; fails the test when it does not append.
  v1::AuditEntry Append(v1::AuditEntry entry) {
    absl::StatusOr<v1::AuditEntry> out = log().Append(std::move(entry));
    EXPECT_THAT(out, IsOk());
    return out.ok() ? *out : v1::AuditEntry();
  }

  core::AuditPage List(const core::AuditFilter& filter) {
    absl::StatusOr<core::AuditPage> page = log().List(filter);
    EXPECT_THAT(page, IsOk());
    return page.ok() ? *std::move(page) : core::AuditPage();
  }

  core::AuditVerification Verify() {
    absl::StatusOr<core::AuditVerification> v = log().Verify();
    EXPECT_THAT(v, IsOk());
    return v.ok() ? *v : core::AuditVerification{false, 0, 0, "error"};
  }

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
TYPED_TEST_SUITE(AuditLogContractTest, Backends, BackendName);

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

const absl::Time kT0 = absl::FromUnixSeconds(1'700'000'000);

v1::AuditEntry MakeEntry(
    int i, v1::AuditEntry::Kind kind = v1::AuditEntry::KIND_ACTION) {
  v1::AuditEntry e;
  *e.mutable_time() = core::ToProto(kT0 + absl::Minutes(i));
  e.set_kind(kind);
  e.set_principal(i % 2 == 0 ? "alice" : "bob");
  e.set_cluster(i % 3 == 0 ? "prod" : "staging");
  e.set_namespace_(i % 4 == 0 ? "payments" : "default");
  e.set_workload(absl::StrCat("Deployment/web-", i));
  e.set_pod(absl::StrCat("web-", i, "-abc"));
  e.set_workflow_id(absl::StrCat("wf-1-", i / 2));
  e.set_action_id(absl::StrCat("wf-1-", i / 2, "/attempt-1"));
  e.mutable_action()->set_type(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
  e.mutable_action()->mutable_params()->set_memory_factor(1.5);
  e.set_tier(v1::SAFETY_TIER_B);
  e.set_decider(v1::AuditEntry::DECIDER_LEARNED);
  e.set_mode(v1::POLICY_MODE_ENFORCE);
  e.set_detail(absl::StrCat("entry ", i));
  return e;
}

std::vector<uint64_t> Seqs(const std::vector<v1::AuditEntry>& entries) {
  std::vector<uint64_t> out;
  for (const auto& e : entries) out.push_back(e.seq());
  return out;
}

// ---------------------------------------------------------------------------
// Append and the chain.
// ---------------------------------------------------------------------------

TYPED_TEST(AuditLogContractTest, AppendAssignsConsecutiveSeqsAndALinkedChain) {
  std::vector<v1::AuditEntry> appended;
  for (int i = 1; i <= 5; ++i) appended.push_back(this->Append(MakeEntry(i)));
  ASSERT_THAT(Seqs(appended), ElementsAre(1, 2, 3, 4, 5));
  EXPECT_EQ(appended[0].prev_hash(), core::kAuditGenesisHash);
  for (size_t i = 0; i < appended.size(); ++i) {
    EXPECT_EQ(appended[i].hash(), core::AuditHash(appended[i]));
    EXPECT_EQ(appended[i].hash().size(), 64u);
    if (i > 0) {
      EXPECT_EQ(appended[i].prev_hash(), appended[i - 1].hash());
    }
  }
  core::AuditPage page = this->List({});
  ASSERT_THAT(page.entries, SizeIs(5));
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(page.entries[i], appended[i]))
        << page.entries[i].ShortDebugString();
  }
  EXPECT_EQ(page.last_seq, 5u);
  EXPECT_EQ(page.next_after, 0u);
  EXPECT_EQ(page.anchor.seq(), 0u);
  EXPECT_EQ(page.anchor.hash(), core::kAuditGenesisHash);
  core::AuditVerification v = this->Verify();
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.checked, 5u);
}

TYPED_TEST(AuditLogContractTest, AppendIgnoresTheCallersSeqAndHashes) {
  v1::AuditEntry e = MakeEntry(1);
  e.set_seq(99);
  e.set_prev_hash("forged");
  e.set_hash("forged");
  v1::AuditEntry out = this->Append(e);
  EXPECT_EQ(out.seq(), 1u);
  EXPECT_EQ(out.prev_hash(), core::kAuditGenesisHash);
  EXPECT_EQ(out.hash(), core::AuditHash(out));
}

TYPED_TEST(AuditLogContractTest, AppendRejectsBadEntriesNamingTheField) {
  v1::AuditEntry no_kind = MakeEntry(1);
  no_kind.set_kind(v1::AuditEntry::KIND_UNSPECIFIED);
  EXPECT_THAT(this->log().Append(no_kind),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kind")));
  v1::AuditEntry unknown_kind = MakeEntry(1);
  unknown_kind.set_kind(static_cast<v1::AuditEntry::Kind>(77));
  EXPECT_THAT(this->log().Append(unknown_kind),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kind")));
  v1::AuditEntry no_time = MakeEntry(1);
  no_time.clear_time();
  EXPECT_THAT(this->log().Append(no_time),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("time")));
  v1::AuditEntry bad_time = MakeEntry(1);
  bad_time.mutable_time()->set_nanos(-1);
  EXPECT_THAT(this->log().Append(bad_time),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("time")));
  v1::AuditEntry bad_mode = MakeEntry(1);
  bad_mode.set_mode(static_cast<v1::PolicyMode>(42));
  EXPECT_THAT(this->log().Append(bad_mode),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("mode")));
  v1::AuditEntry many = MakeEntry(1);
  for (int i = 0; i < 33; ++i) many.mutable_action()->add_restore();
  EXPECT_THAT(this->log().Append(many),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("action.restore")));
  // Nothing was appended: the next entry is the first.
  EXPECT_EQ(this->Append(MakeEntry(1)).seq(), 1u);
}

TYPED_TEST(AuditLogContractTest, SecretsAreStoredRedacted) {
  v1::AuditEntry e = MakeEntry(1, v1::AuditEntry::KIND_OUTCOME);
  e.set_detail(
      "executor said: password=hunter2; retried with Authorization: Bearer "
      "abc123def456ghi");
  v1::ValueChange* change = e.mutable_action()->add_restore();
  change->set_path("spec.containers[0].env[DB_URL]");
  change->set_before("postgres://app:s3cretPassw0rd@db:5432/app");
  const v1::AuditEntry out = this->Append(e);
  core::AuditPage page = this->List({});
  ASSERT_THAT(page.entries, SizeIs(1));
  for (const v1::AuditEntry& stored : {out, page.entries[0]}) {
    EXPECT_THAT(stored.detail(), Not(HasSubstr("hunter2")));
    EXPECT_THAT(stored.detail(), Not(HasSubstr("abc123def456ghi")));
    EXPECT_THAT(stored.detail(), HasSubstr("[REDACTED:"));
    EXPECT_THAT(stored.detail(), HasSubstr("executor said"));
    EXPECT_THAT(stored.action().restore(0).before(),
                Not(HasSubstr("s3cretPassw0rd")));
  }
  EXPECT_TRUE(this->Verify().ok);
}

TYPED_TEST(AuditLogContractTest, FreeTextIsClippedToValidUtf8) {
  v1::AuditEntry e = MakeEntry(1);
  std::string detail(1023, 'x');
  detail += "\xc3\xa9 and more";  // a 2-byte character across the limit
  e.set_detail(detail);
  e.set_outcome(std::string("bad \xff byte"));
  const v1::AuditEntry out = this->Append(e);
  EXPECT_LE(out.detail().size(), core::kMaxAuditDetailBytes);
  EXPECT_EQ(out.detail(), std::string(1023, 'x'));
  EXPECT_TRUE(core::IsValidUtf8(out.outcome()));
  EXPECT_THAT(out.outcome(), HasSubstr("byte"));
  e.set_workload(std::string(1000, 'w'));
  EXPECT_EQ(this->Append(e).workload().size(), core::kMaxAuditFieldBytes);
  EXPECT_TRUE(this->Verify().ok);
}

TYPED_TEST(AuditLogContractTest, ConcurrentAppendsGiveOneValidChain) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25;
  std::vector<std::thread> threads;
  std::vector<std::vector<uint64_t>> seqs(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t, &seqs] {
      for (int i = 0; i < kPerThread; ++i) {
        absl::StatusOr<v1::AuditEntry> e =
            this->log().Append(MakeEntry(t * kPerThread + i));
        if (e.ok()) seqs[t].push_back(e->seq());
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<uint64_t> all;
  for (const auto& s : seqs) all.insert(s.begin(), s.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads * kPerThread));
  EXPECT_EQ(*all.begin(), 1u);
  EXPECT_EQ(*all.rbegin(), static_cast<uint64_t>(kThreads * kPerThread));
  core::AuditVerification v = this->Verify();
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.checked, static_cast<uint64_t>(kThreads * kPerThread));
}

// ---------------------------------------------------------------------------
// Filters and paging.
// ---------------------------------------------------------------------------

TYPED_TEST(AuditLogContractTest, EachFilterSelectsOnlyMatchingEntries) {
  for (int i = 1; i <= 12; ++i) {
    this->Append(MakeEntry(i, i % 5 == 0 ? v1::AuditEntry::KIND_OUTCOME
                                         : v1::AuditEntry::KIND_ACTION));
  }
  core::AuditFilter f;
  f.cluster = "prod";  // i % 3 == 0
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(3, 6, 9, 12));
  f = {};
  f.namespace_ = "payments";  // i % 4 == 0
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(4, 8, 12));
  f = {};
  f.workflow_id = "wf-1-3";  // i / 2 == 3
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(6, 7));
  f = {};
  f.principal = "bob";  // odd
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(1, 3, 5, 7, 9, 11));
  f = {};
  f.kind = v1::AuditEntry::KIND_OUTCOME;
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(5, 10));
  f = {};
  f.principal = "alice";
  f.cluster = "prod";
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(6, 12));
  f = {};
  f.cluster = "nowhere";
  core::AuditPage none = this->List(f);
  EXPECT_THAT(none.entries, IsEmpty());
  EXPECT_EQ(none.next_after, 0u);
  EXPECT_EQ(none.last_seq, 12u);
}

TYPED_TEST(AuditLogContractTest, SinceIsInclusiveAndUntilExclusive) {
  for (int i = 1; i <= 6; ++i) this->Append(MakeEntry(i));  // kT0 + i min
  core::AuditFilter f;
  f.since = kT0 + absl::Minutes(2);
  f.until = kT0 + absl::Minutes(5);
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(2, 3, 4));
  f.until.reset();
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(2, 3, 4, 5, 6));
  f.since.reset();
  f.until = kT0 + absl::Minutes(2);
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(1));
}

TYPED_TEST(AuditLogContractTest, PagesWalkEveryEntryOnceWithNextAfter) {
  for (int i = 1; i <= 25; ++i) this->Append(MakeEntry(i));
  core::AuditFilter f;
  f.page_size = 10;
  std::vector<uint64_t> seen;
  std::vector<uint64_t> next;
  do {
    core::AuditPage page = this->List(f);
    for (uint64_t s : Seqs(page.entries)) seen.push_back(s);
    next.push_back(page.next_after);
    f.after = page.next_after;
  } while (f.after != 0);
  EXPECT_THAT(next, ElementsAre(10, 20, 0));
  ASSERT_THAT(seen, SizeIs(25));
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1);
  // A page that ends exactly at the last entry has no next page.
  f = {};
  f.page_size = 25;
  EXPECT_EQ(this->List(f).next_after, 0u);
  f.after = 25;
  EXPECT_THAT(this->List(f).entries, IsEmpty());
}

TYPED_TEST(AuditLogContractTest, ZeroPageSizeMeansAHundred) {
  for (int i = 1; i <= 101; ++i) this->Append(MakeEntry(i));
  core::AuditFilter f;
  f.page_size = 0;
  core::AuditPage page = this->List(f);
  EXPECT_THAT(page.entries, SizeIs(100));
  EXPECT_EQ(page.next_after, 100u);
}

TYPED_TEST(AuditLogContractTest, ABoundedScanMayEndAPageEmptyWithNextAfter) {
  this->backend().Reset(/*scan_limit=*/5);
  for (int i = 1; i <= 12; ++i) {
    v1::AuditEntry e = MakeEntry(i);
    e.set_principal(i == 12 ? "carol" : "alice");
    this->Append(e);
  }
  core::AuditFilter f;
  f.principal = "carol";
  core::AuditPage p1 = this->List(f);
  EXPECT_THAT(p1.entries, IsEmpty());
  EXPECT_EQ(p1.next_after, 5u);
  f.after = p1.next_after;
  core::AuditPage p2 = this->List(f);
  EXPECT_THAT(p2.entries, IsEmpty());
  EXPECT_EQ(p2.next_after, 10u);
  f.after = p2.next_after;
  core::AuditPage p3 = this->List(f);
  EXPECT_THAT(Seqs(p3.entries), ElementsAre(12));
  EXPECT_EQ(p3.next_after, 0u);
}

// ---------------------------------------------------------------------------
// Retention.
// ---------------------------------------------------------------------------

TYPED_TEST(AuditLogContractTest, RetentionKeepsTheAnchorAndTheChainVerifies) {
  std::vector<v1::AuditEntry> appended;
  for (int i = 1; i <= 10; ++i) appended.push_back(this->Append(MakeEntry(i)));
  // Entries 1..5 are older than kT0 + 5m30s.
  absl::StatusOr<int64_t> removed =
      this->log().Retain(kT0 + absl::Minutes(5) + absl::Seconds(30));
  ASSERT_THAT(removed, IsOk());
  EXPECT_EQ(*removed, 5);
  core::AuditPage page = this->List({});
  EXPECT_THAT(Seqs(page.entries), ElementsAre(6, 7, 8, 9, 10));
  EXPECT_EQ(page.anchor.seq(), 5u);
  EXPECT_EQ(page.anchor.hash(), appended[4].hash());
  EXPECT_EQ(page.last_seq, 10u);
  core::AuditVerification v = this->Verify();
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.checked, 5u);
  // A client verifies the same from the page.
  EXPECT_TRUE(core::VerifyChain(page.anchor, page.entries).ok);
  // Paging from before the anchor starts at the anchor.
  core::AuditFilter f;
  f.after = 2;
  EXPECT_THAT(Seqs(this->List(f).entries), ElementsAre(6, 7, 8, 9, 10));
  // Nothing more is old enough.
  removed = this->log().Retain(kT0 + absl::Minutes(5) + absl::Seconds(30));
  ASSERT_THAT(removed, IsOk());
  EXPECT_EQ(*removed, 0);
  // The chain goes on.
  EXPECT_EQ(this->Append(MakeEntry(11)).prev_hash(), appended[9].hash());
  EXPECT_TRUE(this->Verify().ok);
}

TYPED_TEST(AuditLogContractTest, RetentionStopsAtTheFirstNewerEntry) {
  for (int i : {1, 2, 9, 3, 4}) this->Append(MakeEntry(i));  // seq 3 is newer
  absl::StatusOr<int64_t> removed = this->log().Retain(kT0 + absl::Minutes(5));
  ASSERT_THAT(removed, IsOk());
  EXPECT_EQ(*removed, 2);
  EXPECT_THAT(Seqs(this->List({}).entries), ElementsAre(3, 4, 5));
  EXPECT_TRUE(this->Verify().ok);
}

TYPED_TEST(AuditLogContractTest, RetentionOfEveryEntryKeepsTheChainGoing) {
  std::vector<v1::AuditEntry> appended;
  for (int i = 1; i <= 3; ++i) appended.push_back(this->Append(MakeEntry(i)));
  absl::StatusOr<int64_t> removed = this->log().Retain(kT0 + absl::Hours(1));
  ASSERT_THAT(removed, IsOk());
  EXPECT_EQ(*removed, 3);
  core::AuditPage page = this->List({});
  EXPECT_THAT(page.entries, IsEmpty());
  EXPECT_EQ(page.anchor.seq(), 3u);
  EXPECT_EQ(page.anchor.hash(), appended[2].hash());
  EXPECT_EQ(page.last_seq, 3u);
  EXPECT_TRUE(this->Verify().ok);
  v1::AuditEntry next = this->Append(MakeEntry(70));
  EXPECT_EQ(next.seq(), 4u);
  EXPECT_EQ(next.prev_hash(), appended[2].hash());
  core::AuditVerification v = this->Verify();
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.checked, 1u);
}

// ---------------------------------------------------------------------------
// Tampering: Verify names exactly the entry.
// ---------------------------------------------------------------------------

TYPED_TEST(AuditLogContractTest, AnAlteredEntryIsNamedByItsHash) {
  for (int i = 1; i <= 5; ++i) this->Append(MakeEntry(i));
  this->backend().Tamper(3, [](v1::AuditEntry& e) {
    e.set_namespace_("kube-system");  // hash left as it was
  });
  core::AuditVerification v = this->Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 3u);
  EXPECT_EQ(v.checked, 2u);
  EXPECT_THAT(v.problem, HasSubstr("entry 3: hash mismatch (stored "));
  EXPECT_THAT(v.problem, HasSubstr("the entry was altered"));
}

TYPED_TEST(AuditLogContractTest, ADeletedEntryIsNamedAsMissing) {
  for (int i = 1; i <= 5; ++i) this->Append(MakeEntry(i));
  this->backend().Erase(3);
  core::AuditVerification v = this->Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 3u);
  EXPECT_EQ(v.problem, "entry 3 missing (after 2 comes 4)");
}

TYPED_TEST(AuditLogContractTest, AnAlteredAndRehashedEntryBreaksTheNextLink) {
  for (int i = 1; i <= 5; ++i) this->Append(MakeEntry(i));
  this->backend().Tamper(3, [](v1::AuditEntry& e) {
    e.set_principal("mallory");
    e.set_hash(core::AuditHash(e));
  });
  core::AuditVerification v = this->Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 4u);
  EXPECT_EQ(v.problem, "entry 4: prev_hash does not match entry 3's hash");
}

TYPED_TEST(AuditLogContractTest, ARewrittenFirstEntryIsNamedAgainstTheAnchor) {
  for (int i = 1; i <= 3; ++i) this->Append(MakeEntry(i));
  this->backend().Tamper(1, [](v1::AuditEntry& e) {
    e.set_prev_hash(std::string(64, 'f'));
    e.set_hash(core::AuditHash(e));
  });
  core::AuditVerification v = this->Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 1u);
  EXPECT_EQ(v.problem, "entry 1: prev_hash does not match the anchor");
}

TYPED_TEST(AuditLogContractTest, ARemovedTailIsNamedAsMissing) {
  for (int i = 1; i <= 5; ++i) this->Append(MakeEntry(i));
  this->backend().Erase(5);
  this->backend().Erase(4);
  core::AuditVerification v = this->Verify();
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 4u);
  EXPECT_EQ(v.problem,
            "entries 4..5 missing (the log ends at 3, its last seq is 5)");
  // ListAudit's last_seq lets a client see the same.
  core::AuditPage page = this->List({});
  EXPECT_EQ(page.last_seq, 5u);
  core::AuditChainVerifier client(page.anchor);
  for (const auto& e : page.entries) client.Add(e);
  EXPECT_EQ(client.Finish(page.last_seq).first_bad_seq, 4u);
}

}  // namespace
}  // namespace reflexion

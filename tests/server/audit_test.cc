// The audit log through the real server (App on 127.0.0.1:0, RocksDB in a
// temp dir): ListAudit's validation and paging, audit retention, the
// audit.max_age key, and `reflexionctl audit [--verify]` as a user runs it,
// before and after the stored chain is tampered with.

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "core/reflexion/audit_chain.h"
#include "core/reflexion/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "server/app.h"
#include "server/config.h"
#include "storage/rocksdb_audit_log.h"
#include "storage/rocksdb_db.h"
#include "tests/server/run_ctl.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

using ::reflexion::testing::IsOk;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

v1::AuditEntry MakeEntry(int i, absl::Time time) {
  v1::AuditEntry e;
  *e.mutable_time() = core::ToProto(time);
  e.set_kind(i % 2 == 1 ? v1::AuditEntry::KIND_ACTION
                        : v1::AuditEntry::KIND_OUTCOME);
  e.set_principal("alice");
  e.set_cluster(i % 3 == 0 ? "prod" : "staging");
  e.set_namespace_("payments");
  e.set_workload("Deployment/web");
  e.set_pod(absl::StrCat("web-", i));
  e.set_workflow_id(absl::StrCat("wf-1-", (i + 1) / 2));
  e.mutable_action()->set_type(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
  e.mutable_action()->mutable_params()->set_memory_factor(1.5);
  e.set_tier(v1::SAFETY_TIER_B);
  e.set_decider(v1::AuditEntry::DECIDER_HUMAN);
  e.set_decided_by("bob");
  e.set_mode(v1::POLICY_MODE_ENFORCE);
  if (i % 2 == 0) {
    e.set_outcome("applied");
    e.set_refers_to(i - 1);
  }
  e.set_detail(absl::StrCat("entry ", i));
  return e;
}

// Entries written at fixed times: long before any audit.max_age cut-off
// from today's clock (the epoch), or long after it (year 2200; core::ToProto
// goes through int64 nanoseconds, so not beyond 2262).
const absl::Time kAncient = absl::UnixEpoch();
const absl::Time kFuture =
    absl::FromCivil(absl::CivilDay(2200, 1, 1), absl::UTCTimeZone());

class AuditServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }
  void TearDown() override { StopServer(); }

  void StartServer() {
    ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.data_dir = dir_.path();
    config.worker_threads = 2;
    app_ = std::make_unique<App>(config);
    ASSERT_THAT(app_->Start(), IsOk());
    ASSERT_NE(app_->audit_log(), nullptr);
    channel_ = client::Connect(absl::StrCat("127.0.0.1:", app_->port()));
    stub_ = v1::ReflexionService::NewStub(channel_);
  }
  void StopServer() {
    stub_.reset();
    channel_.reset();
    app_.reset();
  }

  void AppendEntries(int n, absl::Time time) {
    for (int i = 1; i <= n; ++i) {
      ASSERT_THAT(app_->audit_log()->Append(MakeEntry(i, time)), IsOk());
    }
  }

  grpc::Status List(const v1::ListAuditRequest& req,
                    v1::ListAuditResponse* resp) {
    grpc::ClientContext ctx;
    return stub_->ListAudit(&ctx, req, resp);
  }

  // With the server stopped: edits stored entry `seq` in the data dir.
  void TamperOnDisk(uint64_t seq,
                    const std::function<void(v1::AuditEntry&)>& edit) {
    absl::StatusOr<std::unique_ptr<storage::RocksDb>> db =
        storage::RocksDb::Open(dir_.path());
    ASSERT_THAT(db, IsOk());
    rocksdb::ColumnFamilyHandle* cf = (*db)->ColumnFamily("audit");
    const std::string key = storage::RocksDbAuditLog::EntryKey(seq);
    std::string value;
    ASSERT_TRUE((*db)->db()->Get(rocksdb::ReadOptions(), cf, key, &value).ok());
    v1::AuditEntry e;
    ASSERT_TRUE(e.ParseFromString(value));
    edit(e);
    ASSERT_TRUE(
        (*db)
            ->db()
            ->Put(rocksdb::WriteOptions(), cf, key, e.SerializeAsString())
            .ok());
  }

  std::string Address() const {
    return absl::StrCat("127.0.0.1:", app_->port());
  }

  testing::TempDir dir_;
  std::unique_ptr<App> app_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ReflexionService::Stub> stub_;
};

TEST_F(AuditServerTest, ListAuditRejectsBadArgumentsNamingTheField) {
  struct Case {
    std::function<void(v1::ListAuditRequest&)> set;
    std::string field;
  };
  const std::vector<Case> cases = {
      {[](v1::ListAuditRequest& r) { r.set_page_size(1001); }, "page_size"},
      {[](v1::ListAuditRequest& r) { r.set_page_size(-1); }, "page_size"},
      {[](v1::ListAuditRequest& r) {
         r.set_kind(static_cast<v1::AuditEntry::Kind>(99));
       },
       "kind"},
      {[](v1::ListAuditRequest& r) {
         *r.mutable_since() = core::ToProto(kFuture);
         *r.mutable_until() = core::ToProto(kAncient);
       },
       "since"},
      {[](v1::ListAuditRequest& r) { r.mutable_until()->set_nanos(-5); },
       "until"},
      {[](v1::ListAuditRequest& r) {
         r.mutable_since()->set_seconds(int64_t{1} << 62);
       },
       "since"},
      {[](v1::ListAuditRequest& r) { r.set_cluster(std::string(300, 'c')); },
       "cluster"},
      {[](v1::ListAuditRequest& r) { r.set_principal(std::string(300, 'p')); },
       "principal"},
      // Does not parse on the server: named all the same.
      {[](v1::ListAuditRequest& r) { r.set_namespace_("bad \xc3"); },
       "namespace"},
  };
  for (const Case& c : cases) {
    v1::ListAuditRequest req;
    c.set(req);
    v1::ListAuditResponse resp;
    grpc::Status s = List(req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << req.ShortDebugString();
    EXPECT_THAT(s.error_message(), HasSubstr(c.field + ":"))
        << req.ShortDebugString();
  }
}

TEST_F(AuditServerTest, ListAuditPagesThroughTheAppsLogAndTheChainVerifies) {
  AppendEntries(25, kFuture);
  v1::ListAuditRequest req;
  req.set_page_size(10);
  std::vector<v1::AuditEntry> all;
  std::vector<uint64_t> next;
  v1::AuditAnchor anchor;
  do {
    v1::ListAuditResponse resp;
    grpc::Status s = List(req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.last_seq(), 25u);
    anchor = resp.anchor();
    for (const auto& e : resp.entries()) all.push_back(e);
    next.push_back(resp.next_after());
    req.set_after(resp.next_after());
  } while (req.after() != 0);
  EXPECT_THAT(next, ElementsAre(10, 20, 0));
  ASSERT_THAT(all, SizeIs(25));
  EXPECT_EQ(anchor.seq(), 0u);
  core::AuditVerification v = core::VerifyChain(anchor, all);
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.checked, 25u);
  // Filters reach the log: cluster "prod" is every third entry, and of
  // those, the outcomes are the even ones.
  v1::ListAuditRequest filtered;
  filtered.set_cluster("prod");
  filtered.set_kind(v1::AuditEntry::KIND_OUTCOME);
  v1::ListAuditResponse resp;
  ASSERT_TRUE(List(filtered, &resp).ok());
  std::vector<uint64_t> seqs;
  for (const auto& e : resp.entries()) seqs.push_back(e.seq());
  EXPECT_THAT(seqs, ElementsAre(6, 12, 18, 24));
  EXPECT_EQ(resp.next_after(), 0u);
}

TEST_F(AuditServerTest, AuditRetentionRemovesOldEntriesAndKeepsTheAnchor) {
  AppendEntries(3, kAncient);
  AppendEntries(2, kFuture);
  absl::StatusOr<int64_t> removed = app_->RunAuditRetention();
  ASSERT_THAT(removed, IsOk());
  EXPECT_EQ(*removed, 3);
  v1::ListAuditResponse resp;
  ASSERT_TRUE(List({}, &resp).ok());
  EXPECT_EQ(resp.anchor().seq(), 3u);
  ASSERT_THAT(resp.entries(), SizeIs(2));
  EXPECT_EQ(resp.entries(0).seq(), 4u);
  EXPECT_EQ(resp.entries(0).prev_hash(), resp.anchor().hash());
  std::vector<v1::AuditEntry> entries(resp.entries().begin(),
                                      resp.entries().end());
  EXPECT_TRUE(core::VerifyChain(resp.anchor(), entries).ok);
}

TEST_F(AuditServerTest, ReflexionctlAuditPrintsOneLinePerEntryWithFilters) {
  AppendEntries(4, kFuture);
  CommandResult r = RunCtl(absl::StrCat("--server ", Address(), " audit"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::vector<std::string> lines =
      absl::StrSplit(r.output, '\n', absl::SkipEmpty());
  ASSERT_THAT(lines, SizeIs(4)) << r.output;
  EXPECT_THAT(lines[0], HasSubstr("     1  2200-01-01T00:00:00.000Z  action"));
  EXPECT_THAT(lines[0],
              HasSubstr("by alice  staging/payments  Deployment/web"));
  EXPECT_THAT(lines[0],
              HasSubstr("increase_memory_limit(memory_factor=1.5)  tier B  "
                        "decided by human (bob)  mode enforce  : entry 1"));
  EXPECT_THAT(lines[1], HasSubstr("outcome"));
  EXPECT_THAT(lines[1], HasSubstr("-> applied  (of 1)"));
  // A detail with line breaks stays on its entry's line.
  v1::AuditEntry multi = MakeEntry(5, kFuture);
  multi.set_detail("first line\nsecond line");
  ASSERT_THAT(app_->audit_log()->Append(multi), IsOk());
  r = RunCtl(absl::StrCat("--server ", Address(), " audit --after 4"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr(": first line\\nsecond line\n"));

  r = RunCtl(
      absl::StrCat("--server ", Address(), " audit --kind outcome --limit 1"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  lines = absl::StrSplit(r.output, '\n', absl::SkipEmpty());
  ASSERT_THAT(lines, SizeIs(2)) << r.output;
  EXPECT_THAT(lines[0], HasSubstr("     2  "));
  EXPECT_EQ(lines[1], "(more: reflexionctl audit --after 2 ...)");

  r = RunCtl(absl::StrCat("--server ", Address(), " audit --kind sometimes"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("--kind: 'sometimes' is not one of action"));
}

TEST_F(AuditServerTest, ReflexionctlVerifyIsOkAndNamesTheSeqAfterTampering) {
  AppendEntries(5, kFuture);
  CommandResult r =
      RunCtl(absl::StrCat("--server ", Address(), " audit --verify"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "audit chain OK: 5 entries from anchor 0\n");

  // Someone with access to the data dir rewrites entry 3.
  StopServer();
  TamperOnDisk(3, [](v1::AuditEntry& e) { e.set_namespace_("kube-system"); });
  StartServer();
  r = RunCtl(absl::StrCat("--server ", Address(), " audit --verify"));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_THAT(r.output,
              HasSubstr("audit chain BROKEN at entry 3: entry 3: hash "
                        "mismatch (stored "));
  EXPECT_THAT(r.output, HasSubstr("the entry was altered"));

  // ... and, more carefully, fixes its hash: the next link names it.
  StopServer();
  TamperOnDisk(3, [](v1::AuditEntry& e) { e.set_hash(core::AuditHash(e)); });
  StartServer();
  r = RunCtl(absl::StrCat("--server ", Address(), " -o json audit --verify"));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_THAT(r.output, HasSubstr("\"first_bad_seq\":4"));
  EXPECT_THAT(r.output,
              HasSubstr("entry 4: prev_hash does not match entry 3's hash"));

  r = RunCtl(
      absl::StrCat("--server ", Address(), " audit --verify --cluster prod"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("takes no"));
}

TEST(AuditConfigTest, MaxAgeTakesSecondsOrADurationAndRejectsTheRest) {
  ServerConfig c;
  EXPECT_EQ(c.audit_max_age, absl::Hours(8760));
  ASSERT_THAT(ApplyYaml("audit:\n  max_age: 720h\n", c), IsOk());
  EXPECT_EQ(c.audit_max_age, absl::Hours(720));
  ASSERT_THAT(ApplyYaml("audit:\n  max_age: 3600\n", c), IsOk());
  EXPECT_EQ(c.audit_max_age, absl::Hours(1));
  ASSERT_THAT(ApplyYaml("audit:\n  max_age: 0\n", c), IsOk());
  EXPECT_EQ(c.audit_max_age, absl::ZeroDuration());
  for (const char* bad : {"-1h", "soon", "inf", "1000000h"}) {
    absl::Status s =
        ApplyYaml(absl::StrCat("audit:\n  max_age: ", bad, "\n"), c);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("audit.max_age")) << bad;
  }
}

}  // namespace
}  // namespace reflexion::server

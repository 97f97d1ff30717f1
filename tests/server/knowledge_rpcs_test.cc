// GetStrategyHistory, RollbackStrategy, ClearMemory and memory retention end
// to end: a real server on 127.0.0.1:0 with RocksDB in a fresh temp dir and
// the simulated cluster.

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "core/reflexion/catalog.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/app.h"
#include "server/config.h"
#include "storage/rocksdb_db.h"
#include "storage/rocksdb_knowledge_store.h"
#include "tests/server/run_ctl.h"
#include "tests/server/server_process.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

namespace v1 = ::reflexion::v1;
using ::reflexion::testing::IsOk;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kStrategy[] = "increase_memory_limit";

class KnowledgeRpcsTest : public ::testing::Test {
 protected:
  void TearDown() override {
    stub_.reset();
    app_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Start(int max_episodes = 0) {
    ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.data_dir = dir_;
    config.worker_threads = 2;
    config.workflow.seed = 5;
    config.simulator_seed = 3;
    config.memory_max_episodes = max_episodes;
    app_ = std::make_unique<App>(config);
    ASSERT_THAT(app_->Start(), IsOk());
    stub_ = v1::ReflexionService::NewStub(
        client::Connect(absl::StrCat("127.0.0.1:", app_->port())));
  }

  v1::ProcessIncidentResponse Process(const std::string& pod,
                                      const std::string& type) {
    v1::ProcessIncidentRequest req;
    req.set_pod_name(pod);
    req.set_namespace_("data");
    req.set_error_type(type);
    v1::ProcessIncidentResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->ProcessIncident(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  grpc::Status History(const std::string& name,
                       v1::GetStrategyHistoryResponse* resp) {
    v1::GetStrategyHistoryRequest req;
    req.set_strategy(name);
    grpc::ClientContext ctx;
    return stub_->GetStrategyHistory(&ctx, req, resp);
  }

  grpc::Status Rollback(const std::string& name, int to,
                        const std::string& reason,
                        v1::RollbackStrategyResponse* resp) {
    v1::RollbackStrategyRequest req;
    req.set_strategy(name);
    req.set_to_version(to);
    req.set_reason(reason);
    grpc::ClientContext ctx;
    return stub_->RollbackStrategy(&ctx, req, resp);
  }

  std::vector<v1::Episode> Episodes(const std::string& signature = "") {
    v1::ListEpisodesRequest req;
    req.set_page_size(1000);
    req.set_signature(signature);
    v1::ListEpisodesResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->ListEpisodes(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.episodes().begin(), resp.episodes().end()};
  }

  std::vector<v1::AuditEntry> AdminAudit() {
    v1::ListAuditRequest req;
    req.set_kind(v1::AuditEntry::KIND_ADMIN);
    req.set_page_size(1000);
    v1::ListAuditResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->ListAudit(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return {resp.entries().begin(), resp.entries().end()};
  }

  std::string dir_ = MakeTempDir();
  std::unique_ptr<App> app_;
  std::unique_ptr<v1::ReflexionService::Stub> stub_;
};

TEST_F(KnowledgeRpcsTest, HistoryListsEveryVersionWithItsRecord) {
  Start();
  v1::GetStrategyHistoryResponse resp;
  ASSERT_TRUE(History(kStrategy, &resp).ok());
  ASSERT_EQ(resp.versions_size(), 1);
  EXPECT_EQ(resp.versions(0).strategy().version(), 1);
  EXPECT_EQ(resp.versions(0).strategy().author(), "catalog");
  EXPECT_TRUE(resp.versions(0).current());
  EXPECT_EQ(resp.versions(0).stats().trials(), 0);
  // Learning counts against the version tried, when it ran with the
  // version's own parameters (a raise after a failed attempt does not).
  const double factor = resp.versions(0).strategy().params().memory_factor();
  int tried = 0;
  for (int i = 0; i < 6; ++i) {
    Process(absl::StrCat("etl-", i), "OOMKilled");
  }
  for (const v1::Episode& e : Episodes()) {
    tried += e.strategy() == kStrategy && e.strategy_version() == 1 &&
             e.action().params().memory_factor() == factor;
  }
  resp.Clear();
  ASSERT_TRUE(History(kStrategy, &resp).ok());
  EXPECT_EQ(resp.versions(0).stats().trials(), tried);
  EXPECT_GT(tried, 0);

  v1::GetStrategyHistoryResponse missing;
  grpc::Status s = History("no_such_strategy", &missing);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = History("", &missing);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("strategy"));
}

TEST_F(KnowledgeRpcsTest, RollbackMakesANewVersionWithTheOldParameters) {
  // The data dir holds version 1 (the catalog's) and a learned version 2.
  v1::Strategy v1s, v2s;
  for (const v1::Strategy& s :
       core::DefaultStrategies(absl::FromUnixSeconds(1'700'000'000))) {
    if (s.name() == kStrategy) v1s = s;
  }
  ASSERT_EQ(v1s.name(), kStrategy);
  v2s = v1s;
  v2s.set_version(2);
  v2s.set_parent_version(1);
  v2s.set_author("reflector:heuristic");
  v2s.set_reason("raise more");
  v2s.mutable_params()->set_memory_factor(v1s.params().memory_factor() + 0.5);
  {
    absl::StatusOr<std::unique_ptr<storage::RocksDb>> db =
        storage::RocksDb::Open(dir_);
    ASSERT_THAT(db, IsOk());
    storage::RocksDbKnowledgeStore store(db->get());
    ASSERT_THAT(store.PutStrategyVersion(v1s), IsOk());
    ASSERT_THAT(store.PutStrategyVersion(v2s), IsOk());
  }
  Start();
  v1::RollbackStrategyResponse resp;
  grpc::Status s = Rollback(kStrategy, 1, "v2 raises too much", &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.strategy().version(), 3);
  EXPECT_EQ(resp.strategy().parent_version(), 2);
  EXPECT_EQ(resp.strategy().author(), "human:anonymous");
  EXPECT_THAT(resp.strategy().reason(), HasSubstr("v2 raises too much"));
  EXPECT_DOUBLE_EQ(resp.strategy().params().memory_factor(),
                   v1s.params().memory_factor());

  v1::GetStrategyHistoryResponse h;
  ASSERT_TRUE(History(kStrategy, &h).ok());
  ASSERT_EQ(h.versions_size(), 3);
  EXPECT_FALSE(h.versions(1).current());
  EXPECT_TRUE(h.versions(2).current());
  EXPECT_EQ(h.versions(1).strategy().author(), "reflector:heuristic");
  EXPECT_EQ(h.versions(2).strategy().params().SerializeAsString(),
            v1s.params().SerializeAsString());
  // ListStrategies serves the new current version.
  v1::ListStrategiesResponse list;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(
        stub_->ListStrategies(&ctx, v1::ListStrategiesRequest(), &list).ok());
  }
  for (const auto& v : list.strategies()) {
    if (v.strategy().name() == kStrategy) {
      EXPECT_EQ(v.strategy().version(), 3);
    }
  }
  std::vector<v1::AuditEntry> audit = AdminAudit();
  ASSERT_EQ(audit.size(), 1u);
  EXPECT_EQ(audit[0].outcome(), "strategy rolled back");
  EXPECT_THAT(audit[0].detail(), HasSubstr("version 3 (parent 2)"));
  EXPECT_EQ(audit[0].decided_by(), "anonymous");

  // Errors name the field.
  s = Rollback(kStrategy, 3, "", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("already current"));
  s = Rollback(kStrategy, 7, "", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  s = Rollback(kStrategy, 0, "", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("to_version"));
  s = Rollback(kStrategy, 1, std::string("\xff", 1), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("reason"));
  s = Rollback("no_such_strategy", 1, "", &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(KnowledgeRpcsTest, ClearMemoryBySignatureThenAllIsAudited) {
  Start();
  Process("etl-1", "OOMKilled");
  Process("web-1", "ImagePullBackOff");
  std::vector<v1::Episode> all = Episodes();
  ASSERT_GE(all.size(), 2u);
  const std::string oom = [&] {
    for (const auto& e : all) {
      if (e.error_type() == "OOMKilled") return e.signature();
    }
    return std::string();
  }();
  ASSERT_FALSE(oom.empty());
  size_t oom_count = Episodes(oom).size();
  {
    v1::ClearMemoryRequest req;
    req.set_signature(oom);
    v1::ClearMemoryResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->ClearMemory(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.episodes_removed(), static_cast<int64_t>(oom_count));
    EXPECT_GE(resp.posteriors_removed(), 1);
  }
  EXPECT_TRUE(Episodes(oom).empty());
  EXPECT_EQ(Episodes().size(), all.size() - oom_count);
  {
    v1::ClearMemoryRequest req;
    v1::ClearMemoryResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ClearMemory(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.episodes_removed(),
              static_cast<int64_t>(all.size() - oom_count));
  }
  EXPECT_TRUE(Episodes().empty());
  // Strategy versions survive.
  v1::GetStrategyHistoryResponse h;
  EXPECT_TRUE(History(kStrategy, &h).ok());
  std::vector<v1::AuditEntry> audit = AdminAudit();
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[0].outcome(), "memory cleared");
  EXPECT_THAT(audit[0].detail(), HasSubstr(oom));
  EXPECT_THAT(audit[1].detail(), HasSubstr("all memory"));
  EXPECT_EQ(audit[1].principal(), "anonymous");

  v1::ClearMemoryRequest bad;
  bad.set_signature(std::string(200, 'x'));
  v1::ClearMemoryResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = stub_->ClearMemory(&ctx, bad, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("signature"));
}

TEST_F(KnowledgeRpcsTest, MemoryRetentionKeepsTheNewestEpisodesAndPosteriors) {
  Start(/*max_episodes=*/2);
  for (int i = 0; i < 4; ++i) Process(absl::StrCat("etl-", i), "OOMKilled");
  std::vector<v1::Episode> before = Episodes();
  ASSERT_GT(before.size(), 2u);
  v1::ListStrategiesResponse posteriors_before;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_
                    ->ListStrategies(&ctx, v1::ListStrategiesRequest(),
                                     &posteriors_before)
                    .ok());
  }
  absl::StatusOr<int64_t> removed = app_->RunMemoryRetention();
  ASSERT_THAT(removed, IsOk());
  EXPECT_EQ(*removed, static_cast<int64_t>(before.size()) - 2);
  std::vector<v1::Episode> after = Episodes();
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].id(), before[0].id());  // newest first
  EXPECT_EQ(after[1].id(), before[1].id());
  v1::ListStrategiesResponse posteriors_after;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_
                    ->ListStrategies(&ctx, v1::ListStrategiesRequest(),
                                     &posteriors_after)
                    .ok());
  }
  EXPECT_EQ(posteriors_after.DebugString(), posteriors_before.DebugString());
}

TEST_F(KnowledgeRpcsTest, ReflexionctlHistoryRollbackAndClearMemory) {
  Start();
  Process("etl-1", "OOMKilled");
  const std::string server = absl::StrCat("--server 127.0.0.1:", app_->port());
  CommandResult h = RunCtl(absl::StrCat(server, " history ", kStrategy));
  ASSERT_EQ(h.exit_code, 0) << h.output;
  EXPECT_THAT(h.output, HasSubstr("v1 (current) parent v0  catalog"));
  // Only version 1: nothing to roll back to.
  CommandResult r =
      RunCtl(absl::StrCat(server, " rollback ", kStrategy, " --to 1"));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_THAT(r.output, HasSubstr("already current"));
  r = RunCtl(absl::StrCat(server, " rollback ", kStrategy));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--to"));
  // A workflow id still lists its checkpoints.
  v1::ProcessIncidentResponse p = Process("etl-2", "OOMKilled");
  CommandResult w =
      RunCtl(absl::StrCat(server, " history ", p.result().workflow_id()));
  EXPECT_EQ(w.exit_code, 0) << w.output;
  EXPECT_THAT(w.output, Not(HasSubstr("(current)")));
  CommandResult c = RunCtl(absl::StrCat(server, " clear-memory"));
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_THAT(c.output, HasSubstr("removed "));
  EXPECT_TRUE(Episodes().empty());
}

TEST(KnowledgeConfigTest, RollbackAndMemoryKeysParseAndAreBounded) {
  ServerConfig c;
  EXPECT_EQ(c.workflow.rollback_min_trials, 5);
  EXPECT_EQ(c.memory_max_episodes, 100000);
  EXPECT_EQ(c.memory_max_age, absl::ZeroDuration());
  ASSERT_THAT(ApplyYaml("reflexion:\n  rollback_min_trials: 8\n"
                        "memory:\n  max_episodes: 50\n  max_age: 720h\n",
                        c),
              IsOk());
  EXPECT_EQ(c.workflow.rollback_min_trials, 8);
  EXPECT_EQ(c.memory_max_episodes, 50);
  EXPECT_EQ(c.memory_max_age, absl::Hours(720));
  ServerConfig bad;
  EXPECT_FALSE(ApplyYaml("memory:\n  max_episodes: -1\n", bad).ok());
  EXPECT_FALSE(ApplyYaml("reflexion:\n  rollback_min_trials: -2\n", bad).ok());
  absl::Status s = ApplyYaml("memory:\n  max_age: soon\n", bad);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr("memory.max_age"));
}

}  // namespace
}  // namespace reflexion::server

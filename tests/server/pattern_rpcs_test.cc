// ListPatterns end to end: a real server on 127.0.0.1:0 with tokens, RocksDB
// in a fresh temp dir holding planted episodes, the simulated cluster for
// live incidents, and reflexionctl.

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "core/reflexion/time_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/app.h"
#include "server/auth.h"
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
using ::testing::StartsWith;

constexpr char kAdminToken[] = "patterns-admin-secret-41";
constexpr char kScopedToken[] = "patterns-viewer-bw-secret-42";
constexpr char kOom[] = "OOMKilled/memory_limit_too_low";
constexpr char kPull[] = "ImagePullBackOff/image_not_found";
constexpr char kCrash[] = "CrashLoopBackOff/app_error";
const absl::Time kT0 = absl::FromUnixSeconds(1'720'000'000);

class PatternRpcsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Plant();
    const std::string tokens = dir_ + "/tokens.yaml";
    std::ofstream(tokens) << absl::StrCat(
        "tokens:\n  - sha256: ", Sha256Hex(kAdminToken),
        "\n    principal: root\n    role: admin\n  - sha256: ",
        Sha256Hex(kScopedToken),
        "\n    principal: viewer-bw\n    role: viewer\n"
        "    namespaces: [batch, web]\n");
    ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.data_dir = dir_ + "/data";
    config.worker_threads = 2;
    config.workflow.seed = 5;
    config.simulator_seed = 3;
    config.auth_tokens_file = tokens;
    config.auth_reload_interval = absl::Hours(1);
    app_ = std::make_unique<App>(config);
    ASSERT_THAT(app_->Start(), IsOk());
    target_ = absl::StrCat("127.0.0.1:", app_->port());
  }
  void TearDown() override {
    app_.reset();
    std::filesystem::remove_all(dir_);
  }

  // 26 incidents of one attempt each, one a minute from kT0:
  //   batch: 8 OOM (the 8th resolved in 900 s, the others in ~60 s), 2 pull
  //   web:   2 OOM, 8 pull
  //   api:   6 crash
  void Plant() {
    absl::StatusOr<std::unique_ptr<storage::RocksDb>> db =
        storage::RocksDb::Open(dir_ + "/data");
    ASSERT_THAT(db, IsOk());
    storage::RocksDbKnowledgeStore store(db->get());
    int n = 0;
    auto add = [&](const std::string& ns, const std::string& sig,
                   const std::string& strategy, int count) {
      for (int i = 0; i < count; ++i, ++n) {
        core::LearningCommit c;
        v1::Episode& e = c.episode;
        e.set_id(absl::StrCat("ep-", n));
        e.set_workflow_id(absl::StrCat("planted-", n));
        *e.mutable_time() = core::ToProto(kT0 + absl::Minutes(n));
        e.set_pod_name(absl::StrCat("pod-", n));
        e.set_namespace_(ns);
        e.set_signature(sig);
        e.set_error_type(sig.substr(0, sig.find('/')));
        e.set_attempt(1);
        e.set_strategy(strategy);
        e.set_strategy_version(1);
        e.set_success(true);
        e.set_time_to_recovery_s(
            sig == kOom && ns == "batch" && i == 7 ? 900 : 55 + (i % 3) * 5);
        ASSERT_THAT(store.CommitLearning(c), IsOk());
      }
    };
    add("batch", kOom, "increase_memory_limit", 8);
    add("batch", kPull, "patch_image", 2);
    add("web", kOom, "increase_memory_limit", 2);
    add("web", kPull, "patch_image", 8);
    add("api", kCrash, "rollback_deployment", 6);
  }

  std::unique_ptr<v1::ReflexionService::Stub> Stub(const std::string& token) {
    client::ConnectOptions o;
    o.token = token;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> ch =
        client::Connect(target_, o);
    EXPECT_THAT(ch, IsOk());
    return v1::ReflexionService::NewStub(*ch);
  }

  grpc::Status List(const std::string& token, const v1::ListPatternsRequest& r,
                    v1::ListPatternsResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(60));
    return Stub(token)->ListPatterns(&ctx, r, resp);
  }

  std::string dir_ = MakeTempDir();
  std::unique_ptr<App> app_;
  std::string target_;
};

const v1::PatternCorrelation* Find(const v1::ListPatternsResponse& r,
                                   const std::string& error,
                                   const std::string& ns) {
  for (const auto& c : r.correlations()) {
    if (c.error() == error && c.namespace_() == ns) return &c;
  }
  return nullptr;
}

TEST_F(PatternRpcsTest, ListsThePlantedCorrelationAndSlowResolution) {
  v1::ListPatternsResponse r;
  grpc::Status s = List(kAdminToken, v1::ListPatternsRequest(), &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.incidents(), 26);
  EXPECT_EQ(r.episodes(), 26);
  const v1::PatternCorrelation* batch = Find(r, "OOMKilled", "batch");
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->count(), 8);
  EXPECT_EQ(batch->namespace_total(), 10);
  EXPECT_EQ(batch->error_total(), 10);
  EXPECT_EQ(batch->total(), 26);
  EXPECT_NEAR(batch->lift(), 0.8 / (10.0 / 26), 1e-9);
  EXPECT_EQ(Find(r, "OOMKilled", "web"), nullptr);
  // Eight OOMs in eight minutes against a history of years: a burst.
  bool burst = false;
  for (const auto& b : r.bursts()) {
    if (b.signature() != kOom) continue;
    burst = true;
    EXPECT_EQ(b.count(), 8);
    EXPECT_EQ(core::FromProto(b.window_start()), kT0);
    EXPECT_LT(b.expected(), 0.01);
  }
  EXPECT_TRUE(burst);
  ASSERT_EQ(r.anomalies_size(), 1);
  EXPECT_EQ(r.anomalies(0).kind(), v1::PatternAnomaly::KIND_SLOW_RESOLUTION);
  EXPECT_EQ(r.anomalies(0).episode_id(), "ep-7");
  EXPECT_DOUBLE_EQ(r.anomalies(0).value(), 900);
  // Effectiveness from the stored posteriors (an unscoped caller).
  bool found = false;
  for (const auto& e : r.effectiveness()) {
    EXPECT_EQ(e.source(), v1::PatternEffectiveness::SOURCE_STORED_POSTERIOR);
    if (e.signature() == kOom && e.strategy() == "increase_memory_limit") {
      found = true;
      EXPECT_EQ(e.trials(), 10);
      EXPECT_EQ(e.successes(), 10);
      EXPECT_LT(e.lower(), e.mean());
      EXPECT_GT(e.upper(), e.mean());
    }
  }
  EXPECT_TRUE(found);

  // Live incidents through the simulated cluster: each is one more incident
  // (its workflow record and its episodes, counted once), also one that
  // waits for a human before any attempt (a missing Secret: no episode).
  int processed = 0, attempts = 0, before_attempt = 0;
  auto process = [&](const std::string& pod, const std::string& type) {
    v1::ProcessIncidentRequest req;
    req.set_pod_name(pod);
    req.set_namespace_("data");
    req.set_error_type(type);
    v1::ProcessIncidentResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(60));
    grpc::Status st = Stub(kAdminToken)->ProcessIncident(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ++processed;
    attempts += resp.result().attempts();
    before_attempt += resp.result().attempts() == 0;
  };
  process("live-0", "OOMKilled");
  process("live-1", "OOMKilled");
  for (int i = 0; i < 20 && before_attempt == 0; ++i) {
    process(absl::StrCat("cfg-", i), "CreateContainerConfigError");
  }
  ASSERT_EQ(before_attempt, 1) << "no incident waited before an attempt";
  r.Clear();
  s = List(kAdminToken, v1::ListPatternsRequest(), &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(r.incidents(), 26 + processed);
  EXPECT_EQ(r.episodes(), 26 + attempts);
}

TEST_F(PatternRpcsTest, BadInputIsInvalidArgumentNamingTheField) {
  struct Case {
    v1::ListPatternsRequest request;
    std::string field;
  };
  std::vector<Case> cases(4);
  cases[0].request.set_limit(5000);
  cases[0].field = "limit";
  cases[1].request.mutable_window()->set_seconds(-60);
  cases[1].field = "window";
  cases[2].request.set_namespace_("No_Such_Label");
  cases[2].field = "namespace";
  cases[3].request.set_min_count(-2);
  cases[3].field = "min_count";
  for (const Case& c : cases) {
    v1::ListPatternsResponse r;
    grpc::Status s = List(kAdminToken, c.request, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << c.field;
    EXPECT_THAT(s.error_message(), StartsWith(c.field + ":"));
  }
}

TEST_F(PatternRpcsTest, AScopedViewerSeesOnlyItsNamespaces) {
  v1::ListPatternsResponse r;
  grpc::Status s = List(kScopedToken, v1::ListPatternsRequest(), &r);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // batch and web only: api's 6 crashes are not seen, nor counted.
  EXPECT_EQ(r.incidents(), 20);
  EXPECT_EQ(r.episodes(), 20);
  ASSERT_GT(r.correlations_size(), 0);
  for (const auto& c : r.correlations()) {
    EXPECT_NE(c.namespace_(), "api");
    EXPECT_EQ(c.total(), 20);
  }
  const v1::PatternCorrelation* batch = Find(r, "OOMKilled", "batch");
  ASSERT_NE(batch, nullptr);
  EXPECT_NEAR(batch->lift(), 0.8 / 0.5, 1e-9);
  // The stored posteriors span every namespace: counted from its episodes.
  ASSERT_GT(r.effectiveness_size(), 0);
  for (const auto& e : r.effectiveness()) {
    EXPECT_EQ(e.source(), v1::PatternEffectiveness::SOURCE_EPISODES);
    EXPECT_NE(e.signature(), kCrash);
  }
  v1::ListPatternsRequest api;
  api.set_namespace_("api");
  s = List(kScopedToken, api, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("namespace"));
}

TEST_F(PatternRpcsTest, ReflexionctlPrintsThePlantedPatterns) {
  CommandResult out = RunCtl(absl::StrCat("--server ", target_, " --token ",
                                          kAdminToken, " patterns"));
  ASSERT_EQ(out.exit_code, 0) << out.output;
  EXPECT_THAT(out.output, HasSubstr("26 incidents and 26 episodes"));
  EXPECT_THAT(out.output, HasSubstr("Error-namespace correlation"));
  EXPECT_THAT(out.output, ::testing::ContainsRegex("OOMKilled +batch +8 +10"));
  EXPECT_THAT(out.output, HasSubstr("slow_resolution"));
  EXPECT_THAT(out.output, HasSubstr("resolved in 900.0s"));
  EXPECT_THAT(out.output, HasSubstr("increase_memory_limit"));

  out = RunCtl(absl::StrCat("--server ", target_, " --token ", kAdminToken,
                            " patterns --namespace web --limit 1"));
  ASSERT_EQ(out.exit_code, 0) << out.output;
  EXPECT_THAT(out.output, ::testing::ContainsRegex("ImagePullBackOff +web"));
  EXPECT_THAT(out.output, Not(HasSubstr("OOMKilled  ")));

  out = RunCtl(absl::StrCat("--server ", target_, " --token ", kAdminToken,
                            " patterns --limit 5000"));
  EXPECT_EQ(out.exit_code, 1);
  EXPECT_THAT(out.output, HasSubstr("INVALID_ARGUMENT: limit:"));

  out = RunCtl(absl::StrCat("--server ", target_, " --token ", kAdminToken,
                            " -o json patterns --by signature"));
  ASSERT_EQ(out.exit_code, 0) << out.output;
  EXPECT_THAT(out.output, HasSubstr(absl::StrCat("\"error\": \"", kOom)));
}

}  // namespace
}  // namespace reflexion::server

// Integration tests: the real server (App, as main() builds it) on
// 127.0.0.1:0 with RocksDB in a temp dir, driven through the generated stub.

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/app.h"
#include "server/config.h"
#include "storage/rocksdb_checkpoint_store.h"
#include "storage/rocksdb_db.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::HasSubstr;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() /
                        "reflexion-server-test-XXXXXX")
                           .string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

v1::Incident MakeIncident(std::string pod, std::string ns, std::string type,
                          std::string request_id = "") {
  v1::Incident in;
  in.set_pod_name(std::move(pod));
  in.set_namespace_(std::move(ns));
  in.set_error_type(std::move(type));
  in.set_request_id(std::move(request_id));
  return in;
}

constexpr const char* kTypes[] = {
    "ImagePullBackOff", "CrashLoopBackOff",
    "OOMKilled",        "Evicted",
    "Pending",          "ErrImagePull",
    "InvalidImageName", "CreateContainerConfigError"};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override { StartServer(); }
  void TearDown() override { app_.reset(); }

  void StartServer() {
    ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.data_dir = dir_.path();
    config.worker_threads = 2;
    config.workflow.seed = 5;
    config.simulator_seed = 3;
    config.workflow.keep_last_checkpoints = keep_last_;
    app_ = std::make_unique<App>(config);
    ASSERT_THAT(app_->Start(), IsOk());
    channel_ = client::Connect(absl::StrCat("127.0.0.1:", app_->port()));
    stub_ = v1::ReflexionService::NewStub(channel_);
  }

  void RestartServer() {
    stub_.reset();
    channel_.reset();
    app_.reset();  // graceful stop, closes RocksDB
    StartServer();
  }

  // Runs one incident to completion through ProcessIncident.
  v1::IncidentResult Process(const v1::Incident& in) {
    v1::ProcessIncidentRequest req;
    req.set_pod_name(in.pod_name());
    req.set_namespace_(in.namespace_());
    req.set_error_type(in.error_type());
    v1::ProcessIncidentResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->ProcessIncident(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.result();
  }

  // Polls GetWorkflow until the workflow is no longer RUNNING.
  v1::GetWorkflowResponse WaitUntilSettled(const std::string& id) {
    v1::GetWorkflowResponse got;
    for (int i = 0; i < 1000; ++i) {
      v1::GetWorkflowRequest req;
      req.set_workflow_id(id);
      grpc::ClientContext ctx;
      got.Clear();
      grpc::Status s = stub_->GetWorkflow(&ctx, req, &got);
      EXPECT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::NOT_FOUND)
          << s.error_message();
      if (s.ok() && got.phase() != v1::WORKFLOW_PHASE_RUNNING) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return got;
  }

  // The etag of the wait `id` is in now ("" when it is not waiting).
  std::string EtagOf(const std::string& id) {
    v1::GetWorkflowRequest req;
    req.set_workflow_id(id);
    v1::GetWorkflowResponse got;
    grpc::ClientContext ctx;
    if (!stub_->GetWorkflow(&ctx, req, &got).ok()) return "";
    return got.etag();
  }

  // A decision for the wait `id` is in now.
  grpc::Status Decide(const std::string& id, v1::HumanDecision::Kind kind,
                      const std::string& strategy) {
    return Decide(id, kind, strategy, EtagOf(id));
  }
  grpc::Status Decide(const std::string& id, v1::HumanDecision::Kind kind,
                      const std::string& strategy, const std::string& etag) {
    v1::ResumeWorkflowRequest req;
    req.set_workflow_id(id);
    req.set_etag(etag);
    req.mutable_decision()->set_kind(kind);
    req.mutable_decision()->set_strategy(strategy);
    v1::ResumeWorkflowResponse resp;
    grpc::ClientContext ctx;
    return stub_->ResumeWorkflow(&ctx, req, &resp);
  }

  TempDir dir_;
  int keep_last_ = 10;  // workflow.checkpoint_keep_last
  std::unique_ptr<App> app_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ReflexionService::Stub> stub_;
};

TEST_F(ServerTest, HealthCheckAnswersServing) {
  absl::StatusOr<int> status =
      client::CheckHealth(*channel_, kHealthServiceName);
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(*status, 1);
  absl::StatusOr<int> overall = client::CheckHealth(*channel_, "");
  ASSERT_THAT(overall, IsOk());
  EXPECT_EQ(*overall, 1);
}

TEST_F(ServerTest, OneStreamCarriesManyConcurrentIncidentsInOrder) {
  constexpr int kIncidents = 120;
  std::vector<v1::Incident> incidents;
  for (int i = 0; i < kIncidents; ++i) {
    incidents.push_back(MakeIncident(absl::StrCat("pod-", i),
                                     absl::StrCat("ns-", i % 4), kTypes[i % 8],
                                     absl::StrCat("req-", i)));
  }
  std::map<std::string, uint64_t> last_seq;       // by workflow id
  std::map<std::string, std::string> request_of;  // workflow -> request
  std::map<std::string, int> results;             // by request id
  std::map<std::string, int> accepted;            // by workflow id
  int bad_order = 0, after_result = 0, before_accepted = 0;
  std::set<std::string> finished;
  absl::Status s =
      client::ResolveAll(*stub_, incidents, [&](const v1::ResolveResponse& m) {
        if (m.has_accepted()) {
          // Exactly once per incident, before its first event.
          if (last_seq.count(m.accepted().workflow_id())) ++before_accepted;
          ++accepted[m.accepted().workflow_id()];
          request_of[m.accepted().workflow_id()] = m.accepted().request_id();
        } else if (m.has_event()) {
          const auto& e = m.event();
          if (!accepted.count(e.workflow_id())) ++before_accepted;
          if (finished.count(e.workflow_id())) ++after_result;
          if (e.sequence() != last_seq[e.workflow_id()] + 1) ++bad_order;
          last_seq[e.workflow_id()] = e.sequence();
          request_of[e.workflow_id()] = e.request_id();
        } else if (m.has_result()) {
          const auto& r = m.result();
          if (r.sequence() != last_seq[r.workflow_id()] + 1) ++bad_order;
          finished.insert(r.workflow_id());
          ++results[r.request_id()];
          EXPECT_EQ(request_of[r.workflow_id()], r.request_id());
        } else {
          ADD_FAILURE() << "unexpected rejection: " << m.rejected().message();
        }
      });
  ASSERT_THAT(s, IsOk());
  EXPECT_EQ(bad_order, 0);
  EXPECT_EQ(after_result, 0);
  EXPECT_EQ(before_accepted, 0);
  EXPECT_EQ(accepted.size(), static_cast<size_t>(kIncidents));
  for (const auto& [id, count] : accepted) EXPECT_EQ(count, 1) << id;
  EXPECT_EQ(finished.size(), static_cast<size_t>(kIncidents));
  ASSERT_EQ(results.size(), static_cast<size_t>(kIncidents));
  for (const auto& [request, count] : results) {
    EXPECT_EQ(count, 1) << request;
  }
}

TEST_F(ServerTest, BadIncidentsAreRejectedNamingTheFieldAndTheStreamGoesOn) {
  std::vector<v1::Incident> incidents = {
      MakeIncident("good-1", "default", "OOMKilled", "ok-1"),
      MakeIncident("", "default", "OOMKilled", "empty-pod"),
      MakeIncident("Bad_Pod", "default", "OOMKilled", "bad-pod"),
      MakeIncident("web-1", "", "OOMKilled", "empty-ns"),
      MakeIncident("web-1", "Prod!", "OOMKilled", "bad-ns"),
      MakeIncident("web-1", "default", "", "empty-type"),
      MakeIncident("web-1", "default", "Crash Loop", "spaced-type"),
      MakeIncident("web-1", "default", std::string(65, 'E'), "long-type"),
      MakeIncident(std::string(254, 'a'), "default", "OOMKilled", "long-pod"),
      MakeIncident("good-2", "default", "Segfault", "unknown-type"),
  };
  v1::Incident huge =
      MakeIncident("web-2", "default", "OOMKilled", "huge-logs");
  huge.set_logs(std::string(70 * 1024, 'x'));
  incidents.push_back(huge);
  incidents.push_back(MakeIncident("good-3", "default", "Evicted", "ok-3"));

  std::map<std::string, v1::IncidentRejected> rejected;
  std::map<std::string, v1::IncidentResult> results;
  std::map<std::string, std::vector<std::string>> nodes;
  absl::Status s =
      client::ResolveAll(*stub_, incidents, [&](const v1::ResolveResponse& m) {
        if (m.has_rejected())
          rejected[m.rejected().request_id()] = m.rejected();
        if (m.has_result()) results[m.result().request_id()] = m.result();
        if (m.has_event() && m.event().phase() == v1::NODE_PHASE_COMPLETED) {
          nodes[m.event().request_id()].push_back(m.event().node());
        }
      });
  ASSERT_THAT(s, IsOk());
  const std::map<std::string, std::string> expected_field = {
      {"empty-pod", "incident.pod_name"},
      {"bad-pod", "incident.pod_name"},
      {"empty-ns", "incident.namespace"},
      {"bad-ns", "incident.namespace"},
      {"empty-type", "incident.error_type"},
      {"spaced-type", "incident.error_type"},
      {"long-type", "incident.error_type"},
      {"long-pod", "incident.pod_name"},
      {"huge-logs", "incident.logs"}};
  for (const auto& [request, field] : expected_field) {
    ASSERT_TRUE(rejected.count(request)) << request;
    EXPECT_EQ(rejected[request].code(), 3) << request;  // INVALID_ARGUMENT
    EXPECT_EQ(rejected[request].field(), field) << request;
    EXPECT_THAT(rejected[request].message(), HasSubstr(field)) << request;
  }
  EXPECT_EQ(rejected.size(), expected_field.size());
  for (const char* ok : {"ok-1", "unknown-type", "ok-3"}) {
    ASSERT_TRUE(results.count(ok)) << ok;
    EXPECT_NE(results[ok].status(), v1::WORKFLOW_STATUS_FAILED) << ok;
  }
  // A well-formed unknown error type is not an error: deep analysis.
  ASSERT_GE(nodes["unknown-type"].size(), 2u);
  EXPECT_EQ(nodes["unknown-type"][1], "deep_analysis");
}

TEST_F(ServerTest, ARejectedLongRequestIdIsEchoedClippedAtACharacter) {
  // 127 x 'a' + "é": the 128-byte clip once split the "é" and the client
  // could not parse the rejection (nor anything after it on the stream).
  const std::string id = absl::StrCat(std::string(127, 'a'), "\u00e9", "xyz");
  std::vector<v1::Incident> incidents = {
      MakeIncident("web-1", "default", "OOMKilled", id),
      MakeIncident("good-1", "default", "OOMKilled", "ok-1")};
  std::vector<v1::IncidentRejected> rejected;
  std::map<std::string, v1::IncidentResult> results;
  absl::Status s =
      client::ResolveAll(*stub_, incidents, [&](const v1::ResolveResponse& m) {
        if (m.has_rejected()) rejected.push_back(m.rejected());
        if (m.has_result()) results[m.result().request_id()] = m.result();
      });
  ASSERT_THAT(s, IsOk());
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(rejected[0].request_id(), std::string(127, 'a'));
  EXPECT_EQ(rejected[0].field(), "incident.request_id");
  EXPECT_TRUE(results.count("ok-1"));
}

TEST_F(ServerTest, ProcessIncidentReturnsTheResultInTheOriginalShape) {
  v1::ProcessIncidentRequest req;
  req.set_pod_name("web-1");
  req.set_namespace_("default");
  req.set_error_type("ImagePullBackOff");
  req.set_include_events(true);
  v1::ProcessIncidentResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->ProcessIncident(&ctx, req, &resp).ok());
  const v1::IncidentResult& r = resp.result();
  EXPECT_THAT(r.workflow_id(), HasSubstr("wf-"));
  EXPECT_EQ(r.pod_name(), "web-1");
  EXPECT_FALSE(r.final_strategy().type().empty());
  EXPECT_FALSE(r.final_strategy().selection_reason().empty());
  EXPECT_GE(r.reflexion_summary().reflections_performed(), 1);
  EXPECT_GT(r.resolution_time(), 0);
  EXPECT_EQ(r.success(), r.status() == v1::WORKFLOW_STATUS_RESOLVED);
  ASSERT_FALSE(resp.events().empty());
  EXPECT_EQ(r.sequence(), resp.events().size() + 1);
}

TEST_F(ServerTest, ProcessIncidentRejectsBadInputWithInvalidArgument) {
  v1::ProcessIncidentRequest req;
  req.set_pod_name("web_1");
  req.set_namespace_("default");
  req.set_error_type("OOMKilled");
  v1::ProcessIncidentResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = stub_->ProcessIncident(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("pod_name"));
}

TEST_F(ServerTest, RestartOnTheSameDataDirKeepsStrategiesAndEpisodes) {
  for (int i = 0; i < 30; ++i) {
    Process(MakeIncident(absl::StrCat("api-", i), "prod", kTypes[i % 5]));
  }
  v1::ListEpisodesResponse before;
  {
    v1::ListEpisodesRequest req;
    req.set_page_size(1000);
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ListEpisodes(&ctx, req, &before).ok());
  }
  ASSERT_GE(before.episodes_size(), 30);
  RestartServer();
  v1::ListEpisodesResponse after;
  {
    v1::ListEpisodesRequest req;
    req.set_page_size(1000);
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ListEpisodes(&ctx, req, &after).ok());
  }
  ASSERT_EQ(after.episodes_size(), before.episodes_size());
  for (int i = 0; i < after.episodes_size(); ++i) {
    EXPECT_EQ(after.episodes(i).id(), before.episodes(i).id());
  }
  v1::ListStrategiesResponse strategies;
  grpc::ClientContext ctx;
  ASSERT_TRUE(
      stub_->ListStrategies(&ctx, v1::ListStrategiesRequest(), &strategies)
          .ok());
  int64_t trials = 0;
  for (const auto& v : strategies.strategies()) {
    for (const auto& st : v.stats()) trials += st.trials();
  }
  EXPECT_EQ(trials, before.episodes_size());
  v1::GetMetricsResponse metrics;
  grpc::ClientContext mctx;
  ASSERT_TRUE(stub_->GetMetrics(&mctx, v1::GetMetricsRequest(), &metrics).ok());
  // Incidents in episodic memory: those that tried a fix (one escalated at
  // once has no episode).
  std::set<std::string> workflows;
  for (const auto& e : before.episodes()) workflows.insert(e.workflow_id());
  EXPECT_GT(workflows.size(), 20u);
  EXPECT_EQ(metrics.incidents(), static_cast<int64_t>(workflows.size()));
  EXPECT_EQ(metrics.episodes(), before.episodes_size());
}

TEST_F(ServerTest, WithAFixedSeedFirstAttemptSuccessRises) {
  std::vector<bool> first_try;
  for (int i = 0; i < 150; ++i) {
    v1::IncidentResult r =
        Process(MakeIncident(absl::StrCat("svc-", i % 50),
                             absl::StrCat("team-", i % 3), kTypes[i % 5]));
    first_try.push_back(r.success() && r.attempts() == 1);
  }
  auto rate = [&](size_t from, size_t to) {
    double n = 0;
    for (size_t i = from; i < to; ++i) n += first_try[i];
    return n / (to - from);
  };
  double first30 = rate(0, 30);
  double last30 = rate(first_try.size() - 30, first_try.size());
  EXPECT_GT(last30, first30)
      << "first 30: " << first30 << ", last 30: " << last30;
}

TEST_F(ServerTest, ListEpisodesPagesFiltersAndValidates) {
  for (int i = 0; i < 12; ++i) {
    Process(MakeIncident(absl::StrCat("db-", i), i % 2 ? "odd" : "even",
                         "OOMKilled"));
  }
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    v1::ListEpisodesRequest req;
    req.set_page_size(5);
    req.set_page_token(token);
    v1::ListEpisodesResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ListEpisodes(&ctx, req, &resp).ok());
    for (const auto& e : resp.episodes()) {
      EXPECT_TRUE(seen.insert(e.id()).second) << "duplicate " << e.id();
    }
    token = resp.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 100);
  EXPECT_GE(seen.size(), 12u);
  EXPECT_GE(pages, 3);

  v1::ListEpisodesRequest filtered;
  filtered.set_namespace_("odd");
  filtered.set_page_size(1000);
  v1::ListEpisodesResponse odd;
  grpc::ClientContext fctx;
  ASSERT_TRUE(stub_->ListEpisodes(&fctx, filtered, &odd).ok());
  ASSERT_FALSE(odd.episodes().empty());
  for (const auto& e : odd.episodes()) EXPECT_EQ(e.namespace_(), "odd");

  v1::ListEpisodesRequest bad;
  bad.set_page_size(5000);
  v1::ListEpisodesResponse unused;
  grpc::ClientContext bctx;
  grpc::Status s = stub_->ListEpisodes(&bctx, bad, &unused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_size"));

  v1::ListEpisodesRequest bad_token;
  bad_token.set_page_token("not-a-token");
  grpc::ClientContext tctx;
  s = stub_->ListEpisodes(&tctx, bad_token, &unused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("page_token"));
}

TEST_F(ServerTest, AWorkflowLeftRunningIsResumedWhenTheServerStarts) {
  v1::IncidentResult first =
      Process(MakeIncident("orders-0", "shop", "OOMKilled"));
  app_.reset();  // stop the server, close RocksDB
  std::string resumed_id = first.workflow_id() + "-resumed";
  {
    // What a crash leaves behind: a workflow recorded as running, with its
    // checkpoints up to some step. Fork the finished one at step 1 (after
    // analyze_error) under a new id to get exactly that.
    auto db = storage::RocksDb::Open(dir_.path());
    ASSERT_THAT(db, IsOk());
    storage::RocksDbCheckpointStore checkpoints(db->get());
    auto history = checkpoints.List(first.workflow_id(), 0);
    ASSERT_THAT(history, IsOk());
    // The oldest kept checkpoint that does not wait on observe_outcome: the
    // simulated cluster restarts with the process and cannot observe an
    // action a previous process executed (a real cluster can).
    uint64_t step = 0;
    bool found = false;
    for (auto it = history->rbegin(); it != history->rend(); ++it) {
      if (it->next_node != "observe_outcome" && it->next_node != "__end__") {
        step = it->step;
        found = true;
        break;
      }
    }
    ASSERT_TRUE(found);
    ASSERT_THAT(
        core::WorkflowGraph::Fork(
            checkpoints, first.workflow_id(), step, resumed_id,
            [&](v1::WorkflowState& s) { s.set_workflow_id(resumed_id); },
            absl::Now()),
        IsOk());
  }
  StartServer();
  EXPECT_EQ(app_->resumed(), 1);
  // The resumed workflow runs to its end and learns: its episodes appear.
  v1::ListEpisodesResponse episodes;
  for (int i = 0; i < 500 && episodes.episodes().empty(); ++i) {
    v1::ListEpisodesRequest req;
    req.set_workflow_id(resumed_id);
    grpc::ClientContext ctx;
    episodes.Clear();
    ASSERT_TRUE(stub_->ListEpisodes(&ctx, req, &episodes).ok());
    if (episodes.episodes().empty()) absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_FALSE(episodes.episodes().empty());
  EXPECT_EQ(episodes.episodes(0).workflow_id(), resumed_id);
}

TEST_F(ServerTest, StartWorkflowReturnsAtOnceAndGetWorkflowReadsItBack) {
  v1::StartWorkflowRequest start;
  start.set_pod_name("cart-1");
  start.set_namespace_("shop");
  start.set_error_type("CrashLoopBackOff");
  start.set_request_id("async-1");
  v1::StartWorkflowResponse started;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->StartWorkflow(&ctx, start, &started).ok());
  }
  ASSERT_THAT(started.workflow_id(), HasSubstr("wf-"));
  v1::GetWorkflowResponse got = WaitUntilSettled(started.workflow_id());
  if (got.phase() == v1::WORKFLOW_PHASE_WAITING) {
    // Escalated: a human gives up, and the workflow completes.
    EXPECT_EQ(got.current_node(), "human_escalation");
    EXPECT_EQ(got.result().status(), v1::WORKFLOW_STATUS_WAITING);
    ASSERT_TRUE(
        Decide(started.workflow_id(), v1::HumanDecision::KIND_GIVE_UP, "")
            .ok());
    got = WaitUntilSettled(started.workflow_id());
  }
  ASSERT_EQ(got.phase(), v1::WORKFLOW_PHASE_COMPLETED);
  EXPECT_EQ(got.incident().pod_name(), "cart-1");
  EXPECT_TRUE(got.current_node().empty());
  EXPECT_GE(got.attempt(), 1);
  EXPECT_EQ(got.result().workflow_id(), started.workflow_id());
  EXPECT_EQ(got.result().request_id(), "async-1");
  EXPECT_NE(got.result().status(), v1::WORKFLOW_STATUS_FAILED);
  EXPECT_FALSE(got.signature().empty());

  v1::ListCheckpointsRequest list_req;
  list_req.set_workflow_id(started.workflow_id());
  list_req.set_include_state(true);
  v1::ListCheckpointsResponse list;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ListCheckpoints(&ctx, list_req, &list).ok());
  }
  ASSERT_FALSE(list.checkpoints().empty());
  EXPECT_LE(list.checkpoints_size(), 10);  // workflow.checkpoint_keep_last
  EXPECT_EQ(list.checkpoints(0).next_node(), "__end__");
  EXPECT_EQ(list.checkpoints(0).step(), got.steps());
  for (int i = 1; i < list.checkpoints_size(); ++i) {
    EXPECT_EQ(list.checkpoints(i).step() + 1, list.checkpoints(i - 1).step());
  }
  EXPECT_EQ(list.checkpoints(0).state().workflow_id(), started.workflow_id());

  // A finished workflow cannot be cancelled; unknown and bad ids are errors.
  v1::CancelWorkflowRequest cancel;
  cancel.set_workflow_id(started.workflow_id());
  v1::CancelWorkflowResponse unused;
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->CancelWorkflow(&ctx, cancel, &unused).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    v1::GetWorkflowRequest req;
    req.set_workflow_id("wf-does-not-exist");
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->GetWorkflow(&ctx, req, &got).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    v1::GetWorkflowRequest req;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->GetWorkflow(&ctx, req, &got);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("workflow_id"));
  }
  {
    v1::StartWorkflowRequest bad = start;
    bad.set_namespace_("Shop");
    v1::StartWorkflowResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->StartWorkflow(&ctx, bad, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(s.error_message(), HasSubstr("namespace"));
  }
}

TEST(WatchTest, ReattachingAfterALostStreamSeesEverySequenceNumberOnce) {
  TempDir dir;
  ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir.path();
  config.simulator_latency = absl::Milliseconds(30);  // really in flight
  App app(config);
  ASSERT_THAT(app.Start(), IsOk());
  auto stub = v1::ReflexionService::NewStub(
      client::Connect(absl::StrCat("127.0.0.1:", app.port())));
  v1::StartWorkflowRequest start;
  start.set_pod_name("watch-1");
  start.set_namespace_("default");
  start.set_error_type("OOMKilled");
  v1::StartWorkflowResponse started;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->StartWorkflow(&ctx, start, &started).ok());
  }
  std::vector<uint64_t> seen;
  // First watcher: reads three events, then loses its stream.
  {
    grpc::ClientContext ctx;
    v1::WatchWorkflowRequest req;
    req.set_workflow_id(started.workflow_id());
    auto reader = stub->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse m;
    while (seen.size() < 3 && reader->Read(&m)) {
      ASSERT_TRUE(m.has_event());
      seen.push_back(m.event().sequence());
    }
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    (void)reader->Finish();
  }
  ASSERT_EQ(seen.size(), 3u);
  // Re-attach after the last sequence number seen.
  uint64_t result_sequence = 0;
  {
    grpc::ClientContext ctx;
    v1::WatchWorkflowRequest req;
    req.set_workflow_id(started.workflow_id());
    req.set_from_sequence(seen.back() + 1);
    auto reader = stub->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse m;
    while (reader->Read(&m)) {
      if (m.has_event()) {
        seen.push_back(m.event().sequence());
      } else {
        result_sequence = m.result().sequence();
      }
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_GT(result_sequence, 0u) << "no result";
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1);
  EXPECT_EQ(result_sequence, seen.size() + 1);

  // A watch started right after a decision follows the continuation, even
  // though the resumed run re-diagnoses (30 ms) before its first event.
  std::string waiting, etag;
  for (int i = 0; i < 100 && waiting.empty(); ++i) {
    v1::StartWorkflowRequest req;
    req.set_pod_name(absl::StrCat("vault-", i));
    req.set_namespace_("shop");
    req.set_error_type("CreateContainerConfigError");
    v1::StartWorkflowResponse resp;
    {
      grpc::ClientContext ctx;
      ASSERT_TRUE(stub->StartWorkflow(&ctx, req, &resp).ok());
    }
    grpc::ClientContext ctx;
    v1::WatchWorkflowRequest w;
    w.set_workflow_id(resp.workflow_id());
    auto reader = stub->WatchWorkflow(&ctx, w);
    v1::WatchWorkflowResponse m;
    while (reader->Read(&m)) {
      if (m.has_result() &&
          m.result().status() == v1::WORKFLOW_STATUS_WAITING) {
        waiting = resp.workflow_id();
        etag = m.result().etag();
      }
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_FALSE(waiting.empty());
  {
    v1::ResumeWorkflowRequest req;
    req.set_workflow_id(waiting);
    req.set_etag(etag);
    req.mutable_decision()->set_kind(v1::HumanDecision::KIND_GIVE_UP);
    v1::ResumeWorkflowResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->ResumeWorkflow(&ctx, req, &resp).ok());
  }
  {
    grpc::ClientContext ctx;
    v1::WatchWorkflowRequest req;
    req.set_workflow_id(waiting);
    auto reader = stub->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse m;
    v1::IncidentResult last;
    while (reader->Read(&m)) {
      if (m.has_result()) last = m.result();
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(last.status(), v1::WORKFLOW_STATUS_ESCALATED);
  }

  // Unknown ids and a bad request are errors, not hangs.
  {
    grpc::ClientContext ctx;
    v1::WatchWorkflowRequest req;
    req.set_workflow_id("wf-unknown");
    auto reader = stub->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse m;
    EXPECT_FALSE(reader->Read(&m));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    auto reader = stub->WatchWorkflow(&ctx, v1::WatchWorkflowRequest());
    v1::WatchWorkflowResponse m;
    EXPECT_FALSE(reader->Read(&m));
    EXPECT_EQ(reader->Finish().error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
}

TEST_F(ServerTest, AnEscalatedWorkflowWaitsAcrossARestartUntilAHumanDecides) {
  // A missing Secret: only a human may create it (tier C), so the workflow
  // escalates at once and waits.
  std::string id;
  for (int i = 0; i < 200 && id.empty(); ++i) {
    v1::IncidentResult r = Process(MakeIncident(
        absl::StrCat("billing-", i), "shop", "CreateContainerConfigError"));
    if (r.signature() == "CreateContainerConfigError/missing_secret") {
      EXPECT_EQ(r.status(), v1::WORKFLOW_STATUS_WAITING);
      EXPECT_TRUE(r.requires_human_intervention());
      EXPECT_THAT(r.escalation_reason(), HasSubstr("create_missing_config"));
      id = r.workflow_id();
    }
  }
  ASSERT_FALSE(id.empty()) << "no pod got the missing-secret scenario";
  RestartServer();
  EXPECT_EQ(app_->resumed(), 0);  // waiting costs no thread, even at start
  v1::GetWorkflowResponse got = WaitUntilSettled(id);
  ASSERT_EQ(got.phase(), v1::WORKFLOW_PHASE_WAITING);
  EXPECT_EQ(got.current_node(), "human_escalation");

  // Bad decisions are refused without touching the workflow.
  EXPECT_EQ(Decide(id, v1::HumanDecision::KIND_UNSPECIFIED, "").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Decide(id, v1::HumanDecision::KIND_RETRY, "rm_rf").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(WaitUntilSettled(id).phase(), v1::WORKFLOW_PHASE_WAITING);

  // The human approves the tier-C fix: one more attempt runs it.
  ASSERT_TRUE(
      Decide(id, v1::HumanDecision::KIND_RETRY, "create_missing_config").ok());
  got = WaitUntilSettled(id);
  v1::ListEpisodesRequest req;
  req.set_workflow_id(id);
  v1::ListEpisodesResponse episodes;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->ListEpisodes(&ctx, req, &episodes).ok());
  ASSERT_EQ(episodes.episodes_size(), 1);
  EXPECT_EQ(episodes.episodes(0).strategy(), "create_missing_config");
  EXPECT_EQ(episodes.episodes(0).selection_reason(), "human_approved");
  if (got.phase() == v1::WORKFLOW_PHASE_COMPLETED) {
    EXPECT_EQ(got.result().status(), v1::WORKFLOW_STATUS_RESOLVED);
  } else {
    // The approved fix failed (the simulator's 5 %): it waits again.
    ASSERT_EQ(got.phase(), v1::WORKFLOW_PHASE_WAITING);
    ASSERT_TRUE(Decide(id, v1::HumanDecision::KIND_MARK_RESOLVED, "").ok());
    got = WaitUntilSettled(id);
    EXPECT_EQ(got.result().status(), v1::WORKFLOW_STATUS_RESOLVED);
  }
  // A finished workflow takes no decision.
  EXPECT_EQ(Decide(id, v1::HumanDecision::KIND_GIVE_UP, "").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(ServerTest, ADecisionSentOnTheResolveStreamContinuesTheWorkflowThere) {
  grpc::ClientContext ctx;
  auto stream = stub_->Resolve(&ctx);
  v1::ResolveResponse m;
  std::string waiting_id;
  uint64_t waiting_sequence = 0;
  std::string waiting_etag;
  // Missing Secrets escalate at once; find a pod that has one.
  for (int i = 0; i < 200 && waiting_id.empty(); ++i) {
    v1::ResolveRequest req;
    *req.mutable_incident() = MakeIncident(absl::StrCat("vault-", i), "shop",
                                           "CreateContainerConfigError");
    ASSERT_TRUE(stream->Write(req));
    while (stream->Read(&m) && !m.has_result()) {
    }
    ASSERT_TRUE(m.has_result());
    if (m.result().status() == v1::WORKFLOW_STATUS_WAITING) {
      waiting_id = m.result().workflow_id();
      waiting_sequence = m.result().sequence();
      waiting_etag = m.result().etag();
    }
  }
  ASSERT_FALSE(waiting_id.empty());
  // An invalid decision is rejected on the stream, naming the field.
  {
    v1::ResolveRequest req;
    req.mutable_decision()->set_workflow_id(waiting_id);
    ASSERT_TRUE(stream->Write(req));
    ASSERT_TRUE(stream->Read(&m));
    ASSERT_TRUE(m.has_rejected());
    EXPECT_EQ(m.rejected().workflow_id(), waiting_id);
    EXPECT_EQ(m.rejected().code(), 3);
    EXPECT_EQ(m.rejected().field(), "decision.kind");
  }
  // A valid one: the workflow's further events and result come back here.
  v1::ResolveRequest req;
  req.mutable_decision()->set_workflow_id(waiting_id);
  req.mutable_decision()->set_etag(waiting_etag);
  req.mutable_decision()->mutable_decision()->set_kind(
      v1::HumanDecision::KIND_GIVE_UP);
  ASSERT_TRUE(stream->Write(req));
  bool saw_event = false;
  while (stream->Read(&m) && !m.has_result()) {
    ASSERT_FALSE(m.has_rejected()) << m.rejected().message();
    if (m.has_event() && m.event().workflow_id() == waiting_id) {
      // The continuation numbers on after the WAITING result.
      if (!saw_event) {
        EXPECT_EQ(m.event().sequence(), waiting_sequence + 1);
      }
      saw_event = true;
    }
  }
  ASSERT_TRUE(m.has_result());
  EXPECT_TRUE(saw_event);
  EXPECT_GT(m.result().sequence(), waiting_sequence + 1);
  EXPECT_EQ(m.result().workflow_id(), waiting_id);
  EXPECT_EQ(m.result().status(), v1::WORKFLOW_STATUS_ESCALATED);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(ServerTest, ForkStartsANewWorkflowAtTheChosenCheckpoint) {
  // The fork's whole history is inspected: keep every checkpoint (with the
  // default 10, a fork that needs more attempts has its first one pruned).
  keep_last_ = 0;
  RestartServer();
  v1::IncidentResult source =
      Process(MakeIncident("web-7", "shop", "ImagePullBackOff"));
  const std::string id = source.workflow_id();
  if (WaitUntilSettled(id).phase() == v1::WORKFLOW_PHASE_WAITING) {
    ASSERT_TRUE(Decide(id, v1::HumanDecision::KIND_GIVE_UP, "").ok());
    WaitUntilSettled(id);
  }
  auto list_checkpoints = [&](const std::string& wf) {
    v1::ListCheckpointsRequest req;
    req.set_workflow_id(wf);
    req.set_include_state(true);
    v1::ListCheckpointsResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->ListCheckpoints(&ctx, req, &resp).ok());
    return resp;
  };
  auto fork = [&](const std::string& wf, uint64_t step,
                  const std::string& strategy, v1::ForkWorkflowResponse* out) {
    v1::ForkWorkflowRequest req;
    req.set_workflow_id(wf);
    req.set_step(step);
    req.set_strategy(strategy);
    grpc::ClientContext ctx;
    return stub_->ForkWorkflow(&ctx, req, out);
  };
  v1::ListCheckpointsResponse before = list_checkpoints(id);
  // The checkpoint after analyze_error: select_strategy runs next.
  const v1::CheckpointInfo* at = nullptr;
  for (const v1::CheckpointInfo& c : before.checkpoints()) {
    if (c.next_node() == "select_strategy") at = &c;
  }
  ASSERT_NE(at, nullptr);

  // Try a strategy the learner would not pick first.
  v1::ForkWorkflowResponse forked;
  ASSERT_TRUE(fork(id, at->step(), "attach_pull_secret", &forked).ok());
  EXPECT_NE(forked.workflow_id(), id);
  EXPECT_EQ(forked.parent_workflow_id(), id);
  EXPECT_EQ(forked.parent_step(), at->step());
  v1::GetWorkflowResponse got = WaitUntilSettled(forked.workflow_id());
  if (got.phase() == v1::WORKFLOW_PHASE_WAITING) {
    ASSERT_TRUE(
        Decide(forked.workflow_id(), v1::HumanDecision::KIND_GIVE_UP, "").ok());
    got = WaitUntilSettled(forked.workflow_id());
  }
  EXPECT_EQ(got.phase(), v1::WORKFLOW_PHASE_COMPLETED);

  // Its history starts at the chosen checkpoint, which names the source.
  v1::ListCheckpointsResponse history = list_checkpoints(forked.workflow_id());
  ASSERT_FALSE(history.checkpoints().empty());
  const v1::CheckpointInfo& first = *history.checkpoints().rbegin();
  EXPECT_EQ(first.step(), at->step());
  EXPECT_EQ(first.parent_workflow_id(), id);
  EXPECT_EQ(first.parent_step(), at->step());
  EXPECT_EQ(first.state().workflow_id(), forked.workflow_id());
  EXPECT_EQ(first.state().incident().pod_name(), "web-7");
  EXPECT_EQ(history.checkpoints(0).next_node(), "__end__");
  // It acted and learned under its own id, with the human's strategy first.
  {
    v1::ListEpisodesRequest req;
    req.set_workflow_id(forked.workflow_id());
    v1::ListEpisodesResponse episodes;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ListEpisodes(&ctx, req, &episodes).ok());
    ASSERT_GE(episodes.episodes_size(), 1);
    const v1::Episode& first_try = *episodes.episodes().rbegin();
    EXPECT_EQ(first_try.strategy(), "attach_pull_secret");
    EXPECT_EQ(first_try.selection_reason(), "human_approved");
    EXPECT_EQ(first_try.attempt(), at->state().attempt() + 1);
  }
  // The source is untouched.
  v1::ListCheckpointsResponse after = list_checkpoints(id);
  ASSERT_EQ(after.checkpoints_size(), before.checkpoints_size());
  EXPECT_EQ(after.checkpoints(0).step(), before.checkpoints(0).step());

  // Refusals name what is wrong and create nothing.
  v1::ForkWorkflowResponse unused;
  grpc::Status s = fork(id, at->step(), "rm_rf", &unused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("strategy"));
  s = fork(id, before.checkpoints(0).step(), "", &unused);  // the end
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(fork(id, 999, "", &unused).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(fork("wf-does-not-exist", 0, "", &unused).error_code(),
            grpc::StatusCode::NOT_FOUND);
  s = fork("", 0, "", &unused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("workflow_id"));
}

// Workflows, not runs: a decision's continuation and a restart are no new
// start, waiting is not escalated, a fork is one new workflow; the counts
// come from the stored records, so they survive a restart.
TEST_F(ServerTest, MetricsCountWorkflowsNotRunsAndSurviveARestart) {
  keep_last_ = 0;  // the fork below reads an early checkpoint
  RestartServer();
  auto metrics = [&] {
    v1::GetMetricsResponse m;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->GetMetrics(&ctx, v1::GetMetricsRequest(), &m).ok());
    return m;
  };
  // Hand-tallied from the results of every incident processed.
  int64_t started = 0, resolved = 0, waiting = 0, escalated = 0, failed = 0;
  std::string id;
  for (int i = 0; i < 200 && id.empty(); ++i) {
    v1::IncidentResult r = Process(MakeIncident(
        absl::StrCat("billing-", i), "shop", "CreateContainerConfigError"));
    ++started;
    switch (r.status()) {
      case v1::WORKFLOW_STATUS_RESOLVED:
        ++resolved;
        // Wall time in-process is far below the simulated recovery plus
        // observation window.
        EXPECT_GT(r.simulated_resolution_time(), 0);
        EXPECT_LT(r.resolution_time(), r.simulated_resolution_time());
        break;
      case v1::WORKFLOW_STATUS_WAITING:
        ++waiting;
        break;
      case v1::WORKFLOW_STATUS_ESCALATED:
        ++escalated;
        break;
      default:
        ++failed;
    }
    if (r.signature() == "CreateContainerConfigError/missing_secret" &&
        r.status() == v1::WORKFLOW_STATUS_WAITING && r.attempts() == 0) {
      id = r.workflow_id();
    }
  }
  ASSERT_FALSE(id.empty()) << "no pod got the missing-secret scenario";
  v1::GetMetricsResponse m = metrics();
  EXPECT_TRUE(m.workflow_counts_stored());
  EXPECT_EQ(m.workflows_started(), started);
  EXPECT_EQ(m.workflows_resolved(), resolved);
  EXPECT_EQ(m.workflows_waiting(), waiting);
  EXPECT_EQ(m.workflows_escalated(), escalated);
  EXPECT_EQ(m.workflows_failed(), failed);
  EXPECT_EQ(m.has_mean_time_to_resolution_s(), resolved > 0);
  EXPECT_EQ(m.has_mean_simulated_resolution_time_s(), resolved > 0);
  const int64_t before_attempt = m.escalated_before_attempt();

  // A restart starts nothing and forgets nothing.
  RestartServer();
  m = metrics();
  EXPECT_EQ(m.workflows_started(), started);
  EXPECT_EQ(m.workflows_waiting(), waiting);

  // The human gives up: the continuation is the same workflow, now
  // escalated, before any attempt (tier C only: nothing automated ran).
  ASSERT_TRUE(Decide(id, v1::HumanDecision::KIND_GIVE_UP, "").ok());
  v1::GetWorkflowResponse got = WaitUntilSettled(id);
  ASSERT_EQ(got.phase(), v1::WORKFLOW_PHASE_COMPLETED);
  ASSERT_EQ(got.result().status(), v1::WORKFLOW_STATUS_ESCALATED);
  m = metrics();
  EXPECT_EQ(m.workflows_started(), started);
  EXPECT_EQ(m.workflows_waiting(), waiting - 1);
  EXPECT_EQ(m.workflows_escalated(), escalated + 1);
  EXPECT_EQ(m.escalated_before_attempt(), before_attempt + 1);

  // A fork is a new workflow: one more start.
  v1::ListCheckpointsRequest lreq;
  lreq.set_workflow_id(id);
  v1::ListCheckpointsResponse history;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ListCheckpoints(&ctx, lreq, &history).ok());
  }
  uint64_t step = 0;
  for (const v1::CheckpointInfo& c : history.checkpoints()) {
    if (c.next_node() == "select_strategy") step = c.step();
  }
  ASSERT_GT(step, 0u);
  v1::ForkWorkflowRequest freq;
  freq.set_workflow_id(id);
  freq.set_step(step);
  v1::ForkWorkflowResponse forked;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ForkWorkflow(&ctx, freq, &forked).ok());
  }
  WaitUntilSettled(forked.workflow_id());
  EXPECT_EQ(metrics().workflows_started(), started + 1);
}

// A workflow that waited for a human and was continued: its WAITING result
// is superseded, in memory and in the stored log alike, so a watch after a
// restart replays what was streamed and ends with the final result.
TEST_F(ServerTest, WatchReplaysAContinuedWorkflowAfterARestartAsStreamed) {
  std::string id;
  for (int i = 0; i < 200 && id.empty(); ++i) {
    v1::StartWorkflowRequest start;
    start.set_pod_name(absl::StrCat("vault-", i));
    start.set_namespace_("shop");
    start.set_error_type("CreateContainerConfigError");
    v1::StartWorkflowResponse started;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->StartWorkflow(&ctx, start, &started).ok());
    if (WaitUntilSettled(started.workflow_id()).phase() ==
        v1::WORKFLOW_PHASE_WAITING) {
      id = started.workflow_id();
    }
  }
  ASSERT_FALSE(id.empty()) << "no workflow waited for a human";
  ASSERT_TRUE(Decide(id, v1::HumanDecision::KIND_GIVE_UP, "").ok());
  ASSERT_EQ(WaitUntilSettled(id).phase(), v1::WORKFLOW_PHASE_COMPLETED);
  auto watch = [&](std::vector<v1::WatchWorkflowResponse>* out) {
    grpc::ClientContext ctx;
    v1::WatchWorkflowRequest req;
    req.set_workflow_id(id);
    req.set_from_sequence(1);
    auto reader = stub_->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse m;
    while (reader->Read(&m)) out->push_back(m);
    return reader->Finish();
  };
  std::vector<v1::WatchWorkflowResponse> before, after;
  ASSERT_TRUE(watch(&before).ok());
  ASSERT_FALSE(before.empty());
  ASSERT_TRUE(before.back().has_result());
  EXPECT_EQ(before.back().result().status(), v1::WORKFLOW_STATUS_ESCALATED);
  RestartServer();
  ASSERT_TRUE(watch(&after).ok());
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(
        google::protobuf::util::MessageDifferencer::Equals(after[i], before[i]))
        << "message " << i;
  }
}

TEST_F(ServerTest, WatchReplaysAWorkflowsEventsAfterARestartUntilItExpires) {
  v1::StartWorkflowRequest start;
  start.set_pod_name("api-3");
  start.set_namespace_("default");
  start.set_error_type("CrashLoopBackOff");
  v1::StartWorkflowResponse started;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->StartWorkflow(&ctx, start, &started).ok());
  }
  const std::string id = started.workflow_id();
  if (WaitUntilSettled(id).phase() == v1::WORKFLOW_PHASE_WAITING) {
    ASSERT_TRUE(Decide(id, v1::HumanDecision::KIND_GIVE_UP, "").ok());
  }
  ASSERT_EQ(WaitUntilSettled(id).phase(), v1::WORKFLOW_PHASE_COMPLETED);
  // Every message of a watch from `from`, in order; its status.
  auto watch = [&](uint64_t from, std::vector<v1::WatchWorkflowResponse>* out) {
    grpc::ClientContext ctx;
    v1::WatchWorkflowRequest req;
    req.set_workflow_id(id);
    req.set_from_sequence(from);
    auto reader = stub_->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse m;
    while (reader->Read(&m)) out->push_back(m);
    return reader->Finish();
  };
  auto sequence = [](const v1::WatchWorkflowResponse& m) {
    return m.has_event() ? m.event().sequence() : m.result().sequence();
  };
  std::vector<v1::WatchWorkflowResponse> before;
  ASSERT_TRUE(watch(1, &before).ok());
  ASSERT_FALSE(before.empty());
  ASSERT_TRUE(before.back().has_result());

  RestartServer();
  // Nothing of it is in the new process's memory: the stored log answers,
  // with every sequence number once, identical to what was streamed.
  std::vector<v1::WatchWorkflowResponse> after;
  ASSERT_TRUE(watch(1, &after).ok());
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(sequence(after[i]), i + 1);
    EXPECT_TRUE(
        google::protobuf::util::MessageDifferencer::Equals(after[i], before[i]))
        << "message " << i;
  }
  std::vector<v1::WatchWorkflowResponse> tail;
  ASSERT_TRUE(watch(4, &tail).ok());
  ASSERT_EQ(tail.size(), before.size() - 3);
  EXPECT_EQ(sequence(tail.front()), 4u);

  // Retention takes the events with the workflow.
  app_.reset();
  ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir_.path();
  config.finished_ttl = absl::Milliseconds(1);
  app_ = std::make_unique<App>(config);
  ASSERT_THAT(app_->Start(), IsOk());
  channel_ = client::Connect(absl::StrCat("127.0.0.1:", app_->port()));
  stub_ = v1::ReflexionService::NewStub(channel_);
  absl::SleepFor(absl::Milliseconds(5));
  absl::StatusOr<int> expired = app_->RunRetention();
  ASSERT_THAT(expired, IsOk());
  EXPECT_GE(*expired, 1);
  std::vector<v1::WatchWorkflowResponse> gone;
  EXPECT_EQ(watch(1, &gone).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(gone.empty());
}

// With fixed seeds, a run replays exactly: the same ids, strategies,
// outcomes and attempts on a fresh data dir, whatever the clock says
// (ids were time- and random-based, and simulated outcomes are drawn from
// idempotency keys, which contain the id).
TEST(ReproducibilityTest, TheSameIncidentsOnAFreshServerReplayExactly) {
  auto run = [](std::vector<std::string>* out) {
    TempDir dir;
    ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.data_dir = dir.path();
    config.worker_threads = 2;
    config.workflow.seed = 11;
    config.simulator_seed = 7;
    App app(config);
    ASSERT_THAT(app.Start(), IsOk());
    auto stub = v1::ReflexionService::NewStub(
        client::Connect(absl::StrCat("127.0.0.1:", app.port())));
    for (int i = 0; i < 40; ++i) {
      v1::ProcessIncidentRequest req;
      req.set_pod_name(absl::StrCat("replay-", i % 7));
      req.set_namespace_("shop");
      req.set_error_type(kTypes[i % 8]);
      v1::ProcessIncidentResponse resp;
      grpc::ClientContext ctx;
      ASSERT_TRUE(stub->ProcessIncident(&ctx, req, &resp).ok());
      const v1::IncidentResult& r = resp.result();
      out->push_back(absl::StrCat(
          r.workflow_id(), " ", r.signature(), " ", r.final_strategy().type(),
          " ", r.final_strategy().selection_reason(), " ", r.attempts(), " ",
          v1::WorkflowStatus_Name(r.status())));
    }
  };
  std::vector<std::string> first, second;
  run(&first);
  run(&second);
  ASSERT_EQ(first.size(), 40u);
  EXPECT_EQ(first, second);
  EXPECT_THAT(first[0], ::testing::StartsWith("wf-1-000001 "));
}

TEST_F(ServerTest, DiagnoseIncidentRunsNothingLearnsNothingStoresNothing) {
  v1::DiagnoseIncidentRequest req;
  req.set_pod_name("web-9");
  req.set_namespace_("shop");
  req.set_error_type("OOMKilled");
  v1::DiagnoseIncidentResponse d;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->DiagnoseIncident(&ctx, req, &d).ok());
  }
  EXPECT_EQ(d.analysis().signature(), "OOMKilled/memory_limit_too_low");
  EXPECT_FALSE(d.candidates().empty());
  EXPECT_EQ(d.first_step().kind(), v1::FirstStep::KIND_EXECUTE);
  EXPECT_EQ(d.first_step().strategy(), "increase_memory_limit");
  EXPECT_TRUE(d.first_step().action().idempotency_key().empty());
  v1::ListEpisodesResponse episodes;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(
        stub_->ListEpisodes(&ctx, v1::ListEpisodesRequest(), &episodes).ok());
  }
  EXPECT_EQ(episodes.episodes_size(), 0);
  v1::GetMetricsResponse m;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetMetrics(&ctx, v1::GetMetricsRequest(), &m).ok());
  }
  EXPECT_EQ(m.workflows_started(), 0);
  EXPECT_TRUE(app_->cluster()->ExecutionLog().empty());
  // Bad input is INVALID_ARGUMENT naming the field, as for every incident.
  req.set_pod_name("Bad_Pod");
  grpc::ClientContext ctx;
  grpc::Status s = stub_->DiagnoseIncident(&ctx, req, &d);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("pod_name"));
}

// A client that sends incidents and does not read: once the stream's
// outbound queue passes service.stream_buffer_bytes the server stops
// reading it, so what it holds stays bounded; when the client reads again,
// everything is answered.
TEST(BackPressureTest, AStreamStalledPastTheDeadlineIsCancelled) {
  TempDir dir;
  ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir.path();
  config.worker_threads = 2;
  config.stream_buffer_bytes = 64 << 10;
  config.max_in_flight_per_stream = 50;
  config.stalled_stream_timeout = absl::Milliseconds(300);
  App app(config);
  ASSERT_THAT(app.Start(), IsOk());
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  auto stub = v1::ReflexionService::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", app.port()),
                                grpc::InsecureChannelCredentials(), args));
  grpc::ClientContext ctx;
  auto stream = stub->Resolve(&ctx);
  std::thread writer([&] {
    for (int i = 0; i < 3000; ++i) {
      v1::ResolveRequest req;
      *req.mutable_incident() = MakeIncident(
          absl::StrCat("st-", i), "shop", kTypes[i % 8], absl::StrCat("r", i));
      if (!stream->Write(req)) return;
    }
    stream->WritesDone();
  });
  // It never reads: paused, then cut.
  ASSERT_TRUE(app.service()->AwaitStalledCancels(1, absl::Seconds(60)));
  writer.join();
  v1::ResolveResponse m;
  while (stream->Read(&m)) {
  }
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The stream is gone with its queue; other calls are served.
  EXPECT_EQ(app.service()->Streams().queued_bytes, 0u);
  v1::GetMetricsResponse metrics;
  grpc::ClientContext mctx;
  ASSERT_TRUE(stub->GetMetrics(&mctx, v1::GetMetricsRequest(), &metrics).ok());
  EXPECT_GT(metrics.workflows_started(), 0);
}

TEST(BackPressureTest, AStreamThatIsNotReadStopsBeingReadAndResumes) {
  TempDir dir;
  ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir.path();
  config.worker_threads = 2;
  config.stream_buffer_bytes = 64 << 10;
  config.max_in_flight_per_stream = 50;
  App app(config);
  ASSERT_THAT(app.Start(), IsOk());
  // A client whose receive window stays small (no BDP growth), so the
  // server's writes wait for it as soon as it stops reading.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
  auto stub = v1::ReflexionService::NewStub(
      grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", app.port()),
                                grpc::InsecureChannelCredentials(), args));
  constexpr int kIncidents = 3000;
  grpc::ClientContext ctx;
  auto stream = stub->Resolve(&ctx);
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < kIncidents; ++i) {
      v1::ResolveRequest req;
      *req.mutable_incident() = MakeIncident(
          absl::StrCat("bp-", i), "shop", kTypes[i % 8], absl::StrCat("r", i));
      if (!stream->Write(req)) return;
      ++written;
    }
    stream->WritesDone();
  });
  // The server pauses reading this stream (the bound only guards against
  // a hang if it never does).
  EXPECT_TRUE(app.service()->AwaitPausedStreams(1, absl::Seconds(60)))
      << "reading never paused";
  ReflexionServiceImpl::StreamStats stats = app.service()->Streams();
  EXPECT_EQ(stats.paused, 1);
  // Its workflows yield to streams whose clients read.
  EXPECT_EQ(stats.background, 1);
  if (stats.paused != 1) {
    ctx.TryCancel();
    writer.join();
    return;
  }
  int64_t started = 0;
  {
    v1::GetMetricsResponse m;
    grpc::ClientContext mctx;
    ASSERT_TRUE(stub->GetMetrics(&mctx, v1::GetMetricsRequest(), &m).ok());
    started = m.workflows_started();
  }
  // Not everything was taken in, and what is queued is bounded (the budget
  // plus the events of the incidents admitted before the pause).
  EXPECT_LT(started, kIncidents);
  EXPECT_LT(stats.queued_bytes, size_t{8} << 20);
  std::printf("paused after %lld incidents with %zu bytes queued\n",
              static_cast<long long>(started), stats.queued_bytes);
  // Reading again: every incident is answered.
  int results = 0, rejected = 0;
  v1::ResolveResponse m;
  while (stream->Read(&m)) {
    if (m.has_result()) ++results;
    if (m.has_rejected()) ++rejected;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(written.load(), kIncidents);
  EXPECT_EQ(results + rejected, kIncidents);
  // At its in-flight limit the stream was not read (flow control), so
  // nothing was refused for the limit.
  EXPECT_EQ(rejected, 0);
  EXPECT_EQ(app.service()->Streams().queued_bytes, 0u);
  app.Stop(absl::ZeroDuration(), absl::ZeroDuration());
}

TEST_F(ServerTest, ASecondServerOnALockedDataDirFailsCleanly) {
  ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir_.path();
  App second(config);
  absl::Status s = second.Start();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), HasSubstr(dir_.path()));
}

// ---------------------------------------------------------------- config

TEST(ConfigTest, AppliesTheOriginalKeysAndNotesUnusedOnes) {
  ServerConfig c;
  ASSERT_THAT(ApplyYaml(R"(
service:
  port: 6000
  debug: true
openai:
  model: gpt-4
reflexion:
  reflection_depth: deep
  strategy_confidence_threshold: 0.8
  max_reflection_cycles: 2
workflow:
  max_retry_count: 4
  observation_window: 60
)",
                        c),
              IsOk());
  EXPECT_EQ(c.port, 6000);
  EXPECT_EQ(c.workflow.depth, core::ReflectionDepth::kDeep);
  EXPECT_DOUBLE_EQ(c.workflow.selector.confidence_threshold, 0.8);
  EXPECT_EQ(c.workflow.max_reflection_cycles, 2);
  EXPECT_EQ(c.workflow.max_attempts, 4);
  EXPECT_EQ(c.workflow.observation_window, absl::Seconds(60));
  EXPECT_EQ(c.openai.model, "gpt-4");
  EXPECT_EQ(c.notes.size(), 1u);  // service.debug
}

TEST(ConfigTest, OpenAiKeysAndVariablesAct) {
  ServerConfig c;
  ASSERT_THAT(ApplyYaml(R"(
reflector:
  type: openai
openai:
  base_url: http://127.0.0.1:8080/v1
  temperature: 0.7
  max_tokens: 300
  timeout: 12.5
  api_key_file: /run/secrets/openai
  json_schema: false
)",
                        c),
              IsOk());
  EXPECT_EQ(c.reflector, "openai");
  EXPECT_EQ(c.openai.base_url, "http://127.0.0.1:8080/v1");
  EXPECT_TRUE(c.openai_base_url_set);
  EXPECT_DOUBLE_EQ(c.openai.temperature, 0.7);
  EXPECT_EQ(c.openai.max_tokens, 300);
  EXPECT_EQ(c.openai.timeout, absl::Milliseconds(12500));
  EXPECT_EQ(c.openai_api_key_file, "/run/secrets/openai");
  EXPECT_FALSE(c.openai.json_schema);
  // The environment overrides the file.
  auto env = [](const char* name) -> const char* {
    if (std::string(name) == "OPENAI_API_KEY") return "sk-test-key";
    if (std::string(name) == "OPENAI_BASE_URL") return "http://10.0.0.1/v1";
    return nullptr;
  };
  ASSERT_THAT(ApplyEnvironment(env, c), IsOk());
  EXPECT_EQ(c.openai.api_key, "sk-test-key");
  EXPECT_EQ(c.openai.base_url, "http://10.0.0.1/v1");
  EXPECT_THAT(ApplyYaml("openai:\n  base_url: ftp://x\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("openai.base_url")));
  EXPECT_THAT(ApplyYaml("reflector:\n  type: gpt\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reflector.type")));
  auto bad = [](const char* name) -> const char* {
    return std::string(name) == "OPENAI_BASE_URL" ? "localhost:8080" : nullptr;
  };
  EXPECT_THAT(ApplyEnvironment(bad, c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("OPENAI_BASE_URL")));
}

TEST(ConfigTest, RejectsUnknownKeysAndOutOfRangeValuesNamingTheKey) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("reflexion:\n  strategy_confidence_treshold: 0.7\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reflexion.strategy_confidence_treshold")));
  EXPECT_THAT(ApplyYaml("workflow:\n  max_retry_count: 0\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("workflow.max_retry_count")));
  EXPECT_THAT(
      ApplyYaml("service:\n  port: http\n", c),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("service.port")));
  EXPECT_THAT(
      ApplyYaml("executor:\n  type: kubectl\n", c),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("executor.type")));
  EXPECT_THAT(ApplyYaml(": : :\n  - [", c),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(ConfigTest, ANullComplexKeyIsAnErrorNotACrash) {
  // "? :" is a complex key with no content; yaml-cpp hands it over as a
  // map node, whose as<std::string>() throws.
  ServerConfig c;
  EXPECT_THAT(
      ApplyYaml("? :\n", c),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("config: the key at line 1 must be a string")));
}

TEST(ConfigTest, ASequenceKeyIsAnErrorNamingItsLine) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service:\n  port: 1\n? [a, b]\n: 1\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the key at line 3 must be a string, not a "
                                 "sequence")));
}

TEST(ConfigTest, ANonScalarKeyInsideASectionIsAnErrorNamingTheSection) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service:\n  ? {port: 1}\n  : 2\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service: the key at line 2 must "
                                 "be a string, not a map")));
  EXPECT_THAT(ApplyYaml("service:\n  ? \n  : 2\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service: the key at line")));
}

TEST(ConfigTest, ASectionThatIsNotAMappingIsAnError) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service: [1, 2]\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service: must be a mapping")));
  EXPECT_THAT(ApplyYaml("service: 8080\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service: must be a mapping")));
}

TEST(ConfigTest, ANonScalarValueWhereAScalarIsExpectedIsAnError) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service:\n  port: [1]\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service.port: must be a scalar, "
                                 "not a sequence")));
  EXPECT_THAT(ApplyYaml("service:\n  host: {a: 1}\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service.host: must be a scalar, "
                                 "not a map")));
  EXPECT_THAT(ApplyYaml("service:\n  host:\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service.host: must be a scalar, "
                                 "not null")));
}

TEST(ConfigTest, ATopLevelScalarOrSequenceIsAnError) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("port\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config must be a YAML mapping")));
  EXPECT_THAT(ApplyYaml("- service\n- port\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config must be a YAML mapping")));
}

TEST(ConfigTest, ADuplicateKeyIsAnErrorNotSilentlyOverridden) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service:\n  port: 1\n  port: 2\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service.port: is given twice")));
  EXPECT_THAT(ApplyYaml("service: {port: 1}\nservice: {host: a}\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service: is given twice")));
}

TEST(ConfigTest, ANumberOutsideItsTypeIsAnErrorNotWrapped) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service:\n  port: 99999999999999999999\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service.port")));
  EXPECT_THAT(ApplyYaml("simulator:\n  seed: 99999999999999999999999\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key simulator.seed")));
  EXPECT_THAT(ApplyYaml("simulator:\n  seed: -1\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key simulator.seed")));
  EXPECT_THAT(ApplyYaml("reflexion:\n  max_mean_for_change: .nan\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key reflexion.max_mean_for_change")));
}

TEST(ConfigTest, ARecursiveAliasIsAnErrorNotFollowedForever) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service: &s\n  port: *s\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service.port: must be a scalar")));
  EXPECT_THAT(ApplyYaml("&k [*k]: 1\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the key at line 1 must be a string")));
}

TEST(ConfigTest, ADeeplyNestedDocumentIsAnError) {
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service: " + std::string(100000, '['), c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config is not valid YAML")));
}

TEST(ConfigTest, AKeyThatIsNotUtf8IsEscapedInTheError) {
  // The message is logged and printed: it must stay valid UTF-8.
  ServerConfig c;
  EXPECT_THAT(ApplyYaml("service:\n  p\xff\xfert: 1\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("config key service.p\\xff\\xfert: is not a "
                                 "known key")));
}

TEST(ConfigTest, AFileWithANullKeyIsAnErrorNamingTheFile) {
  TempDir dir;
  const std::string path = dir.path() + "/config.yaml";
  {
    std::ofstream out(path);
    out << "? :\n";
  }
  ServerConfig c;
  EXPECT_THAT(ApplyYamlFile(path, c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(path + ": config: the key at line 1")));
}

TEST(ConfigTest, CheckpointKeysAreAppliedAndValidated) {
  ServerConfig c;
  ASSERT_THAT(ApplyYaml(R"(
workflow:
  checkpointing_enabled: false
  durability: sync
  checkpoint_keep_last: 4
  finished_ttl: 3600
  retention_interval: 5
)",
                        c),
              IsOk());
  EXPECT_FALSE(c.checkpointing);
  EXPECT_EQ(c.workflow.durability, graph::Durability::kSync);
  EXPECT_EQ(c.workflow.keep_last_checkpoints, 4);
  EXPECT_EQ(c.finished_ttl, absl::Hours(1));
  EXPECT_EQ(c.retention_interval, absl::Seconds(5));
  EXPECT_TRUE(c.notes.empty());
  EXPECT_THAT(ApplyYaml("workflow:\n  durability: eventually\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("workflow.durability")));
}

TEST(ConfigTest, StreamBufferBytesIsAppliedAndValidated) {
  ServerConfig c;
  EXPECT_EQ(c.stream_buffer_bytes, 4 << 20);
  ASSERT_THAT(ApplyYaml("service:\n  stream_buffer_bytes: 1048576\n", c),
              IsOk());
  EXPECT_EQ(c.stream_buffer_bytes, 1 << 20);
  EXPECT_THAT(ApplyYaml("service:\n  stream_buffer_bytes: 100\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("service.stream_buffer_bytes")));
}

TEST(ConfigTest, ShutdownKeysAreAppliedAndValidated) {
  ServerConfig c;
  EXPECT_EQ(c.shutdown_drain, absl::Seconds(5));
  EXPECT_EQ(c.shutdown_grace, absl::Seconds(10));
  ASSERT_THAT(
      ApplyYaml("service:\n  shutdown_drain: 0.5\n  shutdown_grace: 0\n", c),
      IsOk());
  EXPECT_EQ(c.shutdown_drain, absl::Milliseconds(500));
  EXPECT_EQ(c.shutdown_grace, absl::ZeroDuration());
  EXPECT_THAT(ApplyYaml("service:\n  shutdown_grace: -1\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("service.shutdown_grace")));
}

TEST(ConfigTest, EnvironmentOverridesTheFile) {
  ServerConfig c;
  ASSERT_THAT(ApplyYaml("reflexion:\n  reflection_depth: shallow\n", c),
              IsOk());
  auto env = [](const char* name) -> const char* {
    return std::string(name) == "REFLECTION_DEPTH" ? "deep" : nullptr;
  };
  ASSERT_THAT(ApplyEnvironment(env, c), IsOk());
  EXPECT_EQ(c.workflow.depth, core::ReflectionDepth::kDeep);
  auto bad = [](const char* name) -> const char* {
    return std::string(name) == "REFLECTION_DEPTH" ? "extreme" : nullptr;
  };
  EXPECT_THAT(ApplyEnvironment(bad, c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("REFLECTION_DEPTH")));
}

// ---------------------------------------------------------------- policy

TEST(ConfigTest, SelectorCostAndCriticalKeysAreAppliedAndValidated) {
  ServerConfig c;
  ASSERT_THAT(ApplyYaml(R"(
reflexion:
  cost_failed_attempt: 2
  cost_escalation: 5.5
  posterior_half_life: 720h
  critical_namespaces: [payments, ledger]
  critical_margin: 0.05
  min_retry_trials: 7
)",
                        c),
              IsOk());
  const core::SelectorOptions& o = c.workflow.selector;
  EXPECT_EQ(o.min_retry_trials, 7);
  EXPECT_DOUBLE_EQ(o.cost_failed_attempt, 2);
  EXPECT_DOUBLE_EQ(o.cost_escalation, 5.5);
  EXPECT_EQ(o.posterior_half_life, absl::Hours(720));
  EXPECT_THAT(o.critical_namespaces,
              ::testing::ElementsAre("payments", "ledger"));
  EXPECT_DOUBLE_EQ(o.critical_margin, 0.05);
  ServerConfig d;
  EXPECT_THAT(ApplyYaml("reflexion:\n  cost_escalation: 0\n", d),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reflexion.cost_escalation")));
  EXPECT_THAT(ApplyYaml("reflexion:\n  min_retry_trials: -1\n", d),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reflexion.min_retry_trials")));
  EXPECT_THAT(ApplyYaml("reflexion:\n  critical_namespaces: payments\n", d),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reflexion.critical_namespaces")));
  EXPECT_THAT(ApplyYaml("reflexion:\n  critical_namespaces: [\"a/b\"]\n", d),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reflexion.critical_namespaces[0]")));
  EXPECT_THAT(ApplyYaml("reflexion:\n  critical_margin: 2\n", d),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("reflexion.critical_margin")));
}

TEST(ConfigTest, PolicyKeysAreApplied) {
  ServerConfig c;
  ASSERT_THAT(ApplyYaml(R"(
policy:
  mode: dry-run
  clusters:
    prod: enforce
    lab: "off"
  namespaces:
    payments: shadow
    prod/payments: enforce
  allow_namespaces: [payments, orders, staging/web]
  deny_namespaces: [kube-system]
  own_namespace: reflexion-system
  default_cluster: home
  rate_limits:
    workload: {per_hour: 4, burst: 2}
    cluster: {per_hour: 0}
  breaker:
    window: 5m
    namespace_incidents: 10
    cluster_incidents: 0
    workload_share: 0.25
    workload_min_pods: 4
  freeze_windows:
    - name: weekend
      days: [sat, Sunday]
      start: "22:00"
      duration: 8h
      clusters: [prod]
      namespaces: [payments, prod/orders]
    - name: xmas
      from: 2026-12-24T12:00:00Z
      until: 2026-12-27T00:00:00+01:00
)",
                        c),
              IsOk());
  const core::PolicyConfig& p = c.policy;
  EXPECT_EQ(p.mode, v1::POLICY_MODE_DRY_RUN);
  EXPECT_EQ(p.clusters, (std::map<std::string, v1::PolicyMode>{
                            {"prod", v1::POLICY_MODE_ENFORCE},
                            {"lab", v1::POLICY_MODE_OFF}}));
  EXPECT_EQ(p.namespaces, (std::map<std::string, v1::PolicyMode>{
                              {"payments", v1::POLICY_MODE_SHADOW},
                              {"prod/payments", v1::POLICY_MODE_ENFORCE}}));
  EXPECT_EQ(p.allow_namespaces,
            (std::vector<std::string>{"payments", "orders", "staging/web"}));
  EXPECT_EQ(p.deny_namespaces, (std::vector<std::string>{"kube-system"}));
  EXPECT_EQ(p.own_namespace, "reflexion-system");
  EXPECT_TRUE(c.policy_own_namespace_set);
  EXPECT_EQ(p.default_cluster, "home");
  EXPECT_EQ(p.per_workload.per_hour, 4);
  EXPECT_EQ(p.per_workload.burst, 2);
  EXPECT_EQ(p.per_namespace.per_hour, 30);  // untouched default
  EXPECT_EQ(p.per_cluster.per_hour, 0);
  EXPECT_EQ(p.per_cluster.burst, 30);
  EXPECT_EQ(p.breaker.window, absl::Minutes(5));
  EXPECT_EQ(p.breaker.namespace_incidents, 10);
  EXPECT_EQ(p.breaker.cluster_incidents, 0);
  EXPECT_DOUBLE_EQ(p.breaker.workload_share, 0.25);
  EXPECT_EQ(p.breaker.workload_min_pods, 4);
  ASSERT_EQ(p.freeze_windows.size(), 2u);
  const core::FreezeWindow& w = p.freeze_windows[0];
  EXPECT_EQ(w.name, "weekend");
  EXPECT_EQ(w.days, (1 << 6) | 1);
  EXPECT_EQ(w.start_minute, 22 * 60);
  EXPECT_EQ(w.duration, absl::Hours(8));
  EXPECT_FALSE(w.from.has_value());
  EXPECT_EQ(w.clusters, (std::vector<std::string>{"prod"}));
  EXPECT_EQ(w.namespaces,
            (std::vector<std::string>{"payments", "prod/orders"}));
  const core::FreezeWindow& x = p.freeze_windows[1];
  ASSERT_TRUE(x.from.has_value() && x.until.has_value());
  EXPECT_EQ(*x.from, absl::FromUnixSeconds(1798113600));  // 12:00Z
  EXPECT_EQ(*x.until - *x.from, absl::Hours(59));
  // The parsed config drives a Policy.
  core::FakeClock clock(absl::FromUnixSeconds(1798113600));
  core::Policy policy(p, &clock);
  EXPECT_EQ(policy.ModeFor("prod", "payments"), v1::POLICY_MODE_ENFORCE);
  core::IncidentScope s;
  s.cluster = "prod";
  s.namespace_ = "payments";
  s.pod = "p";
  v1::Action a;
  a.set_type(v1::ACTION_TYPE_DELETE_POD);
  EXPECT_EQ(policy.CheckAction(s, a, false).rule(), "freeze_window");
}

TEST(ConfigTest, PolicyErrorsNameTheFullKeyPath) {
  const std::pair<const char*, const char*> cases[] = {
      {"policy:\n  mode: maybe\n",
       "config key policy.mode: \"maybe\" is not a mode: enforce, dry-run, "
       "shadow or off"},
      {"policy:\n  mode: [enforce]\n",
       "config key policy.mode: must be a scalar, not a sequence"},
      {"policy:\n  clusters:\n    prod: fast\n",
       "config key policy.clusters.prod: \"fast\" is not a mode"},
      {"policy:\n  clusters: [prod]\n",
       "config key policy.clusters: must be a map, not a sequence"},
      {"policy:\n  namespaces:\n    a/b/c: enforce\n",
       "config key policy.namespaces.a/b/c: is not \"namespace\" or "
       "\"cluster/namespace\""},
      {"policy:\n  namespaces:\n    x: enforce\n    x: shadow\n",
       "config key policy.namespaces.x: is given twice"},
      {"policy:\n  allow_namespaces: payments\n",
       "config key policy.allow_namespaces: must be a list, not a scalar"},
      {"policy:\n  deny_namespaces: [ok, /x]\n",
       "config key policy.deny_namespaces[1]: \"/x\" is not \"namespace\" or "
       "\"cluster/namespace\""},
      {"policy:\n  own_namespace: \"\"\n",
       "config key policy.own_namespace: must not be empty"},
      {"policy:\n  default_cluster: a/b\n",
       "config key policy.default_cluster: \"a/b\" must not contain '/'"},
      {"policy:\n  rate_limits:\n    pod: {per_hour: 1}\n",
       "config key policy.rate_limits.pod: is not a known key (workload, "
       "namespace, cluster)"},
      {"policy:\n  rate_limits:\n    workload: {per_hr: 1}\n",
       "config key policy.rate_limits.workload.per_hr: is not a known key"},
      {"policy:\n  rate_limits:\n    namespace: {burst: 0}\n",
       "config key policy.rate_limits.namespace.burst: \"0\" must be a number "
       "from 1 to"},
      {"policy:\n  breaker:\n    window: 10 parsecs\n",
       "config key policy.breaker.window: \"10 parsecs\" is not a duration"},
      {"policy:\n  breaker:\n    window: 48h\n",
       "config key policy.breaker.window: \"48h\" must be from 1s to 24h"},
      {"policy:\n  breaker:\n    workload_share: 2\n",
       "config key policy.breaker.workload_share: \"2\" must be a number from "
       "0 to 1"},
      {"policy:\n  breaker:\n    namespace_incidents: 2.5\n",
       "config key policy.breaker.namespace_incidents: \"2.5\" must be a whole "
       "number"},
      {"policy:\n  breaker:\n    trip_at: 3\n",
       "config key policy.breaker.trip_at: is not a known key"},
      {"policy:\n  freeze_windows:\n    - {name: a, days: [sat], start: "
       "\"22:00\", duration: 1h}\n    - {name: b, days: [sun], start: "
       "\"25:00\", duration: 1h}\n",
       "config key policy.freeze_windows[1].start: \"25:00\" is not HH:MM"},
      {"policy:\n  freeze_windows:\n    - {name: a, days: [sat, sunn], "
       "start: \"1:00\", duration: 1h}\n",
       "config key policy.freeze_windows[0].days[1]: \"sunn\" is not a "
       "weekday"},
      {"policy:\n  freeze_windows:\n    - {name: a, days: [sat], start: "
       "\"1:00\", duration: 8d}\n",
       "config key policy.freeze_windows[0].duration: \"8d\" is not a "
       "duration"},
      {"policy:\n  freeze_windows:\n    - {name: a, days: [sat], start: "
       "\"1:00\", duration: 200h}\n",
       "config key policy.freeze_windows[0].duration: \"200h\" must be from "
       "1m to 168h"},
      {"policy:\n  freeze_windows:\n    - {name: a, days: [sat], duration: "
       "1h}\n",
       "config key policy.freeze_windows[0].start: is required"},
      {"policy:\n  freeze_windows:\n    - {days: [sat], start: \"1:00\", "
       "duration: 1h}\n",
       "config key policy.freeze_windows[0].name: is required"},
      {"policy:\n  freeze_windows:\n    - {name: a, days: [sat], start: "
       "\"1:00\", duration: 1h, from: 2026-12-24T12:00:00Z}\n",
       "config key policy.freeze_windows[0]: give either days, start and "
       "duration (weekly) or from and until (absolute)"},
      {"policy:\n  freeze_windows:\n    - {name: a, from: "
       "2026-12-24T12:00:00Z, until: 2026-12-24}\n",
       "config key policy.freeze_windows[0].until: \"2026-12-24\" is not an "
       "RFC 3339 time"},
      {"policy:\n  freeze_windows:\n    - {name: a, from: "
       "2026-12-24T12:00:00Z, until: 2026-12-24T11:00:00Z}\n",
       "config key policy.freeze_windows[0].until: must be after from"},
      {"policy:\n  freeze_windows:\n    - {name: a, from: "
       "2026-12-24T12:00:00Z, until: 2026-12-25T12:00:00Z}\n    - {name: a, "
       "from: 2026-12-24T12:00:00Z, until: 2026-12-25T12:00:00Z}\n",
       "config key policy.freeze_windows[1].name: \"a\" is given twice"},
      {"policy:\n  freeze_windows:\n    - {name: a, when: always}\n",
       "config key policy.freeze_windows[0].when: is not a known key"},
      {"policy:\n  freeze_windows:\n    - weekend\n",
       "config key policy.freeze_windows[0]: must be a map, not a scalar"},
      {"policy: &p\n  breaker: *p\n",
       "config key policy.breaker.breaker: is not a known key"},
      {"policy:\n  modes: enforce\n",
       "config key policy.modes: is not a known key"},
  };
  for (const auto& [yaml, error] : cases) {
    ServerConfig c;
    EXPECT_THAT(ApplyYaml(yaml, c),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(error)))
        << yaml;
  }
}

TEST(ConfigTest, TheReadmePolicyExampleParsesAndStatesTheDefaults) {
  std::ifstream in(std::string(REFLEXION_TESTDATA_DIR) + "/../../README.md");
  ASSERT_TRUE(in) << "README.md not found";
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string readme = buf.str();
  const size_t start = readme.find("```yaml\npolicy:\n");
  ASSERT_NE(start, std::string::npos);
  const size_t body = start + std::string("```yaml\n").size();
  const size_t end = readme.find("```", body);
  ASSERT_NE(end, std::string::npos);
  ServerConfig c;
  ASSERT_THAT(ApplyYaml(readme.substr(body, end - body), c), IsOk());
  const core::PolicyConfig defaults;
  const core::PolicyConfig& p = c.policy;
  EXPECT_EQ(p.mode, defaults.mode);
  EXPECT_EQ(p.allow_namespaces, defaults.allow_namespaces);
  EXPECT_EQ(p.deny_namespaces, defaults.deny_namespaces);
  EXPECT_EQ(p.own_namespace, defaults.own_namespace);
  EXPECT_EQ(p.default_cluster, defaults.default_cluster);
  for (auto [got, want] : {std::pair{p.per_workload, defaults.per_workload},
                           std::pair{p.per_namespace, defaults.per_namespace},
                           std::pair{p.per_cluster, defaults.per_cluster}}) {
    EXPECT_EQ(got.per_hour, want.per_hour);
    EXPECT_EQ(got.burst, want.burst);
  }
  EXPECT_EQ(p.breaker.window, defaults.breaker.window);
  EXPECT_EQ(p.breaker.namespace_incidents,
            defaults.breaker.namespace_incidents);
  EXPECT_EQ(p.breaker.cluster_incidents, defaults.breaker.cluster_incidents);
  EXPECT_EQ(p.breaker.workload_share, defaults.breaker.workload_share);
  EXPECT_EQ(p.breaker.workload_min_pods, defaults.breaker.workload_min_pods);
  EXPECT_EQ(p.freeze_windows.size(), 2u);
}

TEST(ConfigTest, PodNamespaceIsTheOwnNamespaceUnlessTheFileSetsIt) {
  auto env = [](const char* name) -> const char* {
    return std::string(name) == "POD_NAMESPACE" ? "reflexion-prod" : nullptr;
  };
  ServerConfig c;
  EXPECT_EQ(c.policy.own_namespace, "reflexion");
  ASSERT_THAT(ApplyEnvironment(env, c), IsOk());
  EXPECT_EQ(c.policy.own_namespace, "reflexion-prod");
  ServerConfig file;
  ASSERT_THAT(ApplyYaml("policy:\n  own_namespace: ops\n", file), IsOk());
  ASSERT_THAT(ApplyEnvironment(env, file), IsOk());
  EXPECT_EQ(file.policy.own_namespace, "ops");
  auto bad = [](const char* name) -> const char* {
    return std::string(name) == "POD_NAMESPACE" ? "a/b" : nullptr;
  };
  ServerConfig d;
  EXPECT_THAT(
      ApplyEnvironment(bad, d),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("POD_NAMESPACE")));
}

}  // namespace
}  // namespace reflexion::server

// Integration tests on a real reflexion-server process: concurrent human
// decisions, the SIGTERM hand-off, UTF-8 at the edges. Run against another
// build with REFLEXION_TEST_SERVER_BINARY (see server_process.h).

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace reflexion::server {
namespace {

using ::testing::HasSubstr;

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir(); }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Start(const std::string& yaml) {
    std::string config = dir_ + "/config.yaml";
    std::ofstream(config) << yaml;
    server_ = std::make_unique<ServerProcess>(dir_, config);
    ASSERT_GT(server_->port(), 0) << "server did not start";
    channel_ = client::Connect(absl::StrCat("127.0.0.1:", server_->port()));
    stub_ = v1::ReflexionService::NewStub(channel_);
  }

  v1::GetWorkflowResponse Get(const std::string& id, grpc::Status* status) {
    v1::GetWorkflowRequest req;
    req.set_workflow_id(id);
    v1::GetWorkflowResponse resp;
    grpc::ClientContext ctx;
    *status = stub_->GetWorkflow(&ctx, req, &resp);
    return resp;
  }

  // Polls GetWorkflow until the workflow is no longer RUNNING. (A watch
  // cannot replace this in general: events are retained only from a
  // decision or a hand-off on, and this is another process.)
  v1::GetWorkflowResponse Settle(const std::string& id) {
    v1::GetWorkflowResponse got;
    for (int i = 0; i < 2000; ++i) {
      grpc::Status s;
      got = Get(id, &s);
      if (s.ok() && got.phase() != v1::WORKFLOW_PHASE_RUNNING) break;
      if (!s.ok() && s.error_code() != grpc::StatusCode::NOT_FOUND) break;
      absl::SleepFor(absl::Milliseconds(10));
    }
    return got;
  }

  int HealthStatus() {
    auto health = grpc::health::v1::Health::NewStub(channel_);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("reflexion.v1.ReflexionService");
    grpc::health::v1::HealthCheckResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(2));
    if (!health->Check(&ctx, req, &resp).ok()) return -1;
    return resp.status();
  }

  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ReflexionService::Stub> stub_;
};

TEST_F(ProcessTest, OfTwentyConcurrentDecisionsForOneWaitExactlyOneApplies) {
  Start("");
  // A missing Secret escalates at once and waits for a human.
  std::string id;
  for (int i = 0; i < 200 && id.empty(); ++i) {
    v1::ProcessIncidentRequest req;
    req.set_pod_name(absl::StrCat("billing-", i));
    req.set_namespace_("shop");
    req.set_error_type("CreateContainerConfigError");
    v1::ProcessIncidentResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ProcessIncident(&ctx, req, &resp).ok());
    if (resp.result().status() == v1::WORKFLOW_STATUS_WAITING) {
      id = resp.result().workflow_id();
    }
  }
  ASSERT_FALSE(id.empty()) << "no incident waited for a human";
  grpc::Status s;
  v1::GetWorkflowResponse waiting = Get(id, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const int attempts_before = waiting.attempt();

  constexpr int kDecisions = 20;
  std::atomic<int> applied{0};
  std::vector<grpc::StatusCode> refusals;
  absl::Mutex mu;
  std::vector<std::thread> threads;
  absl::Notification go;
  for (int i = 0; i < kDecisions; ++i) {
    threads.emplace_back([&] {
      v1::ResumeWorkflowRequest req;
      req.set_workflow_id(id);
      req.set_etag(waiting.etag());
      req.mutable_decision()->set_kind(v1::HumanDecision::KIND_RETRY);
      // A retry that cannot fix a missing Secret: the workflow is back in
      // human_escalation at once, where a late decision could land again.
      req.mutable_decision()->set_strategy("delete_pod");
      v1::ResumeWorkflowResponse resp;
      grpc::ClientContext ctx;
      go.WaitForNotification();
      grpc::Status st = stub_->ResumeWorkflow(&ctx, req, &resp);
      if (st.ok()) {
        ++applied;
      } else {
        absl::MutexLock lock(&mu);
        refusals.push_back(st.error_code());
      }
    });
  }
  go.Notify();
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(applied.load(), 1);
  for (grpc::StatusCode code : refusals) {
    EXPECT_TRUE(code == grpc::StatusCode::ABORTED ||
                code == grpc::StatusCode::FAILED_PRECONDITION)
        << code;
  }
  // Exactly one more attempt ran: one more episode, one more attempt.
  v1::GetWorkflowResponse after = Settle(id);
  EXPECT_NE(after.phase(), v1::WORKFLOW_PHASE_RUNNING);
  EXPECT_EQ(after.attempt(), attempts_before + 1);
  v1::ListEpisodesRequest req;
  req.set_workflow_id(id);
  v1::ListEpisodesResponse episodes;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->ListEpisodes(&ctx, req, &episodes).ok());
  int approved = 0;
  for (const v1::Episode& e : episodes.episodes()) {
    if (e.selection_reason() == "human_approved") ++approved;
  }
  EXPECT_EQ(approved, 1);

  // A decision for that wait, delivered after the workflow came back to a
  // new wait (as a straggler of the twenty would be), applies nothing.
  ASSERT_EQ(after.phase(), v1::WORKFLOW_PHASE_WAITING);
  EXPECT_NE(after.etag(), waiting.etag());
  v1::ResumeWorkflowRequest late;
  late.set_workflow_id(id);
  late.set_etag(waiting.etag());
  late.mutable_decision()->set_kind(v1::HumanDecision::KIND_RETRY);
  late.mutable_decision()->set_strategy("delete_pod");
  v1::ResumeWorkflowResponse resp;
  grpc::ClientContext late_ctx;
  grpc::Status st = stub_->ResumeWorkflow(&late_ctx, late, &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::ABORTED) << st.error_message();
  EXPECT_EQ(Settle(id).attempt(), attempts_before + 1);
}

TEST_F(ProcessTest, SigtermShowsNotServingThenHandsOffWhatIsStillRunning) {
  // Long workflows: every simulated call takes 300 ms, and a failed attempt
  // is retried while attempts are left (an expensive escalation), so some
  // are still running at the cut.
  Start(
      "simulator:\n  latency_ms: 300\n"
      "reflexion:\n  cost_escalation: 1000\n"
      "service:\n  shutdown_drain: 1\n  shutdown_grace: 0.2\n");
  constexpr int kIncidents = 20;
  grpc::ClientContext ctx;
  auto stream = stub_->Resolve(&ctx);
  for (int i = 0; i < kIncidents; ++i) {
    v1::ResolveRequest req;
    req.mutable_incident()->set_pod_name(absl::StrCat("long-", i));
    req.mutable_incident()->set_namespace_("shop");
    req.mutable_incident()->set_error_type("CrashLoopBackOff");
    req.mutable_incident()->set_request_id(absl::StrCat("r", i));
    ASSERT_TRUE(stream->Write(req));
  }
  // Read until every incident is accepted.
  v1::ResolveResponse m;
  std::map<std::string, std::string> request_of;  // workflow -> request
  std::set<std::string> ended;                    // a result or a hand-off came
  while (static_cast<int>(request_of.size()) < kIncidents && stream->Read(&m)) {
    ASSERT_FALSE(m.has_rejected()) << m.rejected().message();
    if (m.has_result()) ended.insert(m.result().workflow_id());
    if (m.has_accepted()) {
      request_of[m.accepted().workflow_id()] = m.accepted().request_id();
    }
    if (m.has_event())
      request_of[m.event().workflow_id()] = m.event().request_id();
  }
  ASSERT_EQ(static_cast<int>(request_of.size()), kIncidents);
  ASSERT_EQ(HealthStatus(), 1);  // SERVING
  server_->SendTerm();
  // NOT_SERVING is observable while the server drains: Health/Watch
  // streams each change (the deadline only guards against a hang).
  bool not_serving = false;
  {
    auto health = grpc::health::v1::Health::NewStub(channel_);
    grpc::health::v1::HealthCheckRequest req;
    req.set_service("reflexion.v1.ReflexionService");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    auto watch = health->Watch(&ctx, req);
    grpc::health::v1::HealthCheckResponse r;
    while (!not_serving && watch->Read(&r)) {
      not_serving =
          r.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING;
    }
    ctx.TryCancel();
    (void)watch->Finish();
  }
  EXPECT_TRUE(not_serving) << "health never reported NOT_SERVING";
  // New work is refused meanwhile, reads are served.
  {
    v1::StartWorkflowRequest req;
    req.set_pod_name("late");
    req.set_namespace_("shop");
    req.set_error_type("OOMKilled");
    v1::StartWorkflowResponse resp;
    grpc::ClientContext c;
    grpc::Status s = stub_->StartWorkflow(&c, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE)
        << s.error_message();
    grpc::Status read;
    Get(request_of.begin()->first, &read);
    EXPECT_TRUE(read.ok()) << read.error_message();
  }
  // Every incident ends on the stream: a result, or a hand-off naming its
  // workflow.
  std::map<std::string, uint64_t> next_of;  // handed off -> next sequence
  while (stream->Read(&m)) {
    if (m.has_result()) ended.insert(m.result().workflow_id());
    if (m.has_handed_off()) {
      EXPECT_THAT(m.handed_off().message(), HasSubstr("continues"));
      EXPECT_EQ(m.handed_off().request_id(),
                request_of[m.handed_off().workflow_id()]);
      next_of[m.handed_off().workflow_id()] = m.handed_off().next_sequence();
      ended.insert(m.handed_off().workflow_id());
    }
  }
  grpc::Status end = stream->Finish();
  EXPECT_EQ(end.error_code(), grpc::StatusCode::UNAVAILABLE)
      << end.error_message();
  for (const auto& [id, request] : request_of) {
    EXPECT_TRUE(ended.count(id))
        << id << " (" << request << ") got neither a result nor a hand-off";
  }
  EXPECT_FALSE(next_of.empty()) << "nothing was still running at the cut";
  EXPECT_EQ(server_->Wait(), 0);

  // After a restart each handed-off workflow is complete, and a watcher
  // re-attached at its next sequence sees the rest of it, then the result.
  std::string config = dir_ + "/config.yaml";
  server_ = std::make_unique<ServerProcess>(dir_, config);
  ASSERT_GT(server_->port(), 0);
  channel_ = client::Connect(absl::StrCat("127.0.0.1:", server_->port()));
  stub_ = v1::ReflexionService::NewStub(channel_);
  for (const auto& [id, next] : next_of) {
    v1::GetWorkflowResponse got = Settle(id);
    EXPECT_NE(got.phase(), v1::WORKFLOW_PHASE_RUNNING) << id;
    v1::WatchWorkflowRequest req;
    req.set_workflow_id(id);
    req.set_from_sequence(next);
    grpc::ClientContext c;
    auto reader = stub_->WatchWorkflow(&c, req);
    v1::WatchWorkflowResponse w;
    uint64_t expect = next;
    bool result = false;
    while (reader->Read(&w)) {
      if (w.has_event()) {
        EXPECT_EQ(w.event().sequence(), expect) << id;
        expect = w.event().sequence() + 1;
      } else {
        EXPECT_EQ(w.result().sequence(), expect) << id;
        result = true;
      }
    }
    grpc::Status ws = reader->Finish();
    EXPECT_TRUE(ws.ok()) << id << ": " << ws.error_message();
    EXPECT_TRUE(result) << id;
  }
}

// 239 x 'a' + "é": clipping at byte 240 used to split the 'é'.
std::string MultiByteAtTheClip() { return std::string(239, 'a') + "\xc3\xa9"; }

TEST_F(ProcessTest, MultiByteCharactersAtEveryClipKeepStoredStateDecodable) {
  Start("");
  v1::StartWorkflowRequest req;
  req.set_pod_name("utf8-pod");
  req.set_namespace_("shop");
  req.set_error_type("CrashLoopBackOff");
  req.set_error_message(MultiByteAtTheClip());
  req.set_logs(MultiByteAtTheClip() + "\n" + MultiByteAtTheClip());
  for (int i = 0; i < 3; ++i) {
    v1::PodEvent* e = req.add_events();
    e->set_reason("BackOff");
    e->set_message(MultiByteAtTheClip());
  }
  v1::StartWorkflowResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->StartWorkflow(&ctx, req, &resp).ok());
  v1::GetWorkflowResponse got = Settle(resp.workflow_id());
  grpc::Status s;
  got = Get(resp.workflow_id(), &s);
  EXPECT_TRUE(s.ok()) << s.error_message();  // DATA_LOSS before
  v1::ListCheckpointsRequest list;
  list.set_workflow_id(resp.workflow_id());
  list.set_include_state(true);
  v1::ListCheckpointsResponse checkpoints;
  grpc::ClientContext c;
  grpc::Status ls = stub_->ListCheckpoints(&c, list, &checkpoints);
  EXPECT_TRUE(ls.ok()) << ls.error_message();
}

// A unary request that does not parse (invalid UTF-8 in a proto3 string)
// is INVALID_ARGUMENT naming the field, not gRPC's empty UNIMPLEMENTED.
TEST_F(ProcessTest, InvalidUtf8InAUnaryRequestIsInvalidArgumentNamingTheField) {
  Start("");
  v1::ProcessIncidentRequest req;
  req.set_pod_name("web-1");
  req.set_namespace_("shop");
  req.set_error_type("OOMKilled");
  req.set_error_message("bad \xc3");
  v1::ProcessIncidentResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = stub_->ProcessIncident(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "error_message: must be valid UTF-8");
  v1::StartWorkflowRequest start;
  start.set_pod_name("web-1");
  start.set_namespace_("shop");
  start.set_error_type("OOMKilled");
  start.add_events()->set_message("\xff");
  v1::StartWorkflowResponse started;
  grpc::ClientContext ctx2;
  s = stub_->StartWorkflow(&ctx2, start, &started);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "events[0].message: must be valid UTF-8");
}

TEST_F(ProcessTest, AnUndecodableResolveMessageIsRejectedAndTheStreamGoesOn) {
  Start("");
  grpc::ClientContext ctx;
  auto stream = stub_->Resolve(&ctx);
  // Invalid UTF-8 in a string field: the message does not parse as proto3.
  v1::ResolveRequest bad;
  bad.mutable_incident()->set_pod_name("web-1");
  bad.mutable_incident()->set_namespace_("shop");
  bad.mutable_incident()->set_error_type("OOMKilled");
  bad.mutable_incident()->set_error_message("\xff\xfe broken");
  ASSERT_TRUE(stream->Write(bad));
  v1::ResolveRequest good;
  good.mutable_incident()->set_pod_name("web-2");
  good.mutable_incident()->set_namespace_("shop");
  good.mutable_incident()->set_error_type("OOMKilled");
  good.mutable_incident()->set_request_id("good");
  ASSERT_TRUE(stream->Write(good));
  stream->WritesDone();
  v1::ResolveResponse m;
  int rejected = 0, results = 0;
  while (stream->Read(&m)) {
    if (m.has_rejected()) {
      ++rejected;
      EXPECT_EQ(m.rejected().code(), 3);
      EXPECT_EQ(m.rejected().field(), "incident.error_message");
    }
    if (m.has_result()) {
      ++results;
      EXPECT_EQ(m.result().request_id(), "good");
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(rejected, 1);
  EXPECT_EQ(results, 1);
}

}  // namespace
}  // namespace reflexion::server

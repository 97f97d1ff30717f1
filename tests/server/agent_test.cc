// Agent sessions end to end: a real server on 127.0.0.1:0 (or a real
// process for kill -9), and test clients that act as the Go agent — they
// open Resolve with an AgentHello and execute the requested actions
// themselves. Waits are on received messages (conditions), never sleeps.

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/app.h"
#include "server/config.h"
#include "tests/server/server_process.h"
#include "tests/server/test_agent.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

using ::reflexion::testing::IsOk;
using ::testing::HasSubstr;

class AgentTest : public ::testing::Test {
 protected:
  void TearDown() override { app_.reset(); }

  void Start(const std::function<void(ServerConfig&)>& tweak = nullptr) {
    dir_ = MakeTempDir();
    ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.data_dir = dir_;
    config.worker_threads = 2;
    config.workflow.seed = 5;
    config.workflow.observation_window = absl::Milliseconds(300);
    config.workflow.report_interval = absl::Milliseconds(50);
    if (tweak) tweak(config);
    app_ = std::make_unique<App>(config);
    ASSERT_THAT(app_->Start(), IsOk());
    channel_ = client::Connect(absl::StrCat("127.0.0.1:", app_->port()));
    stub_ = v1::ReflexionService::NewStub(channel_);
  }

  std::string dir_;
  std::unique_ptr<App> app_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ReflexionService::Stub> stub_;
};

TEST_F(AgentTest, AgentExecutesRequestedActionsAndIncidentsResolve) {
  Start();
  TestAgent agent(stub_.get(), "prod-eu", "agent-a");
  ASSERT_GE(agent.WaitFor(
                [](const v1::ResolveResponse& m) { return m.has_welcome(); }),
            0);
  for (int i = 0; i < 3; ++i) {
    agent.SendIncident(
        OomIncident(absl::StrCat("web-", i), absl::StrCat("r", i)));
  }
  std::map<std::string, int> executed;
  std::vector<v1::IncidentResult> results = agent.Serve(3, &executed);
  ASSERT_EQ(results.size(), 3u);
  for (const auto& r : results) {
    EXPECT_EQ(r.status(), v1::WORKFLOW_STATUS_RESOLVED) << r.DebugString();
    EXPECT_TRUE(r.success());
  }
  // One action per incident, each executed once.
  EXPECT_EQ(executed.size(), 3u);
  for (const auto& [id, n] : executed) EXPECT_EQ(n, 1) << id;
  // The execution event names the agent as the executor, and the
  // observation was judged from the agent's report.
  int ev = agent.WaitFor([](const v1::ResolveResponse& m) {
    return m.has_event() && m.event().has_execution();
  });
  ASSERT_GE(ev, 0);
  EXPECT_EQ(agent.At(ev).event().execution().executor(), "agent:prod-eu");
  int obs = agent.WaitFor([](const v1::ResolveResponse& m) {
    return m.has_event() && m.event().has_observation();
  });
  ASSERT_GE(obs, 0);
  EXPECT_TRUE(agent.At(obs).event().observation().success());
}

TEST_F(AgentTest, ApprovalRequestsAreApprovedOrDeniedOnTheSession) {
  Start([](ServerConfig& c) {
    // Every choice is below this threshold: each needs approval.
    c.workflow.selector.confidence_threshold = 0.999;
    c.workflow.selector.ask_below_threshold = true;
    // A human costs enough that the denied choice's runner-up (27%) is
    // still worth offering.
    c.workflow.selector.cost_escalation = 3;
  });
  TestAgent agent(stub_.get(), "prod-eu", "agent-a");
  agent.SendIncident(OomIncident("web-approve", "approve"));
  int a = agent.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_approval_request(); });
  ASSERT_GE(a, 0);
  v1::ApprovalRequest first = agent.At(a).approval_request();
  EXPECT_FALSE(first.etag().empty());
  EXPECT_FALSE(first.strategy().empty());
  EXPECT_THAT(first.reason(), HasSubstr("below the threshold"));
  // Deny it: another strategy is proposed, never the denied one.
  v1::ResolveRequest deny;
  deny.mutable_decision()->set_workflow_id(first.workflow_id());
  deny.mutable_decision()->set_etag(first.etag());
  deny.mutable_decision()->mutable_decision()->set_kind(
      v1::HumanDecision::KIND_DENY);
  agent.Send(deny);
  int b = agent.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_approval_request(); },
      a + 1);
  ASSERT_GE(b, 0);
  v1::ApprovalRequest second = agent.At(b).approval_request();
  EXPECT_EQ(second.workflow_id(), first.workflow_id());
  EXPECT_NE(second.strategy(), first.strategy());
  // An approval on the stream: its action is requested and executed.
  v1::ResolveRequest approve;
  approve.mutable_decision()->set_workflow_id(second.workflow_id());
  approve.mutable_decision()->set_etag(second.etag());
  approve.mutable_decision()->mutable_decision()->set_kind(
      v1::HumanDecision::KIND_APPROVE);
  agent.Send(approve);
  std::map<std::string, int> executed;
  std::vector<v1::IncidentResult> final = agent.Serve(1, &executed);
  ASSERT_EQ(final.size(), 1u);
  EXPECT_EQ(final[0].status(), v1::WORKFLOW_STATUS_RESOLVED);
  EXPECT_EQ(final[0].final_strategy().type(), second.strategy());
  ASSERT_EQ(executed.size(), 1u);
  // A kind that does not answer an approval is refused, naming the field.
  agent.SendIncident(OomIncident("web-approve-2", "approve-2"));
  int c = agent.WaitFor(
      [&](const v1::ResolveResponse& m) {
        return m.has_approval_request() &&
               m.approval_request().workflow_id() != first.workflow_id();
      },
      b + 1);
  ASSERT_GE(c, 0);
  v1::ResolveRequest retry;
  retry.mutable_decision()->set_workflow_id(
      agent.At(c).approval_request().workflow_id());
  retry.mutable_decision()->set_etag(agent.At(c).approval_request().etag());
  retry.mutable_decision()->mutable_decision()->set_kind(
      v1::HumanDecision::KIND_GIVE_UP);
  agent.Send(retry);
  int rej = agent.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_rejected(); }, c + 1);
  ASSERT_GE(rej, 0);
  EXPECT_EQ(agent.At(rej).rejected().field(), "decision.kind");
}

TEST_F(AgentTest, AnAgentThatNeverAnswersTimesOutAndTheWorkflowEscalates) {
  Start([](ServerConfig& c) {
    c.workflow.action_timeout = absl::Milliseconds(200);
    c.workflow.max_attempts = 2;
    c.workflow.escalation_waits = false;
    // The second attempt's candidate (27%) is worth sending at this cost.
    c.workflow.selector.cost_escalation = 3;
  });
  TestAgent agent(stub_.get(), "prod-eu", "agent-silent");
  agent.SendIncident(OomIncident("web-silent", "silent"));
  int r = agent.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_result(); });
  ASSERT_GE(r, 0);
  v1::IncidentResult result = agent.At(r).result();
  EXPECT_EQ(result.status(), v1::WORKFLOW_STATUS_ESCALATED);
  EXPECT_THAT(result.escalation_reason(), HasSubstr("DEADLINE_EXCEEDED"));
  EXPECT_EQ(result.attempts(), 2);
  // Both attempts asked the agent, with different action ids.
  std::set<std::string> asked;
  for (const auto& m : agent.All()) {
    if (m.has_action_request()) asked.insert(m.action_request().action_id());
  }
  EXPECT_EQ(asked.size(), 2u);
  EXPECT_EQ(app_->sessions()->Stats().timeouts, 2);
  EXPECT_EQ(app_->sessions()->Stats().pending, 0);
  // Nothing was learned from the agent's silence.
  v1::ListEpisodesRequest req;
  v1::ListEpisodesResponse eps;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->ListEpisodes(&ctx, req, &eps).ok());
  EXPECT_EQ(eps.episodes_size(), 0);
}

TEST_F(AgentTest, PendingActionIsResentToTheNextSessionWithTheSameId) {
  Start();
  std::string action_id, workflow_id;
  {
    TestAgent first(stub_.get(), "prod-eu", "agent-a");
    first.SendIncident(OomIncident("web-reconnect", "reconnect"));
    int i = first.WaitFor(
        [](const v1::ResolveResponse& m) { return m.has_action_request(); });
    ASSERT_GE(i, 0);
    action_id = first.At(i).action_request().action_id();
    workflow_id = first.At(i).action_request().workflow_id();
    first.Cancel();  // gone with the action pending
  }
  ASSERT_TRUE(app_->sessions()->AwaitStats(
      [](const AgentSessionsStats& s) {
        return s.sessions == 0 && s.unassigned == 1;
      },
      kWait));
  TestAgent second(stub_.get(), "prod-eu", "agent-b");
  int w = second.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_welcome(); });
  ASSERT_GE(w, 0);
  EXPECT_EQ(second.At(w).welcome().pending_requests(), 1);
  std::map<std::string, int> executed;
  std::vector<v1::IncidentResult> results = second.Serve(1, &executed);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].workflow_id(), workflow_id);
  EXPECT_EQ(results[0].status(), v1::WORKFLOW_STATUS_RESOLVED);
  ASSERT_EQ(executed.size(), 1u);
  EXPECT_EQ(executed.begin()->first, action_id);
  // A late duplicate of the same result is ignored.
  v1::ResolveRequest dup;
  dup.mutable_action_result()->set_workflow_id(workflow_id);
  dup.mutable_action_result()->set_action_id(action_id);
  dup.mutable_action_result()->set_outcome(v1::ActionResult::OUTCOME_APPLIED);
  second.Send(dup);
  ASSERT_TRUE(app_->sessions()->AwaitStats(
      [](const AgentSessionsStats& s) { return s.duplicates >= 1; }, kWait));
  EXPECT_EQ(app_->sessions()->Stats().answers, 1);
}

TEST_F(AgentTest, AResultThatEndedWithNoSessionIsDeliveredOnReconnect) {
  Start();
  std::string workflow_id;
  {
    TestAgent first(stub_.get(), "prod-eu", "agent-a");
    first.SendIncident(OomIncident("web-gone", "gone"));
    // Answer the action and one report, then go away inside the window.
    int i = first.WaitFor(
        [](const v1::ResolveResponse& m) { return m.has_action_request(); });
    ASSERT_GE(i, 0);
    const v1::ActionRequest a = first.At(i).action_request();
    workflow_id = a.workflow_id();
    v1::ResolveRequest r;
    r.mutable_action_result()->set_workflow_id(a.workflow_id());
    r.mutable_action_result()->set_action_id(a.action_id());
    r.mutable_action_result()->set_outcome(v1::ActionResult::OUTCOME_APPLIED);
    first.Send(r);
    int o = first.WaitFor(
        [](const v1::ResolveResponse& m) {
          return m.has_observation_request();
        },
        i + 1);
    ASSERT_GE(o, 0);
    v1::ResolveRequest st;
    st.mutable_pod_status()->set_workflow_id(a.workflow_id());
    st.mutable_pod_status()->set_action_id(a.action_id());
    st.mutable_pod_status()->set_healthy(true);
    first.Send(st);
    ASSERT_TRUE(app_->sessions()->AwaitStats(
        [](const AgentSessionsStats& s) { return s.reports == 1; }, kWait));
    first.Cancel();
  }
  // The window ends with nobody connected: the result waits for the cluster.
  ASSERT_TRUE(app_->sessions()->AwaitStats(
      [](const AgentSessionsStats& s) {
        return s.sessions == 0 && s.undelivered == 1;
      },
      kWait));
  TestAgent second(stub_.get(), "prod-eu", "agent-b");
  int r = second.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_result(); });
  ASSERT_GE(r, 0);
  EXPECT_EQ(second.At(r).result().workflow_id(), workflow_id);
  EXPECT_EQ(second.At(r).result().status(), v1::WORKFLOW_STATUS_RESOLVED);
  EXPECT_EQ(app_->sessions()->Stats().undelivered, 0);
}

TEST_F(AgentTest, TwoSessionsOfOneClusterEachGetDistinctRequests) {
  Start();
  TestAgent a(stub_.get(), "prod-eu", "agent-a");
  TestAgent b(stub_.get(), "prod-eu", "agent-b");
  for (TestAgent* t : {&a, &b}) {
    ASSERT_GE(t->WaitFor(
                  [](const v1::ResolveResponse& m) { return m.has_welcome(); }),
              0);
  }
  constexpr int kIncidents = 6;
  for (int i = 0; i < kIncidents; ++i) {
    a.SendIncident(OomIncident(absl::StrCat("ha-", i), absl::StrCat("ha", i)));
  }
  std::map<std::string, int> ea, eb;
  // a gets the results (its incidents); b serves what it is assigned until
  // its stream is cut.
  std::thread tb([&] { b.Serve(1 << 20, &eb); });
  std::vector<v1::IncidentResult> results = a.Serve(kIncidents, &ea);
  EXPECT_EQ(static_cast<int>(results.size()), kIncidents);
  b.Cancel();
  tb.join();
  EXPECT_FALSE(ea.empty());
  EXPECT_FALSE(eb.empty());
  std::map<std::string, int> all;
  for (const auto& m : b.All()) {
    if (m.has_action_request()) ++all[m.action_request().action_id()];
  }
  for (const auto& m : a.All()) {
    if (m.has_action_request()) ++all[m.action_request().action_id()];
  }
  // Every request reached exactly one session.
  EXPECT_EQ(static_cast<int>(all.size()), kIncidents);
  for (const auto& [id, n] : all) EXPECT_EQ(n, 1) << id;
}

TEST_F(AgentTest, GarbageOnASessionIsRejectedNamingTheFieldAndItKeepsServing) {
  Start();
  TestAgent agent(stub_.get(), "prod-eu", "agent-a");
  v1::ResolveRequest bad;
  bad.mutable_action_result()->set_workflow_id("wf-1-000001");
  bad.mutable_action_result()->set_action_id("x");
  agent.Send(bad);  // no outcome
  v1::ResolveRequest hello_again;
  hello_again.mutable_hello()->set_cluster("prod-eu");
  agent.Send(hello_again);
  int r1 = agent.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_rejected(); });
  ASSERT_GE(r1, 0);
  EXPECT_EQ(agent.At(r1).rejected().field(), "action_result.outcome");
  int r2 = agent.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_rejected(); }, r1 + 1);
  ASSERT_GE(r2, 0);
  EXPECT_EQ(agent.At(r2).rejected().field(), "hello");
  agent.SendIncident(OomIncident("web-after-garbage", "after"));
  std::map<std::string, int> executed;
  EXPECT_EQ(agent.Serve(1, &executed).size(), 1u);
}

TEST_F(AgentTest, BadHelloIsRejectedNamingTheField) {
  Start();
  grpc::ClientContext ctx;
  auto stream = stub_->Resolve(&ctx);
  v1::ResolveRequest hello;
  hello.mutable_hello()->set_cluster("Not_A_Label");
  hello.mutable_hello()->set_agent_id("a");
  ASSERT_TRUE(stream->Write(hello));
  v1::ResolveResponse m;
  ASSERT_TRUE(stream->Read(&m));
  ASSERT_TRUE(m.has_rejected());
  EXPECT_EQ(m.rejected().field(), "hello.cluster");
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

// kill -9 of the server with actions pending at the agent: after the
// restart, the next session gets every pending request again with the same
// action ids; executing each once ends every workflow.
TEST(AgentProcessTest, KillNineWithActionsPendingResendsThemAfterRestart) {
  auto HasFailure = [] { return ::testing::Test::HasFailure(); };
  std::string dir = MakeTempDir();
  std::string config = dir + "/config.yaml";
  std::ofstream(config) << "service:\n  shutdown_drain: 0\n"
                           "workflow:\n  observation_window: 1\n"
                           "  durability: sync\n"
                           "executor:\n  report_interval: 0.1\n"
                           "reflexion:\n  seed: 3\n";
  constexpr int kIncidents = 3;
  std::map<std::string, std::string> pending;  // action id -> workflow
  {
    auto server = std::make_unique<ServerProcess>(dir, config);
    auto channel = client::Connect(absl::StrCat("127.0.0.1:", server->port()));
    auto stub = v1::ReflexionService::NewStub(channel);
    TestAgent agent(stub.get(), "prod-eu", "agent-a");
    for (int i = 0; i < kIncidents; ++i) {
      agent.SendIncident(
          OomIncident(absl::StrCat("k9-", i), absl::StrCat("k", i)));
    }
    size_t from = 0;
    while (pending.size() < kIncidents) {
      int i = agent.WaitFor(
          [](const v1::ResolveResponse& m) { return m.has_action_request(); },
          from);
      ASSERT_GE(i, 0);
      from = i + 1;
      pending[agent.At(i).action_request().action_id()] =
          agent.At(i).action_request().workflow_id();
    }
    server->Kill9();
    agent.Cancel();
  }
  auto server = std::make_unique<ServerProcess>(dir, config);
  auto channel = client::Connect(absl::StrCat("127.0.0.1:", server->port()));
  auto stub = v1::ReflexionService::NewStub(channel);
  TestAgent agent(stub.get(), "prod-eu", "agent-a2");
  int w = agent.WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_welcome(); });
  ASSERT_GE(w, 0);
  EXPECT_EQ(agent.At(w).welcome().pending_requests(), kIncidents);
  std::map<std::string, int> executed;
  std::vector<v1::IncidentResult> results = agent.Serve(kIncidents, &executed);
  ASSERT_EQ(results.size(), static_cast<size_t>(kIncidents));
  for (const auto& r : results) {
    EXPECT_EQ(r.status(), v1::WORKFLOW_STATUS_RESOLVED) << r.DebugString();
  }
  // The same action ids, each executed once.
  ASSERT_EQ(executed.size(), pending.size());
  for (const auto& [id, n] : executed) {
    EXPECT_EQ(pending.count(id), 1u) << id;
    EXPECT_EQ(n, 1) << id;
  }
  EXPECT_EQ(server->Terminate(), 0) << "see " << dir << "/server.log";
  if (!HasFailure()) std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace reflexion::server
namespace reflexion::server {
namespace {
TEST_F(AgentTest, ShutdownWithASessionOpenEndsItCleanly) {
  Start();
  TestAgent agent(stub_.get(), "prod-eu", "agent-a");
  agent.SendIncident(OomIncident("web-stop", "stop"));
  std::map<std::string, int> executed;
  ASSERT_EQ(agent.Serve(1, &executed).size(), 1u);
  app_->Stop(absl::ZeroDuration(), absl::ZeroDuration());
  app_.reset();
}
}  // namespace
}  // namespace reflexion::server

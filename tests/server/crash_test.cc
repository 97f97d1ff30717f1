// kill -9 test: a real reflexion-server process with workflows in flight is
// killed with SIGKILL and restarted on the same data dir. Every workflow
// must reach a terminal state, no completed episode may be lost or doubled,
// and no idempotency key may be executed twice (the simulated cluster's
// journal is its durable execution log).

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/server_process.h"

namespace reflexion::server {
namespace {

// Acknowledged means durable: StartWorkflow answers only once the workflow
// is recorded, so a kill -9 the moment the last answer arrives loses none —
// under load (four clients starting at once, and a Resolve stream keeping
// the engine busy), in both durability modes.
class AckCrashTest : public ::testing::TestWithParam<std::string> {};

TEST_P(AckCrashTest, EveryAcknowledgedStartSurvivesAKillRightAfterTheAnswer) {
  std::string dir = MakeTempDir();
  std::string config = dir + "/config.yaml";
  {
    std::ofstream out(config);
    out << "simulator:\n  latency_ms: 20\n"
        << "service:\n  worker_threads: 2\n"
        << "workflow:\n  durability: " << GetParam() << "\n";
  }
  constexpr int kClients = 4, kPerClient = 50;
  std::vector<std::vector<std::string>> acked(kClients);
  {
    ServerProcess first(dir, config);
    ASSERT_GT(first.port(), 0) << "server did not start";
    auto channel = client::Connect(absl::StrCat("127.0.0.1:", first.port()));
    // Background load on the same server: a stream of incidents.
    grpc::ClientContext load_ctx;
    auto load_stub = v1::ReflexionService::NewStub(channel);
    auto load = load_stub->Resolve(&load_ctx);
    for (int i = 0; i < 300; ++i) {
      v1::ResolveRequest req;
      req.mutable_incident()->set_pod_name(absl::StrCat("load-", i));
      req.mutable_incident()->set_namespace_("load");
      req.mutable_incident()->set_error_type("OOMKilled");
      ASSERT_TRUE(load->Write(req));
    }
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        auto stub = v1::ReflexionService::NewStub(channel);
        for (int i = 0; i < kPerClient; ++i) {
          v1::StartWorkflowRequest req;
          req.set_pod_name(absl::StrCat("ack-", c, "-", i));
          req.set_namespace_("chaos");
          req.set_error_type(i % 2 ? "CrashLoopBackOff" : "ImagePullBackOff");
          v1::StartWorkflowResponse resp;
          grpc::ClientContext ctx;
          grpc::Status s = stub->StartWorkflow(&ctx, req, &resp);
          if (!s.ok()) {
            ADD_FAILURE() << s.error_message();
            return;
          }
          acked[c].push_back(resp.workflow_id());
        }
      });
    }
    for (std::thread& t : clients) t.join();
    first.Kill9();  // the moment the last answer arrived
    load_ctx.TryCancel();
  }
  ServerProcess second(dir, config);
  ASSERT_GT(second.port(), 0) << "server did not restart";
  auto stub = v1::ReflexionService::NewStub(
      client::Connect(absl::StrCat("127.0.0.1:", second.port())));
  int lost = 0, total = 0;
  for (const auto& ids : acked) {
    for (const std::string& id : ids) {
      ++total;
      v1::GetWorkflowRequest req;
      req.set_workflow_id(id);
      v1::GetWorkflowResponse resp;
      grpc::ClientContext ctx;
      grpc::Status s = stub->GetWorkflow(&ctx, req, &resp);
      if (!s.ok()) {
        ++lost;
        EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND)
            << s.error_message();
      }
    }
  }
  EXPECT_EQ(total, kClients * kPerClient);
  EXPECT_EQ(lost, 0) << lost << " of " << total
                     << " acknowledged workflows are gone after kill -9";
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Durability, AckCrashTest,
                         ::testing::Values("async", "sync"));

TEST(CrashTest, KillNineWithWorkflowsInFlightLosesNothingAndRepeatsNothing) {
  std::string dir = MakeTempDir();
  std::string config = dir + "/config.yaml";
  {
    std::ofstream out(config);
    // Every simulated call takes 250 ms, so workflows are really in flight
    // (starting all 120, each acknowledged once recorded, takes a while);
    // the journal keeps the simulated world across the restart.
    out << "simulator:\n  latency_ms: 250\n  journal: true\n"
        << "workflow:\n  durability: async\n  checkpoint_keep_last: 0\n";
  }
  constexpr int kWorkflows = 120;
  std::vector<std::string> ids;
  {
    ServerProcess first(dir, config);
    ASSERT_GT(first.port(), 0) << "server did not start";
    auto stub = v1::ReflexionService::NewStub(
        client::Connect(absl::StrCat("127.0.0.1:", first.port())));
    // Types whose first step runs an action (none escalates at once), so
    // they are still in flight at the kill.
    const char* types[] = {"InvalidImageName", "CrashLoopBackOff", "OOMKilled",
                           "Evicted"};
    for (int i = 0; i < kWorkflows; ++i) {
      v1::StartWorkflowRequest req;
      req.set_pod_name(absl::StrCat("crash-", i));
      req.set_namespace_("chaos");
      req.set_error_type(types[i % 4]);
      v1::StartWorkflowResponse resp;
      grpc::ClientContext ctx;
      ASSERT_TRUE(stub->StartWorkflow(&ctx, req, &resp).ok());
      ids.push_back(resp.workflow_id());
    }
    // Let them get going (a few node steps each), then pull the plug.
    absl::SleepFor(absl::Milliseconds(120));
    v1::GetMetricsResponse m;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->GetMetrics(&ctx, v1::GetMetricsRequest(), &m).ok());
    EXPECT_GE(m.workflows_in_flight(), 100) << "too few in flight to test";
    first.Kill9();
  }

  ServerProcess second(dir, config);
  ASSERT_GT(second.port(), 0) << "server did not restart";
  auto stub = v1::ReflexionService::NewStub(
      client::Connect(absl::StrCat("127.0.0.1:", second.port())));
  std::map<std::string, v1::GetWorkflowResponse> final_state;
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (final_state.size() < ids.size() && absl::Now() < deadline) {
    for (const std::string& id : ids) {
      if (final_state.count(id)) continue;
      v1::GetWorkflowRequest req;
      req.set_workflow_id(id);
      v1::GetWorkflowResponse resp;
      grpc::ClientContext ctx;
      grpc::Status s = stub->GetWorkflow(&ctx, req, &resp);
      ASSERT_TRUE(s.ok()) << id << ": " << s.error_message();
      if (resp.phase() != v1::WORKFLOW_PHASE_RUNNING) final_state[id] = resp;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(final_state.size(), ids.size())
      << "not every workflow reached a terminal state";
  {
    v1::GetMetricsResponse m;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->GetMetrics(&ctx, v1::GetMetricsRequest(), &m).ok());
    EXPECT_GE(m.workflows_started(), 100) << "workflows were not resumed";
  }
  for (const auto& [id, wf] : final_state) {
    // Completed, or waiting for a human in human_escalation.
    EXPECT_TRUE(wf.phase() == v1::WORKFLOW_PHASE_COMPLETED ||
                wf.phase() == v1::WORKFLOW_PHASE_WAITING)
        << id << ": " << wf.result().error();
    // One episode per attempt: none lost, none doubled by a replayed learn.
    v1::ListEpisodesRequest req;
    req.set_workflow_id(id);
    v1::ListEpisodesResponse episodes;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->ListEpisodes(&ctx, req, &episodes).ok());
    std::set<int> attempts;
    for (const auto& e : episodes.episodes()) {
      EXPECT_TRUE(attempts.insert(e.attempt()).second)
          << id << " has attempt " << e.attempt() << " twice";
    }
    EXPECT_EQ(static_cast<int>(attempts.size()), wf.result().attempts()) << id;
  }
  EXPECT_EQ(second.Terminate(), 0);

  // The simulated cluster's journal: one line per applied action.
  std::ifstream journal(dir + "/data/simulator.journal");
  std::string line;
  std::multiset<std::string> keys;
  int lines = 0;
  while (std::getline(journal, line)) {
    if (line.empty()) continue;
    ++lines;
    std::vector<std::string> parts = absl::StrSplit(line, '\t');
    // The action, its scenario, the error type, the result's changes and
    // the n of the outcome's draw.
    ASSERT_EQ(parts.size(), 5u);
    keys.insert(parts[0]);  // the serialized action holds its key
  }
  EXPECT_GE(lines, kWorkflows);
  std::set<std::string> unique(keys.begin(), keys.end());
  EXPECT_EQ(unique.size(), keys.size()) << "an action was applied twice";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace reflexion::server

// kill -9 test: a real reflexion-server process with workflows in flight is
// killed with SIGKILL and restarted on the same data dir. Every workflow
// must reach a terminal state, no completed episode may be lost or doubled,
// and no idempotency key may be executed twice (the simulated cluster's
// journal is its durable execution log).

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reflexion::server {
namespace {

class ServerProcess {
 public:
  ServerProcess(const std::string& dir, const std::string& config) {
    std::string port_file = dir + "/port";
    std::filesystem::remove(port_file);
    pid_ = fork();
    if (pid_ == 0) {
      std::string log = dir + "/server.log";
      FILE* f = freopen(log.c_str(), "a", stderr);
      (void)f;
      execl(REFLEXION_SERVER_BINARY, "reflexion-server", "--host", "127.0.0.1",
            "--port", "0", "--data_dir", (dir + "/data").c_str(), "--config",
            config.c_str(), "--port_file", port_file.c_str(), nullptr);
      _exit(127);
    }
    for (int i = 0; i < 300; ++i) {
      std::ifstream in(port_file);
      int port = 0;
      if (in >> port && port > 0) {
        port_ = port;
        break;
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  void Kill9() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  int Terminate() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

TEST(CrashTest, KillNineWithWorkflowsInFlightLosesNothingAndRepeatsNothing) {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "reflexion-crash-test-XXXXXX")
          .string();
  std::string dir = mkdtemp(tmpl.data());
  std::string config = dir + "/config.yaml";
  {
    std::ofstream out(config);
    // Every simulated call takes 100 ms, so workflows are really in flight;
    // the journal keeps the simulated world across the restart.
    out << "simulator:\n  latency_ms: 100\n  journal: true\n"
        << "workflow:\n  durability: async\n  checkpoint_keep_last: 0\n";
  }
  constexpr int kWorkflows = 120;
  std::vector<std::string> ids;
  {
    ServerProcess first(dir, config);
    ASSERT_GT(first.port(), 0) << "server did not start";
    auto stub = v1::ReflexionService::NewStub(
        client::Connect(absl::StrCat("127.0.0.1:", first.port())));
    const char* types[] = {"ImagePullBackOff", "CrashLoopBackOff", "OOMKilled",
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
    ASSERT_EQ(parts.size(), 3u);
    keys.insert(parts[0]);  // the serialized action holds its key
  }
  EXPECT_GE(lines, kWorkflows);
  std::set<std::string> unique(keys.begin(), keys.end());
  EXPECT_EQ(unique.size(), keys.size()) << "an action was applied twice";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace reflexion::server

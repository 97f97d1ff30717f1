// Deterministic runs: with simulator.seed and reflexion.seed fixed, the same
// incidents through the real server on fresh data dirs give the same
// episodes, whatever the workflow ids (another start of the data dir); a
// different seed gives different ones.

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/app.h"
#include "server/config.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::TempDir;

constexpr int kIncidents = 100;
constexpr const char* kTypes[] = {
    "ImagePullBackOff", "CrashLoopBackOff",
    "OOMKilled",        "Evicted",
    "Pending",          "ErrImagePull",
    "InvalidImageName", "CreateContainerConfigError"};

ServerConfig Config(const std::string& dir, uint64_t seed) {
  ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir;
  config.worker_threads = 2;
  config.simulator_seed = seed;
  config.workflow.seed = seed + 100;
  return config;
}

// One line per episode, in incident order: pod, attempt, strategy, success.
// Workflow ids are left out: they differ between starts of a data dir.
std::vector<std::string> RunIncidents(const std::string& dir, uint64_t seed,
                                      std::string* first_id) {
  std::vector<std::string> out;
  App app(Config(dir, seed));
  EXPECT_THAT(app.Start(), IsOk());
  auto channel = client::Connect(absl::StrCat("127.0.0.1:", app.port()));
  auto stub = v1::ReflexionService::NewStub(channel);
  for (int i = 0; i < kIncidents; ++i) {
    v1::ProcessIncidentRequest req;
    req.set_pod_name(absl::StrCat("det-", i));
    req.set_namespace_("shop");
    req.set_error_type(kTypes[i % 8]);
    v1::ProcessIncidentResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub->ProcessIncident(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (i == 0) *first_id = resp.result().workflow_id();
    v1::ListEpisodesRequest q;
    q.set_workflow_id(resp.result().workflow_id());
    q.set_page_size(1000);
    v1::ListEpisodesResponse eps;
    grpc::ClientContext ctx2;
    s = stub->ListEpisodes(&ctx2, q, &eps);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (int k = eps.episodes_size() - 1; k >= 0; --k) {  // oldest first
      const v1::Episode& e = eps.episodes(k);
      out.push_back(absl::StrCat(e.pod_name(), " ", e.attempt(), " ",
                                 e.strategy(), " ", e.success()));
    }
    out.push_back(
        absl::StrCat(req.pod_name(), " -> ",
                     v1::WorkflowStatus_Name(resp.result().status())));
  }
  return out;
}

TEST(DeterminismTest, SameSeedsGiveTheSameEpisodesOnAnyStartOfADataDir) {
  TempDir fresh, restarted, other;
  {
    // A start before the run: its workflow ids are wf-2-..., not wf-1-....
    App app(Config(restarted.path(), 3));
    ASSERT_THAT(app.Start(), IsOk());
  }
  std::string id_a, id_b, id_c;
  const std::vector<std::string> a = RunIncidents(fresh.path(), 3, &id_a);
  const std::vector<std::string> b = RunIncidents(restarted.path(), 3, &id_b);
  const std::vector<std::string> c = RunIncidents(other.path(), 4, &id_c);
  ASSERT_GT(a.size(), static_cast<size_t>(kIncidents));
  EXPECT_NE(id_a, id_b);  // the ids differ ...
  EXPECT_EQ(a, b);        // ... the episodes do not
  EXPECT_NE(a, c);        // another seed, another world
}

}  // namespace
}  // namespace reflexion::server

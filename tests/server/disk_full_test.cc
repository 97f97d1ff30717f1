// The server on a disk that fills up and empties again: new work is
// refused naming the data dir, health turns NOT_SERVING, reads go on, and
// it all comes back once space returns.

#include <chrono>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/app.h"
#include "server/config.h"
#include "storage/rocksdb_db.h"
#include "tests/storage/failing_file_system.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

namespace v1 = ::reflexion::v1;
using ::reflexion::testing::FailingFileSystem;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::TempDir;
using ::testing::HasSubstr;

grpc::Status Process(v1::ReflexionService::Stub& stub, const std::string& pod,
                     v1::ProcessIncidentResponse* resp) {
  v1::ProcessIncidentRequest req;
  req.set_pod_name(pod);
  req.set_namespace_("default");
  req.set_error_type("CrashLoopBackOff");
  grpc::ClientContext ctx;
  return stub.ProcessIncident(&ctx, req, resp);
}

// Polls health until it is `want` (1 SERVING, 2 NOT_SERVING), up to 60 s:
// the change follows storage, which RocksDB recovers on its own schedule.
// Follows Health/Watch (which streams every change) until `service` reports
// `want`; returns the last status seen (-1: none). The deadline only guards
// against a hang.
int AwaitHealth(grpc::Channel& channel, const std::string& service, int want) {
  auto health = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto watch = health->Watch(&ctx, req);
  grpc::health::v1::HealthCheckResponse r;
  int got = -1;
  while (got != want && watch->Read(&r)) got = r.status();
  ctx.TryCancel();
  (void)watch->Finish();
  return got;
}

TEST(DiskFullServerTest, RefusesNewWorkWhileFullServesReadsAndRecovers) {
  TempDir dir;
  auto fs = std::make_shared<FailingFileSystem>();
  std::unique_ptr<rocksdb::Env> env = FailingFileSystem::NewEnv(fs);
  ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir.path();
  config.worker_threads = 2;
  config.workflow.seed = 5;
  config.simulator_seed = 3;
  storage::RocksDbOptions storage;
  storage.env = env.get();
  App app(config, storage);
  ASSERT_THAT(app.Start(), IsOk());
  auto channel = client::Connect(absl::StrCat("127.0.0.1:", app.port()));
  auto stub = v1::ReflexionService::NewStub(channel);

  v1::ProcessIncidentResponse first;
  ASSERT_TRUE(Process(*stub, "before", &first).ok());
  ASSERT_FALSE(first.result().workflow_id().empty());

  fs->SetFull(true);
  // Admitted while storage was still writable: its first write fails and
  // the workflow stops with that error (before the fix: SIGABRT).
  v1::ProcessIncidentResponse during;
  grpc::Status s = Process(*stub, "during", &during);
  if (s.ok()) {
    EXPECT_EQ(during.result().status(), v1::WORKFLOW_STATUS_FAILED);
  }
  EXPECT_EQ(AwaitHealth(*channel, kHealthServiceName, 2), 2);
  EXPECT_EQ(AwaitHealth(*channel, "", 2), 2);

  // New work is refused, naming the data dir.
  v1::ProcessIncidentResponse refused;
  s = Process(*stub, "refused", &refused);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("disk full at " + dir.path()));
  {
    v1::StartWorkflowRequest req;
    req.set_pod_name("refused-too");
    req.set_namespace_("default");
    req.set_error_type("CrashLoopBackOff");
    v1::StartWorkflowResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->StartWorkflow(&ctx, req, &resp).error_code(),
              grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // Reads are served.
  {
    v1::GetWorkflowRequest req;
    req.set_workflow_id(first.result().workflow_id());
    v1::GetWorkflowResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub->GetWorkflow(&ctx, req, &resp).ok());
  }
  {
    v1::ListEpisodesRequest req;
    v1::ListEpisodesResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub->ListEpisodes(&ctx, req, &resp).ok());
    EXPECT_GE(resp.episodes_size(), 1);
  }
  {
    v1::GetMetricsRequest req;
    v1::GetMetricsResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->GetMetrics(&ctx, req, &resp).ok());
    EXPECT_TRUE(resp.storage_read_only());
    EXPECT_FALSE(resp.storage_recovered_with_loss());
  }

  fs->SetFull(false);
  EXPECT_EQ(AwaitHealth(*channel, kHealthServiceName, 1), 1);
  EXPECT_EQ(AwaitHealth(*channel, "", 1), 1);
  v1::ProcessIncidentResponse after;
  s = Process(*stub, "after", &after);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // It ran to its end on the simulated cluster (resolved, escalated or
  // waiting: the outcome is the scenario's), and nothing failed on storage.
  EXPECT_NE(after.result().status(), v1::WORKFLOW_STATUS_FAILED)
      << after.result().error();
  app.Stop(absl::ZeroDuration(), absl::ZeroDuration());
}

}  // namespace
}  // namespace reflexion::server

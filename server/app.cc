#include "server/app.h"

#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"

namespace reflexion::server {

App::App(ServerConfig config) : config_(std::move(config)) {}

App::~App() { Stop(absl::ZeroDuration()); }

absl::Status App::Start() {
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        "cannot create data dir ", config_.data_dir, ": ", ec.message()));
  }
  absl::StatusOr<std::unique_ptr<storage::RocksDb>> db =
      storage::RocksDb::Open(config_.data_dir);
  if (!db.ok()) return db.status();
  db_ = *std::move(db);
  store_ = std::make_unique<storage::RocksDbKnowledgeStore>(db_.get());

  absl::StatusOr<std::unique_ptr<sim::SimulatedCluster>> cluster =
      config_.simulator_scenarios.empty()
          ? sim::SimulatedCluster::WithDefaultScenarios(config_.simulator_seed)
          : sim::SimulatedCluster::FromFile(config_.simulator_scenarios,
                                            config_.simulator_seed);
  if (!cluster.ok()) return cluster.status();
  cluster_ = *std::move(cluster);

  threads_ =
      config_.worker_threads > 0
          ? config_.worker_threads
          : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  pool_ = std::make_unique<graph::ThreadPool>(threads_);
  workflow_ = std::make_unique<core::ReflexionWorkflow>(
      config_.workflow, store_.get(), cluster_.get(), &reflector_, &clock_);
  if (absl::Status s = workflow_->Init(); !s.ok()) return s;
  runner_ = std::make_unique<WorkflowRunner>(workflow_.get(), pool_.get(),
                                             &clock_, config_.max_in_flight);
  ServiceOptions options;
  options.max_in_flight_per_stream = config_.max_in_flight_per_stream;
  options.executor_name = cluster_->Name();
  options.reflector_name = reflector_.Name();
  service_ = std::make_unique<ReflexionServiceImpl>(
      runner_.get(), store_.get(), pool_.get(), &clock_, options);

  grpc::EnableDefaultHealthCheckService(true);
  // gRPC serves health itself; linking its descriptor lets reflection
  // describe it (buf curl / grpcurl can then call Health/Check).
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::string address = absl::StrCat(config_.host, ":", config_.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port_);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  server_->GetHealthCheckService()->SetServingStatus(kHealthServiceName, true);
  return absl::OkStatus();
}

void App::Stop(absl::Duration grace) {
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(kHealthServiceName,
                                                       false);
    server_->GetHealthCheckService()->SetServingStatus(false);
    runner_->StopAccepting();
    server_->Shutdown(std::chrono::system_clock::now() +
                      absl::ToChronoSeconds(grace));
  }
  if (runner_ != nullptr) runner_->Drain();
  if (server_ != nullptr) server_->Wait();
  server_.reset();
  service_.reset();
  runner_.reset();
  pool_.reset();  // joins the engine's threads after their last task
  workflow_.reset();
  store_.reset();
  db_.reset();
}

std::vector<std::string> App::StartupReport() const {
  return {
      absl::StrCat("listening on ", config_.host, ":", port_, ", data in ",
                   config_.data_dir),
      absl::StrCat("executor: ", cluster_->Name(), " (",
                   config_.simulator_scenarios.empty()
                       ? std::string("embedded default scenarios")
                       : "scenarios from " + config_.simulator_scenarios,
                   ", seed ", config_.simulator_seed,
                   "; the only executor in this build)"),
      absl::StrCat("reflector: ", reflector_.Name(),
                   " (rule-based; the only reflector in this build)"),
      absl::StrCat("workflow: max attempts ", config_.workflow.max_attempts,
                   ", confidence threshold ",
                   config_.workflow.selector.confidence_threshold,
                   config_.workflow.selector.escalate_below_threshold
                       ? " (escalate below)"
                       : " (explore below)",
                   ", reflection depth ",
                   core::DepthName(config_.workflow.depth), ", ", threads_,
                   " worker threads"),
  };
}

}  // namespace reflexion::server

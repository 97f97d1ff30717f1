#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "core/graph/task_runner.h"
#include "core/ports/clock.h"
#include "core/reflexion/heuristic_reflector.h"
#include "core/reflexion/workflow.h"
#include "core/sim/simulated_cluster.h"
#include "grpcpp/server.h"
#include "server/config.h"
#include "server/service.h"
#include "server/upstream/curl_http_client.h"
#include "server/upstream/http_executor.h"
#include "server/upstream/openai_reflector.h"
#include "server/workflow_runner.h"
#include "storage/rocksdb_audit_log.h"
#include "storage/rocksdb_checkpoint_store.h"
#include "storage/rocksdb_db.h"
#include "storage/rocksdb_event_log.h"
#include "storage/rocksdb_knowledge_store.h"
#include "storage/rocksdb_policy_state_store.h"

namespace reflexion::server {

// The whole server: storage, executor, reflector, engine, gRPC. main() and
// the integration tests build it the same way. Not thread-safe: Start and
// Stop from one thread.
class App {
 public:
  explicit App(ServerConfig config);
  // For tests: storage opened with `storage` (e.g. a failing file system);
  // accept_data_loss comes from `config`.
  App(ServerConfig config, storage::RocksDbOptions storage);
  ~App();  // Stop()s if still running

  // Opens the data dir, wires the adapters and starts serving (with health
  // and reflection). Errors: the data dir cannot be created or opened (it is
  // locked by another process, corrupt), scenarios invalid, port taken.
  absl::Status Start();

  // Graceful stop (SIGTERM). At once: health NOT_SERVING, new work refused
  // with UNAVAILABLE (incidents, starts, forks, decisions). For `drain`
  // everything else is served as before (so health checks and load
  // balancers see NOT_SERVING). Then Resolve streams get up to `grace` for
  // the results of their running workflows; those still running get a
  // `handed_off` message (they continue, events retained for WatchWorkflow)
  // and their streams end with UNAVAILABLE. Then the listeners close, every
  // running workflow completes and is stored, and storage is closed.
  void Stop(absl::Duration drain, absl::Duration grace);
  // Stop with service.shutdown_drain and service.shutdown_grace.
  void Stop() { Stop(config_.shutdown_drain, config_.shutdown_grace); }
  // Ends the drain period of a Stop in progress early (from another
  // thread; e.g. a test that has seen NOT_SERVING).
  void EndDrain() { drain_cut_.Notify(); }

  // The bound port (after Start).
  int port() const { return port_; }
  const ServerConfig& config() const { return config_; }
  // For tests: the simulated cluster in use.
  sim::SimulatedCluster* cluster() const { return cluster_.get(); }
  // For tests: the gRPC service (its Resolve stream stats).
  ReflexionServiceImpl* service() const { return service_.get(); }
  // The authenticator (after Start): e.g. CheckNow() to reload the tokens
  // file at once.
  Authenticator* auth() const { return auth_.get(); }

  // Lines describing the active executor and reflector and why.
  std::vector<std::string> StartupReport() const;

  // Workflows found interrupted (running) at Start and resumed.
  int resumed() const { return resumed_; }

  // Runs retention once: deletes finished workflows older than
  // finished_ttl. Returns how many were deleted.
  absl::StatusOr<int> RunRetention();

  // The audit log (after Start; null before and after Stop), for the
  // workflow wiring and tests. Owned by the App.
  core::AuditLog* audit_log() const { return audit_.get(); }
  // Runs audit retention once: removes entries older than audit.max_age
  // (none when it is 0). Returns how many were removed.
  absl::StatusOr<int64_t> RunAuditRetention();

  // Runs episodic memory retention once (memory.max_episodes,
  // memory.max_age; KnowledgeStore::RetainEpisodes): the episodes removed.
  absl::StatusOr<int64_t> RunMemoryRetention();

 private:
  void RetentionLoop();
  // Picks the reflector (reflector.type, openai.*); starts http_ for it.
  absl::Status StartReflector();
  // executor.type http: the HttpExecutor, checked once (/health).
  absl::Status StartHttpExecutor();
  // Starts the outbound HTTP client once.
  absl::Status StartHttp();

  ServerConfig config_;
  storage::RocksDbOptions storage_options_;
  int port_ = 0;
  int threads_ = 0;
  core::RealClock clock_;
  std::unique_ptr<storage::RocksDb> db_;
  std::unique_ptr<storage::RocksDbKnowledgeStore> store_;
  std::unique_ptr<storage::RocksDbCheckpointStore> checkpoints_;
  std::unique_ptr<storage::RocksDbEventLog> events_;  // with checkpoints_
  std::unique_ptr<storage::RocksDbAuditLog> audit_;
  int resumed_ = 0;
  uint64_t start_number_ = 0;  // this start of the data dir: 1, 2, ...
  absl::Notification stop_retention_;
  absl::Notification drain_cut_;
  bool stopped_ = false;
  std::thread retention_;
  std::unique_ptr<sim::SimulatedCluster> cluster_;
  // executor.type http: the Go agent's REST API (destroyed before timer_
  // and http_); the active executor is it or cluster_.
  std::unique_ptr<upstream::HttpExecutor> http_executor_;
  core::ClusterExecutor* executor_ = nullptr;
  std::string executor_line_;
  core::HeuristicReflector heuristic_;
  // Outbound HTTP (created when an upstream is configured), and the LLM
  // reflector on it.
  std::unique_ptr<upstream::CurlHttpClient> http_;
  std::unique_ptr<upstream::OpenAiReflector> openai_;
  // The active reflector: openai_ or heuristic_.
  core::Reflector* reflector_ = &heuristic_;
  // Why this reflector (for the startup report).
  std::string reflector_why_;
  std::unique_ptr<graph::TimerThread> timer_;
  std::unique_ptr<graph::ThreadPool> pool_;
  std::unique_ptr<core::ReflexionWorkflow> workflow_;
  std::unique_ptr<core::Policy> policy_;
  // For incidents on the simulated cluster (see PolicyConfig.limit_simulated).
  std::unique_ptr<core::Policy> local_policy_;
  std::unique_ptr<storage::RocksDbPolicyStateStore> policy_state_;
  std::unique_ptr<EventHub> hub_;
  std::unique_ptr<WorkflowRunner> runner_;
  std::unique_ptr<AgentSessions> sessions_;  // with checkpoints_

 public:
  // Agent sessions (null without checkpoints).
  AgentSessions* sessions() const { return sessions_.get(); }

 private:
  std::unique_ptr<Authenticator> auth_;  // before service_, after timer_
  std::unique_ptr<ReflexionServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
};

// The listening rules App::Start checks first: tls.cert_file and
// tls.key_file together (readable PEM, the key matching the certificate),
// tls.client_ca_file only with them; a service.host that is not loopback
// needs authentication (auth.tokens_file or tls.client_ca_file) and TLS,
// unless insecure_listen. kInvalidArgument / kFailedPrecondition naming the
// key and the flag.
absl::Status CheckListenSecurity(const ServerConfig& config);

// The service name registered with the health service.
inline constexpr char kHealthServiceName[] = "reflexion.v1.ReflexionService";

}  // namespace reflexion::server

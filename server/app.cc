#include "server/app.h"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server_builder.h"
#include "storage/rocksdb_start_counter.h"

namespace reflexion::server {

App::App(ServerConfig config) : config_(std::move(config)) {}

App::App(ServerConfig config, storage::RocksDbOptions storage)
    : config_(std::move(config)), storage_options_(storage) {}

App::~App() { Stop(absl::ZeroDuration(), absl::ZeroDuration()); }

absl::Status CheckListenSecurity(const ServerConfig& config) {
  if (config.tls_cert_file.empty() != config.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls.cert_file and tls.key_file: give both or neither");
  }
  const bool tls = !config.tls_cert_file.empty();
  if (!config.tls_client_ca_file.empty() && !tls) {
    return absl::InvalidArgumentError(
        "tls.client_ca_file: needs tls.cert_file and tls.key_file (mTLS is "
        "TLS with client certificates)");
  }
  if (tls) {
    if (absl::Status s =
            CheckTlsFiles(config.tls_cert_file, config.tls_key_file,
                          config.tls_client_ca_file);
        !s.ok()) {
      return s;
    }
  }
  const bool auth =
      !config.auth_tokens_file.empty() || !config.tls_client_ca_file.empty();
  if (!config.auth_anonymous_health && (!tls || !auth)) {
    return absl::InvalidArgumentError(
        "auth.anonymous_health: false needs TLS (tls.cert_file, tls.key_file: "
        "gRPC checks health and reflection callers on TLS connections only) "
        "and authentication (auth.tokens_file or tls.client_ca_file)");
  }
  if (IsLoopbackHost(config.host) || config.insecure_listen) {
    return absl::OkStatus();
  }
  if (!auth) {
    return absl::FailedPreconditionError(absl::StrCat(
        "service.host ", config.host,
        " is not a loopback address and authentication is off (no "
        "auth.tokens_file, no tls.client_ca_file): anyone reaching the port "
        "could approve actions. Configure them, or pass --insecure_listen "
        "(service.insecure_listen: true) to listen anyway"));
  }
  if (!tls) {
    return absl::FailedPreconditionError(absl::StrCat(
        "service.host ", config.host,
        " is not a loopback address and TLS is off: bearer tokens would "
        "cross the network in cleartext. Configure tls.cert_file and "
        "tls.key_file, or pass --insecure_listen (service.insecure_listen: "
        "true) to listen anyway"));
  }
  return absl::OkStatus();
}

absl::Status App::Start() {
  if (absl::Status s = CheckListenSecurity(config_); !s.ok()) return s;
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        "cannot create data dir ", config_.data_dir, ": ", ec.message()));
  }
  storage_options_.accept_data_loss = config_.accept_data_loss;
  if (storage_options_.clock == nullptr) storage_options_.clock = &clock_;
  absl::StatusOr<std::unique_ptr<storage::RocksDb>> db =
      storage::RocksDb::Open(config_.data_dir, storage_options_);
  if (!db.ok()) return db.status();
  db_ = *std::move(db);
  // Workflow ids are numbered per start of this data dir: unique across
  // restarts, and the same for the same sequence of incidents (simulated
  // outcomes are drawn from idempotency keys, which contain the id).
  absl::StatusOr<uint64_t> start = storage::NextStartNumber(*db_);
  if (!start.ok()) return start.status();
  start_number_ = *start;
  store_ = std::make_unique<storage::RocksDbKnowledgeStore>(db_.get());
  absl::StatusOr<std::unique_ptr<storage::RocksDbAuditLog>> audit =
      storage::RocksDbAuditLog::Open(db_.get());
  if (!audit.ok()) return audit.status();
  audit_ = *std::move(audit);
  if (config_.checkpointing) {
    checkpoints_ = std::make_unique<storage::RocksDbCheckpointStore>(db_.get());
    events_ = std::make_unique<storage::RocksDbEventLog>(db_.get());
  }

  absl::StatusOr<std::unique_ptr<sim::SimulatedCluster>> cluster =
      config_.simulator_scenarios.empty()
          ? sim::SimulatedCluster::WithDefaultScenarios(config_.simulator_seed)
          : sim::SimulatedCluster::FromFile(config_.simulator_scenarios,
                                            config_.simulator_seed);
  if (!cluster.ok()) return cluster.status();
  cluster_ = *std::move(cluster);
  cluster_->SetLatency(config_.simulator_latency);
  if (config_.simulator_journal) {
    absl::Status s = cluster_->EnableJournal(
        (std::filesystem::path(config_.data_dir) / "simulator.journal")
            .string());
    if (!s.ok()) return s;
  }

  if (absl::Status s = StartReflector(); !s.ok()) return s;

  threads_ =
      config_.worker_threads > 0
          ? config_.worker_threads
          : static_cast<int>(std::max(2u, std::thread::hardware_concurrency()));
  timer_ = std::make_unique<graph::TimerThread>();
  {
    AuthenticatorOptions ao;
    ao.tokens_file = config_.auth_tokens_file;
    ao.client_certificates = !config_.tls_client_ca_file.empty();
    ao.reload_interval = config_.auth_reload_interval;
    absl::StatusOr<std::unique_ptr<Authenticator>> auth =
        Authenticator::Create(std::move(ao), timer_.get());
    if (!auth.ok()) return auth.status();
    auth_ = *std::move(auth);
    if (!auth_->enabled()) {
      LOG(WARNING) << "authentication is off (no auth.tokens_file, no "
                      "tls.client_ca_file): every caller is admin on "
                   << config_.host
                   << (IsLoopbackHost(config_.host)
                           ? " (loopback only)"
                           : " (not loopback: --insecure_listen)");
    }
  }
  executor_ = cluster_.get();
  if (config_.executor == "http") {
    if (absl::Status s = StartHttpExecutor(); !s.ok()) return s;
  }
  pool_ = std::make_unique<graph::ThreadPool>(threads_);
  workflow_ = std::make_unique<core::ReflexionWorkflow>(
      config_.workflow, store_.get(), executor_, reflector_, &clock_,
      checkpoints_.get(), timer_.get());
  if (absl::Status s = workflow_->Init(); !s.ok()) return s;
  // Safety: the policy before every action, its open breakers kept across
  // restarts.
  policy_ = std::make_unique<core::Policy>(config_.policy, &clock_);
  policy_state_ = std::make_unique<storage::RocksDbPolicyStateStore>(db_.get());
  absl::StatusOr<std::vector<reflexion::v1::BreakerState>> open =
      policy_state_->LoadBreakers();
  if (!open.ok()) return open.status();
  policy_->RestoreBreakers(*open);
  for (const reflexion::v1::BreakerState& b : *open) {
    LOG(WARNING) << "blast-radius breaker " << b.scope()
                 << " is still open (suspected common cause: "
                 << b.suspected_cause()
                 << "): no automated action there until it is cleared "
                    "(reflexionctl clear-breaker "
                 << b.scope() << ")";
  }
  if (executor_ == cluster_.get() && !config_.policy.limit_simulated) {
    // The simulated cluster: same lists, modes and freezes, no rate limits
    // and no breakers (policy.limit_simulated).
    core::PolicyConfig local = config_.policy;
    local.per_workload = core::RateLimit{};
    local.per_namespace = core::RateLimit{};
    local.per_cluster = core::RateLimit{};
    local.breaker.namespace_incidents = 0;
    local.breaker.cluster_incidents = 0;
    local.breaker.workload_min_pods = 0;
    local_policy_ = std::make_unique<core::Policy>(local, &clock_);
  }
  workflow_->SetSafety(policy_.get(), audit_.get(), policy_state_.get(),
                       local_policy_.get());
  hub_ = std::make_unique<EventHub>(config_.watch_retained_workflows,
                                    events_.get());
  runner_ = std::make_unique<WorkflowRunner>(
      workflow_.get(), pool_.get(), &clock_, config_.max_in_flight, hub_.get(),
      absl::StrCat("wf-", start_number_, "-"));
  // No new work while storage is read-only (disk full, I/O error).
  runner_->SetAdmission([db = db_.get()] { return db->Writable(); });
  if (checkpoints_ != nullptr) {
    // Agent sessions need durable waits, hence checkpoints.
    AgentSessionsOptions so;
    so.action_timeout = config_.workflow.action_timeout;
    so.report_interval = config_.workflow.report_interval;
    sessions_ = std::make_unique<AgentSessions>(runner_.get(), pool_.get(),
                                                timer_.get(), &clock_, so);
    runner_->SetAgentWaitHook(
        [s = sessions_.get()](const reflexion::v1::WorkflowState& state,
                              uint64_t step) { s->OnWait(state, step); });
    if (absl::Status s = sessions_->Recover(checkpoints_.get()); !s.ok()) {
      return s;
    }
  }
  if (checkpoints_ != nullptr) {
    // Workflows a crash interrupted continue from their last checkpoint.
    absl::StatusOr<std::vector<core::WorkflowRecord>> running =
        checkpoints_->ListByPhase(core::WorkflowPhase::kRunning);
    if (!running.ok()) return running.status();
    for (const core::WorkflowRecord& r : *running) {
      WorkflowCallbacks callbacks;
      callbacks.retain_events = true;  // followed with WatchWorkflow
      if (absl::StatusOr<reflexion::v1::WorkflowState> st =
              core::WorkflowGraph::GetState(*checkpoints_, r.workflow_id);
          st.ok() && st->has_session()) {
        // An agent session's workflow: its messages go to its cluster.
        callbacks = sessions_->Callbacks(st->session().cluster(), "",
                                         st->incident().request_id());
      }
      absl::Status s = runner_->Resume(r.workflow_id, std::move(callbacks));
      if (s.ok()) {
        ++resumed_;
      } else {
        LOG(WARNING) << "cannot resume workflow " << r.workflow_id << ": " << s;
      }
    }
    retention_ = std::thread([this] { RetentionLoop(); });
  }
  if (!retention_.joinable() &&
      (config_.audit_max_age > absl::ZeroDuration() ||
       config_.memory_max_episodes > 0 ||
       config_.memory_max_age > absl::ZeroDuration())) {
    retention_ = std::thread([this] { RetentionLoop(); });
  }
  ServiceOptions options;
  options.max_in_flight_per_stream = config_.max_in_flight_per_stream;
  options.stream_buffer_bytes =
      static_cast<size_t>(config_.stream_buffer_bytes);
  options.executor_name = executor_->Name();
  options.reflector_name = reflector_->Name();
  options.reflector = reflector_;
  options.depth = config_.workflow.depth;
  if (http_ != nullptr) {
    options.upstreams = [http = http_.get()] { return http->Upstreams(); };
  }
  options.storage_writable = [db = db_.get()] { return db->Writable(); };
  options.storage_recovered_with_loss = db_->recovery().data_loss;
  options.storage_lost_sequences =
      static_cast<int64_t>(db_->recovery().lost_sequences);
  options.sessions = sessions_.get();
  options.stalled_stream_timeout = config_.stalled_stream_timeout;
  options.timer = timer_.get();
  options.lanes = pool_.get();
  options.audit_log = audit_.get();
  options.auth = auth_.get();
  options.default_cluster = config_.policy.default_cluster;
  service_ = std::make_unique<ReflexionServiceImpl>(
      workflow_.get(), runner_.get(), hub_.get(), store_.get(),
      checkpoints_.get(), pool_.get(), &clock_, options);

  grpc::EnableDefaultHealthCheckService(true);
  // gRPC serves health itself; linking its descriptor lets reflection
  // describe it (buf curl / grpcurl can then call Health/Check).
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  std::string address = absl::StrCat(config_.host, ":", config_.port);
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (!config_.tls_cert_file.empty()) {
    // The provider re-reads the files every tls.reload_interval: renewed
    // certificates apply to new connections without a restart.
    auto provider =
        std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
            config_.tls_key_file, config_.tls_cert_file,
            config_.tls_client_ca_file,
            static_cast<unsigned int>(
                absl::ToInt64Seconds(config_.tls_reload_interval)));
    grpc::experimental::TlsServerCredentialsOptions tls(provider);
    tls.watch_identity_key_cert_pairs();
    if (config_.tls_client_ca_file.empty()) {
      tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
    } else {
      tls.watch_root_certs();
      tls.set_cert_request_type(
          GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    }
    credentials = grpc::experimental::TlsServerCredentials(tls);
    if (!config_.auth_anonymous_health) {
      // Health and reflection are gRPC's own services: checked before
      // their handlers run.
      credentials->SetAuthMetadataProcessor(
          std::make_shared<ProtectedServicesProcessor>(auth_.get()));
    }
  }
  builder.AddListeningPort(address, credentials, &port_);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    server_.reset();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address));
  }
  // Health follows storage: NOT_SERVING while it is read-only.
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  auto set_health = [health](bool serving) {
    health->SetServingStatus(kHealthServiceName, serving);
    health->SetServingStatus(serving);
  };
  db_->SetWritableListener(
      [set_health](const absl::Status& s) { set_health(s.ok()); });
  return absl::OkStatus();
}

absl::StatusOr<int> App::RunRetention() {
  if (checkpoints_ == nullptr || config_.finished_ttl == absl::ZeroDuration()) {
    return 0;
  }
  int total = 0;
  while (true) {
    std::vector<std::string> expired;
    absl::StatusOr<int> n = checkpoints_->ExpireFinished(
        clock_.Now() - config_.finished_ttl, 1000, &expired);
    if (!n.ok()) return n.status();
    // Their stored events go with them.
    if (absl::Status s = events_->DeleteWorkflows(expired); !s.ok()) return s;
    total += *n;
    if (*n < 1000) return total;
  }
}

absl::StatusOr<int64_t> App::RunAuditRetention() {
  if (audit_ == nullptr || config_.audit_max_age == absl::ZeroDuration()) {
    return 0;
  }
  return audit_->Retain(clock_.Now() - config_.audit_max_age);
}

absl::StatusOr<int64_t> App::RunMemoryRetention() {
  if (store_ == nullptr) return 0;
  return store_->RetainEpisodes(config_.memory_max_episodes,
                                config_.memory_max_age > absl::ZeroDuration()
                                    ? clock_.Now() - config_.memory_max_age
                                    : absl::InfinitePast());
}

void App::RetentionLoop() {
  while (!stop_retention_.WaitForNotificationWithTimeout(
      config_.retention_interval)) {
    absl::StatusOr<int> n = RunRetention();
    if (!n.ok()) {
      LOG(WARNING) << "retention failed: " << n.status();
    } else if (*n > 0) {
      LOG(INFO) << "retention deleted " << *n << " finished workflows";
    }
    absl::StatusOr<int64_t> audited = RunAuditRetention();
    if (!audited.ok()) {
      LOG(WARNING) << "audit retention failed: " << audited.status();
    } else if (*audited > 0) {
      LOG(INFO) << "audit retention removed " << *audited << " entries older "
                << "than " << absl::FormatDuration(config_.audit_max_age);
    }
    absl::StatusOr<int64_t> forgotten = RunMemoryRetention();
    if (!forgotten.ok()) {
      LOG(WARNING) << "memory retention failed: " << forgotten.status();
    } else if (*forgotten > 0) {
      LOG(INFO) << "memory retention removed " << *forgotten << " episodes";
    }
  }
}

void App::Stop(absl::Duration drain, absl::Duration grace) {
  if (stopped_) return;
  stopped_ = true;
  if (db_ != nullptr) db_->SetWritableListener(nullptr);  // health stays down
  if (retention_.joinable()) {
    stop_retention_.Notify();
    retention_.join();
  }
  if (server_ != nullptr) {
    server_->GetHealthCheckService()->SetServingStatus(kHealthServiceName,
                                                       false);
    server_->GetHealthCheckService()->SetServingStatus(false);
    runner_->StopAccepting();
    if (drain > absl::ZeroDuration()) {
      LOG(INFO) << "NOT_SERVING; draining for " << absl::FormatDuration(drain);
      drain_cut_.WaitForNotificationWithTimeout(drain);
    }
    if (!service_->WaitForStreams(clock_.Now() + grace)) {
      int handed = service_->HandOffStreams();
      LOG(INFO) << "handed off " << handed
                << " workflow(s) still running on Resolve streams after "
                << absl::FormatDuration(grace);
    }
    // The streams' last messages (results, hand-offs) are queued: give the
    // writes a moment, then cut what is left.
    server_->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(1));
  }
  if (runner_ != nullptr) runner_->Drain();
  if (server_ != nullptr) server_->Wait();
  server_.reset();
  service_.reset();
  auth_.reset();  // before timer_: it cancels its reload timer
  if (sessions_ != nullptr) sessions_->Shutdown();
  runner_.reset();
  pool_.reset();
  sessions_.reset();
  http_executor_.reset();  // ends open observation windows, before timer_
  timer_.reset();
  hub_.reset();  // joins the engine's threads after their last task
  // Nothing calls out any more (every workflow and RPC ended).
  http_.reset();
  workflow_.reset();
  openai_.reset();
  reflector_ = &heuristic_;
  checkpoints_.reset();
  events_.reset();
  audit_.reset();
  store_.reset();
  db_.reset();
}

absl::Status App::StartReflector() {
  const bool configured = !config_.openai.api_key.empty() ||
                          !config_.openai_api_key_file.empty() ||
                          config_.openai_base_url_set;
  const bool use_openai = config_.reflector == "openai" ||
                          (config_.reflector == "auto" && configured);
  if (!use_openai) {
    reflector_ = &heuristic_;
    reflector_why_ =
        config_.reflector == "heuristic"
            ? "rule-based; reflector.type: heuristic"
            : "rule-based; no OpenAI-compatible server configured "
              "(OPENAI_API_KEY, OPENAI_BASE_URL or openai.base_url)";
    return absl::OkStatus();
  }
  upstream::OpenAiOptions o = config_.openai;
  if (!config_.openai_api_key_file.empty() && o.api_key.empty()) {
    std::ifstream f(config_.openai_api_key_file);
    if (!f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "openai.api_key_file: cannot read ", config_.openai_api_key_file));
    }
    std::stringstream buf;
    buf << f.rdbuf();
    o.api_key = std::string(absl::StripAsciiWhitespace(buf.str()));
  }
  // The reflect node must outlast the reflector's own deadline, so that a
  // slow LLM ends in the heuristic fallback, never in a failed workflow.
  const absl::Duration budget = upstream::OpenAiCallBudget(o);
  if (config_.workflow.node_timeout <= budget) {
    return absl::InvalidArgumentError(absl::StrCat(
        "openai.timeout: ", upstream::kOpenAiAttempts, " attempts of ",
        absl::FormatDuration(o.timeout),
        " plus backoff must end before workflow.execution_timeout (",
        absl::FormatDuration(config_.workflow.node_timeout), ")"));
  }
  if (absl::Status s = StartHttp(); !s.ok()) return s;
  openai_ = std::make_unique<upstream::OpenAiReflector>(o, http_.get());
  reflector_ = openai_.get();
  reflector_why_ = absl::StrCat(
      "model ", o.model, " at ", o.base_url,
      o.api_key.empty() ? ", no API key" : ", API key set",
      o.json_schema ? ", json_schema output" : ", plain JSON output",
      "; the heuristic reflector takes over whenever it fails");
  return absl::OkStatus();
}

absl::Status App::StartHttpExecutor() {
  if (config_.executor_url.empty()) {
    return absl::InvalidArgumentError(
        "executor.url: required with executor.type http (or set "
        "GO_SERVICE_URL)");
  }
  if (absl::Status s = StartHttp(); !s.ok()) return s;
  upstream::HttpExecutorOptions o;
  o.base_url = config_.executor_url;
  o.request_timeout = config_.executor_request_timeout;
  o.poll_interval = config_.executor_poll_interval;
  o.max_attempts = config_.executor_max_attempts;
  absl::StatusOr<std::unique_ptr<upstream::HttpExecutor>> e =
      upstream::HttpExecutor::Create(o, http_.get(), &clock_, timer_.get());
  if (!e.ok()) return e.status();
  http_executor_ = *std::move(e);
  executor_ = http_executor_.get();
  // One bounded check (request_timeout): an agent that is down is reported,
  // not fatal — its calls fail like any upstream's and the workflows
  // retry or escalate.
  absl::Notification checked;
  absl::Status health;
  http_executor_->Check([&](absl::Status s) {
    health = std::move(s);
    checked.Notify();
  });
  checked.WaitForNotification();
  executor_line_ = absl::StrCat("executor: ", http_executor_->Describe(health));
  if (!health.ok()) LOG(WARNING) << executor_line_;
  return absl::OkStatus();
}

absl::Status App::StartHttp() {
  if (http_ != nullptr) return absl::OkStatus();
  upstream::CurlHttpClient::Options o;
  o.clock = &clock_;
  o.rng_seed = config_.simulator_seed;
  o.breaker_failures = config_.breaker_failures;
  o.breaker_open_for = config_.breaker_open_for;
  absl::StatusOr<std::unique_ptr<upstream::CurlHttpClient>> http =
      upstream::CurlHttpClient::Create(std::move(o));
  if (!http.ok()) return http.status();
  http_ = *std::move(http);
  return absl::OkStatus();
}

std::vector<std::string> App::StartupReport() const {
  return {
      absl::StrCat("listening on ", config_.host, ":", port_, ", data in ",
                   config_.data_dir),
      !executor_line_.empty()
          ? executor_line_
          : absl::StrCat("executor: ", cluster_->Name(), " (",
                         config_.simulator_scenarios.empty()
                             ? std::string("embedded default scenarios")
                             : "scenarios from " + config_.simulator_scenarios,
                         ", seed ", config_.simulator_seed,
                         "; executor.type http runs actions through the Go "
                         "agent's REST API instead)"),
      absl::StrCat("reflector: ", reflector_->Name(), " (", reflector_why_,
                   ")"),
      checkpoints_ == nullptr
          ? std::string("checkpoints: disabled")
          : absl::StrCat(
                "checkpoints: ",
                config_.workflow.durability == graph::Durability::kSync ? "sync"
                : config_.workflow.durability == graph::Durability::kAsync
                    ? "async"
                    : "exit",
                ", keep last ", config_.workflow.keep_last_checkpoints,
                ", finished workflows expire after ",
                absl::FormatDuration(config_.finished_ttl), "; resumed ",
                resumed_, " interrupted workflow(s)"),
      absl::StrCat("workflow: max attempts ", config_.workflow.max_attempts,
                   ", confidence threshold ",
                   config_.workflow.selector.confidence_threshold,
                   config_.workflow.selector.escalate_below_threshold
                       ? " (escalate below)"
                       : " (explore below)",
                   ", reflection depth ",
                   core::DepthName(config_.workflow.depth), ", ", threads_,
                   " worker threads"),
      absl::StrCat(
          "security: ",
          config_.tls_cert_file.empty()
              ? std::string("no TLS")
              : absl::StrCat("TLS (", config_.tls_cert_file,
                             config_.tls_client_ca_file.empty()
                                 ? ""
                                 : ", client certificates required",
                             ")"),
          ", ",
          auth_ != nullptr && auth_->enabled()
              ? absl::StrCat("authentication on",
                             config_.auth_tokens_file.empty()
                                 ? std::string()
                                 : absl::StrCat(" (tokens in ",
                                                config_.auth_tokens_file, ")"))
              : std::string("authentication OFF: every caller is admin")),
  };
}

}  // namespace reflexion::server

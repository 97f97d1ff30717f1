#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/reflexion/policy.h"
#include "core/reflexion/workflow.h"
#include "server/upstream/openai_reflector.h"

namespace reflexion::server {

// Everything reflexion-server is configured with. Defaults are the embedded
// defaults: the server runs with no file, no flag and no variable.
struct ServerConfig {
  std::string host = "127.0.0.1";       // service.host, --host
  int port = 50051;                     // service.port, --port
  std::string data_dir = "./data";      // service.data_dir, --data_dir
  int max_in_flight = 10000;            // service.max_in_flight
  int max_in_flight_per_stream = 1000;  // service.max_in_flight_per_stream
  // Outbound bytes queued on a Resolve stream above which its reading
  // pauses (service.stream_buffer_bytes).
  int64_t stream_buffer_bytes = 4 << 20;
  // --accept_data_loss: start even when recovery finds acknowledged writes
  // missing from the WAL (reported in the log and GetMetrics).
  bool accept_data_loss = false;
  // Finished workflows whose events WatchWorkflow can still replay
  // (service.watch_retained_workflows).
  int watch_retained_workflows = 2000;
  int worker_threads = 0;  // service.worker_threads (0 = one per core)
  // On SIGTERM: how long health shows NOT_SERVING (new work refused, reads
  // served) before anything closes (service.shutdown_drain, seconds) ...
  absl::Duration shutdown_drain = absl::Seconds(5);
  // ... then how long Resolve streams get to receive the results of their
  // running workflows before those are handed off (service.shutdown_grace).
  absl::Duration shutdown_grace = absl::Seconds(10);
  // A Resolve stream whose reading stayed paused (its client does not read)
  // this long is cancelled; its workflows continue (0 = never;
  // service.stalled_stream_timeout, seconds).
  absl::Duration stalled_stream_timeout = absl::Seconds(60);
  std::string executor = "simulated";  // executor.type: simulated | http
  // executor.type http: the Go agent's REST API (executor.url,
  // GO_SERVICE_URL; executor.request_timeout, executor.poll_interval,
  // executor.max_attempts).
  std::string executor_url;
  // Outbound HTTP circuit breakers (upstream.breaker_failures,
  // upstream.breaker_open_for seconds).
  int breaker_failures = 5;
  absl::Duration breaker_open_for = absl::Seconds(30);
  absl::Duration executor_request_timeout = absl::Seconds(10);
  absl::Duration executor_poll_interval = absl::Seconds(5);
  int executor_max_attempts = 3;
  // reflector.type: "auto" (openai when an API key, a key file or a base
  // URL is configured, else heuristic), "openai" or "heuristic".
  std::string reflector = "auto";
  // openai.* and OPENAI_API_KEY / OPENAI_BASE_URL (api_key is never
  // logged; openai.api_key_file is read at start).
  upstream::OpenAiOptions openai;
  std::string openai_api_key_file;
  bool openai_base_url_set = false;
  uint64_t simulator_seed = 42;     // simulator.seed
  std::string simulator_scenarios;  // simulator.scenarios ("" = embedded)
  // simulator.latency_ms: every simulated call completes this much later.
  absl::Duration simulator_latency = absl::ZeroDuration();
  // simulator.journal: executed actions are journaled in the data dir, so
  // the simulated world survives a restart.
  bool simulator_journal = false;
  core::WorkflowConfig workflow;  // reflexion.*, workflow.*
  bool checkpointing = true;      // workflow.checkpointing_enabled
  // Finished workflows (and their checkpoints) are deleted this long after
  // they ended (workflow.finished_ttl, seconds; 0 = keep forever).
  absl::Duration finished_ttl = absl::Hours(24 * 7);
  // How often retention runs (workflow.retention_interval, seconds).
  absl::Duration retention_interval = absl::Seconds(60);
  // policy.* (server/policy_config.h); policy.own_namespace defaults to
  // POD_NAMESPACE when that is set and the key is not.
  core::PolicyConfig policy;
  bool policy_own_namespace_set = false;
  // Audit log entries older than this are removed by retention, the last
  // removed one kept as the chain's anchor (audit.max_age: seconds or a
  // duration such as 8760h; 0 = keep forever).
  absl::Duration audit_max_age = absl::Hours(8760);
  // Episodic memory retention, applied by the retention loop: at most this
  // many episodes, the oldest removed first (memory.max_episodes; 0 = no
  // bound), and none older than memory.max_age (seconds or a duration such
  // as 720h; 0 = keep forever). Posteriors and version records are kept.
  int memory_max_episodes = 100000;
  absl::Duration memory_max_age = absl::ZeroDuration();
  // Listen on a non-loopback service.host without authentication, or with
  // bearer tokens but no TLS (service.insecure_listen, --insecure_listen).
  bool insecure_listen = false;
  // auth.tokens_file: tokens (their SHA-256) and certificate identities
  // mapped to principals and roles (server/auth.h); "" = no tokens.
  std::string auth_tokens_file;
  // How often the tokens file is checked for changes (auth.reload_interval,
  // seconds).
  absl::Duration auth_reload_interval = absl::Seconds(5);
  // auth.anonymous_health: grpc.health.v1.Health and server reflection
  // answer callers without credentials; false needs TLS (and auth).
  bool auth_anonymous_health = true;
  // TLS: the server's certificate chain and key (PEM; both or neither),
  // and the CA that client certificates must chain to (mTLS: requested and
  // verified). Reloaded every tls.reload_interval seconds.
  std::string tls_cert_file;       // tls.cert_file
  std::string tls_key_file;        // tls.key_file
  std::string tls_client_ca_file;  // tls.client_ca_file
  absl::Duration tls_reload_interval = absl::Seconds(60);
  // Notes for the startup log: keys recognised but not used by this build,
  // variables that were ignored.
  std::vector<std::string> notes;
};

// Applies a YAML config document on top of `config`: a mapping of sections,
// each a mapping of keys to scalar values (policy.* keys take nested maps
// and lists, see server/policy_config.h). Any other shape (a non-string
// key, a section that is not a mapping, a non-scalar value, a key given
// twice), unknown keys and out-of-range values are kInvalidArgument naming
// the key (escaped: the message is valid UTF-8); malformed YAML is
// kInvalidArgument too. Never throws. Keys of the original service that
// this build does not use are accepted and noted.
absl::Status ApplyYaml(const std::string& yaml_text, ServerConfig& config);

// Reads and applies the YAML file at `path` (kNotFound if it does not
// exist, kInvalidArgument naming the file and key when it is wrong).
absl::Status ApplyYamlFile(const std::string& path, ServerConfig& config);

// Applies environment variables: REFLECTION_DEPTH, OPENAI_API_KEY,
// OPENAI_BASE_URL, GO_SERVICE_URL (selects executor.type http at that URL),
// POD_NAMESPACE (policy.own_namespace, unless the file set it).
// `getenv` is injectable for tests.
absl::Status ApplyEnvironment(
    const std::function<const char*(const char*)>& getenv,
    ServerConfig& config);

}  // namespace reflexion::server

// reflexion-server: wires the real adapters and serves reflexion.v1 over
// gRPC, with grpc.health.v1.Health and server reflection.

#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "server/app.h"
#include "server/config.h"

ABSL_FLAG(int, port, -1,
          "gRPC port; 0 picks a free port. Default: service.port from "
          "--config, else 50051");
ABSL_FLAG(std::string, host, "",
          "Address to listen on. Default: service.host, else 127.0.0.1 (a "
          "non-loopback address needs auth.tokens_file or tls.client_ca_file, "
          "and TLS, unless --insecure_listen)");
ABSL_FLAG(bool, insecure_listen, false,
          "Listen on a non-loopback --host without authentication (every "
          "caller is admin) or with bearer tokens but no TLS; also "
          "service.insecure_listen: true");
ABSL_FLAG(std::string, data_dir, "",
          "RocksDB data directory. Default: service.data_dir, else ./data");
ABSL_FLAG(std::string, config, "", "YAML config file (see README)");
ABSL_FLAG(bool, accept_data_loss, false,
          "Start even when recovery finds that writes acknowledged before "
          "are missing (a truncated or deleted WAL); without it the server "
          "refuses to start and says what was lost");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound port is written to this file once serving "
          "(for scripts using --port 0)");

namespace reflexion::server {
namespace {

int Fail(const absl::Status& status) {
  LOG(ERROR) << status;
  std::cerr << "reflexion-server: " << status.message() << "\n";
  return 1;
}

int Run() {
  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // Defaults < config file < environment < flags.
  ServerConfig config;
  if (std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    if (absl::Status s = ApplyYamlFile(path, config); !s.ok()) return Fail(s);
  }
  if (absl::Status s = ApplyEnvironment(&std::getenv, config); !s.ok()) {
    return Fail(s);
  }
  if (int port = absl::GetFlag(FLAGS_port); port >= 0) {
    if (port > 65535) {
      return Fail(absl::InvalidArgumentError("--port must be 0..65535"));
    }
    config.port = port;
  }
  if (std::string host = absl::GetFlag(FLAGS_host); !host.empty()) {
    config.host = host;
  }
  if (std::string dir = absl::GetFlag(FLAGS_data_dir); !dir.empty()) {
    config.data_dir = dir;
  }
  config.accept_data_loss = absl::GetFlag(FLAGS_accept_data_loss);
  if (absl::GetFlag(FLAGS_insecure_listen)) config.insecure_listen = true;
  for (const std::string& note : config.notes) LOG(WARNING) << note;

  App app(config);
  if (absl::Status s = app.Start(); !s.ok()) return Fail(s);
  for (const std::string& line : app.StartupReport()) LOG(INFO) << line;
  if (std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    std::ofstream out(path);
    out << app.port() << "\n";
  }

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  LOG(INFO) << "received " << strsignal(signal_number)
            << ", shutting down: no new incidents, draining workflows";
  // NOT_SERVING for service.shutdown_drain, then Resolve streams get
  // service.shutdown_grace; workflows already running always finish (their
  // episodes are stored).
  app.Stop();
  LOG(INFO) << "stopped cleanly";
  return 0;
}

}  // namespace
}  // namespace reflexion::server

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Resolves failing Kubernetes pods and learns from every attempt.\n"
      "Usage: reflexion-server [--port N] [--data_dir DIR] [--config FILE]");
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  return reflexion::server::Run();
}

#pragma once

// A real reflexion-server process for integration tests (kill -9, SIGTERM).
// REFLEXION_TEST_SERVER_BINARY runs them against another build (e.g. an
// older one, to show a defect); by default the one built with the tests.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace reflexion::server {

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
      const char* binary = std::getenv("REFLEXION_TEST_SERVER_BINARY");
      if (binary == nullptr) binary = REFLEXION_SERVER_BINARY;
      execl(binary, "reflexion-server", "--host", "127.0.0.1", "--port", "0",
            "--data_dir", (dir + "/data").c_str(), "--config", config.c_str(),
            "--port_file", port_file.c_str(), nullptr);
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
  // Sends SIGTERM and returns at once; Wait() collects the exit code.
  void SendTerm() { kill(pid_, SIGTERM); }
  int Wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
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

// A fresh directory under the system temp dir.
inline std::string MakeTempDir() {
  std::string tmpl =
      (std::filesystem::temp_directory_path() / "reflexion-process-test-XXXXXX")
          .string();
  return mkdtemp(tmpl.data());
}

}  // namespace reflexion::server

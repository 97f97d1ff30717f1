#pragma once

// A FakeHttpServer in a forked child process, for load drivers: the child
// has its own descriptor table (10,000 connections need both ends' fds)
// and its own RSS, so the parent's figures are its own. Fork before any
// thread exists in the parent.

#include <sys/types.h>

#include <string>

#include "tests/testing/fake_http_server.h"

namespace reflexion::testing {

class ForkedHttpServer {
 public:
  // Forks; the child serves `handler` until Finish. Exits the process when
  // the child cannot be started.
  explicit ForkedHttpServer(FakeHttpServer::Handler handler);
  ~ForkedHttpServer();  // Finish if not done
  ForkedHttpServer(const ForkedHttpServer&) = delete;
  ForkedHttpServer& operator=(const ForkedHttpServer&) = delete;

  int port() const { return port_; }
  std::string url() const;  // "http://127.0.0.1:PORT"

  // Stops the child and reports what it sampled every 20 ms.
  struct Report {
    long peak_connections = 0;
    long vm_hwm_kb = 0;
  };
  Report Finish();

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int control_ = -1;  // parent's write end: EOF stops the child
  int report_ = -1;   // parent's read end
  bool finished_ = false;
  Report last_;
};

// A field of /proc/self/status in kB or count ("VmHWM:", "Threads:"), or -1.
long ReadProcStatus(const char* key);

// Raises RLIMIT_NOFILE to its hard limit; returns the limit now in force.
long RaiseFdLimit();

}  // namespace reflexion::testing

#include "tests/testing/forked_http_server.h"

#include <sys/resource.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace reflexion::testing {

long ReadProcStatus(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, n, key) == 0) return std::stol(line.substr(n));
  }
  return -1;
}

long RaiseFdLimit() {
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  setrlimit(RLIMIT_NOFILE, &lim);
  getrlimit(RLIMIT_NOFILE, &lim);
  return static_cast<long>(lim.rlim_cur);
}

ForkedHttpServer::ForkedHttpServer(FakeHttpServer::Handler handler) {
  int to_child[2], from_child[2];
  if (pipe(to_child) != 0 || pipe(from_child) != 0) {
    perror("pipe");
    exit(1);
  }
  pid_ = fork();
  if (pid_ < 0) {
    perror("fork");
    exit(1);
  }
  if (pid_ == 0) {
    close(to_child[1]);
    close(from_child[0]);
    long peak = 0;
    {
      FakeHttpServer server(std::move(handler));
      int port = server.port();
      if (write(from_child[1], &port, sizeof(port)) != sizeof(port)) _exit(1);
      // Sample every 20 ms until the parent is done (EOF on the pipe).
      while (true) {
        fd_set set;
        FD_ZERO(&set);
        FD_SET(to_child[0], &set);
        timeval tv{0, 20'000};
        int r = select(to_child[0] + 1, &set, nullptr, nullptr, &tv);
        peak =
            std::max<long>(peak, static_cast<long>(server.connection_count()));
        if (r > 0) break;
      }
    }
    long out[2] = {peak, ReadProcStatus("VmHWM:")};
    if (write(from_child[1], out, sizeof(out)) != sizeof(out)) _exit(1);
    _exit(0);
  }
  close(to_child[0]);
  close(from_child[1]);
  control_ = to_child[1];
  report_ = from_child[0];
  if (read(report_, &port_, sizeof(port_)) != sizeof(port_)) {
    fprintf(stderr, "fake HTTP server child failed to start\n");
    exit(1);
  }
}

ForkedHttpServer::~ForkedHttpServer() { Finish(); }

std::string ForkedHttpServer::url() const {
  return absl::StrCat("http://127.0.0.1:", port_);
}

ForkedHttpServer::Report ForkedHttpServer::Finish() {
  if (finished_) return last_;
  finished_ = true;
  close(control_);
  long out[2] = {0, 0};
  if (read(report_, out, sizeof(out)) == sizeof(out)) {
    last_.peak_connections = out[0];
    last_.vm_hwm_kb = out[1];
  }
  close(report_);
  waitpid(pid_, nullptr, 0);
  return last_;
}

}  // namespace reflexion::testing

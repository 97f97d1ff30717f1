// CurlHttpClient under load: N requests in flight at once against a
// FakeHttpServer that answers each after --delay; then the breaker's
// fail-fast path. Prints wall time, peak concurrency (client in flight and
// server connections), peak RSS (VmHWM), the process's thread count during
// the run, and the Send -> done latency while the breaker is open.
//
//   upstream_bench [--requests 10000] [--delay 2s] [--fail_fast 100000]
//                  [--server_process=false]
//
// Each request holds a connection, so both ends need N descriptors. The
// fake server runs in a forked child by default: RLIMIT_NOFILE (raised to
// its hard limit here) then need not fit 2N in one process, and the
// client's RSS and threads are its own. The fork happens before any thread
// exists.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/clock.h"
#include "server/upstream/curl_http_client.h"
#include "tests/testing/fake_http_server.h"
#include "tests/testing/forked_http_server.h"

ABSL_FLAG(int, requests, 10000, "requests in flight at once");
ABSL_FLAG(absl::Duration, delay, absl::Seconds(2),
          "the fake server answers each request after this");
ABSL_FLAG(int, fail_fast, 100000, "Sends timed while the breaker is open");
ABSL_FLAG(bool, server_process, true,
          "run the fake server in a forked child (else in this process)");

namespace {

using reflexion::testing::FakeHttpReply;
using reflexion::testing::FakeHttpRequest;
using reflexion::testing::FakeHttpServer;
using reflexion::testing::ForkedHttpServer;
using reflexion::testing::RaiseFdLimit;
using reflexion::testing::ReadProcStatus;
using reflexion::upstream::CurlHttpClient;
using reflexion::upstream::HttpRequest;
using reflexion::upstream::HttpResponse;
using SteadyClock = std::chrono::steady_clock;

FakeHttpServer::Handler DelayedOk(absl::Duration delay) {
  return [delay](const FakeHttpRequest&) {
    FakeHttpReply r;
    r.body = "{\"ok\":true}";
    r.delay = delay;
    return r;
  };
}

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t i = static_cast<size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_requests);
  const absl::Duration delay = absl::GetFlag(FLAGS_delay);
  const bool in_child = absl::GetFlag(FLAGS_server_process);
  long fd_limit = RaiseFdLimit();
  long needed = in_child ? n + 64 : 2L * n + 64;
  if (fd_limit < needed) {
    fprintf(stderr,
            "RLIMIT_NOFILE is %ld (hard limit); %d requests need ~%ld "
            "descriptors in this process%s\n",
            fd_limit, n, needed, in_child ? "" : " (try --server_process)");
    return 1;
  }

  // Before any thread exists in this process.
  std::unique_ptr<ForkedHttpServer> child;
  std::unique_ptr<FakeHttpServer> local;
  std::string url;
  if (in_child) {
    child = std::make_unique<ForkedHttpServer>(DelayedOk(delay));
    url = child->url() + "/v1/slow";
  } else {
    local = std::make_unique<FakeHttpServer>(DelayedOk(delay));
    url = local->url() + "/v1/slow";
  }

  reflexion::core::RealClock clock;
  CurlHttpClient::Options options;
  options.clock = &clock;
  options.max_in_flight = static_cast<size_t>(n) + 16;
  absl::StatusOr<std::unique_ptr<CurlHttpClient>> made =
      CurlHttpClient::Create(std::move(options));
  if (!made.ok()) {
    fprintf(stderr, "%s\n", made.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<CurlHttpClient> client = *std::move(made);
  long rss_before_kb = ReadProcStatus("VmRSS:");

  // ------------------------------------------------------------ the load
  absl::Mutex mu;
  int in_flight = 0, peak_in_flight = 0, remaining = n, ok = 0;
  std::map<std::string, int> errors;  // code -> count
  std::string first_error;
  SteadyClock::time_point start = SteadyClock::now();
  SteadyClock::time_point first_done{}, last_done{};
  for (int i = 0; i < n; ++i) {
    HttpRequest r;
    r.url = url;
    r.max_attempts = 1;  // a failure shows, not a retry
    r.connect_timeout = absl::Seconds(20);
    r.timeout = delay + absl::Seconds(30);
    {
      absl::MutexLock lock(&mu);
      peak_in_flight = std::max(peak_in_flight, ++in_flight);
    }
    client->Send(std::move(r), [&](absl::StatusOr<HttpResponse> got) {
      absl::MutexLock lock(&mu);
      --in_flight;
      --remaining;
      last_done = SteadyClock::now();
      if (first_done == SteadyClock::time_point{}) first_done = last_done;
      if (got.ok()) {
        ++ok;
      } else {
        ++errors[absl::StatusCodeToString(got.status().code())];
        if (first_error.empty()) first_error = got.status().ToString();
      }
    });
  }
  long max_threads = ReadProcStatus("Threads:");
  {
    absl::MutexLock lock(&mu);
    absl::Condition all_done(
        +[](int* left) { return *left == 0; }, &remaining);
    while (!mu.AwaitWithTimeout(all_done, absl::Milliseconds(50))) {
      max_threads = std::max(max_threads, ReadProcStatus("Threads:"));
    }
  }
  double wall_s =
      std::chrono::duration<double>(SteadyClock::now() - start).count();
  long hwm_kb = ReadProcStatus("VmHWM:");

  // -------------------------------------------------- fail fast while open
  // An upstream that refuses connections: a port bound but not listening.
  int refuser = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(refuser, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(refuser, reinterpret_cast<sockaddr*>(&addr), &len);
  HttpRequest dead;
  dead.url = absl::StrCat("http://127.0.0.1:", ntohs(addr.sin_port), "/");
  dead.max_attempts = 1;
  for (int i = 0; i < 5; ++i) {  // the default breaker_failures
    absl::Mutex m;
    bool finished = false;
    client->Send(dead, [&](absl::StatusOr<HttpResponse>) {
      absl::MutexLock lock(&m);
      finished = true;
    });
    absl::MutexLock lock(&m);
    m.Await(absl::Condition(&finished));
  }
  const int calls = absl::GetFlag(FLAGS_fail_fast);
  std::vector<double> fail_fast_us;
  fail_fast_us.reserve(static_cast<size_t>(calls));
  int rejected = 0;
  for (int i = 0; i < calls; ++i) {
    SteadyClock::time_point t0 = SteadyClock::now();
    SteadyClock::time_point t1;
    bool unavailable = false;
    client->Send(dead, [&](absl::StatusOr<HttpResponse> got) {
      t1 = SteadyClock::now();
      unavailable = absl::IsUnavailable(got.status());
    });
    if (unavailable) ++rejected;
    fail_fast_us.push_back(
        std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  close(refuser);
  client.reset();

  long server_peak_connections = -1, server_hwm_kb = -1;
  if (in_child) {
    ForkedHttpServer::Report report = child->Finish();
    server_peak_connections = report.peak_connections;
    server_hwm_kb = report.vm_hwm_kb;
  }

  printf("upstream_bench: %d requests at once, server answers after %s (%s)\n",
         n, absl::FormatDuration(delay).c_str(),
         in_child ? "server in a child process" : "server in this process");
  printf("  wall time            %.2f s\n", wall_s);
  printf(
      "  completed ok         %d / %d (first after %.2f s, last after "
      "%.2f s)\n",
      ok, n, std::chrono::duration<double>(first_done - start).count(),
      std::chrono::duration<double>(last_done - start).count());
  for (const auto& [code, count] : errors) {
    printf("  failed %-13s %d (first: %s)\n", code.c_str(), count,
           first_error.c_str());
  }
  printf("  peak in flight       %d (client)", peak_in_flight);
  if (server_peak_connections >= 0) {
    printf(", %ld connections open at once (server)", server_peak_connections);
  }
  printf("\n");
  printf(
      "  peak RSS (VmHWM)     %.1f MiB client process (%.1f MiB before the "
      "load)",
      static_cast<double>(hwm_kb) / 1024.0,
      static_cast<double>(rss_before_kb) / 1024.0);
  if (server_hwm_kb >= 0) {
    printf(", %.1f MiB server process",
           static_cast<double>(server_hwm_kb) / 1024.0);
  }
  printf("\n");
  printf(
      "  threads              %ld (max sampled in the client process during "
      "the run)\n",
      max_threads);
  printf(
      "  fail-fast Send->done p50 %.2f us, p99 %.2f us over %d calls "
      "(%d kUnavailable)\n",
      Percentile(fail_fast_us, 0.50), Percentile(fail_fast_us, 0.99), calls,
      rejected);
  return ok == n && rejected == calls ? 0 : 2;
}

#pragma once

// A loopback HTTP/1.1 server for tests and benchmarks: plain sockets and
// epoll on one thread, so it holds thousands of connections (delayed and
// hanging answers included) without a thread each. It speaks enough
// HTTP/1.1 for libcurl: keep-alive, pipelining (answered in order),
// Content-Length request bodies (a chunked request body is refused with
// 501); every answer carries a Content-Length.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace reflexion::testing {

struct FakeHttpRequest {
  std::string method;
  std::string path;  // the request target, query included
  std::string body;
  // In arrival order; names lower-cased, values trimmed.
  std::vector<std::pair<std::string, std::string>> headers;
};

struct FakeHttpReply {
  int status = 200;
  // Sent as given, after the status line. A "content-length" or
  // "transfer-encoding" here replaces the computed Content-Length (the body
  // is then sent as given: chunk it yourself); "connection: close" closes
  // after the answer.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Answer after this (a timer in the server loop, no thread). Requests
  // pipelined behind it on the connection wait their turn.
  absl::Duration delay = absl::ZeroDuration();
  enum class Mode {
    kNormal,
    kHang,      // never answer (the connection stays open until the client
                // closes it, or Stop)
    kTruncate,  // announce a Content-Length larger than the body sent, then
                // close
    kClose,     // close without answering
  } mode = Mode::kNormal;
};

// Thread-safe. The handler runs on the server thread, one request at a
// time; it must not call Stop, Start or the destructor (they wait for that
// thread). Memory grows with the requests recorded (tests only).
class FakeHttpServer {
 public:
  using Handler = std::function<FakeHttpReply(const FakeHttpRequest&)>;

  // Listens on 127.0.0.1:`port` (0 = pick one) and starts the thread.
  // CHECK-fails when it cannot listen: test support, not production code.
  explicit FakeHttpServer(Handler handler, int port = 0);
  // Closes every connection and joins the thread.
  ~FakeHttpServer();
  FakeHttpServer(const FakeHttpServer&) = delete;
  FakeHttpServer& operator=(const FakeHttpServer&) = delete;

  int port() const { return port_; }
  std::string url() const;  // "http://127.0.0.1:PORT"

  // Closes the listener and every connection (pending and hanging answers
  // are dropped); then connecting is refused. Returns once done. Idempotent.
  void Stop();
  // Listens again on the same port after Stop. kFailedPrecondition when
  // already listening; kUnavailable when the port cannot be bound.
  absl::Status Start();

  // Every request received (complete, parsed), in order; and how many.
  std::vector<FakeHttpRequest> requests() const;
  size_t request_count() const;
  // Connections open now (for benchmarks).
  size_t connection_count() const;

  void SetHandler(Handler handler);

 private:
  struct Conn;
  struct Timer {
    int64_t due_ns;  // steady clock
    uint64_t conn_id;
    bool operator>(const Timer& o) const { return due_ns > o.due_ns; }
  };

  absl::Status Listen();  // before the thread starts, or on it
  void RunOnLoop(absl::AnyInvocable<void() &&> fn);
  void Loop();
  void CloseAll();
  void Accept();
  void OnEvent(uint64_t id, uint32_t events);
  void Process(Conn& c);  // may close (and free) `c`
  void Reply(Conn& c, const FakeHttpReply& reply, bool keep_alive);
  void Flush(Conn& c);  // may close (and free) `c`
  void Close(uint64_t id);
  void WatchOutput(Conn& c, bool on);
  int NextTimeoutMs() const;
  void FireTimers();

  const int requested_port_;
  int port_ = 0;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  int listen_fd_ = -1;  // loop thread (or before it starts)
  int spare_fd_ = -1;   // given up to refuse a connection at EMFILE

  mutable absl::Mutex mu_;
  Handler handler_ ABSL_GUARDED_BY(mu_);
  std::vector<FakeHttpRequest> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::AnyInvocable<void() &&>> commands_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  size_t connections_ ABSL_GUARDED_BY(mu_) = 0;

  // Loop thread only.
  absl::flat_hash_map<uint64_t, std::unique_ptr<Conn>> conns_;
  std::vector<Timer> timers_;  // a min-heap
  uint64_t next_id_ = 2;       // 0: listener, 1: wake-up

  std::thread thread_;
};

}  // namespace reflexion::testing

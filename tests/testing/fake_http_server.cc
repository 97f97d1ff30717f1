#include "tests/testing/fake_http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "glog/logging.h"

namespace reflexion::testing {
namespace {

constexpr uint64_t kListenerId = 0;
constexpr uint64_t kWakeId = 1;
// A request head or buffered input beyond these closes the connection.
constexpr size_t kMaxHead = 64 << 10;
constexpr size_t kMaxBuffered = 64 << 20;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

const char* Reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "Status";
  }
}

enum class Parse { kIncomplete, kDone, kBad, kUnsupported };

// One request from the front of `in` (consumed when complete).
Parse ParseRequest(std::string& in, FakeHttpRequest* req, bool* keep_alive) {
  size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos) {
    return in.size() > kMaxHead ? Parse::kBad : Parse::kIncomplete;
  }
  absl::string_view head(in.data(), end);
  std::vector<absl::string_view> lines = absl::StrSplit(head, "\r\n");
  std::vector<absl::string_view> start =
      absl::StrSplit(lines[0], ' ', absl::SkipEmpty());
  if (start.size() != 3 || !absl::StartsWith(start[2], "HTTP/1.")) {
    return Parse::kBad;
  }
  FakeHttpRequest r;
  r.method = std::string(start[0]);
  r.path = std::string(start[1]);
  bool http10 = start[2] == "HTTP/1.0";
  *keep_alive = !http10;
  size_t content_length = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    size_t colon = lines[i].find(':');
    if (colon == absl::string_view::npos) return Parse::kBad;
    std::string name(absl::StripAsciiWhitespace(lines[i].substr(0, colon)));
    absl::AsciiStrToLower(&name);
    std::string value(absl::StripAsciiWhitespace(lines[i].substr(colon + 1)));
    if (name == "content-length") {
      if (!absl::SimpleAtoi(value, &content_length) ||
          content_length > kMaxBuffered) {
        return Parse::kBad;
      }
    } else if (name == "transfer-encoding") {
      return Parse::kUnsupported;
    } else if (name == "connection") {
      std::string v = absl::AsciiStrToLower(value);
      if (v == "close") *keep_alive = false;
      if (v == "keep-alive") *keep_alive = true;
    }
    r.headers.emplace_back(std::move(name), std::move(value));
  }
  size_t total = end + 4 + content_length;
  if (in.size() < total) return Parse::kIncomplete;
  r.body = in.substr(end + 4, content_length);
  in.erase(0, total);
  *req = std::move(r);
  return Parse::kDone;
}

}  // namespace

struct FakeHttpServer::Conn {
  uint64_t id;
  int fd;
  std::string in;
  std::string out;
  size_t out_pos = 0;
  bool watching_output = false;
  // An answer is owed (delayed or hanging): later requests wait.
  bool busy = false;
  bool close_after_write = false;
  // The delayed answer, sent when its timer fires.
  FakeHttpReply pending;
  bool pending_keep_alive = true;
};

FakeHttpServer::FakeHttpServer(Handler handler, int port)
    : requested_port_(port), handler_(std::move(handler)) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  PCHECK(epoll_fd_ >= 0) << "epoll_create1";
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  PCHECK(wake_fd_ >= 0) << "eventfd";
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeId;
  PCHECK(epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) == 0);
  spare_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
  absl::Status s = Listen();
  CHECK(s.ok()) << s;
  thread_ = std::thread([this] { Loop(); });
}

FakeHttpServer::~FakeHttpServer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;
  thread_.join();
  CloseAll();
  close(wake_fd_);
  close(epoll_fd_);
  if (spare_fd_ >= 0) close(spare_fd_);
}

std::string FakeHttpServer::url() const {
  return absl::StrCat("http://127.0.0.1:", port_);
}

absl::Status FakeHttpServer::Listen() {
  if (listen_fd_ >= 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("already listening on ", port_));
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("socket: ", strerror(errno)));
  }
  int one = 1;
  // Our own closed connections linger in TIME_WAIT: Start() after Stop()
  // must still bind the same port.
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port =
      htons(static_cast<uint16_t>(port_ != 0 ? port_ : requested_port_));
  // The kernel caps the backlog at net.core.somaxconn.
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(fd, 65535) != 0) {
    absl::Status s = absl::UnavailableError(absl::StrCat(
        "bind/listen 127.0.0.1:", ntohs(addr.sin_port), ": ", strerror(errno)));
    close(fd);
    return s;
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenerId;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    absl::Status s =
        absl::UnavailableError(absl::StrCat("epoll_ctl: ", strerror(errno)));
    close(fd);
    return s;
  }
  listen_fd_ = fd;
  return absl::OkStatus();
}

void FakeHttpServer::RunOnLoop(absl::AnyInvocable<void() &&> fn) {
  CHECK(std::this_thread::get_id() != thread_.get_id())
      << "FakeHttpServer: Stop/Start called from the handler";
  absl::Notification done;
  {
    absl::MutexLock lock(&mu_);
    commands_.push_back([&fn, &done]() mutable {
      std::move(fn)();
      done.Notify();
    });
  }
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;
  done.WaitForNotification();
}

void FakeHttpServer::Stop() {
  RunOnLoop([this] { CloseAll(); });
}

absl::Status FakeHttpServer::Start() {
  absl::Status s;
  RunOnLoop([this, &s] { s = Listen(); });
  return s;
}

std::vector<FakeHttpRequest> FakeHttpServer::requests() const {
  absl::MutexLock lock(&mu_);
  return requests_;
}

size_t FakeHttpServer::request_count() const {
  absl::MutexLock lock(&mu_);
  return requests_.size();
}

size_t FakeHttpServer::connection_count() const {
  absl::MutexLock lock(&mu_);
  return connections_;
}

void FakeHttpServer::SetHandler(Handler handler) {
  absl::MutexLock lock(&mu_);
  handler_ = std::move(handler);
}

void FakeHttpServer::CloseAll() {
  if (listen_fd_ >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    close(listen_fd_);
    listen_fd_ = -1;
  }
  for (auto& [id, c] : conns_) close(c->fd);
  conns_.clear();
  timers_.clear();
  absl::MutexLock lock(&mu_);
  connections_ = 0;
}

void FakeHttpServer::Close(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  // close() drops the epoll registration; timers for it find nothing.
  close(it->second->fd);
  conns_.erase(it);
  absl::MutexLock lock(&mu_);
  --connections_;
}

void FakeHttpServer::Accept() {
  while (listen_fd_ >= 0) {
    int fd =
        accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if ((errno == EMFILE || errno == ENFILE) && spare_fd_ >= 0) {
        // Out of descriptors: refuse one connection rather than spin on a
        // listener that stays readable.
        LOG_FIRST_N(WARNING, 1) << "FakeHttpServer: out of file descriptors";
        close(spare_fd_);
        int victim = accept(listen_fd_, nullptr, nullptr);
        if (victim >= 0) close(victim);
        spare_fd_ = open("/dev/null", O_RDONLY | O_CLOEXEC);
        continue;
      }
      return;  // EAGAIN, or nothing to be done
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_unique<Conn>();
    c->id = next_id_++;
    c->fd = fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = c->id;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      close(fd);
      continue;
    }
    conns_.emplace(c->id, std::move(c));
    absl::MutexLock lock(&mu_);
    ++connections_;
  }
}

void FakeHttpServer::WatchOutput(Conn& c, bool on) {
  if (c.watching_output == on) return;
  c.watching_output = on;
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
  ev.data.u64 = c.id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, c.fd, &ev);
}

void FakeHttpServer::OnEvent(uint64_t id, uint32_t events) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (events & EPOLLIN) {
    char buf[16 << 10];
    while (true) {
      ssize_t n = recv(c.fd, buf, sizeof(buf), 0);
      if (n > 0) {
        c.in.append(buf, static_cast<size_t>(n));
        if (c.in.size() > kMaxBuffered) {
          Close(id);
          return;
        }
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0 && errno == EINTR) continue;
      // The peer closed (or reset): an answer still owed has nobody to go to.
      Close(id);
      return;
    }
    Process(c);
    return;  // Process flushes (and may have closed `c`)
  }
  if (events & (EPOLLERR | EPOLLHUP)) {
    Close(id);
    return;
  }
  if (events & EPOLLOUT) Flush(c);
}

void FakeHttpServer::Process(Conn& c) {
  while (!c.busy && !c.close_after_write) {
    FakeHttpRequest req;
    bool keep_alive = true;
    Parse p = ParseRequest(c.in, &req, &keep_alive);
    if (p == Parse::kIncomplete) break;
    if (p != Parse::kDone) {
      FakeHttpReply bad;
      bad.status = p == Parse::kBad ? 400 : 501;
      Reply(c, bad, /*keep_alive=*/false);
      break;
    }
    Handler handler;
    {
      absl::MutexLock lock(&mu_);
      requests_.push_back(req);
      handler = handler_;
    }
    FakeHttpReply reply = handler ? handler(req) : FakeHttpReply{};
    switch (reply.mode) {
      case FakeHttpReply::Mode::kClose:
        Close(c.id);
        return;
      case FakeHttpReply::Mode::kHang:
        c.busy = true;
        break;
      case FakeHttpReply::Mode::kNormal:
      case FakeHttpReply::Mode::kTruncate:
        if (reply.delay > absl::ZeroDuration()) {
          c.busy = true;
          c.pending = std::move(reply);
          c.pending_keep_alive = keep_alive;
          timers_.push_back(
              Timer{NowNs() + absl::ToInt64Nanoseconds(c.pending.delay), c.id});
          std::push_heap(timers_.begin(), timers_.end(), std::greater<>());
        } else {
          Reply(c, reply, keep_alive);
        }
        break;
    }
  }
  Flush(c);
}

void FakeHttpServer::Reply(Conn& c, const FakeHttpReply& reply,
                           bool keep_alive) {
  bool truncate = reply.mode == FakeHttpReply::Mode::kTruncate;
  bool has_length = false;
  std::string head = absl::StrCat("HTTP/1.1 ", reply.status, " ",
                                  Reason(reply.status), "\r\n");
  for (const auto& [name, value] : reply.headers) {
    std::string lower = absl::AsciiStrToLower(name);
    if (lower == "content-length" || lower == "transfer-encoding") {
      has_length = true;
    }
    if (lower == "connection" && absl::AsciiStrToLower(value) == "close") {
      keep_alive = false;
    }
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  }
  if (!has_length) {
    // kTruncate announces more than it sends, then closes.
    absl::StrAppend(&head, "Content-Length: ",
                    reply.body.size() + (truncate ? 100 : 0), "\r\n");
  }
  if (truncate) keep_alive = false;
  absl::StrAppend(&head, "Connection: ", keep_alive ? "keep-alive" : "close",
                  "\r\n\r\n");
  c.out.append(head);
  c.out.append(reply.body);
  if (!keep_alive) c.close_after_write = true;
}

void FakeHttpServer::Flush(Conn& c) {
  while (c.out_pos < c.out.size()) {
    ssize_t n = send(c.fd, c.out.data() + c.out_pos, c.out.size() - c.out_pos,
                     MSG_NOSIGNAL);
    if (n > 0) {
      c.out_pos += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      WatchOutput(c, true);
      return;
    }
    Close(c.id);  // EPIPE, ECONNRESET: the client went away
    return;
  }
  c.out.clear();
  c.out_pos = 0;
  WatchOutput(c, false);
  if (c.close_after_write) {
    // FIN after the last byte, so the client reads all of it.
    shutdown(c.fd, SHUT_WR);
    Close(c.id);
  }
}

int FakeHttpServer::NextTimeoutMs() const {
  if (timers_.empty()) return -1;
  int64_t wait = timers_.front().due_ns - NowNs();
  if (wait <= 0) return 0;
  return static_cast<int>(
      std::min<int64_t>((wait + 999'999) / 1'000'000, INT_MAX));
}

void FakeHttpServer::FireTimers() {
  int64_t now = NowNs();
  while (!timers_.empty() && timers_.front().due_ns <= now) {
    uint64_t id = timers_.front().conn_id;
    std::pop_heap(timers_.begin(), timers_.end(), std::greater<>());
    timers_.pop_back();
    auto it = conns_.find(id);
    if (it == conns_.end() || !it->second->busy) continue;
    Conn& c = *it->second;
    c.busy = false;
    FakeHttpReply reply = std::move(c.pending);
    Reply(c, reply, c.pending_keep_alive);
    Process(c);  // pipelined requests, then the flush
  }
}

void FakeHttpServer::Loop() {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  while (true) {
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, NextTimeoutMs());
    if (n < 0 && errno != EINTR) PLOG(FATAL) << "epoll_wait";
    for (int i = 0; i < n; ++i) {
      uint64_t id = events[i].data.u64;
      if (id == kWakeId) {
        uint64_t count;
        ssize_t r = read(wake_fd_, &count, sizeof(count));
        (void)r;
        std::vector<absl::AnyInvocable<void() &&>> commands;
        bool stopping;
        {
          absl::MutexLock lock(&mu_);
          commands.swap(commands_);
          stopping = stopping_;
        }
        for (auto& command : commands) std::move(command)();
        if (stopping) return;
      } else if (id == kListenerId) {
        Accept();
      } else {
        OnEvent(id, events[i].events);
      }
    }
    FireTimers();
  }
}

}  // namespace reflexion::testing

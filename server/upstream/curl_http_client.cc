#include "server/upstream/curl_http_client.h"

#include <curl/curl.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <queue>
#include <random>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"

namespace reflexion::upstream {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Untrusted bytes echoed in a status message: at most this much of an
// error body, of curl's error text and of a URL.
constexpr size_t kSnippetBytes = 200;
constexpr size_t kMaxUrlBytes = 2048;
// Response headers kept per attempt, in bytes; more fails the attempt
// (libcurl 7.88 bounds one header line, not their number).
constexpr size_t kMaxHeaderBytes = 256 << 10;

std::string Attempts(int n) {
  return absl::StrCat(n, n == 1 ? " attempt" : " attempts");
}

absl::StatusOr<std::string> UrlPart(CURLU* u, CURLUPart part,
                                    unsigned flags = 0) {
  char* p = nullptr;
  CURLUcode rc = curl_url_get(u, part, &p, flags);
  if (rc != CURLUE_OK) {
    return absl::InvalidArgumentError(curl_url_strerror(rc));
  }
  std::string s(p);
  curl_free(p);
  return s;
}

struct ParsedUrl {
  std::string upstream;  // scheme://host:port, the breaker's key
  std::string display;   // the URL without user info, for messages
};

// The URL must be absolute http(s); the user info (a password, perhaps)
// never reaches a message.
absl::StatusOr<ParsedUrl> ParseUrl(const std::string& url) {
  std::string shown = core::ToValidUtf8Clipped(url, kMaxUrlBytes);
  if (url.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed URL \"", shown, "\": it holds a NUL byte"));
  }
  CURLU* u = curl_url();
  if (u == nullptr) return absl::ResourceExhaustedError("out of memory");
  absl::Cleanup cleanup = [u] { curl_url_cleanup(u); };
  CURLUcode rc = curl_url_set(u, CURLUPART_URL, url.c_str(), 0);
  if (rc != CURLUE_OK) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed URL \"", shown, "\": ", curl_url_strerror(rc)));
  }
  absl::StatusOr<std::string> scheme = UrlPart(u, CURLUPART_SCHEME);
  absl::StatusOr<std::string> host = UrlPart(u, CURLUPART_HOST);
  absl::StatusOr<std::string> port =
      UrlPart(u, CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (!scheme.ok() || !host.ok() || !port.ok() || host->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed URL \"", shown, "\": no scheme, host or port"));
  }
  if (*scheme != "http" && *scheme != "https") {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed URL \"", shown, "\": scheme ", *scheme, " (http or https)"));
  }
  ParsedUrl parsed;
  parsed.upstream = core::ToValidUtf8Clipped(
      absl::StrCat(*scheme, "://", *host, ":", *port), kMaxUrlBytes);
  curl_url_set(u, CURLUPART_USER, nullptr, 0);
  curl_url_set(u, CURLUPART_PASSWORD, nullptr, 0);
  absl::StatusOr<std::string> display = UrlPart(u, CURLUPART_URL);
  parsed.display =
      core::ToValidUtf8Clipped(display.ok() ? *display : shown, kMaxUrlBytes);
  return parsed;
}

absl::Status ValidateRequest(const HttpRequest& r, const std::string& url) {
  if (r.method != "GET" && r.method != "POST") {
    return absl::InvalidArgumentError(
        absl::StrCat("method \"", core::ToValidUtf8Clipped(r.method, 16),
                     "\" for ", url, " (GET or POST)"));
  }
  if (r.connect_timeout <= absl::ZeroDuration() ||
      r.timeout <= absl::ZeroDuration() || r.max_attempts < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("request to ", url,
                     ": timeouts must be positive and max_attempts >= 1"));
  }
  for (const auto& [name, value] : r.headers) {
    // A CR or LF would let a value smuggle another header line. The value
    // itself is never echoed (it may be a token).
    bool bad_name = name.empty() ||
                    name.find_first_of(":\r\n \t") != std::string::npos ||
                    name.find('\0') != std::string::npos;
    bool bad_value = value.find_first_of("\r\n") != std::string::npos ||
                     value.find('\0') != std::string::npos;
    if (bad_name || bad_value) {
      return absl::InvalidArgumentError(
          absl::StrCat("request to ", url, ": malformed header ",
                       bad_name ? "name" : "value for ",
                       bad_name ? "" : core::ToValidUtf8Clipped(name, 64)));
    }
  }
  return absl::OkStatus();
}

// Retry-After: delta-seconds or an HTTP date (any form curl_getdate
// parses: IMF-fixdate, RFC 850, asctime), relative to `now`.
absl::Duration ParseRetryAfter(absl::string_view value, absl::Time now) {
  value = absl::StripAsciiWhitespace(value);
  if (value.empty()) return absl::ZeroDuration();
  if (std::all_of(value.begin(), value.end(), absl::ascii_isdigit)) {
    int64_t seconds = 0;
    // Overlong numbers saturate; max_backoff caps the wait anyway.
    if (value.size() > 9 || !absl::SimpleAtoi(value, &seconds)) {
      seconds = 999'999'999;
    }
    return absl::Seconds(seconds);
  }
  std::string date(value);
  time_t t = curl_getdate(date.c_str(), nullptr);
  if (t == -1) return absl::ZeroDuration();
  return std::max(absl::ZeroDuration(), absl::FromTimeT(t) - now);
}

// One attempt's result, as the retry loop and the breaker see it.
struct AttemptResult {
  absl::Status error;             // OK for a 2xx
  bool retryable = false;         // worth another attempt, if any remain
  bool upstream_failure = false;  // counts against the breaker
};

// The HTTP status → absl mapping documented in http_client.h.
AttemptResult FromHttpStatus(long status, const std::string& url, int attempts,
                             absl::string_view body) {
  AttemptResult r;
  if (status >= 200 && status < 300) return r;
  std::string msg = absl::StrCat(
      "HTTP ", status, " from ", url, " (", Attempts(attempts), ")",
      body.empty() ? "" : ": ", core::ToValidUtf8Clipped(body, kSnippetBytes));
  if (status == 400) {
    r.error = absl::InvalidArgumentError(msg);
  } else if (status == 401) {
    r.error = absl::UnauthenticatedError(msg);
  } else if (status == 403) {
    r.error = absl::PermissionDeniedError(msg);
  } else if (status == 404) {
    r.error = absl::NotFoundError(msg);
  } else if (status == 429) {
    r.error = absl::ResourceExhaustedError(msg);
    r.retryable = r.upstream_failure = true;
  } else if (status >= 500) {
    r.error = absl::UnavailableError(msg);
    r.retryable = r.upstream_failure = true;
  } else {
    // Any other 4xx, and 1xx/3xx (redirects are not followed).
    r.error = absl::FailedPreconditionError(msg);
  }
  return r;
}

// The curl error → absl mapping documented in http_client.h. `connected`:
// the attempt got past connecting (TCP and TLS).
AttemptResult FromCurlError(CURLcode rc, const std::string& url, int attempts,
                            const char* errbuf, bool connected,
                            const HttpRequest& request) {
  std::string detail = core::ToValidUtf8Clipped(
      errbuf[0] != '\0' ? errbuf : curl_easy_strerror(rc), kSnippetBytes);
  auto msg = [&](absl::string_view what, absl::string_view prep) {
    return absl::StrCat(what, " ", prep, " ", url, " (", Attempts(attempts),
                        "): ", detail);
  };
  AttemptResult r;
  r.retryable = r.upstream_failure = true;
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      r.error =
          connected
              ? absl::DeadlineExceededError(
                    msg(absl::StrCat("no complete answer within ",
                                     absl::FormatDuration(request.timeout)),
                        "from"))
              : absl::DeadlineExceededError(msg(
                    absl::StrCat("no connection within ",
                                 absl::FormatDuration(request.connect_timeout)),
                    "to"));
      return r;
    case CURLE_COULDNT_CONNECT:
      r.error = absl::UnavailableError(msg("cannot connect", "to"));
      return r;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
      r.error = absl::UnavailableError(msg("cannot resolve the host", "of"));
      return r;
    case CURLE_PARTIAL_FILE:
      r.error = absl::UnavailableError(msg("truncated response", "from"));
      return r;
    case CURLE_GOT_NOTHING:
      r.error = absl::UnavailableError(msg("no response", "from"));
      return r;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
      r.error = absl::UnavailableError(msg("connection failed", "with"));
      return r;
    default:
      break;
  }
  r.retryable = r.upstream_failure = false;
  switch (rc) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      r.error = absl::InvalidArgumentError(msg("malformed request", "to"));
      break;
    case CURLE_OUT_OF_MEMORY:
      r.error = absl::ResourceExhaustedError(msg("out of memory", "for"));
      break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
      // A configuration problem: repeating it will not help.
      r.error = absl::UnavailableError(msg("TLS verification failed", "for"));
      break;
    default:
      r.error = absl::UnavailableError(msg("request failed", "to"));
      break;
  }
  return r;
}

}  // namespace

class CurlHttpClient::Impl {
 public:
  explicit Impl(Options options)
      : options_(std::move(options)), rng_(options_.rng_seed) {}
  ~Impl();

  absl::Status Init();
  void Send(HttpRequest request, core::Callback<HttpResponse> done);
  std::vector<UpstreamStats> Upstreams() const;

 private:
  // A breaker and its counters. Fields are guarded by mu_.
  struct Upstream {
    UpstreamStats stats;
    absl::Time open_until;  // when open: the earliest probe
    bool probe_in_flight = false;
  };

  // One request, from acceptance to `done`. Owned by queue_ until the loop
  // takes it, then by calls_; its curl parts are touched on the loop only.
  struct Call {
    HttpRequest request;
    core::Callback<HttpResponse> done;
    std::string url;  // for messages
    std::string upstream_name;
    Upstream* upstream = nullptr;  // stable: one in use is never forgotten
    bool probe = false;            // the next attempt is the half-open probe
    int attempts = 0;              // started so far
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string body;
    std::vector<std::pair<std::string, std::string>> response_headers;
    size_t header_bytes = 0;
    bool too_large = false;
    bool headers_too_large = false;
    absl::Status last_error;
    char errbuf[CURL_ERROR_SIZE] = {};
  };

  struct RetryTimer {
    SteadyClock::time_point due;
    uint64_t seq;
    Call* call;
    bool operator>(const RetryTimer& o) const {
      return due != o.due ? due > o.due : seq > o.seq;
    }
  };

  // Breaker, under mu_.
  Upstream* FindOrAddUpstreamLocked(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool AdmitLocked(Upstream& u, absl::Time now, bool* probe, std::string* why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RecordAttemptLocked(Upstream& u, bool failed, bool probe, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OpenLocked(Upstream& u, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The loop thread.
  void Loop();
  void Wake();
  int NextTimeoutMs() const;
  void StartAttempt(Call* c);
  void DrainCompleted();
  void OnAttemptDone(Call* c, CURLcode rc);
  void ScheduleRetry(Call* c, const AttemptResult& result);
  void FireRetries();
  void Finish(Call* c, absl::StatusOr<HttpResponse> result);
  void FailEverything();

  // libcurl callbacks (loop thread, inside curl_multi_socket_action).
  static int OnSocket(CURL* easy, curl_socket_t s, int what, void* userp,
                      void* socketp);
  static int OnTimer(CURLM* multi, long timeout_ms, void* userp);
  static size_t OnBody(char* data, size_t size, size_t n, void* userp);
  static size_t OnHeader(char* data, size_t size, size_t n, void* userp);

  const Options options_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Submitted, not yet taken by the loop.
  std::deque<std::unique_ptr<Call>> queue_ ABSL_GUARDED_BY(mu_);
  // An eventfd write is on its way: Send need not write again.
  bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, std::unique_ptr<Upstream>> upstreams_
      ABSL_GUARDED_BY(mu_);

  // Loop thread only.
  CURLM* multi_ = nullptr;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::mt19937_64 rng_;
  absl::flat_hash_map<Call*, std::unique_ptr<Call>> calls_;
  std::priority_queue<RetryTimer, std::vector<RetryTimer>,
                      std::greater<RetryTimer>>
      retries_;
  uint64_t retry_seq_ = 0;
  // Attempts in libcurl's hands (added to multi_, not yet done).
  long transferring_ = 0;
  std::optional<SteadyClock::time_point> curl_deadline_;

  std::thread thread_;
};

absl::Status CurlHttpClient::Impl::Init() {
  // Thread-safe in this libcurl (built "threadsafe", 7.84+); never undone:
  // other clients may still be alive.
  static const CURLcode global = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init: ", curl_easy_strerror(global)));
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    return absl::InternalError(
        absl::StrCat("epoll/eventfd: ", std::strerror(errno)));
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) {
    return absl::InternalError(
        absl::StrCat("epoll_ctl: ", std::strerror(errno)));
  }
  multi_ = curl_multi_init();
  if (multi_ == nullptr) return absl::InternalError("curl_multi_init failed");
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &Impl::OnSocket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &Impl::OnTimer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
  // Our own policy bounds the idle connections (StartAttempt); libcurl's
  // cache bound is set above anything reachable, because reaching it costs
  // a scan of every connection each time one is returned.
  curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(options_.max_in_flight) +
                        options_.max_idle_connections);
  curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS,
                    options_.max_host_connections);
  curl_multi_setopt(multi_, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                    options_.max_total_connections);
  thread_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

CurlHttpClient::Impl::~Impl() {
  if (thread_.joinable()) {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    Wake();
    thread_.join();
  }
  if (multi_ != nullptr) curl_multi_cleanup(multi_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

void CurlHttpClient::Impl::Wake() {
  uint64_t one = 1;
  // Fails only when the counter is saturated, i.e. a wake-up is pending.
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;
}

CurlHttpClient::Impl::Upstream* CurlHttpClient::Impl::FindOrAddUpstreamLocked(
    const std::string& name) {
  auto it = upstreams_.find(name);
  if (it != upstreams_.end()) return it->second.get();
  if (upstreams_.size() >= options_.max_upstreams) {
    // O(upstreams), only when a new one arrives at the bound.
    auto idle = std::find_if(upstreams_.begin(), upstreams_.end(), [](auto& e) {
      return e.second->stats.in_flight == 0 &&
             e.second->stats.state == UpstreamStats::State::kClosed;
    });
    if (idle == upstreams_.end()) return nullptr;
    upstreams_.erase(idle);
  }
  auto u = std::make_unique<Upstream>();
  u->stats.upstream = name;
  Upstream* raw = u.get();
  upstreams_.emplace(name, std::move(u));
  return raw;
}

bool CurlHttpClient::Impl::AdmitLocked(Upstream& u, absl::Time now, bool* probe,
                                       std::string* why) {
  switch (u.stats.state) {
    case UpstreamStats::State::kClosed:
      return true;
    case UpstreamStats::State::kOpen:
      if (now < u.open_until) {
        *why = absl::StrCat("circuit open for ", u.stats.upstream, ": ",
                            u.stats.consecutive_failures,
                            " consecutive failures, next probe in ",
                            absl::FormatDuration(absl::Ceil(
                                u.open_until - now, absl::Milliseconds(1))));
        return false;
      }
      u.stats.state = UpstreamStats::State::kHalfOpen;
      [[fallthrough]];
    case UpstreamStats::State::kHalfOpen:
      if (u.probe_in_flight) {
        *why = absl::StrCat("circuit open for ", u.stats.upstream, ": ",
                            u.stats.consecutive_failures,
                            " consecutive failures, a probe is in flight");
        return false;
      }
      u.probe_in_flight = true;
      *probe = true;
      return true;
  }
  return false;
}

void CurlHttpClient::Impl::OpenLocked(Upstream& u, absl::Time now) {
  u.stats.state = UpstreamStats::State::kOpen;
  u.open_until = now + options_.breaker_open_for;
  ++u.stats.opened;
  LOG(WARNING) << "circuit open for " << u.stats.upstream << ": "
               << u.stats.consecutive_failures
               << " consecutive failures, next probe in "
               << absl::FormatDuration(options_.breaker_open_for);
}

void CurlHttpClient::Impl::RecordAttemptLocked(Upstream& u, bool failed,
                                               bool probe, absl::Time now) {
  if (failed) {
    ++u.stats.failures;
    ++u.stats.consecutive_failures;
  }
  if (probe) {
    u.probe_in_flight = false;
    if (failed) {
      OpenLocked(u, now);
    } else {
      u.stats.state = UpstreamStats::State::kClosed;
      u.stats.consecutive_failures = 0;
      LOG(INFO) << "circuit closed for " << u.stats.upstream
                << ": the probe succeeded";
    }
    return;
  }
  // Only the probe moves a breaker that is not closed: answers to attempts
  // started before it opened say little about the upstream now.
  if (u.stats.state != UpstreamStats::State::kClosed) return;
  if (!failed) {
    u.stats.consecutive_failures = 0;
  } else if (u.stats.consecutive_failures >= options_.breaker_failures) {
    OpenLocked(u, now);
  }
}

void CurlHttpClient::Impl::Send(HttpRequest request,
                                core::Callback<HttpResponse> done) {
  absl::StatusOr<ParsedUrl> parsed = ParseUrl(request.url);
  if (!parsed.ok()) {
    std::move(done)(parsed.status());
    return;
  }
  if (absl::Status s = ValidateRequest(request, parsed->display); !s.ok()) {
    std::move(done)(s);
    return;
  }
  // Built before taking the lock, which Sends on every thread share.
  auto call = std::make_unique<Call>();
  call->request = std::move(request);
  call->done = std::move(done);
  call->url = std::move(parsed->display);
  call->upstream_name = std::move(parsed->upstream);
  absl::Time now = options_.clock->Now();
  absl::Status refused;
  bool wake = false;
  Call* raw = call.get();
  {
    absl::MutexLock lock(&mu_);
    Upstream* u = nullptr;
    std::string why;
    bool probe = false;
    if (stopping_) {
      refused = absl::UnavailableError(absl::StrCat(
          "client shutting down: request to ", raw->url, " not sent"));
    } else if (in_flight_ >= options_.max_in_flight) {
      refused = absl::ResourceExhaustedError(
          absl::StrCat("request to ", raw->url, " refused: ", in_flight_,
                       " requests in flight (max_in_flight)"));
    } else if ((u = FindOrAddUpstreamLocked(raw->upstream_name)) == nullptr) {
      refused = absl::ResourceExhaustedError(absl::StrCat(
          "request to ", raw->url, " refused: ", options_.max_upstreams,
          " upstreams busy (max_upstreams)"));
    } else {
      ++u->stats.requests;
      if (!AdmitLocked(*u, now, &probe, &why)) {
        ++u->stats.rejected;
        refused = absl::UnavailableError(why);
      } else {
        call->upstream = u;
        call->probe = probe;
        ++in_flight_;
        ++u->stats.in_flight;
        queue_.push_back(std::move(call));
        wake = !wake_pending_;
        wake_pending_ = true;
      }
    }
  }
  if (!refused.ok()) {
    std::move(raw->done)(std::move(refused));
    return;
  }
  if (wake) Wake();
}

std::vector<UpstreamStats> CurlHttpClient::Impl::Upstreams() const {
  absl::Time now = options_.clock->Now();
  std::vector<UpstreamStats> out;
  {
    absl::MutexLock lock(&mu_);
    out.reserve(upstreams_.size());
    for (const auto& [name, u] : upstreams_) {
      out.push_back(u->stats);
      // Open with its time served: the next Send is the probe.
      if (u->stats.state == UpstreamStats::State::kOpen &&
          now >= u->open_until) {
        out.back().state = UpstreamStats::State::kHalfOpen;
      }
    }
  }
  std::sort(out.begin(), out.end(),
            [](const UpstreamStats& a, const UpstreamStats& b) {
              return a.upstream < b.upstream;
            });
  return out;
}

int CurlHttpClient::Impl::OnSocket(CURL* easy, curl_socket_t s, int what,
                                   void* userp, void* socketp) {
  auto* self = static_cast<Impl*>(userp);
  if (what == CURL_POLL_REMOVE) {
    // The socket may already be closed; then the kernel dropped it.
    epoll_ctl(self->epoll_fd_, EPOLL_CTL_DEL, s, nullptr);
    return 0;
  }
  epoll_event ev{};
  ev.data.fd = s;
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0u) |
              (what & CURL_POLL_OUT ? EPOLLOUT : 0u);
  // socketp marks a socket already registered (one syscall per change).
  int op = socketp != nullptr ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (epoll_ctl(self->epoll_fd_, op, s, &ev) != 0) {
    // A reused descriptor number can disagree with our mark.
    op = errno == EEXIST ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(self->epoll_fd_, op, s, &ev) != 0) {
      PLOG(ERROR) << "epoll_ctl on a curl socket";
      return -1;
    }
  }
  if (socketp == nullptr) {
    curl_multi_assign(self->multi_, s, reinterpret_cast<void*>(1));
  }
  return 0;
}

int CurlHttpClient::Impl::OnTimer(CURLM* multi, long timeout_ms, void* userp) {
  auto* self = static_cast<Impl*>(userp);
  if (timeout_ms < 0) {
    self->curl_deadline_.reset();
  } else {
    self->curl_deadline_ =
        SteadyClock::now() + std::chrono::milliseconds(timeout_ms);
  }
  return 0;
}

size_t CurlHttpClient::Impl::OnBody(char* data, size_t size, size_t n,
                                    void* userp) {
  auto* c = static_cast<Call*>(userp);
  size_t len = size * n;
  // Abort as soon as the cap is passed: a short count fails the transfer
  // (CURLE_WRITE_ERROR) and nothing more is read or kept.
  if (len > c->request.max_response_bytes - c->body.size()) {
    c->too_large = true;
    return 0;
  }
  c->body.append(data, len);
  return len;
}

size_t CurlHttpClient::Impl::OnHeader(char* data, size_t size, size_t n,
                                      void* userp) {
  auto* c = static_cast<Call*>(userp);
  size_t len = size * n;
  absl::string_view line(data, len);
  // A status line starts a new response (after a 1xx): forget the last.
  if (absl::StartsWith(line, "HTTP/")) {
    c->response_headers.clear();
    return len;
  }
  c->header_bytes += len;
  if (c->header_bytes > kMaxHeaderBytes) {
    c->headers_too_large = true;
    return 0;  // fails the transfer (CURLE_WRITE_ERROR)
  }
  size_t colon = line.find(':');
  if (colon == absl::string_view::npos) return len;
  std::string name(absl::StripAsciiWhitespace(line.substr(0, colon)));
  absl::AsciiStrToLower(&name);
  c->response_headers.emplace_back(
      std::move(name),
      std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
  return len;
}

void CurlHttpClient::Impl::StartAttempt(Call* c) {
  ++c->attempts;
  c->body.clear();
  c->response_headers.clear();
  c->header_bytes = 0;
  c->too_large = false;
  c->headers_too_large = false;
  c->errbuf[0] = '\0';
  const HttpRequest& r = c->request;
  if (c->easy == nullptr) {
    c->easy = curl_easy_init();
    if (c->easy == nullptr) {
      Finish(c, absl::ResourceExhaustedError(
                    absl::StrCat("request to ", c->url, ": out of memory")));
      return;
    }
    for (const auto& [name, value] : r.headers) {
      // "Name;" is curl's spelling of a header with an empty value.
      std::string line = value.empty() ? absl::StrCat(name, ";")
                                       : absl::StrCat(name, ": ", value);
      c->headers = curl_slist_append(c->headers, line.c_str());
    }
    // No "Expect: 100-continue" round trip before a large POST body.
    c->headers = curl_slist_append(c->headers, "Expect:");
  } else {
    curl_easy_reset(c->easy);
  }
  CURL* e = c->easy;
  curl_easy_setopt(e, CURLOPT_PRIVATE, c);
  curl_easy_setopt(e, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(
      e, CURLOPT_CONNECTTIMEOUT_MS,
      std::max<long>(1, absl::ToInt64Milliseconds(absl::Ceil(
                            r.connect_timeout, absl::Milliseconds(1)))));
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                   std::max<long>(1, absl::ToInt64Milliseconds(absl::Ceil(
                                         r.timeout, absl::Milliseconds(1)))));
  // Refuses early on a Content-Length over the cap (0 would mean "none");
  // OnBody enforces it for bodies of unannounced length.
  if (r.max_response_bytes > 0 &&
      r.max_response_bytes < static_cast<size_t>(INT64_MAX)) {
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(r.max_response_bytes));
  }
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Impl::OnBody);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Impl::OnHeader);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->errbuf);
  // "" disables proxies, the environment's included.
  curl_easy_setopt(e, CURLOPT_PROXY, options_.proxy.c_str());
  curl_easy_setopt(e, CURLOPT_USERAGENT, options_.user_agent.c_str());
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
  if (r.method == "POST") {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                     static_cast<curl_off_t>(r.body.size()));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r.body.data());
  } else {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  }
  // libcurl 7.88 scans every connection to the host for a reusable one
  // when a transfer starts, and every connection for the oldest idle one
  // whenever a connection returns to a full cache: O(connections) per
  // request (10,000 at once took 11 s instead of 3). Beyond
  // max_idle_connections attempts in flight, an attempt gets a connection
  // of its own, closed after it: no scan runs for it, and no upstream
  // keeps more than max_idle_connections connections for reuse (a new
  // reusable one opens only while fewer attempts than that are in flight).
  if (transferring_ >= options_.max_idle_connections) {
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
  }
  CURLMcode mc = curl_multi_add_handle(multi_, e);
  if (mc != CURLM_OK) {
    Finish(c, absl::InternalError(absl::StrCat("request to ", c->url, ": ",
                                               curl_multi_strerror(mc))));
    return;
  }
  ++transferring_;
}

void CurlHttpClient::Impl::DrainCompleted() {
  int left = 0;
  while (CURLMsg* m = curl_multi_info_read(multi_, &left)) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL* e = m->easy_handle;
    CURLcode rc = m->data.result;  // `m` dies with the removal below
    Call* c = nullptr;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, &c);
    curl_multi_remove_handle(multi_, e);
    --transferring_;
    OnAttemptDone(c, rc);
  }
}

void CurlHttpClient::Impl::OnAttemptDone(Call* c, CURLcode rc) {
  long status = 0;
  curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
  AttemptResult result;
  if (c->headers_too_large) {
    result.error = absl::ResourceExhaustedError(
        absl::StrCat("response headers from ", c->url, " exceed ",
                     kMaxHeaderBytes, " bytes (", Attempts(c->attempts), ")"));
  } else if (c->too_large || rc == CURLE_FILESIZE_EXCEEDED) {
    // The upstream answered: not its failure, and not worth repeating.
    result.error = absl::ResourceExhaustedError(absl::StrCat(
        "response from ", c->url, " exceeds ", c->request.max_response_bytes,
        " bytes (", Attempts(c->attempts), ")"));
  } else if (rc != CURLE_OK) {
    curl_off_t pretransfer = 0;
    curl_easy_getinfo(c->easy, CURLINFO_PRETRANSFER_TIME_T, &pretransfer);
    result = FromCurlError(rc, c->url, c->attempts, c->errbuf, pretransfer > 0,
                           c->request);
  } else {
    result = FromHttpStatus(status, c->url, c->attempts, c->body);
  }
  bool probe = std::exchange(c->probe, false);
  {
    absl::MutexLock lock(&mu_);
    RecordAttemptLocked(*c->upstream, result.upstream_failure, probe,
                        options_.clock->Now());
  }
  if (result.error.ok()) {
    HttpResponse response;
    response.status = static_cast<int>(status);
    response.body = std::move(c->body);
    response.headers = std::move(c->response_headers);
    response.attempts = c->attempts;
    Finish(c, std::move(response));
    return;
  }
  if (result.retryable && c->attempts < c->request.max_attempts) {
    ScheduleRetry(c, result);
    return;
  }
  Finish(c, std::move(result.error));
}

void CurlHttpClient::Impl::ScheduleRetry(Call* c, const AttemptResult& result) {
  const HttpRequest& r = c->request;
  absl::Duration cap = std::max(r.max_backoff, absl::ZeroDuration());
  absl::Duration ceiling = std::max(r.initial_backoff, absl::ZeroDuration());
  for (int i = 1; i < c->attempts && ceiling < cap; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, cap);
  std::uniform_int_distribution<int64_t> uniform(
      0, absl::ToInt64Microseconds(ceiling));
  RetryDecision d;
  d.upstream = c->upstream_name;
  d.url = c->url;
  d.attempt = c->attempts;
  d.error = result.error;
  d.jittered_backoff = absl::Microseconds(uniform(rng_));
  for (const auto& [name, value] : c->response_headers) {
    if (name == "retry-after") {
      d.retry_after = ParseRetryAfter(value, options_.clock->Now());
    }
  }
  d.delay = std::min(cap, std::max(d.jittered_backoff, d.retry_after));
  c->last_error = result.error;
  if (options_.on_retry) options_.on_retry(d);
  retries_.push(
      RetryTimer{SteadyClock::now() + absl::ToChronoNanoseconds(d.delay),
                 retry_seq_++, c});
}

void CurlHttpClient::Impl::FireRetries() {
  if (retries_.empty()) return;
  SteadyClock::time_point now = SteadyClock::now();
  while (!retries_.empty() && retries_.top().due <= now) {
    Call* c = retries_.top().call;
    retries_.pop();
    bool admitted = false;
    {
      absl::MutexLock lock(&mu_);
      std::string why;
      admitted =
          AdmitLocked(*c->upstream, options_.clock->Now(), &c->probe, &why);
    }
    if (admitted) {
      StartAttempt(c);
    } else {
      // The breaker opened meanwhile: the last answer stands.
      Finish(c, c->last_error);
    }
  }
}

void CurlHttpClient::Impl::Finish(Call* c,
                                  absl::StatusOr<HttpResponse> result) {
  {
    absl::MutexLock lock(&mu_);
    --in_flight_;
    --c->upstream->stats.in_flight;
  }
  auto it = calls_.find(c);
  CHECK(it != calls_.end());
  std::unique_ptr<Call> owned = std::move(it->second);
  calls_.erase(it);
  if (owned->easy != nullptr) curl_easy_cleanup(owned->easy);
  if (owned->headers != nullptr) curl_slist_free_all(owned->headers);
  std::move(owned->done)(std::move(result));
}

int CurlHttpClient::Impl::NextTimeoutMs() const {
  std::optional<SteadyClock::time_point> next = curl_deadline_;
  if (!retries_.empty() && (!next || retries_.top().due < *next)) {
    next = retries_.top().due;
  }
  if (!next) return -1;
  SteadyClock::time_point now = SteadyClock::now();
  if (*next <= now) return 0;
  // Rounded up, so a wait never ends just before its deadline (a spin).
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - now).count();
  return static_cast<int>(std::min<int64_t>(ms, INT_MAX));
}

void CurlHttpClient::Impl::Loop() {
  constexpr int kMaxEvents = 256;
  epoll_event events[kMaxEvents];
  int running = 0;
  while (true) {
    int n = epoll_wait(epoll_fd_, events, kMaxEvents, NextTimeoutMs());
    if (n < 0) {
      if (errno != EINTR) PLOG(ERROR) << "epoll_wait";
      n = 0;
    }
    bool woken = false;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == wake_fd_) {
        uint64_t count;
        ssize_t r = read(wake_fd_, &count, sizeof(count));
        (void)r;
        woken = true;
        continue;
      }
      uint32_t ev = events[i].events;
      int mask = (ev & EPOLLIN ? CURL_CSELECT_IN : 0) |
                 (ev & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                 (ev & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
      curl_multi_socket_action(multi_, fd, mask, &running);
    }
    if (curl_deadline_ && *curl_deadline_ <= SteadyClock::now()) {
      curl_deadline_.reset();
      curl_multi_socket_action(multi_, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    DrainCompleted();
    FireRetries();
    if (!woken) continue;
    std::deque<std::unique_ptr<Call>> taken;
    bool stopping;
    {
      absl::MutexLock lock(&mu_);
      taken.swap(queue_);
      wake_pending_ = false;
      stopping = stopping_;
    }
    for (std::unique_ptr<Call>& call : taken) {
      Call* c = call.get();
      calls_.emplace(c, std::move(call));
      if (!stopping) StartAttempt(c);
    }
    if (stopping) break;
  }
  FailEverything();
}

void CurlHttpClient::Impl::FailEverything() {
  std::vector<Call*> pending;
  pending.reserve(calls_.size());
  for (auto& [c, owned] : calls_) {
    // Transferring: stop it (waiting for a retry: not in the multi).
    if (c->easy != nullptr) curl_multi_remove_handle(multi_, c->easy);
    pending.push_back(c);
  }
  while (!retries_.empty()) retries_.pop();
  for (Call* c : pending) {
    Finish(c, absl::UnavailableError(absl::StrCat(
                  "client shutting down: request to ", c->url,
                  " not completed (", Attempts(c->attempts), ")")));
  }
}

CurlHttpClient::CurlHttpClient(std::unique_ptr<Impl> impl)
    : impl_(std::move(impl)) {}

CurlHttpClient::~CurlHttpClient() = default;

absl::StatusOr<std::unique_ptr<CurlHttpClient>> CurlHttpClient::Create(
    Options options) {
  if (options.clock == nullptr) {
    return absl::InvalidArgumentError("CurlHttpClient needs a clock");
  }
  if (options.breaker_failures < 1) {
    return absl::InvalidArgumentError(
        "CurlHttpClient: breaker_failures must be >= 1");
  }
  auto impl = std::make_unique<Impl>(std::move(options));
  absl::Status s = impl->Init();
  if (!s.ok()) return s;
  return std::unique_ptr<CurlHttpClient>(new CurlHttpClient(std::move(impl)));
}

void CurlHttpClient::Send(HttpRequest request,
                          core::Callback<HttpResponse> done) {
  impl_->Send(std::move(request), std::move(done));
}

std::vector<UpstreamStats> CurlHttpClient::Upstreams() const {
  return impl_->Upstreams();
}

}  // namespace reflexion::upstream

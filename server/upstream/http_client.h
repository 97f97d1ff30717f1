#pragma once

// Outbound HTTP: the one place where curl and HTTP errors become
// absl::Status (../shared/STYLE.md). Every upstream the server calls (an
// OpenAI-compatible LLM, the Go agent's REST API) goes through an
// HttpClient.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/ports/callback.h"

namespace reflexion::upstream {

struct HttpRequest {
  std::string method = "GET";  // "GET" or "POST"
  std::string url;             // http:// or https://
  // Header lines as (name, value); values are never logged (they may hold
  // a bearer token).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Per attempt: connecting, and the whole exchange.
  absl::Duration connect_timeout = absl::Seconds(2);
  absl::Duration timeout = absl::Seconds(10);
  // A larger response body fails the request (kResourceExhausted) as soon
  // as the cap is passed; nothing beyond it is buffered.
  size_t max_response_bytes = size_t{1} << 20;
  // Attempts in all (1 = no retry). Retried: connection errors, timeouts,
  // 429 and 5xx; never another status. Only set > 1 for a request that is
  // safe to repeat (idempotent, or carrying an idempotency key).
  int max_attempts = 3;
  // Exponential backoff with full jitter between attempts: a uniform delay
  // in [0, min(max_backoff, initial_backoff * 2^(attempt-1))]; a
  // Retry-After header (seconds or HTTP date) raises it, capped at
  // max_backoff.
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(10);
};

struct HttpResponse {
  int status = 0;  // 2xx (anything else is an error status)
  std::string body;
  // Response headers of the last attempt, names lower-cased.
  std::vector<std::pair<std::string, std::string>> headers;
  int attempts = 1;
};

// A circuit breaker's state, per upstream (scheme://host:port).
struct UpstreamStats {
  std::string upstream;
  enum class State { kClosed, kOpen, kHalfOpen } state = State::kClosed;
  int consecutive_failures = 0;
  int64_t requests = 0;   // Send calls for this upstream
  int64_t failures = 0;   // attempts that failed (connect, timeout, 429, 5xx)
  int64_t rejected = 0;   // failed fast while the breaker was open
  int64_t opened = 0;     // times the breaker opened
  int64_t in_flight = 0;  // requests not yet completed
};

// "closed" / "open" / "half_open".
const char* StateName(UpstreamStats::State state);

// Asynchronous HTTP client. Send returns at once and calls `done` exactly
// once: on the client's event-loop thread, or inline before Send returns
// when the request is refused without being sent (malformed, the breaker
// open, the client shutting down). `done` must not block.
//
// Errors, each message naming the URL (never a header value):
//   kInvalidArgument    a malformed request (bad URL, method); HTTP 400
//   kUnauthenticated    HTTP 401;  kPermissionDenied  HTTP 403
//   kNotFound           HTTP 404
//   kFailedPrecondition any other 4xx; 1xx/3xx (redirects are not followed)
//   kResourceExhausted  HTTP 429 after the last attempt; a body over
//                       max_response_bytes (never retried)
//   kUnavailable        connection refused/reset, DNS, a truncated body,
//                       HTTP 5xx after the last attempt, the breaker open
//                       ("circuit open for http://host:port ...")
//   kDeadlineExceeded   no connection within `connect_timeout`, or no
//                       complete answer within `timeout`, on the last attempt
// e.g. "HTTP 503 from http://127.0.0.1:8080/v1/chat/completions (3
// attempts): <first 200 bytes of the body>".
// Thread-safe.
class HttpClient {
 public:
  virtual ~HttpClient() = default;
  virtual void Send(HttpRequest request, core::Callback<HttpResponse> done) = 0;
  // Every upstream seen so far, sorted by name.
  virtual std::vector<UpstreamStats> Upstreams() const = 0;
};

}  // namespace reflexion::upstream

#pragma once

// HttpClient on libcurl's multi interface: one event-loop thread drives
// every transfer (epoll + curl_multi_socket_action), so thousands of
// requests wait at once without a thread each.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/ports/clock.h"
#include "server/upstream/http_client.h"

namespace reflexion::upstream {

// Why an attempt is followed by another one, and after how long. Reported
// to CurlHttpClient::Options::on_retry (tests assert on it instead of on
// wall time).
struct RetryDecision {
  std::string upstream;  // scheme://host:port
  std::string url;       // without user info
  int attempt = 0;       // the attempt that failed, 1-based
  absl::Status error;    // what that attempt's failure maps to
  // Full jitter: uniform in [0, min(max_backoff, initial * 2^(attempt-1))].
  absl::Duration jittered_backoff;
  // From a Retry-After header (delta-seconds, or an HTTP date relative to
  // the injected clock); zero without one.
  absl::Duration retry_after;
  // The wait before the next attempt: min(max_backoff, max(jittered_backoff,
  // retry_after)).
  absl::Duration delay;
};

// Thread-safe (see HttpClient). Every transfer, retry timer and completion
// runs on the one loop thread the client owns; `done` runs there, never
// under the client's lock. `done` must not destroy the client.
//
// Beyond HttpClient's error list, Send refuses inline with
//   kResourceExhausted  options.max_in_flight requests already in flight,
//                       or options.max_upstreams upstreams all busy
//   kUnavailable        "circuit open for ..."; "client shutting down"
//
// Circuit breaker, per upstream (scheme://host:port), on the injected
// clock: `breaker_failures` consecutive failed attempts (connection error,
// timeout, 429, 5xx; any other answer counts as a success) open it; while
// open Send fails fast; `breaker_open_for` after opening, the next Send is
// let through as the one probe (half-open: other Sends still fail fast);
// the probe's first attempt closes the breaker on success and re-opens it
// on failure. A retry of a request whose upstream is no longer closed is
// not made: the request ends with its last attempt's error. Attempts
// started before the breaker opened run to completion and are counted in
// the stats, but only the probe moves an open breaker.
//
// Connections: HTTP/1.1 keep-alive (HTTP/2 over TLS when the server offers
// it), see `max_idle_connections`; no limit per host by default,
// so every in-flight request may hold a socket: max_in_flight must fit
// the process's RLIMIT_NOFILE. Proxies: none unless `proxy` is set; the
// http_proxy/HTTPS_PROXY environment variables are ignored, so a
// deployment never picks one up by surprise. Redirects are not followed.
// Host names are resolved by libcurl's threaded resolver (a short-lived
// thread per lookup not in its 60 s DNS cache; none for IP literals).
class CurlHttpClient final : public HttpClient {
 public:
  struct Options {
    // Breaker time (and the base of HTTP-date Retry-After). Not owned; must
    // outlive the client. Required.
    const core::Clock* clock = nullptr;
    // Seeds the backoff jitter. Draws happen on the loop thread in
    // completion order, so one request at a time is fully deterministic.
    uint64_t rng_seed = 1;
    int breaker_failures = 5;
    absl::Duration breaker_open_for = absl::Seconds(30);
    // Requests accepted and not yet completed (queued, transferring or
    // waiting to retry); more are refused (kResourceExhausted).
    size_t max_in_flight = 50'000;
    // Distinct upstreams tracked. At the bound an idle closed one (no
    // request in flight) is forgotten to make room; if none is, Send to a
    // new upstream is refused (kResourceExhausted).
    size_t max_upstreams = 1024;
    // Connections kept alive for reuse, at most, per upstream. While this
    // many attempts (over all upstreams) are in flight, a further attempt
    // opens a connection of its own and closes it after (libcurl 7.88's
    // connection reuse costs O(connections) per request beyond that).
    // libcurl also closes a connection idle for 118 s.
    long max_idle_connections = 256;
    // CURLMOPT_MAX_HOST_CONNECTIONS (0 = unlimited; requests beyond a bound
    // wait inside libcurl for a connection, their timeout running).
    long max_host_connections = 0;
    // CURLMOPT_MAX_TOTAL_CONNECTIONS (0 = unlimited).
    long max_total_connections = 0;
    // CURLOPT_PROXY, e.g. "http://proxy:3128"; empty = no proxy.
    std::string proxy;
    std::string user_agent = "reflexion/0.1";
    // Called on the loop thread before each retry wait; must not block and
    // must not call back into the client. Optional.
    std::function<void(const RetryDecision&)> on_retry;
  };

  // Starts the loop thread. kInvalidArgument without a clock or with a
  // non-positive breaker_failures; kInternal when libcurl or epoll cannot
  // be set up.
  static absl::StatusOr<std::unique_ptr<CurlHttpClient>> Create(
      Options options);

  // Stops the loop: every request not completed yet (queued, transferring,
  // waiting to retry) completes with kUnavailable "client shutting down";
  // then joins the thread. Sends racing with it are refused inline.
  ~CurlHttpClient() override;

  CurlHttpClient(const CurlHttpClient&) = delete;
  CurlHttpClient& operator=(const CurlHttpClient&) = delete;

  void Send(HttpRequest request, core::Callback<HttpResponse> done) override;
  std::vector<UpstreamStats> Upstreams() const override;

 private:
  class Impl;
  explicit CurlHttpClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace reflexion::upstream

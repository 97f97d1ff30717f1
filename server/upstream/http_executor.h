#pragma once

// ClusterExecutor "http": the original Go agent's REST API (GO_SERVICE_URL).
// The request and response shapes are documented in docs/http-executor.md.

#include <cstddef>
#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/graph/task_runner.h"
#include "core/ports/clock.h"
#include "core/ports/cluster_executor.h"
#include "reflexion/v1/types.pb.h"
#include "server/upstream/http_client.h"

namespace reflexion::upstream {

struct HttpExecutorOptions {
  // The agent, e.g. "http://127.0.0.1:8080" (GO_SERVICE_URL); http:// or
  // https://, a path prefix allowed, trailing '/' ignored.
  std::string base_url;
  // Per attempt of every request (the whole exchange), and for connecting.
  absl::Duration request_timeout = absl::Seconds(10);
  absl::Duration connect_timeout = absl::Seconds(2);
  // How often Observe polls pod-status, in [100ms, 60s].
  absl::Duration poll_interval = absl::Seconds(5);
  // Attempts of k8sgpt-analyze and execute-fix (>= 1): retrying execute-fix
  // is safe only because every call carries the action's idempotency key.
  // pod-status polls and /health are tried once (the next poll is the
  // retry).
  int max_attempts = 3;
  // Between attempts: full jitter from initial_backoff, doubling, capped
  // (a Retry-After included) at max_backoff (HttpRequest).
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(10);
  // A larger response body fails the request (kResourceExhausted).
  size_t max_response_bytes = size_t{1} << 20;
  // Execute results remembered by idempotency key (>= 1). At the bound the
  // least recently used key is forgotten; a forgotten key that comes again
  // is sent to the agent, which must deduplicate it by its Idempotency-Key
  // header (docs/http-executor.md).
  size_t dedup_capacity = 10'000;
};

// The executor over the Go agent's REST API:
//   Diagnose  POST {base}/api/v1/k8sgpt-analyze
//   Execute   POST {base}/api/v1/execute-fix      (Idempotency-Key header)
//   Observe   GET  {base}/api/v1/pod-status/{pod}?namespace={ns}, polled
//   Check     GET  {base}/health
//
// Errors (each message names the URL; strings from the agent are made valid
// UTF-8 and clipped before they appear anywhere):
//   kInvalidArgument  a call the executor refuses before sending anything
//                     (empty pod or namespace, an action outside the
//                     catalog or its bounds, no idempotency key, a negative
//                     or infinite window); a 200 whose JSON has the wrong
//                     shape (not an object; execute-fix without a boolean
//                     "applied"), naming the field
//   kUnavailable      a 200 whose body is not JSON; every poll of an
//                     observation window failed; the executor destroyed
//                     while a window was open
//   anything else     the HttpClient's mapping of the HTTP outcome
//                     (kNotFound for a 404, kDeadlineExceeded, ...)
//
// No thread waits: requests go through the asynchronous HttpClient, polls
// are scheduled on the Timer. `done` runs on the HttpClient's or the
// Timer's thread, or inline when a call is refused or deduplicated, never
// under the executor's lock. Thread-safe.
class HttpExecutor final : public core::ClusterExecutor {
 public:
  // `client`, `clock` (observation times) and `timer` (polls) are not owned
  // and must outlive the executor and every call in flight. kInvalidArgument
  // naming the option when one is out of range (base_url not http(s)://,
  // poll_interval outside [100ms, 60s], max_attempts < 1, a non-positive
  // timeout, dedup_capacity 0) or a pointer is null.
  static absl::StatusOr<std::unique_ptr<HttpExecutor>> Create(
      HttpExecutorOptions options, HttpClient* client, const core::Clock* clock,
      graph::Timer* timer);

  // Ends every open observation window at once: its polls are cancelled and
  // its `done` gets kUnavailable ("shutting down"); a poll answered later is
  // dropped. Diagnose and Execute requests in flight still complete through
  // `done` (their callbacks hold what they need, not the executor).
  ~HttpExecutor() override;
  HttpExecutor(const HttpExecutor&) = delete;
  HttpExecutor& operator=(const HttpExecutor&) = delete;

  // "http".
  std::string Name() const override;

  // Asks the agent's k8sgpt-analyze and maps its answer field by field;
  // a field of the wrong type or out of range is ignored (and logged) and
  // the rest is kept. source = "http". kInvalidArgument for an empty
  // pod_name or namespace, or an answer that is not a JSON object.
  void Diagnose(const reflexion::v1::Incident& incident,
                core::Callback<reflexion::v1::Diagnosis> done) override;

  // Checks `action` against the catalog (core::ValidateAction) and its
  // idempotency key, then POSTs it. A key answered before (within the last
  // dedup_capacity keys) returns that result with deduplicated = true
  // without calling the agent; a key whose request is still in flight waits
  // for it and gets the same answer (deduplicated = true). Failures are not
  // remembered: calling again with the same key sends again, which the
  // agent deduplicates. executor = "http". The seed's REST API has no undo:
  // an ACTION_TYPE_UNDO is kFailedPrecondition ("the REST agent at URL has
  // no undo"), nothing sent.
  void Execute(const reflexion::v1::Action& action,
               core::Callback<reflexion::v1::ExecutionResult> done) override;

  // Polls pod-status at once, then every poll_interval (one poll in flight
  // at a time), and once more when `window` ends; decides when that last
  // poll answers, so it completes within window + one request_timeout
  // (+1 s of slack). success: the pod answered healthy at some poll, every
  // later poll too, its restart count did not grow after it was first
  // healthy, and the last answered poll was healthy. time_to_recovery_s
  // runs from the Observe call to the first healthy answer, by the clock.
  // restarts: highest count minus the first answered one. Failed polls are
  // tolerated and counted in a signal; kUnavailable naming the URL when
  // none answered. kInvalidArgument for an empty pod or namespace or a
  // negative or infinite window.
  void Observe(const reflexion::v1::Action& action, absl::Duration window,
               core::Callback<reflexion::v1::Observation> done) override;

  // GET /health (one attempt): OK for any 2xx, else the HttpClient's error.
  // `done` runs once, as for the port's methods.
  void Check(absl::AnyInvocable<void(absl::Status) &&> done);

  // "http at <base_url> (healthy)" or "http at <base_url> (unreachable:
  // <status>)", for the startup report.
  std::string Describe(const absl::Status& health) const;

  const std::string& base_url() const { return options_.base_url; }

 private:
  struct Watch;
  struct Shared;

  HttpExecutor(HttpExecutorOptions options, HttpClient* client,
               const core::Clock* clock, graph::Timer* timer);

  HttpRequest NewRequest(std::string method, std::string url) const;

  const HttpExecutorOptions options_;
  HttpClient* const client_;
  const core::Clock* const clock_;
  graph::Timer* const timer_;
  // What callbacks that may outlive the executor touch.
  std::shared_ptr<Shared> shared_;
};

}  // namespace reflexion::upstream

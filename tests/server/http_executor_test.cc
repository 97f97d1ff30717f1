// HttpExecutor ("http", the Go agent's REST API).
//
// Unit tests: an in-memory HttpClient, a FakeClock and a timer that fires
// only when the test runs it: request shapes, response mapping,
// deduplication, bad bodies, and the observation window's logic.
// Deterministic; nothing sleeps.
//
// Integration tests: the real CurlHttpClient and TimerThread against a
// fake Go agent on the loopback FakeHttpServer, in each fault mode. Waits
// are on notifications; a 60 s guard only keeps a broken build from
// hanging the suite.

#include "server/upstream/http_executor.h"

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/ports/clock.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/upstream/curl_http_client.h"
#include "tests/testing/fake_http_server.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::upstream {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr char kBase[] = "http://agent.test:8080";

// An HttpClient that keeps every request and its callback until the test
// answers it.
class FakeHttpClient final : public HttpClient {
 public:
  struct Call {
    HttpRequest request;
    core::Callback<HttpResponse> done;
  };

  void Send(HttpRequest request, core::Callback<HttpResponse> done) override {
    absl::MutexLock lock(&mu_);
    sent_.push_back(request);
    pending_.push_back(Call{std::move(request), std::move(done)});
  }
  std::vector<UpstreamStats> Upstreams() const override { return {}; }

  // Every request sent so far.
  std::vector<HttpRequest> sent() const {
    absl::MutexLock lock(&mu_);
    return sent_;
  }
  size_t pending() const {
    absl::MutexLock lock(&mu_);
    return pending_.size();
  }
  // The oldest unanswered request.
  HttpRequest Front() const {
    absl::MutexLock lock(&mu_);
    CHECK(!pending_.empty());
    return pending_.front().request;
  }
  // Answers the oldest unanswered request.
  void Answer(absl::StatusOr<HttpResponse> response) {
    core::Callback<HttpResponse> done;
    {
      absl::MutexLock lock(&mu_);
      CHECK(!pending_.empty()) << "no request to answer";
      done = std::move(pending_.front().done);
      pending_.erase(pending_.begin());
    }
    std::move(done)(std::move(response));
  }
  void Ok(std::string body) {
    HttpResponse r;
    r.status = 200;
    r.body = std::move(body);
    Answer(std::move(r));
  }
  void Ok(const Json& body) { Ok(body.dump()); }

 private:
  mutable absl::Mutex mu_;
  std::vector<HttpRequest> sent_ ABSL_GUARDED_BY(mu_);
  std::vector<Call> pending_ ABSL_GUARDED_BY(mu_);
};

// A graph::Timer on the FakeClock: After records `now + delay`; RunUntil
// fires what is due in time order, moving the clock to each deadline.
class ManualTimer final : public graph::Timer {
 public:
  explicit ManualTimer(core::FakeClock* clock) : clock_(clock) {}

  uint64_t After(absl::Duration delay,
                 absl::AnyInvocable<void() &&> fn) override {
    absl::MutexLock lock(&mu_);
    const uint64_t id = next_id_++;
    entries_.emplace(id, Entry{clock_->Now() + delay, delay, std::move(fn)});
    delays_.push_back(delay);
    return id;
  }
  void Cancel(uint64_t id) override {
    absl::AnyInvocable<void() &&> dropped;
    absl::MutexLock lock(&mu_);
    if (auto it = entries_.find(id); it != entries_.end()) {
      dropped = std::move(it->second.fn);
      entries_.erase(it);
    }
  }

  // Fires every entry due by `t` (earliest first; ties in order of After),
  // then leaves the clock at `t`.
  void RunUntil(absl::Time t) {
    while (true) {
      absl::AnyInvocable<void() &&> fn;
      {
        absl::MutexLock lock(&mu_);
        auto next = entries_.end();
        for (auto it = entries_.begin(); it != entries_.end(); ++it) {
          if (it->second.due <= t &&
              (next == entries_.end() || it->second.due < next->second.due)) {
            next = it;
          }
        }
        if (next == entries_.end()) break;
        if (next->second.due > clock_->Now()) {
          clock_->Advance(next->second.due - clock_->Now());
        }
        fn = std::move(next->second.fn);
        entries_.erase(next);
      }
      std::move(fn)();
    }
    if (t > clock_->Now()) clock_->Advance(t - clock_->Now());
  }
  void RunFor(absl::Duration d) { RunUntil(clock_->Now() + d); }

  size_t pending() const {
    absl::MutexLock lock(&mu_);
    return entries_.size();
  }
  std::vector<absl::Duration> delays() const {
    absl::MutexLock lock(&mu_);
    return delays_;
  }

 private:
  struct Entry {
    absl::Time due;
    absl::Duration delay;
    absl::AnyInvocable<void() &&> fn;
  };
  core::FakeClock* const clock_;
  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Duration> delays_ ABSL_GUARDED_BY(mu_);
};

// A timer being destroyed: runs every callback inline, inside After.
class StoppingTimer final : public graph::Timer {
 public:
  uint64_t After(absl::Duration, absl::AnyInvocable<void() &&> fn) override {
    ++calls;
    std::move(fn)();
    return calls;
  }
  void Cancel(uint64_t) override {}
  int calls = 0;
};

// Collects one callback's result.
template <typename T>
struct Result {
  std::optional<absl::StatusOr<T>> value;
  int calls = 0;
  core::Callback<T> Callback() {
    return [this](absl::StatusOr<T> r) {
      ++calls;
      value = std::move(r);
    };
  }
};

reflexion::v1::Action MakeAction(reflexion::v1::ActionType type,
                                 const std::string& key) {
  reflexion::v1::Action a;
  a.set_type(type);
  const core::ActionSpec* spec = core::FindAction(type);
  if (spec != nullptr) a.set_tier(spec->tier);
  a.set_pod_name("web-7d9f-abc");
  a.set_namespace_("shop");
  reflexion::v1::StrategyParams p;
  p.set_memory_factor(1.5);
  *a.mutable_params() = core::ClampParams(p);
  a.set_idempotency_key(key);
  if (type == reflexion::v1::ACTION_TYPE_PATCH_IMAGE) {
    a.set_image("shop/app:1.3");
  }
  if (type == reflexion::v1::ACTION_TYPE_ATTACH_PULL_SECRET) {
    a.set_pull_secret("regcred");
  }
  return a;
}

std::string HeaderOf(const HttpRequest& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (absl::EqualsIgnoreCase(k, name)) return v;
  }
  return "<absent>";
}

Json BodyOf(const HttpRequest& r) {
  return Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
}

// A pod-status answer.
Json PodStatus(bool healthy, int restarts = 0, const std::string& reason = "") {
  Json j = {{"healthy", healthy},
            {"phase", "Running"},
            {"restarts", restarts},
            {"ready", healthy}};
  if (!reason.empty()) j["failure_reason"] = reason;
  return j;
}

class HttpExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(HttpExecutorOptions{}); }

  void Make(HttpExecutorOptions options) {
    executor_.reset();
    options.base_url = kBase;
    absl::StatusOr<std::unique_ptr<HttpExecutor>> e =
        HttpExecutor::Create(options, &client_, &clock_, &timer_);
    ASSERT_THAT(e, IsOk());
    executor_ = *std::move(e);
  }

  reflexion::v1::Incident MakeIncident() {
    reflexion::v1::Incident in;
    in.set_pod_name("web-7d9f-abc");
    in.set_namespace_("shop");
    in.set_error_type("OOMKilled");
    in.set_request_id("req-42");
    return in;
  }

  // Starts observing; the first poll is pending.
  Result<reflexion::v1::Observation>& Observe(absl::Duration window) {
    start_ = clock_.Now();
    executor_->Observe(
        MakeAction(reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "k1"),
        window, observation_.Callback());
    return observation_;
  }

  // Answers the pending poll, then runs the timer up to the next poll (or
  // the end of the window).
  void Poll(absl::StatusOr<HttpResponse> answer) {
    ASSERT_EQ(client_.pending(), 1u) << "one poll in flight";
    client_.Answer(std::move(answer));
    RunToNextPoll();
  }
  void Poll(const Json& body) {
    HttpResponse r;
    r.status = 200;
    r.body = body.dump();
    Poll(std::move(r));
  }
  void RunToNextPoll() {
    for (int i = 0; i < 1000 && client_.pending() == 0 &&
                    !observation_.value.has_value() && timer_.pending() > 0;
         ++i) {
      timer_.RunFor(absl::Milliseconds(100));
    }
  }

  core::FakeClock clock_;
  ManualTimer timer_{&clock_};
  FakeHttpClient client_;
  Result<reflexion::v1::Observation> observation_;
  absl::Time start_;
  // Last: destroyed first (it may still complete observation_).
  std::unique_ptr<HttpExecutor> executor_;
};

// --- Create ---------------------------------------------------------------

TEST_F(HttpExecutorTest, CreateRefusesOptionsOutOfRange) {
  auto make = [&](HttpExecutorOptions o) {
    return HttpExecutor::Create(std::move(o), &client_, &clock_, &timer_)
        .status();
  };
  HttpExecutorOptions o;
  o.base_url = "ftp://agent";
  EXPECT_THAT(make(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                HasSubstr("base_url")));
  o.base_url = kBase;
  o.poll_interval = absl::Milliseconds(50);
  EXPECT_THAT(make(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                HasSubstr("poll_interval")));
  o.poll_interval = absl::Seconds(61);
  EXPECT_THAT(make(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                HasSubstr("poll_interval")));
  o.poll_interval = absl::Seconds(5);
  o.max_attempts = 0;
  EXPECT_THAT(make(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                HasSubstr("max_attempts")));
  o.max_attempts = 3;
  o.request_timeout = absl::ZeroDuration();
  EXPECT_THAT(make(o), StatusIs(absl::StatusCode::kInvalidArgument,
                                HasSubstr("request_timeout")));
  o.request_timeout = absl::Seconds(1);
  EXPECT_THAT(make(o), IsOk());
  EXPECT_THAT(HttpExecutor::Create(o, nullptr, &clock_, &timer_),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(HttpExecutorTest, BaseUrlTrailingSlashIsIgnored) {
  HttpExecutorOptions o;
  o.base_url = "http://agent.test:8080/";
  auto e = HttpExecutor::Create(o, &client_, &clock_, &timer_);
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ((*e)->base_url(), "http://agent.test:8080");
  EXPECT_EQ((*e)->Name(), "http");
}

// --- Diagnose -------------------------------------------------------------

TEST_F(HttpExecutorTest, DiagnosePostsPodNamespaceAndIncidentId) {
  Result<reflexion::v1::Diagnosis> r;
  executor_->Diagnose(MakeIncident(), r.Callback());
  ASSERT_EQ(client_.pending(), 1u);
  const HttpRequest req = client_.Front();
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.url, "http://agent.test:8080/api/v1/k8sgpt-analyze");
  EXPECT_EQ(HeaderOf(req, "Content-Type"), "application/json");
  EXPECT_EQ(req.max_attempts, 3);
  EXPECT_EQ(req.timeout, absl::Seconds(10));
  const Json body = BodyOf(req);
  EXPECT_EQ(body.value("pod_name", ""), "web-7d9f-abc");
  EXPECT_EQ(body.value("namespace", ""), "shop");
  EXPECT_EQ(body.value("incident_id", ""), "req-42");
  EXPECT_EQ(body.value("error_type", ""), "OOMKilled");
}

TEST_F(HttpExecutorTest, DiagnoseMapsEveryField) {
  Result<reflexion::v1::Diagnosis> r;
  executor_->Diagnose(MakeIncident(), r.Callback());
  client_.Ok(Json{
      {"container_statuses",
       {{{"name", "app"},
         {"image", "shop/app:1.4"},
         {"restart_count", 4},
         {"last_termination_reason", "OOMKilled"},
         {"last_exit_code", 137},
         {"waiting_reason", "CrashLoopBackOff"},
         {"waiting_message", "back-off 5m0s"},
         {"ready", false}}}},
      {"events",
       {{{"type", "Warning"},
         {"reason", "BackOff"},
         {"message", "Back-off restarting failed container"},
         {"count", 12}}}},
      {"logs", "java.lang.OutOfMemoryError: Java heap space"},
      {"last_healthy_image", "shop/app:1.3"},
      {"available_pull_secrets", {"regcred", "mirror"}},
      {"recent_rollout", true},
      {"memory_limit_bytes", 134217728},
      {"first_revision", false},
      {"some_future_field", {{"nested", 1}}},
  });
  ASSERT_EQ(r.calls, 1);
  ASSERT_THAT(*r.value, IsOk());
  const reflexion::v1::Diagnosis& d = **r.value;
  EXPECT_EQ(d.source(), "http");
  ASSERT_EQ(d.container_statuses_size(), 1);
  const auto& c = d.container_statuses(0);
  EXPECT_EQ(c.name(), "app");
  EXPECT_EQ(c.image(), "shop/app:1.4");
  EXPECT_EQ(c.restart_count(), 4);
  EXPECT_EQ(c.last_termination_reason(), "OOMKilled");
  EXPECT_EQ(c.last_exit_code(), 137);
  EXPECT_EQ(c.waiting_reason(), "CrashLoopBackOff");
  EXPECT_EQ(c.waiting_message(), "back-off 5m0s");
  EXPECT_FALSE(c.ready());
  ASSERT_EQ(d.events_size(), 1);
  EXPECT_EQ(d.events(0).type(), "Warning");
  EXPECT_EQ(d.events(0).reason(), "BackOff");
  EXPECT_EQ(d.events(0).count(), 12);
  EXPECT_EQ(d.logs(), "java.lang.OutOfMemoryError: Java heap space");
  EXPECT_EQ(d.last_healthy_image(), "shop/app:1.3");
  EXPECT_THAT(d.available_pull_secrets(), ElementsAre("regcred", "mirror"));
  EXPECT_TRUE(d.recent_rollout());
  EXPECT_EQ(d.memory_limit_bytes(), 134217728);
  EXPECT_FALSE(d.first_revision());
}

TEST_F(HttpExecutorTest, DiagnoseIgnoresFieldsOfTheWrongTypeAndKeepsTheRest) {
  Result<reflexion::v1::Diagnosis> r;
  executor_->Diagnose(MakeIncident(), r.Callback());
  client_.Ok(Json{
      {"container_statuses",
       {{{"name", "app"}, {"restart_count", "four"}, {"ready", "yes"}},
        "not an object",
        {{"name", 7}, {"restart_count", -1}}}},
      {"events", "none"},
      {"logs", 42},
      {"last_healthy_image", "shop/app:1.3"},
      {"available_pull_secrets", {"regcred", 5, ""}},
      {"recent_rollout", "true"},
      {"memory_limit_bytes", 1.5e9},
      {"first_revision", nullptr},
  });
  ASSERT_THAT(*r.value, IsOk());
  const reflexion::v1::Diagnosis& d = **r.value;
  ASSERT_EQ(d.container_statuses_size(), 2);
  EXPECT_EQ(d.container_statuses(0).name(), "app");
  EXPECT_EQ(d.container_statuses(0).restart_count(), 0);
  EXPECT_FALSE(d.container_statuses(0).ready());
  EXPECT_EQ(d.container_statuses(1).name(), "");
  EXPECT_EQ(d.container_statuses(1).restart_count(), 0);
  EXPECT_EQ(d.events_size(), 0);
  EXPECT_EQ(d.logs(), "");
  EXPECT_EQ(d.last_healthy_image(), "shop/app:1.3");
  EXPECT_THAT(d.available_pull_secrets(), ElementsAre("regcred"));
  EXPECT_FALSE(d.recent_rollout());
  EXPECT_EQ(d.memory_limit_bytes(), 0);
  EXPECT_EQ(d.source(), "http");
}

TEST_F(HttpExecutorTest, DiagnoseBoundsWhatTheAgentSends) {
  Result<reflexion::v1::Diagnosis> r;
  executor_->Diagnose(MakeIncident(), r.Callback());
  Json statuses = Json::array();
  for (int i = 0; i < 40; ++i) statuses.push_back({{"name", "c"}});
  // A log tail larger than 64 KiB whose cut falls inside a 2-byte
  // character: the tail is kept, starting on a character boundary.
  std::string logs = "ab";
  for (int i = 0; i < 40000; ++i) logs += "\xC3\xA9";
  logs += "end";
  const std::string long_name(1000, 'n');
  client_.Ok(Json{{"container_statuses", statuses},
                  {"logs", logs},
                  {"last_healthy_image", long_name}});
  ASSERT_THAT(*r.value, IsOk());
  const reflexion::v1::Diagnosis& d = **r.value;
  EXPECT_EQ(d.container_statuses_size(), 32);
  EXPECT_EQ(d.logs().size(), 65535u) << "one continuation byte skipped";
  EXPECT_TRUE(absl::EndsWith(d.logs(),
                             "\xC3\xA9"
                             "end"));
  EXPECT_TRUE(core::IsValidUtf8(d.logs()));
  EXPECT_EQ(d.last_healthy_image().size(), 512u);
}

TEST_F(HttpExecutorTest, DiagnoseFailsWhenTheTopLevelIsNotAnObject) {
  Result<reflexion::v1::Diagnosis> r;
  executor_->Diagnose(MakeIncident(), r.Callback());
  client_.Ok(std::string("[1, 2, 3]"));
  EXPECT_THAT(*r.value, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr("/api/v1/k8sgpt-analyze")));
}

TEST_F(HttpExecutorTest, DiagnoseFailsCleanlyOnABodyThatIsNotJson) {
  Result<reflexion::v1::Diagnosis> r;
  executor_->Diagnose(MakeIncident(), r.Callback());
  client_.Ok(std::string("<html>502 Bad Gateway\xFF</html>"));
  ASSERT_THAT(*r.value,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("not JSON")));
  EXPECT_TRUE(core::IsValidUtf8(r.value->status().message()));
}

TEST_F(HttpExecutorTest, DiagnosePassesTheClientsErrorThrough) {
  Result<reflexion::v1::Diagnosis> r;
  executor_->Diagnose(MakeIncident(), r.Callback());
  client_.Answer(absl::NotFoundError("HTTP 404 from http://agent.test..."));
  EXPECT_THAT(*r.value, StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(HttpExecutorTest, DiagnoseRefusesAnIncidentWithoutPod) {
  Result<reflexion::v1::Diagnosis> r;
  reflexion::v1::Incident in = MakeIncident();
  in.clear_pod_name();
  executor_->Diagnose(in, r.Callback());
  EXPECT_THAT(*r.value, StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(client_.sent().size(), 0u);
}

// --- Execute --------------------------------------------------------------

TEST_F(HttpExecutorTest, ExecutePostsTheTypedActionWithItsIdempotencyKey) {
  Result<reflexion::v1::ExecutionResult> r;
  executor_->Execute(
      MakeAction(reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "wf-1/2"),
      r.Callback());
  ASSERT_EQ(client_.pending(), 1u);
  const HttpRequest req = client_.Front();
  EXPECT_EQ(req.method, "POST");
  EXPECT_EQ(req.url, "http://agent.test:8080/api/v1/execute-fix");
  EXPECT_EQ(HeaderOf(req, "Idempotency-Key"), "wf-1/2");
  EXPECT_EQ(HeaderOf(req, "Content-Type"), "application/json");
  EXPECT_EQ(req.max_attempts, 3);
  const Json body = BodyOf(req);
  ASSERT_TRUE(body.is_object()) << req.body;
  EXPECT_EQ(body.value("pod_name", ""), "web-7d9f-abc");
  EXPECT_EQ(body.value("namespace", ""), "shop");
  EXPECT_EQ(body.value("idempotency_key", ""), "wf-1/2");
  const Json s = body.value("strategy", Json::object());
  EXPECT_EQ(s.value("type", ""), "increase_memory_limit");
  EXPECT_EQ(s.value("tier", ""), "B");
  EXPECT_DOUBLE_EQ(s["params"].value("memory_factor", 0.0), 1.5);
  EXPECT_TRUE(s["params"].contains("probe_factor"));
  EXPECT_TRUE(s["params"].contains("requests_factor"));
  EXPECT_EQ(s.value("image", "?"), "");
  EXPECT_EQ(s.value("pull_secret", "?"), "");
}

TEST_F(HttpExecutorTest, ExecuteSendsImageAndPullSecretAndTier) {
  Result<reflexion::v1::ExecutionResult> r;
  executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_PATCH_IMAGE, "k"),
                     r.Callback());
  Json s = BodyOf(client_.Front())["strategy"];
  EXPECT_EQ(s.value("type", ""), "patch_image");
  EXPECT_EQ(s.value("image", ""), "shop/app:1.3");
  client_.Ok(Json{{"applied", true}});
  executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k2"),
                     r.Callback());
  EXPECT_EQ(BodyOf(client_.Front())["strategy"].value("tier", ""), "A");
  client_.Ok(Json{{"applied", true}});
  executor_->Execute(
      MakeAction(reflexion::v1::ACTION_TYPE_ATTACH_PULL_SECRET, "k3"),
      r.Callback());
  EXPECT_EQ(BodyOf(client_.Front())["strategy"].value("pull_secret", ""),
            "regcred");
}

TEST_F(HttpExecutorTest, ExecuteUsesMaxAttemptsFromOptions) {
  HttpExecutorOptions o;
  o.max_attempts = 5;
  o.request_timeout = absl::Seconds(3);
  Make(o);
  Result<reflexion::v1::ExecutionResult> r;
  executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k"),
                     r.Callback());
  EXPECT_EQ(client_.Front().max_attempts, 5);
  EXPECT_EQ(client_.Front().timeout, absl::Seconds(3));
}

TEST_F(HttpExecutorTest, ExecuteMapsTheAgentsAnswer) {
  Result<reflexion::v1::ExecutionResult> r;
  const auto action =
      MakeAction(reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, "k");
  executor_->Execute(action, r.Callback());
  client_.Ok(Json{
      {"applied", true},
      {"dry_run", false},
      {"message", "limits.memory 128Mi -> 192Mi"},
      {"changes",
       {{{"path",
          "Deployment/web spec.template.spec.containers[app]"
          ".resources.limits.memory"},
         {"before", "128Mi"},
         {"after", "192Mi"}}}},
  });
  ASSERT_THAT(*r.value, IsOk());
  const reflexion::v1::ExecutionResult& e = **r.value;
  EXPECT_TRUE(e.applied());
  EXPECT_FALSE(e.dry_run());
  EXPECT_FALSE(e.deduplicated());
  EXPECT_EQ(e.executor(), "http");
  EXPECT_EQ(e.message(), "limits.memory 128Mi -> 192Mi");
  EXPECT_EQ(e.action().idempotency_key(), "k");
  ASSERT_EQ(e.changes_size(), 1);
  EXPECT_EQ(e.changes(0).before(), "128Mi");
  EXPECT_EQ(e.changes(0).after(), "192Mi");
}

TEST_F(HttpExecutorTest, ExecuteTwiceWithOneKeyCallsTheAgentOnce) {
  const auto action = MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k");
  Result<reflexion::v1::ExecutionResult> first, second;
  executor_->Execute(action, first.Callback());
  client_.Ok(Json{{"applied", true}, {"message", "pod deleted"}});
  executor_->Execute(action, second.Callback());
  EXPECT_EQ(client_.sent().size(), 1u);
  ASSERT_EQ(second.calls, 1);
  ASSERT_THAT(*second.value, IsOk());
  EXPECT_TRUE((*second.value)->deduplicated());
  EXPECT_EQ((*second.value)->message(), "pod deleted");
  EXPECT_FALSE((*first.value)->deduplicated());
}

TEST_F(HttpExecutorTest, ExecuteWhileTheSameKeyIsInFlightWaitsForIt) {
  const auto action = MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k");
  Result<reflexion::v1::ExecutionResult> first, second;
  executor_->Execute(action, first.Callback());
  executor_->Execute(action, second.Callback());
  EXPECT_EQ(client_.sent().size(), 1u);
  EXPECT_EQ(second.calls, 0);
  client_.Ok(Json{{"applied", true}});
  ASSERT_EQ(first.calls, 1);
  ASSERT_EQ(second.calls, 1);
  EXPECT_FALSE((*first.value)->deduplicated());
  EXPECT_TRUE((*second.value)->deduplicated());
}

TEST_F(HttpExecutorTest, AFailedExecuteIsNotRememberedAndIsSentAgain) {
  const auto action = MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k");
  Result<reflexion::v1::ExecutionResult> first, second;
  executor_->Execute(action, first.Callback());
  client_.Answer(absl::UnavailableError("HTTP 503 from ..."));
  EXPECT_THAT(*first.value, StatusIs(absl::StatusCode::kUnavailable));
  executor_->Execute(action, second.Callback());
  ASSERT_EQ(client_.sent().size(), 2u);
  EXPECT_EQ(HeaderOf(client_.sent()[1], "Idempotency-Key"), "k");
  client_.Ok(Json{{"applied", true}});
  ASSERT_THAT(*second.value, IsOk());
  EXPECT_FALSE((*second.value)->deduplicated());
}

TEST_F(HttpExecutorTest, DedupForgetsTheLeastRecentlyUsedKeyAtTheBound) {
  HttpExecutorOptions o;
  o.dedup_capacity = 2;
  Make(o);
  Result<reflexion::v1::ExecutionResult> r;
  auto run = [&](const std::string& key) {
    executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, key),
                       r.Callback());
    if (client_.pending() > 0) client_.Ok(Json{{"applied", true}});
  };
  run("a");
  run("b");
  run("a");  // remembered; now the most recently used
  EXPECT_EQ(client_.sent().size(), 2u);
  run("c");  // evicts b
  EXPECT_EQ(client_.sent().size(), 3u);
  run("a");
  EXPECT_EQ(client_.sent().size(), 3u);
  EXPECT_TRUE((*r.value)->deduplicated());
  run("b");  // forgotten: sent again (the agent deduplicates it)
  EXPECT_EQ(client_.sent().size(), 4u);
}

TEST_F(HttpExecutorTest, ExecuteFailsCleanlyOnBadBodies) {
  struct Case {
    std::string body;
    absl::StatusCode code;
    std::string mentions;
  };
  const std::vector<Case> cases = {
      {"", absl::StatusCode::kUnavailable, "not JSON"},
      {"{\"applied\": tru", absl::StatusCode::kUnavailable, "not JSON"},
      {"\"applied\"", absl::StatusCode::kInvalidArgument, "not a JSON object"},
      {"{}", absl::StatusCode::kInvalidArgument, "\"applied\" is missing"},
      {"{\"applied\": \"true\"}", absl::StatusCode::kInvalidArgument,
       "\"applied\" is not a boolean"},
      {"{\"applied\": null}", absl::StatusCode::kInvalidArgument,
       "\"applied\" is missing"},
      {"{\"applied\": 1}", absl::StatusCode::kInvalidArgument,
       "\"applied\" is not a boolean"},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.body);
    Result<reflexion::v1::ExecutionResult> r;
    executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD,
                                  absl::StrCat("k", n++)),
                       r.Callback());
    client_.Ok(c.body);
    ASSERT_EQ(r.calls, 1);
    EXPECT_THAT(*r.value, StatusIs(c.code, HasSubstr(c.mentions)));
    EXPECT_THAT(r.value->status().message(),
                HasSubstr("http://agent.test:8080/api/v1/execute-fix"));
  }
  // Nothing was remembered: the same key goes to the agent again.
  Result<reflexion::v1::ExecutionResult> again;
  executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k0"),
                     again.Callback());
  EXPECT_EQ(client_.pending(), 1u);
}

TEST_F(HttpExecutorTest, ExecuteIgnoresBadOptionalFieldsButKeepsApplied) {
  Result<reflexion::v1::ExecutionResult> r;
  executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k"),
                     r.Callback());
  client_.Ok(Json{{"applied", false},
                  {"dry_run", "no"},
                  {"message", 3},
                  {"changes", {{{"path", 1}}, "x"}}});
  ASSERT_THAT(*r.value, IsOk());
  EXPECT_FALSE((*r.value)->applied());
  EXPECT_FALSE((*r.value)->dry_run());
  EXPECT_EQ((*r.value)->message(), "");
  EXPECT_EQ((*r.value)->changes_size(), 1);
}

TEST_F(HttpExecutorTest, ExecuteRefusesAnActionOutsideTheCatalogUnsent) {
  Result<reflexion::v1::ExecutionResult> r;
  auto unspecified =
      MakeAction(reflexion::v1::ACTION_TYPE_UNSPECIFIED, "k-unspecified");
  executor_->Execute(unspecified, r.Callback());
  EXPECT_THAT(*r.value, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr("catalog")));
  auto unknown = MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k-99");
  unknown.set_type(static_cast<reflexion::v1::ActionType>(99));
  executor_->Execute(unknown, r.Callback());
  EXPECT_THAT(*r.value, StatusIs(absl::StatusCode::kInvalidArgument));
  auto wrong_tier = MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k-t");
  wrong_tier.set_tier(reflexion::v1::SAFETY_TIER_C);
  executor_->Execute(wrong_tier, r.Callback());
  EXPECT_THAT(*r.value, StatusIs(absl::StatusCode::kInvalidArgument));
  auto no_key = MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "");
  executor_->Execute(no_key, r.Callback());
  EXPECT_THAT(*r.value, StatusIs(absl::StatusCode::kInvalidArgument,
                                 HasSubstr("idempotency_key")));
  EXPECT_EQ(r.calls, 4);
  EXPECT_EQ(client_.sent().size(), 0u);
}

TEST_F(HttpExecutorTest, UndoIsAFailedPreconditionNamingTheAgentUnsent) {
  auto patch = MakeAction(reflexion::v1::ACTION_TYPE_PATCH_IMAGE, "k-1");
  reflexion::v1::ValueChange change;
  change.set_path("Deployment/web spec.template.spec.containers[app].image");
  change.set_before("shop/app:1.2");
  change.set_after("shop/app:1.3");
  absl::StatusOr<reflexion::v1::Action> undo =
      core::BuildUndo(patch, {change}, "k-undo");
  ASSERT_THAT(undo, IsOk());
  Result<reflexion::v1::ExecutionResult> r;
  executor_->Execute(*undo, r.Callback());
  ASSERT_EQ(r.calls, 1);
  EXPECT_THAT(*r.value, StatusIs(absl::StatusCode::kFailedPrecondition,
                                 HasSubstr("has no undo: undo of k-1")));
  EXPECT_THAT(r.value->status().message(), HasSubstr("the REST agent at http"));
  EXPECT_EQ(client_.sent().size(), 0u);
}

TEST_F(HttpExecutorTest, ExecuteClipsAgentStringsOnACharacterBoundary) {
  Result<reflexion::v1::ExecutionResult> r;
  executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k"),
                     r.Callback());
  std::string message = "x";  // so that 4096 falls inside a character
  for (int i = 0; i < 3000; ++i) message += "\xC3\xA9";
  client_.Ok(Json{{"applied", true}, {"message", message}});
  ASSERT_THAT(*r.value, IsOk());
  EXPECT_TRUE(core::IsValidUtf8((*r.value)->message()));
  EXPECT_EQ((*r.value)->message().size(), 4095u);
}

TEST_F(HttpExecutorTest, ABodyThatIsNotUtf8FailsCleanly) {
  Result<reflexion::v1::ExecutionResult> r;
  executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k"),
                     r.Callback());
  client_.Ok(std::string("{\"applied\": true, \"message\": \"\xFF\xFE\"}"));
  ASSERT_THAT(*r.value, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(core::IsValidUtf8(r.value->status().message()));
}

// --- Observe --------------------------------------------------------------

TEST_F(HttpExecutorTest, ObservePollsPodStatusWithEscapedPodAndNamespace) {
  reflexion::v1::Action a =
      MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k");
  a.set_pod_name("web/1 ?");
  a.set_namespace_("shop&x=1");
  executor_->Observe(a, absl::Seconds(10), observation_.Callback());
  ASSERT_EQ(client_.pending(), 1u) << "the first poll goes at once";
  const HttpRequest req = client_.Front();
  EXPECT_EQ(req.method, "GET");
  EXPECT_EQ(req.url,
            "http://agent.test:8080/api/v1/pod-status/"
            "web%2F1%20%3F?namespace=shop%26x%3D1");
  EXPECT_EQ(req.max_attempts, 1);
}

TEST_F(HttpExecutorTest, ObservePollsEveryIntervalThroughTheWindow) {
  Observe(absl::Seconds(20));
  for (int i = 0; i < 10 && !observation_.value.has_value(); ++i) {
    Poll(PodStatus(true));
  }
  ASSERT_TRUE(observation_.value.has_value());
  // At 0, 5, 10, 15 and once more at the end (20).
  EXPECT_EQ(client_.sent().size(), 5u);
  EXPECT_EQ(clock_.Now() - start_, absl::Seconds(20));
  EXPECT_EQ(timer_.pending(), 0u) << "the give-up timer is cancelled";
}

TEST_F(HttpExecutorTest, HealthyAndStaysHealthyIsASuccess) {
  Observe(absl::Seconds(30));
  Poll(PodStatus(false, 3, "CrashLoopBackOff"));  // t = 0
  Poll(PodStatus(false, 3, "CrashLoopBackOff"));  // t = 5
  Poll(PodStatus(true, 3));                       // t = 10
  while (!observation_.value.has_value()) Poll(PodStatus(true, 3));
  ASSERT_THAT(*observation_.value, IsOk());
  const reflexion::v1::Observation& o = **observation_.value;
  EXPECT_TRUE(o.success());
  EXPECT_TRUE(o.recovered());
  EXPECT_DOUBLE_EQ(o.time_to_recovery_s(), 10.0);
  EXPECT_DOUBLE_EQ(o.window_s(), 30.0);
  EXPECT_EQ(o.restarts(), 0);
  EXPECT_EQ(o.failure_reason(), "");
  EXPECT_THAT(o.signals(), Contains(HasSubstr("stayed healthy")));
}

TEST_F(HttpExecutorTest, TimeToRecoveryComesFromTheInjectedClock) {
  Observe(absl::Seconds(30));
  Poll(PodStatus(false));  // t = 0
  // The second poll's answer takes 1.5 s (by the fake clock).
  ASSERT_EQ(client_.pending(), 1u);
  clock_.Advance(absl::Milliseconds(1500));
  Poll(PodStatus(true));
  while (!observation_.value.has_value()) Poll(PodStatus(true));
  ASSERT_THAT(*observation_.value, IsOk());
  EXPECT_DOUBLE_EQ((*observation_.value)->time_to_recovery_s(), 6.5);
  EXPECT_TRUE((*observation_.value)->success());
}

TEST_F(HttpExecutorTest, HealsThenRegressesIsNotASuccess) {
  Observe(absl::Seconds(30));
  Poll(PodStatus(true, 1));                       // t = 0
  Poll(PodStatus(true, 1));                       // t = 5
  Poll(PodStatus(false, 2, "CrashLoopBackOff"));  // t = 10
  while (!observation_.value.has_value()) Poll(PodStatus(true, 2));
  ASSERT_THAT(*observation_.value, IsOk());
  const reflexion::v1::Observation& o = **observation_.value;
  EXPECT_FALSE(o.success());
  EXPECT_TRUE(o.recovered());
  EXPECT_DOUBLE_EQ(o.time_to_recovery_s(), 0.0);
  EXPECT_EQ(o.restarts(), 1);
  EXPECT_THAT(o.signals(),
              Contains(HasSubstr("regressed after being healthy")));
  EXPECT_THAT(o.signals(), Contains(HasSubstr("CrashLoopBackOff")));
}

TEST_F(HttpExecutorTest, ARestartBetweenHealthyPollsIsARegression) {
  Observe(absl::Seconds(15));
  Poll(PodStatus(true, 4));
  Poll(PodStatus(true, 5));
  while (!observation_.value.has_value()) Poll(PodStatus(true, 5));
  ASSERT_THAT(*observation_.value, IsOk());
  EXPECT_FALSE((*observation_.value)->success());
  EXPECT_THAT((*observation_.value)->signals(),
              Contains(HasSubstr("restarted 1 time(s)")));
}

TEST_F(HttpExecutorTest, UnhealthyAtTheEndIsNotASuccess) {
  Observe(absl::Seconds(10));
  Poll(PodStatus(true));
  Poll(PodStatus(true));
  Poll(Json{{"healthy", false}, {"phase", "Pending"}});
  ASSERT_TRUE(observation_.value.has_value());
  ASSERT_THAT(*observation_.value, IsOk());
  EXPECT_FALSE((*observation_.value)->success());
  EXPECT_EQ((*observation_.value)->failure_reason(), "Pending");
}

TEST_F(HttpExecutorTest, NeverHealsReportsTheLastFailureReason) {
  Observe(absl::Seconds(10));
  Poll(PodStatus(false, 0, "ImagePullBackOff"));
  Poll(PodStatus(false, 0, "ImagePullBackOff"));
  Poll(Json{{"healthy", false}, {"reason", "ErrImagePull"}});
  ASSERT_TRUE(observation_.value.has_value());
  ASSERT_THAT(*observation_.value, IsOk());
  const reflexion::v1::Observation& o = **observation_.value;
  EXPECT_FALSE(o.success());
  EXPECT_FALSE(o.recovered());
  EXPECT_DOUBLE_EQ(o.time_to_recovery_s(), 0.0);
  EXPECT_EQ(o.failure_reason(), "ErrImagePull");
  EXPECT_THAT(o.signals(), Contains(HasSubstr("never healthy")));
}

TEST_F(HttpExecutorTest, AWindowWhereEveryPollFailsIsUnavailable) {
  Observe(absl::Seconds(10));
  while (!observation_.value.has_value()) {
    Poll(absl::DeadlineExceededError("no answer"));
  }
  EXPECT_THAT(*observation_.value,
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("http://agent.test:8080/api/v1/pod-status/"
                                 "web-7d9f-abc?namespace=shop")));
  EXPECT_EQ(client_.sent().size(), 3u);
}

TEST_F(HttpExecutorTest, SomeFailedPollsAreToleratedAndCounted) {
  Observe(absl::Seconds(10));
  Poll(absl::UnavailableError("connection refused"));
  Poll(PodStatus(true));
  Poll(std::string("not json"));
  ASSERT_TRUE(observation_.value.has_value());
  ASSERT_THAT(*observation_.value, IsOk());
  const reflexion::v1::Observation& o = **observation_.value;
  EXPECT_TRUE(o.success()) << "the last answered poll was healthy";
  EXPECT_DOUBLE_EQ(o.time_to_recovery_s(), 5.0);
  EXPECT_THAT(o.signals(), Contains(HasSubstr("1 of 3 status poll(s)")));
  EXPECT_THAT(o.signals(), Contains(HasSubstr("2 poll(s) failed")));
}

TEST_F(HttpExecutorTest, APodStatusWithoutHealthyIsAFailedPoll) {
  Observe(absl::ZeroDuration());
  Poll(Json{{"phase", "Running"}, {"ready", true}});
  // Zero window: the first poll is the last one.
  ASSERT_TRUE(observation_.value.has_value());
  EXPECT_THAT(*observation_.value,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("healthy")));
  EXPECT_EQ(client_.sent().size(), 1u);
}

TEST_F(HttpExecutorTest, TheAgentsSignalsAreKeptDistinctAndBounded) {
  Observe(absl::Seconds(5));
  Json s = PodStatus(true);
  s["signals"] = Json::array();
  for (int i = 0; i < 20; ++i) s["signals"].push_back("Started container");
  s["signals"].push_back(std::string(2000, 's'));
  Poll(s);
  Poll(s);
  ASSERT_THAT(*observation_.value, IsOk());
  int started = 0;
  for (const std::string& sig : (*observation_.value)->signals()) {
    EXPECT_LE(sig.size(), 512u);
    if (sig == "Started container") ++started;
  }
  EXPECT_EQ(started, 1);
}

TEST_F(HttpExecutorTest, TheWindowEndWaitsForThePollInFlight) {
  Observe(absl::Seconds(10));
  Poll(PodStatus(false));  // t = 0; the t = 5 poll goes out
  ASSERT_EQ(client_.pending(), 1u);
  timer_.RunFor(absl::Seconds(5));  // the window ends with it in flight
  EXPECT_FALSE(observation_.value.has_value());
  EXPECT_EQ(client_.sent().size(), 2u) << "no second poll at the end";
  client_.Ok(PodStatus(true));
  ASSERT_TRUE(observation_.value.has_value());
  ASSERT_THAT(*observation_.value, IsOk());
  EXPECT_TRUE((*observation_.value)->success());
  EXPECT_DOUBLE_EQ((*observation_.value)->time_to_recovery_s(), 10.0);
  EXPECT_EQ(client_.sent().size(), 2u);
}

TEST_F(HttpExecutorTest, APollThatNeverAnswersEndsTheWindowAfterATimeout) {
  HttpExecutorOptions o;
  o.request_timeout = absl::Seconds(3);
  Make(o);
  Observe(absl::Seconds(10));
  Poll(PodStatus(true));  // t = 0
  Poll(PodStatus(true));  // t = 5
  // The last poll (t = 10) never answers: the client broke its contract.
  ASSERT_EQ(client_.pending(), 1u);
  timer_.RunFor(absl::Seconds(3));
  EXPECT_FALSE(observation_.value.has_value());
  timer_.RunFor(absl::Seconds(1));  // request timeout + 1 s of slack
  ASSERT_TRUE(observation_.value.has_value());
  ASSERT_THAT(*observation_.value, IsOk());
  EXPECT_TRUE((*observation_.value)->success());
  EXPECT_EQ(clock_.Now() - start_, absl::Seconds(14));
  // A late answer changes nothing.
  client_.Ok(PodStatus(false));
  EXPECT_EQ(observation_.calls, 1);
}

TEST_F(HttpExecutorTest, ObserveRefusesABadWindowOrTarget) {
  executor_->Observe(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k"),
                     absl::Seconds(-1), observation_.Callback());
  EXPECT_THAT(*observation_.value,
              StatusIs(absl::StatusCode::kInvalidArgument));
  auto a = MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k");
  a.clear_namespace_();
  executor_->Observe(a, absl::Seconds(1), observation_.Callback());
  EXPECT_THAT(*observation_.value,
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(client_.sent().size(), 0u);
}

TEST_F(HttpExecutorTest, DestroyingTheExecutorEndsOpenWindows) {
  Observe(absl::Seconds(60));
  client_.Ok(PodStatus(true));
  EXPECT_FALSE(observation_.value.has_value());
  executor_.reset();
  ASSERT_EQ(observation_.calls, 1);
  EXPECT_THAT(*observation_.value, StatusIs(absl::StatusCode::kUnavailable,
                                            HasSubstr("shutting down")));
  EXPECT_EQ(timer_.pending(), 0u);
}

TEST_F(HttpExecutorTest, AnExecuteAnsweredAfterTheExecutorIsGoneCompletes) {
  Result<reflexion::v1::ExecutionResult> r;
  executor_->Execute(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k"),
                     r.Callback());
  executor_.reset();
  client_.Ok(Json{{"applied", true}});
  ASSERT_EQ(r.calls, 1);
  EXPECT_THAT(*r.value, IsOk());
}

TEST_F(HttpExecutorTest, ATimerRunningCallbacksInlineDoesNotRecurse) {
  StoppingTimer stopping;
  HttpExecutorOptions o;
  o.base_url = kBase;
  auto e = HttpExecutor::Create(o, &client_, &clock_, &stopping);
  ASSERT_THAT(e, IsOk());
  (*e)->Observe(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k"),
                absl::Seconds(60), observation_.Callback());
  ASSERT_EQ(observation_.calls, 1);
  EXPECT_THAT(*observation_.value, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LE(stopping.calls, 1);
}

// --- Check ----------------------------------------------------------------

TEST_F(HttpExecutorTest, CheckGetsHealthOnce) {
  std::optional<absl::Status> health;
  executor_->Check([&](absl::Status s) { health = s; });
  ASSERT_EQ(client_.pending(), 1u);
  EXPECT_EQ(client_.Front().method, "GET");
  EXPECT_EQ(client_.Front().url, "http://agent.test:8080/health");
  EXPECT_EQ(client_.Front().max_attempts, 1);
  client_.Ok(std::string("ok"));
  ASSERT_TRUE(health.has_value());
  EXPECT_THAT(*health, IsOk());
  EXPECT_EQ(executor_->Describe(*health),
            "http at http://agent.test:8080 (healthy)");
}

TEST_F(HttpExecutorTest, CheckReportsAnUnreachableAgent) {
  std::optional<absl::Status> health;
  executor_->Check([&](absl::Status s) { health = s; });
  client_.Answer(absl::UnavailableError(
      "connection refused: http://agent.test:8080/health"));
  ASSERT_TRUE(health.has_value());
  EXPECT_THAT(*health, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(executor_->Describe(*health),
              HasSubstr("http at http://agent.test:8080 (unreachable: "
                        "UNAVAILABLE: connection refused"));
}

// --- Integration: CurlHttpClient against a fake agent on loopback --------

using ::reflexion::testing::FakeHttpReply;
using ::reflexion::testing::FakeHttpRequest;
using ::reflexion::testing::FakeHttpServer;

FakeHttpReply Reply(int status, std::string body = "") {
  FakeHttpReply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}
FakeHttpReply Reply(FakeHttpReply::Mode mode) {
  FakeHttpReply r;
  r.mode = mode;
  r.body = "{\"applied\": tr";
  return r;
}
FakeHttpReply JsonReply(const Json& j) { return Reply(200, j.dump()); }

std::string HeaderIn(const FakeHttpRequest& r, const std::string& name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) return v;
  }
  return "<absent>";
}

// The Go agent as docs/http-executor.md describes it: the four endpoints,
// execute-fix deduplicated by the Idempotency-Key header, the actions it
// applies counted. Faults are queued per endpoint and answered before the
// normal reply; with apply_before_faults an execute-fix is applied before
// its fault is answered (the answer is lost on the way back, the case an
// idempotency key exists for).
class FakeAgent {
 public:
  FakeAgent()
      : server_([this](const FakeHttpRequest& r) { return Handle(r); }) {}

  std::string url() const { return server_.url(); }
  FakeHttpServer& server() { return server_; }

  void Fault(const std::string& endpoint, std::vector<FakeHttpReply> replies,
             bool apply_before_faults = false) {
    absl::MutexLock lock(&mu_);
    for (FakeHttpReply& r : replies) faults_[endpoint].push_back(std::move(r));
    apply_before_faults_ = apply_before_faults;
  }
  // pod-status answers, one per poll; the last one repeats.
  void PodStatuses(std::vector<FakeHttpReply> replies) {
    absl::MutexLock lock(&mu_);
    statuses_ = std::move(replies);
    next_status_ = 0;
  }
  void SetDiagnosis(FakeHttpReply reply) {
    absl::MutexLock lock(&mu_);
    diagnosis_ = std::move(reply);
  }
  int applications() const {
    absl::MutexLock lock(&mu_);
    return applications_;
  }
  std::vector<FakeHttpRequest> RequestsTo(const std::string& prefix) const {
    std::vector<FakeHttpRequest> out;
    for (FakeHttpRequest& r : server_.requests()) {
      if (absl::StartsWith(r.path, prefix)) out.push_back(std::move(r));
    }
    return out;
  }

 private:
  static std::string EndpointOf(const FakeHttpRequest& r) {
    if (r.method == "POST" && r.path == "/api/v1/k8sgpt-analyze") {
      return "analyze";
    }
    if (r.method == "POST" && r.path == "/api/v1/execute-fix") {
      return "execute";
    }
    if (r.method == "GET" && absl::StartsWith(r.path, "/api/v1/pod-status/")) {
      return "status";
    }
    if (r.method == "GET" && r.path == "/health") return "health";
    return "";
  }

  FakeHttpReply Handle(const FakeHttpRequest& r) {
    absl::MutexLock lock(&mu_);
    const std::string endpoint = EndpointOf(r);
    if (endpoint.empty()) return Reply(404, "no such endpoint");
    const std::string key = HeaderIn(r, "idempotency-key");
    if (endpoint == "execute" && apply_before_faults_) ApplyLocked(r, key);
    if (auto& q = faults_[endpoint]; !q.empty()) {
      FakeHttpReply fault = std::move(q.front());
      q.pop_front();
      return fault;
    }
    if (endpoint == "analyze") return diagnosis_;
    if (endpoint == "health") return JsonReply({{"status", "ok"}});
    if (endpoint == "status") {
      if (statuses_.empty()) return JsonReply({{"healthy", true}});
      return statuses_[std::min(next_status_++, statuses_.size() - 1)];
    }
    return ApplyLocked(r, key);
  }

  // Applies the action of key `key` once; every later call with the key
  // answers the first result.
  FakeHttpReply ApplyLocked(const FakeHttpRequest& r, const std::string& key)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (key == "<absent>") return Reply(400, "Idempotency-Key required");
    if (auto it = results_.find(key); it != results_.end()) return it->second;
    const Json body = Json::parse(r.body, nullptr, false);
    if (!body.is_object() || !body.contains("strategy")) {
      return Reply(400, "bad body");
    }
    ++applications_;
    FakeHttpReply done = JsonReply(
        {{"applied", true},
         {"dry_run", false},
         {"message",
          absl::StrCat("applied ", body["strategy"].value("type", "?"), " to ",
                       body.value("namespace", "?"), "/",
                       body.value("pod_name", "?"))},
         {"changes", Json::array()}});
    results_.emplace(key, done);
    return done;
  }

  mutable absl::Mutex mu_;
  std::map<std::string, std::deque<FakeHttpReply>> faults_ ABSL_GUARDED_BY(mu_);
  bool apply_before_faults_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, FakeHttpReply> results_ ABSL_GUARDED_BY(mu_);
  int applications_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<FakeHttpReply> statuses_ ABSL_GUARDED_BY(mu_);
  size_t next_status_ ABSL_GUARDED_BY(mu_) = 0;
  FakeHttpReply diagnosis_ ABSL_GUARDED_BY(mu_) =
      JsonReply({{"last_healthy_image", "shop/app:1.3"},
                 {"memory_limit_bytes", 134217728}});
  // Last: its thread (which calls Handle) stops before the state goes.
  FakeHttpServer server_;
};

// The result of an asynchronous call, shared with its callback so that a
// call that outlives a failed wait cannot write into a dead frame.
template <typename T>
class Awaited {
 public:
  Awaited() : state_(std::make_shared<State>()) {}
  core::Callback<T> Callback() {
    return [state = state_](absl::StatusOr<T> r) {
      absl::MutexLock lock(&state->mu);
      state->value = std::move(r);
      state->done.Notify();
    };
  }
  absl::StatusOr<T> Get() {
    if (!state_->done.WaitForNotificationWithTimeout(absl::Seconds(60))) {
      return absl::InternalError("test: no answer within 60 s");
    }
    absl::MutexLock lock(&state_->mu);
    return *state_->value;
  }

 private:
  struct State {
    absl::Notification done;
    absl::Mutex mu;
    std::optional<absl::StatusOr<T>> value;
  };
  std::shared_ptr<State> state_;
};

class HttpExecutorIntegrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CurlHttpClient::Options o;
    o.clock = &clock_;
    o.on_retry = [this](const RetryDecision& d) {
      absl::MutexLock lock(&mu_);
      retries_.push_back(d);
    };
    absl::StatusOr<std::unique_ptr<CurlHttpClient>> client =
        CurlHttpClient::Create(std::move(o));
    ASSERT_THAT(client, IsOk());
    client_ = *std::move(client);
    Make(Options());
  }

  // Short timeouts and backoffs: a retry waits a few ms.
  HttpExecutorOptions Options() {
    HttpExecutorOptions o;
    o.base_url = agent_.url();
    o.request_timeout = absl::Seconds(2);
    o.connect_timeout = absl::Seconds(1);
    o.poll_interval = absl::Milliseconds(100);
    o.initial_backoff = absl::Milliseconds(1);
    o.max_backoff = absl::Milliseconds(20);
    return o;
  }
  void Make(HttpExecutorOptions o) {
    executor_.reset();
    absl::StatusOr<std::unique_ptr<HttpExecutor>> e =
        HttpExecutor::Create(std::move(o), client_.get(), &clock_, &timer_);
    ASSERT_THAT(e, IsOk());
    executor_ = *std::move(e);
  }

  absl::StatusOr<reflexion::v1::ExecutionResult> Execute(
      const reflexion::v1::Action& a) {
    Awaited<reflexion::v1::ExecutionResult> r;
    executor_->Execute(a, r.Callback());
    return r.Get();
  }
  absl::StatusOr<reflexion::v1::Diagnosis> Diagnose() {
    reflexion::v1::Incident in;
    in.set_pod_name("web-7d9f-abc");
    in.set_namespace_("shop");
    in.set_request_id("req-1");
    Awaited<reflexion::v1::Diagnosis> r;
    executor_->Diagnose(in, r.Callback());
    return r.Get();
  }
  absl::StatusOr<reflexion::v1::Observation> Observe(absl::Duration window) {
    Awaited<reflexion::v1::Observation> r;
    executor_->Observe(MakeAction(reflexion::v1::ACTION_TYPE_DELETE_POD, "k"),
                       window, r.Callback());
    return r.Get();
  }
  reflexion::v1::Action Memory(const std::string& key) {
    return MakeAction(reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, key);
  }
  std::vector<RetryDecision> retries() {
    absl::MutexLock lock(&mu_);
    return retries_;
  }

  core::RealClock clock_;
  FakeAgent agent_;
  absl::Mutex mu_;
  std::vector<RetryDecision> retries_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<CurlHttpClient> client_;
  graph::TimerThread timer_;
  // Last: destroyed first, while the client and the timer still run.
  std::unique_ptr<HttpExecutor> executor_;
};

TEST_F(HttpExecutorIntegrationTest, DiagnoseAndExecuteRoundTrip) {
  absl::StatusOr<reflexion::v1::Diagnosis> d = Diagnose();
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->last_healthy_image(), "shop/app:1.3");
  EXPECT_EQ(d->memory_limit_bytes(), 134217728);
  EXPECT_EQ(d->source(), "http");

  absl::StatusOr<reflexion::v1::ExecutionResult> e = Execute(Memory("wf/1"));
  ASSERT_THAT(e, IsOk());
  EXPECT_TRUE(e->applied());
  EXPECT_EQ(e->executor(), "http");
  EXPECT_EQ(e->message(), "applied increase_memory_limit to shop/web-7d9f-abc");
  EXPECT_EQ(agent_.applications(), 1);

  std::vector<FakeHttpRequest> sent = agent_.RequestsTo("/api/v1/execute-fix");
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(HeaderIn(sent[0], "idempotency-key"), "wf/1");
  EXPECT_EQ(HeaderIn(sent[0], "content-type"), "application/json");
  const Json body = Json::parse(sent[0].body, nullptr, false);
  EXPECT_EQ(body.value("idempotency_key", ""), "wf/1");
  EXPECT_EQ(body.value("strategy", Json::object()).value("tier", ""), "B");
  std::vector<FakeHttpRequest> analyze =
      agent_.RequestsTo("/api/v1/k8sgpt-analyze");
  ASSERT_EQ(analyze.size(), 1u);
  EXPECT_EQ(
      Json::parse(analyze[0].body, nullptr, false).value("incident_id", ""),
      "req-1");
}

TEST_F(HttpExecutorIntegrationTest, A429WithRetryAfterThenSuccess) {
  FakeHttpReply busy = Reply(429, "slow down");
  busy.headers = {{"Retry-After", "1"}};
  agent_.Fault("execute", {busy});
  absl::StatusOr<reflexion::v1::ExecutionResult> e = Execute(Memory("k"));
  ASSERT_THAT(e, IsOk());
  EXPECT_TRUE(e->applied());
  EXPECT_EQ(agent_.applications(), 1);
  EXPECT_EQ(agent_.RequestsTo("/api/v1/execute-fix").size(), 2u);
  std::vector<RetryDecision> d = retries();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].retry_after, absl::Seconds(1));
  EXPECT_EQ(d[0].delay, absl::Milliseconds(20)) << "capped at max_backoff";
}

TEST_F(HttpExecutorIntegrationTest, A503ThenSuccess) {
  agent_.Fault("execute", {Reply(503, "busy")});
  absl::StatusOr<reflexion::v1::ExecutionResult> e = Execute(Memory("k"));
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(agent_.applications(), 1);
  EXPECT_EQ(agent_.RequestsTo("/api/v1/execute-fix").size(), 2u);
}

TEST_F(HttpExecutorIntegrationTest, AnAgentThatHangsTimesOut) {
  HttpExecutorOptions o = Options();
  o.request_timeout = absl::Milliseconds(300);
  o.max_attempts = 2;
  Make(o);
  agent_.Fault("execute", {Reply(FakeHttpReply::Mode::kHang),
                           Reply(FakeHttpReply::Mode::kHang)});
  absl::StatusOr<reflexion::v1::ExecutionResult> e = Execute(Memory("k"));
  EXPECT_THAT(e, StatusIs(absl::StatusCode::kDeadlineExceeded,
                          HasSubstr(agent_.url() + "/api/v1/execute-fix")));
  EXPECT_EQ(agent_.RequestsTo("/api/v1/execute-fix").size(), 2u);
  EXPECT_EQ(agent_.applications(), 0);
}

TEST_F(HttpExecutorIntegrationTest, ConnectionRefusedIsUnavailable) {
  agent_.server().Stop();
  EXPECT_THAT(Execute(Memory("k")),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("cannot connect to " + agent_.url())));
  absl::Notification checked;
  absl::Status health;
  executor_->Check([&](absl::Status s) {
    health = s;
    checked.Notify();
  });
  ASSERT_TRUE(checked.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_THAT(health, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(executor_->Describe(health),
              HasSubstr(absl::StrCat("http at ", agent_.url(),
                                     " (unreachable: UNAVAILABLE")));
}

TEST_F(HttpExecutorIntegrationTest, CheckReportsAHealthyAgent) {
  absl::Notification checked;
  absl::Status health = absl::UnknownError("unset");
  executor_->Check([&](absl::Status s) {
    health = s;
    checked.Notify();
  });
  ASSERT_TRUE(checked.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_THAT(health, IsOk());
  EXPECT_EQ(executor_->Describe(health),
            absl::StrCat("http at ", agent_.url(), " (healthy)"));
}

TEST_F(HttpExecutorIntegrationTest, ATruncatedBodyIsUnavailable) {
  agent_.Fault("analyze", {Reply(FakeHttpReply::Mode::kTruncate),
                           Reply(FakeHttpReply::Mode::kTruncate),
                           Reply(FakeHttpReply::Mode::kTruncate)});
  EXPECT_THAT(Diagnose(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("truncated response from " + agent_.url())));
}

TEST_F(HttpExecutorIntegrationTest, ATenMegabyteBodyIsRefused) {
  agent_.SetDiagnosis(JsonReply({{"logs", std::string(10 << 20, 'x')}}));
  EXPECT_THAT(Diagnose(), StatusIs(absl::StatusCode::kResourceExhausted,
                                   HasSubstr(agent_.url())));
}

TEST_F(HttpExecutorIntegrationTest, A200ThatDoesNotParseFailsTheAttempt) {
  // Applied, then answered with a proxy's page: never guessed a success.
  agent_.Fault("execute", {Reply(200, "<html>upstream error</html>")},
               /*apply_before_faults=*/true);
  EXPECT_THAT(Execute(Memory("k")),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("not JSON"),
                             HasSubstr(agent_.url() + "/api/v1/execute-fix"))));
  EXPECT_EQ(agent_.RequestsTo("/api/v1/execute-fix").size(), 1u)
      << "a 200 is not retried by the client";
  // The workflow's retry of the node: same key, the agent answers the
  // first outcome, nothing is applied twice.
  absl::StatusOr<reflexion::v1::ExecutionResult> again = Execute(Memory("k"));
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->applied());
  EXPECT_EQ(agent_.applications(), 1);
}

TEST_F(HttpExecutorIntegrationTest,
       ExecuteFixIsAppliedExactlyOnceUnderRetries) {
  // Each fault is answered after the action was applied: the answer is
  // lost, the client retries with the same Idempotency-Key.
  agent_.Fault("execute",
               {Reply(FakeHttpReply::Mode::kClose), Reply(503, "oops"),
                Reply(FakeHttpReply::Mode::kTruncate)},
               /*apply_before_faults=*/true);
  HttpExecutorOptions o = Options();
  o.max_attempts = 4;
  Make(o);
  absl::StatusOr<reflexion::v1::ExecutionResult> e = Execute(Memory("wf/7"));
  ASSERT_THAT(e, IsOk());
  EXPECT_TRUE(e->applied());
  EXPECT_FALSE(e->deduplicated());
  std::vector<FakeHttpRequest> sent = agent_.RequestsTo("/api/v1/execute-fix");
  ASSERT_EQ(sent.size(), 4u);
  for (const FakeHttpRequest& r : sent) {
    EXPECT_EQ(HeaderIn(r, "idempotency-key"), "wf/7");
    EXPECT_EQ(r.body, sent[0].body);
  }
  EXPECT_EQ(agent_.applications(), 1);

  // And locally: the same key again does not reach the agent.
  absl::StatusOr<reflexion::v1::ExecutionResult> again =
      Execute(Memory("wf/7"));
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated());
  EXPECT_EQ(agent_.RequestsTo("/api/v1/execute-fix").size(), 4u);
  EXPECT_EQ(agent_.applications(), 1);
}

TEST_F(HttpExecutorIntegrationTest, ObserveHealsAndStaysHealthy) {
  agent_.PodStatuses({JsonReply({{"healthy", false},
                                 {"phase", "Running"},
                                 {"restarts", 3},
                                 {"failure_reason", "CrashLoopBackOff"}}),
                      JsonReply({{"healthy", true}, {"restarts", 3}})});
  absl::StatusOr<reflexion::v1::Observation> o =
      Observe(absl::Milliseconds(500));
  ASSERT_THAT(o, IsOk());
  EXPECT_TRUE(o->success());
  EXPECT_TRUE(o->recovered());
  EXPECT_GT(o->time_to_recovery_s(), 0.0);
  EXPECT_EQ(o->restarts(), 0);
  std::vector<FakeHttpRequest> polls = agent_.RequestsTo("/api/v1/pod-status/");
  ASSERT_GE(polls.size(), 3u);
  EXPECT_EQ(polls[0].path, "/api/v1/pod-status/web-7d9f-abc?namespace=shop");
}

TEST_F(HttpExecutorIntegrationTest, ObserveSeesARegression) {
  agent_.PodStatuses(
      {JsonReply({{"healthy", true}, {"restarts", 0}}),
       JsonReply(
           {{"healthy", false}, {"restarts", 1}, {"reason", "OOMKilled"}})});
  absl::StatusOr<reflexion::v1::Observation> o =
      Observe(absl::Milliseconds(400));
  ASSERT_THAT(o, IsOk());
  EXPECT_FALSE(o->success());
  EXPECT_TRUE(o->recovered());
  EXPECT_EQ(o->failure_reason(), "OOMKilled");
  EXPECT_EQ(o->restarts(), 1);
  EXPECT_THAT(o->signals(),
              Contains(HasSubstr("regressed after being healthy")));
}

TEST_F(HttpExecutorIntegrationTest, ObserveWithAHangingAgentEndsWithinBounds) {
  HttpExecutorOptions opts = Options();
  opts.request_timeout = absl::Milliseconds(300);
  Make(opts);
  agent_.PodStatuses({Reply(FakeHttpReply::Mode::kHang)});
  const absl::Time start = clock_.Now();
  absl::StatusOr<reflexion::v1::Observation> o =
      Observe(absl::Milliseconds(500));
  const absl::Duration took = clock_.Now() - start;
  EXPECT_THAT(o, StatusIs(absl::StatusCode::kUnavailable,
                          HasSubstr(agent_.url() + "/api/v1/pod-status/")));
  // Window + one request timeout (+ the executor's 1 s of slack); the
  // margin is for a loaded machine, the point is that it ends.
  EXPECT_LT(took, absl::Milliseconds(500 + 300) + absl::Seconds(1) +
                      absl::Seconds(5));
}

}  // namespace
}  // namespace reflexion::upstream

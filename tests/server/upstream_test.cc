// CurlHttpClient against the loopback FakeHttpServer, real libcurl: each
// fault mode, the error mapping, retries (asserted on the recorded backoff
// decisions, never on wall time) and the breaker (on a FakeClock).

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "core/ports/clock.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/upstream/curl_http_client.h"
#include "tests/testing/fake_http_server.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::upstream {
namespace {

using ::reflexion::testing::FakeHttpReply;
using ::reflexion::testing::FakeHttpRequest;
using ::reflexion::testing::FakeHttpServer;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

FakeHttpReply Answer(int status, std::string body = "") {
  FakeHttpReply r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

FakeHttpReply WithMode(FakeHttpReply::Mode mode) {
  FakeHttpReply r;
  r.mode = mode;
  r.body = "partial";
  return r;
}

// Replies from a script, one per request; the last one repeats.
FakeHttpServer::Handler Script(std::vector<FakeHttpReply> replies) {
  auto shared =
      std::make_shared<std::vector<FakeHttpReply>>(std::move(replies));
  auto next = std::make_shared<size_t>(0);
  return [shared, next](const FakeHttpRequest&) {
    size_t i = std::min(*next, shared->size() - 1);
    ++*next;
    return (*shared)[i];
  };
}

// Waits for one Send. The timeout only keeps a broken client from hanging
// the suite; no test depends on it.
absl::StatusOr<HttpResponse> Fetch(HttpClient& client, HttpRequest request) {
  absl::Notification done;
  absl::StatusOr<HttpResponse> result;
  client.Send(std::move(request), [&](absl::StatusOr<HttpResponse> r) {
    result = std::move(r);
    done.Notify();
  });
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(60))) {
    return absl::InternalError("test: no answer within 60 s");
  }
  return result;
}

class CurlHttpClientTest : public ::testing::Test {
 protected:
  CurlHttpClientTest() : server_(Script({Answer(200, "ok")})) {}

  std::unique_ptr<CurlHttpClient> MakeClient(int breaker_failures = 5,
                                             uint64_t seed = 42) {
    CurlHttpClient::Options options;
    options.clock = &clock_;
    options.rng_seed = seed;
    options.breaker_failures = breaker_failures;
    options.on_retry = [this](const RetryDecision& d) {
      absl::MutexLock lock(&mu_);
      decisions_.push_back(d);
    };
    absl::StatusOr<std::unique_ptr<CurlHttpClient>> client =
        CurlHttpClient::Create(std::move(options));
    CHECK(client.ok()) << client.status();
    return *std::move(client);
  }

  // A GET of `path` with short backoffs (a retry waits a few ms).
  HttpRequest Get(const std::string& path = "/v1/thing") {
    HttpRequest r;
    r.url = server_.url() + path;
    r.initial_backoff = absl::Milliseconds(1);
    r.max_backoff = absl::Milliseconds(5);
    return r;
  }

  std::vector<RetryDecision> decisions() {
    absl::MutexLock lock(&mu_);
    return decisions_;
  }

  UpstreamStats StatsOf(const HttpClient& client, const std::string& name) {
    for (const UpstreamStats& s : client.Upstreams()) {
      if (s.upstream == name) return s;
    }
    ADD_FAILURE() << "no upstream " << name;
    return {};
  }

  std::string upstream() const {
    return absl::StrCat("http://127.0.0.1:", server_.port());
  }

  core::FakeClock clock_;
  FakeHttpServer server_;
  absl::Mutex mu_;
  std::vector<RetryDecision> decisions_ ABSL_GUARDED_BY(mu_);
};

TEST_F(CurlHttpClientTest, ReturnsA200BodyVerbatimWithLowerCasedHeaders) {
  // Not JSON, not UTF-8, a NUL inside: the caller's business, returned as is.
  std::string bytes("{not json\0\xff\xfe}", 14);
  FakeHttpReply reply = Answer(200, bytes);
  reply.headers = {{"X-Request-Id", "abc"}};
  server_.SetHandler(Script({reply}));
  auto client = MakeClient();

  absl::StatusOr<HttpResponse> r = Fetch(*client, Get());

  ASSERT_THAT(r, IsOk());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, bytes);
  EXPECT_EQ(r->attempts, 1);
  EXPECT_THAT(r->headers, Contains(Pair("x-request-id", "abc")));
}

TEST_F(CurlHttpClientTest, PostSendsItsBodyAndHeaders) {
  auto client = MakeClient();
  HttpRequest r = Get("/api/v1/execute-fix?dry_run=1");
  r.method = "POST";
  r.body = std::string(5000, 'x');  // past curl's 100-continue threshold
  r.headers = {{"Authorization", "Bearer s3cret"},
               {"Content-Type", "application/json"}};

  ASSERT_THAT(Fetch(*client, r), IsOk());

  std::vector<FakeHttpRequest> got = server_.requests();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].method, "POST");
  EXPECT_EQ(got[0].path, "/api/v1/execute-fix?dry_run=1");
  EXPECT_EQ(got[0].body, r.body);
  EXPECT_THAT(got[0].headers, Contains(Pair("authorization", "Bearer s3cret")));
  EXPECT_THAT(got[0].headers,
              Contains(Pair("content-type", "application/json")));
  EXPECT_THAT(got[0].headers, Not(Contains(Pair("expect", ::testing::_))));
}

TEST_F(CurlHttpClientTest, Retries429AndHonoursRetryAfterSeconds) {
  FakeHttpReply busy = Answer(429, "slow down");
  busy.headers = {{"Retry-After", "1"}};
  server_.SetHandler(Script({busy, Answer(200, "ok")}));
  auto client = MakeClient();
  HttpRequest r = Get();
  r.max_backoff = absl::Seconds(10);

  absl::StatusOr<HttpResponse> got = Fetch(*client, r);

  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->attempts, 2);
  EXPECT_EQ(got->body, "ok");
  std::vector<RetryDecision> d = decisions();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].attempt, 1);
  EXPECT_EQ(d[0].upstream, upstream());
  EXPECT_THAT(d[0].error, StatusIs(absl::StatusCode::kResourceExhausted,
                                   HasSubstr("HTTP 429")));
  EXPECT_LE(d[0].jittered_backoff, absl::Milliseconds(1));
  EXPECT_EQ(d[0].retry_after, absl::Seconds(1));
  EXPECT_EQ(d[0].delay, absl::Seconds(1));
}

TEST_F(CurlHttpClientTest, RetryAfterHttpDateCountsFromTheClockCappedAtMax) {
  FakeHttpReply busy = Answer(503);
  busy.headers = {
      {"Retry-After",
       absl::FormatTime("%a, %d %b %Y %H:%M:%S GMT",
                        clock_.Now() + absl::Seconds(3), absl::UTCTimeZone())}};
  server_.SetHandler(Script({busy, Answer(200, "ok")}));
  auto client = MakeClient();
  HttpRequest r = Get();
  r.max_backoff = absl::Milliseconds(50);

  absl::StatusOr<HttpResponse> got = Fetch(*client, r);

  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->attempts, 2);
  std::vector<RetryDecision> d = decisions();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].retry_after, absl::Seconds(3));
  EXPECT_EQ(d[0].delay, absl::Milliseconds(50));
}

TEST_F(CurlHttpClientTest, Retries503ThenSucceedsWithFullJitterBackoff) {
  server_.SetHandler(Script({Answer(503), Answer(503), Answer(200, "ok")}));
  auto client = MakeClient();
  HttpRequest r = Get();
  r.initial_backoff = absl::Milliseconds(2);
  r.max_backoff = absl::Milliseconds(3);

  absl::StatusOr<HttpResponse> got = Fetch(*client, r);

  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->attempts, 3);
  EXPECT_EQ(server_.request_count(), 3u);
  std::vector<RetryDecision> d = decisions();
  ASSERT_EQ(d.size(), 2u);
  // Ceilings 2 ms, then min(3 ms, 4 ms).
  EXPECT_LE(d[0].jittered_backoff, absl::Milliseconds(2));
  EXPECT_LE(d[1].jittered_backoff, absl::Milliseconds(3));
  EXPECT_EQ(d[0].delay, d[0].jittered_backoff);
  EXPECT_EQ(d[1].attempt, 2);
}

TEST_F(CurlHttpClientTest, TheSameSeedDrawsTheSameJitter) {
  server_.SetHandler(Script({Answer(503)}));
  std::vector<absl::Duration> runs[2];
  for (auto& run : runs) {
    {
      absl::MutexLock lock(&mu_);
      decisions_.clear();
    }
    auto client = MakeClient(/*breaker_failures=*/100, /*seed=*/7);
    HttpRequest r = Get();
    r.max_attempts = 4;
    r.initial_backoff = absl::Milliseconds(1);
    r.max_backoff = absl::Milliseconds(4);
    ASSERT_THAT(Fetch(*client, r), StatusIs(absl::StatusCode::kUnavailable));
    for (const RetryDecision& d : decisions()) {
      run.push_back(d.jittered_backoff);
    }
  }
  EXPECT_EQ(runs[0].size(), 3u);
  EXPECT_EQ(runs[0], runs[1]);
}

TEST_F(CurlHttpClientTest, Persistent503IsUnavailableNamingUrlAttemptsBody) {
  server_.SetHandler(Script({Answer(503, "upstream overloaded")}));
  auto client = MakeClient();
  HttpRequest r = Get("/v1/chat/completions");

  EXPECT_THAT(
      Fetch(*client, r),
      StatusIs(absl::StatusCode::kUnavailable,
               HasSubstr(absl::StrCat("HTTP 503 from ", server_.url(),
                                      "/v1/chat/completions (3 attempts): "
                                      "upstream overloaded"))));
  EXPECT_EQ(server_.request_count(), 3u);
}

TEST_F(CurlHttpClientTest, ErrorBodySnippetIsAtMost200BytesOfValidUtf8) {
  // One byte, then two-byte characters: 200 bytes would end inside one.
  std::string body = "a";
  for (int i = 0; i < 150; ++i) body += "\xc3\xa9";
  body += "\xff\xff";
  server_.SetHandler(Script({Answer(500, body)}));
  auto client = MakeClient();
  HttpRequest r = Get();
  r.max_attempts = 1;

  absl::StatusOr<HttpResponse> got = Fetch(*client, r);

  ASSERT_THAT(got, StatusIs(absl::StatusCode::kUnavailable));
  std::string message(got.status().message());
  EXPECT_TRUE(core::IsValidUtf8(message));
  size_t snippet = message.size() - message.find("): ") - 3;
  EXPECT_EQ(snippet, 199u);
}

TEST_F(CurlHttpClientTest, HangPastTheTimeoutIsDeadlineExceeded) {
  server_.SetHandler(Script({WithMode(FakeHttpReply::Mode::kHang)}));
  auto client = MakeClient();
  HttpRequest r = Get("/slow");
  r.timeout = absl::Milliseconds(200);
  r.max_attempts = 1;

  EXPECT_THAT(Fetch(*client, r),
              StatusIs(absl::StatusCode::kDeadlineExceeded,
                       AllOf(HasSubstr("no complete answer within 200ms"),
                             HasSubstr(server_.url() + "/slow"),
                             HasSubstr("(1 attempt)"))));
}

TEST_F(CurlHttpClientTest, ConnectionRefusedIsUnavailableAfterRetries) {
  server_.Stop();
  auto client = MakeClient();

  EXPECT_THAT(Fetch(*client, Get()),
              StatusIs(absl::StatusCode::kUnavailable,
                       AllOf(HasSubstr("cannot connect to " + server_.url()),
                             HasSubstr("(3 attempts)"))));
  EXPECT_EQ(decisions().size(), 2u);
}

TEST_F(CurlHttpClientTest, ConnectionClosedWithoutAnswerIsUnavailable) {
  server_.SetHandler(Script({WithMode(FakeHttpReply::Mode::kClose)}));
  auto client = MakeClient();
  HttpRequest r = Get();
  r.max_attempts = 1;

  EXPECT_THAT(Fetch(*client, r),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("no response from " + server_.url())));
}

TEST_F(CurlHttpClientTest, TruncatedBodyIsUnavailable) {
  server_.SetHandler(Script({WithMode(FakeHttpReply::Mode::kTruncate)}));
  auto client = MakeClient();
  HttpRequest r = Get();
  r.max_attempts = 1;

  EXPECT_THAT(Fetch(*client, r),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("truncated response from " + server_.url())));
}

TEST_F(CurlHttpClientTest, AnnouncedBodyOverTheCapIsResourceExhausted) {
  server_.SetHandler(Script({Answer(200, std::string(10 << 20, 'x'))}));
  auto client = MakeClient();
  HttpRequest r = Get("/big");

  EXPECT_THAT(Fetch(*client, r),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("response from " + server_.url() +
                                 "/big exceeds 1048576 bytes (1 attempt)")));
  EXPECT_EQ(server_.request_count(), 1u);  // not retried
}

TEST_F(CurlHttpClientTest, ChunkedBodyOverTheCapIsCutInTheWriteCallback) {
  // No Content-Length: only the running count can catch it.
  std::string chunked;
  std::string chunk(64 << 10, 'y');
  for (int i = 0; i < 160; ++i) {  // 10 MiB
    absl::StrAppend(&chunked, absl::Hex(chunk.size()), "\r\n", chunk, "\r\n");
  }
  chunked += "0\r\n\r\n";
  FakeHttpReply reply = Answer(200, chunked);
  reply.headers = {{"Transfer-Encoding", "chunked"}};
  server_.SetHandler(Script({reply}));
  auto client = MakeClient();
  HttpRequest r = Get("/big");

  EXPECT_THAT(Fetch(*client, r), StatusIs(absl::StatusCode::kResourceExhausted,
                                          HasSubstr("exceeds 1048576 bytes")));
}

TEST_F(CurlHttpClientTest, ChunkedBodyUnderTheCapArrivesWhole) {
  FakeHttpReply reply = Answer(200, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  reply.headers = {{"Transfer-Encoding", "chunked"}};
  server_.SetHandler(Script({reply}));
  auto client = MakeClient();

  absl::StatusOr<HttpResponse> got = Fetch(*client, Get());

  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->body, "hello world");
}

struct StatusCase {
  int http;
  absl::StatusCode code;
};

class HttpStatusMappingTest : public CurlHttpClientTest,
                              public ::testing::WithParamInterface<StatusCase> {
};

TEST_P(HttpStatusMappingTest, MapsToItsCodeWithoutRetrying) {
  server_.SetHandler(Script({Answer(GetParam().http, "nope")}));
  auto client = MakeClient();

  EXPECT_THAT(Fetch(*client, Get()),
              StatusIs(GetParam().code,
                       HasSubstr(absl::StrCat("HTTP ", GetParam().http,
                                              " from ", server_.url(),
                                              "/v1/thing (1 attempt): nope"))));
  EXPECT_EQ(server_.request_count(), 1u);
  EXPECT_EQ(StatsOf(*client, upstream()).failures, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Statuses, HttpStatusMappingTest,
    ::testing::Values(StatusCase{400, absl::StatusCode::kInvalidArgument},
                      StatusCase{401, absl::StatusCode::kUnauthenticated},
                      StatusCase{403, absl::StatusCode::kPermissionDenied},
                      StatusCase{404, absl::StatusCode::kNotFound},
                      StatusCase{409, absl::StatusCode::kFailedPrecondition},
                      StatusCase{302, absl::StatusCode::kFailedPrecondition}),
    [](const ::testing::TestParamInfo<StatusCase>& info) {
      return absl::StrCat("Http", info.param.http);
    });

TEST_F(CurlHttpClientTest, MalformedRequestsAreRefusedInline) {
  auto client = MakeClient();
  auto refused = [&](HttpRequest r) {
    bool called = false;
    absl::Status status;
    client->Send(std::move(r), [&](absl::StatusOr<HttpResponse> got) {
      called = true;
      status = got.status();
    });
    EXPECT_TRUE(called) << "not refused inline";
    return status;
  };
  HttpRequest bad_url = Get();
  bad_url.url = "ftp://127.0.0.1/x";
  HttpRequest no_scheme = Get();
  no_scheme.url = "127.0.0.1:80/x";
  HttpRequest put = Get();
  put.method = "PUT";
  HttpRequest smuggled = Get();
  smuggled.headers = {{"X-Token", "a\r\nHost: evil"}};

  EXPECT_THAT(refused(bad_url), StatusIs(absl::StatusCode::kInvalidArgument,
                                         HasSubstr("ftp://127.0.0.1/x")));
  EXPECT_THAT(refused(no_scheme), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(refused(put), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("\"PUT\"")));
  EXPECT_THAT(refused(smuggled),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("X-Token"), Not(HasSubstr("evil")))));
  EXPECT_EQ(server_.request_count(), 0u);
}

TEST_F(CurlHttpClientTest, UserInfoNeverReachesAMessage) {
  server_.SetHandler(Script({Answer(404)}));
  auto client = MakeClient();
  HttpRequest r = Get();
  r.url = absl::StrCat("http://alice:hunter2@127.0.0.1:", server_.port(), "/x");

  absl::StatusOr<HttpResponse> got = Fetch(*client, r);

  EXPECT_THAT(got, StatusIs(absl::StatusCode::kNotFound,
                            AllOf(HasSubstr(server_.url() + "/x"),
                                  Not(HasSubstr("hunter2")))));
}

// ---------------------------------------------------------------- breaker

class BreakerTest : public CurlHttpClientTest {
 protected:
  static constexpr int kThreshold = 3;

  void SetUp() override {
    server_.SetHandler(Script({Answer(503)}));
    client_ = MakeClient(kThreshold);
  }

  HttpRequest Once() {
    HttpRequest r = Get();
    r.max_attempts = 1;
    return r;
  }

  // Drives the breaker open with kThreshold failed requests.
  void Open() {
    for (int i = 0; i < kThreshold; ++i) {
      ASSERT_THAT(
          Fetch(*client_, Once()),
          StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP 503")));
    }
    ASSERT_EQ(StatsOf(*client_, upstream()).state, UpstreamStats::State::kOpen);
  }

  // Send, asserting that `done` ran before Send returned.
  absl::Status SendExpectingInline() {
    bool called = false;
    absl::Status status;
    client_->Send(Once(), [&](absl::StatusOr<HttpResponse> got) {
      called = true;
      status = got.status();
    });
    EXPECT_TRUE(called) << "not failed fast";
    return status;
  }

  std::unique_ptr<CurlHttpClient> client_;
};

TEST_F(BreakerTest, OpensAfterNConsecutiveFailuresAndFailsFast) {
  Open();
  size_t seen = server_.request_count();

  EXPECT_THAT(SendExpectingInline(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr(absl::StrCat("circuit open for ", upstream(),
                                              ": 3 consecutive failures, "
                                              "next probe in 30s"))));
  EXPECT_EQ(server_.request_count(), seen);
  UpstreamStats s = StatsOf(*client_, upstream());
  EXPECT_EQ(s.opened, 1);
  EXPECT_EQ(s.rejected, 1);
  EXPECT_EQ(s.consecutive_failures, 3);
  EXPECT_EQ(s.requests, 4);
}

TEST_F(BreakerTest, ASuccessResetsTheConsecutiveCount) {
  server_.SetHandler(Script(
      {Answer(503), Answer(503), Answer(200), Answer(503), Answer(503)}));
  for (int i = 0; i < 5; ++i) (void)Fetch(*client_, Once());

  UpstreamStats s = StatsOf(*client_, upstream());
  EXPECT_EQ(s.state, UpstreamStats::State::kClosed);
  EXPECT_EQ(s.consecutive_failures, 2);
  EXPECT_EQ(s.failures, 4);
}

TEST_F(BreakerTest, HalfOpenAfterOpenForThenASuccessfulProbeCloses) {
  Open();
  clock_.Advance(absl::Seconds(29));
  EXPECT_THAT(SendExpectingInline(), StatusIs(absl::StatusCode::kUnavailable,
                                              HasSubstr("next probe in 1s")));
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(StatsOf(*client_, upstream()).state,
            UpstreamStats::State::kHalfOpen);
  server_.SetHandler(Script({Answer(200, "back")}));

  absl::StatusOr<HttpResponse> probe = Fetch(*client_, Once());

  ASSERT_THAT(probe, IsOk());
  EXPECT_EQ(probe->body, "back");
  UpstreamStats s = StatsOf(*client_, upstream());
  EXPECT_EQ(s.state, UpstreamStats::State::kClosed);
  EXPECT_EQ(s.consecutive_failures, 0);
  EXPECT_THAT(Fetch(*client_, Once()), IsOk());
}

TEST_F(BreakerTest, AFailedProbeReopens) {
  Open();
  clock_.Advance(absl::Seconds(30));

  EXPECT_THAT(Fetch(*client_, Once()),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("HTTP 503")));

  UpstreamStats s = StatsOf(*client_, upstream());
  EXPECT_EQ(s.state, UpstreamStats::State::kOpen);
  EXPECT_EQ(s.opened, 2);
  size_t seen = server_.request_count();
  EXPECT_THAT(SendExpectingInline(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("4 consecutive failures, next probe in 30s")));
  EXPECT_EQ(server_.request_count(), seen);
}

TEST_F(BreakerTest, HalfOpenLetsOneProbeThrough) {
  Open();
  clock_.Advance(absl::Seconds(30));
  server_.SetHandler(Script({WithMode(FakeHttpReply::Mode::kHang)}));
  absl::Notification probe_done;
  absl::Status probe_status;
  client_->Send(Once(), [&](absl::StatusOr<HttpResponse> r) {
    probe_status = r.status();
    probe_done.Notify();
  });

  EXPECT_THAT(SendExpectingInline(),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("a probe is in flight")));

  server_.Stop();  // the hanging probe fails: open again
  probe_done.WaitForNotification();
  EXPECT_THAT(probe_status, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(StatsOf(*client_, upstream()).state, UpstreamStats::State::kOpen);
}

TEST_F(BreakerTest, NoRetryOnceTheBreakerHasOpened) {
  client_ = MakeClient(/*breaker_failures=*/1);
  HttpRequest r = Get();
  r.max_attempts = 3;

  EXPECT_THAT(Fetch(*client_, r),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr("HTTP 503 from " + server_.url() +
                                 "/v1/thing (1 attempt)")));
  EXPECT_EQ(server_.request_count(), 1u);
}

TEST_F(CurlHttpClientTest, UpstreamsReportsEachUpstreamSortedByName) {
  FakeHttpServer other(Script({Answer(500)}));
  auto client = MakeClient();
  HttpRequest a = Get();
  HttpRequest b = Get();
  b.url = other.url() + "/x";
  b.max_attempts = 2;

  ASSERT_THAT(Fetch(*client, a), IsOk());
  ASSERT_THAT(Fetch(*client, b), StatusIs(absl::StatusCode::kUnavailable));

  std::vector<UpstreamStats> stats = client->Upstreams();
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_LT(stats[0].upstream, stats[1].upstream);
  UpstreamStats sa = StatsOf(*client, upstream());
  UpstreamStats sb =
      StatsOf(*client, absl::StrCat("http://127.0.0.1:", other.port()));
  EXPECT_EQ(sa.requests, 1);
  EXPECT_EQ(sa.failures, 0);
  EXPECT_EQ(sb.requests, 1);
  EXPECT_EQ(sb.failures, 2);
  EXPECT_EQ(sb.consecutive_failures, 2);
  EXPECT_EQ(sb.in_flight, 0);
  EXPECT_STREQ(StateName(sb.state), "closed");
}

TEST_F(CurlHttpClientTest, AThousandConcurrentRequestsAllComplete) {
  constexpr int kRequests = 1000;
  FakeHttpReply slow = Answer(200, "ok");
  slow.delay = absl::Milliseconds(200);
  server_.SetHandler(Script({slow}));
  auto client = MakeClient();
  absl::Mutex mu;
  int ok = 0;
  int done = 0;
  for (int i = 0; i < kRequests; ++i) {
    client->Send(Get(absl::StrCat("/n/", i)),
                 [&](absl::StatusOr<HttpResponse> r) {
                   absl::MutexLock lock(&mu);
                   ++done;
                   if (r.ok() && r->body == "ok") ++ok;
                 });
  }
  absl::MutexLock lock(&mu);
  mu.Await(absl::Condition(
      +[](int* d) { return *d == kRequests; }, &done));
  EXPECT_EQ(ok, kRequests);
  EXPECT_EQ(StatsOf(*client, upstream()).in_flight, 0);
}

TEST_F(CurlHttpClientTest, RefusesBeyondMaxInFlight) {
  server_.SetHandler(Script({WithMode(FakeHttpReply::Mode::kHang)}));
  CurlHttpClient::Options options;
  options.clock = &clock_;
  options.max_in_flight = 1;
  auto client = *CurlHttpClient::Create(std::move(options));
  client->Send(Get(), [](absl::StatusOr<HttpResponse>) {});

  absl::Status second;
  client->Send(Get(),
               [&](absl::StatusOr<HttpResponse> r) { second = r.status(); });

  EXPECT_THAT(second, StatusIs(absl::StatusCode::kResourceExhausted,
                               HasSubstr("max_in_flight")));
}

TEST_F(CurlHttpClientTest, DestructorCompletesPendingRequestsAsUnavailable) {
  constexpr int kHanging = 10;
  absl::Mutex mu;
  int arrived = 0;
  server_.SetHandler([&](const FakeHttpRequest& req) {
    absl::MutexLock lock(&mu);
    ++arrived;
    if (req.path == "/later") {
      FakeHttpReply r = Answer(503);
      r.headers = {{"Retry-After", "1000"}};
      return r;
    }
    return WithMode(FakeHttpReply::Mode::kHang);
  });
  auto client = MakeClient();
  std::vector<absl::Status> results;
  auto record = [&](absl::StatusOr<HttpResponse> r) {
    absl::MutexLock lock(&mu);
    results.push_back(r.status());
  };
  for (int i = 0; i < kHanging; ++i) {
    HttpRequest r = Get("/hang");
    r.timeout = absl::Seconds(60);
    client->Send(std::move(r), record);
  }
  HttpRequest later = Get("/later");  // will be waiting to retry
  later.max_backoff = absl::Seconds(1000);
  client->Send(std::move(later), record);
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* n) { return *n == kHanging + 1; }, &arrived));
  }
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::vector<RetryDecision>* d) { return !d->empty(); },
        &decisions_));
  }

  client.reset();

  absl::MutexLock lock(&mu);
  ASSERT_EQ(results.size(), static_cast<size_t>(kHanging + 1));
  for (const absl::Status& s : results) {
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnavailable,
                            HasSubstr("client shutting down")));
  }
}

}  // namespace
}  // namespace reflexion::upstream

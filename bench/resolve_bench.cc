// End-to-end load driver: the real server (App, as main() builds it) on
// 127.0.0.1:0 with RocksDB in a temp dir, N incidents over S concurrent
// Resolve streams, every event checked for order. Prints workflows/s,
// events/s, latency percentiles and peak RSS.
//
//   resolve_bench [--n 20000] [--streams 4] [--window 256]
//                 [--durability async|sync|exit|off] [--json]
//                 [--stalled 10] [--stalled_timeout 5] [--per_stream N]
//                 [--stalled_ramp] [--llm_delay_ms 2000]
//
// --llm_delay_ms D reflects through the real LLM path (OpenAiReflector on
// the libcurl client) against a fake server answering after D ms: with
// --n 10000 --streams 4 --window 2500, 10,000 workflows wait on it at once.
//
// --stalled K adds K clients (each on its own connection) that send
// incidents as fast as they can and never read, as a broken client would:
// the server pauses each (service.stream_buffer_bytes) and cancels it after
// --stalled_timeout seconds (service.stalled_stream_timeout). The measured
// streams start once all K are paused (ten stalled readers, then a normal
// client), or with --stalled_ramp at the same time as them (their first
// burst of incidents, before the server sees they do not read, is then part
// of the measured run). Compare the normal streams' latency with and
// without them.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "grpcpp/create_channel.h"
#include "server/app.h"
#include "tests/testing/forked_http_server.h"

ABSL_FLAG(int, n, 20000, "incidents");
ABSL_FLAG(int, streams, 4, "concurrent Resolve streams");
ABSL_FLAG(int, window, 256, "incidents in flight per stream");
ABSL_FLAG(std::string, durability, "async", "async | sync | exit | off");
ABSL_FLAG(bool, json, false, "print one JSON line");
ABSL_FLAG(int, stalled, 0, "clients that send and never read");
ABSL_FLAG(int, stalled_incidents, 10000,
          "incidents each stalled client sends (0: until it is cut)");
ABSL_FLAG(int, per_stream, 100000,
          "service.max_in_flight_per_stream (>= --window)");
ABSL_FLAG(double, stalled_timeout, 5,
          "service.stalled_stream_timeout in seconds");
ABSL_FLAG(int, llm_delay_ms, 0,
          "reflect with the openai reflector against a fake OpenAI-compatible "
          "server (in a child process) that answers after this many ms; 0: "
          "the heuristic reflector");
ABSL_FLAG(bool, stalled_ramp, false,
          "start the measured streams with the stalled clients, not once "
          "they are paused");

namespace {

using Clock = std::chrono::steady_clock;

long ReadStatusKb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(strlen(key)));
  }
  return -1;
}

struct StreamStats {
  int results = 0;
  int accepted = 0;
  int order_errors = 0;
  long events = 0;
  // Reflections by reflector ("openai", "heuristic").
  std::map<std::string, long> reflectors;
  std::vector<double> latency_ms;
};

// One stream: keeps `window` incidents in flight until `count` are done.
void RunStream(reflexion::v1::ReflexionService::Stub& stub, int first,
               int count, int window, StreamStats& stats) {
  static const char* kTypes[] = {"ImagePullBackOff", "CrashLoopBackOff",
                                 "OOMKilled", "Evicted", "Pending"};
  grpc::ClientContext ctx;
  auto stream = stub.Resolve(&ctx);
  std::mutex mu;
  std::map<std::string, Clock::time_point> sent;  // request id -> time
  std::condition_variable room;
  int in_flight = 0;  // guarded by mu
  std::thread reader([&] {
    reflexion::v1::ResolveResponse m;
    std::map<std::string, uint64_t> last;
    while (stream->Read(&m)) {
      if (m.has_accepted()) {
        ++stats.accepted;
      } else if (m.has_event()) {
        ++stats.events;
        if (m.event().has_reflection()) {
          ++stats.reflectors[m.event().reflection().reflector()];
        }
        uint64_t& l = last[m.event().workflow_id()];
        if (m.event().sequence() != l + 1) ++stats.order_errors;
        l = m.event().sequence();
      } else if (m.has_result()) {
        auto it = last.find(m.result().workflow_id());
        if (it == last.end() || m.result().sequence() != it->second + 1) {
          ++stats.order_errors;
        }
        if (it != last.end()) last.erase(it);
        std::lock_guard<std::mutex> lock(mu);
        auto s = sent.find(m.result().request_id());
        if (s != sent.end()) {
          stats.latency_ms.push_back(std::chrono::duration<double, std::milli>(
                                         Clock::now() - s->second)
                                         .count());
          sent.erase(s);
        }
        ++stats.results;
        --in_flight;
        room.notify_one();
      } else {
        ++stats.order_errors;  // rejections are not expected here
        std::lock_guard<std::mutex> lock(mu);
        --in_flight;
        room.notify_one();
      }
    }
  });
  for (int i = first; i < first + count; ++i) {
    reflexion::v1::ResolveRequest req;
    auto* in = req.mutable_incident();
    in->set_pod_name(absl::StrCat("svc-", i % 997, "-", i));
    in->set_namespace_(absl::StrCat("team-", i % 13));
    in->set_error_type(kTypes[i % 5]);
    in->set_request_id(absl::StrCat("r", i));
    {
      std::unique_lock<std::mutex> lock(mu);
      room.wait(lock, [&] { return in_flight < window; });
      sent[in->request_id()] = Clock::now();
      ++in_flight;
    }
    if (!stream->Write(req)) break;
  }
  stream->WritesDone();
  reader.join();
  grpc::Status s = stream->Finish();
  if (!s.ok()) std::fprintf(stderr, "stream: %s\n", s.error_message().c_str());
}

double Pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t idx = std::min(v.size() - 1,
                        static_cast<size_t>(std::ceil(p / 100 * v.size())) - 1);
  return v[idx];
}

}  // namespace

// A chat completion with a valid reflection, after `delay`.
reflexion::testing::FakeHttpServer::Handler SlowLlm(absl::Duration delay) {
  return [delay](const reflexion::testing::FakeHttpRequest&) {
    reflexion::testing::FakeHttpReply r;
    r.delay = delay;
    r.headers.emplace_back("Content-Type", "application/json");
    r.body =
        R"({"choices":[{"index":0,"message":{"role":"assistant","content":)"
        R"("{\"reflection\": \"The fix did not resolve OOMKilled: the )"
        R"(container was OOMKilled again.\", \"root_cause\": \"memory\", )"
        R"(\"lessons\": [\"raise memory further\"], )"
        R"(\"proposed_changes\": []}"}}]})";
    return r;
  };
}

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const int n = absl::GetFlag(FLAGS_n);
  // The fake LLM is forked before any thread exists here.
  const int llm_delay_ms = absl::GetFlag(FLAGS_llm_delay_ms);
  std::unique_ptr<reflexion::testing::ForkedHttpServer> llm;
  if (llm_delay_ms > 0) {
    reflexion::testing::RaiseFdLimit();
    llm = std::make_unique<reflexion::testing::ForkedHttpServer>(
        SlowLlm(absl::Milliseconds(llm_delay_ms)));
  }
  const int streams = std::max(1, absl::GetFlag(FLAGS_streams));
  const std::string durability = absl::GetFlag(FLAGS_durability);

  std::string tmpl =
      (std::filesystem::temp_directory_path() / "resolve-bench-XXXXXX")
          .string();
  std::string dir = mkdtemp(tmpl.data());
  reflexion::server::ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir;
  config.max_in_flight = 1'000'000;
  config.max_in_flight_per_stream = absl::GetFlag(FLAGS_per_stream);
  config.stalled_stream_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_stalled_timeout));
  if (llm != nullptr) {
    config.reflector = "openai";
    config.openai.base_url = llm->url() + "/v1";
    config.openai.timeout = absl::Seconds(30);
  }
  if (durability == "off") {
    config.checkpointing = false;
  } else if (durability == "sync") {
    config.workflow.durability = reflexion::graph::Durability::kSync;
  } else if (durability == "exit") {
    config.workflow.durability = reflexion::graph::Durability::kExit;
  }
  int rc = 0;
  {
    reflexion::server::App app(config);
    if (absl::Status s = app.Start(); !s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
    auto channel =
        reflexion::client::Connect(absl::StrCat("127.0.0.1:", app.port()));
    auto stub = reflexion::v1::ReflexionService::NewStub(channel);
    // Stalled clients first, so they are paused while the others run.
    const int stalled = absl::GetFlag(FLAGS_stalled);
    std::mutex done_mu;
    std::condition_variable done_cv;
    bool normal_done = false;
    std::vector<std::thread> stalled_threads;
    std::atomic<long> stalled_sent{0};
    for (int k = 0; k < stalled; ++k) {
      stalled_threads.emplace_back([&, k] {
        grpc::ChannelArguments args;
        args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
        args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 << 10);
        args.SetInt("grpc.reflexion_bench_stalled", k);  // own connection
        auto st =
            reflexion::v1::ReflexionService::NewStub(grpc::CreateCustomChannel(
                absl::StrCat("127.0.0.1:", app.port()),
                grpc::InsecureChannelCredentials(), args));
        grpc::ClientContext ctx;
        auto stream = st->Resolve(&ctx);
        const int limit = absl::GetFlag(FLAGS_stalled_incidents);
        for (int i = 0; limit == 0 || i < limit; ++i) {
          reflexion::v1::ResolveRequest req;
          auto* in = req.mutable_incident();
          in->set_pod_name(absl::StrCat("stalled-", k, "-", i));
          in->set_namespace_("bench");
          in->set_error_type("OOMKilled");
          if (!stream->Write(req)) break;
          ++stalled_sent;
        }
        // Still not reading: hold the stream until the measured run is
        // over (or the server cut it), then give up like a client would.
        {
          std::unique_lock<std::mutex> lock(done_mu);
          done_cv.wait(lock, [&] { return normal_done; });
        }
        ctx.TryCancel();
        reflexion::v1::ResolveResponse drop;
        while (stream->Read(&drop)) {
        }
        stream->Finish();
      });
    }
    if (stalled > 0 && !absl::GetFlag(FLAGS_stalled_ramp) &&
        !app.service()->AwaitPausedStreams(stalled, absl::Seconds(120))) {
      fprintf(stderr, "the %d stalled clients were not all paused in 120 s\n",
              stalled);
      {
        std::lock_guard<std::mutex> lock(done_mu);
        normal_done = true;
      }
      done_cv.notify_all();
      for (auto& t : stalled_threads) t.join();
      return 1;
    }
    std::vector<StreamStats> stats(streams);
    std::vector<std::thread> threads;
    auto t0 = Clock::now();
    int per = n / streams;
    for (int s = 0; s < streams; ++s) {
      int count = s == streams - 1 ? n - per * (streams - 1) : per;
      threads.emplace_back([&, s, count] {
        RunStream(*stub, s * per, count, absl::GetFlag(FLAGS_window), stats[s]);
      });
    }
    for (auto& t : threads) t.join();
    double wall = std::chrono::duration<double>(Clock::now() - t0).count();
    {
      std::lock_guard<std::mutex> lock(done_mu);
      normal_done = true;
    }
    done_cv.notify_all();
    const int cut = app.service()->Streams().stalled_cancelled;
    for (auto& t : stalled_threads) t.join();
    if (stalled > 0) {
      std::printf(
          "%d stalled client(s): %ld incidents sent; %d cancelled by the "
          "server after %.1f s stalled\n",
          stalled, stalled_sent.load(), cut,
          absl::GetFlag(FLAGS_stalled_timeout));
    }
    int results = 0, errors = 0;
    long events = 0;
    std::vector<double> lat;
    for (auto& s : stats) {
      results += s.results;
      errors += s.order_errors;
      events += s.events;
      lat.insert(lat.end(), s.latency_ms.begin(), s.latency_ms.end());
    }
    std::sort(lat.begin(), lat.end());
    long hwm = ReadStatusKb("VmHWM:");
    if (absl::GetFlag(FLAGS_json)) {
      std::printf(
          "{\"n\":%d,\"streams\":%d,\"durability\":\"%s\",\"wall_s\":%.3f,"
          "\"workflows_per_s\":%.1f,\"events_per_s\":%.0f,\"results\":%d,"
          "\"order_errors\":%d,\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,"
          "\"peak_rss_mb\":%.1f}\n",
          n, streams, durability.c_str(), wall, results / wall, events / wall,
          results, errors, Pct(lat, 50), Pct(lat, 99), hwm / 1024.0);
    } else {
      std::printf(
          "resolve_bench n=%d streams=%d durability=%s: %.0f workflows/s, "
          "%.0f events/s, %d results, %d order errors, latency p50 %.2f ms "
          "p99 %.2f ms, peak RSS %.1f MB (client and server in one "
          "process)\n",
          n, streams, durability.c_str(), results / wall, events / wall,
          results, errors, Pct(lat, 50), Pct(lat, 99), hwm / 1024.0);
    }
    if (llm != nullptr) {
      std::map<std::string, long> by;
      for (auto& st : stats) {
        for (const auto& [r, k] : st.reflectors) by[r] += k;
      }
      std::string line;
      for (const auto& [r, k] : by) absl::StrAppend(&line, " ", r, " ", k);
      std::printf("reflections by reflector:%s\n", line.c_str());
      reflexion::v1::GetMetricsResponse m;
      grpc::ClientContext ctx;
      if (stub->GetMetrics(&ctx, reflexion::v1::GetMetricsRequest(), &m).ok() &&
          m.upstreams_size() > 0) {
        const auto& u = m.upstreams(0);
        std::printf(
            "LLM after %d ms: %lld calls, %lld failed attempts, breaker %s; "
            "%ld threads in the process at the end; wall %.2f s\n",
            llm_delay_ms, static_cast<long long>(u.requests()),
            static_cast<long long>(u.failures()), u.breaker().c_str(),
            reflexion::testing::ReadProcStatus("Threads:"), wall);
      }
    }
    if (results != n || errors != 0) rc = 1;
  }
  std::filesystem::remove_all(dir);
  return rc;
}

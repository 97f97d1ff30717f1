// engine_bench: the C++ twin of the LangGraph.js reference benchmark
// (../shared/bench/langgraph/bench.mjs) on our graph engine. Same 9 nodes,
// same node logic and routers, same inputs, same expected node-step count
// per input; it measures pure engine overhead (scheduling, state updates,
// event delivery) since the nodes do trivial, deterministic work.
//
//   engine_bench --n 20000 --mode seq
//   engine_bench --n 20000 --mode conc --conc 64 --json
//   engine_bench --sizes 20000,200000   # each size x mode in a fresh process
//
// See bench/README.md for what is measured.

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "bench/bench_state.pb.h"
#include "core/graph/graph.h"
#include "core/graph/task_runner.h"
#include "core/ports/clock.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "storage/rocksdb_checkpoint_store.h"
#include "storage/rocksdb_db.h"

ABSL_FLAG(int64_t, n, 20000, "Workflows to run (after the warm-up).");
ABSL_FLAG(std::string, mode, "seq",
          "seq: start the next workflow when the previous one finished; "
          "conc: batches of --conc workflows in flight.");
ABSL_FLAG(int, conc, 64, "Batch size in conc mode.");
ABSL_FLAG(int64_t, warmup, -1,
          "Warm-up workflows on a separate graph; -1: min(200, n/10).");
ABSL_FLAG(int, threads, 0, "Engine ThreadPool size; 0: 1 for seq, 2 for conc.");
ABSL_FLAG(std::string, ckpt, "none",
          "Checkpointing: none | memory (InMemoryCheckpointStore) | rocksdb "
          "(RocksDbCheckpointStore in a temp dir)");
ABSL_FLAG(std::string, durability, "async",
          "With --ckpt: sync (fsync per step) | async (WAL per step) | exit "
          "(final state only)");
ABSL_FLAG(int, keep_last, 10, "With --ckpt: checkpoints kept per workflow");
ABSL_FLAG(bool, expire, true,
          "With --ckpt: expire finished workflows continuously (retention), "
          "so memory and storage stay flat");
ABSL_FLAG(bool, seq_chain, true,
          "seq mode: start the next workflow from the completion callback "
          "(no driver thread hand-off); false: the driver waits on an "
          "absl::Notification per workflow.");
ABSL_FLAG(bool, json, false, "Print only the JSON result line(s).");
ABSL_FLAG(std::string, sizes, "",
          "Comma-separated sizes: run each size x --modes in a fresh child "
          "process (peak RSS per scenario), like bench.mjs --matrix.");
ABSL_FLAG(std::string, modes, "seq,conc", "Modes run by --sizes.");

namespace reflexion::bench {
namespace {

using graph::CompiledGraph;
using graph::EventSink;
using graph::GraphBuilder;
using graph::NodePhase;
using graph::RunOptions;
using graph::RunResult;
using graph::StepEvent;
using graph::ThreadPool;
using SteadyClock = std::chrono::steady_clock;

// ------------------------------------------------------ deterministic logic
// Ported one to one from bench.mjs.

constexpr std::array<absl::string_view, 5> kKnown = {
    "CrashLoopBackOff", "ImagePullBackOff", "OOMKilled",
    "CreateContainerConfigError", "FailedScheduling"};

using StrategyList = std::array<absl::string_view, 3>;
constexpr StrategyList kUnknownStrategies = {
    "collect_diagnostics", "restart_pod", "rollback_deployment"};

const StrategyList& StrategiesFor(absl::string_view error_type) {
  static constexpr std::array<std::pair<absl::string_view, StrategyList>, 5>
      kTable = {{
          {"CrashLoopBackOff",
           {"rollback_deployment", "increase_probe_delay", "restart_pod"}},
          {"ImagePullBackOff",
           {"fix_image_tag", "refresh_pull_secret", "switch_registry"}},
          {"OOMKilled", {"raise_memory_limit", "tune_jvm_heap", "scale_out"}},
          {"CreateContainerConfigError",
           {"restore_configmap", "fix_secret_ref", "rollback_deployment"}},
          {"FailedScheduling",
           {"relax_node_selector", "scale_node_pool", "lower_requests"}},
      }};
  for (const auto& [type, list] : kTable) {
    if (type == error_type) return list;
  }
  return kUnknownStrategies;  // STRATEGIES.Unknown, also the ?? fallback
}

bool IsKnown(absl::string_view error_type) {
  return std::find(kKnown.begin(), kKnown.end(), error_type) != kKnown.end();
}

// Infinity in bench.mjs: never succeeds.
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

BenchState Scenario(int64_t i) {
  BenchState s;
  s.set_pod_name(absl::StrCat("svc-", i % 97, "-7d9f8c-", (i * 7919) % 100000));
  s.set_namespace_(absl::StrCat("team-", i % 13));
  s.set_error_type(std::string(i % 10 == 9 ? absl::string_view("Unknown")
                                           : kKnown[i % kKnown.size()]));
  s.set_error_message(
      absl::StrCat("Back-off restarting failed container (case ", i, ")"));
  s.set_retry_count(0);
  s.set_max_retries(3);
  s.set_success(false);
  s.set_status("new");
  return s;
}

// /case (\d+)/ on error_message: the first "case " followed by a digit.
int64_t CaseIndex(const BenchState& s) {
  absl::string_view m = s.error_message();
  for (size_t pos = m.find("case "); pos != absl::string_view::npos;
       pos = m.find("case ", pos + 1)) {
    size_t begin = pos + 5;
    size_t end = begin;
    while (end < m.size() && m[end] >= '0' && m[end] <= '9') ++end;
    if (end == begin) continue;
    int64_t v = 0;
    if (absl::SimpleAtoi(m.substr(begin, end - begin), &v)) return v;
    return kNever;  // more digits than fit: Number() gives a huge value
  }
  return 0;
}

int64_t SucceedOn(int64_t i) {
  return i % 2 == 0 ? 2 : i % 4 == 1 ? 1 : kNever;
}

absl::Status AnalyzeError(BenchState& s) {
  bool known = IsKnown(s.error_type());
  if (known) {
    s.set_root_cause(absl::StrCat("pattern:", s.error_type()));
  } else {
    s.set_error_type("Unknown");
    s.clear_root_cause();  // null
  }
  s.set_analysis_depth(1);
  s.set_confidence(known ? 0.8 : 0.2);
  s.set_status("analyzed");
  return absl::OkStatus();
}

absl::Status DeepAnalysis(BenchState& s) {
  absl::string_view pod = s.pod_name();
  s.set_root_cause(
      absl::StrCat("deep:", pod.substr(0, std::min(pod.find('-'), pod.size())),
                   ":", s.namespace_()));
  s.set_analysis_depth(2);
  s.set_confidence(0.5);
  s.set_status("deep_analyzed");
  return absl::OkStatus();
}

absl::Status SelectStrategy(BenchState& s) {
  const StrategyList& options = StrategiesFor(s.error_type());
  absl::string_view name = options[s.retry_count() % options.size()];
  Strategy* strategy = s.mutable_strategy();
  strategy->set_name(std::string(name));
  strategy->set_action(absl::StrCat("kubectl:", name));
  Strategy::Params* params = strategy->mutable_params();
  params->set_ns(s.namespace_());
  params->set_pod(s.pod_name());
  params->set_attempt(s.retry_count() + 1);
  double confidence = s.has_confidence() ? s.confidence() : 0.5;
  s.set_confidence(std::max(0.1, confidence - 0.05 * s.retry_count()));
  s.set_status("strategy_selected");
  return absl::OkStatus();
}

absl::Status ExecuteFix(BenchState& s) {
  s.set_retry_count(s.retry_count() + 1);
  s.set_status("fix_applied");
  return absl::OkStatus();
}

absl::Status ObserveOutcome(BenchState& s) {
  bool ok = s.retry_count() >= SucceedOn(CaseIndex(s));
  s.set_success(ok);
  s.set_outcome(ok ? "pod Running" : "pod still failing");
  s.set_status("observed");
  return absl::OkStatus();
}

absl::Status Reflect(BenchState& s) {
  int64_t i = CaseIndex(s);
  s.set_reflection_quality((i + s.retry_count()) % 3 == 0 ? 0.3 : 0.8);
  Reflection* r = s.add_reflections();
  r->set_attempt(s.retry_count());
  r->set_strategy(s.strategy().name());
  r->set_success(s.success());
  r->set_note(s.success() ? "worked" : "did not resolve");
  s.set_status("reflected");
  return absl::OkStatus();
}

absl::Status MetaReflect(BenchState& s) {
  s.set_reflection_quality(0.75);
  Reflection* r = s.add_reflections();
  r->set_attempt(s.retry_count());
  r->set_meta(true);
  r->set_note("re-examined reflection");
  s.set_status("meta_reflected");
  return absl::OkStatus();
}

absl::Status Learn(BenchState& s) {
  LearnedPattern* p = s.add_learned_patterns();
  p->set_error_type(s.error_type());
  p->set_strategy(s.strategy().name());
  p->set_success(s.success());
  s.set_status("learned");
  return absl::OkStatus();
}

absl::Status HumanEscalation(BenchState& s) {
  s.set_status("escalated");
  s.set_outcome(absl::StrCat("escalated after ", s.retry_count(), " attempts"));
  return absl::OkStatus();
}

std::string RouteAfterAnalyze(const BenchState& s) {
  return s.error_type() == "Unknown" ? "deep_analysis" : "select_strategy";
}

std::string RouteAfterReflect(const BenchState& s) {
  return s.reflection_quality() < 0.5 ? "meta_reflect" : "learn";
}

std::string RouteAfterLearn(const BenchState& s) {
  if (s.success()) return std::string(graph::kEnd);
  if (s.retry_count() < s.max_retries()) return "select_strategy";
  return "human_escalation";
}

absl::StatusOr<std::shared_ptr<const CompiledGraph<BenchState>>> BuildGraph() {
  const std::string start(graph::kStart);
  const std::string end(graph::kEnd);
  GraphBuilder<BenchState> b;
  b.AddSyncNode("analyze_error", AnalyzeError)
      .AddSyncNode("deep_analysis", DeepAnalysis)
      .AddSyncNode("select_strategy", SelectStrategy)
      .AddSyncNode("execute_fix", ExecuteFix)
      .AddSyncNode("observe_outcome", ObserveOutcome)
      .AddSyncNode("reflect", Reflect)
      .AddSyncNode("meta_reflect", MetaReflect)
      .AddSyncNode("learn", Learn)
      .AddSyncNode("human_escalation", HumanEscalation)
      .AddEdge(start, "analyze_error")
      .AddConditionalEdges("analyze_error", RouteAfterAnalyze,
                           {"deep_analysis", "select_strategy"})
      .AddEdge("deep_analysis", "select_strategy")
      .AddEdge("select_strategy", "execute_fix")
      .AddEdge("execute_fix", "observe_outcome")
      .AddEdge("observe_outcome", "reflect")
      .AddConditionalEdges("reflect", RouteAfterReflect,
                           {"meta_reflect", "learn"})
      .AddEdge("meta_reflect", "learn")
      .AddConditionalEdges("learn", RouteAfterLearn,
                           {"select_strategy", "human_escalation", end})
      .AddEdge("human_escalation", end);
  return b.Compile();
}

// Expected number of node executions for input i.
int ExpectedSteps(int64_t i) {
  int64_t s = SucceedOn(i);
  bool finite = s != kNever;
  int64_t attempts = finite ? s : 3;
  int steps = 1 + (i % 10 == 9 ? 1 : 0);  // analyze (+ deep)
  for (int64_t a = 1; a <= attempts; ++a) {
    steps += 5;  // select, execute, observe, reflect, learn
    if ((i + a) % 3 == 0) steps += 1;  // meta_reflect
  }
  if (!finite) steps += 1;  // human_escalation
  return steps;
}

// ------------------------------------------------------------------ driver

enum class CheckpointMode { kNone, kMemory, kRocksDb };

absl::StatusOr<CheckpointMode> ParseCheckpointMode(absl::string_view s) {
  if (s == "none") return CheckpointMode::kNone;
  if (s == "memory") return CheckpointMode::kMemory;
  if (s == "rocksdb") return CheckpointMode::kRocksDb;
  return absl::InvalidArgumentError(
      absl::StrCat("--ckpt ", s, ": must be none, memory or rocksdb"));
}

struct Config {
  int64_t n = 0;
  bool conc = false;
  int batch = 64;
  int64_t warmup = 0;
  int threads = 1;
  CheckpointMode ckpt = CheckpointMode::kNone;
  bool seq_chain = true;
  core::CheckpointStore* store = nullptr;  // set for memory / rocksdb
  graph::Durability durability = graph::Durability::kAsync;
  int keep_last = 10;
};

// Counts one workflow's node updates: one per completed node, like
// LangGraph's "updates" stream. Events of one workflow arrive one at a time.
class StepCounter final : public EventSink<BenchState> {
 public:
  void OnEvent(const StepEvent<BenchState>& event) override {
    if (event.phase == NodePhase::kCompleted) ++steps_;
  }
  void Reset() { steps_ = 0; }
  int steps() const { return steps_; }

 private:
  int steps_ = 0;
};

// Per-workflow outcome, each slot written by exactly one completion.
struct Outcomes {
  explicit Outcomes(int64_t n)
      : latency_ms(n), steps(n), end_node(n), failed(n) {}
  std::vector<double> latency_ms;
  std::vector<int32_t> steps;
  std::vector<int8_t> end_node;  // index into node names, -1: none
  std::vector<uint8_t> failed;
};

class Driver {
 public:
  Driver(std::shared_ptr<const CompiledGraph<BenchState>> graph,
         const Config& config, std::string tag, int64_t n,
         graph::TaskRunner* runner)
      : graph_(std::move(graph)),
        names_(graph_->NodeNames()),
        config_(config),
        tag_(std::move(tag)),
        n_(n),
        runner_(runner),
        outcomes_(n) {}

  // Runs n workflows; returns when all have finished.
  void Run() {
    if (n_ == 0) return;
    if (!config_.conc) {
      RunSeq();
    } else {
      RunConc();
    }
  }

  const Outcomes& outcomes() const { return outcomes_; }
  const std::vector<std::string>& names() const { return names_; }

 private:
  // The one place a workflow's options are built: a checkpoint mode is one
  // more case here.
  RunOptions Options(int64_t i) const {
    RunOptions options;
    options.workflow_id = absl::StrCat(tag_, "-", i);
    options.recursion_limit = 100;
    switch (config_.ckpt) {
      case CheckpointMode::kNone:
        break;
      case CheckpointMode::kMemory:
      case CheckpointMode::kRocksDb:
        options.checkpoints = config_.store;
        options.durability = config_.durability;
        options.keep_last = config_.keep_last;
        break;
    }
    return options;
  }

  // Starts workflow i; `then` runs on the engine thread after recording.
  template <typename Then>
  void StartOne(int64_t i, StepCounter* counter, Then then) {
    counter->Reset();
    SteadyClock::time_point t0 = SteadyClock::now();
    graph_->Start(Options(i), Scenario(i), runner_, counter, &clock_,
                  [this, i, t0, counter,
                   then = std::move(then)](RunResult<BenchState> r) mutable {
                    Record(i, t0, *counter, r);
                    std::move(then)();
                  });
  }

  void Record(int64_t i, SteadyClock::time_point t0, const StepCounter& counter,
              const RunResult<BenchState>& r) {
    std::chrono::duration<double, std::milli> dt = SteadyClock::now() - t0;
    outcomes_.latency_ms[i] = dt.count();
    outcomes_.steps[i] = counter.steps();
    outcomes_.failed[i] = r.status.ok() ? 0 : 1;
    int8_t end = -1;
    for (size_t k = 0; k < names_.size(); ++k) {
      if (names_[k] == r.last_node) end = static_cast<int8_t>(k);
    }
    outcomes_.end_node[i] = end;
  }

  void RunSeq() {
    StepCounter counter;
    if (config_.seq_chain) {
      // Each completion starts the next workflow on the engine thread.
      absl::Notification all_done;
      ChainFrom(0, &counter, &all_done);
      all_done.WaitForNotification();
      return;
    }
    for (int64_t i = 0; i < n_; ++i) {
      absl::Notification done;
      StartOne(i, &counter, [&done] { done.Notify(); });
      done.WaitForNotification();
    }
  }

  void ChainFrom(int64_t i, StepCounter* counter, absl::Notification* all) {
    StartOne(i, counter, [this, i, counter, all] {
      if (i + 1 < n_) {
        ChainFrom(i + 1, counter, all);
      } else {
        all->Notify();
      }
    });
  }

  void RunConc() {
    std::vector<StepCounter> counters(config_.batch);
    for (int64_t base = 0; base < n_; base += config_.batch) {
      int64_t end = std::min<int64_t>(n_, base + config_.batch);
      remaining_.store(static_cast<int>(end - base), std::memory_order_relaxed);
      {
        absl::MutexLock lock(&mu_);
        batch_done_ = false;
      }
      for (int64_t i = base; i < end; ++i) {
        StartOne(i, &counters[i - base], [this] {
          // Only the last completion of the batch takes the lock.
          if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            absl::MutexLock lock(&mu_);
            batch_done_ = true;
          }
        });
      }
      mu_.LockWhen(absl::Condition(&batch_done_));
      mu_.Unlock();
    }
  }

  std::shared_ptr<const CompiledGraph<BenchState>> graph_;
  std::vector<std::string> names_;
  const Config& config_;
  std::string tag_;
  int64_t n_;
  graph::TaskRunner* runner_;
  core::RealClock clock_;
  Outcomes outcomes_;
  std::atomic<int> remaining_{0};
  absl::Mutex mu_;
  bool batch_done_ ABSL_GUARDED_BY(mu_) = false;
};

// kB value of a /proc/self/status line ("VmHWM:", "VmRSS:"), -1 if absent.
int64_t ProcStatusKb(absl::string_view key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view l(line);
    if (!absl::ConsumePrefix(&l, key)) continue;
    l = absl::StripAsciiWhitespace(l);
    absl::ConsumeSuffix(&l, "kB");
    int64_t kb = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(l), &kb)) return kb;
  }
  return -1;
}

double Mb(int64_t kb) { return kb / 1024.0; }

// bench.mjs pct(): nearest rank.
double Pct(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return std::nan("");
  int64_t n = static_cast<int64_t>(sorted.size());
  int64_t idx = std::min<int64_t>(
      n - 1, static_cast<int64_t>(std::ceil(p / 100.0 * n)) - 1);
  return sorted[std::max<int64_t>(0, idx)];
}

int RunScenario(Config config, bool json, absl::string_view ckpt_name) {
  // The checkpoint store of this run, and retention beside it.
  std::unique_ptr<core::InMemoryCheckpointStore> memory_store;
  std::unique_ptr<storage::RocksDb> db;
  std::unique_ptr<storage::RocksDbCheckpointStore> rocks_store;
  std::string db_dir;
  if (config.ckpt == CheckpointMode::kMemory) {
    memory_store = std::make_unique<core::InMemoryCheckpointStore>();
    config.store = memory_store.get();
  } else if (config.ckpt == CheckpointMode::kRocksDb) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "engine-bench-XXXXXX")
            .string();
    db_dir = mkdtemp(tmpl.data());
    absl::StatusOr<std::unique_ptr<storage::RocksDb>> opened =
        storage::RocksDb::Open(db_dir);
    if (!opened.ok()) {
      std::fprintf(stderr, "%s\n", opened.status().ToString().c_str());
      return 1;
    }
    db = *std::move(opened);
    rocks_store = std::make_unique<storage::RocksDbCheckpointStore>(db.get());
    config.store = rocks_store.get();
  }
  absl::Notification stop_retention;
  std::thread retention;
  std::atomic<int64_t> expired{0};
  if (config.store != nullptr && absl::GetFlag(FLAGS_expire)) {
    retention = std::thread([&] {
      while (!stop_retention.WaitForNotificationWithTimeout(
          absl::Milliseconds(200))) {
        absl::StatusOr<int> n =
            config.store->ExpireFinished(absl::Now() + absl::Seconds(1), 0);
        if (n.ok()) expired += *n;
      }
    });
  }
  struct Cleanup {
    std::function<void()> fn;
    ~Cleanup() { fn(); }
  } cleanup{[&] {
    if (retention.joinable()) {
      stop_retention.Notify();
      retention.join();
    }
    rocks_store.reset();
    db.reset();
    if (!db_dir.empty()) std::filesystem::remove_all(db_dir);
  }};
  absl::StatusOr<std::shared_ptr<const CompiledGraph<BenchState>>> graph =
      BuildGraph();
  if (!graph.ok()) {
    std::fprintf(stderr, "graph: %s\n", graph.status().ToString().c_str());
    return 1;
  }
  ThreadPool pool(config.threads);

  // Warm-up on a separate compiled graph (discarded afterwards).
  if (config.warmup > 0) {
    absl::StatusOr<std::shared_ptr<const CompiledGraph<BenchState>>> warm =
        BuildGraph();
    if (!warm.ok()) return 1;
    Config wc = config;
    wc.conc = false;
    Driver(*warm, wc, "warm", config.warmup, &pool).Run();
  }
  int64_t rss_before_kb = ProcStatusKb("VmRSS:");

  Driver driver(*graph, config, "run", config.n, &pool);
  const uint64_t batches_before =
      rocks_store != nullptr ? rocks_store->batches_written() : 0;
  const uint64_t keys_before =
      rocks_store != nullptr ? rocks_store->keys_written() : 0;
  SteadyClock::time_point t_start = SteadyClock::now();
  driver.Run();
  double wall =
      std::chrono::duration<double>(SteadyClock::now() - t_start).count();
  // RocksDB write batches per workflow (group commit), -1 without RocksDB.
  const double batches_per_workflow =
      rocks_store != nullptr
          ? static_cast<double>(rocks_store->batches_written() -
                                batches_before) /
                config.n
          : -1;
  // RocksDB puts and deletes per workflow (expiry included).
  const double keys_per_workflow =
      rocks_store != nullptr
          ? static_cast<double>(rocks_store->keys_written() - keys_before) /
                config.n
          : -1;
  int64_t hwm_kb = ProcStatusKb("VmHWM:");
  int64_t rss_kb = ProcStatusKb("VmRSS:");

  const Outcomes& o = driver.outcomes();
  int64_t total_steps = 0, expected = 0, mismatches = 0, failed = 0;
  std::map<std::string, int64_t> ends;
  for (int64_t i = 0; i < config.n; ++i) {
    int e = ExpectedSteps(i);
    total_steps += o.steps[i];
    expected += e;
    if (o.steps[i] != e) ++mismatches;
    failed += o.failed[i];
    ++ends[o.end_node[i] >= 0 ? driver.names()[o.end_node[i]] : "none"];
  }
  std::vector<double> sorted = o.latency_ms;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0;
  for (double x : o.latency_ms) mean += x;
  mean /= std::max<int64_t>(1, config.n);
  double max = sorted.empty() ? std::nan("") : sorted.back();

  std::vector<std::string> end_parts;
  for (const auto& [name, count] : ends) {
    end_parts.push_back(absl::StrFormat("\"%s\":%d", name, count));
  }
  std::string result = absl::StrFormat(
      "{\"engine\":\"reflexion-cpp\",\"n\":%d,\"mode\":\"%s\","
      "\"concurrency\":%d,\"threads\":%d,\"checkpointer\":\"%s\","
      "\"seq_chain\":%s,\"warmup\":%d,\"cpus\":%d,\"wall_s\":%.3f,"
      "\"workflows_per_s\":%.1f,\"node_steps_per_s\":%.0f,"
      "\"node_steps\":%d,\"node_steps_expected\":%d,\"step_mismatches\":%d,"
      "\"failed_runs\":%d,\"mean_steps_per_workflow\":%.2f,"
      "\"lat_mean_ms\":%.4f,\"lat_p50_ms\":%.4f,\"lat_p99_ms\":%.4f,"
      "\"lat_max_ms\":%.4f,\"peak_rss_mb\":%.1f,\"max_rss_mb_kernel\":%.1f,"
      "\"rss_end_mb\":%.1f,\"rss_before_mb\":%.1f,"
      "\"batches_per_workflow\":%.3f,\"keys_per_workflow\":%.2f,"
      "\"end_nodes\":{%s}}",
      config.n, config.conc ? "conc" : "seq", config.conc ? config.batch : 1,
      config.threads, ckpt_name, config.seq_chain ? "true" : "false",
      config.warmup, static_cast<int>(std::thread::hardware_concurrency()),
      wall, config.n / wall, total_steps / wall, total_steps, expected,
      mismatches, failed, static_cast<double>(total_steps) / config.n, mean,
      Pct(sorted, 50), Pct(sorted, 99), max, Mb(hwm_kb), Mb(hwm_kb), Mb(rss_kb),
      Mb(rss_before_kb), batches_per_workflow, keys_per_workflow,
      absl::StrJoin(end_parts, ","));
  if (!json) {
    std::printf(
        "n=%lld mode=%s threads=%d ckpt=%s: %.1f wf/s, %.0f steps/s, lat "
        "mean %.4f ms p50 %.4f ms p99 %.4f ms max %.4f ms, peak RSS %.1f MB, "
        "RSS %.1f MB, %.3f write batches/wf, %.1f keys written/wf, steps "
        "ok=%s (mismatches %lld, failed %lld)\n",
        static_cast<long long>(config.n),
        config.conc ? absl::StrCat("conc(", config.batch, ")").c_str() : "seq",
        config.threads, std::string(ckpt_name).c_str(), config.n / wall,
        total_steps / wall, mean, Pct(sorted, 50), Pct(sorted, 99), max,
        Mb(hwm_kb), Mb(rss_kb), batches_per_workflow, keys_per_workflow,
        mismatches == 0 && failed == 0 ? "true" : "false",
        static_cast<long long>(mismatches), static_cast<long long>(failed));
  }
  std::printf("%s\n", result.c_str());
  std::fflush(stdout);
  return mismatches == 0 && failed == 0 ? 0 : 2;
}

// Runs `args` as a child of this binary; returns its stdout, or an error.
absl::StatusOr<std::string> RunChild(const std::vector<std::string>& args) {
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError("pipe failed");
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t r;
  while ((r = read(fds[0], buf, sizeof(buf))) > 0) out.append(buf, r);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("child ", absl::StrJoin(args, " "),
                                            " failed (status ", status,
                                            "): ", out));
  }
  return out;
}

int RunMatrix(bool json) {
  std::vector<std::string> results;
  for (absl::string_view size :
       absl::StrSplit(absl::GetFlag(FLAGS_sizes), ',', absl::SkipEmpty())) {
    for (absl::string_view mode :
         absl::StrSplit(absl::GetFlag(FLAGS_modes), ',', absl::SkipEmpty())) {
      std::vector<std::string> args = {
          "engine_bench",
          absl::StrCat("--n=", size),
          absl::StrCat("--mode=", mode),
          absl::StrCat("--conc=", absl::GetFlag(FLAGS_conc)),
          absl::StrCat("--warmup=", absl::GetFlag(FLAGS_warmup)),
          absl::StrCat("--threads=", absl::GetFlag(FLAGS_threads)),
          absl::StrCat("--ckpt=", absl::GetFlag(FLAGS_ckpt)),
          absl::StrCat("--durability=", absl::GetFlag(FLAGS_durability)),
          absl::StrCat("--keep_last=", absl::GetFlag(FLAGS_keep_last)),
          absl::StrCat("--expire=",
                       absl::GetFlag(FLAGS_expire) ? "true" : "false"),
          absl::StrCat("--seq_chain=",
                       absl::GetFlag(FLAGS_seq_chain) ? "true" : "false"),
          "--json"};
      absl::StatusOr<std::string> out = RunChild(args);
      if (!out.ok()) {
        std::fprintf(stderr, "%s\n", out.status().ToString().c_str());
        return 1;
      }
      std::string line(absl::StripAsciiWhitespace(*out));
      if (size_t nl = line.rfind('\n'); nl != std::string::npos) {
        line = line.substr(nl + 1);
      }
      if (!json) std::printf("%s\n", line.c_str());
      std::fflush(stdout);
      results.push_back(std::move(line));
    }
  }
  if (json)
    std::printf("{\"results\":[%s]}\n", absl::StrJoin(results, ",").c_str());
  return 0;
}

}  // namespace
}  // namespace reflexion::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  namespace rb = reflexion::bench;
  bool json = absl::GetFlag(FLAGS_json);
  if (!absl::GetFlag(FLAGS_sizes).empty()) return rb::RunMatrix(json);

  rb::Config config;
  config.n = absl::GetFlag(FLAGS_n);
  std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "seq" && mode != "conc") {
    std::fprintf(stderr, "--mode must be seq or conc, got '%s'\n",
                 mode.c_str());
    return 1;
  }
  config.conc = mode == "conc";
  config.batch = absl::GetFlag(FLAGS_conc);
  if (config.n < 1 || config.batch < 1) {
    std::fprintf(stderr, "--n and --conc must be >= 1\n");
    return 1;
  }
  config.warmup = absl::GetFlag(FLAGS_warmup);
  if (config.warmup < 0) config.warmup = std::min<int64_t>(200, config.n / 10);
  config.threads = absl::GetFlag(FLAGS_threads);
  if (config.threads <= 0) config.threads = config.conc ? 2 : 1;
  config.seq_chain = absl::GetFlag(FLAGS_seq_chain);
  std::string ckpt = absl::GetFlag(FLAGS_ckpt);
  absl::StatusOr<rb::CheckpointMode> ckpt_mode = rb::ParseCheckpointMode(ckpt);
  if (!ckpt_mode.ok()) {
    std::fprintf(stderr, "%s\n", ckpt_mode.status().ToString().c_str());
    return 1;
  }
  config.ckpt = *ckpt_mode;
  std::string durability = absl::GetFlag(FLAGS_durability);
  if (durability == "sync") {
    config.durability = reflexion::graph::Durability::kSync;
  } else if (durability == "async") {
    config.durability = reflexion::graph::Durability::kAsync;
  } else if (durability == "exit") {
    config.durability = reflexion::graph::Durability::kExit;
  } else {
    std::fprintf(stderr, "--durability must be sync, async or exit\n");
    return 1;
  }
  config.keep_last = absl::GetFlag(FLAGS_keep_last);
  if (config.ckpt != rb::CheckpointMode::kNone) {
    ckpt = absl::StrCat(ckpt, "/", durability, "/keep", config.keep_last,
                        absl::GetFlag(FLAGS_expire) ? "/expire" : "");
  }
  return rb::RunScenario(config, json, ckpt);
}

// The reflexion workflow end to end in memory: the simulated cluster, the
// in-memory knowledge store and the heuristic reflector on a real pool.

#include "core/reflexion/workflow.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/graph/task_runner.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/events.h"
#include "core/reflexion/heuristic_reflector.h"
#include "core/reflexion/utf8.h"
#include "core/sim/simulated_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::core {
namespace {

using ::reflexion::testing::IsOk;
using ::testing::Contains;
using ::testing::HasSubstr;

class RecordingSink : public WorkflowSink {
 public:
  void OnEvent(const graph::StepEvent<v1::WorkflowState>& e) override {
    absl::MutexLock lock(&mu_);
    events_.push_back(MakeWorkflowEvent(e));
  }
  std::vector<v1::WorkflowEvent> Take() {
    absl::MutexLock lock(&mu_);
    return std::move(events_);
  }

 private:
  absl::Mutex mu_;
  std::vector<v1::WorkflowEvent> events_;
};

// An executor whose Execute always fails (the agent is down).
class DownExecutor : public ClusterExecutor {
 public:
  std::string Name() const override { return "down"; }
  void Diagnose(const v1::Incident&, Callback<v1::Diagnosis> done) override {
    std::move(done)(v1::Diagnosis());
  }
  void Execute(const v1::Action&, Callback<v1::ExecutionResult> done) override {
    std::move(done)(absl::UnavailableError("agent unreachable"));
  }
  void Observe(const v1::Action&, absl::Duration,
               Callback<v1::Observation> done) override {
    std::move(done)(absl::UnavailableError("agent unreachable"));
  }
};

// Fails the first `failures` Execute calls with UNAVAILABLE, then succeeds.
class FlakyExecutor : public ClusterExecutor {
 public:
  explicit FlakyExecutor(int failures) : failures_(failures) {}
  std::string Name() const override { return "flaky"; }
  void Diagnose(const v1::Incident&, Callback<v1::Diagnosis> done) override {
    std::move(done)(v1::Diagnosis());
  }
  void Execute(const v1::Action& a,
               Callback<v1::ExecutionResult> done) override {
    if (calls_++ < failures_) {
      std::move(done)(absl::UnavailableError("agent restarting"));
      return;
    }
    v1::ExecutionResult r;
    *r.mutable_action() = a;
    r.set_applied(true);
    std::move(done)(r);
  }
  void Observe(const v1::Action&, absl::Duration w,
               Callback<v1::Observation> done) override {
    v1::Observation o;
    o.set_success(true);
    o.set_recovered(true);
    o.set_window_s(absl::ToDoubleSeconds(w));
    std::move(done)(o);
  }
  int calls() const { return calls_; }

 private:
  const int failures_;
  std::atomic<int> calls_{0};
};

// An executor (an HTTP agent in production) answering with invalid UTF-8 in
// every text it returns, and failing the first Execute with such a message.
class BadBytesExecutor : public ClusterExecutor {
 public:
  std::string Name() const override { return "bad-bytes"; }
  void Diagnose(const v1::Incident&, Callback<v1::Diagnosis> done) override {
    v1::Diagnosis d;
    d.set_logs("panic: \xC3\n");
    d.set_last_healthy_image("registry/app:\xFF");
    v1::ContainerStatus* c = d.add_container_statuses();
    c->set_name("app\xE2\x82");
    c->set_waiting_reason("CrashLoopBackOff");
    c->set_waiting_message(std::string(300, '\xF0'));
    d.add_events()->set_message("\xED\xA0\x80");
    std::move(done)(d);
  }
  void Execute(const v1::Action& a,
               Callback<v1::ExecutionResult> done) override {
    if (calls_++ == 0) {
      std::move(done)(absl::UnavailableError("agent says \xC3"));
      return;
    }
    v1::ExecutionResult r;
    *r.mutable_action() = a;
    r.set_applied(true);
    r.set_message("done \xFF");
    std::move(done)(r);
  }
  void Observe(const v1::Action&, absl::Duration w,
               Callback<v1::Observation> done) override {
    v1::Observation o;
    o.set_success(true);
    o.set_recovered(true);
    o.set_window_s(absl::ToDoubleSeconds(w));
    o.add_signals("ready \xC3");
    std::move(done)(o);
  }

 private:
  std::atomic<int> calls_{0};
};

// An OOMKilled container that only a memory raise of at least x2 fixes:
// anything else leaves it OOMKilled.
class NeedsDoubleMemoryExecutor : public ClusterExecutor {
 public:
  std::string Name() const override { return "needs-x2"; }
  void Diagnose(const v1::Incident&, Callback<v1::Diagnosis> done) override {
    v1::Diagnosis d;
    d.set_memory_limit_bytes(512ll << 20);
    std::move(done)(d);
  }
  void Execute(const v1::Action& a,
               Callback<v1::ExecutionResult> done) override {
    factors_.push_back(a.type() == v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT
                           ? a.params().memory_factor()
                           : 0);
    v1::ExecutionResult r;
    *r.mutable_action() = a;
    r.set_applied(true);
    std::move(done)(r);
  }
  void Observe(const v1::Action& a, absl::Duration w,
               Callback<v1::Observation> done) override {
    v1::Observation o;
    o.set_window_s(absl::ToDoubleSeconds(w));
    const bool fixed = a.type() == v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT &&
                       a.params().memory_factor() >= 2.0;
    o.set_success(fixed);
    o.set_recovered(fixed);
    if (!fixed) o.set_failure_reason("OOMKilled");
    std::move(done)(o);
  }
  // The memory factor of every action executed (0: another action).
  std::vector<double> factors_;
};

class WorkflowTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto cluster = sim::SimulatedCluster::WithDefaultScenarios(7);
    ASSERT_THAT(cluster, IsOk());
    cluster_ = *std::move(cluster);
    Build(cluster_.get());
  }

  void Build(ClusterExecutor* executor) {
    WorkflowConfig config;
    config.seed = 11;
    workflow_ = std::make_unique<ReflexionWorkflow>(config, &store_, executor,
                                                    &reflector_, &clock_);
    ASSERT_THAT(workflow_->Init(), IsOk());
  }

  struct Outcome {
    v1::IncidentResult result;
    std::vector<v1::WorkflowEvent> events;
  };

  Outcome Run(std::string pod, std::string ns, std::string type,
              std::string logs = "") {
    v1::Incident in;
    in.set_pod_name(std::move(pod));
    in.set_namespace_(std::move(ns));
    in.set_error_type(std::move(type));
    in.set_logs(std::move(logs));
    RecordingSink sink;
    absl::Notification done;
    Outcome out;
    ++ordinal_;
    workflow_->Start(absl::StrCat("wf-", ordinal_), in, ordinal_, &pool_, &sink,
                     [&](WorkflowRunResult r) {
                       out.result = MakeIncidentResult(r, clock_.Now());
                       done.Notify();
                     });
    done.WaitForNotification();
    out.events = sink.Take();
    return out;
  }

  static std::vector<std::string> CompletedNodes(const Outcome& o) {
    std::vector<std::string> nodes;
    for (const auto& e : o.events) {
      if (e.phase() == v1::NODE_PHASE_COMPLETED) nodes.push_back(e.node());
    }
    return nodes;
  }

  FakeClock clock_;
  InMemoryKnowledgeStore store_;
  HeuristicReflector reflector_;
  std::unique_ptr<sim::SimulatedCluster> cluster_;
  std::unique_ptr<ReflexionWorkflow> workflow_;
  graph::ThreadPool pool_{2};
  uint64_t ordinal_ = 0;
};

TEST_F(WorkflowTest,
       ResolvesAnIncidentWithConsecutiveEventsAndOneEpisodePerAttempt) {
  Outcome o = Run("web-1", "default", "ImagePullBackOff");
  ASSERT_FALSE(o.events.empty());
  for (size_t i = 0; i < o.events.size(); ++i) {
    EXPECT_EQ(o.events[i].sequence(), i + 1);
    EXPECT_EQ(o.events[i].workflow_id(), o.result.workflow_id());
  }
  EXPECT_EQ(o.result.sequence(), o.events.size() + 1);
  EXPECT_EQ(o.events.front().node(), "analyze_error");
  std::vector<std::string> nodes = CompletedNodes(o);
  EXPECT_THAT(nodes, Contains("select_strategy"));
  EXPECT_THAT(nodes, Contains("learn"));
  EXPECT_NE(o.result.status(), v1::WORKFLOW_STATUS_UNSPECIFIED);
  EXPECT_NE(o.result.status(), v1::WORKFLOW_STATUS_FAILED);
  EXPECT_FALSE(o.result.final_strategy().type().empty());
  EXPECT_GE(o.result.reflexion_summary().reflections_performed(),
            o.result.attempts());
  EpisodeQuery q;
  q.workflow_id = o.result.workflow_id();
  absl::StatusOr<EpisodePage> page = store_.ListEpisodes(q);
  ASSERT_THAT(page, IsOk());
  EXPECT_EQ(static_cast<int>(page->episodes.size()), o.result.attempts());
}

TEST_F(WorkflowTest, UnknownErrorTypeGoesThroughDeepAnalysis) {
  Outcome o = Run("native-worker-0", "batch", "Segfault",
                  "Segmentation fault (core dumped)");
  std::vector<std::string> nodes = CompletedNodes(o);
  ASSERT_GE(nodes.size(), 2u);
  EXPECT_EQ(nodes[0], "analyze_error");
  EXPECT_EQ(nodes[1], "deep_analysis");
  EXPECT_EQ(o.result.signature(), "Segfault/segfault");
}

TEST_F(WorkflowTest, MissingSecretEscalatesWithATierCRecommendation) {
  // Find a pod the simulator gives the missing-secret root cause.
  for (int i = 0; i < 200; ++i) {
    std::string pod = absl::StrCat("billing-", i);
    Outcome o = Run(pod, "shop", "CreateContainerConfigError");
    if (o.result.signature() != "CreateContainerConfigError/missing_secret") {
      continue;
    }
    EXPECT_EQ(o.result.status(), v1::WORKFLOW_STATUS_ESCALATED);
    EXPECT_TRUE(o.result.requires_human_intervention());
    EXPECT_THAT(o.result.escalation_reason(),
                HasSubstr("create_missing_config"));
    EXPECT_EQ(o.result.attempts(), 0);
    const v1::WorkflowEvent& last = o.events.back();
    EXPECT_EQ(last.node(), "human_escalation");
    EXPECT_EQ(last.escalation().recommended_action().type(),
              v1::ACTION_TYPE_CREATE_MISSING_CONFIG);
    return;
  }
  FAIL() << "no pod was assigned the missing-secret scenario";
}

TEST_F(WorkflowTest, ExecutorFailureEndsTheWorkflowFailedWithAFailedEvent) {
  DownExecutor down;
  Build(&down);
  Outcome o = Run("web-1", "default", "OOMKilled");
  EXPECT_EQ(o.result.status(), v1::WORKFLOW_STATUS_FAILED);
  EXPECT_THAT(o.result.error(), HasSubstr("agent unreachable"));
  EXPECT_EQ(o.events.back().phase(), v1::NODE_PHASE_FAILED);
  EXPECT_EQ(o.events.back().node(), "execute_fix");
}

TEST_F(WorkflowTest, ATransientExecutorErrorIsRetriedAndTheWorkflowResolves) {
  FlakyExecutor flaky(2);
  Build(&flaky);
  Outcome o = Run("web-1", "default", "OOMKilled");
  EXPECT_EQ(o.result.status(), v1::WORKFLOW_STATUS_RESOLVED)
      << o.result.error();
  EXPECT_EQ(flaky.calls(), 3);
  int retrying = 0;
  for (const auto& e : o.events) {
    if (e.phase() == v1::NODE_PHASE_RETRYING) {
      ++retrying;
      EXPECT_EQ(e.node(), "execute_fix");
    }
  }
  EXPECT_EQ(retrying, 2);
}

TEST_F(WorkflowTest, FirstAttemptSuccessRisesWithExperience) {
  const char* types[] = {"ImagePullBackOff", "CrashLoopBackOff", "OOMKilled",
                         "Evicted", "Pending"};
  std::vector<bool> first_try;
  bool saw_meta = false;
  for (int i = 0; i < 250; ++i) {
    Outcome o = Run(absl::StrCat("svc-", i % 40), absl::StrCat("team-", i % 3),
                    types[i % 5]);
    ASSERT_NE(o.result.status(), v1::WORKFLOW_STATUS_FAILED)
        << o.result.error();
    first_try.push_back(o.result.success() && o.result.attempts() == 1);
    for (const auto& e : o.events) saw_meta |= e.node() == "meta_reflect";
  }
  auto rate = [&](size_t from, size_t to) {
    double n = 0;
    for (size_t i = from; i < to; ++i) n += first_try[i];
    return n / (to - from);
  };
  const double late = rate(first_try.size() - 60, first_try.size());
  // The same last 60 incidents, each on a fresh memory and a fresh cluster
  // (the same seeds): what the catalog's priors alone achieve. Measured
  // 2026-12-01: 0.78 fresh, 0.88 with the 190 incidents before (and 0.85
  // over the first 60: the priors start high, so the comparison is with
  // the same incidents, not with the early ones).
  double fresh = 0;
  for (int i = 190; i < 250; ++i) {
    auto cluster = sim::SimulatedCluster::WithDefaultScenarios(7);
    ASSERT_THAT(cluster, IsOk());
    InMemoryKnowledgeStore store;
    WorkflowConfig config;
    config.seed = 11;
    ReflexionWorkflow wf(config, &store, cluster->get(), &reflector_, &clock_);
    ASSERT_THAT(wf.Init(), IsOk());
    v1::Incident in;
    in.set_pod_name(absl::StrCat("svc-", i % 40));
    in.set_namespace_(absl::StrCat("team-", i % 3));
    in.set_error_type(types[i % 5]);
    absl::Notification done;
    v1::IncidentResult r;
    wf.Start(absl::StrCat("fresh-", i), in, i + 1, &pool_, nullptr,
             [&](WorkflowRunResult run) {
               r = MakeIncidentResult(run, clock_.Now());
               done.Notify();
             });
    done.WaitForNotification();
    fresh += r.success() && r.attempts() == 1;
  }
  fresh /= 60;
  EXPECT_GT(late, fresh + 0.05) << "late " << late << " fresh " << fresh;
  EXPECT_TRUE(saw_meta) << "no low-quality reflection was ever re-examined";
}

// The reflection on a raise that was too small proposes a larger one; the
// same workflow tries it at once. Once the version's own x1.5 has failed on
// the signature twice, the raise is kept for it (StrategyStats.tuned_params)
// and later incidents start with it; once it has resolved
// min_trials_for_change (3) incidents it becomes the strategy's version 2.
TEST_F(WorkflowTest, ARaiseTooSmallIsRaisedInTheSameWorkflowThenLearned) {
  NeedsDoubleMemoryExecutor exec;
  Build(&exec);
  const double raised = 1.5 * 1.35;
  auto record = [&]() {
    absl::StatusOr<std::vector<v1::StrategyStats>> stats =
        store_.GetStats("OOMKilled/memory_limit_too_low");
    EXPECT_THAT(stats, IsOk());
    for (const v1::StrategyStats& st : *stats) {
      if (st.strategy() == "increase_memory_limit") return st;
    }
    return v1::StrategyStats();
  };
  Outcome first = Run("report-0", "batch", "OOMKilled");
  EXPECT_EQ(first.result.status(), v1::WORKFLOW_STATUS_RESOLVED)
      << first.result.error();
  EXPECT_EQ(first.result.attempts(), 2);
  ASSERT_EQ(exec.factors_.size(), 2u);
  EXPECT_DOUBLE_EQ(exec.factors_[0], 1.5);
  EXPECT_NEAR(exec.factors_[1], raised, 1e-9);
  // The second selection says where its parameters came from.
  std::string source;
  for (const auto& e : first.events) {
    if (e.node() != "select_strategy" || !e.has_selection() ||
        e.selection().attempt() != 2) {
      continue;
    }
    for (const auto& c : e.selection().candidates()) {
      if (c.strategy() == "increase_memory_limit") source = c.params_source();
    }
  }
  EXPECT_THAT(source, HasSubstr("raised after attempt 1"));
  // One failure of x1.5 could be bad luck: not kept yet.
  v1::StrategyStats r = record();
  EXPECT_FALSE(r.has_tuned_params());
  EXPECT_EQ(r.tuned_version(), 1);
  EXPECT_EQ(r.base_trials(), 1);
  EXPECT_EQ(r.base_failures(), 1);

  Outcome second = Run("report-1", "batch", "OOMKilled");
  EXPECT_EQ(second.result.attempts(), 2);
  r = record();
  ASSERT_TRUE(r.has_tuned_params());
  EXPECT_NEAR(r.tuned_params().memory_factor(), raised, 1e-9);
  EXPECT_EQ(r.base_failures(), 2);
  EXPECT_EQ(r.tuned_trials(), 1);
  EXPECT_EQ(r.tuned_successes(), 1);

  // Now the signature starts with the raise.
  Outcome third = Run("report-2", "batch", "OOMKilled");
  EXPECT_EQ(third.result.status(), v1::WORKFLOW_STATUS_RESOLVED);
  EXPECT_EQ(third.result.attempts(), 1);
  ASSERT_EQ(exec.factors_.size(), 5u);
  EXPECT_NEAR(exec.factors_[4], raised, 1e-9);
  absl::StatusOr<std::vector<v1::Strategy>> history =
      store_.GetStrategyHistory("increase_memory_limit");
  ASSERT_THAT(history, IsOk());
  EXPECT_EQ(history->size(), 1u);

  // Its third success makes it version 2, which the next incident runs.
  Outcome fourth = Run("report-3", "batch", "OOMKilled");
  EXPECT_EQ(fourth.result.attempts(), 1);
  history = store_.GetStrategyHistory("increase_memory_limit");
  ASSERT_THAT(history, IsOk());
  ASSERT_EQ(history->size(), 2u);
  const v1::Strategy& v2 = (*history)[1];
  EXPECT_EQ(v2.version(), 2);
  EXPECT_EQ(v2.parent_version(), 1);
  EXPECT_EQ(v2.author(), "reflector:heuristic");
  EXPECT_NEAR(v2.params().memory_factor(), raised, 1e-9);
  EXPECT_THAT(v2.reason(), HasSubstr("resolved 3 of 3 attempts where version "
                                     "1's memory_factor 1.5 failed 2 of 2"));
  Outcome fifth = Run("report-4", "batch", "OOMKilled");
  EXPECT_EQ(fifth.result.attempts(), 1);
  ASSERT_EQ(exec.factors_.size(), 7u);
  EXPECT_NEAR(exec.factors_[6], raised, 1e-9);
  r = record();
  EXPECT_EQ(r.tuned_version(), 2);
  EXPECT_FALSE(r.has_tuned_params());
  EXPECT_EQ(r.base_trials(), 1);
}

TEST_F(WorkflowTest, ReflectionCreatesANewStrategyVersionWhenARaiseIsTooSmall) {
  for (int i = 0; i < 120; ++i) {
    Run(absl::StrCat("etl-", i), "data", "OOMKilled");
  }
  absl::StatusOr<std::vector<v1::Strategy>> history =
      store_.GetStrategyHistory("increase_memory_limit");
  ASSERT_THAT(history, IsOk());
  ASSERT_GE(history->size(), 2u);
  const v1::Strategy& v2 = (*history)[1];
  EXPECT_EQ(v2.version(), 2);
  EXPECT_EQ(v2.parent_version(), 1);
  EXPECT_EQ(v2.author(), "reflector:heuristic");
  EXPECT_GT(v2.params().memory_factor(),
            (*history)[0].params().memory_factor());
}

// Plants version 2 of increase_memory_limit (a reflection's) with hand-made
// records: version 1 succeeded `v1_successes` of 30, version 2
// `v2_successes` of 4 (on
// another signature, so that this signature's posterior, 200 successes,
// makes the selector pick the strategy). Returns the signature.
std::string PlantVersion2(InMemoryKnowledgeStore& store,
                          const std::string& signature, int v1_successes,
                          int v2_successes) {
  absl::StatusOr<std::vector<v1::Strategy>> history =
      store.GetStrategyHistory("increase_memory_limit");
  EXPECT_THAT(history, IsOk());
  v1::Strategy v2 = history->back();
  v2.set_version(2);
  v2.set_parent_version(1);
  v2.set_author("reflector:heuristic");
  v2.mutable_params()->set_memory_factor(
      v2.params().memory_factor() > 1.2 ? 1.1 : 1.5);
  EXPECT_THAT(store.PutStrategyVersion(v2), IsOk());
  int n = 0;
  auto commit = [&](const std::string& sig, int version, bool success) {
    LearningCommit c;
    c.episode.set_id(absl::StrCat("planted/", n));
    c.episode.set_workflow_id(absl::StrCat("planted-", n));
    c.episode.mutable_time()->set_seconds(1'000 + n);
    ++n;
    c.episode.set_signature(sig);
    c.episode.set_strategy("increase_memory_limit");
    c.episode.set_strategy_version(version);
    c.episode.set_success(success);
    EXPECT_THAT(store.CommitLearning(c), IsOk());
  };
  for (int i = 0; i < 200; ++i) commit(signature, 0, true);
  for (int i = 0; i < 30; ++i) commit("planted/other", 1, i < v1_successes);
  for (int i = 0; i < 4; ++i) commit("planted/other", 2, i < v2_successes);
  return signature;
}

// The LearningUpdate of the first learn event of `o`.
const v1::LearningUpdate* FirstLearning(
    const std::vector<v1::WorkflowEvent>& events) {
  for (const auto& e : events) {
    if (e.node() == "learn" && e.phase() == v1::NODE_PHASE_COMPLETED &&
        e.has_learning()) {
      return &e.learning();
    }
  }
  return nullptr;
}

TEST_F(WorkflowTest, LearnRollsBackAPlantedBadVersion) {
  // The signature OOMKilled incidents get here.
  Outcome first = Run("etl-0", "data", "OOMKilled");
  const v1::LearningUpdate* seen = FirstLearning(first.events);
  ASSERT_NE(seen, nullptr);
  PlantVersion2(store_, seen->signature(), 30, 0);
  Outcome o = Run("etl-1", "data", "OOMKilled");
  const v1::LearningUpdate* u = FirstLearning(o.events);
  ASSERT_NE(u, nullptr);
  ASSERT_EQ(u->strategy(), "increase_memory_limit");
  EXPECT_EQ(u->rolled_back_version(), 2);
  EXPECT_EQ(u->new_version(), 3);
  EXPECT_THAT(u->rollback_reason(), HasSubstr("its parent version 1 "));
  absl::StatusOr<std::vector<v1::Strategy>> history =
      store_.GetStrategyHistory("increase_memory_limit");
  ASSERT_THAT(history, IsOk());
  ASSERT_EQ(history->size(), 3u);
  const v1::Strategy& v3 = (*history)[2];
  EXPECT_EQ(v3.author(), "auto-rollback");
  EXPECT_EQ(v3.parent_version(), 2);
  EXPECT_DOUBLE_EQ(v3.params().memory_factor(),
                   (*history)[0].params().memory_factor());
}

TEST_F(WorkflowTest, LearnKeepsAPlantedGoodVersion) {
  Outcome first = Run("etl-0", "data", "OOMKilled");
  const v1::LearningUpdate* seen = FirstLearning(first.events);
  ASSERT_NE(seen, nullptr);
  PlantVersion2(store_, seen->signature(), 15, 4);
  Outcome o = Run("etl-1", "data", "OOMKilled");
  const v1::LearningUpdate* u = FirstLearning(o.events);
  ASSERT_NE(u, nullptr);
  ASSERT_EQ(u->strategy(), "increase_memory_limit");
  EXPECT_EQ(u->rolled_back_version(), 0);
  absl::StatusOr<std::vector<v1::Strategy>> history =
      store_.GetStrategyHistory("increase_memory_limit");
  ASSERT_THAT(history, IsOk());
  for (const v1::Strategy& v : *history) EXPECT_NE(v.author(), "auto-rollback");
}

// Multi-byte characters (2, 3 and 4 bytes) at every byte offset around the
// clip limits of evidence (240) and beyond, in every free-text field.
std::string MultiByteEverywhere(size_t pad) {
  std::string s(pad, 'a');
  while (s.size() < 300) absl::StrAppend(&s, "\u00e9\u20ac\U0001F600");
  return s;
}

TEST_F(WorkflowTest, MultiByteTextAtEveryClipBoundaryCheckpointsDecodably) {
  InMemoryCheckpointStore checkpoints;
  WorkflowConfig config;
  config.seed = 11;
  config.escalation_waits = true;
  config.keep_last_checkpoints = 0;  // keep all
  ReflexionWorkflow workflow(config, &store_, cluster_.get(), &reflector_,
                             &clock_, &checkpoints);
  ASSERT_THAT(workflow.Init(), IsOk());
  const char* types[] = {"CrashLoopBackOff", "ImagePullBackOff", "Segfault",
                         "CreateContainerConfigError"};
  for (size_t pad = 230; pad < 242; ++pad) {
    v1::Incident in;
    in.set_pod_name(absl::StrCat("utf8-", pad));
    in.set_namespace_("default");
    in.set_error_type(types[pad % 4]);
    in.set_error_message(MultiByteEverywhere(pad));
    in.set_logs(absl::StrCat("fatal: ", MultiByteEverywhere(pad),
                             "\npanic: ", MultiByteEverywhere(pad + 1)));
    in.set_request_id(absl::StrCat("req-", pad, "-\u00e9\u20ac\U0001F600"));
    for (int i = 0; i < 3; ++i) {
      v1::PodEvent* e = in.add_events();
      e->set_type("Warning");
      e->set_reason("BackOff");
      e->set_message(MultiByteEverywhere(pad + i));
    }
    v1::ContainerStatus* c = in.add_container_statuses();
    c->set_name("app");
    c->set_waiting_reason("CrashLoopBackOff");
    c->set_waiting_message(MultiByteEverywhere(pad));
    RecordingSink sink;
    absl::Notification done;
    v1::IncidentResult result;
    const std::string id = absl::StrCat("utf8-wf-", pad);
    workflow.Start(id, in, pad, &pool_, &sink, [&](WorkflowRunResult r) {
      result = MakeIncidentResult(r, clock_.Now());
      done.Notify();
    });
    done.WaitForNotification();
    EXPECT_NE(result.status(), v1::WORKFLOW_STATUS_FAILED) << result.error();
    std::vector<v1::WorkflowEvent> events = sink.Take();
    ASSERT_FALSE(events.empty());
    for (const v1::WorkflowEvent& e : events) {
      v1::WorkflowEvent back;
      EXPECT_TRUE(back.ParseFromString(e.SerializeAsString()))
          << "pad " << pad << " event " << e.sequence() << " " << e.node();
    }
    v1::IncidentResult back;
    EXPECT_TRUE(back.ParseFromString(result.SerializeAsString()));
    absl::StatusOr<std::vector<Checkpoint>> all = checkpoints.List(id, 0);
    ASSERT_THAT(all, IsOk());
    ASSERT_FALSE(all->empty());
    for (const Checkpoint& cp : *all) {
      v1::WorkflowState state;
      EXPECT_TRUE(state.ParseFromString(cp.state))
          << "pad " << pad << " checkpoint " << cp.step << " after " << cp.node;
    }
    EXPECT_THAT(WorkflowGraph::GetState(checkpoints, id), IsOk());
  }
}

TEST_F(WorkflowTest, InvalidUtf8FromTheExecutorIsRepairedBeforeItIsStored) {
  BadBytesExecutor bad;
  InMemoryCheckpointStore checkpoints;
  WorkflowConfig config;
  config.seed = 11;
  config.keep_last_checkpoints = 0;  // keep all
  ReflexionWorkflow workflow(config, &store_, &bad, &reflector_, &clock_,
                             &checkpoints);
  ASSERT_THAT(workflow.Init(), IsOk());
  v1::Incident in;
  in.set_pod_name("web-1");
  in.set_namespace_("default");
  in.set_error_type("Segfault");  // deep analysis quotes the logs too
  RecordingSink sink;
  absl::Notification done;
  v1::IncidentResult result;
  workflow.Start("bad-bytes-1", in, 1, &pool_, &sink, [&](WorkflowRunResult r) {
    result = MakeIncidentResult(r, clock_.Now());
    done.Notify();
  });
  done.WaitForNotification();
  std::vector<v1::WorkflowEvent> events = sink.Take();
  ASSERT_FALSE(events.empty());
  for (const v1::WorkflowEvent& e : events) {
    EXPECT_EQ(FindInvalidUtf8(e), "") << e.node() << " " << e.phase();
  }
  EXPECT_EQ(FindInvalidUtf8(result), "");
  absl::StatusOr<std::vector<Checkpoint>> all =
      checkpoints.List("bad-bytes-1", 0);
  ASSERT_THAT(all, IsOk());
  ASSERT_GT(all->size(), 1u);
  for (const Checkpoint& cp : *all) {
    v1::WorkflowState state;
    EXPECT_TRUE(state.ParseFromString(cp.state)) << cp.step << " " << cp.node;
    EXPECT_TRUE(IsValidUtf8(cp.error)) << cp.step;
  }
}

TEST_F(WorkflowTest, GraphHasAllTwelveNodes) {
  std::string mermaid = workflow_->graph().ToMermaid();
  for (const char* node :
       {"analyze_error", "deep_analysis", "select_strategy", "approval",
        "policy", "execute_fix", "observe_outcome", "undo", "reflect",
        "meta_reflect", "learn", "human_escalation"}) {
    EXPECT_THAT(mermaid, HasSubstr(node));
  }
  EXPECT_EQ(workflow_->graph().NodeNames().size(), 12u);
}

}  // namespace
}  // namespace reflexion::core

#include "core/graph/graph.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::graph {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

struct TestState {
  std::vector<std::string> trail;
  int counter = 0;
};

class Recorder : public EventSink<TestState> {
 public:
  void OnEvent(const StepEvent<TestState>& e) override {
    absl::MutexLock lock(&mu_);
    const char* phase = e.phase == NodePhase::kStarted     ? "started"
                        : e.phase == NodePhase::kCompleted ? "completed"
                                                           : "failed";
    events_.push_back(std::string(e.workflow_id) + ":" +
                      std::to_string(e.sequence) + ":" + std::string(e.node) +
                      ":" + phase);
  }
  std::vector<std::string> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }

 private:
  absl::Mutex mu_;
  std::vector<std::string> events_;
};

// Runs the graph once and waits for the result.
RunResult<TestState> RunToEnd(const CompiledGraph<TestState>& g,
                              TaskRunner* runner, EventSink<TestState>* sink,
                              std::string id = "wf", int limit = 100) {
  core::RealClock clock;
  absl::Notification done;
  RunResult<TestState> out{absl::OkStatus(), {}, 0, 0, ""};
  RunOptions options;
  options.workflow_id = id;
  options.recursion_limit = limit;
  g.Start(options, TestState{}, runner, sink, &clock,
          [&](RunResult<TestState> r) {
            out = std::move(r);
            done.Notify();
          });
  done.WaitForNotification();
  return out;
}

NodeFn<TestState> Append(std::string name) {
  return [name](TestState& s, NodeDone done) {
    s.trail.push_back(name);
    std::move(done)(absl::OkStatus());
  };
}

TEST(GraphBuilderTest, LinearGraphRunsEveryNodeInOrder) {
  GraphBuilder<TestState> b;
  b.AddNode("a", Append("a")).AddNode("b", Append("b"));
  b.AddEdge(std::string(kStart), "a")
      .AddEdge("a", "b")
      .AddEdge("b", std::string(kEnd));
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  ThreadPool pool(2);
  Recorder rec;
  auto r = RunToEnd(**g, &pool, &rec);
  EXPECT_THAT(r.status, IsOk());
  EXPECT_THAT(r.state.trail, ElementsAre("a", "b"));
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(r.last_node, "b");
  EXPECT_THAT(rec.events(), ElementsAre("wf:1:a:started", "wf:2:a:completed",
                                        "wf:3:b:started", "wf:4:b:completed"));
  EXPECT_EQ(r.last_sequence, 4u);
}

TEST(GraphBuilderTest, ConditionalEdgesLoopUntilRouterEnds) {
  GraphBuilder<TestState> b;
  b.AddNode("inc", [](TestState& s, NodeDone done) {
    ++s.counter;
    std::move(done)(absl::OkStatus());
  });
  b.AddEdge(std::string(kStart), "inc");
  b.AddConditionalEdges("inc",
                        [](const TestState& s) {
                          return s.counter < 5 ? std::string("inc")
                                               : std::string(kEnd);
                        },
                        {"inc", std::string(kEnd)});
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  ThreadPool pool(1);
  auto r = RunToEnd(**g, &pool, nullptr);
  EXPECT_THAT(r.status, IsOk());
  EXPECT_EQ(r.state.counter, 5);
  EXPECT_EQ(r.steps, 5);
}

TEST(GraphBuilderTest, RecursionLimitFailsTheRun) {
  GraphBuilder<TestState> b;
  b.AddNode("spin", Append("spin"));
  b.AddEdge(std::string(kStart), "spin");
  b.AddConditionalEdges("spin",
                        [](const TestState&) { return std::string("spin"); },
                        {"spin", std::string(kEnd)});
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  ThreadPool pool(1);
  Recorder rec;
  auto r = RunToEnd(**g, &pool, &rec, "wf", 7);
  EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kResourceExhausted,
                                 HasSubstr("recursion limit 7")));
  EXPECT_EQ(r.steps, 7);
  EXPECT_THAT(rec.events().back(), HasSubstr(":spin:failed"));
}

TEST(GraphBuilderTest, UnknownEdgeTargetIsRejectedAtCompile) {
  GraphBuilder<TestState> b;
  b.AddNode("a", Append("a"));
  b.AddEdge(std::string(kStart), "a").AddEdge("a", "nowhere");
  EXPECT_THAT(b.Compile(), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("'nowhere'")));
}

TEST(GraphBuilderTest, UnreachableNodeIsRejectedAtCompile) {
  GraphBuilder<TestState> b;
  b.AddNode("a", Append("a")).AddNode("island", Append("island"));
  b.AddEdge(std::string(kStart), "a").AddEdge("a", std::string(kEnd));
  b.AddEdge("island", std::string(kEnd));
  EXPECT_THAT(b.Compile(), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("'island' is unreachable")));
}

TEST(GraphBuilderTest, NodeWithoutOutgoingEdgeIsRejectedAtCompile) {
  GraphBuilder<TestState> b;
  b.AddNode("a", Append("a"));
  b.AddEdge(std::string(kStart), "a");
  EXPECT_THAT(b.Compile(), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("'a' has no outgoing edge")));
}

TEST(GraphBuilderTest, DuplicateNodeAndMissingStartAreRejected) {
  GraphBuilder<TestState> dup;
  dup.AddNode("a", Append("a")).AddNode("a", Append("a"));
  EXPECT_THAT(dup.Compile(), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("duplicate node 'a'")));
  GraphBuilder<TestState> nostart;
  nostart.AddNode("a", Append("a")).AddEdge("a", std::string(kEnd));
  EXPECT_THAT(nostart.Compile(), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("no edge from START")));
}

TEST(GraphBuilderTest, CycleWithoutExitIsRejectedAtCompile) {
  GraphBuilder<TestState> b;
  b.AddNode("a", Append("a")).AddNode("b", Append("b"));
  b.AddEdge(std::string(kStart), "a").AddEdge("a", "b").AddEdge("b", "a");
  EXPECT_THAT(b.Compile(), StatusIs(absl::StatusCode::kInvalidArgument,
                                    HasSubstr("END cannot be reached")));
}

TEST(GraphRunTest, NodeErrorEndsRunWithFailedEvent) {
  GraphBuilder<TestState> b;
  b.AddSyncNode("boom", [](TestState&) {
    return absl::UnavailableError("executor down");
  });
  b.AddEdge(std::string(kStart), "boom").AddEdge("boom", std::string(kEnd));
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  ThreadPool pool(1);
  Recorder rec;
  auto r = RunToEnd(**g, &pool, &rec);
  EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(rec.events(),
              ElementsAre("wf:1:boom:started", "wf:2:boom:failed"));
}

TEST(GraphRunTest, RouterReturningUndeclaredTargetFailsTheRun) {
  GraphBuilder<TestState> b;
  b.AddNode("a", Append("a"));
  b.AddEdge(std::string(kStart), "a");
  b.AddConditionalEdges("a",
                        [](const TestState&) { return std::string("ghost"); },
                        {std::string(kEnd)});
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  ThreadPool pool(1);
  auto r = RunToEnd(**g, &pool, nullptr);
  EXPECT_THAT(r.status,
              StatusIs(absl::StatusCode::kInternal, HasSubstr("ghost")));
}

TEST(GraphRunTest, AsyncNodeCompletedOnForeignThreadContinuesOnPool) {
  std::vector<std::thread> io_threads;
  absl::Mutex mu;
  std::thread::id second_node_thread;
  ThreadPool pool(1);
  std::thread::id pool_thread;
  {
    absl::Notification got;
    pool.Post([&] {
      pool_thread = std::this_thread::get_id();
      got.Notify();
    });
    got.WaitForNotification();
  }
  GraphBuilder<TestState> b;
  b.AddNode("io", [&](TestState& s, NodeDone done) {
    absl::MutexLock lock(&mu);
    io_threads.emplace_back([&s, done = std::move(done)]() mutable {
      s.trail.push_back("io");
      std::move(done)(absl::OkStatus());
    });
  });
  b.AddNode("after", [&](TestState& s, NodeDone done) {
    second_node_thread = std::this_thread::get_id();
    s.trail.push_back("after");
    std::move(done)(absl::OkStatus());
  });
  b.AddEdge(std::string(kStart), "io")
      .AddEdge("io", "after")
      .AddEdge("after", std::string(kEnd));
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  auto r = RunToEnd(**g, &pool, nullptr);
  {
    absl::MutexLock lock(&mu);
    for (auto& t : io_threads) t.join();
  }
  EXPECT_THAT(r.status, IsOk());
  EXPECT_THAT(r.state.trail, ElementsAre("io", "after"));
  EXPECT_EQ(second_node_thread, pool_thread);
}

TEST(GraphRunTest, ManyConcurrentRunsKeepPerWorkflowSequences) {
  GraphBuilder<TestState> b;
  b.AddNode("a", Append("a")).AddNode("b", Append("b"));
  b.AddEdge(std::string(kStart), "a")
      .AddEdge("a", "b")
      .AddEdge("b", std::string(kEnd));
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  ThreadPool pool(4);
  core::RealClock clock;
  Recorder rec;
  constexpr int kRuns = 500;
  absl::Mutex mu;
  int finished = 0;
  absl::Notification all;
  for (int i = 0; i < kRuns; ++i) {
    RunOptions options;
    options.workflow_id = "w" + std::to_string(i);
    (*g)->Start(options, TestState{}, &pool, &rec, &clock,
                [&](RunResult<TestState> r) {
                  EXPECT_THAT(r.status, IsOk());
                  absl::MutexLock lock(&mu);
                  if (++finished == kRuns) all.Notify();
                });
  }
  all.WaitForNotification();
  absl::flat_hash_map<std::string, int> last_seq;
  for (const auto& e : rec.events()) {
    std::vector<std::string> parts = absl::StrSplit(e, ':');
    int seq = std::stoi(parts[1]);
    EXPECT_EQ(seq, last_seq[parts[0]] + 1) << e;
    last_seq[parts[0]] = seq;
  }
  EXPECT_EQ(last_seq.size(), static_cast<size_t>(kRuns));
}

TEST(GraphRunTest, MermaidListsEveryEdge) {
  GraphBuilder<TestState> b;
  b.AddNode("a", Append("a")).AddNode("b", Append("b"));
  b.AddEdge(std::string(kStart), "a");
  b.AddConditionalEdges("a", [](const TestState&) { return std::string("b"); },
                        {"b", std::string(kEnd)});
  b.AddEdge("b", std::string(kEnd));
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  std::string m = (*g)->ToMermaid();
  EXPECT_THAT(m, HasSubstr("flowchart TD"));
  EXPECT_THAT(m, HasSubstr("__start__ --> a"));
  EXPECT_THAT(m, HasSubstr("a -.-> b"));
  EXPECT_THAT(m, HasSubstr("a -.-> __end__([END])"));
  EXPECT_THAT(m, HasSubstr("b --> __end__([END])"));
}

// Lanes of a one-thread pool, filled while its worker is held by a gate
// task: what runs after the gate, in order.
class LaneOrderTest : public ::testing::Test {
 protected:
  LaneOrderTest() : pool_(std::make_unique<ThreadPool>(1)) {
    absl::Notification started;
    pool_->Post([this, &started] {
      started.Notify();
      release_.WaitForNotification();
    });
    started.WaitForNotification();  // the worker is inside the gate
  }
  // Queues a task that records `name` on `lane`.
  void Add(TaskRunner& lane, std::string name) {
    lane.Post([this, name = std::move(name)] {
      absl::MutexLock lock(&mu_);
      order_.push_back(name);
    });
  }
  // Releases the gate and waits for every queued task.
  std::vector<std::string> Run() {
    release_.Notify();
    pool_.reset();
    return order_;
  }

  std::unique_ptr<ThreadPool> pool_;
  absl::Notification release_;
  absl::Mutex mu_;
  std::vector<std::string> order_;
};

TEST_F(LaneOrderTest, LanesAreServedRoundRobinEachInItsOwnOrder) {
  std::shared_ptr<Lane> a = pool_->NewLane();
  std::shared_ptr<Lane> b = pool_->NewLane();
  for (int i = 0; i < 3; ++i) Add(*a, absl::StrCat("a", i));
  Add(*b, "b0");
  Add(*pool_, "d0");  // the default lane is one lane among the others
  EXPECT_THAT(Run(), ElementsAre("a0", "b0", "d0", "a1", "a2"));
}

TEST_F(LaneOrderTest,
       BackgroundLaneGetsOneDispatchInSixteenWhileForegroundWaits) {
  std::shared_ptr<Lane> fg = pool_->NewLane();
  std::shared_ptr<Lane> bg = pool_->NewLane();
  bg->SetBackground(true);
  for (int i = 0; i < 3; ++i) Add(*bg, absl::StrCat("bg", i));
  for (int i = 0; i < 20; ++i) Add(*fg, absl::StrCat("fg", i));
  std::vector<std::string> order = Run();
  ASSERT_EQ(order.size(), 23u);
  // 15 foreground dispatches, then one background; again; then the rest
  // of the background once the foreground is empty.
  std::vector<std::string> expected;
  for (int i = 0; i < ThreadPool::kBackgroundEvery - 1; ++i) {
    expected.push_back(absl::StrCat("fg", i));
  }
  expected.push_back("bg0");
  for (int i = ThreadPool::kBackgroundEvery - 1; i < 20; ++i) {
    expected.push_back(absl::StrCat("fg", i));
  }
  expected.push_back("bg1");
  expected.push_back("bg2");
  EXPECT_EQ(order, expected);
}

TEST_F(LaneOrderTest, ALaneMovedWhileQueuedKeepsItsTasksAndTheirOrder) {
  std::shared_ptr<Lane> a = pool_->NewLane();
  std::shared_ptr<Lane> b = pool_->NewLane();
  Add(*a, "a0");
  Add(*a, "a1");
  Add(*b, "b0");
  Add(*b, "b1");
  a->SetBackground(true);  // a now waits behind foreground work
  a->SetBackground(true);  // idempotent
  EXPECT_THAT(Run(), ElementsAre("b0", "b1", "a0", "a1"));
}

TEST_F(LaneOrderTest, BackInTheForegroundALaneTakesItsTurnsAgain) {
  std::shared_ptr<Lane> a = pool_->NewLane();
  std::shared_ptr<Lane> b = pool_->NewLane();
  a->SetBackground(true);
  Add(*a, "a0");
  Add(*b, "b0");
  Add(*b, "b1");
  a->SetBackground(false);
  EXPECT_THAT(Run(), ElementsAre("b0", "a0", "b1"));
}

TEST_F(LaneOrderTest, ADroppedLaneStillRunsWhatItHadQueued) {
  std::shared_ptr<Lane> a = pool_->NewLane();
  Add(*a, "a0");
  Add(*a, "a1");
  a.reset();
  EXPECT_THAT(Run(), ElementsAre("a0", "a1"));
}

TEST(ThreadPoolTest, TasksPostedFromTasksOfManyLanesAllRun) {
  std::atomic<int> ran{0};
  {
    ThreadPool pool(2);
    std::vector<std::shared_ptr<Lane>> lanes;
    for (int i = 0; i < 8; ++i) lanes.push_back(pool.NewLane());
    lanes[3]->SetBackground(true);
    for (int i = 0; i < 8; ++i) {
      // Each lane chains 100 tasks, each posting the next on its lane (the
      // way a workflow's nodes follow one another); the lane itself is
      // dropped by the test meanwhile.
      struct Chain {
        static void Step(std::shared_ptr<Lane> lane, int left,
                         std::atomic<int>* ran) {
          ran->fetch_add(1);
          if (left == 0) return;
          Lane* l = lane.get();
          l->Post([lane = std::move(lane), left, ran]() mutable {
            Step(std::move(lane), left - 1, ran);
          });
        }
      };
      lanes[i]->Post([lane = lanes[i], &ran]() mutable {
        Chain::Step(std::move(lane), 99, &ran);
      });
    }
    lanes.clear();
  }  // drains
  EXPECT_EQ(ran.load(), 800);
}

}  // namespace
}  // namespace reflexion::graph

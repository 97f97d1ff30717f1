// Durable execution of the engine: checkpoints per step, durability modes,
// resume, get state, fork, retention. Any protobuf message can be the
// state; these tests use v1::Episode (an int `attempt` and a list
// `lessons`) as a stand-in.

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/graph/graph.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "reflexion/v1/types.pb.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::graph {
namespace {

using State = reflexion::v1::Episode;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::ElementsAre;

// START -> inc -> (attempt < 3 ? inc : done) -> done -> END
std::shared_ptr<const CompiledGraph<State>> CountingGraph(
    std::function<absl::Status(State&)> on_inc = nullptr) {
  GraphBuilder<State> b;
  b.AddSyncNode("inc", [on_inc](State& s) {
    s.set_attempt(s.attempt() + 1);
    s.add_lessons("inc" + std::to_string(s.attempt()));
    return on_inc ? on_inc(s) : absl::OkStatus();
  });
  b.AddSyncNode("done", [](State& s) {
    s.add_lessons("done");
    return absl::OkStatus();
  });
  b.AddEdge(std::string(kStart), "inc");
  b.AddConditionalEdges("inc",
                        [](const State& s) {
                          return s.attempt() < 3 ? std::string("inc")
                                                 : std::string("done");
                        },
                        {"inc", "done"});
  b.AddEdge("done", std::string(kEnd));
  auto g = b.Compile();
  CHECK(g.ok()) << g.status();
  return *g;
}

struct Recorder : EventSink<State> {
  std::vector<uint64_t> sequences;
  std::vector<std::string> nodes;
  void OnEvent(const StepEvent<State>& e) override {
    sequences.push_back(e.sequence);
    if (e.phase == NodePhase::kCompleted) nodes.emplace_back(e.node);
  }
};

class CheckpointTest : public ::testing::Test {
 protected:
  RunResult<State> Run(const CompiledGraph<State>& g, RunOptions options,
                       Recorder* rec = nullptr) {
    absl::Notification done;
    RunResult<State> out{absl::OkStatus(), {}, 0, 0, ""};
    g.Start(std::move(options), State(), &pool_, rec, &clock_,
            [&](RunResult<State> r) {
              out = std::move(r);
              done.Notify();
            });
    done.WaitForNotification();
    return out;
  }
  RunOptions Options(std::string id, Durability d, int keep_last = 0) {
    RunOptions o;
    o.workflow_id = std::move(id);
    o.checkpoints = &store_;
    o.durability = d;
    o.keep_last = keep_last;
    return o;
  }

  core::InMemoryCheckpointStore store_;
  core::FakeClock clock_;
  ThreadPool pool_{2};
};

TEST_F(CheckpointTest, AsyncModeWritesACheckpointPerStepPlusTheInput) {
  auto g = CountingGraph();
  auto r = Run(*g, Options("wf", Durability::kAsync));
  ASSERT_THAT(r.status, IsOk());
  auto list = store_.List("wf", 0);
  ASSERT_THAT(list, IsOk());
  // input + inc, inc, inc, done
  ASSERT_EQ(list->size(), 5u);
  EXPECT_EQ((*list)[0].step, 4u);
  EXPECT_EQ((*list)[0].node, "done");
  EXPECT_EQ((*list)[0].next_node, std::string(kEnd));
  EXPECT_EQ((*list)[4].step, 0u);
  EXPECT_EQ((*list)[4].next_node, "inc");
  EXPECT_EQ((*list)[1].node, "inc");
  EXPECT_EQ((*list)[1].next_node, "done");
  auto rec = store_.GetWorkflow("wf");
  ASSERT_THAT(rec, IsOk());
  EXPECT_EQ(rec->phase, core::WorkflowPhase::kCompleted);
  auto state = CompiledGraph<State>::GetState(store_, "wf");
  ASSERT_THAT(state, IsOk());
  EXPECT_THAT(state->lessons(), ElementsAre("inc1", "inc2", "inc3", "done"));
  auto mid = CompiledGraph<State>::GetState(store_, "wf", 2);
  ASSERT_THAT(mid, IsOk());
  EXPECT_EQ(mid->attempt(), 2);
}

TEST_F(CheckpointTest, ExitModeWritesOnlyTheFinalState) {
  auto g = CountingGraph();
  ASSERT_THAT(Run(*g, Options("wf", Durability::kExit)).status, IsOk());
  auto list = store_.List("wf", 0);
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].next_node, std::string(kEnd));
}

TEST_F(CheckpointTest, KeepLastBoundsTheHistory) {
  auto g = CountingGraph();
  ASSERT_THAT(Run(*g, Options("wf", Durability::kSync, 2)).status, IsOk());
  auto list = store_.List("wf", 0);
  ASSERT_THAT(list, IsOk());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].step, 4u);
  EXPECT_EQ((*list)[1].step, 3u);
}

TEST_F(CheckpointTest, FailureRecordsTheFailedPhase) {
  auto g = CountingGraph([](State& s) {
    return s.attempt() == 2 ? absl::UnavailableError("down") : absl::OkStatus();
  });
  auto r = Run(*g, Options("wf", Durability::kAsync));
  EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kUnavailable));
  // The last checkpoint keeps the cause.
  auto last = store_.Latest("wf");
  ASSERT_THAT(last, IsOk());
  EXPECT_EQ(last->error, "UNAVAILABLE: down");
  auto rec = store_.GetWorkflow("wf");
  ASSERT_THAT(rec, IsOk());
  EXPECT_EQ(rec->phase, core::WorkflowPhase::kFailed);
}

TEST_F(CheckpointTest,
       ResumeContinuesFromTheLatestCheckpointWithoutRepeatingSteps) {
  // A run that "crashes" after step 2: simulate by writing the checkpoints
  // of a run that is stopped by a failing node, then marking it running.
  int inc_calls = 0;
  auto g = CountingGraph([&](State& s) {
    ++inc_calls;
    return s.attempt() == 3 && inc_calls == 3 ? absl::AbortedError("crash")
                                              : absl::OkStatus();
  });
  Recorder first;
  auto r = Run(*g, Options("wf", Durability::kSync), &first);
  ASSERT_THAT(r.status, StatusIs(absl::StatusCode::kAborted));
  // The failure checkpoint was written; roll back to the last good step as
  // a crash would have left it: delete nothing, but resume from step 2.
  core::InMemoryCheckpointStore crashed;
  for (uint64_t step = 0; step <= 2; ++step) {
    auto cp = store_.Get("wf", step);
    ASSERT_THAT(cp, IsOk());
    ASSERT_THAT(crashed.Put(*cp, core::WorkflowPhase::kRunning, 0, false),
                IsOk());
  }
  RunOptions o = Options("wf", Durability::kSync);
  o.checkpoints = &crashed;
  Recorder rec;
  absl::Notification done;
  RunResult<State> out{absl::OkStatus(), {}, 0, 0, ""};
  ASSERT_THAT(g->Resume(o, &pool_, &rec, &clock_,
                        [&](RunResult<State> res) {
                          out = std::move(res);
                          done.Notify();
                        }),
              IsOk());
  done.WaitForNotification();
  ASSERT_THAT(out.status, IsOk());
  EXPECT_THAT(out.state.lessons(), ElementsAre("inc1", "inc2", "inc3", "done"));
  EXPECT_THAT(rec.nodes, ElementsAre("inc", "done"));  // steps 3 and 4 only
  ASSERT_FALSE(rec.sequences.empty());
  auto cp2 = crashed.Get("wf", 2);
  ASSERT_THAT(cp2, IsOk());
  EXPECT_EQ(rec.sequences.front(), cp2->last_sequence + 1);
  EXPECT_EQ(out.steps, 4);
  auto rec_after = crashed.GetWorkflow("wf");
  ASSERT_THAT(rec_after, IsOk());
  EXPECT_EQ(rec_after->phase, core::WorkflowPhase::kCompleted);
}

TEST_F(CheckpointTest, ResumeRefusesAFinishedOrUnknownWorkflow) {
  auto g = CountingGraph();
  ASSERT_THAT(Run(*g, Options("wf", Durability::kAsync)).status, IsOk());
  auto noop = [](RunResult<State>) {};
  EXPECT_THAT(g->Resume(Options("wf", Durability::kAsync), &pool_, nullptr,
                        &clock_, noop),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(g->Resume(Options("nope", Durability::kAsync), &pool_, nullptr,
                        &clock_, noop),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(CheckpointTest,
       ForkStartsANewHistoryAtTheChosenCheckpointWithAnEditedState) {
  auto g = CountingGraph();
  ASSERT_THAT(Run(*g, Options("wf", Durability::kAsync)).status, IsOk());
  ASSERT_THAT(CompiledGraph<State>::Fork(
                  store_, "wf", 1, "wf-fork",
                  [](State& s) { s.add_lessons("edited"); }, clock_.Now()),
              IsOk());
  auto first = store_.Latest("wf-fork");
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->parent_workflow_id, "wf");
  EXPECT_EQ(first->parent_step, 1u);
  absl::Notification done;
  RunResult<State> out{absl::OkStatus(), {}, 0, 0, ""};
  ASSERT_THAT(g->Resume(Options("wf-fork", Durability::kAsync), &pool_, nullptr,
                        &clock_,
                        [&](RunResult<State> r) {
                          out = std::move(r);
                          done.Notify();
                        }),
              IsOk());
  done.WaitForNotification();
  ASSERT_THAT(out.status, IsOk());
  EXPECT_THAT(out.state.lessons(),
              ElementsAre("inc1", "edited", "inc2", "inc3", "done"));
  auto history = store_.List("wf-fork", 0);
  ASSERT_THAT(history, IsOk());
  EXPECT_EQ(history->back().step, 1u);  // starts at the chosen checkpoint
  EXPECT_THAT(CompiledGraph<State>::Fork(store_, "wf", 1, "wf-fork", nullptr,
                                         clock_.Now()),
              StatusIs(absl::StatusCode::kAlreadyExists));
}

// A store that applies queued writes only when Release() runs (on the
// releasing thread, as a group-commit store applies them on its writer),
// optionally failing the write of one step.
class HeldStore final : public core::CheckpointStore {
 public:
  explicit HeldStore(int64_t fail_step = -1) : fail_step_(fail_step) {}

  void PutAsync(core::Checkpoint c, core::WorkflowPhase phase, int keep_last,
                bool sync, WriteDone done) override {
    absl::MutexLock lock(&mu_);
    held_.push_back([this, c = std::move(c), phase, keep_last, sync,
                     done = std::move(done)]() mutable {
      absl::Status s = static_cast<int64_t>(c.step) == fail_step_
                           ? absl::UnavailableError("disk full")
                           : inner_.Put(c, phase, keep_last, sync);
      std::move(done)(std::move(s));
    });
  }
  void AfterWrites(absl::AnyInvocable<void() &&> done) override {
    absl::MutexLock lock(&mu_);
    held_.push_back(std::move(done));
  }
  // Applies what is held, in order; returns how many.
  int Release() {
    std::vector<absl::AnyInvocable<void() &&>> batch;
    {
      absl::MutexLock lock(&mu_);
      batch.swap(held_);
    }
    for (auto& w : batch) std::move(w)();
    return static_cast<int>(batch.size());
  }
  int Held() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(held_.size());
  }
  // Blocks until at least `n` writes are held.
  void AwaitHeld(int n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return static_cast<int>(held_.size()) >= n;
    };
    mu_.Await(absl::Condition(&enough));
  }
  // The run using this store has ended (its done callback calls this).
  void MarkDone() {
    absl::MutexLock lock(&mu_);
    done_ = true;
  }
  // Applies writes as they are queued until the run has ended and nothing
  // is held; returns how many were applied.
  int ReleaseUntilDone() {
    int released = 0;
    while (true) {
      std::vector<absl::AnyInvocable<void() &&>> batch;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return !held_.empty() || done_;
        };
        mu_.Await(absl::Condition(&ready));
        if (held_.empty()) return released;
        batch.swap(held_);
      }
      for (auto& w : batch) std::move(w)();
      released += static_cast<int>(batch.size());
    }
  }
  core::InMemoryCheckpointStore& inner() { return inner_; }

  absl::Status Put(const core::Checkpoint& c, core::WorkflowPhase phase,
                   int keep_last, bool sync) override {
    return inner_.Put(c, phase, keep_last, sync);
  }
  absl::Status SetPhase(absl::string_view id, core::WorkflowPhase phase,
                        absl::Time now, bool sync) override {
    return inner_.SetPhase(id, phase, now, sync);
  }
  absl::StatusOr<core::WorkflowRecord> GetWorkflow(
      absl::string_view id) override {
    return inner_.GetWorkflow(id);
  }
  absl::StatusOr<core::Checkpoint> Latest(absl::string_view id) override {
    return inner_.Latest(id);
  }
  absl::StatusOr<core::Checkpoint> Get(absl::string_view id,
                                       uint64_t step) override {
    return inner_.Get(id, step);
  }
  absl::StatusOr<std::vector<core::Checkpoint>> List(absl::string_view id,
                                                     int limit) override {
    return inner_.List(id, limit);
  }
  absl::StatusOr<std::vector<core::WorkflowRecord>> ListByPhase(
      core::WorkflowPhase phase) override {
    return inner_.ListByPhase(phase);
  }
  absl::StatusOr<int> ExpireFinished(
      absl::Time cutoff, int max,
      std::vector<std::string>* expired = nullptr) override {
    return inner_.ExpireFinished(cutoff, max, expired);
  }

 private:
  const int64_t fail_step_;
  core::InMemoryCheckpointStore inner_;
  absl::Mutex mu_;
  std::vector<absl::AnyInvocable<void() &&>> held_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

// Signals when the node `name` completes.
struct CompletionSignal : EventSink<State> {
  explicit CompletionSignal(std::string name) : name(std::move(name)) {}
  void OnEvent(const StepEvent<State>& e) override {
    if (e.phase == NodePhase::kCompleted && e.node == name &&
        !seen.HasBeenNotified()) {
      seen.Notify();
    }
  }
  std::string name;
  absl::Notification seen;
};

// A run started in the background; `finished` fires with `out` set.
struct BackgroundRun {
  BackgroundRun(const CompiledGraph<State>& g, RunOptions options,
                TaskRunner* runner, EventSink<State>* sink,
                const core::Clock* clock) {
    auto* held = dynamic_cast<HeldStore*>(options.checkpoints);
    g.Start(std::move(options), State(), runner, sink, clock,
            [this, held](RunResult<State> r) {
              out = std::move(r);
              if (held != nullptr) held->MarkDone();
              finished.Notify();
            });
  }
  // Releases `store`'s writes until the run ends; returns how many.
  int ReleaseUntilFinished(HeldStore& store) {
    int released = store.ReleaseUntilDone();
    finished.WaitForNotification();
    return released;
  }
  RunResult<State> out{absl::OkStatus(), {}, 0, 0, ""};
  absl::Notification finished;
};

TEST_F(CheckpointTest, AsyncStepsOverlapTheirWritesButTheRunEndsAfterThem) {
  auto g = CountingGraph();
  HeldStore held;
  RunOptions o = Options("wf", Durability::kAsync);
  o.checkpoints = &held;
  CompletionSignal last("done");
  BackgroundRun run(*g, o, &pool_, &last, &clock_);
  // Every node ran without waiting for a single checkpoint write...
  last.seen.WaitForNotification();
  EXPECT_THAT(held.inner().GetWorkflow("wf"),
              StatusIs(absl::StatusCode::kNotFound));
  // ...but the run reports its end only once they are all written.
  held.AwaitHeld(6);
  EXPECT_FALSE(run.finished.HasBeenNotified());
  EXPECT_EQ(held.Release(), 6);  // 5 checkpoints and the run's barrier
  run.finished.WaitForNotification();
  ASSERT_THAT(run.out.status, IsOk());
  auto record = held.inner().GetWorkflow("wf");
  ASSERT_THAT(record, IsOk());
  EXPECT_EQ(record->phase, core::WorkflowPhase::kCompleted);
  EXPECT_EQ(record->last_step, 4u);
}

TEST_F(CheckpointTest, AsyncCheckpointsAreQueuedBeforeANodeGoesAsynchronous) {
  // a (synchronous) -> b (completes when the test says) -> END
  NodeDone pending_b;
  absl::Mutex mu;
  absl::Notification b_started;
  GraphBuilder<State> b;
  b.AddSyncNode("a", [](State& s) {
    s.add_lessons("a");
    return absl::OkStatus();
  });
  b.AddNode("b", [&](State& s, NodeDone done) {
    s.add_lessons("b");
    absl::MutexLock lock(&mu);
    pending_b = std::move(done);
    b_started.Notify();
  });
  b.AddEdge(std::string(kStart), "a");
  b.AddEdge("a", "b");
  b.AddEdge("b", std::string(kEnd));
  auto g = b.Compile();
  ASSERT_THAT(g, IsOk());
  HeldStore held;
  RunOptions o = Options("wf", Durability::kAsync);
  o.checkpoints = &held;
  BackgroundRun run(**g, o, &pool_, nullptr, &clock_);
  b_started.WaitForNotification();
  // While b waits, the checkpoints before it (the input, after a) are with
  // the store, not held by the run.
  held.AwaitHeld(2);
  EXPECT_EQ(held.Release(), 2);
  auto latest = held.inner().Latest("wf");
  ASSERT_THAT(latest, IsOk());
  EXPECT_EQ(latest->next_node, "b");
  {
    absl::MutexLock lock(&mu);
    std::move(pending_b)(absl::OkStatus());
  }
  EXPECT_EQ(run.ReleaseUntilFinished(held), 2);  // after b, and the barrier
  ASSERT_THAT(run.out.status, IsOk());
}

TEST_F(CheckpointTest, SyncStepsStartOnlyOnceThePreviousCheckpointIsWritten) {
  HeldStore held;
  // Each inc checks that the checkpoint before it is already stored.
  auto g = CountingGraph([&held](State& s) {
    auto latest = held.inner().Latest("wf");
    EXPECT_THAT(latest, IsOk());
    if (latest.ok()) {
      EXPECT_EQ(latest->step, static_cast<uint64_t>(s.attempt() - 1));
    }
    return absl::OkStatus();
  });
  RunOptions o = Options("wf", Durability::kSync);
  o.checkpoints = &held;
  BackgroundRun run(*g, o, &pool_, nullptr, &clock_);
  EXPECT_EQ(run.ReleaseUntilFinished(held), 6);
  ASSERT_THAT(run.out.status, IsOk());
  auto list = held.inner().List("wf", 0);
  ASSERT_THAT(list, IsOk());
  EXPECT_EQ(list->size(), 5u);
}

TEST_F(CheckpointTest, AFailedAsyncWriteEndsTheRunWithItsError) {
  auto g = CountingGraph();
  HeldStore held(/*fail_step=*/1);
  RunOptions o = Options("wf", Durability::kAsync);
  o.checkpoints = &held;
  BackgroundRun run(*g, o, &pool_, nullptr, &clock_);
  run.ReleaseUntilFinished(held);
  EXPECT_THAT(run.out.status, StatusIs(absl::StatusCode::kUnavailable,
                                       ::testing::HasSubstr("disk full")));
}

// The acknowledgement: `recorded` runs once the input checkpoint is written,
// and no node runs (no event is sent) before it.
TEST_F(CheckpointTest, RecordedRunsOnceTheInputIsWrittenBeforeAnyEvent) {
  for (Durability d :
       {Durability::kAsync, Durability::kSync, Durability::kExit}) {
    auto g = CountingGraph();
    HeldStore held;
    RunOptions o = Options("wf", d);
    o.checkpoints = &held;
    Recorder rec;
    absl::Notification recorded, finished;
    absl::Status recorded_status = absl::UnknownError("not called");
    size_t events_at_ack = 99;
    bool stored_at_ack = false;
    g->Start(
        o, State(), &pool_, &rec, &clock_,
        [&](RunResult<State> r) {
          EXPECT_THAT(r.status, IsOk());
          held.MarkDone();
          finished.Notify();
        },
        [&](absl::Status s) {
          recorded_status = s;
          events_at_ack = rec.sequences.size();
          stored_at_ack = held.inner().GetWorkflow("wf").ok();
          recorded.Notify();
        });
    // Queued from the calling thread: nothing ran, nothing was sent.
    EXPECT_EQ(held.Held(), 1);
    EXPECT_FALSE(recorded.HasBeenNotified());
    EXPECT_TRUE(rec.sequences.empty());
    held.Release();
    ASSERT_TRUE(recorded.HasBeenNotified());
    EXPECT_THAT(recorded_status, IsOk());
    EXPECT_EQ(events_at_ack, 0u);
    EXPECT_TRUE(stored_at_ack);
    held.ReleaseUntilDone();
    finished.WaitForNotification();
  }
}

TEST_F(CheckpointTest, AnInputThatCannotBeRecordedNeverRuns) {
  auto g = CountingGraph();
  HeldStore held(/*fail_step=*/0);
  RunOptions o = Options("wf", Durability::kAsync);
  o.checkpoints = &held;
  Recorder rec;
  absl::Notification finished;
  absl::Status recorded_status, run_status;
  g->Start(
      o, State(), &pool_, &rec, &clock_,
      [&](RunResult<State> r) {
        run_status = r.status;
        held.MarkDone();
        finished.Notify();
      },
      [&](absl::Status s) { recorded_status = s; });
  held.ReleaseUntilDone();
  finished.WaitForNotification();
  EXPECT_THAT(recorded_status, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(run_status, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(rec.sequences.empty());
}

}  // namespace
}  // namespace reflexion::graph

namespace reflexion::graph {
namespace {

// A checkpoint an older build wrote with a character clipped in half: the
// state is repaired on read (U+FFFD), so the workflow is readable and
// resumable instead of DATA_LOSS.
TEST_F(CheckpointTest, AnOlderBuildsInvalidUtf8CheckpointIsRepairedOnRead) {
  auto g = CountingGraph();
  // The wire bytes of Episode{attempt: 1, lessons: ["ab\xc3"]}, as the old
  // serializer wrote them (protobuf only logs invalid UTF-8 on write).
  State s;
  s.set_attempt(1);
  s.add_lessons("ab\xc3");
  core::Checkpoint cp;
  cp.workflow_id = "old";
  cp.step = 1;
  cp.node = "inc";
  cp.next_node = "inc";
  cp.time = clock_.Now();
  s.SerializeToString(&cp.state);
  State strict;
  ASSERT_FALSE(strict.ParseFromString(cp.state));  // what the old read hit
  ASSERT_THAT(store_.Put(cp, core::WorkflowPhase::kRunning, 0, true), IsOk());

  auto state = CompiledGraph<State>::GetState(store_, "old");
  ASSERT_THAT(state, IsOk());
  EXPECT_THAT(state->lessons(), ElementsAre("ab\xef\xbf\xbd"));
  absl::Notification done;
  RunResult<State> out{absl::OkStatus(), {}, 0, 0, ""};
  ASSERT_THAT(
      g->Resume(Options("old", Durability::kAsync), &pool_, nullptr, &clock_,
                [&](RunResult<State> r) {
                  out = std::move(r);
                  done.Notify();
                }),
      IsOk());
  done.WaitForNotification();
  ASSERT_THAT(out.status, IsOk());
  EXPECT_EQ(out.state.attempt(), 3);
  // Everything written since decodes strictly.
  auto list = store_.List("old", 0);
  ASSERT_THAT(list, IsOk());
  for (const core::Checkpoint& c : *list) {
    if (c.step == 1) continue;
    EXPECT_TRUE(strict.ParseFromString(c.state)) << c.step;
  }
}

// A decision names the wait it answers: a stale wait step writes nothing.
TEST_F(CheckpointTest, UpdateWaitingRefusesAStaleWait) {
  core::Checkpoint cp;
  cp.workflow_id = "w";
  cp.step = 4;
  cp.node = "ask";
  cp.next_node = "ask";
  cp.time = clock_.Now();
  State().SerializeToString(&cp.state);
  ASSERT_THAT(store_.Put(cp, core::WorkflowPhase::kWaiting, 0, true), IsOk());
  auto edit = [](State& s) { s.set_attempt(7); };
  EXPECT_THAT(
      CompiledGraph<State>::UpdateWaiting(store_, "w", 3, edit, clock_.Now()),
      StatusIs(absl::StatusCode::kAborted));
  auto record = store_.GetWorkflow("w");
  ASSERT_THAT(record, IsOk());
  EXPECT_EQ(record->phase, core::WorkflowPhase::kWaiting);
  EXPECT_EQ(record->last_step, 4u);
  EXPECT_THAT(
      CompiledGraph<State>::UpdateWaiting(store_, "w", 4, edit, clock_.Now()),
      IsOk());
  // The same wait again: answered already.
  EXPECT_THAT(
      CompiledGraph<State>::UpdateWaiting(store_, "w", 4, edit, clock_.Now()),
      StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_F(CheckpointTest, CancelStopsBeforeTheNextNodeAndRecordsIt) {
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  auto g = CountingGraph([cancel](State& s) {
    if (s.attempt() == 2) cancel->store(true);
    return absl::OkStatus();
  });
  RunOptions o = Options("wf", Durability::kAsync);
  o.cancel = cancel;
  auto r = Run(*g, o);
  EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_EQ(r.state.attempt(), 2);  // the third inc never ran
  auto rec = store_.GetWorkflow("wf");
  ASSERT_THAT(rec, IsOk());
  EXPECT_EQ(rec->phase, core::WorkflowPhase::kCancelled);
  auto noop = [](RunResult<State>) {};
  EXPECT_THAT(g->Resume(Options("wf", Durability::kAsync), &pool_, nullptr,
                        &clock_, noop),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

}  // namespace
}  // namespace reflexion::graph

namespace reflexion::graph {
namespace {

class RetryTest : public ::testing::Test {
 protected:
  RunResult<State> Run(const CompiledGraph<State>& g, Recorder* rec) {
    RunOptions o;
    o.workflow_id = "wf";
    o.timer = &timer_;
    absl::Notification done;
    RunResult<State> out{absl::OkStatus(), {}, 0, 0, ""};
    g.Start(o, State(), &pool_, rec, &clock_, [&](RunResult<State> r) {
      out = std::move(r);
      done.Notify();
    });
    done.WaitForNotification();
    return out;
  }
  static RetryPolicy Fast(int attempts) {
    RetryPolicy p;
    p.max_attempts = attempts;
    p.initial_backoff = absl::Milliseconds(1);
    return p;
  }
  core::RealClock clock_;
  ThreadPool pool_{2};
  TimerThread timer_;
};

struct PhaseRecorder : EventSink<State> {
  absl::Mutex mu;
  std::vector<NodePhase> phases;
  void OnEvent(const StepEvent<State>& e) override {
    absl::MutexLock lock(&mu);
    phases.push_back(e.phase);
  }
};

std::shared_ptr<const CompiledGraph<State>> OneNode(NodeFn<State> fn,
                                                    NodeOptions options) {
  GraphBuilder<State> b;
  b.AddNode("flaky", std::move(fn), std::move(options));
  b.AddEdge(std::string(kStart), "flaky").AddEdge("flaky", std::string(kEnd));
  auto g = b.Compile();
  CHECK(g.ok());
  return *g;
}

TEST_F(RetryTest, RetryableFailuresAreRetriedUntilTheNodeSucceeds) {
  std::atomic<int> calls{0};
  NodeOptions options;
  options.retry = Fast(3);
  auto g = OneNode(
      [&](State& s, NodeDone done) {
        s.set_attempt(s.attempt() + 1);
        std::move(done)(++calls < 3 ? absl::UnavailableError("flaky")
                                    : absl::OkStatus());
      },
      options);
  PhaseRecorder rec;
  absl::Notification done;
  RunOptions o;
  o.workflow_id = "wf2";
  o.timer = &timer_;
  RunResult<State> out{absl::OkStatus(), {}, 0, 0, ""};
  g->Start(o, State(), &pool_, &rec, &clock_, [&](RunResult<State> res) {
    out = std::move(res);
    done.Notify();
  });
  done.WaitForNotification();
  ASSERT_THAT(out.status, IsOk());
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(out.steps, 1);  // retries are not extra steps
  absl::MutexLock lock(&rec.mu);
  EXPECT_THAT(rec.phases,
              ElementsAre(NodePhase::kStarted, NodePhase::kRetrying,
                          NodePhase::kStarted, NodePhase::kRetrying,
                          NodePhase::kStarted, NodePhase::kCompleted));
}

TEST_F(RetryTest, NonRetryableOrExhaustedFailuresFailTheRun) {
  NodeOptions options;
  options.retry = Fast(2);
  std::atomic<int> calls{0};
  auto bad = OneNode(
      [&](State&, NodeDone done) {
        ++calls;
        std::move(done)(absl::InvalidArgumentError("bad"));
      },
      options);
  EXPECT_THAT(Run(*bad, nullptr).status,
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(calls.load(), 1);
  calls = 0;
  auto down = OneNode(
      [&](State&, NodeDone done) {
        ++calls;
        std::move(done)(absl::UnavailableError("down"));
      },
      options);
  EXPECT_THAT(Run(*down, nullptr).status,
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(calls.load(), 2);
}

TEST_F(RetryTest, ATimedOutAttemptIsDiscardedAndRetried) {
  NodeOptions options;
  options.retry = Fast(2);
  options.timeout = absl::Milliseconds(30);
  std::atomic<int> calls{0};
  absl::Mutex mu;
  std::vector<NodeDone> parked;  // the first attempt never answers in time
  auto g = OneNode(
      [&](State& s, NodeDone done) {
        s.add_lessons("attempt " + std::to_string(++calls));
        if (calls == 1) {
          absl::MutexLock lock(&mu);
          parked.push_back(std::move(done));
          return;
        }
        std::move(done)(absl::OkStatus());
      },
      options);
  auto r = Run(*g, nullptr);
  ASSERT_THAT(r.status, IsOk());
  EXPECT_EQ(calls.load(), 2);
  // Only the second attempt's state change was adopted.
  EXPECT_THAT(r.state.lessons(), ElementsAre("attempt 2"));
  // The late answer of the first attempt is ignored (no crash, no effect).
  absl::MutexLock lock(&mu);
  for (auto& d : parked) std::move(d)(absl::OkStatus());
}

}  // namespace
}  // namespace reflexion::graph

// WorkflowRunner: one writer per workflow id and cancellation, with an
// executor that holds its Execute calls until the test releases them.

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "core/graph/task_runner.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/heuristic_reflector.h"
#include "core/reflexion/workflow.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/workflow_runner.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;

// Diagnoses at once; holds every Execute until Release().
class HoldingExecutor : public core::ClusterExecutor {
 public:
  std::string Name() const override { return "holding"; }
  void Diagnose(const v1::Incident&,
                core::Callback<v1::Diagnosis> done) override {
    std::move(done)(v1::Diagnosis());
  }
  void Execute(const v1::Action& action,
               core::Callback<v1::ExecutionResult> done) override {
    absl::MutexLock lock(&mu_);
    held_.push_back({action, std::move(done)});
    arrived_.Notify();
  }
  void Observe(const v1::Action&, absl::Duration window,
               core::Callback<v1::Observation> done) override {
    v1::Observation o;
    o.set_success(true);
    o.set_recovered(true);
    o.set_window_s(absl::ToDoubleSeconds(window));
    std::move(done)(o);
  }
  void WaitForExecute() { arrived_.WaitForNotification(); }
  void Release() {
    std::vector<Held> held;
    {
      absl::MutexLock lock(&mu_);
      held.swap(held_);
    }
    for (auto& h : held) {
      v1::ExecutionResult r;
      *r.mutable_action() = h.action;
      r.set_applied(true);
      std::move(h.done)(r);
    }
  }

 private:
  struct Held {
    v1::Action action;
    core::Callback<v1::ExecutionResult> done;
  };
  absl::Mutex mu_;
  std::vector<Held> held_;
  absl::Notification arrived_;
};

TEST(WorkflowRunnerTest, ASecondRunOfARunningIdIsRefusedAndCancelStopsIt) {
  core::InMemoryKnowledgeStore store;
  core::InMemoryCheckpointStore checkpoints;
  HoldingExecutor executor;
  core::HeuristicReflector reflector;
  core::FakeClock clock;
  graph::ThreadPool pool(2);
  core::ReflexionWorkflow workflow({}, &store, &executor, &reflector, &clock,
                                   &checkpoints);
  ASSERT_THAT(workflow.Init(), IsOk());
  WorkflowRunner runner(&workflow, &pool, &clock, 100);

  v1::Incident in;
  in.set_pod_name("web-1");
  in.set_namespace_("default");
  in.set_error_type("OOMKilled");
  absl::Notification finished;
  v1::IncidentResult result;
  WorkflowCallbacks cb;
  cb.on_result = [&](v1::IncidentResult r) {
    result = std::move(r);
    finished.Notify();
  };
  absl::StatusOr<std::string> id = runner.Submit(in, std::move(cb));
  ASSERT_THAT(id, IsOk());
  executor.WaitForExecute();  // the workflow is inside execute_fix

  // One writer per id: resuming it now is refused, not interleaved.
  EXPECT_THAT(runner.Resume(*id, {}),
              StatusIs(absl::StatusCode::kFailedPrecondition));

  EXPECT_TRUE(runner.Cancel(*id));
  executor.Release();
  finished.WaitForNotification();
  EXPECT_EQ(result.status(), v1::WORKFLOW_STATUS_FAILED);
  EXPECT_THAT(result.error(), ::testing::HasSubstr("CANCELLED"));
  runner.Drain();
  absl::StatusOr<core::WorkflowRecord> record = checkpoints.GetWorkflow(*id);
  ASSERT_THAT(record, IsOk());
  EXPECT_EQ(record->phase, core::WorkflowPhase::kCancelled);
  EXPECT_FALSE(runner.Cancel(*id));  // no longer running
  EXPECT_EQ(runner.Counters().in_flight, 0);
}

}  // namespace
}  // namespace reflexion::server

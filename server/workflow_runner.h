#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "core/graph/task_runner.h"
#include "core/ports/clock.h"
#include "core/reflexion/workflow.h"
#include "reflexion/v1/types.pb.h"
#include "server/event_hub.h"

namespace reflexion::server {

// Where one workflow's output goes. on_event is called for every event in
// sequence order, then on_result exactly once; never concurrently for one
// workflow. Both run on engine threads and must not block.
struct WorkflowCallbacks {
  std::function<void(reflexion::v1::WorkflowEvent)> on_event;
  std::function<void(reflexion::v1::IncidentResult)> on_result;
  // Keep the workflow's events in the EventHub for WatchWorkflow (set for
  // workflows started or resumed through the workflow RPCs; a Resolve or
  // ProcessIncident caller already receives them).
  bool retain_events = false;
};

// Live counters since the process started.
struct RunnerCounters {
  int64_t started = 0;
  int64_t in_flight = 0;
  int64_t resolved = 0;
  int64_t escalated = 0;
  int64_t failed = 0;
};

// Admits incidents and runs their workflows on the engine's pool, with a
// global in-flight limit. Thread-safe.
class WorkflowRunner {
 public:
  // `workflow`, `runner` and `clock` must outlive this object.
  // `hub` (may be null) receives every event and result, for WatchWorkflow.
  WorkflowRunner(const core::ReflexionWorkflow* workflow,
                 graph::TaskRunner* runner, const core::Clock* clock,
                 int max_in_flight, EventHub* hub = nullptr);
  ~WorkflowRunner();

  // Starts a workflow for an already validated incident and returns its id.
  // kResourceExhausted at the in-flight limit, kUnavailable once draining.
  absl::StatusOr<std::string> Submit(reflexion::v1::Incident incident,
                                     WorkflowCallbacks callbacks);

  // Continues a workflow interrupted by a crash from its latest checkpoint
  // (counted like a submitted one, not subject to the in-flight limit).
  // kFailedPrecondition when that workflow is already running here (one
  // writer per id); otherwise errors as ReflexionWorkflow::Resume.
  absl::Status Resume(const std::string& workflow_id,
                      WorkflowCallbacks callbacks);

  // Delivers a human decision to a waiting workflow and continues it.
  // kFailedPrecondition when it is running here or not waiting; otherwise
  // errors as ReflexionWorkflow::Decide / Resume.
  // `callbacks` receive the continuing workflow's events and result.
  absl::Status Decide(const std::string& workflow_id,
                      const reflexion::v1::HumanDecision& decision,
                      WorkflowCallbacks callbacks = {});

  // Forks a new workflow from checkpoint `step` of `source_id` (see
  // ReflexionWorkflow::Fork) and runs it; returns its id. Subject to the
  // in-flight limit (kResourceExhausted), kUnavailable once draining;
  // otherwise errors as ReflexionWorkflow::Fork / Resume.
  absl::StatusOr<std::string> Fork(const std::string& source_id, uint64_t step,
                                   const std::string& strategy,
                                   WorkflowCallbacks callbacks = {});

  // Asks a workflow running in this process to stop before its next node.
  // Returns false when it is not running here.
  bool Cancel(const std::string& workflow_id);

  // Stops admitting new incidents (Submit returns kUnavailable).
  void StopAccepting();

  // Stops admitting new incidents and waits until every workflow is done.
  void Drain();

  RunnerCounters Counters() const;

  // Admission: when set, checked first by Submit, Resume, Decide and Fork;
  // a non-OK status is returned as is (App: storage read-only, e.g.
  // kResourceExhausted "disk full at DIR"). Set before any call; must be
  // thread-safe and cheap.
  void SetAdmission(std::function<absl::Status()> admission) {
    admission_ = std::move(admission);
  }

 private:
  class Sink;
  std::string NewWorkflowId(uint64_t ordinal);
  // What every finished workflow does: result callback and counters.
  void Finished(Sink* sink, core::WorkflowRunResult run);

  const core::ReflexionWorkflow* workflow_;
  EventHub* hub_;
  graph::TaskRunner* runner_;
  const core::Clock* clock_;
  const int max_in_flight_;
  const std::string id_prefix_;
  std::function<absl::Status()> admission_;
  absl::Status Admit() const {
    return admission_ ? admission_() : absl::OkStatus();
  }

  mutable absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // Workflows running in this process, with their cancel flags: one writer
  // per workflow id.
  absl::flat_hash_map<std::string, std::shared_ptr<std::atomic<bool>>> active_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_ordinal_ ABSL_GUARDED_BY(mu_) = 0;
  RunnerCounters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reflexion::server

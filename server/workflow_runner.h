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
  // Submit only: called once, before any event, with OK once the workflow
  // is durably recorded (the acknowledgement), or with the error that kept
  // it from being recorded — then the workflow does not run and neither
  // on_event nor on_result is called. Runs on a store thread or inline in
  // Submit; must not block.
  std::function<void(const std::string& workflow_id, const absl::Status&)>
      on_accepted;
  std::function<void(reflexion::v1::WorkflowEvent)> on_event;
  std::function<void(reflexion::v1::IncidentResult)> on_result;
  // Keep the workflow's events in the EventHub for WatchWorkflow (set for
  // workflows started or resumed through the workflow RPCs; a Resolve or
  // ProcessIncident caller already receives them).
  bool retain_events = false;
  // Where the workflow's node work runs (null: the runner's pool); kept
  // alive by the workflow while it runs. A Resolve stream gives its
  // workflows its own lane, so that they are scheduled fairly against other
  // streams' (graph::Lane).
  std::shared_ptr<graph::TaskRunner> lane;
};

// Live counters since the process started (GetMetrics uses them only
// without checkpointing, and for in_flight). started counts Submit and Fork
// (workflows, not runs: a resume or a continuation is not a start);
// resolved/escalated/failed count final results (WAITING is none of them).
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
  // Workflow ids are `id_prefix` + a 6-digit ordinal (1, 2, ...): the
  // prefix must be unique per process start (App numbers its starts).
  WorkflowRunner(const core::ReflexionWorkflow* workflow,
                 graph::TaskRunner* runner, const core::Clock* clock,
                 int max_in_flight, EventHub* hub = nullptr,
                 std::string id_prefix = "wf-");
  ~WorkflowRunner();

  // Starts a workflow for an already validated incident and returns its id
  // (callbacks.on_accepted says when it is durably recorded).
  // kResourceExhausted at the in-flight limit, kUnavailable once draining.
  // `start` names the session (its cluster's agent is then the executor)
  // and the submitter (see ReflexionWorkflow::Start). The policy admits the
  // incident first (ReflexionWorkflow::Admit): kPermissionDenied when it
  // refuses it.
  absl::StatusOr<std::string> Submit(reflexion::v1::Incident incident,
                                     WorkflowCallbacks callbacks,
                                     core::StartOptions start = {});

  // Answers the agent wait of a workflow waiting at checkpoint `wait_step`
  // (see ReflexionWorkflow::AnswerAgent): with `resume` the workflow then
  // continues here with `callbacks`; without, it keeps waiting and the new
  // wait step is returned. kFailedPrecondition while it runs, kAborted for a
  // stale step, kUnavailable once draining.
  absl::StatusOr<uint64_t> AnswerAgent(
      const std::string& workflow_id, uint64_t wait_step,
      const std::function<void(reflexion::v1::AgentWait&)>& edit, bool resume,
      WorkflowCallbacks callbacks = {});

  // Called (on an engine thread) whenever a run stops to wait with an agent
  // wait (WorkflowState.agent_wait): an action or observation request — then
  // instead of on_result, since the workflow is not waiting for a human —
  // or an approval, after on_result (WAITING). `step` is the waiting
  // checkpoint's. Set before any call.
  using AgentWaitHook = std::function<void(
      const reflexion::v1::WorkflowState& state, uint64_t step)>;
  void SetAgentWaitHook(AgentWaitHook hook) { agent_wait_ = std::move(hook); }

  // Continues a workflow interrupted by a crash from its latest checkpoint
  // (in flight, but not a new start; not subject to the in-flight limit).
  // kFailedPrecondition when that workflow is already running here (one
  // writer per id); otherwise errors as ReflexionWorkflow::Resume.
  absl::Status Resume(const std::string& workflow_id,
                      WorkflowCallbacks callbacks);

  // Delivers a human decision for the wait `etag` names and continues the
  // workflow; OK once the decision is durably recorded. Of concurrent
  // decisions for one wait exactly one applies: the others get
  // kFailedPrecondition (it is running) or kAborted (that wait was
  // answered). kUnavailable once draining; otherwise errors as
  // ReflexionWorkflow::Decide / Resume. `callbacks` receive the continuing
  // workflow's events and result.
  absl::Status Decide(const std::string& workflow_id, absl::string_view etag,
                      const reflexion::v1::HumanDecision& decision,
                      WorkflowCallbacks callbacks = {});

  // Forks a new workflow from checkpoint `step` of `source_id` (see
  // ReflexionWorkflow::Fork) and runs it; returns its id. Subject to the
  // in-flight limit (kResourceExhausted), kUnavailable once draining;
  // otherwise errors as ReflexionWorkflow::Fork / Resume. `approved_by`:
  // the principal naming `strategy` (WorkflowState.approved_by).
  absl::StatusOr<std::string> Fork(const std::string& source_id, uint64_t step,
                                   const std::string& strategy,
                                   WorkflowCallbacks callbacks = {},
                                   const std::string& approved_by = "");

  // From now on, keeps the events of a workflow running here in the
  // EventHub (for WatchWorkflow), as if started with retain_events: its
  // caller is letting go of it (a Resolve stream at shutdown). False when it
  // is not running here (it finished: its result went to its callbacks).
  bool RetainEvents(const std::string& workflow_id);

  // Asks a workflow running in this process to stop before its next node.
  // Returns false when it is not running here.
  bool Cancel(const std::string& workflow_id);

  // Stops admitting new incidents (Submit returns kUnavailable).
  void StopAccepting();

  // Stops admitting new incidents and waits until every workflow is done.
  void Drain();

  RunnerCounters Counters() const;

  // Whether a run of `workflow_id` is held here (running, or reserved by a
  // decision or an answer that is continuing it).
  bool IsActive(const std::string& workflow_id) const;

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
  // Registers `workflow_id` as running here (one writer per id) and counts
  // it in flight; kFailedPrecondition when it already runs, kUnavailable once
  // draining.
  absl::Status Reserve(const std::string& workflow_id,
                       const std::shared_ptr<std::atomic<bool>>& cancel);
  void Unreserve(const std::string& workflow_id);
  // Resume for an id Reserve()d by the caller (released on an error).
  absl::Status ResumeReserved(const std::string& workflow_id,
                              std::shared_ptr<std::atomic<bool>> cancel,
                              WorkflowCallbacks callbacks);
  // What every finished workflow does: result callback and counters.
  void Finished(Sink* sink, core::WorkflowRunResult run);

  const core::ReflexionWorkflow* workflow_;
  EventHub* hub_;
  graph::TaskRunner* runner_;
  const core::Clock* clock_;
  const int max_in_flight_;
  const std::string id_prefix_;
  std::function<absl::Status()> admission_;
  AgentWaitHook agent_wait_;
  absl::Status Admit() const {
    return admission_ ? admission_() : absl::OkStatus();
  }

  mutable absl::Mutex mu_;
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  // A workflow running in this process.
  struct Active {
    std::shared_ptr<std::atomic<bool>> cancel;
    Sink* sink = nullptr;  // null until its run starts
  };
  // Workflows running in this process, with their cancel flags: one writer
  // per workflow id.
  absl::flat_hash_map<std::string, Active> active_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ordinal_ ABSL_GUARDED_BY(mu_) = 0;
  RunnerCounters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reflexion::server

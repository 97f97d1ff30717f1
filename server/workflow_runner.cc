#include "server/workflow_runner.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/reflexion/events.h"
#include "glog/logging.h"

namespace reflexion::server {

// Converts engine events and forwards them; owned by its run.
class WorkflowRunner::Sink final : public core::WorkflowSink {
 public:
  Sink(std::string workflow_id, WorkflowCallbacks callbacks, EventHub* hub)
      : workflow_id_(std::move(workflow_id)),
        callbacks_(std::move(callbacks)),
        hub_(callbacks_.retain_events ? hub : nullptr) {}
  EventHub* hub() const { return hub_.load(std::memory_order_acquire); }
  // Starts retaining events in `hub` (see RetainEvents).
  void Retain(EventHub* hub) {
    if (this->hub() != nullptr || hub == nullptr) return;
    hub->Open(workflow_id_);
    hub_.store(hub, std::memory_order_release);
  }
  void OnEvent(
      const graph::StepEvent<reflexion::v1::WorkflowState>& event) override {
    EventHub* hub = this->hub();
    if (!callbacks_.on_event && hub == nullptr) return;
    reflexion::v1::WorkflowEvent ev = core::MakeWorkflowEvent(event);
    if (hub != nullptr) hub->Publish(ev);
    if (callbacks_.on_event) callbacks_.on_event(std::move(ev));
  }
  WorkflowCallbacks& callbacks() { return callbacks_; }
  // The lane its node work runs on, or null.
  graph::TaskRunner* lane() const { return callbacks_.lane.get(); }
  // The acknowledgement (WorkflowCallbacks::on_accepted).
  void Accepted(const absl::Status& s) {
    accepted_ = s.ok();
    if (callbacks_.on_accepted) callbacks_.on_accepted(workflow_id_, s);
  }
  // False once the workflow could not be recorded: it never ran for its
  // caller, who was told so by on_accepted.
  bool accepted() const { return accepted_; }

 private:
  const std::string workflow_id_;
  WorkflowCallbacks callbacks_;
  // Set at construction, or once by Retain (under the runner's lock).
  std::atomic<EventHub*> hub_;
  bool accepted_ = true;
};

WorkflowRunner::WorkflowRunner(const core::ReflexionWorkflow* workflow,
                               graph::TaskRunner* runner,
                               const core::Clock* clock, int max_in_flight,
                               EventHub* hub, std::string id_prefix)
    : workflow_(workflow),
      hub_(hub),
      runner_(runner),
      clock_(clock),
      max_in_flight_(max_in_flight),
      id_prefix_(std::move(id_prefix)) {}

WorkflowRunner::~WorkflowRunner() { Drain(); }

std::string WorkflowRunner::NewWorkflowId(uint64_t ordinal) {
  return absl::StrCat(id_prefix_, absl::StrFormat("%06d", ordinal));
}

absl::StatusOr<std::string> WorkflowRunner::Submit(
    reflexion::v1::Incident incident, WorkflowCallbacks callbacks,
    core::StartOptions start) {
  if (absl::Status s = Admit(); !s.ok()) return s;  // storage read-only
  uint64_t ordinal;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) {
      return absl::UnavailableError("server is shutting down");
    }
    if (counters_.in_flight >= max_in_flight_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many workflows in flight (limit ", max_in_flight_, ")"));
    }
    ordinal = ++next_ordinal_;
    ++counters_.in_flight;
  }
  std::string id = NewWorkflowId(ordinal);
  if (!start.undo.has_value()) {
    // The policy's admission (namespace lists, mode off, breakers): a
    // refused incident starts nothing (its ordinal stays unused). An
    // operator's undo is not a new incident.
    absl::StatusOr<core::Admission> admission = workflow_->Admit(
        incident, start.session.cluster(), start.principal, id);
    if (!admission.ok()) {
      absl::MutexLock lock(&mu_);
      --counters_.in_flight;
      return admission.status();
    }
    start.admission = *std::move(admission);
  }
  {
    absl::MutexLock lock(&mu_);
    ++counters_.started;
  }
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  if (hub_ != nullptr && callbacks.retain_events) hub_->Open(id);
  auto* sink = new Sink(id, std::move(callbacks), hub_);
  {
    absl::MutexLock lock(&mu_);
    active_[id] = Active{cancel, sink};
  }
  workflow_->Start(
      id, std::move(incident), ordinal,
      sink->lane() != nullptr ? sink->lane() : runner_, sink,
      [this, sink](core::WorkflowRunResult run) {
        Finished(sink, std::move(run));
      },
      cancel, [sink](absl::Status s) { sink->Accepted(s); }, start);
  return id;
}

absl::StatusOr<uint64_t> WorkflowRunner::AnswerAgent(
    const std::string& workflow_id, uint64_t wait_step,
    const std::function<void(reflexion::v1::AgentWait&)>& edit, bool resume,
    WorkflowCallbacks callbacks) {
  if (absl::Status s = Admit(); !s.ok()) return s;  // storage read-only
  // Reserved first: one writer per id, so the answer and a concurrent
  // decision or cancel never both apply.
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  if (absl::Status s = Reserve(workflow_id, cancel); !s.ok()) return s;
  // A continuation, not a new workflow: workflows_started is not counted.
  absl::StatusOr<uint64_t> step =
      workflow_->AnswerAgent(workflow_id, wait_step, edit, resume);
  if (!step.ok() || !resume) {
    Unreserve(workflow_id);
    return step;
  }
  if (absl::Status s =
          ResumeReserved(workflow_id, std::move(cancel), std::move(callbacks));
      !s.ok()) {
    return s;
  }
  return step;
}

void WorkflowRunner::Finished(Sink* sink, core::WorkflowRunResult run) {
  if (!sink->accepted()) {
    // Never recorded: its caller heard so from on_accepted; it did not run.
    LOG(WARNING) << "workflow " << run.state.workflow_id()
                 << " was not started: " << run.status;
    std::unique_ptr<Sink> owned(sink);
    if (owned->hub() != nullptr) owned->hub()->Forget(run.state.workflow_id());
    absl::MutexLock lock(&mu_);
    active_.erase(run.state.workflow_id());
    --counters_.started;
    --counters_.in_flight;
    return;
  }
  reflexion::v1::IncidentResult result =
      core::MakeIncidentResult(run, clock_->Now());
  if (result.status() == reflexion::v1::WORKFLOW_STATUS_FAILED) {
    LOG(WARNING) << "workflow " << result.workflow_id()
                 << " failed: " << run.status;
  } else if (result.status() == reflexion::v1::WORKFLOW_STATUS_WAITING) {
    const auto& w = run.state.agent_wait();
    LOG(INFO) << "workflow " << result.workflow_id()
              << (w.has_action() || w.has_observation()
                      ? " waits on its agent: "
                      : " waits for a human decision: ")
              << run.status.message();
  }
  std::unique_ptr<Sink> owned(sink);
  {
    // No longer running before anyone hears of the result: a caller that
    // reacts to it (a decision for a WAITING result) must not be refused.
    absl::MutexLock lock(&mu_);
    active_.erase(run.state.workflow_id());
  }
  const bool waiting =
      result.status() == reflexion::v1::WORKFLOW_STATUS_WAITING;
  const auto& wait = run.state.agent_wait();
  if (waiting && (wait.has_action() || wait.has_observation())) {
    // Waiting on the agent, not on a human: no result yet. Its events stay
    // retained (if they were) until it ends.
    if (agent_wait_) agent_wait_(run.state, run.checkpoint_step);
    absl::MutexLock lock(&mu_);
    --counters_.in_flight;
    return;
  }
  if (owned->hub() != nullptr) owned->hub()->Finish(result);
  if (owned->callbacks().on_result) owned->callbacks().on_result(result);
  if (waiting && wait.has_approval() && agent_wait_) {
    agent_wait_(run.state, run.checkpoint_step);
  }
  absl::MutexLock lock(&mu_);
  --counters_.in_flight;
  switch (result.status()) {
    case reflexion::v1::WORKFLOW_STATUS_RESOLVED:
      ++counters_.resolved;
      break;
    case reflexion::v1::WORKFLOW_STATUS_ESCALATED:
      ++counters_.escalated;
      break;
    case reflexion::v1::WORKFLOW_STATUS_WAITING:
      // Waiting for a human is not escalated: counted when it ends.
      break;
    default:
      ++counters_.failed;
  }
}

bool WorkflowRunner::IsActive(const std::string& workflow_id) const {
  absl::MutexLock lock(&mu_);
  return active_.contains(workflow_id);
}

absl::Status WorkflowRunner::Reserve(
    const std::string& workflow_id,
    const std::shared_ptr<std::atomic<bool>>& cancel) {
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("server is shutting down");
  if (!active_.try_emplace(workflow_id, Active{cancel, nullptr}).second) {
    return absl::FailedPreconditionError(absl::StrCat(
        "workflow ", workflow_id, " is running (one writer per id)"));
  }
  // A run of an existing workflow: in flight, not started.
  ++counters_.in_flight;
  return absl::OkStatus();
}

void WorkflowRunner::Unreserve(const std::string& workflow_id) {
  absl::MutexLock lock(&mu_);
  active_.erase(workflow_id);
  --counters_.in_flight;
}

absl::Status WorkflowRunner::Resume(const std::string& workflow_id,
                                    WorkflowCallbacks callbacks) {
  if (absl::Status s = Admit(); !s.ok()) return s;  // storage read-only
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  if (absl::Status s = Reserve(workflow_id, cancel); !s.ok()) return s;
  return ResumeReserved(workflow_id, std::move(cancel), std::move(callbacks));
}

absl::Status WorkflowRunner::ResumeReserved(
    const std::string& workflow_id, std::shared_ptr<std::atomic<bool>> cancel,
    WorkflowCallbacks callbacks) {
  if (hub_ != nullptr && callbacks.retain_events) hub_->Open(workflow_id);
  auto* sink = new Sink(workflow_id, std::move(callbacks), hub_);
  {
    absl::MutexLock lock(&mu_);
    active_[workflow_id].sink = sink;
  }
  absl::Status s = workflow_->Resume(
      workflow_id, sink->lane() != nullptr ? sink->lane() : runner_, sink,
      [this, sink](core::WorkflowRunResult run) {
        Finished(sink, std::move(run));
      },
      std::move(cancel));
  if (!s.ok()) {
    Unreserve(workflow_id);  // before the sink goes: RetainEvents reads it
    delete sink;
    if (hub_ != nullptr) hub_->Forget(workflow_id);
  }
  return s;
}

absl::Status WorkflowRunner::Decide(const std::string& workflow_id,
                                    absl::string_view etag,
                                    const reflexion::v1::HumanDecision& d,
                                    WorkflowCallbacks callbacks) {
  if (absl::Status s = Admit(); !s.ok()) return s;  // storage read-only
  // Reserved before the decision is recorded, so a concurrent decision (or
  // a second one racing the continuation to the next wait) is refused here
  // or by the etag, never applied twice.
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  if (absl::Status s = Reserve(workflow_id, cancel); !s.ok()) {
    if (absl::IsFailedPrecondition(s)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "workflow ", workflow_id, " is running, not waiting for a decision"));
    }
    return s;
  }
  if (absl::Status s = workflow_->Decide(workflow_id, etag, d); !s.ok()) {
    Unreserve(workflow_id);
    return s;
  }
  callbacks.retain_events = true;  // followed with WatchWorkflow
  return ResumeReserved(workflow_id, std::move(cancel), std::move(callbacks));
}

absl::StatusOr<std::string> WorkflowRunner::Fork(
    const std::string& source_id, uint64_t step, const std::string& strategy,
    WorkflowCallbacks callbacks, const std::string& approved_by) {
  if (absl::Status s = Admit(); !s.ok()) return s;  // storage read-only
  uint64_t ordinal;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return absl::UnavailableError("server is shutting down");
    if (counters_.in_flight >= max_in_flight_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many workflows in flight (limit ", max_in_flight_, ")"));
    }
    ordinal = ++next_ordinal_;
  }
  std::string id = NewWorkflowId(ordinal);
  if (absl::Status s =
          workflow_->Fork(source_id, step, id, strategy, ordinal, approved_by);
      !s.ok()) {
    return s;
  }
  callbacks.retain_events = true;  // followed with WatchWorkflow
  if (absl::Status s = Resume(id, std::move(callbacks)); !s.ok()) return s;
  {
    // A fork is a new workflow (its own id and result): one start.
    absl::MutexLock lock(&mu_);
    ++counters_.started;
  }
  LOG(INFO) << "workflow " << id << " forked from " << source_id << " step "
            << step
            << (strategy.empty() ? std::string()
                                 : absl::StrCat(" with strategy ", strategy));
  return id;
}

bool WorkflowRunner::Cancel(const std::string& workflow_id) {
  absl::MutexLock lock(&mu_);
  auto it = active_.find(workflow_id);
  if (it == active_.end()) return false;
  it->second.cancel->store(true, std::memory_order_release);
  return true;
}

bool WorkflowRunner::RetainEvents(const std::string& workflow_id) {
  // Under the lock: Finished erases the id before it reads the sink's hub,
  // so a workflow found here finishes into the hub too.
  absl::MutexLock lock(&mu_);
  auto it = active_.find(workflow_id);
  if (it == active_.end() || it->second.sink == nullptr) return false;
  it->second.sink->Retain(hub_);
  return true;
}

void WorkflowRunner::StopAccepting() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

void WorkflowRunner::Drain() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return counters_.in_flight == 0;
  };
  mu_.Await(absl::Condition(&idle));
}

RunnerCounters WorkflowRunner::Counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace reflexion::server

#include "server/workflow_runner.h"

#include <memory>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/reflexion/events.h"
#include "glog/logging.h"

namespace reflexion::server {

// Converts engine events and forwards them; owned by its run.
class WorkflowRunner::Sink final : public core::WorkflowSink {
 public:
  Sink(WorkflowCallbacks callbacks, EventHub* hub)
      : callbacks_(std::move(callbacks)),
        hub_(callbacks_.retain_events ? hub : nullptr) {}
  EventHub* hub() const { return hub_; }
  void OnEvent(
      const graph::StepEvent<reflexion::v1::WorkflowState>& event) override {
    if (!callbacks_.on_event && hub_ == nullptr) return;
    reflexion::v1::WorkflowEvent ev = core::MakeWorkflowEvent(event);
    if (hub_ != nullptr) hub_->Publish(ev);
    if (callbacks_.on_event) callbacks_.on_event(std::move(ev));
  }
  WorkflowCallbacks& callbacks() { return callbacks_; }

 private:
  WorkflowCallbacks callbacks_;
  EventHub* hub_;
};

WorkflowRunner::WorkflowRunner(const core::ReflexionWorkflow* workflow,
                               graph::TaskRunner* runner,
                               const core::Clock* clock, int max_in_flight,
                               EventHub* hub)
    : workflow_(workflow),
      hub_(hub),
      runner_(runner),
      clock_(clock),
      max_in_flight_(max_in_flight),
      // Ids stay unique across restarts: the prefix is the start time and
      // a random tag (two starts within a second must not collide).
      id_prefix_(absl::StrCat(
          absl::FormatTime("wf-%Y%m%d-%H%M%S-", absl::Now(),
                           absl::UTCTimeZone()),
          absl::StrFormat(
              "%04x-", absl::Uniform<uint32_t>(absl::BitGen(), 0, 0x10000)))) {}

WorkflowRunner::~WorkflowRunner() { Drain(); }

std::string WorkflowRunner::NewWorkflowId(uint64_t ordinal) {
  return absl::StrCat(id_prefix_, absl::StrFormat("%06d", ordinal));
}

absl::StatusOr<std::string> WorkflowRunner::Submit(
    reflexion::v1::Incident incident, WorkflowCallbacks callbacks) {
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
    ++counters_.started;
    ++counters_.in_flight;
  }
  std::string id = NewWorkflowId(ordinal);
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  {
    absl::MutexLock lock(&mu_);
    active_[id] = cancel;
  }
  if (hub_ != nullptr && callbacks.retain_events) hub_->Open(id);
  auto* sink = new Sink(std::move(callbacks), hub_);
  workflow_->Start(
      id, std::move(incident), ordinal, runner_, sink,
      [this, sink](core::WorkflowRunResult run) {
        Finished(sink, std::move(run));
      },
      cancel);
  return id;
}

void WorkflowRunner::Finished(Sink* sink, core::WorkflowRunResult run) {
  reflexion::v1::IncidentResult result =
      core::MakeIncidentResult(run, clock_->Now());
  if (result.status() == reflexion::v1::WORKFLOW_STATUS_FAILED) {
    LOG(WARNING) << "workflow " << result.workflow_id()
                 << " failed: " << run.status;
  } else if (result.status() == reflexion::v1::WORKFLOW_STATUS_WAITING) {
    LOG(INFO) << "workflow " << result.workflow_id()
              << " waits for a human decision: " << run.status.message();
  }
  std::unique_ptr<Sink> owned(sink);
  {
    // No longer running before anyone hears of the result: a caller that
    // reacts to it (a decision for a WAITING result) must not be refused.
    absl::MutexLock lock(&mu_);
    active_.erase(run.state.workflow_id());
  }
  if (owned->hub() != nullptr) owned->hub()->Finish(result);
  if (owned->callbacks().on_result) owned->callbacks().on_result(result);
  absl::MutexLock lock(&mu_);
  --counters_.in_flight;
  switch (result.status()) {
    case reflexion::v1::WORKFLOW_STATUS_RESOLVED:
      ++counters_.resolved;
      break;
    case reflexion::v1::WORKFLOW_STATUS_ESCALATED:
    case reflexion::v1::WORKFLOW_STATUS_WAITING:
      ++counters_.escalated;
      break;
    default:
      ++counters_.failed;
  }
}

absl::Status WorkflowRunner::Resume(const std::string& workflow_id,
                                    WorkflowCallbacks callbacks) {
  if (absl::Status s = Admit(); !s.ok()) return s;  // storage read-only
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return absl::UnavailableError("server is shutting down");
    if (!active_.try_emplace(workflow_id, cancel).second) {
      return absl::FailedPreconditionError(absl::StrCat(
          "workflow ", workflow_id, " is already running (one writer per id)"));
    }
    ++counters_.started;
    ++counters_.in_flight;
  }
  if (hub_ != nullptr && callbacks.retain_events) hub_->Open(workflow_id);
  auto* sink = new Sink(std::move(callbacks), hub_);
  absl::Status s = workflow_->Resume(
      workflow_id, runner_, sink,
      [this, sink](core::WorkflowRunResult run) {
        Finished(sink, std::move(run));
      },
      cancel);
  if (!s.ok()) {
    delete sink;
    if (hub_ != nullptr) hub_->Forget(workflow_id);
    absl::MutexLock lock(&mu_);
    active_.erase(workflow_id);
    --counters_.started;
    --counters_.in_flight;
  }
  return s;
}

absl::Status WorkflowRunner::Decide(const std::string& workflow_id,
                                    const reflexion::v1::HumanDecision& d,
                                    WorkflowCallbacks callbacks) {
  if (absl::Status s = Admit(); !s.ok()) return s;  // storage read-only
  {
    absl::MutexLock lock(&mu_);
    if (active_.contains(workflow_id)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "workflow ", workflow_id, " is running, not waiting for a decision"));
    }
  }
  absl::Status s = workflow_->Decide(workflow_id, d);
  if (!s.ok()) return s;
  callbacks.retain_events = true;  // followed with WatchWorkflow
  return Resume(workflow_id, std::move(callbacks));
}

absl::StatusOr<std::string> WorkflowRunner::Fork(const std::string& source_id,
                                                 uint64_t step,
                                                 const std::string& strategy,
                                                 WorkflowCallbacks callbacks) {
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
  if (absl::Status s = workflow_->Fork(source_id, step, id, strategy);
      !s.ok()) {
    return s;
  }
  callbacks.retain_events = true;  // followed with WatchWorkflow
  if (absl::Status s = Resume(id, std::move(callbacks)); !s.ok()) return s;
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
  it->second->store(true, std::memory_order_release);
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

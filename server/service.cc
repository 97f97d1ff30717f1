#include "server/service.h"

#include <algorithm>
#include <deque>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/events.h"
#include "core/reflexion/metrics.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/validation.h"
#include "glog/logging.h"

namespace reflexion::server {

using reflexion::v1::ResolveRequest;
using reflexion::v1::ResolveResponse;

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

reflexion::v1::Incident IncidentFromRequest(
    const reflexion::v1::ProcessIncidentRequest& r) {
  reflexion::v1::Incident in;
  in.set_pod_name(r.pod_name());
  in.set_namespace_(r.namespace_());
  in.set_error_type(r.error_type());
  in.set_error_message(r.error_message());
  *in.mutable_container_statuses() = r.container_statuses();
  *in.mutable_events() = r.events();
  in.set_logs(r.logs());
  in.set_request_id(r.request_id());
  return in;
}

namespace {

// The field path at the start of a validation message ("incident.pod_name:
// ..." -> "incident.pod_name").
std::string FieldOf(absl::string_view message) {
  size_t colon = message.find(':');
  return colon == absl::string_view::npos
             ? ""
             : std::string(message.substr(0, colon));
}

}  // namespace

// One Resolve stream. Reads incidents one at a time, runs each as a
// workflow, and multiplexes every workflow's events and result onto one
// write queue with a single write outstanding. Lives until both gRPC is done
// with it (OnDone) and every workflow it started has finished.
class ReflexionServiceImpl::ResolveReactor final
    : public grpc::ServerBidiReactor<ResolveRequest, ResolveResponse> {
 public:
  ResolveReactor(WorkflowRunner* runner, graph::TaskRunner* pool,
                 int max_in_flight)
      : runner_(runner), pool_(pool), max_in_flight_(max_in_flight) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
      }
      MaybeFinish();
      return;
    }
    HandleRequest();
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    bool start = false;
    bool more = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;  // the client is gone: drop what is queued
        queue_.clear();
      } else if (!queue_.empty() && !finished_) {
        in_write_ = std::move(queue_.front());
        queue_.pop_front();
        writing_ = true;
        start = true;
        more = !queue_.empty();
      }
    }
    if (start) {
      // While more messages are queued, let gRPC coalesce them into fewer
      // frames and syscalls; the last one of a burst is flushed at once.
      grpc::WriteOptions options;
      if (more) options.set_buffer_hint();
      StartWrite(&in_write_, options);
    } else {
      MaybeFinish();
    }
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      queue_.clear();
    }
    MaybeFinish();
  }

  void OnDone() override {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = active_ == 0;
    }
    if (last) delete this;
  }

 private:
  void HandleRequest() {
    if (request_.message_case() == ResolveRequest::kDecision) {
      HandleDecision(std::move(*request_.mutable_decision()));
      return;
    }
    if (request_.message_case() != ResolveRequest::kIncident) {
      Reject("", absl::InvalidArgumentError(
                     "message: a ResolveRequest must carry an incident or a "
                     "decision"));
      return;
    }
    reflexion::v1::Incident incident = std::move(*request_.mutable_incident());
    std::string request_id = incident.request_id();
    absl::Status valid = core::ValidateIncident(incident, "incident.");
    if (!valid.ok()) {
      Reject(request_id.substr(0, core::kMaxRequestId), valid);
      return;
    }
    bool admitted;
    {
      absl::MutexLock lock(&mu_);
      admitted = active_ < max_in_flight_;
      if (admitted) ++active_;
    }
    if (!admitted) {
      Reject(request_id, absl::ResourceExhaustedError(absl::StrCat(
                             "incident: more than ", max_in_flight_,
                             " incidents in flight on this stream")));
      return;
    }
    absl::StatusOr<std::string> id =
        runner_->Submit(std::move(incident), StreamCallbacks());
    if (!id.ok()) {
      {
        absl::MutexLock lock(&mu_);
        --active_;
      }
      Reject(request_id, id.status());
    }
  }

  WorkflowCallbacks StreamCallbacks() {
    WorkflowCallbacks cb;
    cb.on_event = [this](reflexion::v1::WorkflowEvent ev) {
      ResolveResponse r;
      *r.mutable_event() = std::move(ev);
      Enqueue(std::move(r));
    };
    cb.on_result = [this](reflexion::v1::IncidentResult result) {
      ResolveResponse r;
      *r.mutable_result() = std::move(result);
      Enqueue(std::move(r));
      WorkflowFinished();
    };
    return cb;
  }

  // A decision touches storage: it runs on the pool, never in the reaction.
  void HandleDecision(reflexion::v1::ResumeWorkflowRequest decision) {
    {
      absl::MutexLock lock(&mu_);
      ++active_;  // until its result, or its rejection
    }
    pool_->Post([this, decision = std::move(decision)] {
      absl::Status s = absl::OkStatus();
      if (decision.workflow_id().empty() ||
          decision.workflow_id().size() > 128) {
        s = absl::InvalidArgumentError(
            "decision.workflow_id: 1 to 128 bytes required");
      } else {
        s = runner_->Decide(decision.workflow_id(), decision.decision(),
                            StreamCallbacks());
      }
      if (!s.ok()) {
        ResolveResponse r;
        auto* rej = r.mutable_rejected();
        rej->set_workflow_id(decision.workflow_id());
        rej->set_code(static_cast<int>(s.code()));
        rej->set_message(std::string(s.message()));
        rej->set_field(FieldOf(s.message()));
        Enqueue(std::move(r));
        WorkflowFinished();
      }
    });
  }

  void Reject(std::string request_id, const absl::Status& status) {
    ResolveResponse r;
    auto* rej = r.mutable_rejected();
    rej->set_request_id(std::move(request_id));
    rej->set_code(static_cast<int>(status.code()));
    rej->set_message(std::string(status.message()));
    rej->set_field(FieldOf(status.message()));
    Enqueue(std::move(r));
  }

  void Enqueue(ResolveResponse response) {
    {
      absl::MutexLock lock(&mu_);
      if (broken_ || finished_) return;
      if (writing_) {
        queue_.push_back(std::move(response));
        return;
      }
      writing_ = true;
      in_write_ = std::move(response);
    }
    StartWrite(&in_write_);
  }

  void WorkflowFinished() {
    bool destroy;
    {
      absl::MutexLock lock(&mu_);
      --active_;
      destroy = done_ && active_ == 0;
    }
    if (destroy) {
      delete this;
      return;
    }
    MaybeFinish();
  }

  // Finishes once the client closed its side and everything was written, or
  // at once (no write outstanding) when the stream is broken.
  void MaybeFinish() {
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || writing_) return;
      if (broken_) {
        status = grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
      } else if (!(reads_done_ && active_ == 0 && queue_.empty())) {
        return;
      }
      finished_ = true;
    }
    Finish(status);
  }

  WorkflowRunner* runner_;
  graph::TaskRunner* pool_;
  const int max_in_flight_;
  ResolveRequest request_;  // only touched by the read path

  absl::Mutex mu_;
  std::deque<ResolveResponse> queue_ ABSL_GUARDED_BY(mu_);
  ResolveResponse in_write_;  // owned by the write in progress
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  int active_ ABSL_GUARDED_BY(mu_) = 0;
};

ReflexionServiceImpl::ReflexionServiceImpl(
    WorkflowRunner* runner, EventHub* hub, core::KnowledgeStore* store,
    core::CheckpointStore* checkpoints, graph::TaskRunner* pool,
    const core::Clock* clock, ServiceOptions options)
    : runner_(runner),
      hub_(hub),
      store_(store),
      checkpoints_(checkpoints),
      pool_(pool),
      clock_(clock),
      options_(std::move(options)),
      started_(clock->Now()) {}

grpc::ServerBidiReactor<ResolveRequest, ResolveResponse>*
ReflexionServiceImpl::Resolve(grpc::CallbackServerContext* context) {
  return new ResolveReactor(runner_, pool_, options_.max_in_flight_per_stream);
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ProcessIncident(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ProcessIncidentRequest* request,
    reflexion::v1::ProcessIncidentResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reflexion::v1::Incident incident = IncidentFromRequest(*request);
  absl::Status valid = core::ValidateIncident(incident, "");
  if (!valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  WorkflowCallbacks cb;
  if (request->include_events()) {
    // Events of one workflow never arrive concurrently: no lock needed.
    cb.on_event = [response](reflexion::v1::WorkflowEvent ev) {
      *response->add_events() = std::move(ev);
    };
  }
  cb.on_result = [reactor, response](reflexion::v1::IncidentResult result) {
    *response->mutable_result() = std::move(result);
    reactor->Finish(grpc::Status::OK);
  };
  absl::StatusOr<std::string> id =
      runner_->Submit(std::move(incident), std::move(cb));
  if (!id.ok()) reactor->Finish(ToGrpcStatus(id.status()));
  return reactor;
}

namespace {

v1::WorkflowPhase ToProtoPhase(core::WorkflowPhase p) {
  switch (p) {
    case core::WorkflowPhase::kRunning:
      return v1::WORKFLOW_PHASE_RUNNING;
    case core::WorkflowPhase::kWaiting:
      return v1::WORKFLOW_PHASE_WAITING;
    case core::WorkflowPhase::kCompleted:
      return v1::WORKFLOW_PHASE_COMPLETED;
    case core::WorkflowPhase::kFailed:
      return v1::WORKFLOW_PHASE_FAILED;
    case core::WorkflowPhase::kCancelled:
      return v1::WORKFLOW_PHASE_CANCELLED;
  }
  return v1::WORKFLOW_PHASE_UNSPECIFIED;
}

// A workflow id from a request: 1..128 bytes.
absl::Status CheckWorkflowId(const std::string& id) {
  if (id.empty()) return absl::InvalidArgumentError("workflow_id: is required");
  if (id.size() > 128) {
    return absl::InvalidArgumentError("workflow_id: at most 128 bytes");
  }
  if (id.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("workflow_id: must not contain NUL");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ReflexionServiceImpl::CheckWorkflowRpc(
    const std::string& workflow_id) const {
  if (checkpoints_ == nullptr) {
    return absl::FailedPreconditionError(
        "checkpointing is disabled (workflow.checkpointing_enabled)");
  }
  return CheckWorkflowId(workflow_id);
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::StartWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::StartWorkflowRequest* request,
    reflexion::v1::StartWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (checkpoints_ == nullptr) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        "checkpointing is disabled (workflow.checkpointing_enabled): a "
        "started workflow could not be read back; use ProcessIncident"));
    return reactor;
  }
  // Same fields and numbers as ProcessIncidentRequest.
  reflexion::v1::ProcessIncidentRequest as_process;
  as_process.ParseFromString(request->SerializeAsString());
  reflexion::v1::Incident incident = IncidentFromRequest(as_process);
  if (absl::Status valid = core::ValidateIncident(incident, ""); !valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  WorkflowCallbacks callbacks;
  callbacks.retain_events = true;  // followed with WatchWorkflow
  absl::StatusOr<std::string> id =
      runner_->Submit(std::move(incident), std::move(callbacks));
  if (!id.ok()) {
    reactor->Finish(ToGrpcStatus(id.status()));
    return reactor;
  }
  response->set_workflow_id(*id);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::GetWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::GetWorkflowRequest* request,
    reflexion::v1::GetWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  pool_->Post([this, reactor, request, response] {
    const std::string& id = request->workflow_id();
    absl::StatusOr<core::WorkflowRecord> record = checkpoints_->GetWorkflow(id);
    if (!record.ok()) {
      reactor->Finish(ToGrpcStatus(record.status()));
      return;
    }
    absl::StatusOr<core::Checkpoint> cp = checkpoints_->Latest(id);
    if (!cp.ok()) {
      reactor->Finish(ToGrpcStatus(cp.status()));
      return;
    }
    v1::WorkflowState state;
    if (!state.ParseFromString(cp->state)) {
      reactor->Finish(grpc::Status(grpc::StatusCode::DATA_LOSS,
                                   "the workflow's state does not decode"));
      return;
    }
    response->set_workflow_id(id);
    response->set_phase(ToProtoPhase(record->phase));
    if (!core::IsTerminal(record->phase)) {
      response->set_current_node(cp->next_node);
    }
    response->set_steps(cp->step);
    response->set_attempt(state.attempt());
    response->set_max_attempts(state.max_attempts());
    *response->mutable_incident() = state.incident();
    response->set_signature(state.analysis().signature());
    *response->mutable_updated_at() = core::ToProto(cp->time);
    if (record->phase == core::WorkflowPhase::kWaiting) {
      core::WorkflowRunResult run{graph::Interrupt(state.escalation().reason()),
                                  state, cp->last_sequence,
                                  static_cast<int>(cp->step), cp->node};
      *response->mutable_result() = core::MakeIncidentResult(run, cp->time);
    }
    if (core::IsTerminal(record->phase)) {
      absl::Status status =
          record->phase == core::WorkflowPhase::kCompleted ? absl::OkStatus()
          : record->phase == core::WorkflowPhase::kCancelled
              ? absl::CancelledError("the workflow was cancelled")
              : absl::InternalError(absl::StrCat(
                    "the workflow failed at node '", cp->next_node, "': ",
                    cp->error.empty() ? "(the server log has the cause)"
                                      : cp->error));
      core::WorkflowRunResult run{status, std::move(state), cp->last_sequence,
                                  static_cast<int>(cp->step), cp->node};
      *response->mutable_result() = core::MakeIncidentResult(run, cp->time);
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

// One WatchWorkflow stream: subscribes to the hub (on the pool, not in the
// reaction), writes what it receives one at a time, finishes after the
// result. Deleted when both gRPC is done with it (OnDone) and the
// subscription step has returned.
class ReflexionServiceImpl::WatchReactor final
    : public grpc::ServerWriteReactor<v1::WatchWorkflowResponse> {
 public:
  WatchReactor(EventHub* hub, graph::TaskRunner* pool, std::string id,
               uint64_t from)
      : hub_(hub), id_(std::move(id)) {
    pool->Post([this, from] { Subscribe(from); });
  }

  void OnWriteDone(bool ok) override {
    bool start = false, finish = false, more = false, cancelled = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;
        queue_.clear();
      } else if (!queue_.empty()) {
        in_write_ = std::move(queue_.front());
        queue_.pop_front();
        writing_ = true;
        start = true;
        more = !queue_.empty();
      }
      if (!writing_ && (broken_ || result_queued_) && !finished_) {
        finished_ = true;
        finish = true;
        cancelled = broken_;  // read under mu_: OnCancel may set it
      }
    }
    if (start) {
      grpc::WriteOptions options;
      if (more) options.set_buffer_hint();
      StartWrite(&in_write_, options);
    }
    if (finish) {
      Finish(cancelled ? grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")
                       : grpc::Status::OK);
    }
  }

  void OnCancel() override {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      broken_ = true;
      queue_.clear();
      if (!writing_ && !finished_) finished_ = finish = true;
    }
    if (finish) Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
  }

  void OnDone() override {
    uint64_t sub;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      sub = subscription_;
    }
    // After this no hub delivery reaches us.
    if (sub != 0) hub_->Unwatch(id_, sub);
    Release();
  }

 private:
  void Subscribe(uint64_t from) {
    absl::StatusOr<uint64_t> sub = hub_->Watch(
        id_, from, [this](const v1::ResolveResponse& m) { return Enqueue(m); });
    bool finish = false;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (!sub.ok()) {
        if (!finished_) {
          finished_ = finish = true;
          status = ToGrpcStatus(sub.status());
        }
      } else {
        subscription_ = *sub;
      }
    }
    bool unwatch = false;
    {
      absl::MutexLock lock(&mu_);
      // gRPC finished while we subscribed: OnDone saw no subscription.
      unwatch = sub.ok() && *sub != 0 && done_;
    }
    if (unwatch) hub_->Unwatch(id_, *sub);
    if (finish) Finish(status);
    Release();
  }

  // Called by the hub (its lock held): queue and maybe start a write.
  bool Enqueue(const v1::ResolveResponse& m) {
    v1::WatchWorkflowResponse out;
    if (m.has_event()) {
      *out.mutable_event() = m.event();
    } else {
      *out.mutable_result() = m.result();
    }
    {
      absl::MutexLock lock(&mu_);
      if (broken_ || finished_ || done_) return false;
      if (m.has_result()) result_queued_ = true;
      if (writing_) {
        queue_.push_back(std::move(out));
        return !m.has_result();
      }
      writing_ = true;
      in_write_ = std::move(out);
    }
    StartWrite(&in_write_);
    return !m.has_result();
  }

  void Release() {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --refs_ == 0;
    }
    if (last) delete this;
  }

  EventHub* hub_;
  const std::string id_;
  absl::Mutex mu_;
  int refs_ ABSL_GUARDED_BY(mu_) = 2;  // gRPC (OnDone) + Subscribe
  std::deque<v1::WatchWorkflowResponse> queue_ ABSL_GUARDED_BY(mu_);
  v1::WatchWorkflowResponse in_write_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool result_queued_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t subscription_ ABSL_GUARDED_BY(mu_) = 0;
};

grpc::ServerWriteReactor<v1::WatchWorkflowResponse>*
ReflexionServiceImpl::WatchWorkflow(grpc::CallbackServerContext* context,
                                    const v1::WatchWorkflowRequest* request) {
  if (absl::Status s = CheckWorkflowId(request->workflow_id()); !s.ok()) {
    class Refuse : public grpc::ServerWriteReactor<v1::WatchWorkflowResponse> {
     public:
      explicit Refuse(grpc::Status s) { Finish(std::move(s)); }
      void OnDone() override { delete this; }
    };
    return new Refuse(ToGrpcStatus(s));
  }
  return new WatchReactor(hub_, pool_, request->workflow_id(),
                          request->from_sequence());
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ResumeWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ResumeWorkflowRequest* request,
    reflexion::v1::ResumeWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  pool_->Post([this, reactor, request] {
    reactor->Finish(ToGrpcStatus(
        runner_->Decide(request->workflow_id(), request->decision())));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::CancelWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::CancelWorkflowRequest* request,
    reflexion::v1::CancelWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (runner_->Cancel(request->workflow_id())) {
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
  pool_->Post([this, reactor, request] {
    const std::string& id = request->workflow_id();
    absl::StatusOr<core::WorkflowRecord> record = checkpoints_->GetWorkflow(id);
    if (!record.ok()) {
      reactor->Finish(ToGrpcStatus(record.status()));
      return;
    }
    if (core::IsTerminal(record->phase)) {
      reactor->Finish(grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrCat("workflow ", id, " already ended (",
                       core::WorkflowPhaseName(record->phase), ")")));
      return;
    }
    // Recorded as running but not running here (its resume failed): mark
    // it cancelled so it is never resumed.
    reactor->Finish(ToGrpcStatus(checkpoints_->SetPhase(
        id, core::WorkflowPhase::kCancelled, clock_->Now(), true)));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ForkWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ForkWorkflowRequest* request,
    reflexion::v1::ForkWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  pool_->Post([this, reactor, request, response] {
    absl::StatusOr<std::string> id = runner_->Fork(
        request->workflow_id(), request->step(), request->strategy());
    if (!id.ok()) {
      reactor->Finish(ToGrpcStatus(id.status()));
      return;
    }
    response->set_workflow_id(*id);
    response->set_parent_workflow_id(request->workflow_id());
    response->set_parent_step(request->step());
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ListCheckpoints(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ListCheckpointsRequest* request,
    reflexion::v1::ListCheckpointsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (request->limit() < 0 || request->limit() > 10000) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "limit: must be between 0 and 10000"));
    return reactor;
  }
  pool_->Post([this, reactor, request, response] {
    const std::string& id = request->workflow_id();
    absl::StatusOr<core::WorkflowRecord> record = checkpoints_->GetWorkflow(id);
    if (!record.ok()) {
      reactor->Finish(ToGrpcStatus(record.status()));
      return;
    }
    absl::StatusOr<std::vector<core::Checkpoint>> list =
        checkpoints_->List(id, request->limit());
    if (!list.ok()) {
      reactor->Finish(ToGrpcStatus(list.status()));
      return;
    }
    for (const core::Checkpoint& cp : *list) {
      v1::CheckpointInfo* info = response->add_checkpoints();
      info->set_step(cp.step);
      info->set_node(cp.node);
      info->set_next_node(cp.next_node);
      info->set_last_sequence(cp.last_sequence);
      *info->mutable_time() = core::ToProto(cp.time);
      info->set_parent_workflow_id(cp.parent_workflow_id);
      info->set_parent_step(cp.parent_step);
      if (request->include_state() &&
          !info->mutable_state()->ParseFromString(cp.state)) {
        reactor->Finish(grpc::Status(
            grpc::StatusCode::DATA_LOSS,
            absl::StrCat("checkpoint ", cp.step, " does not decode")));
        return;
      }
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ListStrategies(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ListStrategiesRequest* request,
    reflexion::v1::ListStrategiesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (request->error_type().size() > core::kMaxErrorType) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "error_type: at most 64 characters"));
    return reactor;
  }
  if (request->signature().size() > 256) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "signature: at most 256 characters"));
    return reactor;
  }
  pool_->Post([this, reactor, request, response] {
    absl::StatusOr<std::vector<reflexion::v1::Strategy>> strategies =
        store_->ListStrategies();
    if (!strategies.ok()) {
      reactor->Finish(ToGrpcStatus(strategies.status()));
      return;
    }
    absl::StatusOr<std::vector<reflexion::v1::StrategyStats>> stats =
        store_->GetStats(request->signature());
    if (!stats.ok()) {
      reactor->Finish(ToGrpcStatus(stats.status()));
      return;
    }
    std::string family = request->error_type().empty()
                             ? ""
                             : core::FamilyOf(request->error_type());
    std::vector<std::string> applicable;
    if (!family.empty()) applicable = core::StrategiesFor(family);
    for (const auto& s : *strategies) {
      if (!family.empty() && std::find(applicable.begin(), applicable.end(),
                                       s.name()) == applicable.end()) {
        continue;
      }
      reflexion::v1::StrategyView* view = response->add_strategies();
      *view->mutable_strategy() = s;
      view->set_versions(s.version());
      std::vector<const reflexion::v1::StrategyStats*> mine;
      for (const auto& st : *stats) {
        if (st.strategy() == s.name()) mine.push_back(&st);
      }
      std::sort(mine.begin(), mine.end(), [](auto* a, auto* b) {
        return a->trials() != b->trials() ? a->trials() > b->trials()
                                          : a->signature() < b->signature();
      });
      for (const auto* st : mine) *view->add_stats() = *st;
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ListEpisodes(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ListEpisodesRequest* request,
    reflexion::v1::ListEpisodesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  auto bad = [reactor](std::string message) {
    reactor->Finish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message)));
    return reactor;
  };
  if (request->page_size() < 0 || request->page_size() > 1000) {
    return bad("page_size: must be between 0 and 1000");
  }
  if (!request->namespace_().empty() &&
      !core::IsDns1123Label(request->namespace_())) {
    return bad("namespace: must be a DNS-1123 label");
  }
  if (!request->pod_name().empty() &&
      !core::IsDns1123Subdomain(request->pod_name())) {
    return bad("pod_name: must be a DNS-1123 subdomain");
  }
  if (request->error_type().size() > core::kMaxErrorType) {
    return bad("error_type: at most 64 characters");
  }
  if (request->signature().size() > 256 ||
      request->workflow_id().size() > 128 ||
      request->page_token().size() > 512) {
    return bad(request->signature().size() > 256
                   ? "signature: at most 256 characters"
               : request->workflow_id().size() > 128
                   ? "workflow_id: at most 128 characters"
                   : "page_token: at most 512 characters");
  }
  pool_->Post([this, reactor, request, response] {
    core::EpisodeQuery q;
    q.page_size = request->page_size() == 0 ? 100 : request->page_size();
    q.page_token = request->page_token();
    q.error_type = request->error_type();
    q.signature = request->signature();
    q.namespace_name = request->namespace_();
    q.pod_name = request->pod_name();
    q.workflow_id = request->workflow_id();
    absl::StatusOr<core::EpisodePage> page = store_->ListEpisodes(q);
    if (!page.ok()) {
      reactor->Finish(ToGrpcStatus(page.status()));
      return;
    }
    for (auto& e : page->episodes) *response->add_episodes() = std::move(e);
    response->set_next_page_token(page->next_page_token);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::GetMetrics(
    grpc::CallbackServerContext* context,
    const reflexion::v1::GetMetricsRequest* request,
    reflexion::v1::GetMetricsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  pool_->Post([this, reactor, response] {
    absl::StatusOr<reflexion::v1::GetMetricsResponse> m =
        core::ComputeLearningMetrics(*store_);
    if (!m.ok()) {
      reactor->Finish(ToGrpcStatus(m.status()));
      return;
    }
    *response = *std::move(m);
    RunnerCounters c = runner_->Counters();
    response->set_workflows_started(c.started);
    response->set_workflows_in_flight(c.in_flight);
    response->set_workflows_resolved(c.resolved);
    response->set_workflows_escalated(c.escalated);
    response->set_workflows_failed(c.failed);
    response->set_uptime_s(absl::ToDoubleSeconds(clock_->Now() - started_));
    response->set_executor(options_.executor_name);
    response->set_reflector(options_.reflector_name);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace reflexion::server

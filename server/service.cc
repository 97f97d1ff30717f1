#include "server/service.h"

#include <algorithm>
#include <atomic>
#include <deque>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/reflexion/audit_chain.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/events.h"
#include "core/reflexion/metrics.h"
#include "core/reflexion/redact.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/validation.h"
#include "glog/logging.h"
#include "server/rpc_status.h"
#include "server/wire.h"

namespace reflexion::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

bool RefuseUndecodable(const google::protobuf::Message& request,
                       grpc::ServerUnaryReactor* reactor) {
  std::string error = wire::DecodeError(request);
  if (error.empty()) return false;
  reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error));
  return true;
}

namespace {
// The incident of a flat request (ProcessIncident, StartWorkflow,
// DiagnoseIncident share Incident's fields).
template <typename Request>
reflexion::v1::Incident IncidentOf(const Request& r) {
  reflexion::v1::Incident in;
  in.set_pod_name(r.pod_name());
  in.set_namespace_(r.namespace_());
  in.set_error_type(r.error_type());
  in.set_error_message(r.error_message());
  *in.mutable_container_statuses() = r.container_statuses();
  *in.mutable_events() = r.events();
  in.set_logs(r.logs());
  in.set_request_id(r.request_id());
  if (r.has_pod()) *in.mutable_pod() = r.pod();
  *in.mutable_pod_events() = r.pod_events();
  if constexpr (requires { r.dry_run(); }) in.set_dry_run(r.dry_run());
  return in;
}

// NormalizeIncident, then ValidateIncident.
absl::Status PrepareIncident(reflexion::v1::Incident* in,
                             absl::string_view prefix) {
  if (absl::Status s = core::NormalizeIncident(in, prefix); !s.ok()) return s;
  if (absl::Status s = core::ValidateIncident(*in, prefix); !s.ok()) return s;
  // Secrets in the pod's words never reach storage, logs, events or the LLM.
  core::RedactIncident(in);
  return absl::OkStatus();
}
}  // namespace

reflexion::v1::Incident IncidentFromRequest(
    const reflexion::v1::ProcessIncidentRequest& r) {
  return IncidentOf(r);
}

namespace {

// How a workflow submitted by `who` starts.
core::StartOptions StartedBy(const Principal& who) {
  core::StartOptions start;
  start.principal = who.name;
  return start;
}

// A workflow id from a request: 1..128 bytes, no NUL. `prefix` is the path
// of the message holding it ("decision." on Resolve).
absl::Status CheckWorkflowId(const std::string& id,
                             absl::string_view prefix = "") {
  if (id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "workflow_id: is required"));
  }
  if (id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "workflow_id: at most 128 bytes"));
  }
  if (id.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "workflow_id: must not contain NUL"));
  }
  return absl::OkStatus();
}

// The field path at the start of a validation message ("incident.pod_name:
// ..." -> "incident.pod_name").
std::string FieldOf(absl::string_view message) {
  size_t colon = message.find(':');
  return colon == absl::string_view::npos
             ? ""
             : std::string(message.substr(0, colon));
}

}  // namespace

// One Resolve stream, on raw bytes so that a message that does not parse is
// answered (rejected, naming the field) instead of ending the stream. Reads
// one message at a time, runs each incident as a workflow, and multiplexes
// every workflow's messages onto one write queue with a single write
// outstanding. Lives until both gRPC is done with it (OnDone) and every
// workflow it started has finished; registered with the service meanwhile
// (for the hand-off at shutdown).
class ReflexionServiceImpl::ResolveReactor final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>,
      public AgentStream {
  using ResolveRequest = reflexion::v1::ResolveRequest;
  using ResolveResponse = reflexion::v1::ResolveResponse;

 public:
  ResolveReactor(ReflexionServiceImpl* service,
                 grpc::CallbackServerContext* context, int max_in_flight,
                 size_t budget, Principal principal)
      : service_(service),
        principal_(std::move(principal)),
        runner_(service->runner_),
        pool_(service->pool_),
        sessions_(service->options_.sessions),
        context_(context),
        max_in_flight_(max_in_flight),
        budget_(budget),
        lane_(service->options_.lanes != nullptr
                  ? service->options_.lanes->NewLane()
                  : nullptr),
        guard_(std::make_shared<Guard>()) {
    guard_->stream = this;
    service_->Register(this);
    StartRead(&read_buffer_);
  }

  // AgentStream: what the session registry sends (under its lock).
  void SendToAgent(const ResolveResponse& message) override {
    Enqueue(message);
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
    HandleMessage();
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;  // handed off: nothing more is read
      if (queued_bytes_ > budget_) {
        // Back-pressure: a client that does not read gets no more reads
        // (HTTP/2 flow control then stops its writes) until its queue has
        // drained to half the budget (OnWriteDone resumes).
        read_paused_ = true;
      } else if (AtLimitLocked()) {
        // At its in-flight limit the stream is not read either, until one
        // of its workflows ends (WorkflowFinished resumes): a client that
        // sends faster than its incidents resolve is slowed down, not
        // answered with a flood of rejections.
        read_held_ = true;
        return;
      }
    }
    if (read_paused()) {
      service_->AddPaused(1);
      WatchStall();
      return;
    }
    StartRead(&read_buffer_);
  }

  // Bytes of messages queued for this stream, for tests and metrics.
  size_t queued_bytes() {
    absl::MutexLock lock(&mu_);
    return queued_bytes_;
  }
  bool read_paused() {
    absl::MutexLock lock(&mu_);
    return read_paused_;
  }
  bool background() {
    absl::MutexLock lock(&mu_);
    return lane_background_;
  }

  void OnWriteDone(bool ok) override {
    bool start = false;
    bool more = false;
    bool resume = false;
    bool unpaused = false;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) {
        broken_ = true;  // the client is gone: drop what is queued
        queue_.clear();
        queued_bytes_ = 0;
      } else if (!queue_.empty() && !finished_) {
        in_write_ = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= std::min(queued_bytes_, in_write_.Length());
        writing_ = true;
        start = true;
        more = !queue_.empty();
      }
      UpdateLaneLocked();
      if (read_paused_ && !finished_ && !broken_ &&
          queued_bytes_ <= budget_ / 2) {
        read_paused_ = false;
        ++pause_epoch_;
        unpaused = true;
        if (AtLimitLocked()) {
          read_held_ = true;  // WorkflowFinished resumes
        } else {
          resume = true;
        }
      }
    }
    if (unpaused) service_->AddPaused(-1);
    if (resume) StartRead(&read_buffer_);
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
      queued_bytes_ = 0;
      UpdateLaneLocked();
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
    if (last) Destroy();
  }

  // Shutdown: every workflow still open on this stream is handed off (it
  // continues without the stream, its events retained for WatchWorkflow)
  // and the stream ends with UNAVAILABLE once what is queued is written.
  // A workflow already finishing gets its result instead. Returns how many
  // were handed off. Called by the service (registry lock held); never
  // blocks.
  int HandOff() {
    std::vector<std::string> ids;
    {
      absl::MutexLock lock(&mu_);
      if (handing_off_ || finished_) return 0;
      handing_off_ = true;
      for (const auto& [id, open] : open_) ids.push_back(id);
    }
    std::vector<std::string> retained;
    for (const std::string& id : ids) {
      if (runner_->RetainEvents(id)) retained.push_back(id);
    }
    int handed = 0;
    for (const std::string& id : retained) {
      bool start;
      {
        absl::MutexLock lock(&mu_);
        auto it = open_.find(id);
        if (it == open_.end()) continue;  // its result came meanwhile
        ResolveResponse r;
        auto* h = r.mutable_handed_off();
        h->set_request_id(it->second.request_id);
        h->set_workflow_id(id);
        h->set_next_sequence(it->second.next_sequence);
        h->set_message(
            "server shutting down: the workflow continues without this "
            "stream; re-attach with WatchWorkflow from next_sequence or read "
            "its outcome with GetWorkflow");
        handed_off_.insert(id);
        open_.erase(it);
        // Small and rare: encoded under the lock, queued with the change.
        start = QueueLocked(EncodeMessage(r));
      }
      if (start) StartWrite(&in_write_);
      ++handed;
    }
    MaybeFinish();
    return handed;
  }

  // Incidents (and decided workflows) this stream still waits for.
  int open() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(open_.size());
  }

 private:
  // What the stream knows of a workflow it waits for.
  struct Open {
    std::string request_id;
    uint64_t next_sequence = 1;  // the first not yet queued on the stream
  };

  void HandleMessage() {
    ResolveRequest request;
    if (absl::Status s = DecodeMessage(read_buffer_, &request); !s.ok()) {
      Reject("", s);
      return;
    }
    const bool first = first_message_;
    first_message_ = false;
    // The credentials are checked again for every message: a token removed
    // from the tokens file, or a changed role or scope, applies to open
    // streams at once.
    if (absl::StatusOr<Principal> who = service_->Admit(*context_, "Resolve");
        who.ok()) {
      principal_ = *std::move(who);
    } else if (request.has_decision()) {
      RejectDecision(request.decision().workflow_id(), who.status());
      return;
    } else {
      Reject(request.has_incident()
                 ? core::RequestIdForRejection(request.incident().request_id())
                 : std::string(),
             who.status());
      return;
    }
    switch (request.message_case()) {
      case ResolveRequest::kDecision: {
        // Decisions and approvals are an operator's, never an agent's.
        if (absl::Status s =
                Authorize(principal_, Role::kOperator, "Resolve decision");
            !s.ok()) {
          RejectDecision(request.decision().workflow_id(), s);
          return;
        }
        // Who decided is the caller, whatever the client wrote.
        request.mutable_decision()->mutable_decision()->set_decided_by(
            principal_.name);
        HandleDecision(std::move(*request.mutable_decision()));
        return;
      }
      case ResolveRequest::kHello:
        // Only agents (and admins) open sessions, of their clusters.
        if (absl::Status s =
                Authorize(principal_, Role::kAgent, "Resolve hello");
            !s.ok()) {
          Reject("", s);
          return;
        }
        if (absl::Status s = AuthorizeCluster(
                principal_, request.hello().cluster(), "hello.cluster");
            !s.ok()) {
          Reject("", s);
          return;
        }
        HandleHello(first, std::move(*request.mutable_hello()));
        return;
      case ResolveRequest::kActionResult:
      case ResolveRequest::kPodStatus: {
        std::string id;
        {
          absl::MutexLock lock(&mu_);
          id = session_id_;
        }
        const bool result =
            request.message_case() == ResolveRequest::kActionResult;
        if (!session_ || id.empty() ||
            !hello_.capabilities().executes_actions()) {
          Reject("", absl::FailedPreconditionError(absl::StrCat(
                         result ? "action_result" : "pod_status",
                         ": only an agent session that executes actions (a "
                         "stream opened with hello) may send it")));
          return;
        }
        absl::Status s =
            result ? sessions_->OnActionResult(
                         id, std::move(*request.mutable_action_result()))
                   : sessions_->OnPodStatus(
                         id, std::move(*request.mutable_pod_status()));
        if (!s.ok()) Reject("", s);
        return;
      }
      case ResolveRequest::kIncident:
        break;
      default:
        Reject("", absl::InvalidArgumentError(
                       "message: a ResolveRequest must carry an incident, a "
                       "decision, a hello, an action_result or a pod_status"));
        return;
    }
    reflexion::v1::Incident incident = std::move(*request.mutable_incident());
    std::string request_id = incident.request_id();
    absl::Status valid = PrepareIncident(&incident, "incident.");
    if (valid.ok()) {
      valid = AuthorizeNamespace(principal_, incident.namespace_(),
                                 "incident.namespace");
    }
    if (!valid.ok()) {
      Reject(core::RequestIdForRejection(request_id), valid);
      return;
    }
    if (session_ && hello_.capabilities().executes_actions()) {
      SubmitForAgent(std::move(incident), std::move(request_id));
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
        runner_->Submit(std::move(incident), StreamCallbacks(request_id),
                        StartedBy(principal_));
    if (!id.ok()) {
      Reject(request_id, id.status());
      WorkflowFinished();
    }
  }

  // Callbacks of a workflow followed on this stream. `request_id` is the
  // incident's ("" for a workflow continued by a decision).
  WorkflowCallbacks StreamCallbacks(std::string request_id) {
    WorkflowCallbacks cb;
    cb.lane = lane_;
    cb.on_accepted = [this, request_id](const std::string& workflow_id,
                                        const absl::Status& s) {
      if (s.ok()) {
        {
          absl::MutexLock lock(&mu_);
          open_[workflow_id].request_id = request_id;
        }
        service_->AddOpen(1);
      }
      Enqueue(AcknowledgeIncident(request_id, workflow_id, s));
      if (!s.ok()) WorkflowFinished();
    };
    cb.on_event = [this](reflexion::v1::WorkflowEvent ev) {
      {
        absl::MutexLock lock(&mu_);
        auto it = open_.find(ev.workflow_id());
        if (it == open_.end()) return;  // handed off
        it->second.next_sequence = ev.sequence() + 1;
      }
      ResolveResponse r;
      *r.mutable_event() = std::move(ev);
      Enqueue(std::move(r));
    };
    cb.on_result = [this](reflexion::v1::IncidentResult result) {
      const std::string id = result.workflow_id();
      ResolveResponse r;
      *r.mutable_result() = std::move(result);
      grpc::ByteBuffer bytes = EncodeMessage(r);
      bool mine, start = false;
      {
        absl::MutexLock lock(&mu_);
        mine = open_.erase(id) > 0;
        handed_off_.erase(id);
        if (mine) start = QueueLocked(std::move(bytes));
      }
      if (start) StartWrite(&in_write_);
      if (mine) service_->AddOpen(-1);
      WorkflowFinished();
    };
    return cb;
  }

  void HandleHello(bool first, reflexion::v1::AgentHello hello) {
    if (sessions_ == nullptr) {
      Reject("", absl::FailedPreconditionError(
                     "hello: this server does not accept agent sessions"));
      return;
    }
    if (!first) {
      Reject("", absl::InvalidArgumentError(
                     "hello: only the first message of a stream may be an "
                     "AgentHello"));
      return;
    }
    if (absl::Status s = AgentSessions::ValidateHello(hello); !s.ok()) {
      Reject("", s);
      return;
    }
    hello_ = std::move(hello);
    session_ = true;
    std::string id = sessions_->Open(this, hello_);
    absl::MutexLock lock(&mu_);
    session_id_ = std::move(id);
  }

  // An incident of a session whose agent executes actions: the workflow
  // belongs to the cluster, not to this stream, and its messages go to the
  // cluster's sessions (this one while it lives).
  void SubmitForAgent(reflexion::v1::Incident incident,
                      std::string request_id) {
    std::string id;
    {
      absl::MutexLock lock(&mu_);
      id = session_id_;
    }
    if (sessions_->OpenWorkflows(id) >= max_in_flight_) {
      Reject(request_id, absl::ResourceExhaustedError(absl::StrCat(
                             "incident: more than ", max_in_flight_,
                             " incidents in flight on this stream")));
      return;
    }
    reflexion::v1::SessionExecutor exec;
    exec.set_cluster(hello_.cluster());
    *exec.mutable_action_types() = hello_.capabilities().action_types();
    exec.set_dry_run(hello_.capabilities().dry_run());
    WorkflowCallbacks cb =
        sessions_->Callbacks(hello_.cluster(), id, request_id);
    cb.lane = lane_;
    core::StartOptions start;
    start.session = std::move(exec);
    start.principal = principal_.name;
    absl::StatusOr<std::string> wf =
        runner_->Submit(std::move(incident), std::move(cb), std::move(start));
    if (!wf.ok()) Reject(request_id, wf.status());
  }

  // A decision touches storage: it runs on the pool, never in the reaction.
  // Its continuing workflow is followed on this stream.
  void HandleDecision(reflexion::v1::ResumeWorkflowRequest decision) {
    if (session_) {
      // A workflow waiting at this cluster's agents continues there.
      std::optional<WorkflowCallbacks> cb =
          sessions_->CallbacksIfWaiting(decision.workflow_id());
      if (cb.has_value()) {
        {
          absl::MutexLock lock(&mu_);
          ++active_;  // until the rejection is queued, or not
        }
        pool_->Post([this, decision = std::move(decision), who = principal_,
                     cb = *std::move(cb)]() mutable {
          absl::Status s =
              service_->CheckWorkflowScope(who, decision.workflow_id());
          if (s.ok()) {
            s = runner_->Decide(decision.workflow_id(), decision.etag(),
                                decision.decision(), std::move(cb));
          }
          if (!s.ok()) RejectDecision(decision.workflow_id(), s);
          WorkflowFinished();
        });
        return;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      ++active_;  // until its result, or its rejection
    }
    pool_->Post([this, decision = std::move(decision), who = principal_] {
      absl::Status s = CheckWorkflowId(decision.workflow_id(), "decision.");
      if (s.ok()) {
        s = service_->CheckWorkflowScope(who, decision.workflow_id());
      }
      if (s.ok()) {
        {
          absl::MutexLock lock(&mu_);
          // Open before it runs: its first event, even its result, may come
          // before Decide returns — and once its result came, this stream
          // may be gone: nothing of `this` is touched after a success.
          open_[decision.workflow_id()];
        }
        service_->AddOpen(1);
        s = runner_->Decide(decision.workflow_id(), decision.etag(),
                            decision.decision(), StreamCallbacks(""));
        if (!s.ok()) {
          service_->AddOpen(-1);
          absl::MutexLock lock(&mu_);
          open_.erase(decision.workflow_id());
        }
      }
      if (!s.ok()) {
        RejectDecision(decision.workflow_id(), s);
        WorkflowFinished();
      }
    });
  }

  void RejectDecision(const std::string& workflow_id, const absl::Status& s) {
    ResolveResponse r;
    auto* rej = r.mutable_rejected();
    rej->set_workflow_id(std::string(core::ClipUtf8(workflow_id, 128)));
    rej->set_code(static_cast<int>(s.code()));
    rej->set_message(std::string(s.message()));
    rej->set_field(FieldOf(s.message()));
    Enqueue(std::move(r));
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

  void Enqueue(const ResolveResponse& response) {
    grpc::ByteBuffer bytes = EncodeMessage(response);
    bool start;
    {
      absl::MutexLock lock(&mu_);
      start = QueueLocked(std::move(bytes));
    }
    if (start) StartWrite(&in_write_);
  }

  // Queues `bytes` (dropped once the stream is finished or broken); true
  // when the caller must StartWrite(&in_write_) after releasing mu_. Used
  // with the change of open_ that the message reports, under one lock, so
  // MaybeFinish never ends the stream between the two.
  bool QueueLocked(grpc::ByteBuffer bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_ || finished_) return false;
    if (writing_) {
      queued_bytes_ += bytes.Length();
      queue_.push_back(std::move(bytes));
      UpdateLaneLocked();
      return false;
    }
    writing_ = true;
    in_write_ = std::move(bytes);
    return true;
  }

  void WorkflowFinished() {
    bool destroy;
    bool resume = false;
    {
      absl::MutexLock lock(&mu_);
      --active_;
      destroy = done_ && active_ == 0;
      if (read_held_ && !AtLimitLocked() && !finished_ && !broken_ && !done_) {
        read_held_ = false;
        resume = true;
      }
    }
    if (destroy) {
      Destroy();
      return;
    }
    if (resume) StartRead(&read_buffer_);
    MaybeFinish();
  }

  // Fair scheduling: this stream's workflows run in the background
  // (graph::Lane) while its client is not keeping up with their output —
  // more than kLaneBacklog bytes queued (half the budget if that is less),
  // until it is back under a quarter of that — and once the client is gone:
  // their work goes on, but never ahead of a client that reads.
  static constexpr size_t kLaneBacklog = 64 << 10;
  void UpdateLaneLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (lane_ == nullptr) return;
    const size_t backlog = std::min(kLaneBacklog, budget_ / 2);
    bool background = lane_background_;
    if (broken_ || finished_ || queued_bytes_ > backlog) {
      background = true;
    } else if (queued_bytes_ <= backlog / 4) {
      background = false;
    }
    if (background == lane_background_) return;
    lane_background_ = background;
    lane_->SetBackground(background);
  }

  // Whether a plain stream has as many workflows in flight as it may.
  // Sessions are limited per session when an incident is submitted.
  bool AtLimitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !session_ && active_ >= max_in_flight_;
  }

  // Finishes once the client closed its side and everything was written;
  // once handed off and everything queued was written; or at once (no
  // write outstanding) when the stream is broken.
  void MaybeFinish() {
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (finished_ || writing_) return;
      if (broken_) {
        status = grpc::Status(grpc::StatusCode::CANCELLED, "stream cancelled");
      } else if (handing_off_ && open_.empty() && queue_.empty()) {
        status = grpc::Status(
            grpc::StatusCode::UNAVAILABLE,
            absl::StrCat("server shutting down: ", handed_off_.size(),
                         " workflow(s) handed off, they continue"));
      } else if (!(reads_done_ && active_ == 0 && queue_.empty())) {
        return;
      }
      finished_ = true;
      UpdateLaneLocked();
    }
    CloseSession();
    Finish(status);
  }

  // Ends this stream's agent session (idempotent): its requests move to
  // another session of the cluster or wait for one.
  void CloseSession() {
    std::string id;
    {
      absl::MutexLock lock(&mu_);
      id = std::move(session_id_);
      session_id_.clear();
    }
    if (!id.empty() && sessions_ != nullptr) sessions_->Close(id);
  }

  // Back-pressure that lasts: a client that does not read for
  // stalled_stream_timeout is cut (TryCancel); its workflows go on.
  void WatchStall() {
    const absl::Duration timeout = service_->options_.stalled_stream_timeout;
    graph::Timer* timer = service_->options_.timer;
    if (timeout <= absl::ZeroDuration() || timer == nullptr) return;
    uint64_t epoch;
    {
      absl::MutexLock lock(&mu_);
      epoch = pause_epoch_;
    }
    timer->After(timeout, [guard = guard_, epoch] {
      absl::MutexLock lock(&guard->mu);
      ResolveReactor* r = guard->stream;
      if (r == nullptr) return;
      bool stalled;
      {
        absl::MutexLock inner(&r->mu_);
        stalled = r->read_paused_ && r->pause_epoch_ == epoch &&
                  !r->finished_ && !r->broken_;
      }
      if (!stalled) return;
      LOG(WARNING) << "Resolve stream stalled (its client read nothing) "
                   << "past service.stalled_stream_timeout: cancelled; its "
                   << "workflows continue";
      r->service_->CountStalledCancel();
      r->context_->TryCancel();
    });
  }

  void Destroy() {
    {
      absl::MutexLock lock(&guard_->mu);
      guard_->stream = nullptr;  // a stall check now does nothing
    }
    CloseSession();
    int open;
    bool paused;
    {
      absl::MutexLock lock(&mu_);
      open = static_cast<int>(open_.size());
      paused = read_paused_;
    }
    // Waits for a HandOff in progress; after this nobody calls us.
    service_->Unregister(this, open, paused);
    delete this;
  }

  ReflexionServiceImpl* const service_;
  // Who sends on the stream: authenticated when it opened and again for
  // every message (read path only; the pool's tasks get copies).
  Principal principal_;
  WorkflowRunner* const runner_;
  graph::TaskRunner* const pool_;
  AgentSessions* const sessions_;
  grpc::CallbackServerContext* const context_;
  const int max_in_flight_;
  // Bytes of queued outbound messages above which reading pauses.
  const size_t budget_;
  // This stream's workflows' lane of the pool (null: no lanes).
  const std::shared_ptr<graph::Lane> lane_;
  bool lane_background_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ByteBuffer read_buffer_;  // only touched by the read path

  absl::Mutex mu_;
  std::deque<grpc::ByteBuffer> queue_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer in_write_;  // owned by the write in progress
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool handing_off_ ABSL_GUARDED_BY(mu_) = false;
  size_t queued_bytes_ ABSL_GUARDED_BY(mu_) = 0;  // in queue_
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  // Workflows whose callbacks still reference this stream.
  int active_ ABSL_GUARDED_BY(mu_) = 0;
  // Accepted workflows whose result this stream still owes (bounded by
  // max_in_flight_ plus decisions in flight).
  absl::flat_hash_map<std::string, Open> open_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> handed_off_ ABSL_GUARDED_BY(mu_);
  // Agent session: set by the first message's hello (read path), cleared
  // when the stream ends.
  std::string session_id_ ABSL_GUARDED_BY(mu_);
  // Read path only.
  bool first_message_ = true;
  std::atomic<bool> session_{false};  // set once, by hello (read path)
  reflexion::v1::AgentHello hello_;
  uint64_t pause_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // Reading is held because the stream is at its in-flight limit.
  bool read_held_ ABSL_GUARDED_BY(mu_) = false;
  // Lets a timer reach this stream only while it exists.
  struct Guard {
    absl::Mutex mu;
    ResolveReactor* stream ABSL_GUARDED_BY(mu) = nullptr;
  };
  std::shared_ptr<Guard> guard_;
};

void ReflexionServiceImpl::Register(ResolveReactor* stream) {
  absl::MutexLock lock(&streams_mu_);
  streams_.insert(stream);
}

void ReflexionServiceImpl::Unregister(ResolveReactor* stream, int open,
                                      bool paused) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(stream);
  open_incidents_ -= open;
  if (paused) --paused_streams_;
}

void ReflexionServiceImpl::AddPaused(int delta) {
  absl::MutexLock lock(&streams_mu_);
  paused_streams_ += delta;
}

bool ReflexionServiceImpl::AwaitPausedStreams(int n, absl::Duration timeout) {
  absl::MutexLock lock(&streams_mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
    return paused_streams_ >= n;
  };
  return streams_mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

bool ReflexionServiceImpl::AwaitStalledCancels(int64_t n,
                                               absl::Duration timeout) {
  absl::MutexLock lock(&streams_mu_);
  auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
    return stalled_cancelled_ >= n;
  };
  return streams_mu_.AwaitWithTimeout(absl::Condition(&enough), timeout);
}

void ReflexionServiceImpl::CountStalledCancel() {
  absl::MutexLock lock(&streams_mu_);
  ++stalled_cancelled_;
}

void ReflexionServiceImpl::AddOpen(int delta) {
  absl::MutexLock lock(&streams_mu_);
  open_incidents_ += delta;
}

bool ReflexionServiceImpl::WaitForStreams(absl::Time deadline) {
  absl::MutexLock lock(&streams_mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(streams_mu_) {
    return open_incidents_ <= 0;
  };
  return streams_mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

ReflexionServiceImpl::StreamStats ReflexionServiceImpl::Streams() {
  absl::MutexLock lock(&streams_mu_);
  StreamStats stats;
  stats.stalled_cancelled = stalled_cancelled_;
  for (ResolveReactor* stream : streams_) {
    ++stats.streams;
    stats.queued_bytes += stream->queued_bytes();
    stats.paused += stream->read_paused() ? 1 : 0;
    stats.background += stream->background() ? 1 : 0;
  }
  return stats;
}

int ReflexionServiceImpl::HandOffStreams() {
  absl::MutexLock lock(&streams_mu_);
  int handed = 0;
  for (ResolveReactor* stream : streams_) handed += stream->HandOff();
  // Their results will not reach a stream.
  open_incidents_ -= handed;
  return handed;
}

ReflexionServiceImpl::ReflexionServiceImpl(
    const core::ReflexionWorkflow* workflow, WorkflowRunner* runner,
    EventHub* hub, core::KnowledgeStore* store,
    core::CheckpointStore* checkpoints, graph::TaskRunner* pool,
    const core::Clock* clock, ServiceOptions options)
    : workflow_(workflow),
      runner_(runner),
      hub_(hub),
      store_(store),
      checkpoints_(checkpoints),
      pool_(pool),
      clock_(clock),
      options_(std::move(options)),
      started_(clock->Now()) {}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
ReflexionServiceImpl::Resolve(grpc::CallbackServerContext* context) {
  absl::StatusOr<Principal> who = Admit(*context, "Resolve");
  if (!who.ok()) {
    class Refuse
        : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
     public:
      explicit Refuse(grpc::Status s) { Finish(std::move(s)); }
      void OnDone() override { delete this; }
    };
    return new Refuse(ToGrpcStatus(who.status()));
  }
  return new ResolveReactor(this, context, options_.max_in_flight_per_stream,
                            options_.stream_buffer_bytes, *std::move(who));
}

absl::StatusOr<Principal> ReflexionServiceImpl::Admit(
    const grpc::ServerContextBase& context, absl::string_view rpc) const {
  if (options_.auth == nullptr) return Principal::Anonymous();
  absl::StatusOr<Principal> who = options_.auth->Authenticate(context);
  if (!who.ok()) return who.status();
  if (absl::Status s = Authorize(*who, RequiredRole(rpc), rpc); !s.ok()) {
    return s;
  }
  return who;
}

bool ReflexionServiceImpl::RefuseCaller(grpc::CallbackServerContext* context,
                                        absl::string_view rpc,
                                        grpc::ServerUnaryReactor* reactor,
                                        Principal* who) const {
  absl::StatusOr<Principal> p = Admit(*context, rpc);
  if (!p.ok()) {
    reactor->Finish(ToGrpcStatus(p.status()));
    return true;
  }
  *who = *std::move(p);
  return false;
}

absl::Status ReflexionServiceImpl::CheckScope(
    const Principal& who, const v1::WorkflowState& state) const {
  const std::string& id = state.workflow_id();
  if (absl::Status s = AuthorizeNamespace(who, state.incident().namespace_(),
                                          "incident.namespace");
      !s.ok()) {
    return absl::PermissionDeniedError(
        absl::StrCat("workflow ", id, ": ", s.message()));
  }
  // A principal may always read back what it submitted itself outside a
  // session (its workflow is in the default cluster).
  if (who.authenticated && state.principal() == who.name &&
      !state.has_session()) {
    return absl::OkStatus();
  }
  const std::string& cluster = !state.cluster().empty() ? state.cluster()
                               : !state.session().cluster().empty()
                                   ? state.session().cluster()
                                   : options_.default_cluster;
  if (absl::Status s = AuthorizeCluster(who, cluster, "cluster"); !s.ok()) {
    return absl::PermissionDeniedError(
        absl::StrCat("workflow ", id, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status ReflexionServiceImpl::CheckWorkflowScope(
    const Principal& who, const std::string& workflow_id) const {
  if (who.clusters.empty() && who.namespaces.empty()) return absl::OkStatus();
  if (checkpoints_ == nullptr) {
    return absl::FailedPreconditionError(
        "checkpointing is disabled (workflow.checkpointing_enabled)");
  }
  absl::StatusOr<v1::WorkflowState> state =
      core::WorkflowGraph::GetState(*checkpoints_, workflow_id);
  if (!state.ok()) return state.status();
  state->set_workflow_id(workflow_id);
  return CheckScope(who, *state);
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ProcessIncident(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ProcessIncidentRequest* request,
    reflexion::v1::ProcessIncidentResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ProcessIncident", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  reflexion::v1::Incident incident = IncidentFromRequest(*request);
  absl::Status valid = PrepareIncident(&incident, "");
  if (valid.ok()) {
    valid = AuthorizeNamespace(who, incident.namespace_(), "namespace");
  }
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
  cb.on_accepted = [reactor](const std::string&, const absl::Status& s) {
    if (!s.ok()) reactor->Finish(ToGrpcStatus(s));  // it will not run
  };
  cb.on_result = [reactor, response](reflexion::v1::IncidentResult result) {
    *response->mutable_result() = std::move(result);
    reactor->Finish(grpc::Status::OK);
  };
  absl::StatusOr<std::string> id =
      runner_->Submit(std::move(incident), std::move(cb), StartedBy(who));
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

}  // namespace

absl::Status ReflexionServiceImpl::CheckWorkflowRpc(
    const std::string& workflow_id) const {
  if (checkpoints_ == nullptr) {
    return absl::FailedPreconditionError(
        "checkpointing is disabled (workflow.checkpointing_enabled)");
  }
  return CheckWorkflowId(workflow_id);
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::DiagnoseIncident(
    grpc::CallbackServerContext* context,
    const reflexion::v1::DiagnoseIncidentRequest* request,
    reflexion::v1::DiagnoseIncidentResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "DiagnoseIncident", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  // Analysis reads the store (posteriors, lessons): on the pool.
  pool_->Post([this, reactor, request, response, who = std::move(who)] {
    reflexion::v1::Incident incident = IncidentOf(*request);
    absl::Status valid = PrepareIncident(&incident, "");
    if (valid.ok()) {
      valid = AuthorizeNamespace(who, incident.namespace_(), "namespace");
    }
    if (!valid.ok()) {
      reactor->Finish(ToGrpcStatus(valid));
      return;
    }
    absl::StatusOr<reflexion::v1::DiagnoseIncidentResponse> d =
        workflow_->Diagnose(incident);
    if (!d.ok()) {
      reactor->Finish(ToGrpcStatus(d.status()));
      return;
    }
    *response = *std::move(d);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::StartWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::StartWorkflowRequest* request,
    reflexion::v1::StartWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "StartWorkflow", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (checkpoints_ == nullptr) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        "checkpointing is disabled (workflow.checkpointing_enabled): a "
        "started workflow could not be read back; use ProcessIncident"));
    return reactor;
  }
  reflexion::v1::Incident incident = IncidentOf(*request);
  absl::Status valid = PrepareIncident(&incident, "");
  if (valid.ok()) {
    valid = AuthorizeNamespace(who, incident.namespace_(), "namespace");
  }
  if (!valid.ok()) {
    reactor->Finish(ToGrpcStatus(valid));
    return reactor;
  }
  WorkflowCallbacks callbacks;
  callbacks.retain_events = true;  // followed with WatchWorkflow
  // Answered only once the workflow is durably recorded.
  callbacks.on_accepted = [reactor, response](const std::string& id,
                                              const absl::Status& s) {
    if (s.ok()) response->set_workflow_id(id);
    reactor->Finish(ToGrpcStatus(s));
  };
  absl::StatusOr<std::string> id = runner_->Submit(
      std::move(incident), std::move(callbacks), StartedBy(who));
  if (!id.ok()) reactor->Finish(ToGrpcStatus(id.status()));
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::GetWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::GetWorkflowRequest* request,
    reflexion::v1::GetWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "GetWorkflow", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  pool_->Post([this, reactor, request, response, who = std::move(who)] {
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
    if (!graph::DecodeCheckpointState(*cp, &state)) {
      reactor->Finish(grpc::Status(grpc::StatusCode::DATA_LOSS,
                                   "the workflow's state does not decode"));
      return;
    }
    state.set_workflow_id(id);
    if (absl::Status s = CheckScope(who, state); !s.ok()) {
      reactor->Finish(ToGrpcStatus(s));
      return;
    }
    response->set_workflow_id(id);
    // Stored as waiting, but still held here: its run is completing (the
    // waiting checkpoint is written before the run lets go of the id) or a
    // decision has just continued it. It is running until then, so a
    // decision made on what this answer says is never refused as "it is
    // running".
    core::WorkflowPhase phase = record->phase;
    if (phase == core::WorkflowPhase::kWaiting && runner_->IsActive(id)) {
      phase = core::WorkflowPhase::kRunning;
    }
    response->set_phase(ToProtoPhase(phase));
    if (!core::IsTerminal(phase)) {
      response->set_current_node(cp->next_node);
    }
    response->set_steps(cp->step);
    response->set_attempt(state.attempt());
    response->set_max_attempts(state.max_attempts());
    *response->mutable_incident() = state.incident();
    response->set_signature(state.analysis().signature());
    *response->mutable_updated_at() = core::ToProto(cp->time);
    if (phase == core::WorkflowPhase::kWaiting) {
      core::WorkflowRunResult run{graph::Interrupt(state.escalation().reason()),
                                  state,
                                  cp->last_sequence,
                                  static_cast<int>(cp->step),
                                  cp->node,
                                  cp->step};
      *response->mutable_result() = core::MakeIncidentResult(run, cp->time);
      response->set_etag(core::WaitEtag(cp->step));
    }
    if (core::IsTerminal(phase)) {
      absl::Status status =
          phase == core::WorkflowPhase::kCompleted ? absl::OkStatus()
          : phase == core::WorkflowPhase::kCancelled
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
  // `check` (may be null) runs on the pool first: a non-OK status (the
  // caller's scope) finishes the stream with it.
  WatchReactor(EventHub* hub, graph::TaskRunner* pool, std::string id,
               uint64_t from, std::function<absl::Status()> check = nullptr)
      : hub_(hub), id_(std::move(id)) {
    pool->Post([this, from, check = std::move(check)] {
      if (check) {
        if (absl::Status s = check(); !s.ok()) {
          Refuse(s);
          return;
        }
      }
      Subscribe(from);
    });
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

  // Instead of Subscribe: finishes with `s`.
  void Refuse(const absl::Status& s) {
    bool finish = false;
    {
      absl::MutexLock lock(&mu_);
      if (!finished_) finished_ = finish = true;
    }
    if (finish) Finish(ToGrpcStatus(s));
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
  absl::StatusOr<Principal> who = Admit(*context, "WatchWorkflow");
  absl::Status s = who.status();
  if (s.ok()) s = CheckWorkflowId(request->workflow_id());
  if (std::string e = wire::DecodeError(*request); s.ok() && !e.empty()) {
    s = absl::InvalidArgumentError(e);
  }
  if (!s.ok()) {
    class Refuse : public grpc::ServerWriteReactor<v1::WatchWorkflowResponse> {
     public:
      explicit Refuse(grpc::Status s) { Finish(std::move(s)); }
      void OnDone() override { delete this; }
    };
    return new Refuse(ToGrpcStatus(s));
  }
  std::function<absl::Status()> check;
  if (!who->clusters.empty() || !who->namespaces.empty()) {
    check = [this, who = *std::move(who), id = request->workflow_id()] {
      return CheckWorkflowScope(who, id);
    };
  }
  return new WatchReactor(hub_, pool_, request->workflow_id(),
                          request->from_sequence(), std::move(check));
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ResumeWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ResumeWorkflowRequest* request,
    reflexion::v1::ResumeWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ResumeWorkflow", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  pool_->Post([this, reactor, request, who = std::move(who)] {
    if (absl::Status s = CheckWorkflowScope(who, request->workflow_id());
        !s.ok()) {
      reactor->Finish(ToGrpcStatus(s));
      return;
    }
    // Who decided is the caller, whatever the client wrote.
    v1::HumanDecision decision = request->decision();
    decision.set_decided_by(who.name);
    // A workflow of an agent session continues with that cluster's
    // sessions (its action request, events and result go there).
    WorkflowCallbacks cb;
    if (options_.sessions != nullptr) {
      if (auto c =
              options_.sessions->CallbacksIfWaiting(request->workflow_id())) {
        cb = *std::move(c);
      }
    }
    reactor->Finish(ToGrpcStatus(runner_->Decide(
        request->workflow_id(), request->etag(), decision, std::move(cb))));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::CancelWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::CancelWorkflowRequest* request,
    reflexion::v1::CancelWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "CancelWorkflow", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  const bool scoped = !who.clusters.empty() || !who.namespaces.empty();
  pool_->Post([this, reactor, request, who = std::move(who), scoped] {
    const std::string& id = request->workflow_id();
    if (scoped) {
      // Checked on the pool (it reads the workflow's state).
      if (absl::Status s = CheckWorkflowScope(who, id); !s.ok()) {
        reactor->Finish(ToGrpcStatus(s));
        return;
      }
    }
    if (runner_->Cancel(id)) {
      AuditOperation(v1::AuditEntry::KIND_CANCEL, who, id, "cancelled",
                     "cancelled while running");
      reactor->Finish(grpc::Status::OK);
      return;
    }
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
    absl::Status set = checkpoints_->SetPhase(
        id, core::WorkflowPhase::kCancelled, clock_->Now(), true);
    if (set.ok()) {
      AuditOperation(v1::AuditEntry::KIND_CANCEL, who, id, "cancelled",
                     absl::StrCat("cancelled while ",
                                  core::WorkflowPhaseName(record->phase)));
    }
    reactor->Finish(ToGrpcStatus(set));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ForkWorkflow(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ForkWorkflowRequest* request,
    reflexion::v1::ForkWorkflowResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ForkWorkflow", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  pool_->Post([this, reactor, request, response, who = std::move(who)] {
    if (absl::Status s = CheckWorkflowScope(who, request->workflow_id());
        !s.ok()) {
      reactor->Finish(ToGrpcStatus(s));
      return;
    }
    // A fork naming a strategy is that principal's approval of it.
    absl::StatusOr<std::string> id = runner_->Fork(
        request->workflow_id(), request->step(), request->strategy(), {},
        request->strategy().empty() ? std::string() : who.name);
    if (!id.ok()) {
      reactor->Finish(ToGrpcStatus(id.status()));
      return;
    }
    response->set_workflow_id(*id);
    response->set_parent_workflow_id(request->workflow_id());
    response->set_parent_step(request->step());
    AuditOperation(
        v1::AuditEntry::KIND_FORK, who, request->workflow_id(), "forked",
        absl::StrCat(
            "forked at step ", request->step(), " as ", *id,
            request->strategy().empty()
                ? std::string()
                : absl::StrCat(", approving strategy ", request->strategy())));
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ListCheckpoints(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ListCheckpointsRequest* request,
    reflexion::v1::ListCheckpointsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ListCheckpoints", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (absl::Status s = CheckWorkflowRpc(request->workflow_id()); !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  if (request->limit() < 0 || request->limit() > 10000) {
    reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                 "limit: must be between 0 and 10000"));
    return reactor;
  }
  pool_->Post([this, reactor, request, response, who = std::move(who)] {
    const std::string& id = request->workflow_id();
    absl::StatusOr<core::WorkflowRecord> record = checkpoints_->GetWorkflow(id);
    if (!record.ok()) {
      reactor->Finish(ToGrpcStatus(record.status()));
      return;
    }
    if (absl::Status s = CheckWorkflowScope(who, id); !s.ok()) {
      reactor->Finish(ToGrpcStatus(s));
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
          !graph::DecodeCheckpointState(cp, info->mutable_state())) {
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
  Principal who;
  if (RefuseCaller(context, "ListStrategies", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
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
  Principal who;
  if (RefuseCaller(context, "ListEpisodes", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  // Episodes carry their incident's data: a principal limited to some
  // namespaces lists one of them at a time.
  if (!who.namespaces.empty()) {
    if (absl::Status s =
            AuthorizeNamespace(who, request->namespace_(), "namespace");
        !s.ok() || request->namespace_().empty()) {
      reactor->Finish(ToGrpcStatus(
          s.ok() ? absl::PermissionDeniedError(absl::StrCat(
                       "namespace: principal ", who.name,
                       " is limited to namespaces; set the namespace filter"))
                 : s));
      return reactor;
    }
  }
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
  Principal who;
  if (RefuseCaller(context, "GetMetrics", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  pool_->Post([this, reactor, response] {
    absl::StatusOr<reflexion::v1::GetMetricsResponse> m =
        core::ComputeLearningMetrics(*store_);
    if (!m.ok()) {
      reactor->Finish(ToGrpcStatus(m.status()));
      return;
    }
    *response = *std::move(m);
    RunnerCounters c = runner_->Counters();
    response->set_workflows_in_flight(c.in_flight);
    if (checkpoints_ != nullptr) {
      // Workflows from their stored records: they survive a restart.
      if (absl::Status s = core::AddWorkflowMetrics(*checkpoints_, *response);
          !s.ok()) {
        reactor->Finish(ToGrpcStatus(s));
        return;
      }
    } else {
      // Checkpointing off: nothing is stored but the process counters.
      response->set_workflows_started(c.started);
      response->set_workflows_resolved(c.resolved);
      response->set_workflows_escalated(c.escalated);
      response->set_workflows_failed(c.failed);
    }
    response->set_uptime_s(absl::ToDoubleSeconds(clock_->Now() - started_));
    response->set_executor(options_.executor_name);
    response->set_reflector(options_.reflector_name);
    // Storage health (see App: read-only on a full disk, loss at start).
    response->set_storage_read_only(options_.storage_writable &&
                                    !options_.storage_writable().ok());
    response->set_storage_recovered_with_loss(
        options_.storage_recovered_with_loss);
    response->set_storage_lost_sequences(options_.storage_lost_sequences);
    if (options_.upstreams) {
      for (const upstream::UpstreamStats& u : options_.upstreams()) {
        reflexion::v1::UpstreamMetrics* m = response->add_upstreams();
        m->set_upstream(u.upstream);
        m->set_breaker(upstream::StateName(u.state));
        m->set_consecutive_failures(u.consecutive_failures);
        m->set_requests(u.requests);
        m->set_failures(u.failures);
        m->set_rejected(u.rejected);
        m->set_opened(u.opened);
        m->set_in_flight(u.in_flight);
      }
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::SimulateReflection(
    grpc::CallbackServerContext* context,
    const reflexion::v1::SimulateReflectionRequest* request,
    reflexion::v1::SimulateReflectionResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "SimulateReflection", reactor, &who)) {
    return reactor;
  }
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (options_.reflector == nullptr) {
    reactor->Finish(ToGrpcStatus(absl::FailedPreconditionError(
        "this server has no reflector configured")));
    return reactor;
  }
  absl::StatusOr<core::ReflectionRequest> r =
      core::SyntheticReflectionRequest(*request, options_.depth);
  if (!r.ok()) {
    reactor->Finish(ToGrpcStatus(r.status()));
    return reactor;
  }
  // The reflector answers on its own thread (an HTTP client's) or inline.
  core::ReflectOrFallBack(
      options_.reflector, *r,
      [reactor, response](reflexion::v1::Reflection reflection) {
        *response->mutable_reflection() = std::move(reflection);
        reactor->Finish(grpc::Status::OK);
      });
  return reactor;
}

namespace {

// Validates a ListAudit request into the log's filter, or says which field
// is wrong.
absl::StatusOr<core::AuditFilter> AuditFilterFrom(
    const reflexion::v1::ListAuditRequest& request) {
  auto bad = [](absl::string_view message) {
    return absl::InvalidArgumentError(message);
  };
  if (request.page_size() < 0 || request.page_size() > 1000) {
    return bad("page_size: must be between 0 and 1000");
  }
  if (!reflexion::v1::AuditEntry::Kind_IsValid(request.kind())) {
    return bad(absl::StrCat("kind: unknown AuditEntry.Kind ", request.kind()));
  }
  const std::pair<const std::string*, absl::string_view> strings[] = {
      {&request.cluster(), "cluster"},
      {&request.namespace_(), "namespace"},
      {&request.workflow_id(), "workflow_id"},
      {&request.principal(), "principal"}};
  for (const auto& [value, name] : strings) {
    if (value->size() > core::kMaxAuditFieldBytes) {
      return bad(absl::StrCat(name, ": at most ", core::kMaxAuditFieldBytes,
                              " bytes"));
    }
  }
  // google.protobuf.Timestamp's range: years 1 to 9999.
  auto valid = [](const google::protobuf::Timestamp& t) {
    return t.seconds() >= -62'135'596'800 && t.seconds() <= 253'402'300'799 &&
           t.nanos() >= 0 && t.nanos() <= 999'999'999;
  };
  if (request.has_since() && !valid(request.since())) {
    return bad("since: not a valid timestamp");
  }
  if (request.has_until() && !valid(request.until())) {
    return bad("until: not a valid timestamp");
  }
  core::AuditFilter f;
  if (request.has_since()) f.since = core::FromProto(request.since());
  if (request.has_until()) f.until = core::FromProto(request.until());
  if (f.since.has_value() && f.until.has_value() && *f.since > *f.until) {
    return bad("since: must not be after until");
  }
  f.after = request.after();
  f.page_size = core::ClampAuditPageSize(request.page_size());
  f.cluster = request.cluster();
  f.namespace_ = request.namespace_();
  f.workflow_id = request.workflow_id();
  f.principal = request.principal();
  f.kind = request.kind();
  return f;
}

}  // namespace

grpc::ServerUnaryReactor* ReflexionServiceImpl::ListAudit(
    grpc::CallbackServerContext* context,
    const reflexion::v1::ListAuditRequest* request,
    reflexion::v1::ListAuditResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ListAudit", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  // Entries name pods, actions and people: a principal limited to some
  // clusters or namespaces lists one of them at a time.
  if (!who.namespaces.empty() || !who.clusters.empty()) {
    absl::Status s = absl::OkStatus();
    if (!who.namespaces.empty()) {
      s = request->namespace_().empty()
              ? absl::PermissionDeniedError(absl::StrCat(
                    "namespace: principal ", who.name,
                    " is limited to namespaces; set the namespace filter"))
              : AuthorizeNamespace(who, request->namespace_(), "namespace");
    }
    if (s.ok() && !who.clusters.empty()) {
      s = request->cluster().empty()
              ? absl::PermissionDeniedError(absl::StrCat(
                    "cluster: principal ", who.name,
                    " is limited to clusters; set the cluster filter"))
              : AuthorizeCluster(who, request->cluster(), "cluster");
    }
    if (!s.ok()) {
      reactor->Finish(ToGrpcStatus(s));
      return reactor;
    }
  }
  if (options_.audit_log == nullptr) {
    reactor->Finish(ToGrpcStatus(absl::FailedPreconditionError(
        "this server has no audit log configured")));
    return reactor;
  }
  absl::StatusOr<core::AuditFilter> filter = AuditFilterFrom(*request);
  if (!filter.ok()) {
    reactor->Finish(ToGrpcStatus(filter.status()));
    return reactor;
  }
  // A storage read: on the pool, never in the reaction.
  pool_->Post([this, reactor, response, f = *std::move(filter)] {
    absl::StatusOr<core::AuditPage> page = options_.audit_log->List(f);
    if (!page.ok()) {
      reactor->Finish(ToGrpcStatus(page.status()));
      return;
    }
    for (auto& e : page->entries) *response->add_entries() = std::move(e);
    response->set_next_after(page->next_after);
    *response->mutable_anchor() = std::move(page->anchor);
    response->set_last_seq(page->last_seq);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace reflexion::server

#include "server/agent_sessions.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/graph/graph.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/validation.h"
#include "core/reflexion/workflow.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "server/wire.h"

namespace reflexion::server {
namespace v1 = reflexion::v1;
namespace {

constexpr size_t kMaxAgentMessage = 4096;
constexpr int kMaxChanges = 32;
constexpr int kMaxSignals = 16;

bool IdChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

absl::Status Bad(absl::string_view field, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", why));
}

// After AnswerAgent failed: the workflow no longer waits for that answer
// (answered, cancelled, ended or unknown), so the request is dropped; any
// other error (storage, shutdown) keeps it for a later answer or start.
bool NoLongerWaiting(const absl::Status& s) {
  return absl::IsAborted(s) || absl::IsFailedPrecondition(s) ||
         absl::IsNotFound(s);
}

absl::Status CheckIds(absl::string_view prefix, const std::string& workflow_id,
                      const std::string& action_id, bool need_action) {
  if (workflow_id.empty() || workflow_id.size() > 128) {
    return Bad(absl::StrCat(prefix, "workflow_id"),
               "is required (1 to 128 bytes): the request's workflow_id");
  }
  if (need_action && (action_id.empty() || action_id.size() > 256)) {
    return Bad(absl::StrCat(prefix, "action_id"),
               "is required (1 to 256 bytes): the request's action_id");
  }
  return absl::OkStatus();
}

}  // namespace

AgentSessions::AgentSessions(WorkflowRunner* runner, graph::TaskRunner* pool,
                             graph::Timer* timer, const core::Clock* clock,
                             AgentSessionsOptions options)
    : runner_(runner),
      pool_(pool),
      timer_(timer),
      clock_(clock),
      options_(std::move(options)) {}

AgentSessions::~AgentSessions() { Shutdown(); }

void AgentSessions::Shutdown() {
  {
    // After this no deadline touches the registry or the pool.
    absl::MutexLock a(&alive_->mu);
    alive_->alive = false;
  }
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  // Deadlines must not fire into a registry that is gone; they are re-armed
  // from the checkpoints at the next start.
  for (auto& [id, p] : pending_) {
    if (p.timer != 0) timer_->Cancel(p.timer);
    p.timer = 0;
  }
  // Ops queued behind a running one are dropped; the running one ends.
  for (auto& [id, q] : ops_) {
    while (q.size() > 1) q.pop_back();
  }
  auto idle = [this]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ops_.empty(); };
  mu_.Await(absl::Condition(&idle));
}

absl::Status AgentSessions::ValidateHello(const v1::AgentHello& hello) {
  if (hello.cluster().empty()) {
    return Bad("hello.cluster", "is required (a DNS-1123 label)");
  }
  if (hello.cluster().size() > core::kMaxNamespace ||
      !core::IsDns1123Label(hello.cluster())) {
    return Bad("hello.cluster",
               "must be a DNS-1123 label: at most 63 lowercase alphanumerics "
               "or '-', starting and ending alphanumeric");
  }
  if (hello.agent_id().empty() || hello.agent_id().size() > 128 ||
      !std::all_of(hello.agent_id().begin(), hello.agent_id().end(), IdChar)) {
    return Bad("hello.agent_id",
               "is required: 1 to 128 characters of [A-Za-z0-9._-]");
  }
  if (hello.agent_version().size() > 64) {
    return Bad("hello.agent_version", "at most 64 bytes");
  }
  const v1::AgentCapabilities& c = hello.capabilities();
  if (c.executes_actions() && !c.observes_pods()) {
    return Bad("hello.capabilities.observes_pods",
               "an agent that executes actions must also observe pods: the "
               "service judges every fix from the agent's status reports");
  }
  if (c.action_types_size() > 64) {
    return Bad("hello.capabilities.action_types", "at most 64 entries");
  }
  for (int i = 0; i < c.action_types_size(); ++i) {
    if (c.action_types(i) == v1::ACTION_TYPE_UNSPECIFIED ||
        !v1::ActionType_IsValid(c.action_types(i))) {
      return Bad(absl::StrCat("hello.capabilities.action_types[", i, "]"),
                 "is not a catalog action type");
    }
  }
  return absl::OkStatus();
}

std::string AgentSessions::Open(AgentStream* stream,
                                const v1::AgentHello& hello) {
  absl::MutexLock lock(&mu_);
  std::string id = absl::StrCat(hello.cluster(), "/", hello.agent_id(), "#",
                                ++next_session_);
  Session& s = sessions_[id];
  s.id = id;
  s.cluster = hello.cluster();
  s.stream = stream;
  by_cluster_[s.cluster].push_back(id);
  ++stats_.sessions;
  std::vector<std::string> mine;
  for (auto& [wf, p] : pending_) {
    if (p.cluster == s.cluster && p.assigned.empty()) mine.push_back(wf);
  }
  std::sort(mine.begin(), mine.end());  // oldest workflow ids first
  v1::ResolveResponse welcome;
  v1::AgentWelcome& w = *welcome.mutable_welcome();
  w.set_session_id(id);
  w.set_cluster(s.cluster);
  w.set_pending_requests(static_cast<int>(mine.size()));
  *w.mutable_action_timeout() = core::ToProto(options_.action_timeout);
  *w.mutable_report_interval() = core::ToProto(options_.report_interval);
  SendLocked(&s, welcome);
  for (const std::string& wf : mine) {
    Pending& p = pending_[wf];
    p.assigned = id;
    ++s.assigned;
    --stats_.unassigned;
    SendLocked(&s, p.message);
  }
  auto out = undelivered_.find(s.cluster);
  if (out != undelivered_.end()) {
    for (v1::IncidentResult& r : out->second) {
      v1::ResolveResponse m;
      *m.mutable_result() = std::move(r);
      SendLocked(&s, m);
      --stats_.undelivered;
    }
    undelivered_.erase(out);
  }
  LOG(INFO) << "agent session " << id << " opened (version "
            << core::ToValidUtf8Clipped(hello.agent_version(), 64) << ", "
            << mine.size() << " pending request(s) re-sent)";
  return id;
}

void AgentSessions::Close(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  const std::string cluster = it->second.cluster;
  sessions_.erase(it);
  --stats_.sessions;
  auto& ids = by_cluster_[cluster];
  ids.erase(std::remove(ids.begin(), ids.end(), session_id), ids.end());
  if (ids.empty()) by_cluster_.erase(cluster);
  int moved = 0, waiting = 0;
  for (auto& [wf, p] : pending_) {
    if (p.assigned != session_id) continue;
    p.assigned.clear();
    ++stats_.unassigned;
    AssignLocked(wf, p);
    (p.assigned.empty() ? waiting : moved) += 1;
  }
  for (auto& [wf, r] : routes_) {
    if (r.session == session_id) r.session.clear();
  }
  LOG(INFO) << "agent session " << session_id << " closed: " << moved
            << " request(s) moved to another session, " << waiting
            << " wait for the cluster";
}

AgentSessions::Session* AgentSessions::PickLocked(const std::string& cluster) {
  auto it = by_cluster_.find(cluster);
  if (it == by_cluster_.end()) return nullptr;
  Session* best = nullptr;
  for (const std::string& id : it->second) {
    Session& s = sessions_[id];
    if (best == nullptr || s.assigned < best->assigned) best = &s;
  }
  return best;
}

void AgentSessions::AssignLocked(const std::string& workflow_id, Pending& p) {
  if (!p.assigned.empty()) return;
  Session* s = PickLocked(p.cluster);
  if (s == nullptr) return;
  p.assigned = s->id;
  ++s->assigned;
  --stats_.unassigned;
  SendLocked(s, p.message);
}

void AgentSessions::UnassignLocked(Pending& p) {
  if (p.assigned.empty()) {
    --stats_.unassigned;
    return;
  }
  auto it = sessions_.find(p.assigned);
  if (it != sessions_.end()) --it->second.assigned;
  p.assigned.clear();
}

void AgentSessions::ErasePendingLocked(const std::string& workflow_id) {
  auto it = pending_.find(workflow_id);
  if (it == pending_.end()) return;
  UnassignLocked(it->second);
  if (it->second.timer != 0) timer_->Cancel(it->second.timer);
  pending_.erase(it);
  --stats_.pending;
}

void AgentSessions::SendLocked(Session* s, const v1::ResolveResponse& m) {
  if (s != nullptr && s->stream != nullptr) s->stream->SendToAgent(m);
}

AgentSessions::Session* AgentSessions::RouteLocked(
    const std::string& workflow_id, const std::string& cluster) {
  Route& r = routes_[workflow_id];
  if (r.cluster.empty()) r.cluster = cluster;
  if (!r.session.empty()) {
    auto it = sessions_.find(r.session);
    if (it != sessions_.end()) return &it->second;
    r.session.clear();
  }
  // The session it came from, else the one holding its request, else any.
  for (const std::string* id : {&r.origin}) {
    auto it = sessions_.find(*id);
    if (it != sessions_.end()) {
      r.session = *id;
      return &it->second;
    }
  }
  if (auto p = pending_.find(workflow_id);
      p != pending_.end() && !p->second.assigned.empty()) {
    r.session = p->second.assigned;
    return &sessions_[r.session];
  }
  Session* s = PickLocked(cluster);
  if (s != nullptr) r.session = s->id;
  return s;
}

WorkflowCallbacks AgentSessions::Callbacks(const std::string& cluster,
                                           const std::string& session_id,
                                           const std::string& request_id) {
  WorkflowCallbacks cb;
  // The workflow outlives any one stream: keep its events for
  // WatchWorkflow as well.
  cb.retain_events = true;
  cb.on_accepted = [this, cluster, session_id, request_id](
                       const std::string& workflow_id, const absl::Status& s) {
    absl::MutexLock lock(&mu_);
    auto sit = sessions_.find(session_id);
    if (s.ok()) {
      Route& route = routes_[workflow_id];
      route.cluster = cluster;
      route.origin = session_id;
      route.request_id = request_id;
      if (sit != sessions_.end()) ++sit->second.open;
    }
    if (sit != sessions_.end()) {
      SendLocked(&sit->second, AcknowledgeIncident(request_id, workflow_id, s));
    }
  };
  cb.on_event = [this, cluster](v1::WorkflowEvent ev) {
    v1::ResolveResponse r;
    absl::MutexLock lock(&mu_);
    // Running again after an approval: that wait is over.
    if (auto p = pending_.find(ev.workflow_id());
        p != pending_.end() && p->second.kind == Kind::kApproval) {
      ErasePendingLocked(ev.workflow_id());
    }
    Session* s = RouteLocked(ev.workflow_id(), cluster);
    *r.mutable_event() = std::move(ev);
    SendLocked(s, r);
  };
  cb.on_result = [this, cluster](v1::IncidentResult result) {
    const std::string id = result.workflow_id();
    const bool waiting = result.status() == v1::WORKFLOW_STATUS_WAITING;
    absl::MutexLock lock(&mu_);
    Session* s = RouteLocked(id, cluster);
    if (!waiting) {
      auto route = routes_.find(id);
      if (route != routes_.end()) {
        auto origin = sessions_.find(route->second.origin);
        if (origin != sessions_.end()) --origin->second.open;
        routes_.erase(route);
      }
    }
    if (s != nullptr) {
      v1::ResolveResponse r;
      *r.mutable_result() = std::move(result);
      SendLocked(s, r);
      return;
    }
    if (waiting) return;  // re-sent as an approval request on reconnect
    auto& box = undelivered_[cluster];
    box.push_back(std::move(result));
    ++stats_.undelivered;
    if (box.size() > options_.max_undelivered_per_cluster) {
      LOG(WARNING) << "cluster " << cluster << ": more than "
                   << options_.max_undelivered_per_cluster
                   << " results wait for a session; dropping the oldest ("
                   << box.front().workflow_id() << ", still in GetWorkflow)";
      box.pop_front();
      --stats_.undelivered;
      ++stats_.dropped_results;
    }
  };
  return cb;
}

std::optional<WorkflowCallbacks> AgentSessions::CallbacksIfWaiting(
    const std::string& workflow_id) {
  std::string cluster, request_id;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(workflow_id);
    if (it == pending_.end()) return std::nullopt;
    cluster = it->second.cluster;
    request_id = it->second.request_id;
  }
  return Callbacks(cluster, "", request_id);
}

void AgentSessions::OnWait(const v1::WorkflowState& state, uint64_t step) {
  if (!state.has_session()) return;
  const v1::AgentWait& w = state.agent_wait();
  Pending p;
  p.cluster = state.session().cluster();
  p.request_id = state.incident().request_id();
  p.wait_step = step;
  if (w.has_action()) {
    p.kind = Kind::kAction;
    p.action_id = w.action().action_id();
    *p.message.mutable_action_request() = w.action();
  } else if (w.has_observation()) {
    p.kind = Kind::kObservation;
    p.action_id = w.observation().action_id();
    *p.message.mutable_observation_request() = w.observation();
  } else if (w.has_approval()) {
    p.kind = Kind::kApproval;
    *p.message.mutable_approval_request() = w.approval();
    p.message.mutable_approval_request()->set_etag(core::WaitEtag(step));
  } else {
    return;
  }
  const std::string id = state.workflow_id();
  absl::MutexLock lock(&mu_);
  ErasePendingLocked(id);
  if (p.kind != Kind::kApproval && !stopping_) {
    const absl::Duration due = std::max(
        absl::ZeroDuration(), core::FromProto(w.deadline()) - clock_->Now());
    const std::string action_id = p.action_id;
    p.timer = timer_->After(due, [this, alive = alive_, id, action_id] {
      absl::MutexLock a(&alive->mu);
      if (!alive->alive) return;
      pool_->Post([this, id, action_id] { Expire(id, action_id); });
    });
  }
  Pending& stored = pending_[id] = std::move(p);
  ++stats_.pending;
  ++stats_.unassigned;
  AssignLocked(id, stored);
}

void AgentSessions::Serialize(const std::string& workflow_id,
                              std::function<void()> op) {
  bool start;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    auto& q = ops_[workflow_id];
    start = q.empty();
    q.push_back(std::move(op));
  }
  if (start) {
    pool_->Post([this, workflow_id] { RunOps(workflow_id); });
  }
}

void AgentSessions::RunOps(const std::string& workflow_id) {
  for (;;) {
    std::function<void()> op;
    {
      absl::MutexLock lock(&mu_);
      op = ops_[workflow_id].front();
    }
    op();
    absl::MutexLock lock(&mu_);
    auto& q = ops_[workflow_id];
    q.pop_front();
    if (q.empty()) {
      ops_.erase(workflow_id);
      return;
    }
  }
}

absl::Status AgentSessions::OnActionResult(const std::string& session_id,
                                           v1::ActionResult result) {
  REFLEXION_RETURN_IF_ERROR(CheckIds("action_result.", result.workflow_id(),
                                     result.action_id(), true));
  if (result.outcome() == v1::ActionResult::OUTCOME_UNSPECIFIED ||
      !v1::ActionResult::Outcome_IsValid(result.outcome())) {
    return Bad("action_result.outcome",
               "is required: APPLIED, DRY_RUN, REFUSED or FAILED");
  }
  if (result.message().size() > kMaxAgentMessage) {
    return Bad("action_result.message", "at most 4096 bytes");
  }
  if (result.changes_size() > kMaxChanges) {
    return Bad("action_result.changes", "at most 32 entries");
  }
  for (int i = 0; i < result.changes_size(); ++i) {
    const v1::ValueChange& c = result.changes(i);
    if (c.path().size() > 512 || c.before().size() > 1024 ||
        c.after().size() > 1024) {
      return Bad(absl::StrCat("action_result.changes[", i, "]"),
                 "path at most 512 bytes, before and after at most 1024");
    }
  }
  const std::string id = result.workflow_id();
  const std::string action_id = result.action_id();
  {
    absl::MutexLock lock(&mu_);
    auto sit = sessions_.find(session_id);
    auto it = pending_.find(id);
    if (sit == sessions_.end() || it == pending_.end() ||
        it->second.kind != Kind::kAction || it->second.action_id != action_id ||
        it->second.answering || it->second.cluster != sit->second.cluster) {
      ++stats_.duplicates;
      LOG(INFO) << "ignored action result for " << core::ClipUtf8(id, 128)
                << " action " << core::ClipUtf8(action_id, 256) << " from "
                << session_id
                << ": no such pending request (a duplicate, a late answer "
                   "or another cluster's)";
      return absl::OkStatus();
    }
    it->second.answering = true;
  }
  Serialize(id, [this, id, action_id, result = std::move(result)]() mutable {
    Deliver(id, action_id, std::move(result));
  });
  return absl::OkStatus();
}

void AgentSessions::Deliver(const std::string& id, const std::string& action_id,
                            v1::ActionResult result) {
  uint64_t step;
  std::string cluster, request_id;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(id);
    if (it == pending_.end() || it->second.action_id != action_id) return;
    step = it->second.wait_step;
    cluster = it->second.cluster;
    request_id = it->second.request_id;
  }
  absl::StatusOr<uint64_t> s = runner_->AnswerAgent(
      id, step,
      [&result](v1::AgentWait& w) {
        if (w.has_result() || w.expired()) return;
        *w.mutable_result() = result;
      },
      /*resume=*/true, Callbacks(cluster, "", request_id));
  absl::MutexLock lock(&mu_);
  // The continuation may already wait on its next request: erase only the
  // one answered.
  auto same = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto it = pending_.find(id);
    return it != pending_.end() && it->second.kind == Kind::kAction &&
           it->second.action_id == action_id;
  };
  if (s.ok() || NoLongerWaiting(s.status())) {
    if (s.ok()) {
      ++stats_.answers;
    } else {
      LOG(WARNING) << "action result for " << id
                   << " not applied: " << s.status();
    }
    if (same()) ErasePendingLocked(id);
    return;
  }
  // Storage or shutdown: keep the request; a re-sent result is accepted.
  LOG(WARNING) << "action result for " << id
               << " not applied yet: " << s.status();
  if (auto it = pending_.find(id); it != pending_.end()) {
    it->second.answering = false;
  }
}

void AgentSessions::Expire(const std::string& id,
                           const std::string& action_id) {
  Serialize(id, [this, id, action_id] {
    uint64_t step;
    std::string cluster, request_id;
    Kind kind;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(id);
      if (it == pending_.end() || it->second.action_id != action_id) return;
      it->second.timer = 0;
      step = it->second.wait_step;
      cluster = it->second.cluster;
      request_id = it->second.request_id;
      kind = it->second.kind;
    }
    absl::StatusOr<uint64_t> s = runner_->AnswerAgent(
        id, step,
        [](v1::AgentWait& w) {
          if (!w.has_result()) w.set_expired(true);
        },
        /*resume=*/true, Callbacks(cluster, "", request_id));
    absl::MutexLock lock(&mu_);
    if (s.ok() && kind == Kind::kAction) {
      ++stats_.timeouts;
      LOG(WARNING) << "workflow " << id << ": no agent of cluster " << cluster
                   << " answered action " << action_id << " in time";
    } else if (!s.ok()) {
      LOG(WARNING) << "deadline of " << id << " not applied: " << s.status();
      if (!NoLongerWaiting(s.status())) {
        return;  // storage or shutdown: re-armed at the next start
      }
    }
    auto it = pending_.find(id);
    if (it != pending_.end() && it->second.kind == kind &&
        it->second.action_id == action_id) {
      ErasePendingLocked(id);
    }
  });
}

absl::Status AgentSessions::OnPodStatus(const std::string& session_id,
                                        v1::PodStatusReport report) {
  REFLEXION_RETURN_IF_ERROR(
      CheckIds("pod_status.", report.workflow_id(), report.action_id(), true));
  if (report.pod_name().size() > core::kMaxPodName) {
    return Bad("pod_status.pod_name", "at most 253 bytes");
  }
  if (report.failure_reason().size() > 128) {
    return Bad("pod_status.failure_reason", "at most 128 bytes");
  }
  if (report.signals_size() > kMaxSignals) {
    return Bad("pod_status.signals", "at most 16 entries");
  }
  for (int i = 0; i < report.signals_size(); ++i) {
    if (report.signals(i).size() > 512) {
      return Bad(absl::StrCat("pod_status.signals[", i, "]"),
                 "at most 512 bytes");
    }
  }
  if (report.restarts() < 0) {
    return Bad("pod_status.restarts", "must not be negative");
  }
  const std::string id = report.workflow_id();
  {
    absl::MutexLock lock(&mu_);
    auto sit = sessions_.find(session_id);
    auto it = pending_.find(id);
    if (sit == sessions_.end() || it == pending_.end() ||
        it->second.kind != Kind::kObservation ||
        it->second.action_id != report.action_id() ||
        it->second.cluster != sit->second.cluster) {
      return absl::OkStatus();  // a late report: the window is over
    }
    // At most one stored report per quarter interval unless health changed:
    // an agent that floods cannot turn reports into a write storm.
    const absl::Time now = clock_->Now();
    if (now - it->second.last_report < options_.report_interval / 4 &&
        it->second.last_healthy == report.healthy()) {
      return absl::OkStatus();
    }
    it->second.last_report = now;
    it->second.last_healthy = report.healthy();
  }
  Serialize(id, [this, id, report = std::move(report)]() mutable {
    ApplyReport(id, std::move(report));
  });
  return absl::OkStatus();
}

void AgentSessions::ApplyReport(const std::string& id,
                                v1::PodStatusReport report) {
  uint64_t step;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(id);
    if (it == pending_.end() || it->second.kind != Kind::kObservation ||
        it->second.action_id != report.action_id()) {
      return;
    }
    step = it->second.wait_step;
  }
  const absl::Time now = clock_->Now();
  absl::StatusOr<uint64_t> s = runner_->AnswerAgent(
      id, step,
      [&](v1::AgentWait& w) {
        if (w.expired() || now > core::FromProto(w.deadline())) return;
        w.set_reports(w.reports() + 1);
        if (w.reports() == 1) w.set_first_restarts(report.restarts());
        w.set_restarts(std::max(w.restarts(), report.restarts()));
        if (report.healthy()) {
          if (!w.has_first_healthy_at()) {
            *w.mutable_first_healthy_at() = core::ToProto(now);
          }
          w.set_healthy_now(true);
          w.clear_failure_reason();
        } else {
          if (w.has_first_healthy_at()) w.set_regressed(true);
          w.set_healthy_now(false);
          w.set_failure_reason(report.failure_reason());
        }
        for (const std::string& sig : report.signals()) {
          if (std::find(w.signals().begin(), w.signals().end(), sig) !=
              w.signals().end()) {
            continue;
          }
          w.add_signals(sig);
          if (w.signals_size() > kMaxSignals) {
            w.mutable_signals()->erase(w.mutable_signals()->begin());
          }
        }
      },
      /*resume=*/false);
  absl::MutexLock lock(&mu_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  if (s.ok()) {
    it->second.wait_step = *s;
    ++stats_.reports;
  } else {
    LOG(WARNING) << "status report for " << id << " not stored: " << s.status();
  }
}

absl::Status AgentSessions::Recover(core::CheckpointStore* checkpoints) {
  absl::StatusOr<std::vector<core::WorkflowRecord>> waiting =
      checkpoints->ListByPhase(core::WorkflowPhase::kWaiting);
  if (!waiting.ok()) return waiting.status();
  int n = 0;
  for (const core::WorkflowRecord& r : *waiting) {
    absl::StatusOr<core::Checkpoint> cp = checkpoints->Latest(r.workflow_id);
    if (!cp.ok()) continue;
    v1::WorkflowState state;
    if (!graph::DecodeCheckpointState(*cp, &state)) continue;
    if (!state.has_session() || !state.has_agent_wait()) continue;
    OnWait(state, cp->step);
    ++n;
  }
  if (n > 0) {
    LOG(INFO) << n
              << " workflow(s) wait on agents: their requests are re-sent "
                 "when a session of their cluster connects";
  }
  return absl::OkStatus();
}

int AgentSessions::OpenWorkflows(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? 0 : it->second.open;
}

AgentSessionsStats AgentSessions::Stats() {
  absl::MutexLock lock(&mu_);
  return stats_;
}

bool AgentSessions::AwaitStats(
    const std::function<bool(const AgentSessionsStats&)>& pred,
    absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pred(stats_); };
  return mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
}

}  // namespace reflexion::server

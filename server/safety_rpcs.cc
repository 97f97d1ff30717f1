// The safety RPCs of the service: UndoAction, ListBreakers, ClearBreaker.

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/regression.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"
#include "proto/request_traits.h"
#include "server/rpc_status.h"
#include "server/service.h"

namespace reflexion::server {

namespace {

namespace v1 = reflexion::v1;

// A free-text reason of a request: at most 1024 bytes of UTF-8.
absl::Status CheckReason(const std::string& reason) {
  if (reason.size() > 1024) {
    return absl::InvalidArgumentError("reason: at most 1024 bytes");
  }
  if (!core::IsValidUtf8(reason)) {
    return absl::InvalidArgumentError("reason: must be valid UTF-8");
  }
  return absl::OkStatus();
}

}  // namespace

void ReflexionServiceImpl::AuditOperation(v1::AuditEntry::Kind kind,
                                          const Principal& who,
                                          const std::string& workflow_id,
                                          absl::string_view outcome,
                                          absl::string_view detail) const {
  core::AuditLog* audit = workflow_->audit();
  if (audit == nullptr) return;
  v1::AuditEntry e;
  e.set_kind(kind);
  *e.mutable_time() = core::ToProto(clock_->Now());
  e.set_principal(who.name);
  e.set_workflow_id(workflow_id);
  e.set_decider(v1::AuditEntry::DECIDER_HUMAN);
  e.set_decided_by(who.name);
  e.set_outcome(std::string(outcome));
  e.set_detail(std::string(core::ClipUtf8(detail, 1024)));
  if (checkpoints_ != nullptr) {
    v1::WorkflowState state;
    if (absl::StatusOr<core::Checkpoint> cp = checkpoints_->Latest(workflow_id);
        cp.ok() && state.ParseFromString(cp->state)) {
      e.set_cluster(state.cluster());
      e.set_namespace_(state.incident().namespace_());
      e.set_pod(state.incident().pod_name());
    }
  }
  if (absl::StatusOr<v1::AuditEntry> w = audit->Append(std::move(e)); !w.ok()) {
    LOG(ERROR) << workflow_id << ": " << outcome << " by " << who.name
               << " was not audited: " << w.status();
  }
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::UndoAction(
    grpc::CallbackServerContext* context, const v1::UndoActionRequest* request,
    v1::UndoActionResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "UndoAction", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  const std::string& action_id = request->action_id();
  // Action ids are "<workflow id>/<attempt>".
  const size_t slash = action_id.rfind('/');
  int attempt = 0;
  absl::Status bad;
  if (action_id.empty()) {
    bad = absl::InvalidArgumentError("action_id: is required");
  } else if (action_id.size() > 160 || !core::IsValidUtf8(action_id)) {
    bad = absl::InvalidArgumentError(
        "action_id: at most 160 bytes of valid UTF-8");
  } else if (slash == std::string::npos || slash == 0 ||
             !absl::SimpleAtoi(action_id.substr(slash + 1), &attempt) ||
             attempt < 1) {
    bad = absl::InvalidArgumentError(
        "action_id: not an action id (WORKFLOW_ID/ATTEMPT, as in the audit "
        "log and ActionRequest.action_id)");
  } else {
    bad = CheckReason(request->reason());
  }
  if (!bad.ok()) {
    reactor->Finish(ToGrpcStatus(bad));
    return reactor;
  }
  pool_->Post([this, reactor, request, response, who,
               workflow_id = action_id.substr(0, slash)] {
    const std::string& action_id = request->action_id();
    const std::string& principal = who.name;
    if (absl::Status s = CheckWorkflowScope(who, workflow_id);
        !s.ok() && !absl::IsNotFound(s)) {
      reactor->Finish(ToGrpcStatus(s));
      return;
    }
    if (runner_->IsActive(workflow_id)) {
      reactor->Finish(grpc::Status(
          grpc::StatusCode::FAILED_PRECONDITION,
          absl::StrCat("workflow ", workflow_id,
                       " is still running: cancel it or let it finish first")));
      return;
    }
    core::EpisodeQuery q;
    q.workflow_id = workflow_id;
    q.page_size = 1000;
    absl::StatusOr<core::EpisodePage> page = store_->ListEpisodes(q);
    if (!page.ok()) {
      reactor->Finish(ToGrpcStatus(page.status()));
      return;
    }
    const v1::Episode* episode = nullptr;
    for (const v1::Episode& e : page->episodes) {
      if (e.action_id() == action_id || e.id() == action_id) episode = &e;
    }
    if (episode == nullptr) {
      reactor->Finish(grpc::Status(
          grpc::StatusCode::NOT_FOUND,
          absl::StrCat("action_id: no executed action ", action_id,
                       " is recorded (episodes keep every learned attempt)")));
      return;
    }
    if (episode->undone()) {
      reactor->Finish(
          grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                       absl::StrCat("action ", action_id,
                                    " was already undone after a regression")));
      return;
    }
    std::vector<v1::ValueChange> changes(episode->changes().begin(),
                                         episode->changes().end());
    absl::StatusOr<v1::Action> undo = core::BuildUndo(
        episode->action(), changes, absl::StrCat(action_id, "/undo"));
    if (!undo.ok()) {
      reactor->Finish(ToGrpcStatus(undo.status()));
      return;
    }
    // The incident as the workflow knew it (its latest checkpoint), or as
    // much of it as the episode keeps.
    v1::Incident incident;
    core::StartOptions start;
    if (checkpoints_ != nullptr) {
      v1::WorkflowState state;
      if (absl::StatusOr<core::Checkpoint> cp =
              checkpoints_->Latest(workflow_id);
          cp.ok() && state.ParseFromString(cp->state)) {
        incident = state.incident();
        start.session = state.session();
      }
    }
    if (incident.pod_name().empty()) {
      incident.set_pod_name(episode->pod_name());
      incident.set_namespace_(episode->namespace_());
      incident.set_error_type(episode->error_type());
      const core::Policy* policy = workflow_->policy();
      if (!episode->cluster().empty() &&
          (policy == nullptr ||
           episode->cluster() != policy->config().default_cluster)) {
        start.session.set_cluster(episode->cluster());
      }
    }
    v1::UndoRecord& rec = start.undo.emplace();
    rec.set_undo_of(action_id);
    *rec.mutable_action() = *std::move(undo);
    rec.set_reason(request->reason().empty()
                       ? absl::StrCat("undo requested by ", principal)
                       : absl::StrCat("undo requested by ", principal, ": ",
                                      request->reason()));
    rec.set_requested_by(principal);
    start.principal = principal;
    WorkflowCallbacks callbacks;
    callbacks.retain_events = true;
    *response->mutable_undo() = rec;
    absl::StatusOr<std::string> id = runner_->Submit(
        std::move(incident), std::move(callbacks), std::move(start));
    if (!id.ok()) {
      reactor->Finish(ToGrpcStatus(id.status()));
      return;
    }
    response->set_workflow_id(*id);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ListBreakers(
    grpc::CallbackServerContext* context,
    const v1::ListBreakersRequest* request,
    v1::ListBreakersResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ListBreakers", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (core::Policy* policy = workflow_->policy(); policy != nullptr) {
    for (v1::BreakerState& b : policy->OpenBreakers()) {
      *response->add_breakers() = std::move(b);
    }
  }
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ClearBreaker(
    grpc::CallbackServerContext* context,
    const v1::ClearBreakerRequest* request,
    v1::ClearBreakerResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ClearBreaker", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  absl::Status bad;
  if (request->scope().empty()) {
    bad = absl::InvalidArgumentError(
        "scope: is required (CLUSTER or CLUSTER/NAMESPACE, as ListBreakers "
        "names it)");
  } else if (request->scope().size() > 160 ||
             !core::IsValidUtf8(request->scope())) {
    bad = absl::InvalidArgumentError("scope: at most 160 bytes of UTF-8");
  } else {
    bad = CheckReason(request->reason());
  }
  if (bad.ok()) {
    // Only for a cluster (and namespace) the caller may act in.
    const std::string& scope = request->scope();
    const size_t slash = scope.find('/');
    bad = AuthorizeCluster(who, scope.substr(0, slash), "scope");
    if (bad.ok() && slash != std::string::npos) {
      bad = AuthorizeNamespace(who, scope.substr(slash + 1), "scope");
    }
  }
  if (!bad.ok()) {
    reactor->Finish(ToGrpcStatus(bad));
    return reactor;
  }
  core::Policy* policy = workflow_->policy();
  if (policy == nullptr) {
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                 "scope: no breaker is open (no policy)"));
    return reactor;
  }
  pool_->Post([this, reactor, request, policy, principal = who.name] {
    const std::string& scope = request->scope();
    v1::BreakerState was;
    for (const v1::BreakerState& b : policy->OpenBreakers()) {
      if (b.scope() == scope) was = b;
    }
    if (absl::Status s = policy->ClearBreaker(scope); !s.ok()) {
      reactor->Finish(ToGrpcStatus(s));
      return;
    }
    if (core::PolicyStateStore* state = workflow_->policy_state();
        state != nullptr) {
      if (absl::Status s = state->SaveBreakers(policy->SnapshotBreakers());
          !s.ok()) {
        reactor->Finish(ToGrpcStatus(s));
        return;
      }
    }
    if (core::AuditLog* audit = workflow_->audit(); audit != nullptr) {
      v1::AuditEntry e;
      e.set_kind(v1::AuditEntry::KIND_BREAKER_CLEARED);
      *e.mutable_time() = core::ToProto(clock_->Now());
      e.set_principal(principal);
      const size_t slash = scope.find('/');
      e.set_cluster(scope.substr(0, slash));
      if (slash != std::string::npos) e.set_namespace_(scope.substr(slash + 1));
      e.set_workflow_id(was.workflow_id());
      e.set_decider(v1::AuditEntry::DECIDER_HUMAN);
      e.set_decided_by(principal);
      e.set_outcome("cleared");
      e.set_detail(std::string(core::ClipUtf8(
          absl::StrCat(
              "breaker ", scope, " cleared (", was.held_incidents(),
              " incidents held; suspected cause: ", was.suspected_cause(), ")",
              request->reason().empty() ? "" : ": ", request->reason()),
          1024)));
      if (absl::StatusOr<v1::AuditEntry> w = audit->Append(std::move(e));
          !w.ok()) {
        LOG(ERROR) << "breaker " << scope
                   << " cleared but not audited: " << w.status();
      }
    }
    LOG(INFO) << "blast-radius breaker " << scope << " cleared by "
              << principal;
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace reflexion::server

// The knowledge RPCs of the service: GetStrategyHistory, RollbackStrategy,
// ClearMemory.

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/version_judge.h"
#include "glog/logging.h"
#include "proto/request_traits.h"
#include "server/rpc_status.h"
#include "server/service.h"

namespace reflexion::server {

namespace {

namespace v1 = reflexion::v1;

// A name field: required, at most 160 bytes of UTF-8 without NUL.
absl::Status CheckName(const std::string& value, absl::string_view field,
                       bool required) {
  if (value.empty()) {
    return required ? absl::InvalidArgumentError(
                          absl::StrCat(field, ": is required"))
                    : absl::OkStatus();
  }
  if (value.size() > 160 || !core::IsValidUtf8(value) ||
      value.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": at most 160 bytes of UTF-8 without NUL"));
  }
  return absl::OkStatus();
}

// Strategies and memory are shared by every cluster and namespace: only a
// principal without a scope may change them.
absl::Status CheckUnscoped(const Principal& who, absl::string_view rpc) {
  if (who.clusters.empty() && who.namespaces.empty()) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      rpc, " changes what every cluster and namespace shares; principal ",
      who.name, " is limited to some"));
}

}  // namespace

grpc::ServerUnaryReactor* ReflexionServiceImpl::GetStrategyHistory(
    grpc::CallbackServerContext* context,
    const v1::GetStrategyHistoryRequest* request,
    v1::GetStrategyHistoryResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "GetStrategyHistory", reactor, &who)) {
    return reactor;
  }
  if (RefuseUndecodable(*request, reactor)) return reactor;
  if (absl::Status s = CheckName(request->strategy(), "strategy", true);
      !s.ok()) {
    reactor->Finish(ToGrpcStatus(s));
    return reactor;
  }
  pool_->Post([this, reactor, request, response] {
    absl::StatusOr<std::vector<v1::Strategy>> history =
        store_->GetStrategyHistory(request->strategy());
    if (!history.ok()) {
      reactor->Finish(ToGrpcStatus(history.status()));
      return;
    }
    absl::StatusOr<std::vector<v1::VersionStats>> stats =
        store_->GetVersionStats(request->strategy());
    if (!stats.ok()) {
      reactor->Finish(ToGrpcStatus(stats.status()));
      return;
    }
    for (size_t i = 0; i < history->size(); ++i) {
      v1::StrategyVersion& v = *response->add_versions();
      *v.mutable_strategy() = (*history)[i];
      const int32_t version = (*history)[i].version();
      *v.mutable_stats() =
          core::MakeVersionStats(request->strategy(), version, 0, 0);
      for (const v1::VersionStats& s : *stats) {
        if (s.version() == version) *v.mutable_stats() = s;
      }
      v.set_current(i + 1 == history->size());
    }
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::RollbackStrategy(
    grpc::CallbackServerContext* context,
    const v1::RollbackStrategyRequest* request,
    v1::RollbackStrategyResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "RollbackStrategy", reactor, &who)) {
    return reactor;
  }
  if (RefuseUndecodable(*request, reactor)) return reactor;
  absl::Status bad = CheckName(request->strategy(), "strategy", true);
  if (bad.ok() && request->to_version() < 1) {
    bad = absl::InvalidArgumentError(
        absl::StrCat("to_version: must be >= 1, got ", request->to_version()));
  }
  if (bad.ok() && (request->reason().size() > 1024 ||
                   !core::IsValidUtf8(request->reason()))) {
    bad =
        absl::InvalidArgumentError("reason: at most 1024 bytes of valid UTF-8");
  }
  if (bad.ok()) bad = CheckUnscoped(who, "RollbackStrategy");
  if (!bad.ok()) {
    reactor->Finish(ToGrpcStatus(bad));
    return reactor;
  }
  pool_->Post([this, reactor, request, response, who] {
    const std::string& name = request->strategy();
    // A concurrent learn may append a version between the read and the
    // write: PutStrategyVersion then refuses (FAILED_PRECONDITION); retry
    // on the new latest a few times.
    absl::Status s;
    for (int tries = 0; tries < 3; ++tries) {
      absl::StatusOr<std::vector<v1::Strategy>> history =
          store_->GetStrategyHistory(name);
      if (!history.ok()) {
        reactor->Finish(ToGrpcStatus(history.status()));
        return;
      }
      const v1::Strategy& latest = history->back();
      const v1::Strategy* target = nullptr;
      for (const v1::Strategy& v : *history) {
        if (v.version() == request->to_version()) target = &v;
      }
      if (target == nullptr) {
        reactor->Finish(
            grpc::Status(grpc::StatusCode::NOT_FOUND,
                         absl::StrCat("to_version: strategy ", name,
                                      " has no version ", request->to_version(),
                                      " (latest is ", latest.version(), ")")));
        return;
      }
      if (target == &latest) {
        reactor->Finish(
            grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                         absl::StrCat("to_version: version ", latest.version(),
                                      " of ", name, " is already current")));
        return;
      }
      const std::string reason = absl::StrCat(
          "rollback to version ", target->version(),
          request->reason().empty() ? "" : ": ", request->reason());
      v1::Strategy next = core::RollbackVersion(
          latest, *target, absl::StrCat("human:", who.name), reason,
          clock_->Now());
      s = store_->PutStrategyVersion(next);
      if (s.ok()) {
        AuditOperation(
            v1::AuditEntry::KIND_ADMIN, who, "", "strategy rolled back",
            absl::StrCat("strategy ", name, " version ", next.version(),
                         " (parent ", latest.version(),
                         ") has the parameters "
                         "of version ",
                         target->version(), ": ", reason));
        LOG(INFO) << "strategy " << name << " rolled back to version "
                  << target->version() << " as version " << next.version()
                  << " by " << who.name;
        *response->mutable_strategy() = std::move(next);
        reactor->Finish(grpc::Status::OK);
        return;
      }
      if (!absl::IsFailedPrecondition(s)) break;
    }
    reactor->Finish(ToGrpcStatus(s));
  });
  return reactor;
}

grpc::ServerUnaryReactor* ReflexionServiceImpl::ClearMemory(
    grpc::CallbackServerContext* context, const v1::ClearMemoryRequest* request,
    v1::ClearMemoryResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ClearMemory", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  absl::Status bad = CheckName(request->signature(), "signature", false);
  if (bad.ok()) bad = CheckUnscoped(who, "ClearMemory");
  if (!bad.ok()) {
    reactor->Finish(ToGrpcStatus(bad));
    return reactor;
  }
  pool_->Post([this, reactor, request, response, who] {
    absl::StatusOr<core::MemoryCleared> cleared =
        store_->ClearMemory(request->signature());
    if (!cleared.ok()) {
      reactor->Finish(ToGrpcStatus(cleared.status()));
      return;
    }
    response->set_episodes_removed(cleared->episodes);
    response->set_posteriors_removed(cleared->posteriors);
    const std::string what =
        request->signature().empty()
            ? std::string("all memory")
            : absl::StrCat("memory of signature ", request->signature());
    AuditOperation(
        v1::AuditEntry::KIND_ADMIN, who, "", "memory cleared",
        absl::StrCat(what, " cleared: ", cleared->episodes, " episodes and ",
                     cleared->posteriors, " posteriors removed"));
    LOG(INFO) << what << " cleared by " << who.name << " (" << cleared->episodes
              << " episodes, " << cleared->posteriors << " posteriors)";
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace reflexion::server

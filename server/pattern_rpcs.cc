// ListPatterns: what memory shows across incidents, computed on read
// (core/reflexion/patterns.h) from the stored episodes, workflow records and
// posteriors of the caller's scope.

#include <algorithm>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/patterns.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/workflow.h"
#include "glog/logging.h"
#include "proto/request_traits.h"
#include "server/rpc_status.h"
#include "server/service.h"

namespace reflexion::server {

namespace {

namespace v1 = reflexion::v1;

// Whether data of (`ns`, `cluster`) is in `who`'s scope ("" cluster: the
// default one).
bool InScope(const Principal& who, const std::string& ns,
             const std::string& cluster, const std::string& default_cluster) {
  return who.AllowsNamespace(ns) &&
         who.AllowsCluster(cluster.empty() ? default_cluster : cluster);
}

// An episode without what no pattern reads (reflection, lessons, action,
// changes): the scan holds up to kMaxPatternEpisodes of them.
v1::Episode Trimmed(const v1::Episode& e) {
  v1::Episode t;
  t.set_id(e.id());
  t.set_workflow_id(e.workflow_id());
  *t.mutable_time() = e.time();
  t.set_namespace_(e.namespace_());
  t.set_error_type(e.error_type());
  t.set_signature(e.signature());
  t.set_attempt(e.attempt());
  t.set_strategy(e.strategy());
  t.set_strategy_version(e.strategy_version());
  t.set_success(e.success());
  t.set_time_to_recovery_s(e.time_to_recovery_s());
  t.set_cluster(e.cluster());
  return t;
}

}  // namespace

grpc::ServerUnaryReactor* ReflexionServiceImpl::ListPatterns(
    grpc::CallbackServerContext* context,
    const v1::ListPatternsRequest* request,
    v1::ListPatternsResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Principal who;
  if (RefuseCaller(context, "ListPatterns", reactor, &who)) return reactor;
  if (RefuseUndecodable(*request, reactor)) return reactor;
  absl::StatusOr<core::PatternOptions> options =
      core::PatternOptionsFromRequest(*request, clock_->Now(),
                                      options_.default_cluster);
  absl::Status bad = options.status();
  // A filter outside the caller's scope is refused rather than answered
  // empty (as ListEpisodes and ListAudit do).
  if (bad.ok() && !options->namespace_name.empty()) {
    bad = AuthorizeNamespace(who, options->namespace_name, "namespace");
  }
  if (bad.ok() && !options->cluster.empty()) {
    bad = AuthorizeCluster(who, options->cluster, "cluster");
  }
  if (!bad.ok()) {
    reactor->Finish(ToGrpcStatus(bad));
    return reactor;
  }
  // Storage reads: on the pool, never in the reaction.
  pool_->Post([this, reactor, response, who = std::move(who),
               o = *std::move(options)] {
    const bool scoped = !who.clusters.empty() || !who.namespaces.empty();
    const std::string& default_cluster = options_.default_cluster;
    core::PatternInputs in;
    // The newest kMaxPatternEpisodes episodes of the scope (the store
    // visits oldest first).
    std::deque<v1::Episode> episodes;
    absl::Status s = store_->ForEachEpisode([&](const v1::Episode& e) {
      if (!InScope(who, e.namespace_(), e.cluster(), default_cluster)) {
        return true;
      }
      episodes.push_back(Trimmed(e));
      if (static_cast<int64_t>(episodes.size()) > core::kMaxPatternEpisodes) {
        episodes.pop_front();
        in.episodes_capped = true;
      }
      return true;
    });
    if (!s.ok()) {
      reactor->Finish(ToGrpcStatus(s));
      return;
    }
    in.episodes.assign(std::make_move_iterator(episodes.begin()),
                       std::make_move_iterator(episodes.end()));
    episodes.clear();
    if (checkpoints_ != nullptr) {
      std::vector<core::WorkflowRecord> records;
      for (core::WorkflowPhase phase :
           {core::WorkflowPhase::kRunning, core::WorkflowPhase::kWaiting,
            core::WorkflowPhase::kCompleted, core::WorkflowPhase::kFailed,
            core::WorkflowPhase::kCancelled}) {
        absl::StatusOr<std::vector<core::WorkflowRecord>> list =
            checkpoints_->ListByPhase(phase);
        if (!list.ok()) {
          reactor->Finish(ToGrpcStatus(list.status()));
          return;
        }
        for (core::WorkflowRecord& r : *list) records.push_back(std::move(r));
      }
      if (static_cast<int64_t>(records.size()) > core::kMaxPatternWorkflows) {
        // Keep the most recently updated ones.
        std::sort(
            records.begin(), records.end(),
            [](const core::WorkflowRecord& a, const core::WorkflowRecord& b) {
              if (a.updated != b.updated) return a.updated > b.updated;
              return a.workflow_id < b.workflow_id;
            });
        records.resize(core::kMaxPatternWorkflows);
        in.workflows_capped = true;
      }
      for (const core::WorkflowRecord& r : records) {
        absl::StatusOr<v1::WorkflowState> state =
            core::WorkflowGraph::GetState(*checkpoints_, r.workflow_id);
        if (absl::IsNotFound(state.status()) ||
            absl::IsDataLoss(state.status())) {
          // Expired between the listing and the read, or undecodable (its
          // episodes, if any, still count it).
          VLOG(1) << "patterns: workflow " << r.workflow_id
                  << " skipped: " << state.status();
          continue;
        }
        if (!state.ok()) {
          reactor->Finish(ToGrpcStatus(state.status()));
          return;
        }
        const std::string& cluster = !state->cluster().empty()
                                         ? state->cluster()
                                         : state->session().cluster();
        if (!InScope(who, state->incident().namespace_(), cluster,
                     default_cluster)) {
          continue;
        }
        core::WorkflowSummary w;
        w.workflow_id = r.workflow_id;
        w.time = state->has_started_at() ? core::FromProto(state->started_at())
                                         : r.updated;
        w.namespace_name = state->incident().namespace_();
        w.cluster = cluster;
        w.error_type = state->incident().error_type();
        w.signature = state->analysis().signature();
        in.workflows.push_back(std::move(w));
      }
    }
    // The stored posteriors span every namespace and cluster: only a caller
    // without a scope gets them.
    if (!scoped) {
      absl::StatusOr<std::vector<v1::StrategyStats>> stats =
          store_->GetStats("");
      if (!stats.ok()) {
        reactor->Finish(ToGrpcStatus(stats.status()));
        return;
      }
      in.stats = *std::move(stats);
    }
    *response = core::ComputePatterns(in, o);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

}  // namespace reflexion::server

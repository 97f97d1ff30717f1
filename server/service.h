#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/graph/task_runner.h"
#include "core/ports/audit_log.h"
#include "core/ports/checkpoint_store.h"
#include "core/ports/clock.h"
#include "core/ports/knowledge_store.h"
#include "core/ports/reflector.h"
#include "reflexion/v1/reflexion.grpc.pb.h"
#include "server/agent_sessions.h"
#include "server/auth.h"
#include "server/event_hub.h"
#include "server/upstream/http_client.h"
#include "server/workflow_runner.h"

namespace reflexion::server {

struct ServiceOptions {
  // Incidents in flight on one Resolve stream before further ones are
  // rejected with RESOURCE_EXHAUSTED.
  int max_in_flight_per_stream = 1000;
  // Bytes of outbound messages queued on one Resolve stream above which the
  // server stops reading it (back-pressure) until half of them are written
  // (service.stream_buffer_bytes).
  size_t stream_buffer_bytes = 4 << 20;
  // Names reported by GetMetrics.
  std::string executor_name;
  std::string reflector_name;
  // Storage state for GetMetrics (App wires them; unset in unit tests).
  std::function<absl::Status()> storage_writable;
  bool storage_recovered_with_loss = false;
  int64_t storage_lost_sequences = 0;
  // Agent sessions (AgentHello on Resolve); null: hello is refused.
  AgentSessions* sessions = nullptr;
  // A Resolve stream whose reading stayed paused this long (its client does
  // not read) is cancelled; its workflows continue (0 = never).
  absl::Duration stalled_stream_timeout = absl::ZeroDuration();
  // Runs the stalled-stream check (needed when stalled_stream_timeout > 0).
  graph::Timer* timer = nullptr;
  // Makes one pool lane per Resolve stream (the pool the workflows run on);
  // null: every stream's workflows share the pool's one queue.
  graph::LaneFactory* lanes = nullptr;
  // SimulateReflection: the active reflector (null: the RPC answers
  // FAILED_PRECONDITION) and the configured depth.
  core::Reflector* reflector = nullptr;
  core::ReflectionDepth depth = core::ReflectionDepth::kMedium;
  // Outbound HTTP upstreams with their breakers, for GetMetrics (unset:
  // none).
  std::function<std::vector<upstream::UpstreamStats>()> upstreams;
  // ListAudit reads it (null: ListAudit answers FAILED_PRECONDITION).
  core::AuditLog* audit_log = nullptr;
  // Authenticates every call (server/auth.h); null: every caller is
  // Principal::Anonymous() (admin).
  const Authenticator* auth = nullptr;
  // The cluster of a workflow whose WorkflowState.cluster is empty, for the
  // principals' cluster scopes (policy.default_cluster once it exists).
  std::string default_cluster = "default";
};

namespace internal {
using RS = reflexion::v1::ReflexionService;
// ReflexionService::CallbackService with Resolve on raw bytes (so the
// service parses its messages itself and answers one that does not parse).
// Lists every RPC of the service: add a new one here too.
// clang-format off
using ServiceBase = RS::WithRawCallbackMethod_Resolve<RS::WithCallbackMethod_ProcessIncident<
    RS::WithCallbackMethod_DiagnoseIncident<RS::WithCallbackMethod_StartWorkflow<
        RS::WithCallbackMethod_GetWorkflow<RS::WithCallbackMethod_WatchWorkflow<
            RS::WithCallbackMethod_ResumeWorkflow<RS::WithCallbackMethod_CancelWorkflow<
                RS::WithCallbackMethod_ListCheckpoints<RS::WithCallbackMethod_ForkWorkflow<
                    RS::WithCallbackMethod_ListStrategies<
                        RS::WithCallbackMethod_ListEpisodes<
                            RS::WithCallbackMethod_GetMetrics<
                                RS::WithCallbackMethod_SimulateReflection<
                                    RS::WithCallbackMethod_UndoAction<
                                        RS::WithCallbackMethod_ListBreakers<
                                            RS::WithCallbackMethod_ClearBreaker<
                                                RS::WithCallbackMethod_ListAudit<
                                                    RS::WithCallbackMethod_GetStrategyHistory<
                                                    RS::WithCallbackMethod_RollbackStrategy<
                                                    RS::WithCallbackMethod_ClearMemory<
                                                    RS::WithCallbackMethod_ListPatterns<
                                                    RS::Service>>>>>>>>>>>>>>>>>>>>>>;
// clang-format on
}  // namespace internal

// The gRPC service (callback API). Reactions never block: storage reads run
// on `pool`, workflows on the runner. Every pointer must outlive the service
// and the server it is registered with. Thread-safe.
class ReflexionServiceImpl final : public internal::ServiceBase {
 public:
  // `checkpoints` may be null (checkpointing disabled): the workflow RPCs
  // then answer FAILED_PRECONDITION.
  ReflexionServiceImpl(const core::ReflexionWorkflow* workflow,
                       WorkflowRunner* runner, EventHub* hub,
                       core::KnowledgeStore* store,
                       core::CheckpointStore* checkpoints,
                       graph::TaskRunner* pool, const core::Clock* clock,
                       ServiceOptions options);

  // Shutdown, after the runner stopped accepting: waits until no Resolve
  // stream owes a result, or until `deadline`; true when none does.
  bool WaitForStreams(absl::Time deadline);
  // Shutdown: every workflow still open on a Resolve stream gets a
  // `handed_off` message (it continues; its events are retained for
  // WatchWorkflow) and those streams end with UNAVAILABLE. Returns how many
  // were handed off.
  int HandOffStreams();

  // The live Resolve streams: how many, the bytes queued on them, how many
  // have reading paused (back-pressure).
  struct StreamStats {
    int streams = 0;
    size_t queued_bytes = 0;
    int paused = 0;
    // Streams whose workflows run in the background: their client is not
    // keeping up with their output, or is gone (graph::Lane).
    int background = 0;
    // Streams cancelled because they stayed paused past
    // stalled_stream_timeout, since the start.
    int64_t stalled_cancelled = 0;
  };
  StreamStats Streams();
  // Blocks until at least `n` Resolve streams have reading paused, or
  // `timeout`; true when they have (for tests and operators' tools).
  bool AwaitPausedStreams(int n, absl::Duration timeout);
  // Blocks until at least `n` streams were cancelled for staying paused
  // past stalled_stream_timeout, or `timeout`; true when they were.
  bool AwaitStalledCancels(int64_t n, absl::Duration timeout);

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Resolve(
      grpc::CallbackServerContext* context) override;

  grpc::ServerUnaryReactor* ProcessIncident(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ProcessIncidentRequest* request,
      reflexion::v1::ProcessIncidentResponse* response) override;

  grpc::ServerUnaryReactor* DiagnoseIncident(
      grpc::CallbackServerContext* context,
      const reflexion::v1::DiagnoseIncidentRequest* request,
      reflexion::v1::DiagnoseIncidentResponse* response) override;

  grpc::ServerUnaryReactor* StartWorkflow(
      grpc::CallbackServerContext* context,
      const reflexion::v1::StartWorkflowRequest* request,
      reflexion::v1::StartWorkflowResponse* response) override;

  grpc::ServerUnaryReactor* GetWorkflow(
      grpc::CallbackServerContext* context,
      const reflexion::v1::GetWorkflowRequest* request,
      reflexion::v1::GetWorkflowResponse* response) override;

  grpc::ServerWriteReactor<reflexion::v1::WatchWorkflowResponse>* WatchWorkflow(
      grpc::CallbackServerContext* context,
      const reflexion::v1::WatchWorkflowRequest* request) override;

  grpc::ServerUnaryReactor* ResumeWorkflow(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ResumeWorkflowRequest* request,
      reflexion::v1::ResumeWorkflowResponse* response) override;

  grpc::ServerUnaryReactor* CancelWorkflow(
      grpc::CallbackServerContext* context,
      const reflexion::v1::CancelWorkflowRequest* request,
      reflexion::v1::CancelWorkflowResponse* response) override;

  grpc::ServerUnaryReactor* ForkWorkflow(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ForkWorkflowRequest* request,
      reflexion::v1::ForkWorkflowResponse* response) override;
  grpc::ServerUnaryReactor* ListCheckpoints(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ListCheckpointsRequest* request,
      reflexion::v1::ListCheckpointsResponse* response) override;

  grpc::ServerUnaryReactor* ListStrategies(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ListStrategiesRequest* request,
      reflexion::v1::ListStrategiesResponse* response) override;

  grpc::ServerUnaryReactor* ListEpisodes(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ListEpisodesRequest* request,
      reflexion::v1::ListEpisodesResponse* response) override;

  grpc::ServerUnaryReactor* GetMetrics(
      grpc::CallbackServerContext* context,
      const reflexion::v1::GetMetricsRequest* request,
      reflexion::v1::GetMetricsResponse* response) override;
  grpc::ServerUnaryReactor* SimulateReflection(
      grpc::CallbackServerContext* context,
      const reflexion::v1::SimulateReflectionRequest* request,
      reflexion::v1::SimulateReflectionResponse* response) override;
  grpc::ServerUnaryReactor* ListAudit(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ListAuditRequest* request,
      reflexion::v1::ListAuditResponse* response) override;

  // server/safety_rpcs.cc
  grpc::ServerUnaryReactor* UndoAction(
      grpc::CallbackServerContext* context,
      const reflexion::v1::UndoActionRequest* request,
      reflexion::v1::UndoActionResponse* response) override;
  grpc::ServerUnaryReactor* ListBreakers(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ListBreakersRequest* request,
      reflexion::v1::ListBreakersResponse* response) override;
  grpc::ServerUnaryReactor* ClearBreaker(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ClearBreakerRequest* request,
      reflexion::v1::ClearBreakerResponse* response) override;

  // server/strategy_rpcs.cc
  grpc::ServerUnaryReactor* GetStrategyHistory(
      grpc::CallbackServerContext* context,
      const reflexion::v1::GetStrategyHistoryRequest* request,
      reflexion::v1::GetStrategyHistoryResponse* response) override;
  grpc::ServerUnaryReactor* RollbackStrategy(
      grpc::CallbackServerContext* context,
      const reflexion::v1::RollbackStrategyRequest* request,
      reflexion::v1::RollbackStrategyResponse* response) override;
  grpc::ServerUnaryReactor* ClearMemory(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ClearMemoryRequest* request,
      reflexion::v1::ClearMemoryResponse* response) override;

  // server/pattern_rpcs.cc
  grpc::ServerUnaryReactor* ListPatterns(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ListPatternsRequest* request,
      reflexion::v1::ListPatternsResponse* response) override;

 private:
  // Audits an operator's operation on a workflow (cancel, fork) with the
  // workflow's cluster, namespace and pod from its latest checkpoint. Storage:
  // call on the pool. A failure to audit is logged; the operation stands.
  void AuditOperation(reflexion::v1::AuditEntry::Kind kind,
                      const Principal& who, const std::string& workflow_id,
                      absl::string_view outcome,
                      absl::string_view detail) const;
  // The preconditions of the workflow RPCs: checkpointing on, a valid id.
  absl::Status CheckWorkflowRpc(const std::string& workflow_id) const;

  // Authenticates the caller of `context` and checks its role for `rpc`
  // (RequiredRole): the principal, or UNAUTHENTICATED / PERMISSION_DENIED.
  absl::StatusOr<Principal> Admit(const grpc::ServerContextBase& context,
                                  absl::string_view rpc) const;
  // Admit for a unary handler: false with the principal in `who`, or true
  // once `reactor` was finished with the refusal.
  bool RefuseCaller(grpc::CallbackServerContext* context, absl::string_view rpc,
                    grpc::ServerUnaryReactor* reactor, Principal* who) const;
  // Whether `who` may act on workflow `state` (its incident's namespace, its
  // cluster): PERMISSION_DENIED naming the one outside its scope.
  absl::Status CheckScope(const Principal& who,
                          const reflexion::v1::WorkflowState& state) const;
  // CheckScope on the workflow's latest checkpoint (storage: call on the
  // pool). OK without reading when `who` has no scope; NOT_FOUND for an
  // unknown workflow.
  absl::Status CheckWorkflowScope(const Principal& who,
                                  const std::string& workflow_id) const;

  class ResolveReactor;
  class WatchReactor;

  void Register(ResolveReactor* stream);
  // `open`: the stream's workflows still counted in open_incidents_;
  // `paused`: whether it is counted in paused_streams_.
  void Unregister(ResolveReactor* stream, int open, bool paused);
  void AddPaused(int delta);
  void AddOpen(int delta);
  void CountStalledCancel();

  const core::ReflexionWorkflow* workflow_;
  WorkflowRunner* runner_;
  EventHub* hub_;
  core::KnowledgeStore* store_;
  core::CheckpointStore* checkpoints_;
  graph::TaskRunner* pool_;
  const core::Clock* clock_;
  ServiceOptions options_;
  absl::Time started_;

  absl::Mutex streams_mu_;
  // Live Resolve streams (bounded by the connections gRPC admits).
  absl::flat_hash_set<ResolveReactor*> streams_ ABSL_GUARDED_BY(streams_mu_);
  // Workflows accepted on a Resolve stream whose result it still owes.
  int64_t open_incidents_ ABSL_GUARDED_BY(streams_mu_) = 0;
  // Streams whose reading is paused (back-pressure).
  int paused_streams_ ABSL_GUARDED_BY(streams_mu_) = 0;
  int64_t stalled_cancelled_ ABSL_GUARDED_BY(streams_mu_) = 0;
};

// absl::Status -> grpc::Status (the codes are numerically equal).
grpc::Status ToGrpcStatus(const absl::Status& status);

// The incident carried by a ProcessIncidentRequest.
reflexion::v1::Incident IncidentFromRequest(
    const reflexion::v1::ProcessIncidentRequest& request);

}  // namespace reflexion::server

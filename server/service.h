#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/time/time.h"
#include "core/graph/task_runner.h"
#include "core/ports/checkpoint_store.h"
#include "core/ports/clock.h"
#include "core/ports/knowledge_store.h"
#include "reflexion/v1/reflexion.grpc.pb.h"
#include "server/event_hub.h"
#include "server/workflow_runner.h"

namespace reflexion::server {

struct ServiceOptions {
  // Incidents in flight on one Resolve stream before further ones are
  // rejected with RESOURCE_EXHAUSTED.
  int max_in_flight_per_stream = 1000;
  // Names reported by GetMetrics.
  std::string executor_name;
  std::string reflector_name;
  // Storage state for GetMetrics (App wires them; unset in unit tests).
  std::function<absl::Status()> storage_writable;
  bool storage_recovered_with_loss = false;
  int64_t storage_lost_sequences = 0;
};

// The gRPC service (callback API). Reactions never block: storage reads run
// on `pool`, workflows on the runner. Every pointer must outlive the service
// and the server it is registered with.
class ReflexionServiceImpl final
    : public reflexion::v1::ReflexionService::CallbackService {
 public:
  // `checkpoints` may be null (checkpointing disabled): the workflow RPCs
  // then answer FAILED_PRECONDITION.
  ReflexionServiceImpl(WorkflowRunner* runner, EventHub* hub,
                       core::KnowledgeStore* store,
                       core::CheckpointStore* checkpoints,
                       graph::TaskRunner* pool, const core::Clock* clock,
                       ServiceOptions options);

  grpc::ServerBidiReactor<reflexion::v1::ResolveRequest,
                          reflexion::v1::ResolveResponse>*
  Resolve(grpc::CallbackServerContext* context) override;

  grpc::ServerUnaryReactor* ProcessIncident(
      grpc::CallbackServerContext* context,
      const reflexion::v1::ProcessIncidentRequest* request,
      reflexion::v1::ProcessIncidentResponse* response) override;

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

 private:
  // The preconditions of the workflow RPCs: checkpointing on, a valid id.
  absl::Status CheckWorkflowRpc(const std::string& workflow_id) const;

  class ResolveReactor;
  class WatchReactor;

  WorkflowRunner* runner_;
  EventHub* hub_;
  core::KnowledgeStore* store_;
  core::CheckpointStore* checkpoints_;
  graph::TaskRunner* pool_;
  const core::Clock* clock_;
  ServiceOptions options_;
  absl::Time started_;
};

// absl::Status -> grpc::Status (the codes are numerically equal).
grpc::Status ToGrpcStatus(const absl::Status& status);

// The incident carried by a ProcessIncidentRequest.
reflexion::v1::Incident IncidentFromRequest(
    const reflexion::v1::ProcessIncidentRequest& request);

}  // namespace reflexion::server

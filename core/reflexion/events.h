#pragma once

#include "absl/time/time.h"
#include "core/reflexion/workflow.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Converts an engine event into the API's WorkflowEvent: generic fields, a
// one-line summary and, for completed events, the node's typed payload.
reflexion::v1::WorkflowEvent MakeWorkflowEvent(
    const graph::StepEvent<reflexion::v1::WorkflowState>& event);

// The final result of a finished run. `end` is when it finished;
// resolution_time is the wall time from WorkflowState.started_at to `end`,
// simulated_resolution_time the executor's reported recovery and
// observation seconds (WorkflowState.executor_seconds).
reflexion::v1::IncidentResult MakeIncidentResult(const WorkflowRunResult& run,
                                                 absl::Time end);

}  // namespace reflexion::core

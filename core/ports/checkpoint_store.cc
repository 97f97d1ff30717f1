#include "core/ports/checkpoint_store.h"

namespace reflexion::core {

absl::string_view WorkflowPhaseName(WorkflowPhase phase) {
  switch (phase) {
    case WorkflowPhase::kRunning:
      return "running";
    case WorkflowPhase::kWaiting:
      return "waiting";
    case WorkflowPhase::kCompleted:
      return "completed";
    case WorkflowPhase::kFailed:
      return "failed";
    case WorkflowPhase::kCancelled:
      return "cancelled";
  }
  // A value cast from an out-of-range integer.
  return "unknown";
}

}  // namespace reflexion::core

#include "core/ports/checkpoint_store.h"

#include <utility>

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

void CheckpointStore::PutAsync(Checkpoint checkpoint, WorkflowPhase phase,
                               int keep_last, bool sync, WriteDone done) {
  absl::Status s = Put(checkpoint, phase, keep_last, sync);
  std::move(done)(std::move(s));
}

void CheckpointStore::AfterWrites(absl::AnyInvocable<void() &&> done) {
  std::move(done)();
}

}  // namespace reflexion::core

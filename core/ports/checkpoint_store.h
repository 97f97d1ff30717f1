#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace reflexion::core {

// Lifecycle of a workflow as recorded with its checkpoints.
enum class WorkflowPhase {
  kRunning = 1,    // a step is running or due; resumed after a crash
  kWaiting = 2,    // interrupted, waiting for a human decision
  kCompleted = 3,  // reached END
  kFailed = 4,     // ended with an error
  kCancelled = 5,  // cancelled
};

// "running", "waiting", "completed", "failed", "cancelled".
absl::string_view WorkflowPhaseName(WorkflowPhase phase);
// Whether no further step will run (completed, failed, cancelled).
inline bool IsTerminal(WorkflowPhase p) {
  return p == WorkflowPhase::kCompleted || p == WorkflowPhase::kFailed ||
         p == WorkflowPhase::kCancelled;
}

// The state of one workflow after one step.
struct Checkpoint {
  std::string workflow_id;
  // 0 for the input checkpoint (before the first node), then 1, 2, 3, ...
  // one per completed node. Strictly increasing per workflow.
  uint64_t step = 0;
  // The node that just completed ("" for step 0).
  std::string node;
  // The node to run next ("__end__" when the workflow is finished).
  std::string next_node;
  // Sequence number of the last event emitted when this checkpoint was
  // taken, so a resumed run continues the numbering.
  uint64_t last_sequence = 0;
  absl::Time time;
  // The serialized state (opaque to the store).
  std::string state;
  // For a fork's first checkpoint: where it was forked from ("" / 0).
  std::string parent_workflow_id;
  uint64_t parent_step = 0;
  // The last checkpoint of a failed or cancelled run: why it ended
  // ("CODE: message"); "" otherwise.
  std::string error;
};

// The workflow record kept beside its checkpoints.
struct WorkflowRecord {
  std::string workflow_id;
  WorkflowPhase phase = WorkflowPhase::kRunning;
  uint64_t last_step = 0;
  absl::Time updated;
};

// Durable per-step state of workflows. Adapters: RocksDbCheckpointStore
// (storage/), InMemoryCheckpointStore (core/ports, tests); both pass one
// contract suite. Thread-safe. Every write is atomic.
class CheckpointStore {
 public:
  virtual ~CheckpointStore() = default;

  // Appends `checkpoint` and sets the workflow's record to (`phase`,
  // checkpoint.step, checkpoint.time) in one atomic write, then deletes the
  // workflow's oldest checkpoints so that at most `keep_last` remain
  // (0 = keep all) — in the same write. With `sync`, the write is durable
  // (fsync'd) before this returns; otherwise it is in the WAL only.
  // Errors: kInvalidArgument (empty workflow id), kFailedPrecondition (step
  // not greater than the workflow's last step; nothing is written),
  // storage errors.
  virtual absl::Status Put(const Checkpoint& checkpoint, WorkflowPhase phase,
                           int keep_last, bool sync) = 0;

  // Called exactly once with the outcome of a queued write.
  using WriteDone = absl::AnyInvocable<void(absl::Status) &&>;

  // Queues Put(checkpoint, phase, keep_last, sync) and returns, usually
  // before it is written (a group-commit store writes the checkpoints of
  // many workflows in one batch); `done` gets Put's status once the write
  // is applied (fsync'd when `sync`). Writes queued by one thread, or
  // ordered by happens-before, are applied in that order, and their `done`
  // calls run in that order. `done` may run inline, on a store thread or on
  // the thread of another caller that applies a batch: it must be quick,
  // take no lock a caller of the store may hold, and not call the store
  // and wait. May block while the store's queue is full (back-pressure).
  // Default: Put, then `done`.
  virtual void PutAsync(Checkpoint checkpoint, WorkflowPhase phase,
                        int keep_last, bool sync, WriteDone done);

  // Calls `done` once every write queued before this call has been applied
  // and its `done` has run; same threading rules. Default: at once.
  virtual void AfterWrites(absl::AnyInvocable<void() &&> done);

  // Changes only the record's phase (e.g. cancelled while waiting).
  // kNotFound for an unknown workflow.
  virtual absl::Status SetPhase(absl::string_view workflow_id,
                                WorkflowPhase phase, absl::Time now,
                                bool sync) = 0;

  // The workflow's record. kNotFound when unknown.
  virtual absl::StatusOr<WorkflowRecord> GetWorkflow(
      absl::string_view workflow_id) = 0;

  // The newest checkpoint of a workflow. kNotFound when it has none.
  virtual absl::StatusOr<Checkpoint> Latest(absl::string_view workflow_id) = 0;

  // One checkpoint. kNotFound when absent (never written, or pruned).
  virtual absl::StatusOr<Checkpoint> Get(absl::string_view workflow_id,
                                         uint64_t step) = 0;

  // A workflow's checkpoints, newest first, at most `limit` (0 = all).
  virtual absl::StatusOr<std::vector<Checkpoint>> List(
      absl::string_view workflow_id, int limit) = 0;

  // Every workflow whose phase is `phase`, ordered by id (startup resume
  // reads kRunning and kWaiting).
  virtual absl::StatusOr<std::vector<WorkflowRecord>> ListByPhase(
      WorkflowPhase phase) = 0;

  // Deletes every terminal workflow (record and checkpoints) last updated
  // before `cutoff`, at most `max_workflows` per call (0 = no limit).
  // Returns how many were deleted; their ids are appended to `expired`
  // when not null (to delete what else is kept per workflow).
  virtual absl::StatusOr<int> ExpireFinished(
      absl::Time cutoff, int max_workflows,
      std::vector<std::string>* expired = nullptr) = 0;
};

}  // namespace reflexion::core

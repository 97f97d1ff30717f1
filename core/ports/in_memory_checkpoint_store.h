#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/checkpoint_store.h"

namespace reflexion::core {

// ---------------------------------------------------------------------------
// Contract helpers shared by every CheckpointStore adapter (this fake and
// storage::RocksDbCheckpointStore), so that they validate identically. Pure
// functions, thread-safe.
// ---------------------------------------------------------------------------

// kInvalidArgument when `workflow_id` is empty or contains NUL (reserved as
// the key separator). Every method of both adapters applies it.
absl::Status ValidateWorkflowId(absl::string_view workflow_id);

// Whether `phase` is one of the five WorkflowPhase values (an enum can hold
// any integer cast to it).
bool IsValidPhase(WorkflowPhase phase);

// kInvalidArgument unless IsValidPhase(phase).
absl::Status ValidatePhase(WorkflowPhase phase);

// kInvalidArgument naming `what` when `value` is negative (keep_last,
// limit, max_workflows: 0 means "no limit").
absl::Status ValidateNonNegative(int value, absl::string_view what);

// Everything Put checks before reading the store: the workflow id, the
// phase and keep_last.
absl::Status ValidatePut(const Checkpoint& checkpoint, WorkflowPhase phase,
                         int keep_last);

// kFailedPrecondition unless `step` is greater than `last_step`, the last
// step of an existing workflow.
absl::Status CheckNextStep(absl::string_view workflow_id, uint64_t step,
                           uint64_t last_step);

// ---------------------------------------------------------------------------

// The deterministic in-memory CheckpointStore used by tests. Same contract
// as the port (and the same contract suite as RocksDbCheckpointStore):
// malformed ids are kInvalidArgument everywhere, List of an unknown workflow
// is empty, ExpireFinished deletes the oldest (by updated time, then id)
// first. `sync` is ignored; nothing survives the object. Thread-safe: one
// mutex guards everything.
class InMemoryCheckpointStore final : public CheckpointStore {
 public:
  InMemoryCheckpointStore() = default;
  InMemoryCheckpointStore(const InMemoryCheckpointStore&) = delete;
  InMemoryCheckpointStore& operator=(const InMemoryCheckpointStore&) = delete;

  absl::Status Put(const Checkpoint& checkpoint, WorkflowPhase phase,
                   int keep_last, bool sync) override;
  absl::Status SetPhase(absl::string_view workflow_id, WorkflowPhase phase,
                        absl::Time now, bool sync) override;
  absl::StatusOr<WorkflowRecord> GetWorkflow(
      absl::string_view workflow_id) override;
  absl::StatusOr<Checkpoint> Latest(absl::string_view workflow_id) override;
  absl::StatusOr<Checkpoint> Get(absl::string_view workflow_id,
                                 uint64_t step) override;
  absl::StatusOr<std::vector<Checkpoint>> List(absl::string_view workflow_id,
                                               int limit) override;
  absl::StatusOr<std::vector<WorkflowRecord>> ListByPhase(
      WorkflowPhase phase) override;
  absl::StatusOr<int> ExpireFinished(
      absl::Time cutoff, int max_workflows,
      std::vector<std::string>* expired = nullptr) override;

 private:
  struct Workflow {
    WorkflowRecord record;
    std::map<uint64_t, Checkpoint> checkpoints;  // by step
  };

  absl::Mutex mu_;
  std::map<std::string, Workflow, std::less<>> workflows_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reflexion::core

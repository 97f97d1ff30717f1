#include "core/ports/in_memory_checkpoint_store.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"
#include "core/status_macros.h"

namespace reflexion::core {

absl::Status ValidateWorkflowId(absl::string_view workflow_id) {
  if (workflow_id.empty()) {
    return absl::InvalidArgumentError("workflow_id is required");
  }
  if (workflow_id.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("workflow_id must not contain NUL: \"",
                     absl::CHexEscape(workflow_id), "\""));
  }
  if (!IsValidUtf8(workflow_id)) {
    return absl::InvalidArgumentError(
        absl::StrCat("workflow_id must be valid UTF-8: \"",
                     absl::CHexEscape(workflow_id), "\""));
  }
  return absl::OkStatus();
}

bool IsValidPhase(WorkflowPhase phase) {
  const int p = static_cast<int>(phase);
  return p >= static_cast<int>(WorkflowPhase::kRunning) &&
         p <= static_cast<int>(WorkflowPhase::kCancelled);
}

absl::Status ValidatePhase(WorkflowPhase phase) {
  if (!IsValidPhase(phase)) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown workflow phase ", static_cast<int>(phase)));
  }
  return absl::OkStatus();
}

absl::Status ValidateNonNegative(int value, absl::string_view what) {
  if (value < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must be >= 0, got ", value));
  }
  return absl::OkStatus();
}

absl::Status ValidatePut(const Checkpoint& checkpoint, WorkflowPhase phase,
                         int keep_last) {
  REFLEXION_RETURN_IF_ERROR(ValidateWorkflowId(checkpoint.workflow_id));
  REFLEXION_RETURN_IF_ERROR(ValidatePhase(phase));
  return ValidateNonNegative(keep_last, "keep_last");
}

absl::Status CheckNextStep(absl::string_view workflow_id, uint64_t step,
                           uint64_t last_step) {
  if (step <= last_step) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint step ", step, " of workflow ", workflow_id,
                     " is not after its last step ", last_step));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// InMemoryCheckpointStore
// ---------------------------------------------------------------------------

absl::Status InMemoryCheckpointStore::Put(const Checkpoint& checkpoint,
                                          WorkflowPhase phase, int keep_last,
                                          bool /*sync*/) {
  REFLEXION_RETURN_IF_ERROR(ValidatePut(checkpoint, phase, keep_last));
  absl::MutexLock lock(&mu_);
  auto it = workflows_.find(checkpoint.workflow_id);
  if (it != workflows_.end()) {
    REFLEXION_RETURN_IF_ERROR(CheckNextStep(
        checkpoint.workflow_id, checkpoint.step, it->second.record.last_step));
  } else {
    it = workflows_.emplace(checkpoint.workflow_id, Workflow()).first;
  }
  Workflow& w = it->second;
  w.record = WorkflowRecord{checkpoint.workflow_id, phase, checkpoint.step,
                            checkpoint.time};
  w.checkpoints[checkpoint.step] = checkpoint;
  if (keep_last > 0) {
    while (w.checkpoints.size() > static_cast<size_t>(keep_last)) {
      w.checkpoints.erase(w.checkpoints.begin());
    }
  }
  return absl::OkStatus();
}

absl::Status InMemoryCheckpointStore::SetPhase(absl::string_view workflow_id,
                                               WorkflowPhase phase,
                                               absl::Time now, bool /*sync*/) {
  REFLEXION_RETURN_IF_ERROR(ValidateWorkflowId(workflow_id));
  REFLEXION_RETURN_IF_ERROR(ValidatePhase(phase));
  absl::MutexLock lock(&mu_);
  auto it = workflows_.find(workflow_id);
  if (it == workflows_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown workflow ", workflow_id));
  }
  it->second.record.phase = phase;
  it->second.record.updated = now;
  return absl::OkStatus();
}

absl::StatusOr<WorkflowRecord> InMemoryCheckpointStore::GetWorkflow(
    absl::string_view workflow_id) {
  REFLEXION_RETURN_IF_ERROR(ValidateWorkflowId(workflow_id));
  absl::MutexLock lock(&mu_);
  auto it = workflows_.find(workflow_id);
  if (it == workflows_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown workflow ", workflow_id));
  }
  return it->second.record;
}

absl::StatusOr<Checkpoint> InMemoryCheckpointStore::Latest(
    absl::string_view workflow_id) {
  REFLEXION_RETURN_IF_ERROR(ValidateWorkflowId(workflow_id));
  absl::MutexLock lock(&mu_);
  auto it = workflows_.find(workflow_id);
  if (it == workflows_.end() || it->second.checkpoints.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no checkpoint of workflow ", workflow_id));
  }
  return std::prev(it->second.checkpoints.end())->second;
}

absl::StatusOr<Checkpoint> InMemoryCheckpointStore::Get(
    absl::string_view workflow_id, uint64_t step) {
  REFLEXION_RETURN_IF_ERROR(ValidateWorkflowId(workflow_id));
  absl::MutexLock lock(&mu_);
  auto it = workflows_.find(workflow_id);
  if (it != workflows_.end()) {
    auto cp = it->second.checkpoints.find(step);
    if (cp != it->second.checkpoints.end()) return cp->second;
  }
  return absl::NotFoundError(
      absl::StrCat("no checkpoint ", step, " of workflow ", workflow_id));
}

absl::StatusOr<std::vector<Checkpoint>> InMemoryCheckpointStore::List(
    absl::string_view workflow_id, int limit) {
  REFLEXION_RETURN_IF_ERROR(ValidateWorkflowId(workflow_id));
  REFLEXION_RETURN_IF_ERROR(ValidateNonNegative(limit, "limit"));
  absl::MutexLock lock(&mu_);
  std::vector<Checkpoint> out;
  auto it = workflows_.find(workflow_id);
  if (it == workflows_.end()) return out;
  for (auto cp = it->second.checkpoints.rbegin();
       cp != it->second.checkpoints.rend(); ++cp) {
    if (limit > 0 && out.size() == static_cast<size_t>(limit)) break;
    out.push_back(cp->second);
  }
  return out;
}

absl::StatusOr<std::vector<WorkflowRecord>>
InMemoryCheckpointStore::ListByPhase(WorkflowPhase phase) {
  REFLEXION_RETURN_IF_ERROR(ValidatePhase(phase));
  absl::MutexLock lock(&mu_);
  std::vector<WorkflowRecord> out;
  for (const auto& [id, w] : workflows_) {
    if (w.record.phase == phase) out.push_back(w.record);
  }
  return out;
}

absl::StatusOr<int> InMemoryCheckpointStore::ExpireFinished(
    absl::Time cutoff, int max_workflows, std::vector<std::string>* out) {
  REFLEXION_RETURN_IF_ERROR(
      ValidateNonNegative(max_workflows, "max_workflows"));
  absl::MutexLock lock(&mu_);
  // Oldest first, as the RocksDB store's time-ordered index yields them.
  std::vector<std::pair<absl::Time, std::string>> expired;
  for (const auto& [id, w] : workflows_) {
    if (IsTerminal(w.record.phase) && w.record.updated < cutoff) {
      expired.emplace_back(w.record.updated, id);
    }
  }
  std::sort(expired.begin(), expired.end());
  if (max_workflows > 0 &&
      expired.size() > static_cast<size_t>(max_workflows)) {
    expired.resize(max_workflows);
  }
  for (const auto& [updated, id] : expired) {
    workflows_.erase(id);
    if (out != nullptr) out->push_back(id);
  }
  return static_cast<int>(expired.size());
}

}  // namespace reflexion::core

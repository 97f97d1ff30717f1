#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/checkpoint_store.h"
#include "storage/rocksdb_db.h"

namespace reflexion::storage {

// core::CheckpointStore on RocksDB (column families workflows and
// checkpoints; key layout at the top of the .cc). Same contract and contract
// suite as core::InMemoryCheckpointStore: malformed workflow ids are
// kInvalidArgument everywhere, List of an unknown workflow is empty,
// ExpireFinished deletes the oldest (by updated time, then id) first.
//
// Every write is one WriteBatch (atomic, WAL-logged, fsynced when the call
// asks for `sync`). Reads never block writers. Put is the hot path (one
// call per node step of every workflow): it does no read in the common case
// because the store caches, per non-terminal workflow, its record and the
// steps of its retained checkpoints (bounded: a terminal workflow leaves the
// cache, and the cache holds at most ~128k workflows). Hence: use one store
// per RocksDb, and write the two column families through this store only.
//
// Thread-safe. Writers of the same workflow are serialised (so a
// non-increasing step is always rejected); writers of different workflows
// run in parallel and share RocksDB's group commit. ExpireFinished briefly
// excludes all writers while it deletes a batch. Storage failures are
// converted by FromRocksDbStatus; a stored value that does not decode is
// kDataLoss.
class RocksDbCheckpointStore final : public core::CheckpointStore {
 public:
  // `db` is not owned and must outlive the store. CHECK-fails when null.
  explicit RocksDbCheckpointStore(RocksDb* db);
  RocksDbCheckpointStore(const RocksDbCheckpointStore&) = delete;
  RocksDbCheckpointStore& operator=(const RocksDbCheckpointStore&) = delete;

  absl::Status Put(const core::Checkpoint& checkpoint,
                   core::WorkflowPhase phase, int keep_last,
                   bool sync) override;
  absl::Status SetPhase(absl::string_view workflow_id,
                        core::WorkflowPhase phase, absl::Time now,
                        bool sync) override;
  absl::StatusOr<core::WorkflowRecord> GetWorkflow(
      absl::string_view workflow_id) override;
  absl::StatusOr<core::Checkpoint> Latest(
      absl::string_view workflow_id) override;
  absl::StatusOr<core::Checkpoint> Get(absl::string_view workflow_id,
                                       uint64_t step) override;
  absl::StatusOr<std::vector<core::Checkpoint>> List(
      absl::string_view workflow_id, int limit) override;
  absl::StatusOr<std::vector<core::WorkflowRecord>> ListByPhase(
      core::WorkflowPhase phase) override;
  absl::StatusOr<int> ExpireFinished(absl::Time cutoff,
                                     int max_workflows) override;

 private:
  // What the store knows of a workflow's stored state.
  struct CachedWorkflow {
    core::WorkflowPhase phase = core::WorkflowPhase::kRunning;
    uint64_t last_step = 0;
    absl::Time updated;
    // Whether `steps` lists every stored checkpoint step (oldest first).
    // Tracked only while Put prunes (keep_last > 0), so it stays bounded.
    bool steps_known = false;
    std::vector<uint64_t> steps;
  };
  // Serialises the writers of the workflows hashed to it and owns their
  // cache entries.
  struct Stripe {
    absl::Mutex mu;
    absl::flat_hash_map<std::string, CachedWorkflow> cache ABSL_GUARDED_BY(mu);
  };
  static constexpr size_t kStripes = 32;
  static constexpr size_t kMaxCachedPerStripe = 4096;

  Stripe& StripeFor(absl::string_view workflow_id);
  // The cached state of `workflow_id`, read from the record on a miss;
  // nullptr when the workflow does not exist. The pointer is valid until the
  // stripe's cache next changes.
  absl::StatusOr<CachedWorkflow*> Load(Stripe& stripe,
                                       absl::string_view workflow_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stripe.mu);
  // Adds an entry, first evicting an arbitrary one when the stripe is full.
  CachedWorkflow& Insert(Stripe& stripe, absl::string_view workflow_id,
                         CachedWorkflow entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(stripe.mu);
  // Fills `w->steps` from the checkpoints column family.
  absl::Status LoadSteps(absl::string_view workflow_id, CachedWorkflow* w);

  RocksDb* const db_;
  rocksdb::ColumnFamilyHandle* const workflows_;
  rocksdb::ColumnFamilyHandle* const checkpoints_;
  // Shared by every writer, exclusive while ExpireFinished deletes a batch,
  // so an expiring workflow cannot be written at the same time.
  absl::Mutex expire_mu_;
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace reflexion::storage

#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/checkpoint_store.h"
#include "storage/rocksdb_db.h"

namespace rocksdb {
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace reflexion::storage {

// core::CheckpointStore on RocksDB (column families workflows and
// checkpoints; key layout at the top of the .cc). Same contract and contract
// suite as core::InMemoryCheckpointStore: malformed workflow ids are
// kInvalidArgument everywhere, List of an unknown workflow is empty,
// ExpireFinished deletes the oldest (by updated time, then id) first.
//
// Group commit: every write (Put, PutAsync, SetPhase, the deletions of
// ExpireFinished) goes through one queue and is applied by one thread at a
// time, in queue order, as one WriteBatch per batch: one WAL append (one
// fsync when any write in it asks for `sync`) for the checkpoints of many
// steps and many workflows. PutAsync returns once queued, so a run's next
// step overlaps the write of its previous checkpoint; a plain PutAsync may
// wait up to Options::max_delay for company. A write somebody waits for
// (Put, SetPhase, a sync PutAsync, AfterWrites, ExpireFinished) starts a
// batch at once: on the caller's thread when nobody is writing and no fsync
// is due (saving two thread hand-offs), else on the writer thread. Within a
// batch, a key written and deleted again (a checkpoint pruned by keep_last,
// a phase left before it was stored) is not written at all, and a key
// written twice is written once. The queue is bounded (kMaxQueuedBytes):
// producers block while it is full.
//
// Put is the hot path (one call per node step of every workflow): the
// writer does no read for it in the common case because it caches, per
// non-terminal workflow, its record and the steps of its retained
// checkpoints (bounded: a terminal workflow leaves the cache, and the cache
// holds at most kMaxCached workflows). Hence: use one store per RocksDb, and
// write the two column families through this store only. As one thread at
// a time applies writes, the cache needs no lock, and ExpireFinished never
// stops writers: it reads a chunk of expired workflows on the calling
// thread, then deletes (as a queued write) those not written since.
//
// Reads (GetWorkflow, Latest, Get, List, ListByPhase) read the database
// directly: they see every write whose `done` has run, and never block
// writers. Storage failures are converted by FromRocksDbStatus; a stored
// value that does not decode is kDataLoss. Thread-safe.
class RocksDbCheckpointStore final : public core::CheckpointStore {
 public:
  // Bytes of encoded checkpoints queued before PutAsync blocks.
  static constexpr size_t kMaxQueuedBytes = 16 << 20;
  struct Options {
    // A PutAsync (not sync) may wait this long for other writes to share
    // its batch; every other write, and kFlushBytes queued, starts a batch
    // at once. After a batch the writer polls the queue at this interval
    // kIdlePolls times (so producers need not wake it), then sleeps.
    absl::Duration max_delay = absl::Milliseconds(2);
  };
  static constexpr size_t kFlushBytes = 1 << 20;
  static constexpr int kIdlePolls = 50;
  // Workflows whose state the writer caches.
  static constexpr size_t kMaxCached = 131072;

  // `db` is not owned and must outlive the store. CHECK-fails when null.
  // Starts the writer thread.
  explicit RocksDbCheckpointStore(RocksDb* db);
  RocksDbCheckpointStore(RocksDb* db, Options options);
  RocksDbCheckpointStore(const RocksDbCheckpointStore&) = delete;
  RocksDbCheckpointStore& operator=(const RocksDbCheckpointStore&) = delete;
  // Writes everything queued (running its `done` callbacks), then stops the
  // writer thread. No call may start meanwhile.
  ~RocksDbCheckpointStore() override;

  absl::Status Put(const core::Checkpoint& checkpoint,
                   core::WorkflowPhase phase, int keep_last,
                   bool sync) override;
  void PutAsync(core::Checkpoint checkpoint, core::WorkflowPhase phase,
                int keep_last, bool sync, WriteDone done) override;
  void AfterWrites(absl::AnyInvocable<void() &&> done) override;
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
  absl::StatusOr<int> ExpireFinished(
      absl::Time cutoff, int max_workflows,
      std::vector<std::string>* expired = nullptr) override;

  // Batches written so far (each one WriteBatch), and the puts and deletes
  // in them, for benchmarks and tests.
  uint64_t batches_written() const {
    return batches_written_.load(std::memory_order_relaxed);
  }
  uint64_t keys_written() const {
    return keys_written_.load(std::memory_order_relaxed);
  }

 private:
  // What the store knows of a workflow's stored (or queued in the batch
  // being built) state.
  struct CachedWorkflow {
    core::WorkflowPhase phase = core::WorkflowPhase::kRunning;
    uint64_t last_step = 0;
    absl::Time updated;
    // Whether `steps` lists every stored checkpoint step (oldest first).
    // Tracked only while Put prunes (keep_last > 0), so it stays bounded.
    bool steps_known = false;
    std::vector<uint64_t> steps;
    // The batch that last changed this entry (see Writer::epoch).
    uint64_t epoch = 0;
  };
  // One expired workflow as ExpireFinished read it.
  struct Expiring {
    std::string id;
    std::string expiry_key;
    core::WorkflowPhase phase;
    bool has_phase_entry = false;  // written by an older build
    std::vector<std::string> checkpoint_keys;
  };
  // One queued write.
  struct Request {
    enum class Kind { kPut, kSetPhase, kBarrier, kExpire };
    Kind kind = Kind::kBarrier;
    std::string id;
    core::WorkflowPhase phase = core::WorkflowPhase::kRunning;
    uint64_t step = 0;       // kPut
    absl::Time time;         // kPut: the checkpoint's; kSetPhase: now
    std::string key, value;  // kPut: the encoded checkpoint
    int keep_last = 0;       // kPut
    bool sync = false;
    bool waited = false;  // a caller blocks on it (Put, SetPhase, ...)
    std::vector<Expiring>* expiring = nullptr;  // kExpire: read by the caller
    uint64_t scan_epoch = 0;                    // kExpire: of its snapshot
    int* expired = nullptr;                     // kExpire: how many deleted
    std::vector<std::string>* expired_ids = nullptr;  // kExpire: which
    WriteDone done;                         // kPut, kSetPhase, kExpire
    absl::AnyInvocable<void() &&> barrier;  // kBarrier
    size_t bytes() const { return key.size() + value.size() + 64; }
  };

  // The writes of one batch, before they become a WriteBatch: a write
  // overwritten or deleted later in the same batch is dropped, and a key
  // written and deleted in the same batch (a checkpoint pruned, a phase left
  // before it was stored) leaves no trace when it did not exist before.
  class BatchBuilder {
   public:
    // `fresh`: the key is known not to exist in the database.
    void Put(rocksdb::ColumnFamilyHandle* cf, std::string key,
             std::string value, bool fresh);
    void Delete(rocksdb::ColumnFamilyHandle* cf, std::string key);
    // Writes that survive.
    size_t live() const { return live_; }
    void BuildInto(rocksdb::WriteBatch* batch) const;
    void Clear();

   private:
    struct Op {
      rocksdb::ColumnFamilyHandle* cf;
      std::string key;
      std::string value;
      bool del;
      bool fresh;
      bool dead;
    };
    static std::string Tag(rocksdb::ColumnFamilyHandle* cf,
                           absl::string_view key);
    std::vector<Op> ops_;
    // The last op of each (family, key) in ops_.
    absl::flat_hash_map<std::string, size_t> last_;
    size_t live_ = 0;
  };

  void Enqueue(Request request);
  // Moves the queue into `requests`.
  void TakeQueue(std::vector<Request>& requests)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_);
  void WriterLoop();
  // Applies `requests` in order: one WriteBatch, split only where a request
  // must read what the requests before it wrote.
  void Process(std::vector<Request>& requests);
  // Writes the batch built from requests[begin, end) (whose statuses are
  // in `statuses`), then runs their callbacks in order.
  void Commit(std::vector<Request>& requests, size_t begin, size_t end,
              std::vector<absl::Status>& statuses);
  // Adds one request's writes to the batch being built. A non-OK status
  // (e.g. a non-increasing step) adds nothing.
  absl::Status ApplyPut(Request& r);
  absl::Status ApplySetPhase(Request& r);
  // Notes a write to a terminal workflow, for ExpireFinished.
  void NoteTerminalRewrite(absl::string_view id);
  // Notes an expiry entry of the batch being built for ExpireFinished.
  void NoteExpiryEntry(std::string key);
  // Deletes the workflows of an expire request not written since its scan.
  absl::Status ApplyExpire(Request& r);
  // The cached state of `workflow_id`, read from the record on a miss;
  // nullptr when the workflow does not exist.
  absl::StatusOr<CachedWorkflow*> Load(absl::string_view workflow_id);
  CachedWorkflow& Insert(absl::string_view workflow_id, CachedWorkflow entry);
  // Fills `w->steps` from the checkpoints column family.
  absl::Status LoadSteps(absl::string_view workflow_id, CachedWorkflow* w);
  // Whether the batch being built must be written before `r` is applied
  // (because `r` reads what it holds).
  bool NeedsCommitBefore(const Request& r) const;
  // Validates and encodes a Put.
  static absl::StatusOr<Request> MakePut(const core::Checkpoint& checkpoint,
                                         core::WorkflowPhase phase,
                                         int keep_last, bool sync);
  // Queues `r` and waits for its outcome.
  absl::Status Wait(Request r);

  RocksDb* const db_;
  const Options options_;
  rocksdb::ColumnFamilyHandle* const workflows_;
  rocksdb::ColumnFamilyHandle* const checkpoints_;

  absl::Mutex queue_mu_;
  std::vector<Request> queue_ ABSL_GUARDED_BY(queue_mu_);
  size_t queued_bytes_ ABSL_GUARDED_BY(queue_mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool writer_idle_ ABSL_GUARDED_BY(queue_mu_) = false;
  bool writer_asleep_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Whether a thread (the writer, or a caller that found it idle) is
  // processing a batch: at most one does, in queue order.
  bool writing_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Whether a queued request asks for fsync (written by the writer thread).
  bool sync_queued_ ABSL_GUARDED_BY(queue_mu_) = false;
  // Whether a queued request is waited for.
  bool urgent_ ABSL_GUARDED_BY(queue_mu_) = false;
  absl::CondVar work_cv_;   // the writer waits for requests
  absl::CondVar space_cv_;  // producers wait while the queue is full

  // Owned by the writer thread.
  struct Writer {
    absl::flat_hash_map<std::string, CachedWorkflow> cache;
    // Numbers the batches; the one being built is `epoch`.
    uint64_t epoch = 1;
    BatchBuilder batch;
    bool sync = false;
    // Workflows made terminal in the batch being built: they leave the
    // cache once it is written.
    std::vector<std::string> terminal;
    // The lowest expiry entry of the batch being built ("" = none).
    std::string lowest_expiry;
    // Terminal workflows written since the oldest pending expiry scan, with
    // the epoch of that write; before `rewritten_forgotten_before`, unknown.
    absl::flat_hash_map<std::string, uint64_t> rewritten;
    uint64_t rewritten_forgotten_before = 0;
  } writer_;
  std::atomic<uint64_t> batches_written_{0};
  // The epoch of the last batch in the database (0: none yet).
  std::atomic<uint64_t> committed_epoch_{0};
  static constexpr size_t kMaxRewritten = 1 << 16;
  std::atomic<uint64_t> keys_written_{0};

  // ExpireFinished: one call at a time; where its next scan starts (the
  // last entry it read; "" = the start).
  absl::Mutex expire_mu_;
  std::string expire_from_ ABSL_GUARDED_BY(expire_mu_);
  // The lowest expiry entry written since the last scan began ("" = none).
  absl::Mutex expiry_written_mu_ ABSL_ACQUIRED_AFTER(expire_mu_);
  std::string lowest_expiry_written_ ABSL_GUARDED_BY(expiry_written_mu_);
  std::thread writer_thread_;
};

}  // namespace reflexion::storage

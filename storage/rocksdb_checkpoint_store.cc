// Key layout (integers big-endian so keys sort numerically; '\0' ends a
// workflow id inside a checkpoint key, which is why ids may not contain NUL):
//
//   workflows    r <workflow_id>                    -> record
//                p <phase: 1 byte> <workflow_id>    -> ""  (running, waiting)
//                e <updated: 12 bytes> <workflow_id> -> <phase | 0x80: 1 byte>
//                                                      [<step: 8 bytes>...]
//                The record, the phase index of live workflows (ListByPhase
//                reads one prefix, ordered by id; a terminal workflow
//                written by an older build also has one, flag 0x80 clear)
//                and the expiry index: terminal workflows only, ordered by
//                (updated, id), which ListByPhase of a terminal phase reads
//                (then sorts by id), and so that ExpireFinished reads
//                exactly the workflows it deletes, oldest first, and with
//                the steps of their retained checkpoints when the store
//                tracked them (keep_last > 0), so it need not list them.
//                The record is rewritten when a workflow is created, changes
//                phase or is terminal, not on a Put that keeps a running or
//                waiting phase: readers take last_step and updated from the
//                latest checkpoint when it is newer than the record.
//   checkpoints  <workflow_id> \0 <step: 8 bytes>   -> checkpoint
//                A workflow's history is a prefix scan; the latest is the
//                last key of the prefix.
//
// Values use a small fixed encoding (no proto exists for them):
//   time        seconds since the epoch as 8 bytes with the sign bit flipped
//               (so byte order is time order), then nanoseconds, 4 bytes.
//               Infinite past / future are (INT64_MIN, 0) / (INT64_MAX, ~0).
//   record      <format 1> <phase 1> <last_step 8> <updated 12>
//   checkpoint  <format 1> <step 8> <last_sequence 8> <time 12>
//               <parent_step 8>, then node, next_node, parent_workflow_id
//               and state, each as <length 4> <bytes>, and error the same
//               way when not empty. The workflow id is the key's.
//
// Put writes the checkpoint, the record and index changes (when needed) and
// the deletion of the checkpoints beyond keep_last in one WriteBatch: in the
// steady state one Put and one Delete, whose two memtable inserts are what a
// Put costs. The steps to delete come from the in-memory cache of each
// non-terminal workflow's retained steps (normally the one oldest key), so
// Put reads nothing in the steady state. ExpireFinished deletes checkpoints
// with point deletes of the keys it iterates rather than DeleteRange: every
// DeleteRange invalidates the memtable's fragmented range-tombstone list,
// which the next read of the family rebuilds from all of them, so one range
// tombstone per expired workflow would tax every later Latest/Get; a
// retained history is only keep_last keys.

#include "storage/rocksdb_checkpoint_store.h"

#include <algorithm>
#include <limits>
#include <memory>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "rocksdb/db.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/snapshot.h"
#include "rocksdb/write_batch.h"
#include "storage/rocksdb_status.h"

namespace reflexion::storage {
namespace {

using core::Checkpoint;
using core::WorkflowPhase;
using core::WorkflowRecord;

constexpr char kRecordPrefix = 'r';
constexpr char kPhasePrefix = 'p';
// Set in an expiry entry's phase byte when the terminal workflow has no
// phase-index entry (entries written before it have one).
constexpr uint8_t kNoPhaseEntryFlag = 0x80;
constexpr char kExpiryPrefix = 'e';
constexpr char kSeparator = '\0';
constexpr char kFormat = 1;
constexpr size_t kStepBytes = 8;
constexpr size_t kTimeBytes = 12;
constexpr size_t kRecordBytes = 1 + 1 + 8 + kTimeBytes;
constexpr size_t kCheckpointFixedBytes = 1 + 8 + 8 + kTimeBytes + 8;
constexpr size_t kCheckpointTimeOffset = 1 + 8 + 8;
// Workflows deleted per WriteBatch (and per exclusive hold of the writers'
// lock) by ExpireFinished.
constexpr int kExpireChunk = 256;

rocksdb::Slice ToSlice(absl::string_view s) {
  return rocksdb::Slice(s.data(), s.size());
}
absl::string_view ToView(const rocksdb::Slice& s) {
  return absl::string_view(s.data(), s.size());
}
std::string Printable(absl::string_view key) { return absl::CHexEscape(key); }

// --- Fixed-width encoding ---------------------------------------------------

void AppendU32(std::string* out, uint32_t v) {
  char buf[4];
  for (int i = 0; i < 4; ++i) buf[i] = static_cast<char>(v >> (24 - 8 * i));
  out->append(buf, 4);
}
void AppendU64(std::string* out, uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>(v >> (56 - 8 * i));
  out->append(buf, 8);
}
uint64_t ReadUnsigned(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

constexpr uint64_t kSignBit = uint64_t{1} << 63;
constexpr uint32_t kInfiniteFutureNanos = std::numeric_limits<uint32_t>::max();

void AppendTime(std::string* out, absl::Time t) {
  int64_t seconds;
  uint32_t nanos;
  if (t == absl::InfiniteFuture()) {
    seconds = std::numeric_limits<int64_t>::max();
    nanos = kInfiniteFutureNanos;
  } else if (t == absl::InfinitePast()) {
    seconds = std::numeric_limits<int64_t>::min();
    nanos = 0;
  } else {
    seconds = absl::ToUnixSeconds(t);  // floor
    nanos = static_cast<uint32_t>((t - absl::FromUnixSeconds(seconds)) /
                                  absl::Nanoseconds(1));
  }
  AppendU64(out, static_cast<uint64_t>(seconds) ^ kSignBit);
  AppendU32(out, nanos);
}
absl::Time ReadTime(const char* p) {
  const int64_t seconds = static_cast<int64_t>(ReadUnsigned(p, 8) ^ kSignBit);
  const uint32_t nanos = static_cast<uint32_t>(ReadUnsigned(p + 8, 4));
  if (seconds == std::numeric_limits<int64_t>::max() &&
      nanos == kInfiniteFutureNanos) {
    return absl::InfiniteFuture();
  }
  if (seconds == std::numeric_limits<int64_t>::min() && nanos == 0) {
    return absl::InfinitePast();
  }
  return absl::FromUnixSeconds(seconds) + absl::Nanoseconds(nanos);
}

// --- Keys -------------------------------------------------------------------

std::string RecordKey(absl::string_view id) {
  std::string key(1, kRecordPrefix);
  key.append(id.data(), id.size());
  return key;
}
std::string PhasePrefix(WorkflowPhase phase) {
  return {kPhasePrefix, static_cast<char>(phase)};
}
std::string PhaseKey(WorkflowPhase phase, absl::string_view id) {
  std::string key = PhasePrefix(phase);
  key.append(id.data(), id.size());
  return key;
}
std::string ExpiryKey(absl::Time updated, absl::string_view id) {
  std::string key(1, kExpiryPrefix);
  AppendTime(&key, updated);
  key.append(id.data(), id.size());
  return key;
}
std::string CheckpointPrefix(absl::string_view id) {
  std::string key;
  key.reserve(id.size() + 1 + kStepBytes);
  key.append(id.data(), id.size());
  key.push_back(kSeparator);
  return key;
}
std::string CheckpointKey(absl::string_view id, uint64_t step) {
  std::string key = CheckpointPrefix(id);
  AppendU64(&key, step);
  return key;
}

// The smallest key above every key starting with `prefix`, which must not
// be empty nor end with 0xff (none of ours do: they end with the separator
// or a phase byte).
std::string PrefixEnd(absl::string_view prefix) {
  DCHECK(!prefix.empty() && static_cast<uint8_t>(prefix.back()) != 0xff);
  std::string end(prefix);
  end.back() = static_cast<char>(end.back() + 1);
  return end;
}

// --- Values -----------------------------------------------------------------

std::string EncodeRecord(WorkflowPhase phase, uint64_t last_step,
                         absl::Time updated) {
  std::string out;
  out.reserve(kRecordBytes);
  out.push_back(kFormat);
  out.push_back(static_cast<char>(phase));
  AppendU64(&out, last_step);
  AppendTime(&out, updated);
  return out;
}

absl::StatusOr<WorkflowRecord> DecodeRecord(absl::string_view id,
                                            absl::string_view value) {
  if (value.size() != kRecordBytes || value[0] != kFormat ||
      !core::IsValidPhase(static_cast<WorkflowPhase>(value[1]))) {
    return absl::DataLossError(absl::StrCat(
        "cannot decode the workflows record of \"", Printable(id), "\""));
  }
  WorkflowRecord r;
  r.workflow_id = std::string(id);
  r.phase = static_cast<WorkflowPhase>(value[1]);
  r.last_step = ReadUnsigned(value.data() + 2, 8);
  r.updated = ReadTime(value.data() + 10);
  return r;
}

absl::Status AppendField(std::string* out, const std::string& field,
                         absl::string_view name) {
  if (field.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", name, " is too large: ", field.size(),
                     " bytes (at most 4 GiB)"));
  }
  AppendU32(out, static_cast<uint32_t>(field.size()));
  out->append(field);
  return absl::OkStatus();
}

absl::StatusOr<std::string> EncodeCheckpoint(const Checkpoint& c) {
  std::string out;
  out.reserve(kCheckpointFixedBytes + 16 + c.node.size() + c.next_node.size() +
              c.parent_workflow_id.size() + c.state.size());
  out.push_back(kFormat);
  AppendU64(&out, c.step);
  AppendU64(&out, c.last_sequence);
  AppendTime(&out, c.time);
  AppendU64(&out, c.parent_step);
  REFLEXION_RETURN_IF_ERROR(AppendField(&out, c.node, "node"));
  REFLEXION_RETURN_IF_ERROR(AppendField(&out, c.next_node, "next_node"));
  REFLEXION_RETURN_IF_ERROR(
      AppendField(&out, c.parent_workflow_id, "parent_workflow_id"));
  REFLEXION_RETURN_IF_ERROR(AppendField(&out, c.state, "state"));
  if (!c.error.empty()) {
    REFLEXION_RETURN_IF_ERROR(AppendField(&out, c.error, "error"));
  }
  return out;
}

// Decodes the checkpoint stored at `key` (a checkpoints key).
absl::StatusOr<Checkpoint> DecodeCheckpoint(absl::string_view key,
                                            absl::string_view value) {
  auto corrupt = [&] {
    return absl::DataLossError(absl::StrCat(
        "cannot decode the checkpoints value at key \"", Printable(key), "\""));
  };
  if (key.size() < kStepBytes + 2 ||
      key[key.size() - kStepBytes - 1] != kSeparator) {
    return corrupt();
  }
  if (value.size() < kCheckpointFixedBytes || value[0] != kFormat) {
    return corrupt();
  }
  Checkpoint c;
  c.workflow_id = std::string(key.substr(0, key.size() - kStepBytes - 1));
  c.step = ReadUnsigned(value.data() + 1, 8);
  if (c.step != ReadUnsigned(key.data() + key.size() - kStepBytes, 8)) {
    return corrupt();
  }
  c.last_sequence = ReadUnsigned(value.data() + 9, 8);
  c.time = ReadTime(value.data() + kCheckpointTimeOffset);
  c.parent_step =
      ReadUnsigned(value.data() + kCheckpointTimeOffset + kTimeBytes, 8);
  absl::string_view rest = value.substr(kCheckpointFixedBytes);
  for (std::string* field :
       {&c.node, &c.next_node, &c.parent_workflow_id, &c.state}) {
    if (rest.size() < 4) return corrupt();
    const uint64_t n = ReadUnsigned(rest.data(), 4);
    if (rest.size() - 4 < n) return corrupt();
    field->assign(rest.data() + 4, n);
    rest.remove_prefix(4 + n);
  }
  // Written since the error field exists, and only when set.
  if (!rest.empty()) {
    if (rest.size() < 4) return corrupt();
    const uint64_t n = ReadUnsigned(rest.data(), 4);
    if (rest.size() - 4 != n) return corrupt();
    c.error.assign(rest.data() + 4, n);
  }
  return c;
}

// --- RocksDB helpers --------------------------------------------------------

// An iterator confined to the keys in [lower, upper). The bounds live here
// because ReadOptions only points at them.
class BoundedIterator {
 public:
  BoundedIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf,
                  rocksdb::ReadOptions options, std::string lower,
                  std::string upper)
      : lower_(std::move(lower)),
        upper_(std::move(upper)),
        lower_slice_(ToSlice(lower_)),
        upper_slice_(ToSlice(upper_)) {
    options.iterate_lower_bound = &lower_slice_;
    options.iterate_upper_bound = &upper_slice_;
    it_.reset(db->NewIterator(options, cf));
  }
  // Every key starting with `prefix`.
  static BoundedIterator ForPrefix(rocksdb::DB* db,
                                   rocksdb::ColumnFamilyHandle* cf,
                                   const rocksdb::ReadOptions& options,
                                   std::string prefix) {
    std::string end = PrefixEnd(prefix);
    // Guaranteed copy elision: built in place, never moved.
    return BoundedIterator(db, cf, options, std::move(prefix), std::move(end));
  }
  // The bounds point into this object: it must not move.
  BoundedIterator(const BoundedIterator&) = delete;
  BoundedIterator& operator=(const BoundedIterator&) = delete;

  rocksdb::Iterator* operator->() const { return it_.get(); }
  absl::string_view key() const { return ToView(it_->key()); }
  absl::string_view value() const { return ToView(it_->value()); }

 private:
  std::string lower_;
  std::string upper_;
  rocksdb::Slice lower_slice_;
  rocksdb::Slice upper_slice_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

// The stored record of `id`; kNotFound when the workflow does not exist.
absl::StatusOr<WorkflowRecord> ReadRecord(rocksdb::DB* db,
                                          rocksdb::ColumnFamilyHandle* cf,
                                          const rocksdb::ReadOptions& options,
                                          absl::string_view id) {
  std::string value;
  rocksdb::Status s = db->Get(options, cf, RecordKey(id), &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(absl::StrCat("unknown workflow ", id));
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      s, absl::StrCat("read the record of workflow ", Printable(id))));
  return DecodeRecord(id, value);
}

// The step of a checkpoints key of `id` (whose prefix the caller checked).
absl::StatusOr<uint64_t> StepOf(absl::string_view key, absl::string_view id) {
  if (key.size() != id.size() + 1 + kStepBytes) {
    return absl::DataLossError(
        absl::StrCat("malformed checkpoints key \"", Printable(key), "\""));
  }
  return ReadUnsigned(key.data() + id.size() + 1, kStepBytes);
}

// The current record of `id`: the stored one, with last_step and updated
// taken from the latest checkpoint when that is newer (Put does not rewrite
// the record of a workflow that stays in the same non-terminal phase).
// kNotFound when the workflow does not exist.
absl::StatusOr<WorkflowRecord> ReadWorkflow(
    rocksdb::DB* db, rocksdb::ColumnFamilyHandle* workflows,
    rocksdb::ColumnFamilyHandle* checkpoints,
    const rocksdb::ReadOptions& options, absl::string_view id) {
  REFLEXION_ASSIGN_OR_RETURN(WorkflowRecord r,
                             ReadRecord(db, workflows, options, id));
  if (core::IsTerminal(r.phase)) return r;  // always written when terminal
  BoundedIterator it = BoundedIterator::ForPrefix(db, checkpoints, options,
                                                  CheckpointPrefix(id));
  it->SeekToLast();
  if (it->Valid()) {
    REFLEXION_ASSIGN_OR_RETURN(const uint64_t step, StepOf(it.key(), id));
    if (step > r.last_step) {
      const absl::string_view value = it.value();
      if (value.size() < kCheckpointFixedBytes) {
        return absl::DataLossError(
            absl::StrCat("cannot decode the checkpoints value at key \"",
                         Printable(it.key()), "\""));
      }
      r.last_step = step;
      r.updated = ReadTime(value.data() + kCheckpointTimeOffset);
    }
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      it->status(),
      absl::StrCat("read the latest checkpoint of workflow ", id)));
  return r;
}

}  // namespace

// --- BatchBuilder
// -------------------------------------------------------------

void RocksDbCheckpointStore::BatchBuilder::Put(rocksdb::ColumnFamilyHandle* cf,
                                               std::string key,
                                               std::string value, bool fresh) {
  std::string tag = Tag(cf, key);
  auto it = last_.find(tag);
  if (it != last_.end()) {
    Op& previous = ops_[it->second];
    // Overwritten in the same batch: only the last value is written. A key
    // that was new before the earlier write still is.
    fresh = fresh || (!previous.del && previous.fresh);
    previous.dead = true;
    --live_;
    it->second = ops_.size();
  } else {
    last_.emplace(std::move(tag), ops_.size());
  }
  ops_.push_back(Op{cf, std::move(key), std::move(value), false, fresh, false});
  ++live_;
}

void RocksDbCheckpointStore::BatchBuilder::Delete(
    rocksdb::ColumnFamilyHandle* cf, std::string key) {
  std::string tag = Tag(cf, key);
  auto it = last_.find(tag);
  if (it != last_.end()) {
    Op& previous = ops_[it->second];
    if (previous.del) return;  // already deleted
    previous.dead = true;
    --live_;
    if (previous.fresh) {
      // Written and deleted in the same batch, absent before: no trace.
      last_.erase(it);
      return;
    }
    it->second = ops_.size();
  } else {
    last_.emplace(std::move(tag), ops_.size());
  }
  ops_.push_back(Op{cf, std::move(key), std::string(), true, false, false});
  ++live_;
}

void RocksDbCheckpointStore::BatchBuilder::BuildInto(
    rocksdb::WriteBatch* batch) const {
  // Each key has one live op, so their order within the (atomic) batch does
  // not matter: in key order, each memtable insert starts from where the
  // previous one ended (the skip list's sequential splice) instead of
  // searching from the top.
  std::vector<const Op*> live;
  live.reserve(live_);
  for (const Op& op : ops_) {
    if (!op.dead) live.push_back(&op);
  }
  std::sort(live.begin(), live.end(), [](const Op* a, const Op* b) {
    return a->cf != b->cf ? a->cf->GetID() < b->cf->GetID() : a->key < b->key;
  });
  // WriteBatch::Put/Delete on a column family only fail for a batch over
  // its size limit, which ours do not set.
  for (const Op* live_op : live) {
    const Op& op = *live_op;
    if (op.del) {
      (void)batch->Delete(op.cf, op.key);
    } else {
      (void)batch->Put(op.cf, op.key, op.value);
    }
  }
}

void RocksDbCheckpointStore::BatchBuilder::Clear() {
  ops_.clear();
  last_.clear();
  live_ = 0;
}

std::string RocksDbCheckpointStore::BatchBuilder::Tag(
    rocksdb::ColumnFamilyHandle* cf, absl::string_view key) {
  std::string tag;
  tag.reserve(sizeof(cf) + key.size());
  tag.append(reinterpret_cast<const char*>(&cf), sizeof(cf));
  tag.append(key.data(), key.size());
  return tag;
}

namespace {

// The expiry entry's value: the phase, then the workflow's retained steps
// when they are known (`steps` not null), so ExpireFinished need not list
// them.
std::string EncodeExpiry(WorkflowPhase phase,
                         const std::vector<uint64_t>* steps) {
  std::string out(
      1, static_cast<char>(static_cast<uint8_t>(phase) | kNoPhaseEntryFlag));
  if (steps != nullptr) {
    out.reserve(1 + kStepBytes * steps->size());
    for (uint64_t step : *steps) AppendU64(&out, step);
  }
  return out;
}

// Adds to `batch` the index changes of a workflow going from `old` (nullptr
// for a new workflow) to (`phase`, `updated`); `steps`: its retained
// checkpoint steps when known (else null).
template <typename Batch, typename Old>
void UpdateIndexes(Batch* batch, rocksdb::ColumnFamilyHandle* cf,
                   absl::string_view id, const Old* old, WorkflowPhase phase,
                   absl::Time updated, const std::vector<uint64_t>* steps) {
  // Only live (running, waiting) workflows have a phase entry: terminal ones
  // are listed by the expiry index. (A terminal workflow written by an
  // older build has one: deleted when it leaves its phase, at a write's
  // cost.)
  if (old == nullptr || old->phase != phase) {
    if (old != nullptr) batch->Delete(cf, PhaseKey(old->phase, id));
    if (!core::IsTerminal(phase)) {
      // No workflow has two phases: the key is new.
      batch->Put(cf, PhaseKey(phase, id), std::string(), /*fresh=*/true);
    }
  }
  if (old != nullptr && core::IsTerminal(old->phase)) {
    batch->Delete(cf, ExpiryKey(old->updated, id));
  }
  if (core::IsTerminal(phase)) {
    batch->Put(cf, ExpiryKey(updated, id), EncodeExpiry(phase, steps),
               /*fresh=*/false);
  }
}

}  // namespace

RocksDbCheckpointStore::RocksDbCheckpointStore(RocksDb* db)
    : RocksDbCheckpointStore(db, Options()) {}

RocksDbCheckpointStore::RocksDbCheckpointStore(RocksDb* db, Options options)
    : db_(CHECK_NOTNULL(db)),
      options_(options),
      workflows_(db->ColumnFamily("workflows")),
      checkpoints_(db->ColumnFamily("checkpoints")) {
  writer_thread_ = std::thread([this] { WriterLoop(); });
}

RocksDbCheckpointStore::~RocksDbCheckpointStore() {
  {
    absl::MutexLock lock(&queue_mu_);
    stopping_ = true;
    work_cv_.Signal();
    space_cv_.SignalAll();
  }
  writer_thread_.join();
}

// --- The queue
// ----------------------------------------------------------------

void RocksDbCheckpointStore::Enqueue(Request request) {
  // A caller waits for every request but a plain PutAsync: those may wait
  // for company (group commit) up to max_delay.
  const bool urgent =
      request.kind != Request::Kind::kPut || request.sync || request.waited;
  std::vector<Request> requests;
  {
    absl::MutexLock lock(&queue_mu_);
    DCHECK(!stopping_) << "write to a RocksDbCheckpointStore being destroyed";
    while (queued_bytes_ >= kMaxQueuedBytes && !stopping_) {
      space_cv_.Wait(&queue_mu_);
    }
    queued_bytes_ += request.bytes();
    sync_queued_ = sync_queued_ || request.sync;
    queue_.push_back(std::move(request));
    urgent_ = urgent_ || urgent;
    if (urgent && !writing_ && !sync_queued_) {
      // Nobody is writing and the batch needs no fsync: write it on this
      // thread rather than wake the writer thread and wait for it.
      writing_ = true;
      TakeQueue(requests);
    } else {
      // A polling writer finds a plain PutAsync within max_delay by itself;
      // a sleeping one needs the first to start its clock.
      if (writer_idle_ && (urgent_ || queued_bytes_ >= kFlushBytes ||
                           (writer_asleep_ && queue_.size() == 1))) {
        writer_idle_ = false;
        work_cv_.Signal();
      }
      return;
    }
  }
  Process(requests);
  absl::MutexLock lock(&queue_mu_);
  writing_ = false;
  // What arrived meanwhile is the writer thread's.
  if (writer_idle_ && !queue_.empty()) {
    writer_idle_ = false;
    work_cv_.Signal();
  }
}

void RocksDbCheckpointStore::TakeQueue(std::vector<Request>& requests) {
  requests.swap(queue_);
  if (queued_bytes_ >= kMaxQueuedBytes) space_cv_.SignalAll();
  queued_bytes_ = 0;
  urgent_ = false;
  sync_queued_ = false;
}

void RocksDbCheckpointStore::WriterLoop() {
  std::vector<Request> requests;
  // Empty polls since the last batch: after kIdlePolls the writer sleeps
  // until a producer wakes it.
  int idle_polls = 0;
  while (true) {
    {
      absl::MutexLock lock(&queue_mu_);
      // Write when someone waits, when enough is queued, or when a request
      // has waited up to max_delay; never while a caller writes.
      bool due = false;
      while (writing_ ||
             (!stopping_ && !urgent_ && queued_bytes_ < kFlushBytes && !due)) {
        const absl::Time wake =
            !writing_ && (!queue_.empty() || idle_polls < kIdlePolls)
                ? absl::Now() + options_.max_delay
                : absl::InfiniteFuture();
        writer_idle_ = true;
        writer_asleep_ = wake == absl::InfiniteFuture();
        const bool timed_out = work_cv_.WaitWithDeadline(&queue_mu_, wake);
        writer_asleep_ = false;
        if (timed_out) {
          if (!queue_.empty()) {
            due = true;
          } else {
            ++idle_polls;
          }
        }
      }
      writer_idle_ = false;
      if (queue_.empty()) {
        if (stopping_) return;  // everything is written
        continue;
      }
      idle_polls = 0;
      writing_ = true;
      TakeQueue(requests);
    }
    Process(requests);
    requests.clear();
    absl::MutexLock lock(&queue_mu_);
    writing_ = false;
  }
}

// --- The writer thread
// ----------------------------------------------------------

bool RocksDbCheckpointStore::NeedsCommitBefore(const Request& r) const {
  if (r.kind == Request::Kind::kExpire) return true;
  if (r.kind != Request::Kind::kPut || r.keep_last == 0) return false;
  // Pruning a workflow whose retained steps are unknown reads them from
  // the database, which must then hold this batch's writes of it.
  auto it = writer_.cache.find(r.id);
  return it != writer_.cache.end() && !it->second.steps_known &&
         it->second.epoch == writer_.epoch;
}

void RocksDbCheckpointStore::Process(std::vector<Request>& requests) {
  if (writer_.cache.size() > kMaxCached) {
    // Any entries will do: an evicted workflow is re-read on its next
    // write. Nothing is pending between batches.
    size_t excess = writer_.cache.size() - kMaxCached * 7 / 8;
    for (auto it = writer_.cache.begin();
         it != writer_.cache.end() && excess > 0; --excess) {
      writer_.cache.erase(it++);
    }
  }
  std::vector<absl::Status> statuses(requests.size());
  size_t begin = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    Request& r = requests[i];
    if (i > begin && NeedsCommitBefore(r)) {
      Commit(requests, begin, i, statuses);
      begin = i;
    }
    switch (r.kind) {
      case Request::Kind::kPut:
        statuses[i] = ApplyPut(r);
        break;
      case Request::Kind::kSetPhase:
        statuses[i] = ApplySetPhase(r);
        break;
      case Request::Kind::kExpire:
        statuses[i] = ApplyExpire(r);  // writes its own batch
        break;
      case Request::Kind::kBarrier:
        break;
    }
  }
  Commit(requests, begin, requests.size(), statuses);
}

void RocksDbCheckpointStore::Commit(std::vector<Request>& requests,
                                    size_t begin, size_t end,
                                    std::vector<absl::Status>& statuses) {
  if (writer_.batch.live() > 0) {
    rocksdb::WriteBatch batch;
    writer_.batch.BuildInto(&batch);
    rocksdb::WriteOptions options;
    options.sync = writer_.sync;
    const rocksdb::Status written = db_->Write(options, &batch);
    batches_written_.fetch_add(1, std::memory_order_relaxed);
    keys_written_.fetch_add(batch.Count(), std::memory_order_relaxed);
    if (written.ok() && !writer_.lowest_expiry.empty()) {
      absl::MutexLock lock(&expiry_written_mu_);
      if (lowest_expiry_written_.empty() ||
          writer_.lowest_expiry < lowest_expiry_written_) {
        lowest_expiry_written_ = writer_.lowest_expiry;
      }
    }
    if (!written.ok()) {
      for (size_t i = begin; i < end; ++i) {
        const Request& r = requests[i];
        if (!statuses[i].ok()) continue;
        if (r.kind == Request::Kind::kPut) {
          statuses[i] = FromRocksDbStatus(
              written,
              absl::StrCat("put checkpoint ", r.step, " of workflow ", r.id));
        } else if (r.kind == Request::Kind::kSetPhase) {
          statuses[i] = FromRocksDbStatus(
              written, absl::StrCat("set the phase of workflow ", r.id, " to ",
                                    core::WorkflowPhaseName(r.phase)));
        }
      }
      // The stored state is uncertain: re-read it next time.
      writer_.cache.clear();
    }
  }
  writer_.batch.Clear();
  writer_.lowest_expiry.clear();
  writer_.sync = false;
  // No further step will run: keep the cache to live workflows.
  for (const std::string& id : writer_.terminal) {
    auto it = writer_.cache.find(id);
    if (it != writer_.cache.end() && core::IsTerminal(it->second.phase)) {
      writer_.cache.erase(it);
    }
  }
  writer_.terminal.clear();
  committed_epoch_.store(writer_.epoch, std::memory_order_release);
  ++writer_.epoch;
  for (size_t i = begin; i < end; ++i) {
    Request& r = requests[i];
    if (r.kind == Request::Kind::kBarrier) {
      std::move(r.barrier)();
    } else {
      std::move(r.done)(std::move(statuses[i]));
    }
  }
}

RocksDbCheckpointStore::CachedWorkflow& RocksDbCheckpointStore::Insert(
    absl::string_view workflow_id, CachedWorkflow entry) {
  return writer_.cache
      .insert_or_assign(std::string(workflow_id), std::move(entry))
      .first->second;
}

absl::StatusOr<RocksDbCheckpointStore::CachedWorkflow*>
RocksDbCheckpointStore::Load(absl::string_view workflow_id) {
  auto it = writer_.cache.find(workflow_id);
  if (it != writer_.cache.end()) return &it->second;
  // No snapshot needed: only this thread writes. A workflow with writes in
  // the batch being built is always cached.
  absl::StatusOr<WorkflowRecord> record = ReadWorkflow(
      db_->db(), workflows_, checkpoints_, rocksdb::ReadOptions(), workflow_id);
  if (absl::IsNotFound(record.status())) return nullptr;
  if (!record.ok()) return record.status();
  CachedWorkflow entry;
  entry.phase = record->phase;
  entry.last_step = record->last_step;
  entry.updated = record->updated;
  return &Insert(workflow_id, std::move(entry));
}

absl::Status RocksDbCheckpointStore::LoadSteps(absl::string_view workflow_id,
                                               CachedWorkflow* w) {
  BoundedIterator it = BoundedIterator::ForPrefix(
      db_->db(), checkpoints_, rocksdb::ReadOptions(),
      CheckpointPrefix(workflow_id));
  std::vector<uint64_t> steps;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    REFLEXION_ASSIGN_OR_RETURN(const uint64_t step,
                               StepOf(it.key(), workflow_id));
    steps.push_back(step);
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      it->status(),
      absl::StrCat("list the checkpoints of workflow ", workflow_id)));
  w->steps = std::move(steps);
  w->steps_known = true;
  return absl::OkStatus();
}

absl::Status RocksDbCheckpointStore::ApplyPut(Request& r) {
  const absl::string_view id = r.id;
  REFLEXION_ASSIGN_OR_RETURN(CachedWorkflow * w, Load(id));
  if (w != nullptr) {
    REFLEXION_RETURN_IF_ERROR(core::CheckNextStep(id, r.step, w->last_step));
    if (core::IsTerminal(w->phase)) NoteTerminalRewrite(id);
    if (r.keep_last > 0 && !w->steps_known) {
      REFLEXION_RETURN_IF_ERROR(LoadSteps(id, w));
    }
  }
  BatchBuilder& batch = writer_.batch;
  // A step above the last one: the key is new.
  batch.Put(checkpoints_, std::move(r.key), std::move(r.value),
            /*fresh=*/true);
  // Steps are increasing: the checkpoints beyond keep_last are the oldest
  // retained ones, usually exactly one.
  size_t prune = 0;
  if (w != nullptr && r.keep_last > 0) {
    const size_t total = w->steps.size() + 1;
    prune = total > static_cast<size_t>(r.keep_last) ? total - r.keep_last : 0;
    for (size_t i = 0; i < prune; ++i) {
      batch.Delete(checkpoints_, CheckpointKey(id, w->steps[i]));
    }
  }
  // The retained steps after this Put, tracked while Put prunes (a new
  // workflow's are just this step).
  std::vector<uint64_t> steps;
  const bool steps_known = r.keep_last > 0 || w == nullptr
                               ? (w == nullptr || w->steps_known)
                               : false;
  if (steps_known) {
    if (w != nullptr) {
      steps.assign(w->steps.begin() + prune, w->steps.end());
    }
    steps.push_back(r.step);
  }
  // The hot path (same non-terminal phase) leaves the record alone: readers
  // take last_step and updated from the latest checkpoint. A terminal
  // record is always current, as its expiry entry must be.
  if (w == nullptr || w->phase != r.phase || core::IsTerminal(r.phase)) {
    batch.Put(workflows_, RecordKey(id), EncodeRecord(r.phase, r.step, r.time),
              /*fresh=*/w == nullptr);
    UpdateIndexes(&batch, workflows_, id, w, r.phase, r.time,
                  steps_known ? &steps : nullptr);
    if (core::IsTerminal(r.phase)) NoteExpiryEntry(ExpiryKey(r.time, id));
  }
  writer_.sync = writer_.sync || r.sync;

  if (w == nullptr) w = &Insert(id, CachedWorkflow());
  w->phase = r.phase;
  w->last_step = r.step;
  w->updated = r.time;
  w->epoch = writer_.epoch;
  // Unbounded history (keep_last 0): not tracked, so the cache stays small.
  w->steps_known = steps_known && r.keep_last > 0;
  if (w->steps_known) {
    w->steps = std::move(steps);
  } else {
    std::vector<uint64_t>().swap(w->steps);
  }
  if (core::IsTerminal(r.phase)) writer_.terminal.push_back(r.id);
  return absl::OkStatus();
}

void RocksDbCheckpointStore::NoteTerminalRewrite(absl::string_view id) {
  if (writer_.rewritten.size() >= kMaxRewritten) {
    // Forget them all: expiry scans older than this batch start again.
    writer_.rewritten.clear();
    writer_.rewritten_forgotten_before = writer_.epoch;
  }
  writer_.rewritten.insert_or_assign(std::string(id), writer_.epoch);
}

void RocksDbCheckpointStore::NoteExpiryEntry(std::string key) {
  if (writer_.lowest_expiry.empty() || key < writer_.lowest_expiry) {
    writer_.lowest_expiry = std::move(key);
  }
}

absl::Status RocksDbCheckpointStore::ApplySetPhase(Request& r) {
  REFLEXION_ASSIGN_OR_RETURN(CachedWorkflow * w, Load(r.id));
  if (w == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown workflow ", r.id));
  }
  if (core::IsTerminal(w->phase)) NoteTerminalRewrite(r.id);
  BatchBuilder& batch = writer_.batch;
  batch.Put(workflows_, RecordKey(r.id),
            EncodeRecord(r.phase, w->last_step, r.time), /*fresh=*/false);
  UpdateIndexes(&batch, workflows_, r.id, w, r.phase, r.time,
                w->steps_known ? &w->steps : nullptr);
  if (core::IsTerminal(r.phase)) NoteExpiryEntry(ExpiryKey(r.time, r.id));
  writer_.sync = writer_.sync || r.sync;
  w->phase = r.phase;
  w->updated = r.time;
  w->epoch = writer_.epoch;
  if (core::IsTerminal(r.phase)) writer_.terminal.push_back(r.id);
  return absl::OkStatus();
}

absl::Status RocksDbCheckpointStore::ApplyExpire(Request& r) {
  // The batch before this request is written: the database is current.
  const uint64_t scan_epoch = r.scan_epoch;
  if (scan_epoch < writer_.rewritten_forgotten_before) {
    return absl::AbortedError("expiry scan too old: read it again");
  }
  // (cf, key) of each deletion, written in key order (see BuildInto).
  std::vector<std::pair<rocksdb::ColumnFamilyHandle*, const std::string*>>
      deletions;
  std::vector<std::string> record_keys;
  record_keys.reserve(r.expiring->size() * 2);
  std::vector<const std::string*> deleted;
  for (const Expiring& e : *r.expiring) {
    // Written since the scan read it (the snapshot may not show that).
    auto rewritten = writer_.rewritten.find(e.id);
    if (rewritten != writer_.rewritten.end() &&
        rewritten->second > scan_epoch) {
      continue;
    }
    deletions.emplace_back(workflows_, &e.expiry_key);
    record_keys.push_back(RecordKey(e.id));
    if (e.has_phase_entry) record_keys.push_back(PhaseKey(e.phase, e.id));
    for (const std::string& key : e.checkpoint_keys) {
      deletions.emplace_back(checkpoints_, &key);
    }
    deleted.push_back(&e.id);
  }
  // record_keys no longer grows: pointers into it stay valid.
  for (const std::string& key : record_keys) {
    deletions.emplace_back(workflows_, &key);
  }
  std::sort(deletions.begin(), deletions.end(),
            [](const auto& a, const auto& b) {
              return a.first != b.first ? a.first->GetID() < b.first->GetID()
                                        : *a.second < *b.second;
            });
  rocksdb::WriteBatch batch;
  for (const auto& [cf, key] : deletions) (void)batch.Delete(cf, *key);
  if (!deleted.empty()) {
    // Losing an expiry in a crash only means redoing it: no fsync.
    REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
        db_->Write(rocksdb::WriteOptions(), &batch),
        absl::StrCat("delete ", deleted.size(), " expired workflows from ",
                     *deleted[0])));
    batches_written_.fetch_add(1, std::memory_order_relaxed);
    keys_written_.fetch_add(batch.Count(), std::memory_order_relaxed);
    for (const std::string* id : deleted) {
      writer_.cache.erase(*id);
      if (r.expired_ids != nullptr) r.expired_ids->push_back(*id);
    }
  }
  // Later scans start after this one's epoch: older rewrites are moot.
  absl::erase_if(writer_.rewritten,
                 [&](const auto& entry) { return entry.second <= scan_epoch; });
  *r.expired = static_cast<int>(deleted.size());
  return absl::OkStatus();
}

// --- Writes
// -------------------------------------------------------------------

absl::StatusOr<RocksDbCheckpointStore::Request> RocksDbCheckpointStore::MakePut(
    const Checkpoint& checkpoint, WorkflowPhase phase, int keep_last,
    bool sync) {
  REFLEXION_RETURN_IF_ERROR(core::ValidatePut(checkpoint, phase, keep_last));
  Request r;
  r.kind = Request::Kind::kPut;
  REFLEXION_ASSIGN_OR_RETURN(r.value, EncodeCheckpoint(checkpoint));
  r.key = CheckpointKey(checkpoint.workflow_id, checkpoint.step);
  r.id = checkpoint.workflow_id;
  r.phase = phase;
  r.step = checkpoint.step;
  r.time = checkpoint.time;
  r.keep_last = keep_last;
  r.sync = sync;
  return r;
}

absl::Status RocksDbCheckpointStore::Put(const Checkpoint& checkpoint,
                                         WorkflowPhase phase, int keep_last,
                                         bool sync) {
  REFLEXION_ASSIGN_OR_RETURN(Request r,
                             MakePut(checkpoint, phase, keep_last, sync));
  return Wait(std::move(r));
}

void RocksDbCheckpointStore::PutAsync(Checkpoint checkpoint,
                                      WorkflowPhase phase, int keep_last,
                                      bool sync, WriteDone done) {
  absl::StatusOr<Request> r = MakePut(checkpoint, phase, keep_last, sync);
  if (!r.ok()) {
    std::move(done)(r.status());
    return;
  }
  r->done = std::move(done);
  Enqueue(*std::move(r));
}

void RocksDbCheckpointStore::AfterWrites(absl::AnyInvocable<void() &&> done) {
  Request r;
  r.kind = Request::Kind::kBarrier;
  r.barrier = std::move(done);
  Enqueue(std::move(r));
}

absl::Status RocksDbCheckpointStore::Wait(Request r) {
  r.waited = true;
  absl::Notification written;
  absl::Status status;
  r.done = [&](absl::Status s) {
    status = std::move(s);
    written.Notify();
  };
  Enqueue(std::move(r));
  written.WaitForNotification();
  return status;
}

absl::Status RocksDbCheckpointStore::SetPhase(absl::string_view workflow_id,
                                              WorkflowPhase phase,
                                              absl::Time now, bool sync) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateWorkflowId(workflow_id));
  REFLEXION_RETURN_IF_ERROR(core::ValidatePhase(phase));
  Request r;
  r.kind = Request::Kind::kSetPhase;
  r.id = std::string(workflow_id);
  r.phase = phase;
  r.time = now;
  r.sync = sync;
  return Wait(std::move(r));
}

absl::StatusOr<WorkflowRecord> RocksDbCheckpointStore::GetWorkflow(
    absl::string_view workflow_id) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateWorkflowId(workflow_id));
  // One snapshot for the record and the latest checkpoint.
  rocksdb::ManagedSnapshot snapshot(db_->db());
  rocksdb::ReadOptions options;
  options.snapshot = snapshot.snapshot();
  return ReadWorkflow(db_->db(), workflows_, checkpoints_, options,
                      workflow_id);
}

absl::StatusOr<Checkpoint> RocksDbCheckpointStore::Latest(
    absl::string_view workflow_id) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateWorkflowId(workflow_id));
  BoundedIterator it = BoundedIterator::ForPrefix(
      db_->db(), checkpoints_, rocksdb::ReadOptions(),
      CheckpointPrefix(workflow_id));
  it->SeekToLast();
  if (!it->Valid()) {
    REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
        it->status(),
        absl::StrCat("read the latest checkpoint of workflow ", workflow_id)));
    return absl::NotFoundError(
        absl::StrCat("no checkpoint of workflow ", workflow_id));
  }
  return DecodeCheckpoint(it.key(), it.value());
}

absl::StatusOr<Checkpoint> RocksDbCheckpointStore::Get(
    absl::string_view workflow_id, uint64_t step) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateWorkflowId(workflow_id));
  const std::string key = CheckpointKey(workflow_id, step);
  std::string value;
  rocksdb::Status s =
      db_->db()->Get(rocksdb::ReadOptions(), checkpoints_, key, &value);
  if (s.IsNotFound()) {
    return absl::NotFoundError(
        absl::StrCat("no checkpoint ", step, " of workflow ", workflow_id));
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      s, absl::StrCat("read checkpoint ", step, " of workflow ", workflow_id)));
  return DecodeCheckpoint(key, value);
}

absl::StatusOr<std::vector<Checkpoint>> RocksDbCheckpointStore::List(
    absl::string_view workflow_id, int limit) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateWorkflowId(workflow_id));
  REFLEXION_RETURN_IF_ERROR(core::ValidateNonNegative(limit, "limit"));
  BoundedIterator it = BoundedIterator::ForPrefix(
      db_->db(), checkpoints_, rocksdb::ReadOptions(),
      CheckpointPrefix(workflow_id));
  std::vector<Checkpoint> out;
  for (it->SeekToLast();
       it->Valid() && (limit == 0 || out.size() < static_cast<size_t>(limit));
       it->Prev()) {
    REFLEXION_ASSIGN_OR_RETURN(Checkpoint c,
                               DecodeCheckpoint(it.key(), it.value()));
    out.push_back(std::move(c));
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      it->status(),
      absl::StrCat("list the checkpoints of workflow ", workflow_id)));
  return out;
}

absl::StatusOr<std::vector<WorkflowRecord>> RocksDbCheckpointStore::ListByPhase(
    WorkflowPhase phase) {
  REFLEXION_RETURN_IF_ERROR(core::ValidatePhase(phase));
  // One snapshot for the index and the records it points at.
  rocksdb::ManagedSnapshot snapshot(db_->db());
  rocksdb::ReadOptions options;
  options.snapshot = snapshot.snapshot();
  std::vector<WorkflowRecord> out;
  if (core::IsTerminal(phase)) {
    // Terminal workflows are in the expiry index (ordered by time).
    BoundedIterator it = BoundedIterator::ForPrefix(
        db_->db(), workflows_, options, std::string(1, kExpiryPrefix));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const absl::string_view value = it.value();
      if (it.key().size() <= 1 + kTimeBytes || value.empty()) {
        return absl::DataLossError(
            absl::StrCat("malformed workflows expiry entry at key \"",
                         Printable(it.key()), "\""));
      }
      if ((static_cast<uint8_t>(value[0]) &
           static_cast<uint8_t>(~kNoPhaseEntryFlag)) !=
          static_cast<uint8_t>(phase)) {
        continue;
      }
      REFLEXION_ASSIGN_OR_RETURN(
          WorkflowRecord record,
          ReadWorkflow(db_->db(), workflows_, checkpoints_, options,
                       it.key().substr(1 + kTimeBytes)));
      out.push_back(std::move(record));
    }
    REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
        it->status(), absl::StrCat("list the ", core::WorkflowPhaseName(phase),
                                   " workflows")));
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      return a.workflow_id < b.workflow_id;
    });
    return out;
  }
  BoundedIterator it = BoundedIterator::ForPrefix(db_->db(), workflows_,
                                                  options, PhasePrefix(phase));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const absl::string_view id = it.key().substr(2);
    absl::StatusOr<WorkflowRecord> record =
        ReadWorkflow(db_->db(), workflows_, checkpoints_, options, id);
    if (absl::IsNotFound(record.status())) {
      return absl::DataLossError(absl::StrCat("workflows phase index key \"",
                                              Printable(it.key()),
                                              "\" points at no record"));
    }
    if (!record.ok()) return record.status();
    out.push_back(*std::move(record));
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      it->status(),
      absl::StrCat("list the ", core::WorkflowPhaseName(phase), " workflows")));
  return out;
}

absl::StatusOr<int> RocksDbCheckpointStore::ExpireFinished(
    absl::Time cutoff, int max_workflows,
    std::vector<std::string>* expired_ids) {
  REFLEXION_RETURN_IF_ERROR(
      core::ValidateNonNegative(max_workflows, "max_workflows"));
  // Expiry keys sort by (updated, id): those below `end` were updated
  // before the cutoff.
  std::string end(1, kExpiryPrefix);
  AppendTime(&end, cutoff);
  // The expired entries before the cursor are tombstones that every scan
  // from the start of the index would step over again: resume at the
  // cursor, or lower when an entry was written below it since (an older
  // time than the cursor's: a clock step back, a fake clock).
  absl::MutexLock expire_lock(&expire_mu_);
  std::string from(1, kExpiryPrefix);
  {
    absl::MutexLock lock(&expiry_written_mu_);
    if (!expire_from_.empty()) {
      from = expire_from_;
      if (!lowest_expiry_written_.empty()) {
        from = std::min(from, lowest_expiry_written_);
      }
    }
    // From here on, entries written are noted again (before the scan's
    // snapshot, so each is seen by this scan or noted for the next).
    lowest_expiry_written_.clear();
  }
  int deleted = 0;
  while (max_workflows == 0 || deleted < max_workflows) {
    const int chunk = max_workflows == 0
                          ? kExpireChunk
                          : std::min(kExpireChunk, max_workflows - deleted);
    // Read a chunk on this thread (writers go on), then let the writer
    // delete the workflows that were not written since: those written in a
    // batch after `scan_epoch` (which the snapshot may not show).
    std::vector<Expiring> expiring;
    const uint64_t scan_epoch =
        committed_epoch_.load(std::memory_order_acquire);
    {
      rocksdb::ManagedSnapshot snapshot(db_->db());
      rocksdb::ReadOptions options;
      options.snapshot = snapshot.snapshot();
      BoundedIterator it(db_->db(), workflows_, options, from,
                         std::max(from, end));
      for (it->SeekToFirst();
           it->Valid() && static_cast<int>(expiring.size()) < chunk;
           it->Next()) {
        const absl::string_view key = it.key();
        const absl::string_view value = it.value();
        const uint8_t phase_byte =
            value.empty() ? 0 : static_cast<uint8_t>(value[0]);
        const auto phase = static_cast<WorkflowPhase>(
            phase_byte & static_cast<uint8_t>(~kNoPhaseEntryFlag));
        if (key.size() <= 1 + kTimeBytes || value.empty() ||
            (value.size() - 1) % kStepBytes != 0 || !core::IsTerminal(phase)) {
          return absl::DataLossError(
              absl::StrCat("malformed workflows expiry entry at key \"",
                           Printable(key), "\""));
        }
        Expiring e;
        e.id = std::string(key.substr(1 + kTimeBytes));
        e.expiry_key = std::string(key);
        e.phase = phase;
        e.has_phase_entry = (phase_byte & kNoPhaseEntryFlag) == 0;
        if (value.size() > 1) {
          // The retained steps, recorded when the workflow ended.
          for (size_t at = 1; at < value.size(); at += kStepBytes) {
            e.checkpoint_keys.push_back(
                CheckpointKey(e.id, ReadUnsigned(value.data() + at, 8)));
          }
        } else {
          BoundedIterator checkpoints = BoundedIterator::ForPrefix(
              db_->db(), checkpoints_, options, CheckpointPrefix(e.id));
          for (checkpoints->SeekToFirst(); checkpoints->Valid();
               checkpoints->Next()) {
            e.checkpoint_keys.emplace_back(ToView(checkpoints->key()));
          }
          REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
              checkpoints->status(),
              absl::StrCat("list the checkpoints of expiring workflow ",
                           e.id)));
        }
        expiring.push_back(std::move(e));
      }
      REFLEXION_RETURN_IF_ERROR(
          FromRocksDbStatus(it->status(), "list expired workflows"));
    }
    if (expiring.empty()) break;
    from = expiring.back().expiry_key;
    expire_from_ = from;
    int expired = 0;
    Request r;
    r.kind = Request::Kind::kExpire;
    r.expiring = &expiring;
    r.expired = &expired;
    r.expired_ids = expired_ids;
    r.scan_epoch = scan_epoch;
    if (absl::Status s = Wait(std::move(r)); !s.ok()) {
      expire_from_.clear();  // what this chunk kept: scan from the start
      if (!absl::IsAborted(s)) return s;
      // The writer forgot which workflows were written around this scan:
      // read the chunk again, once that batch is in the database.
      from = std::string(1, kExpiryPrefix);
      absl::SleepFor(absl::Milliseconds(1));
      continue;
    }
    deleted += expired;
    if (static_cast<int>(expiring.size()) < chunk) break;  // no more
  }
  return deleted;
}

}  // namespace reflexion::storage

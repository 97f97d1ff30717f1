#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/audit_log.h"
#include "reflexion/v1/types.pb.h"
#include "storage/rocksdb_db.h"

namespace rocksdb {
class ColumnFamilyHandle;
}  // namespace rocksdb

namespace reflexion::storage {

// The server's AuditLog, in the "audit" column family:
//
//   'e' <seq: 8 bytes big-endian>  -> AuditEntry (as appended)
//   'm' 'a'                        -> AuditAnchor: where the kept chain
//                                     starts (absent: GenesisAnchor)
//   'm' 'l'                        -> AuditAnchor: the last entry's seq and
//                                     hash (absent: the anchor)
//
// Appends are group-committed: concurrent callers queue their entries; one
// of them (the leader) chains the queued ones in order and writes them with
// the last-entry key as one WriteBatch, synced to disk whatever
// RocksDbOptions::sync_writes says, while the next group queues; each caller
// returns when its group is durable. A failed write fails its whole group
// and uses no seq. The last seq and hash are recovered at Open. Retention is
// one range delete of the removed prefix with the new anchor, in one synced
// batch. Reads (List, Verify) see one snapshot, so the anchor, the last seq and
// the entries agree. The last-entry key makes a removed tail visible to Verify
// (a log cut after entry 20 whose last seq is 23 reports entries 21..23
// missing).
//
// Bound: the family grows with every action; Retain by age (audit.max_age)
// is the policy. Thread-safe.
class RocksDbAuditLog final : public core::AuditLog {
 public:
  // Opens the log on `db` (not owned; must outlive it) and recovers the last
  // seq and hash. `scan_limit`: entries one List call reads at most.
  // kDataLoss when the meta keys cannot be parsed; storage errors converted
  // by FromRocksDbStatus.
  static absl::StatusOr<std::unique_ptr<RocksDbAuditLog>> Open(
      RocksDb* db, int scan_limit = core::kAuditScanLimit);

  absl::StatusOr<reflexion::v1::AuditEntry> Append(
      reflexion::v1::AuditEntry entry) override;
  absl::StatusOr<core::AuditPage> List(
      const core::AuditFilter& filter) const override;
  absl::StatusOr<core::AuditVerification> Verify() const override;
  absl::StatusOr<int64_t> Retain(absl::Time cutoff) override;

  // The key of entry `seq` (for tools and tamper tests).
  static std::string EntryKey(uint64_t seq);
  // The meta keys (for tools and tests).
  static std::string AnchorKey();
  static std::string LastKey();

 private:
  RocksDbAuditLog(RocksDb* db, int scan_limit);

  RocksDb* const db_;
  rocksdb::ColumnFamilyHandle* const audit_;
  const int scan_limit_;
  // An Append waiting in the group-commit queue (on its caller's stack).
  struct Pending {
    reflexion::v1::AuditEntry entry;
    absl::Status status;
    bool done = false;
  };
  // Writes one group (chained from last_seq_/last_hash_) as one synced
  // batch, with mu_ released during the write. Called by the leader.
  void WriteGroup() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  // The last seq and hash (the next entry's seq - 1 and prev_hash).
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_hash_ ABSL_GUARDED_BY(mu_);
  // Appends waiting for the next group write. Bounded by the callers
  // blocked in Append (one entry each); a group takes at most kMaxGroup.
  std::deque<Pending*> queue_ ABSL_GUARDED_BY(mu_);
  // A leader is writing a group (the others wait for it).
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  absl::CondVar written_;
  // Serialises retention (which appends do not wait for).
  absl::Mutex retain_mu_;
};

}  // namespace reflexion::storage

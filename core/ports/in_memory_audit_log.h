#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/audit_log.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// The AuditLog in memory, for tests (it is as tamper-evident as the
// process). Same contract as storage::RocksDbAuditLog, durability aside.
// Bound: at most `max_entries` kept; an Append beyond is refused with
// kResourceExhausted (an audit log never drops entries silently; Retain
// makes room). Thread-safe.
class InMemoryAuditLog final : public AuditLog {
 public:
  // `scan_limit`: entries one List call reads at most (kAuditScanLimit; a
  // smaller one lets tests page through a few entries).
  explicit InMemoryAuditLog(size_t max_entries = 1'000'000,
                            int scan_limit = kAuditScanLimit);

  absl::StatusOr<reflexion::v1::AuditEntry> Append(
      reflexion::v1::AuditEntry entry) override;
  absl::StatusOr<AuditPage> List(const AuditFilter& filter) const override;
  absl::StatusOr<AuditVerification> Verify() const override;
  absl::StatusOr<int64_t> Retain(absl::Time cutoff) override;

  // For tamper tests: the kept entry `seq` to alter in place (nullptr when
  // not kept). The caller must not append, list or verify concurrently.
  reflexion::v1::AuditEntry* MutableEntryForTest(uint64_t seq);
  // For tamper tests: removes the kept entry `seq` (false when not kept).
  bool EraseEntryForTest(uint64_t seq);

 private:
  const size_t max_entries_;
  const int scan_limit_;
  mutable absl::Mutex mu_;
  // The kept chain, oldest first.
  std::deque<reflexion::v1::AuditEntry> entries_ ABSL_GUARDED_BY(mu_);
  reflexion::v1::AuditAnchor anchor_ ABSL_GUARDED_BY(mu_);
  uint64_t last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_hash_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reflexion::core

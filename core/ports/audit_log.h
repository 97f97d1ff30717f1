#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Filters and paging of AuditLog::List. Empty strings and unset times match
// everything; an entry must match every filter given.
struct AuditFilter {
  uint64_t after = 0;   // only entries with seq > after
  int page_size = 100;  // clamped to [1, 1000] (ClampAuditPageSize)
  std::string cluster, namespace_, workflow_id, principal;
  reflexion::v1::AuditEntry::Kind kind =
      reflexion::v1::AuditEntry::KIND_UNSPECIFIED;
  std::optional<absl::Time> since;  // entry time >= since
  std::optional<absl::Time> until;  // entry time < until
};

struct AuditPage {
  // Matching entries in seq order (oldest first).
  std::vector<reflexion::v1::AuditEntry> entries;
  // Pass as `after` for the next page; 0 when the scan reached the end of
  // the log. A page scans at most kAuditScanLimit entries, so with
  // selective filters a page may be empty while next_after > 0: page on.
  uint64_t next_after = 0;
  // Where the kept chain starts (what retention removed before it).
  reflexion::v1::AuditAnchor anchor;
  // The log's last seq at the time of the call (anchor.seq when every entry
  // was removed; 0 for an empty log).
  uint64_t last_seq = 0;
};

// The result of walking a chain (see core/reflexion/audit_chain.h).
struct AuditVerification {
  bool ok = true;
  // Entries checked (those read before the first problem, when there is
  // one).
  uint64_t checked = 0;
  // The seq the problem is about (0 when ok).
  uint64_t first_bad_seq = 0;
  // What is wrong, in words naming the seq, e.g. "entry 17: hash mismatch
  // (stored ab12…, computed 9f3c…): the entry was altered" ("" when ok).
  std::string problem;
};

// How many stored entries one List call reads at most (a page of selective
// filters may therefore end early, see AuditPage::next_after).
inline constexpr int kAuditScanLimit = 10'000;

// The tamper-evident audit log: append-only, hash-chained entries of what
// the service did on whose behalf (reflexion.v1.AuditEntry). Adapters:
// storage::RocksDbAuditLog (the server's), InMemoryAuditLog (tests). Both
// pass one contract suite (tests/storage/audit_log_contract_test.cc).
//
// Bound: the log grows with every action; retention by age (Retain, run by
// the server every workflow.retention_interval with audit.max_age) is its
// policy. Thread-safe.
class AuditLog {
 public:
  virtual ~AuditLog() = default;

  // Appends `entry`: assigns seq (last + 1), prev_hash (the last entry's
  // hash, the anchor's when retention removed every entry, 64 zeros for the
  // first entry) and hash (AuditHash), and returns the stored entry.
  // `entry.time` must be set by the caller (from its injected clock). Every
  // string field is made valid UTF-8, passed through core::RedactSecrets (so
  // no secret is stored) and clipped at a character boundary (detail to
  // 1024 bytes, other fields to 256; see SanitizeAuditEntry). Durable
  // (synced to disk) when it returns OK: the caller sends the action only
  // after. Errors: kInvalidArgument naming the field (kind unspecified or
  // unknown, time unset or out of range, more than 32 restore values);
  // kResourceExhausted / kUnavailable when storage refuses the write (then
  // nothing was appended and the seq is not used).
  virtual absl::StatusOr<reflexion::v1::AuditEntry> Append(
      reflexion::v1::AuditEntry entry) = 0;

  // The entries after `filter.after` that match the filter, in seq order,
  // with the anchor and the last seq (read consistently with the entries).
  // kDataLoss naming the seq when a stored entry cannot be parsed.
  virtual absl::StatusOr<AuditPage> List(const AuditFilter& filter) const = 0;

  // Walks the kept chain from the anchor (core::AuditChainVerifier): seq
  // consecutive, prev_hash links, hash recomputed, and the last entry is
  // the log's last seq (a removed tail is reported). A broken chain is an
  // OK status with ok = false; errors are storage failures.
  virtual absl::StatusOr<AuditVerification> Verify() const = 0;

  // Removes the oldest entries written before `cutoff`: the longest prefix
  // of the kept chain whose entries all have time < cutoff (an entry with a
  // later time ends it, even if entries after it are older). The last
  // removed entry's seq and hash become the anchor, in the same write.
  // Returns how many were removed. Storage errors as for Append.
  virtual absl::StatusOr<int64_t> Retain(absl::Time cutoff) = 0;
};

// page_size clamped to [1, 1000]; 0 (or less) means 100.
int ClampAuditPageSize(int page_size);

// Whether `entry` matches every filter of `filter` (`after` and the page
// size are not filters).
bool MatchesAuditFilter(const reflexion::v1::AuditEntry& entry,
                        const AuditFilter& filter);

}  // namespace reflexion::core

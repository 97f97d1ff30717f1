#pragma once

// The audit log's hash chain, shared by the server's stores
// (storage::RocksDbAuditLog, core::InMemoryAuditLog) and by reflexionctl,
// which verifies ListAudit pages on the client side so that a verifying
// client need not trust the server's verdict.
//
// An entry's `hash` is the lowercase hex SHA-256 of its deterministic
// serialization (SerializeToCodedStream with SetSerializationDeterministic)
// with `hash` cleared; its `prev_hash` is the previous entry's hash, the
// anchor's for the first kept entry (kAuditGenesisHash when nothing was
// removed). All functions are pure and thread-safe; AuditChainVerifier is a
// value type (one per walk, not thread-safe).

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/ports/audit_log.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// The prev_hash of the very first entry and the hash of the initial anchor:
// 64 zeros.
inline constexpr absl::string_view kAuditGenesisHash =
    "0000000000000000000000000000000000000000000000000000000000000000";

// Limits of SanitizeAuditEntry.
inline constexpr size_t kMaxAuditDetailBytes = 1024;
inline constexpr size_t kMaxAuditFieldBytes = 256;
inline constexpr int kMaxAuditRestoreValues = 32;

// The lowercase hex SHA-256 of `entry` serialized deterministically with
// `hash` cleared (64 characters).
std::string AuditHash(const reflexion::v1::AuditEntry& entry);

// What Append does to a caller's entry before it is chained: validates it
// (kInvalidArgument naming the field: "kind: ..." when unspecified or
// unknown, "time: ..." when unset or not a valid timestamp,
// "action.restore: ..." beyond 32 values) and, for every string field
// (action and its restore values included), makes it valid UTF-8, redacts
// secrets (RedactSecrets) and clips it at a character boundary: detail to
// kMaxAuditDetailBytes, others to kMaxAuditFieldBytes. seq, prev_hash and
// hash are cleared (Append assigns them).
absl::Status SanitizeAuditEntry(reflexion::v1::AuditEntry* entry);

// The anchor of a log nothing was removed from: seq 0, kAuditGenesisHash.
reflexion::v1::AuditAnchor GenesisAnchor();

// Walks a chain entry by entry, in bounded memory: for pages fetched one at
// a time (reflexionctl audit --verify) or a store's scan. Stops at the
// first problem; later calls change nothing.
class AuditChainVerifier {
 public:
  // The chain starts after `anchor` (its seq + 1, prev_hash its hash).
  explicit AuditChainVerifier(const reflexion::v1::AuditAnchor& anchor);

  // Checks the next entry, in this order: its seq follows the previous one
  // ("entry 20 missing (after 19 comes 21)", "entry 1 missing (after the
  // anchor 0 comes 2)", "entry 7: out of order (after 9)"), its hash is
  // its content's ("entry 17: hash mismatch (stored ab12…, computed
  // 9f3c…): the entry was altered"), and its prev_hash is the previous
  // hash ("entry 18: prev_hash does not match entry 17's hash", "entry 1:
  // prev_hash does not match the anchor"). Returns whether the chain is
  // still intact.
  bool Add(const reflexion::v1::AuditEntry& entry);

  // Records a problem found outside the entries (an unparseable value, a
  // key that disagrees with its entry's seq). Ignored after the first one.
  void Fail(uint64_t seq, std::string problem);

  // Ends the walk: the chain must reach `last_seq`, the log's last seq
  // ("entries 21..23 missing (the log ends at 20, its last seq is 23)"). 0
  // skips the check.
  AuditVerification Finish(uint64_t last_seq);

  // The result so far.
  const AuditVerification& result() const { return result_; }
  // The seq and hash of the last entry accepted (the anchor's before any).
  uint64_t last_seq() const { return seq_; }
  const std::string& last_hash() const { return hash_; }

 private:
  AuditVerification result_;
  uint64_t anchor_seq_;
  uint64_t seq_;
  std::string hash_;
};

// Verifies `entries` (in the order given) as the whole kept chain after
// `anchor`: AuditChainVerifier over them, without the last-seq check.
AuditVerification VerifyChain(
    const reflexion::v1::AuditAnchor& anchor,
    const std::vector<reflexion::v1::AuditEntry>& entries);

}  // namespace reflexion::core

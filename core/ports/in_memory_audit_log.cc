#include "core/ports/in_memory_audit_log.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/reflexion/audit_chain.h"
#include "core/reflexion/time_util.h"
#include "core/status_macros.h"

namespace reflexion::core {

namespace v1 = ::reflexion::v1;

InMemoryAuditLog::InMemoryAuditLog(size_t max_entries, int scan_limit)
    : max_entries_(max_entries),
      scan_limit_(scan_limit > 0 ? scan_limit : kAuditScanLimit),
      anchor_(GenesisAnchor()),
      last_hash_(kAuditGenesisHash) {}

absl::StatusOr<v1::AuditEntry> InMemoryAuditLog::Append(v1::AuditEntry entry) {
  REFLEXION_RETURN_IF_ERROR(SanitizeAuditEntry(&entry));
  absl::MutexLock lock(&mu_);
  if (entries_.size() >= max_entries_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the in-memory audit log is full (", max_entries_,
                     " entries): run retention"));
  }
  entry.set_seq(last_seq_ + 1);
  entry.set_prev_hash(last_hash_);
  entry.set_hash(AuditHash(entry));
  last_seq_ = entry.seq();
  last_hash_ = entry.hash();
  entries_.push_back(entry);
  return entry;
}

absl::StatusOr<AuditPage> InMemoryAuditLog::List(
    const AuditFilter& filter) const {
  const size_t page_size =
      static_cast<size_t>(ClampAuditPageSize(filter.page_size));
  absl::MutexLock lock(&mu_);
  AuditPage page;
  page.anchor = anchor_;
  page.last_seq = last_seq_;
  auto it = std::lower_bound(
      entries_.begin(), entries_.end(), filter.after + 1,
      [](const v1::AuditEntry& e, uint64_t seq) { return e.seq() < seq; });
  int scanned = 0;
  uint64_t last_scanned = 0;
  for (; it != entries_.end(); ++it) {
    if (page.entries.size() >= page_size || scanned >= scan_limit_) {
      page.next_after = last_scanned;
      break;
    }
    ++scanned;
    last_scanned = it->seq();
    if (MatchesAuditFilter(*it, filter)) page.entries.push_back(*it);
  }
  return page;
}

absl::StatusOr<AuditVerification> InMemoryAuditLog::Verify() const {
  absl::MutexLock lock(&mu_);
  AuditChainVerifier verifier(anchor_);
  for (const v1::AuditEntry& e : entries_) {
    if (!verifier.Add(e)) break;
  }
  return verifier.Finish(last_seq_);
}

absl::StatusOr<int64_t> InMemoryAuditLog::Retain(absl::Time cutoff) {
  absl::MutexLock lock(&mu_);
  int64_t removed = 0;
  while (!entries_.empty() && FromProto(entries_.front().time()) < cutoff) {
    anchor_.set_seq(entries_.front().seq());
    anchor_.set_hash(entries_.front().hash());
    entries_.pop_front();
    ++removed;
  }
  return removed;
}

v1::AuditEntry* InMemoryAuditLog::MutableEntryForTest(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  for (v1::AuditEntry& e : entries_) {
    if (e.seq() == seq) return &e;
  }
  return nullptr;
}

bool InMemoryAuditLog::EraseEntryForTest(uint64_t seq) {
  absl::MutexLock lock(&mu_);
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->seq() == seq) {
      entries_.erase(it);
      return true;
    }
  }
  return false;
}

}  // namespace reflexion::core

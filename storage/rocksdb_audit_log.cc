#include "storage/rocksdb_audit_log.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/audit_chain.h"
#include "core/reflexion/time_util.h"
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

namespace v1 = ::reflexion::v1;

constexpr char kEntryPrefix = 'e';
constexpr size_t kEntryKeyBytes = 9;  // 'e' + 8 bytes of seq
// Every entry key is in ["e", "f").
constexpr char kEntriesEnd[] = "f";

uint64_t SeqOf(const rocksdb::Slice& key) {
  uint64_t v = 0;
  for (size_t i = 1; i < kEntryKeyBytes; ++i) {
    v = (v << 8) | static_cast<uint8_t>(key[i]);
  }
  return v;
}

// The entries from `from` on, in seq order, read at `options` (a snapshot).
class EntryIterator {
 public:
  EntryIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf,
                rocksdb::ReadOptions options, uint64_t from)
      : lower_key_(RocksDbAuditLog::EntryKey(from)),
        lower_(lower_key_),
        upper_(kEntriesEnd) {
    options.iterate_lower_bound = &lower_;
    options.iterate_upper_bound = &upper_;
    it_.reset(db->NewIterator(options, cf));
    it_->SeekToFirst();
  }
  EntryIterator(const EntryIterator&) = delete;
  EntryIterator& operator=(const EntryIterator&) = delete;

  bool Valid() const { return it_->Valid(); }
  void Next() { it_->Next(); }
  // The seq of the current key; kDataLoss for a malformed key.
  absl::StatusOr<uint64_t> Seq() const {
    if (it_->key().size() != kEntryKeyBytes) {
      return absl::DataLossError(
          absl::StrCat("malformed audit key of ", it_->key().size(),
                       " bytes (expected ", kEntryKeyBytes, ")"));
    }
    return SeqOf(it_->key());
  }
  // Parses the current value; false when it does not parse.
  bool Parse(v1::AuditEntry* entry) const {
    return entry->ParseFromArray(it_->value().data(),
                                 static_cast<int>(it_->value().size()));
  }
  absl::Status status(absl::string_view what) const {
    return FromRocksDbStatus(it_->status(), what);
  }

 private:
  std::string lower_key_;
  rocksdb::Slice lower_;
  rocksdb::Slice upper_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

absl::Status UnparseableEntry(uint64_t seq) {
  return absl::DataLossError(absl::StrCat(
      "audit entry ", seq, " cannot be parsed: it was altered or damaged"));
}

// Reads an AuditAnchor-shaped meta key; nullopt when absent.
absl::StatusOr<std::optional<v1::AuditAnchor>> ReadMeta(
    rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf,
    const rocksdb::ReadOptions& options, const std::string& key,
    absl::string_view name) {
  std::string value;
  rocksdb::Status s = db->Get(options, cf, key, &value);
  if (s.IsNotFound()) return std::nullopt;
  REFLEXION_RETURN_IF_ERROR(
      FromRocksDbStatus(s, absl::StrCat("read the audit log's ", name)));
  v1::AuditAnchor anchor;
  if (!anchor.ParseFromString(value)) {
    return absl::DataLossError(
        absl::StrCat("the audit log's ", name, " cannot be parsed"));
  }
  return anchor;
}

// The anchor and the last entry's (seq, hash) as of `options`.
struct Meta {
  v1::AuditAnchor anchor;
  v1::AuditAnchor last;
};

absl::StatusOr<Meta> ReadMetas(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf,
                               const rocksdb::ReadOptions& options) {
  Meta meta;
  REFLEXION_ASSIGN_OR_RETURN(
      std::optional<v1::AuditAnchor> anchor,
      ReadMeta(db, cf, options, RocksDbAuditLog::AnchorKey(), "anchor"));
  meta.anchor = anchor.has_value() ? *anchor : core::GenesisAnchor();
  REFLEXION_ASSIGN_OR_RETURN(
      std::optional<v1::AuditAnchor> last,
      ReadMeta(db, cf, options, RocksDbAuditLog::LastKey(), "last entry"));
  meta.last = last.has_value() ? *last : meta.anchor;
  return meta;
}

}  // namespace

std::string RocksDbAuditLog::EntryKey(uint64_t seq) {
  std::string key(1, kEntryPrefix);
  for (int shift = 56; shift >= 0; shift -= 8) {
    key.push_back(static_cast<char>((seq >> shift) & 0xff));
  }
  return key;
}

std::string RocksDbAuditLog::AnchorKey() { return "ma"; }
std::string RocksDbAuditLog::LastKey() { return "ml"; }

RocksDbAuditLog::RocksDbAuditLog(RocksDb* db, int scan_limit)
    : db_(CHECK_NOTNULL(db)),
      audit_(db->ColumnFamily("audit")),
      scan_limit_(scan_limit > 0 ? scan_limit : core::kAuditScanLimit) {}

absl::StatusOr<std::unique_ptr<RocksDbAuditLog>> RocksDbAuditLog::Open(
    RocksDb* db, int scan_limit) {
  std::unique_ptr<RocksDbAuditLog> log(new RocksDbAuditLog(db, scan_limit));
  REFLEXION_ASSIGN_OR_RETURN(
      Meta meta, ReadMetas(db->db(), log->audit_, rocksdb::ReadOptions()));
  uint64_t last_seq = meta.last.seq();
  std::string last_hash = meta.last.hash();
  // Both keys are written in one batch, so the last entry is the recorded
  // one; an entry beyond it was put there by hand. Continuing after it keeps
  // it (and Verify judges it) rather than overwriting it.
  {
    const std::string lower = EntryKey(0);
    rocksdb::Slice lower_slice(lower), upper_slice(kEntriesEnd);
    rocksdb::ReadOptions options;
    options.iterate_lower_bound = &lower_slice;
    options.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(
        db->db()->NewIterator(options, log->audit_));
    it->SeekToLast();
    REFLEXION_RETURN_IF_ERROR(
        FromRocksDbStatus(it->status(), "read the audit log's last entry"));
    if (it->Valid() && it->key().size() == kEntryKeyBytes &&
        SeqOf(it->key()) > last_seq) {
      v1::AuditEntry entry;
      if (!entry.ParseFromArray(it->value().data(),
                                static_cast<int>(it->value().size()))) {
        return UnparseableEntry(SeqOf(it->key()));
      }
      LOG(ERROR) << "the audit log holds entry " << SeqOf(it->key())
                 << " beyond its recorded last entry " << last_seq
                 << ": continuing after it (reflexionctl audit --verify "
                    "judges it)";
      last_seq = SeqOf(it->key());
      last_hash = entry.hash();
    }
  }
  absl::MutexLock lock(&log->mu_);
  log->last_seq_ = last_seq;
  log->last_hash_ = std::move(last_hash);
  return log;
}

absl::StatusOr<v1::AuditEntry> RocksDbAuditLog::Append(v1::AuditEntry entry) {
  REFLEXION_RETURN_IF_ERROR(core::SanitizeAuditEntry(&entry));
  Pending pending;
  pending.entry = std::move(entry);
  absl::MutexLock lock(&mu_);
  queue_.push_back(&pending);
  while (!pending.done) {
    if (writing_) {
      written_.Wait(&mu_);
    } else {
      WriteGroup();  // ours, and whatever queued with it
    }
  }
  if (!pending.status.ok()) return pending.status;
  return std::move(pending.entry);
}

void RocksDbAuditLog::WriteGroup() {
  // Enough to amortise an fsync, small enough to bound a batch.
  constexpr size_t kMaxGroup = 1024;
  writing_ = true;
  std::vector<Pending*> group;
  while (!queue_.empty() && group.size() < kMaxGroup) {
    group.push_back(queue_.front());
    queue_.pop_front();
  }
  uint64_t seq = last_seq_;
  std::string hash = last_hash_;
  rocksdb::WriteBatch batch;
  for (Pending* p : group) {
    p->entry.set_seq(++seq);
    p->entry.set_prev_hash(hash);
    p->entry.set_hash(core::AuditHash(p->entry));
    hash = p->entry.hash();
    (void)batch.Put(audit_, EntryKey(seq), p->entry.SerializeAsString());
  }
  v1::AuditAnchor last;
  last.set_seq(seq);
  last.set_hash(hash);
  (void)batch.Put(audit_, LastKey(), last.SerializeAsString());
  // Durable before the callers act on it, whatever the DB's default. Others
  // queue the next group meanwhile (writing_ keeps them from writing).
  rocksdb::WriteOptions options;
  options.sync = true;
  mu_.Unlock();
  const absl::Status status = FromRocksDbStatus(
      db_->Write(options, &batch),
      group.size() == 1 ? absl::StrCat("append audit entry ", seq)
                        : absl::StrCat("append audit entries ",
                                       seq - group.size() + 1, "..", seq));
  mu_.Lock();
  if (status.ok()) {
    last_seq_ = seq;
    last_hash_ = std::move(hash);
  }
  for (Pending* p : group) {
    p->status = status;
    p->done = true;
  }
  writing_ = false;
  written_.SignalAll();
}

absl::StatusOr<core::AuditPage> RocksDbAuditLog::List(
    const core::AuditFilter& filter) const {
  const size_t page_size =
      static_cast<size_t>(core::ClampAuditPageSize(filter.page_size));
  rocksdb::ManagedSnapshot snapshot(db_->db());
  rocksdb::ReadOptions options;
  options.snapshot = snapshot.snapshot();
  REFLEXION_ASSIGN_OR_RETURN(Meta meta, ReadMetas(db_->db(), audit_, options));
  core::AuditPage page;
  page.anchor = meta.anchor;
  page.last_seq = meta.last.seq();
  const uint64_t from = std::max(filter.after, meta.anchor.seq()) + 1;
  if (from == 0) return page;  // after == UINT64_MAX
  EntryIterator it(db_->db(), audit_, options, from);
  int scanned = 0;
  uint64_t last_scanned = 0;
  for (; it.Valid(); it.Next()) {
    if (page.entries.size() >= page_size || scanned >= scan_limit_) {
      page.next_after = last_scanned;
      break;
    }
    REFLEXION_ASSIGN_OR_RETURN(const uint64_t seq, it.Seq());
    v1::AuditEntry entry;
    if (!it.Parse(&entry)) return UnparseableEntry(seq);
    ++scanned;
    last_scanned = seq;
    if (core::MatchesAuditFilter(entry, filter)) {
      page.entries.push_back(std::move(entry));
    }
  }
  REFLEXION_RETURN_IF_ERROR(
      it.status(absl::StrCat("list the audit log after ", filter.after)));
  return page;
}

absl::StatusOr<core::AuditVerification> RocksDbAuditLog::Verify() const {
  rocksdb::ManagedSnapshot snapshot(db_->db());
  rocksdb::ReadOptions options;
  options.snapshot = snapshot.snapshot();
  // A verification reads every kept entry once: not worth caching.
  options.fill_cache = false;
  REFLEXION_ASSIGN_OR_RETURN(Meta meta, ReadMetas(db_->db(), audit_, options));
  core::AuditChainVerifier verifier(meta.anchor);
  EntryIterator it(db_->db(), audit_, options, meta.anchor.seq() + 1);
  for (; it.Valid(); it.Next()) {
    absl::StatusOr<uint64_t> seq = it.Seq();
    if (!seq.ok()) {
      verifier.Fail(verifier.last_seq() + 1,
                    std::string(seq.status().message()));
      break;
    }
    v1::AuditEntry entry;
    if (!it.Parse(&entry)) {
      verifier.Fail(*seq, absl::StrCat("entry ", *seq,
                                       ": cannot be parsed: the entry was "
                                       "altered or damaged"));
      break;
    }
    if (entry.seq() != *seq) {
      verifier.Fail(*seq, absl::StrCat("entry ", *seq, ": stored under seq ",
                                       *seq, " but says seq ", entry.seq(),
                                       ": the entry was altered or moved"));
      break;
    }
    if (!verifier.Add(entry)) break;
  }
  REFLEXION_RETURN_IF_ERROR(it.status("verify the audit log"));
  return verifier.Finish(meta.last.seq());
}

absl::StatusOr<int64_t> RocksDbAuditLog::Retain(absl::Time cutoff) {
  absl::MutexLock retain_lock(&retain_mu_);
  rocksdb::ManagedSnapshot snapshot(db_->db());
  rocksdb::ReadOptions options;
  options.snapshot = snapshot.snapshot();
  options.fill_cache = false;
  REFLEXION_ASSIGN_OR_RETURN(Meta meta, ReadMetas(db_->db(), audit_, options));
  const uint64_t first = meta.anchor.seq() + 1;
  v1::AuditAnchor anchor;
  int64_t removed = 0;
  EntryIterator it(db_->db(), audit_, options, first);
  for (; it.Valid(); it.Next()) {
    REFLEXION_ASSIGN_OR_RETURN(const uint64_t seq, it.Seq());
    v1::AuditEntry entry;
    // A damaged entry is evidence: retention stops before it.
    if (!it.Parse(&entry)) {
      LOG(WARNING) << "audit retention stops at entry " << seq
                   << ", which cannot be parsed";
      break;
    }
    if (core::FromProto(entry.time()) >= cutoff) break;
    anchor.set_seq(seq);
    anchor.set_hash(entry.hash());
    ++removed;
  }
  REFLEXION_RETURN_IF_ERROR(it.status("scan the audit log for retention"));
  if (removed == 0) return 0;
  rocksdb::WriteBatch batch;
  (void)batch.DeleteRange(audit_, EntryKey(first), EntryKey(anchor.seq() + 1));
  (void)batch.Put(audit_, AnchorKey(), anchor.SerializeAsString());
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      db_->Write(write_options, &batch),
      absl::StrCat("remove audit entries ", first, "..", anchor.seq())));
  return removed;
}

}  // namespace reflexion::storage

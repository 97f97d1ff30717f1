#include "storage/rocksdb_event_log.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "rocksdb/db.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "storage/rocksdb_status.h"

namespace reflexion::storage {
namespace {

constexpr size_t kSequenceBytes = 8;

std::string Key(absl::string_view id, uint64_t sequence) {
  std::string key;
  key.reserve(id.size() + 1 + kSequenceBytes);
  key.append(id.data(), id.size());
  key.push_back('\0');
  for (int i = 0; i < 8; ++i) {
    key.push_back(static_cast<char>(sequence >> (56 - 8 * i)));
  }
  return key;
}

uint64_t SequenceOf(const rocksdb::Slice& key) {
  uint64_t v = 0;
  for (size_t i = key.size() - kSequenceBytes; i < key.size(); ++i) {
    v = (v << 8) | static_cast<uint8_t>(key[i]);
  }
  return v;
}

}  // namespace

RocksDbEventLog::RocksDbEventLog(RocksDb* db)
    : db_(CHECK_NOTNULL(db)), events_(db->ColumnFamily("events")) {}

absl::Status RocksDbEventLog::Append(absl::string_view workflow_id,
                                     uint64_t sequence,
                                     absl::string_view message) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateWorkflowId(workflow_id));
  rocksdb::WriteBatch batch;
  (void)batch.Put(events_, Key(workflow_id, sequence),
                  rocksdb::Slice(message.data(), message.size()));
  return FromRocksDbStatus(
      db_->Write(rocksdb::WriteOptions(), &batch),
      absl::StrCat("store event ", sequence, " of workflow ", workflow_id));
}

absl::Status RocksDbEventLog::Scan(
    absl::string_view workflow_id, uint64_t from, uint64_t to,
    absl::FunctionRef<bool(const rocksdb::Slice&, const rocksdb::Slice&)> fn) {
  if (from >= to) return absl::OkStatus();
  const std::string lower = Key(workflow_id, from);
  const std::string upper = Key(workflow_id, to);
  const rocksdb::Slice lower_slice(lower), upper_slice(upper);
  rocksdb::ReadOptions options;
  options.iterate_lower_bound = &lower_slice;
  options.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->db()->NewIterator(options, events_));
  for (it->SeekToFirst(); it->Valid() && fn(it->key(), it->value());
       it->Next()) {
  }
  return FromRocksDbStatus(
      it->status(), absl::StrCat("read the events of workflow ", workflow_id));
}

absl::Status RocksDbEventLog::Read(
    absl::string_view workflow_id, uint64_t from, uint64_t to,
    absl::FunctionRef<bool(uint64_t, absl::string_view)> fn) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateWorkflowId(workflow_id));
  return Scan(workflow_id, from, to,
              [&](const rocksdb::Slice& key, const rocksdb::Slice& value) {
                return fn(SequenceOf(key),
                          absl::string_view(value.data(), value.size()));
              });
}

absl::Status RocksDbEventLog::DeleteWorkflows(
    const std::vector<std::string>& workflow_ids) {
  rocksdb::WriteBatch batch;
  for (const std::string& id : workflow_ids) {
    if (!core::ValidateWorkflowId(id).ok()) continue;
    REFLEXION_RETURN_IF_ERROR(
        Scan(id, 0, UINT64_MAX,
             [&](const rocksdb::Slice& key, const rocksdb::Slice&) {
               (void)batch.Delete(events_, key);
               return true;
             }));
  }
  if (batch.Count() == 0) return absl::OkStatus();
  return FromRocksDbStatus(
      db_->Write(rocksdb::WriteOptions(), &batch),
      absl::StrCat("delete the events of ", workflow_ids.size(), " workflows"));
}

}  // namespace reflexion::storage

#include "storage/rocksdb_db.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/slice_transform.h"
#include "storage/rocksdb_status.h"

namespace reflexion::storage {
namespace {

// The workflow part of a checkpoints key (<workflow_id> \0 <step: 8 bytes>,
// see rocksdb_checkpoint_store.cc): a workflow's checkpoints are appended
// in step order, so the memtable inserts each one next to the previous one
// of the same prefix (memtable_insert_with_hint_prefix_extractor).
class CheckpointWorkflowPrefix final : public rocksdb::SliceTransform {
 public:
  static constexpr size_t kStepBytes = 8;
  const char* Name() const override {
    return "reflexion.CheckpointWorkflowPrefix";
  }
  rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
    return rocksdb::Slice(key.data(), key.size() - kStepBytes);
  }
  bool InDomain(const rocksdb::Slice& key) const override {
    return key.size() > kStepBytes && key[key.size() - kStepBytes - 1] == '\0';
  }
};

rocksdb::ColumnFamilyOptions ColumnFamilyOptionsFor(absl::string_view name) {
  rocksdb::ColumnFamilyOptions options;
  if (name == "checkpoints") {
    options.memtable_insert_with_hint_prefix_extractor =
        std::make_shared<CheckpointWorkflowPrefix>();
    // Checkpoints are short-lived (pruned to the last K per workflow,
    // expired with their workflow): most die in the first levels, where
    // compressing them costs CPU for nothing.
    options.compression_per_level = {
        rocksdb::kNoCompression,     rocksdb::kNoCompression,
        rocksdb::kSnappyCompression, rocksdb::kSnappyCompression,
        rocksdb::kSnappyCompression, rocksdb::kSnappyCompression,
        rocksdb::kSnappyCompression};
  }
  return options;
}

}  // namespace

void RocksDb::DbDeleter::operator()(rocksdb::DB* db) const {
  rocksdb::Status s = db->Close();
  if (!s.ok()) LOG(WARNING) << "closing RocksDB: " << s.ToString();
  delete db;
}

RocksDb::RocksDb(std::string dir, RocksDbOptions options)
    : dir_(std::move(dir)), options_(options) {}

RocksDb::~RocksDb() {
  // Handles must go before the DB they belong to.
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    rocksdb::Status s = db_->DestroyColumnFamilyHandle(h);
    if (!s.ok()) LOG(WARNING) << "releasing column family: " << s.ToString();
  }
}

absl::StatusOr<std::unique_ptr<RocksDb>> RocksDb::Open(const std::string& dir,
                                                       RocksDbOptions options) {
  if (dir.empty()) {
    return absl::InvalidArgumentError("RocksDB directory must not be empty");
  }
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  // An older DB gains the families added since it was written.
  db_options.create_missing_column_families = true;
  db_options.keep_log_file_num = 4;

  std::vector<std::string> names = {rocksdb::kDefaultColumnFamilyName};
  for (absl::string_view cf : kColumnFamilies) names.emplace_back(cf);
  // RocksDB refuses to open a DB without every family it holds: also open
  // those a newer build added, so a rollback of the binary still starts.
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, dir, &existing).ok()) {
    for (std::string& name : existing) {
      if (std::find(names.begin(), names.end(), name) == names.end()) {
        names.push_back(std::move(name));
      }
    }
  }  // else a new DB (or an error the Open below reports properly).
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.reserve(names.size());
  for (const std::string& name : names) {
    descriptors.emplace_back(name, ColumnFamilyOptionsFor(name));
  }

  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, dir, descriptors, &handles, &raw);
  if (!s.ok()) {
    return FromRocksDbStatus(s, absl::StrCat("open RocksDB at ", dir));
  }
  std::unique_ptr<RocksDb> out(new RocksDb(dir, options));
  out->db_.reset(raw);
  out->handles_ = std::move(handles);
  return out;
}

rocksdb::ColumnFamilyHandle* RocksDb::ColumnFamily(
    absl::string_view name) const {
  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    if (h->GetName() == name) return h;
  }
  LOG(FATAL) << "unknown column family " << name
             << " (add it to kColumnFamilies)";
  return nullptr;
}

}  // namespace reflexion::storage

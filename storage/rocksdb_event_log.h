#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "storage/rocksdb_db.h"

namespace rocksdb {
class ColumnFamilyHandle;
class Slice;
}  // namespace rocksdb

namespace reflexion::storage {

// The messages (events, results) of watched workflows, kept in the "events"
// column family so that WatchWorkflow replays them after a restart. Values
// are opaque; entries are numbered per workflow by sequence number. Key:
// <workflow_id> \0 <sequence: 8 bytes big-endian>. Writes go to the WAL
// without fsync (like async checkpoints). Thread-safe.
class RocksDbEventLog {
 public:
  // `db` is not owned and must outlive the log. CHECK-fails when null.
  explicit RocksDbEventLog(RocksDb* db);

  // Stores `message` as entry `sequence` of `workflow_id`, replacing one with
  // that number (a workflow continued after a decision reuses the number of
  // the result it superseded). kInvalidArgument for an empty id or one with
  // NUL.
  absl::Status Append(absl::string_view workflow_id, uint64_t sequence,
                      absl::string_view message);

  // Calls `fn` with the entries of `workflow_id` numbered in [from, to), in
  // order, until it returns false.
  absl::Status Read(absl::string_view workflow_id, uint64_t from, uint64_t to,
                    absl::FunctionRef<bool(uint64_t, absl::string_view)> fn);

  // Deletes every entry of these workflows (they expired).
  absl::Status DeleteWorkflows(const std::vector<std::string>& workflow_ids);

 private:
  // Calls `fn` with the keys and values of `workflow_id` numbered in
  // [from, to), in order, until it returns false.
  absl::Status Scan(
      absl::string_view workflow_id, uint64_t from, uint64_t to,
      absl::FunctionRef<bool(const rocksdb::Slice&, const rocksdb::Slice&)> fn);

  RocksDb* const db_;
  rocksdb::ColumnFamilyHandle* const events_;
};

}  // namespace reflexion::storage

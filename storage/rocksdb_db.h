#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
}  // namespace rocksdb

namespace reflexion::storage {

// Every column family the service uses: the single list to extend (one
// line per family). Open creates the missing ones, so a DB written by an
// older build gains new families on its next open.
inline constexpr absl::string_view kColumnFamilies[] = {
    "strategies",     // strategy versions (RocksDbKnowledgeStore)
    "stats",          // Beta posteriors per (signature, strategy)
    "episodes",       // episodic memory in time order
    "episode_index",  // secondary indexes of episodes
    "workflows",      // workflow records and their indexes (checkpoints)
    "checkpoints",    // per-step checkpoints (RocksDbCheckpointStore)
    "events",         // events of watched workflows (RocksDbEventLog)
};

struct RocksDbOptions {
  // false (default): writes go to the WAL without fsync, so a process crash
  // loses nothing but a machine crash may lose the last writes. true: every
  // write is fsynced before it returns.
  bool sync_writes = false;
};

// One RocksDB database at a directory with the column families above. The
// stores built on it (RocksDbKnowledgeStore, ...) hold a non-owning pointer,
// so it must outlive them. Thread-safe (rocksdb::DB is).
class RocksDb {
 public:
  // Opens the DB at `dir`, creating the directory's DB and any missing
  // column family. Column families unknown to this build (written by a newer
  // one) are opened too and left alone. Errors (message names `dir`):
  // kUnavailable when the directory is locked by another process or handle,
  // or on an I/O failure; kDataLoss when the DB is corrupt;
  // kInvalidArgument for an unusable path.
  static absl::StatusOr<std::unique_ptr<RocksDb>> Open(
      const std::string& dir, RocksDbOptions options = {});

  RocksDb(const RocksDb&) = delete;
  RocksDb& operator=(const RocksDb&) = delete;
  // Closes the DB (flushing nothing: the WAL holds every write).
  ~RocksDb();

  // The underlying DB. Owned by this object.
  rocksdb::DB* db() const { return db_.get(); }
  // The handle of a family in kColumnFamilies. CHECK-fails on any other
  // name (a bug). Owned by this object.
  rocksdb::ColumnFamilyHandle* ColumnFamily(absl::string_view name) const;
  const std::string& dir() const { return dir_; }
  const RocksDbOptions& options() const { return options_; }

 private:
  struct DbDeleter {
    void operator()(rocksdb::DB* db) const;
  };
  RocksDb(std::string dir, RocksDbOptions options);

  std::string dir_;
  RocksDbOptions options_;
  std::unique_ptr<rocksdb::DB, DbDeleter> db_;
  // Every opened family (kColumnFamilies, "default" and unknown ones).
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

}  // namespace reflexion::storage

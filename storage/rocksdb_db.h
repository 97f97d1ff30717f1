#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/ports/clock.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
class Env;
class Status;
class WriteBatch;
struct WriteOptions;
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
    "version_stats",  // per strategy version trial counts
    "workflows",      // workflow records and their indexes (checkpoints)
    "checkpoints",    // per-step checkpoints (RocksDbCheckpointStore)
    "events",         // events of watched workflows (RocksDbEventLog)
    "audit",          // the hash-chained audit log (RocksDbAuditLog)
};

struct RocksDbOptions {
  // false (default): writes go to the WAL without fsync, so a process crash
  // loses nothing but a machine crash may lose the last writes. true: every
  // write is fsynced before it returns.
  bool sync_writes = false;
  // For tests: the Env (hence file system) the DB uses; null = the default.
  // Not owned; must outlive the RocksDb. main() never sets it.
  rocksdb::Env* env = nullptr;
  // Time for the read-only state's log lines; null = the real clock. Not
  // owned; must outlive the RocksDb.
  const core::Clock* clock = nullptr;
  // Open fails with kDataLoss when recovery finds that writes acknowledged
  // before (see "Acknowledged writes" below) are gone, unless this is set:
  // then it opens with what remains and recovery() reports the loss.
  bool accept_data_loss = false;
  // While read-only after a write error, how often a background thread
  // tries DB::Resume() (RocksDB also retries a full disk by itself, every
  // few seconds, once space returns). Zero: no thread (call TryResume()).
  absl::Duration resume_interval = absl::Seconds(5);
};

// What Open found when it recovered the DB.
struct RocksDbRecovery {
  // Acknowledged writes were missing (only with accept_data_loss).
  bool data_loss = false;
  // Sequence numbers acknowledged before but not recovered.
  uint64_t lost_sequences = 0;
  // Which WAL, which sequences (empty when nothing was lost).
  std::string description;
};

// One RocksDB database at a directory with the column families above. The
// stores built on it (RocksDbKnowledgeStore, ...) hold a non-owning pointer,
// so it must outlive them. Thread-safe (rocksdb::DB is).
//
// Write errors. A failed write to disk (ENOSPC, EIO) puts RocksDB in a
// background-error state in which it refuses every write; this object then
// is read-only: Writable() returns the error (kResourceExhausted "disk full
// at DIR: ..." or kUnavailable "storage I/O error at DIR: ..."), reads keep
// working, and it logs once. It becomes writable again when RocksDB
// recovers by itself (a full disk, polled by RocksDB's SstFileManager) or
// when a Resume succeeds (TryResume, or the resume thread): it logs once
// more and tells the listener. RocksDB's own info log goes to glog (VLOG 1,
// warnings and errors as such), never to a file on the data disk: with
// Debian's assertion-enabled librocksdb, its file logger aborts the process
// on the write after a failed one (the SIGABRT of a full disk).
//
// Acknowledged writes. Every write through Write() records, after it
// succeeded, RocksDB's last sequence number in the file ACKNOWLEDGED_SEQUENCE
// of the DB directory (one pwrite, no fsync; fsynced at close). Recovery
// under kPointInTimeRecovery silently stops at the first damaged WAL record;
// Open compares the recovered sequence with that mark, so a truncated,
// emptied or deleted WAL holding acknowledged writes is detected (see
// README, "Durability and recovery", for what each durability mode can and
// cannot detect).
class RocksDb {
 public:
  // Opens the DB at `dir`, creating the directory's DB and any missing
  // column family. Column families unknown to this build (written by a newer
  // one) are opened too and left alone. Errors (message names `dir`):
  // kUnavailable when the directory is locked by another process or handle,
  // or on an I/O failure; kDataLoss when the DB is corrupt;
  // kInvalidArgument for an unusable path; kResourceExhausted when the
  // disk is full; kDataLoss naming the WAL and --accept_data_loss when
  // acknowledged writes are gone and options.accept_data_loss is false.
  static absl::StatusOr<std::unique_ptr<RocksDb>> Open(
      const std::string& dir, RocksDbOptions options = {});

  RocksDb(const RocksDb&) = delete;
  RocksDb& operator=(const RocksDb&) = delete;
  // Syncs the WAL (when writable) and closes the DB (flushing nothing: the
  // WAL holds every write).
  ~RocksDb();

  // Writes `batch` (every store writes through here, so write errors and
  // acknowledged sequence numbers are tracked). Returns RocksDB's status;
  // the caller converts it with FromRocksDbStatus.
  rocksdb::Status Write(const rocksdb::WriteOptions& options,
                        rocksdb::WriteBatch* batch);

  // OK while writes are accepted; else why not (see above). Cheap.
  absl::Status Writable() const;
  // When read-only: asks RocksDB to resume and returns Writable() after.
  // kResourceExhausted / kUnavailable while it cannot (still full, or
  // RocksDB's own recovery is in progress).
  absl::Status TryResume();
  // Waits until writable or `timeout` passes; returns whether writable.
  bool AwaitWritable(absl::Duration timeout) const;
  // Called with Writable() at once and after every change of it (from
  // RocksDB's or the resume thread; must not block or call into this
  // object). Replaces the previous one; nullptr removes it and waits for a
  // running call.
  void SetWritableListener(std::function<void(const absl::Status&)> listener);
  // What Open recovered.
  const RocksDbRecovery& recovery() const { return recovery_; }

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
  class Listener;
  // The read-only state, shared with the RocksDB event listener (which
  // RocksDB may call during Open and until Close).
  struct State {
    std::string dir;
    const core::Clock* clock = nullptr;  // never null
    mutable absl::Mutex mu;
    absl::Status error ABSL_GUARDED_BY(mu);
    absl::Time since ABSL_GUARDED_BY(mu);
    bool stopping ABSL_GUARDED_BY(mu) = false;
    absl::CondVar changed;
    // Serialises listener calls (and SetWritableListener(nullptr)).
    absl::Mutex listener_mu ABSL_ACQUIRED_AFTER(mu);
    std::function<void(const absl::Status&)> listener
        ABSL_GUARDED_BY(listener_mu);
    // The value last given to the listener is OK.
    bool told_ok ABSL_GUARDED_BY(listener_mu) = true;
    // Becomes read-only with `cause` (a RocksDB error); logs on the change.
    void Fail(const rocksdb::Status& cause);
    // Becomes writable; logs on the change.
    void Recovered(absl::string_view how);
    void Tell();
  };
  RocksDb(std::string dir, RocksDbOptions options);
  void ResumeLoop();
  // Records `sequence` as acknowledged in the mark file.
  void NoteAcknowledged(uint64_t sequence);

  std::string dir_;
  RocksDbOptions options_;
  std::shared_ptr<State> state_;
  RocksDbRecovery recovery_;
  // ACKNOWLEDGED_SEQUENCE, open for writing (-1: none).
  int mark_fd_ = -1;
  std::atomic<uint64_t> acknowledged_{0};
  absl::Mutex mark_mu_;
  std::unique_ptr<rocksdb::DB, DbDeleter> db_;
  // Every opened family (kColumnFamilies, "default" and unknown ones).
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::thread resumer_;
};

}  // namespace reflexion::storage

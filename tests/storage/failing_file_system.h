#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/listener.h"

namespace reflexion::testing {

// A file system for RocksDB that fails writes on demand: while SetFull(true)
// (or SetIoError(true)) is in effect, every append, positioned append,
// truncate, allocate and sync of a file opened for writing returns
// IOStatus::NoSpace() (or a plain IOError). File creation, reads, renames
// and deletions keep working, as on a real full disk. GetFreeSpace reports 0
// while full. Thread-safe.
//
//   auto fs = std::make_shared<FailingFileSystem>();
//   std::unique_ptr<rocksdb::Env> env = FailingFileSystem::NewEnv(fs);
//   options.env = env.get();  // outlives the DB
class FailingFileSystem : public rocksdb::FileSystemWrapper {
 public:
  FailingFileSystem()
      : rocksdb::FileSystemWrapper(rocksdb::FileSystem::Default()) {}

  void SetFull(bool full) { full_.store(full); }
  void SetIoError(bool fail) { io_error_.store(fail); }
  // Whether GetFreeSpace reports the real free space even while full (as a
  // nearly full disk does, where small writes fit and large ones do not).
  void SetReportFreeSpaceWhileFull(bool report) { report_free_.store(report); }
  // Writes refused so far.
  int failures() const { return failures_.load(); }

  // An Env using `fs` (the Env shares its ownership).
  static std::unique_ptr<rocksdb::Env> NewEnv(
      std::shared_ptr<FailingFileSystem> fs) {
    return rocksdb::NewCompositeEnv(std::move(fs));
  }

  static const char* kClassName() { return "ReflexionFailingFileSystem"; }
  const char* Name() const override { return kClassName(); }

  rocksdb::IOStatus NewWritableFile(const std::string& f,
                                    const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* r,
                                    rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->NewWritableFile(f, options, r, dbg);
    if (s.ok()) r->reset(new File(std::move(*r), this));
    return s;
  }
  rocksdb::IOStatus ReopenWritableFile(
      const std::string& f, const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* r,
      rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->ReopenWritableFile(f, options, r, dbg);
    if (s.ok()) r->reset(new File(std::move(*r), this));
    return s;
  }
  rocksdb::IOStatus ReuseWritableFile(
      const std::string& f, const std::string& old,
      const rocksdb::FileOptions& options,
      std::unique_ptr<rocksdb::FSWritableFile>* r,
      rocksdb::IODebugContext* dbg) override {
    rocksdb::IOStatus s = target()->ReuseWritableFile(f, old, options, r, dbg);
    if (s.ok()) r->reset(new File(std::move(*r), this));
    return s;
  }
  // RocksDB's own file logger (EnvLogger) writing through this file system,
  // as Env::Default() gives a DB without an info_log: its writes fail too.
  rocksdb::IOStatus NewLogger(const std::string& f,
                              const rocksdb::IOOptions& options,
                              std::shared_ptr<rocksdb::Logger>* r,
                              rocksdb::IODebugContext* dbg) override {
    return rocksdb::FileSystem::NewLogger(f, options, r, dbg);
  }
  rocksdb::IOStatus GetFreeSpace(const std::string& path,
                                 const rocksdb::IOOptions& options,
                                 uint64_t* free,
                                 rocksdb::IODebugContext* dbg) override {
    if (full_.load() && !report_free_.load()) {
      *free = 0;
      return rocksdb::IOStatus::OK();
    }
    return target()->GetFreeSpace(path, options, free, dbg);
  }

 private:
  // The status of a write now: OK, NoSpace or IOError.
  rocksdb::IOStatus Check() {
    if (full_.load()) {
      failures_.fetch_add(1);
      return rocksdb::IOStatus::NoSpace("injected: no space left on device");
    }
    if (io_error_.load()) {
      failures_.fetch_add(1);
      return rocksdb::IOStatus::IOError("injected: input/output error");
    }
    return rocksdb::IOStatus::OK();
  }

  class File : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    File(std::unique_ptr<rocksdb::FSWritableFile> file, FailingFileSystem* fs)
        : rocksdb::FSWritableFileOwnerWrapper(std::move(file)), fs_(fs) {}
    using IOOptions = rocksdb::IOOptions;
    using IOStatus = rocksdb::IOStatus;
    using Ctx = rocksdb::IODebugContext;

    IOStatus Append(const rocksdb::Slice& data, const IOOptions& o,
                    Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->Append(data, o, dbg) : s;
    }
    IOStatus Append(const rocksdb::Slice& data, const IOOptions& o,
                    const rocksdb::DataVerificationInfo& info,
                    Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->Append(data, o, info, dbg) : s;
    }
    IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                              const IOOptions& o, Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->PositionedAppend(data, offset, o, dbg) : s;
    }
    IOStatus PositionedAppend(const rocksdb::Slice& data, uint64_t offset,
                              const IOOptions& o,
                              const rocksdb::DataVerificationInfo& info,
                              Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->PositionedAppend(data, offset, o, info, dbg)
                    : s;
    }
    IOStatus Truncate(uint64_t size, const IOOptions& o, Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->Truncate(size, o, dbg) : s;
    }
    IOStatus Sync(const IOOptions& o, Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->Sync(o, dbg) : s;
    }
    IOStatus Fsync(const IOOptions& o, Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->Fsync(o, dbg) : s;
    }
    IOStatus RangeSync(uint64_t offset, uint64_t nbytes, const IOOptions& o,
                       Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->RangeSync(offset, nbytes, o, dbg) : s;
    }
    IOStatus Allocate(uint64_t offset, uint64_t len, const IOOptions& o,
                      Ctx* dbg) override {
      IOStatus s = fs_->Check();
      return s.ok() ? target()->Allocate(offset, len, o, dbg) : s;
    }

   private:
    FailingFileSystem* fs_;
  };

  std::atomic<bool> full_{false};
  std::atomic<bool> io_error_{false};
  std::atomic<bool> report_free_{false};
  std::atomic<int> failures_{0};
};

}  // namespace reflexion::testing

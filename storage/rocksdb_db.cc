#include "storage/rocksdb_db.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/listener.h"
#include "rocksdb/options.h"
#include "rocksdb/slice_transform.h"
#include "rocksdb/wal_filter.h"
#include "rocksdb/write_batch.h"
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

// RocksDB's info log into glog. Without it RocksDB writes a LOG file in the
// DB directory through its EnvLogger, and Debian's librocksdb (built with
// assertions) aborts in WritableFileWriter on the first log line after a
// write to it failed: a full disk killed the process with SIGABRT.
class GlogLogger final : public rocksdb::Logger {
 public:
  GlogLogger() : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format,
            va_list ap) override {
    const bool loud = level >= rocksdb::InfoLogLevel::WARN_LEVEL &&
                      level != rocksdb::InfoLogLevel::HEADER_LEVEL;
    if (!loud && !VLOG_IS_ON(1)) return;
    char line[1024];
    std::vsnprintf(line, sizeof(line), format, ap);
    // While a full disk lasts, RocksDB's SstFileManager logs two errors
    // every 5 s; the read-only state is logged once by RocksDb instead.
    if (loud && std::strstr(line, "sst_file_manager_impl") != nullptr) {
      VLOG(1) << "rocksdb: " << line;
      return;
    }
    if (level == rocksdb::InfoLogLevel::WARN_LEVEL) {
      LOG(WARNING) << "rocksdb: " << line;
    } else if (loud) {
      LOG(ERROR) << "rocksdb: " << line;
    } else {
      VLOG(1) << "rocksdb: " << line;
    }
  }
};

// The WAL records recovery reads: per WAL file, the last sequence number.
class WalRecorder final : public rocksdb::WalFilter {
 public:
  struct Wal {
    std::string name;
    uint64_t records = 0;
    uint64_t last_sequence = 0;
  };
  WalProcessingOption LogRecordFound(unsigned long long log_number,
                                     const std::string& log_file_name,
                                     const rocksdb::WriteBatch& batch,
                                     rocksdb::WriteBatch*,
                                     bool* batch_changed) override {
    *batch_changed = false;
    Wal& wal = wals_[log_number];
    wal.name = log_file_name;
    ++wal.records;
    // A WriteBatch starts with its sequence number (fixed64) and count.
    const std::string& data = batch.Data();
    if (data.size() >= 12) {
      uint64_t sequence = 0;
      for (int i = 7; i >= 0; --i) {
        sequence = (sequence << 8) | static_cast<unsigned char>(data[i]);
      }
      const uint32_t count = batch.Count();
      wal.last_sequence = sequence + (count > 0 ? count - 1 : 0);
    }
    return WalProcessingOption::kContinueProcessing;
  }
  const char* Name() const override { return "reflexion.WalRecorder"; }
  const std::map<uint64_t, Wal>& wals() const { return wals_; }

 private:
  std::map<uint64_t, Wal> wals_;
};

constexpr char kMarkFile[] = "ACKNOWLEDGED_SEQUENCE";
constexpr size_t kMarkBytes = 21;  // 20 digits and a newline

std::string MarkPath(const std::string& dir) {
  return (std::filesystem::path(dir) / kMarkFile).string();
}

// The acknowledged sequence recorded in `dir` (0: none or unreadable).
uint64_t ReadMark(const std::string& dir) {
  FILE* f = std::fopen(MarkPath(dir).c_str(), "r");
  if (f == nullptr) return 0;
  char buf[kMarkBytes + 1] = {};
  const size_t n = std::fread(buf, 1, kMarkBytes, f);
  std::fclose(f);
  uint64_t mark = 0;
  if (n != kMarkBytes || buf[kMarkBytes - 1] != '\n' ||
      !absl::SimpleAtoi(absl::string_view(buf, kMarkBytes - 1), &mark)) {
    LOG(WARNING) << "ignoring unreadable " << MarkPath(dir)
                 << ": acknowledged writes are not checked on this open";
    return 0;
  }
  return mark;
}

bool WriteMark(int fd, uint64_t sequence) {
  const std::string text = absl::StrFormat("%020u\n", sequence);
  return pwrite(fd, text.data(), text.size(), 0) ==
         static_cast<ssize_t>(text.size());
}

// The *.log files of `dir` with their sizes, for messages.
std::string WalFiles(const std::string& dir) {
  std::string out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".log") == 0) {
      absl::StrAppend(&out, out.empty() ? "" : ", ", name, " (",
                      e.file_size(ec), " bytes)");
    }
  }
  return out.empty() ? std::string("none") : out;
}

}  // namespace

// Tracks RocksDB's background errors (a failed WAL, flush, compaction or
// MANIFEST write) and its recoveries.
class RocksDb::Listener final : public rocksdb::EventListener {
 public:
  explicit Listener(std::shared_ptr<State> state) : state_(std::move(state)) {}
  void OnBackgroundError(rocksdb::BackgroundErrorReason,
                         rocksdb::Status* error) override {
    if (error != nullptr && !error->ok()) state_->Fail(*error);
  }
  void OnErrorRecoveryEnd(
      const rocksdb::BackgroundErrorRecoveryInfo& info) override {
    if (info.new_bg_error.ok()) state_->Recovered("RocksDB recovered");
  }

 private:
  std::shared_ptr<State> state_;
};

void RocksDb::State::Fail(const rocksdb::Status& cause) {
  {
    absl::MutexLock lock(&mu);
    if (!error.ok()) return;  // already read-only: no log storm
    const std::string why = cause.ToString();
    error = cause.IsNoSpace() ? absl::ResourceExhaustedError(absl::StrCat(
                                    "disk full at ", dir, ": ", why,
                                    " (read-only until space is freed)"))
                              : absl::UnavailableError(absl::StrCat(
                                    "storage I/O error at ", dir, ": ", why,
                                    " (read-only until it recovers)"));
    since = clock->Now();
    LOG(ERROR) << "storage is read-only: " << error.message();
    changed.SignalAll();
  }
  Tell();
}

void RocksDb::State::Recovered(absl::string_view how) {
  {
    absl::MutexLock lock(&mu);
    if (error.ok()) return;
    LOG(WARNING) << "storage at " << dir << " is writable again (" << how
                 << ") after " << absl::FormatDuration(clock->Now() - since)
                 << " read-only";
    error = absl::OkStatus();
    changed.SignalAll();
  }
  Tell();
}

void RocksDb::State::Tell() {
  absl::MutexLock lock(&listener_mu);
  absl::Status now;
  {
    absl::MutexLock state_lock(&mu);
    now = error;
  }
  // Tell the current state, not the event: calls from several threads may
  // race, the last one tells the truth.
  if (now.ok() == told_ok) return;
  told_ok = now.ok();
  if (listener) listener(now);
}

void RocksDb::DbDeleter::operator()(rocksdb::DB* db) const {
  rocksdb::Status s = db->Close();
  if (!s.ok()) LOG(WARNING) << "closing RocksDB: " << s.ToString();
  delete db;
}

RocksDb::RocksDb(std::string dir, RocksDbOptions options)
    : dir_(std::move(dir)),
      options_(options),
      state_(std::make_shared<State>()) {
  static const core::RealClock kRealClock;
  state_->dir = dir_;
  state_->clock = options_.clock != nullptr ? options_.clock : &kRealClock;
}

RocksDb::~RocksDb() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
    state_->changed.SignalAll();
  }
  if (resumer_.joinable()) resumer_.join();
  SetWritableListener(nullptr);
  // A clean shutdown leaves the WAL durable (async writes are not fsynced
  // when written) and the mark with it.
  if (db_ != nullptr && Writable().ok()) {
    rocksdb::Status s = db_->SyncWAL();
    if (!s.ok()) LOG(WARNING) << "syncing the WAL at close: " << s.ToString();
  }
  if (mark_fd_ >= 0) {
    if (fsync(mark_fd_) != 0) {
      LOG(WARNING) << "fsync " << MarkPath(dir_) << ": " << strerror(errno);
    }
    close(mark_fd_);
  }
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
  std::unique_ptr<RocksDb> out(new RocksDb(dir, options));
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  // An older DB gains the families added since it was written.
  db_options.create_missing_column_families = true;
  db_options.keep_log_file_num = 4;
  if (options.env != nullptr) db_options.env = options.env;
  db_options.info_log = std::make_shared<GlogLogger>();
  db_options.listeners.push_back(std::make_shared<Listener>(out->state_));
  // Point in time: recovery replays the WAL up to its first damaged record
  // and stops, so the DB is a consistent prefix of what was written (a
  // WriteBatch is applied whole or not at all). It does so silently, which
  // is right for a torn record nobody was told was written (a crash in the
  // middle of a write) and wrong for acknowledged ones: those are checked
  // against ACKNOWLEDGED_SEQUENCE below. kAbsoluteConsistency would refuse
  // every start after a crash that tore the unacknowledged tail, and still
  // not see an emptied WAL; kTolerateCorruptedTailRecords drops a damaged
  // tail as silently; kSkipAnyCorruptedRecords breaks the prefix.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;

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
  auto open_error = [&](const rocksdb::Status& s) {
    if (s.IsNoSpace()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("disk full: cannot open RocksDB at ", dir, ": ",
                       s.ToString(), " (free space and start again)"));
    }
    return FromRocksDbStatus(s, absl::StrCat("open RocksDB at ", dir));
  };

  // Acknowledged writes: replay the WAL read-only first (changing nothing
  // on disk, so a refused start keeps the damaged WAL for inspection) and
  // compare with the mark.
  const uint64_t mark = ReadMark(dir);
  if (mark > 0 && !existing.empty()) {
    WalRecorder recorder;
    rocksdb::DBOptions probe_options = db_options;
    probe_options.wal_filter = &recorder;
    probe_options.listeners.clear();
    rocksdb::DB* probe = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> probe_handles;
    std::vector<rocksdb::ColumnFamilyDescriptor> present;
    for (const auto& d : descriptors) {
      if (std::find(existing.begin(), existing.end(), d.name) !=
          existing.end()) {
        present.push_back(d);
      }
    }
    rocksdb::Status s = rocksdb::DB::OpenForReadOnly(
        probe_options, dir, present, &probe_handles, &probe);
    if (!s.ok()) return open_error(s);
    const uint64_t recovered = probe->GetLatestSequenceNumber();
    for (rocksdb::ColumnFamilyHandle* h : probe_handles) {
      (void)probe->DestroyColumnFamilyHandle(h);
    }
    delete probe;
    if (recovered < mark) {
      RocksDbRecovery& r = out->recovery_;
      r.data_loss = true;
      r.lost_sequences = mark - recovered;
      std::string wal = "no WAL record was read";
      if (!recorder.wals().empty()) {
        const auto& [number, last] = *recorder.wals().rbegin();
        wal = absl::StrCat("the newest WAL read, ", last.name, ", ends at ",
                           "sequence ", last.last_sequence, " after ",
                           last.records, " record(s)");
      }
      r.description = absl::StrCat(
          "RocksDB at ", dir, " lost acknowledged writes: sequences ",
          recovered + 1, "..", mark, " (", r.lost_sequences,
          ") were acknowledged but are not in the WAL (", wal,
          "; WAL files now: ", WalFiles(dir),
          "): the WAL was truncated, emptied or deleted");
      if (!options.accept_data_loss) {
        return absl::DataLossError(absl::StrCat(
            r.description,
            ". Nothing was changed; to start with what remains (the lost "
            "writes are gone for good), restart with --accept_data_loss"));
      }
      LOG(ERROR) << r.description << "; starting anyway (--accept_data_loss)";
    }
  }

  rocksdb::DB* raw = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, dir, descriptors, &handles, &raw);
  if (!s.ok()) return open_error(s);
  out->db_.reset(raw);
  out->handles_ = std::move(handles);

  // The mark restarts from what was recovered (so an accepted loss is
  // reported once), durably before any new write is acknowledged.
  const std::string path = MarkPath(dir);
  out->mark_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  const uint64_t recovered = out->db_->GetLatestSequenceNumber();
  if (out->mark_fd_ < 0 || !WriteMark(out->mark_fd_, recovered) ||
      fsync(out->mark_fd_) != 0) {
    const int error = errno;
    const std::string what =
        absl::StrCat("write ", path, ": ", std::strerror(error));
    return error == ENOSPC
               ? absl::ResourceExhaustedError(absl::StrCat("disk full: ", what))
               : absl::UnavailableError(what);
  }
  out->acknowledged_.store(recovered);
  if (options.resume_interval > absl::ZeroDuration()) {
    RocksDb* db = out.get();
    out->resumer_ = std::thread([db] { db->ResumeLoop(); });
  }
  return out;
}

rocksdb::Status RocksDb::Write(const rocksdb::WriteOptions& options,
                               rocksdb::WriteBatch* batch) {
  rocksdb::Status s = db_->Write(options, batch);
  if (s.ok()) {
    NoteAcknowledged(db_->GetLatestSequenceNumber());
  } else if (s.IsIOError() || s.IsCorruption()) {
    // The listener has seen it too when RocksDB made it a background error.
    state_->Fail(s);
  }
  return s;
}

void RocksDb::NoteAcknowledged(uint64_t sequence) {
  if (sequence <= acknowledged_.load(std::memory_order_acquire)) return;
  absl::MutexLock lock(&mark_mu_);
  if (sequence <= acknowledged_.load(std::memory_order_relaxed)) return;
  if (!WriteMark(mark_fd_, sequence)) {
    LOG_EVERY_N(WARNING, 1000) << "cannot record acknowledged sequence in "
                               << MarkPath(dir_) << ": " << strerror(errno);
    return;
  }
  acknowledged_.store(sequence, std::memory_order_release);
}

absl::Status RocksDb::Writable() const {
  absl::MutexLock lock(&state_->mu);
  return state_->error;
}

absl::Status RocksDb::TryResume() {
  if (Writable().ok()) return absl::OkStatus();
  rocksdb::Status s = db_->Resume();
  if (s.ok()) {
    state_->Recovered("resumed");
  } else {
    VLOG(1) << "RocksDB at " << dir_ << " cannot resume yet: " << s.ToString();
  }
  return Writable();
}

bool RocksDb::AwaitWritable(absl::Duration timeout) const {
  absl::MutexLock lock(&state_->mu);
  const State* state = state_.get();
  auto writable = [state]() ABSL_SHARED_LOCKS_REQUIRED(state->mu) {
    return state->error.ok();
  };
  return state_->mu.AwaitWithTimeout(absl::Condition(&writable), timeout);
}

void RocksDb::SetWritableListener(
    std::function<void(const absl::Status&)> listener) {
  absl::MutexLock lock(&state_->listener_mu);
  state_->listener = std::move(listener);
  if (!state_->listener) return;
  // It starts from the current state.
  absl::Status now = Writable();
  state_->told_ok = now.ok();
  state_->listener(now);
}

void RocksDb::ResumeLoop() {
  absl::MutexLock lock(&state_->mu);
  while (!state_->stopping) {
    if (state_->error.ok()) {
      state_->changed.Wait(&state_->mu);
      continue;
    }
    state_->changed.WaitWithTimeout(&state_->mu, options_.resume_interval);
    if (state_->stopping || state_->error.ok()) continue;
    state_->mu.Unlock();
    (void)TryResume();
    state_->mu.Lock();
  }
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

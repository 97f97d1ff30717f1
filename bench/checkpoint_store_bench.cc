// CheckpointStore::Put throughput: the engine calls it after every node step
// of every workflow. ~500-byte states, keep_last 10, async (sync=false)
// writes; workflows written round-robin. Target: well over 100k Put/s for
// the RocksDB store on 2 cores.
//
//   ./build/bench/checkpoint_store_bench --benchmark_counters_tabular=true

#include <stdlib.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "benchmark/benchmark.h"
#include "core/ports/checkpoint_store.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "glog/logging.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "storage/rocksdb_checkpoint_store.h"
#include "storage/rocksdb_db.h"

namespace reflexion {
namespace {

constexpr int kKeepLast = 10;
constexpr size_t kStateBytes = 500;

// A fresh RocksDB in a temp dir, removed on destruction.
class TempRocksDb {
 public:
  TempRocksDb() {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "ckpt_bench_XXXXXX").string();
    CHECK(mkdtemp(tmpl.data()) != nullptr) << "mkdtemp " << tmpl;
    dir_ = tmpl;
    auto db = storage::RocksDb::Open(dir_);
    CHECK(db.ok()) << db.status();
    db_ = *std::move(db);
    store_ = std::make_unique<storage::RocksDbCheckpointStore>(db_.get());
  }
  ~TempRocksDb() {
    store_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  core::CheckpointStore& store() { return *store_; }
  storage::RocksDb& db() { return *db_; }

 private:
  std::string dir_;
  std::unique_ptr<storage::RocksDb> db_;
  std::unique_ptr<storage::RocksDbCheckpointStore> store_;
};

// Puts one checkpoint per iteration, cycling over `workflows` workflows
// owned by this thread.
void PutLoop(benchmark::State& state, core::CheckpointStore& store,
             int workflows) {
  std::vector<core::Checkpoint> cps(workflows);
  for (int w = 0; w < workflows; ++w) {
    cps[w].workflow_id =
        absl::StrCat("wf-", state.thread_index(), "-", w, "-0123456789abcdef");
    cps[w].node = "diagnose";
    cps[w].next_node = "select_strategy";
    cps[w].state = std::string(kStateBytes, static_cast<char>('a' + w % 26));
  }
  // A run's store is fresh, but the framework calls this several times per
  // run while it sizes the iteration count: continue the steps.
  static std::atomic<uint64_t> base{0};
  const uint64_t first = base.fetch_add(uint64_t{1} << 32);
  for (auto& c : cps) c.step = first;
  int w = 0;
  for (auto _ : state) {
    core::Checkpoint& c = cps[w];
    c.step++;
    c.last_sequence = c.step;
    c.time = absl::FromUnixMicros(static_cast<int64_t>(c.step));
    absl::Status s =
        store.Put(c, core::WorkflowPhase::kRunning, kKeepLast, false);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    if (++w == workflows) w = 0;
  }
  state.SetItemsProcessed(state.iterations());
}

// Created before a run's threads start and destroyed after they end.
std::unique_ptr<TempRocksDb> g_rocksdb;
std::unique_ptr<core::InMemoryCheckpointStore> g_in_memory;

void OpenRocksDb(const benchmark::State&) {
  g_rocksdb = std::make_unique<TempRocksDb>();
}
void CloseRocksDb(const benchmark::State&) { g_rocksdb.reset(); }
void NewInMemory(const benchmark::State&) {
  g_in_memory = std::make_unique<core::InMemoryCheckpointStore>();
}
void DeleteInMemory(const benchmark::State&) { g_in_memory.reset(); }

void BM_RocksDbPut(benchmark::State& state) {
  PutLoop(state, g_rocksdb->store(), static_cast<int>(state.range(0)));
}
BENCHMARK(BM_RocksDbPut)
    ->Setup(OpenRocksDb)
    ->Teardown(CloseRocksDb)
    ->ArgName("workflows")
    ->Arg(1)
    ->Arg(1000)
    ->Arg(100000)
    ->UseRealTime();
BENCHMARK(BM_RocksDbPut)
    ->Setup(OpenRocksDb)
    ->Teardown(CloseRocksDb)
    ->ArgName("workflows")
    ->Arg(1000)
    ->Threads(2)
    ->UseRealTime();

// The ceiling: one raw rocksdb::DB::Put of a checkpoint-sized value per
// iteration, no store logic, same DB and options.
void BM_RawRocksDbPutBaseline(benchmark::State& state) {
  storage::RocksDb& db = g_rocksdb->db();
  rocksdb::ColumnFamilyHandle* cf = db.ColumnFamily("checkpoints");
  const std::string value(kStateBytes + 60, 'x');
  uint64_t i = 0;
  for (auto _ : state) {
    const std::string key = absl::StrCat("wf-", i % 1000, "-", i);
    ++i;
    rocksdb::Status s = db.db()->Put(rocksdb::WriteOptions(), cf, key, value);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawRocksDbPutBaseline)
    ->Setup(OpenRocksDb)
    ->Teardown(CloseRocksDb)
    ->UseRealTime();

void BM_InMemoryPut(benchmark::State& state) {
  PutLoop(state, *g_in_memory, static_cast<int>(state.range(0)));
}
BENCHMARK(BM_InMemoryPut)
    ->Setup(NewInMemory)
    ->Teardown(DeleteInMemory)
    ->ArgName("workflows")
    ->Arg(1)
    ->Arg(1000)
    ->UseRealTime();

}  // namespace
}  // namespace reflexion

BENCHMARK_MAIN();

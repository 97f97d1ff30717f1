#pragma once

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "core/ports/knowledge_store.h"
#include "reflexion/v1/types.pb.h"
#include "storage/rocksdb_db.h"

namespace reflexion::storage {

// core::KnowledgeStore on RocksDB (column families strategies, stats,
// episodes, episode_index; key layout at the top of the .cc). Same contract
// and contract suite as core::InMemoryKnowledgeStore.
//
// Every write is one WriteBatch (atomic, WAL-logged; fsynced only when the
// RocksDb was opened with sync_writes). Reads see a consistent snapshot and
// never block writers. Thread-safe: a store-level mutex serialises the
// read-modify-write of writers (latest version check, posterior update), so
// use one store per RocksDb. Storage failures are converted by
// FromRocksDbStatus (kUnavailable, kDataLoss, ...), a stored value that does
// not parse is kDataLoss.
class RocksDbKnowledgeStore final : public core::KnowledgeStore {
 public:
  // `db` is not owned and must outlive the store. CHECK-fails when null.
  explicit RocksDbKnowledgeStore(RocksDb* db);
  RocksDbKnowledgeStore(const RocksDbKnowledgeStore&) = delete;
  RocksDbKnowledgeStore& operator=(const RocksDbKnowledgeStore&) = delete;

  absl::Status PutStrategyVersion(
      const reflexion::v1::Strategy& strategy) override;
  absl::StatusOr<std::vector<reflexion::v1::Strategy>> ListStrategies()
      override;
  absl::StatusOr<std::vector<reflexion::v1::Strategy>> GetStrategyHistory(
      absl::string_view name) override;
  absl::StatusOr<std::vector<reflexion::v1::StrategyStats>> GetStats(
      absl::string_view signature) override;
  absl::StatusOr<core::LearningResult> CommitLearning(
      const core::LearningCommit& commit) override;
  absl::StatusOr<core::EpisodePage> ListEpisodes(
      const core::EpisodeQuery& query) override;
  absl::Status ForEachEpisode(
      absl::FunctionRef<bool(const reflexion::v1::Episode&)> fn) override;
  absl::StatusOr<std::vector<reflexion::v1::VersionStats>> GetVersionStats(
      absl::string_view strategy) override;
  // Deletes in batches of 1000 episodes (each batch atomic); the count bound
  // costs one key-only scan of the episodes.
  absl::StatusOr<int64_t> RetainEpisodes(int64_t max_episodes,
                                         absl::Time older_than) override;
  // One atomic batch.
  absl::StatusOr<core::MemoryCleared> ClearMemory(
      absl::string_view signature) override;

 private:
  // Adds the deletion of the episode at `key` and its index entries.
  absl::Status DeleteEpisode(absl::string_view key,
                             const reflexion::v1::Episode& episode,
                             rocksdb::WriteBatch* batch);
  absl::Status WriteLocked(rocksdb::WriteBatch* batch, absl::string_view what);
  // The latest stored version of `name`, 0 when there is none.
  absl::StatusOr<int32_t> LatestVersion(absl::string_view name) const;

  RocksDb* const db_;
  rocksdb::ColumnFamilyHandle* const strategies_;
  rocksdb::ColumnFamilyHandle* const stats_;
  rocksdb::ColumnFamilyHandle* const episodes_;
  rocksdb::ColumnFamilyHandle* const episode_index_;
  rocksdb::ColumnFamilyHandle* const version_stats_;
  // Held across every read-modify-write so concurrent writers never lose an
  // update or append the same version twice. Readers do not take it.
  absl::Mutex write_mu_;
};

}  // namespace reflexion::storage

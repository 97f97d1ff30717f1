#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "core/ports/knowledge_store.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// ---------------------------------------------------------------------------
// Contract helpers shared by every KnowledgeStore adapter (this fake and
// storage::RocksDbKnowledgeStore), so that they validate, order, page and
// update posteriors identically. Pure functions, thread-safe.
// ---------------------------------------------------------------------------

// kInvalidArgument naming the field when the strategy has an empty name, a
// name containing NUL (reserved as the key separator) or a version < 1.
absl::Status ValidateStrategy(const reflexion::v1::Strategy& strategy);

// kFailedPrecondition unless `strategy.version()` is `latest + 1`, where
// `latest` is 0 when the name is unknown.
absl::Status CheckNextVersion(const reflexion::v1::Strategy& strategy,
                              int32_t latest);

// kInvalidArgument naming the field when the episode lacks id, workflow_id,
// a valid time, signature or strategy, when signature / strategy /
// workflow_id contain NUL, when a prior is not finite and > 0, or when
// new_version fails ValidateStrategy.
absl::Status ValidateLearningCommit(const LearningCommit& commit);

// Applies one trial of `commit` to `current` (nullptr: create from the
// prior). updated_at is the episode's time. Requires a valid commit.
LearningResult ApplyTrial(const reflexion::v1::StrategyStats* current,
                          const LearningCommit& commit);

// The byte string episodes are ordered by: the episode time in microseconds
// since the epoch as 8 big-endian bytes with the sign bit flipped (so
// negative times sort first), then the id. Requires a valid episode time.
std::string EpisodeOrderKey(const reflexion::v1::Episode& episode);

// Page tokens are the lowercase hex of the order key of the last episode
// returned. DecodePageToken returns kInvalidArgument naming page_token for
// anything that is not such a token ("" decodes to "").
std::string EncodePageToken(absl::string_view order_key);
absl::StatusOr<std::string> DecodePageToken(absl::string_view token);

// page_size clamped to [1, 1000]; 0 means 100.
int ClampPageSize(int page_size);

// The VersionStats of `trials` and `successes` (uniform prior).
reflexion::v1::VersionStats MakeVersionStats(absl::string_view strategy,
                                             int32_t version, int64_t trials,
                                             int64_t successes);

// The order key below which episodes are older than `older_than` (an episode
// time of exactly `older_than` is kept). InfinitePast gives "".
std::string RetentionCutoffKey(absl::Time older_than);

// Whether the episode matches every non-empty filter of the query.
bool MatchesQuery(const reflexion::v1::Episode& episode,
                  const EpisodeQuery& query);

// ---------------------------------------------------------------------------

// The deterministic in-memory KnowledgeStore used by tests. Same contract as
// the port (and the same contract suite as RocksDbKnowledgeStore); nothing
// survives the object. Thread-safe: one mutex guards everything, and no
// callback runs under it (ForEachEpisode visits a snapshot).
class InMemoryKnowledgeStore final : public KnowledgeStore {
 public:
  InMemoryKnowledgeStore() = default;
  InMemoryKnowledgeStore(const InMemoryKnowledgeStore&) = delete;
  InMemoryKnowledgeStore& operator=(const InMemoryKnowledgeStore&) = delete;

  absl::Status PutStrategyVersion(
      const reflexion::v1::Strategy& strategy) override;
  absl::StatusOr<std::vector<reflexion::v1::Strategy>> ListStrategies()
      override;
  absl::StatusOr<std::vector<reflexion::v1::Strategy>> GetStrategyHistory(
      absl::string_view name) override;
  absl::StatusOr<std::vector<reflexion::v1::StrategyStats>> GetStats(
      absl::string_view signature) override;
  absl::StatusOr<LearningResult> CommitLearning(
      const LearningCommit& commit) override;
  absl::StatusOr<EpisodePage> ListEpisodes(const EpisodeQuery& query) override;
  absl::Status ForEachEpisode(
      absl::FunctionRef<bool(const reflexion::v1::Episode&)> fn) override;
  absl::StatusOr<std::vector<reflexion::v1::VersionStats>> GetVersionStats(
      absl::string_view strategy) override;
  absl::StatusOr<int64_t> RetainEpisodes(int64_t max_episodes,
                                         absl::Time older_than) override;
  absl::StatusOr<MemoryCleared> ClearMemory(
      absl::string_view signature) override;

 private:
  int32_t LatestVersionLocked(const std::string& name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  // name -> versions, oldest first (index i holds version i + 1).
  std::map<std::string, std::vector<reflexion::v1::Strategy>> strategies_
      ABSL_GUARDED_BY(mu_);
  // (signature, strategy) -> posterior.
  std::map<std::pair<std::string, std::string>, reflexion::v1::StrategyStats>
      stats_ ABSL_GUARDED_BY(mu_);
  // (strategy, version) -> (trials, successes).
  std::map<std::pair<std::string, int32_t>, std::pair<int64_t, int64_t>>
      version_counts_ ABSL_GUARDED_BY(mu_);
  // EpisodeOrderKey -> episode.
  std::map<std::string, reflexion::v1::Episode> episodes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace reflexion::core

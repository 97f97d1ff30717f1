#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Filters and paging for ListEpisodes. Empty strings match everything.
struct EpisodeQuery {
  int page_size = 100;     // 1..1000; the store clamps
  std::string page_token;  // "" for the first page; opaque otherwise
  std::string error_type;
  std::string signature;
  std::string namespace_name;
  std::string pod_name;
  std::string workflow_id;
};

struct EpisodePage {
  std::vector<reflexion::v1::Episode> episodes;  // newest first
  std::string next_page_token;                   // "" when no more
};

// Everything `learn` writes for one attempt, applied atomically.
struct LearningCommit {
  // The episode; id, workflow_id, time, signature, strategy and success must
  // be set. Episodes are ordered by (time, id).
  reflexion::v1::Episode episode;
  // Prior used when the (signature, strategy) posterior does not exist yet.
  double prior_alpha = 1.0;
  double prior_beta = 1.0;
  // A new strategy version to append in the same write (optional). Its
  // version must be the current latest + 1.
  std::optional<reflexion::v1::Strategy> new_version;
  // The (signature, strategy) posterior's parameter record: fields
  // tuned_params, tuned_version, base_trials, base_failures, tuned_trials
  // and tuned_successes are replaced by this message's (optional; absent
  // leaves them as they are).
  std::optional<reflexion::v1::StrategyStats> params_record;
  // Whether the attempt counts for its strategy version's VersionStats:
  // false when it ran with parameters other than the version's own (learned
  // for the signature, or a raise), which say nothing of the version.
  bool count_for_version = true;
};

// What ClearMemory removed.
struct MemoryCleared {
  int64_t episodes = 0;
  int64_t posteriors = 0;
};

struct LearningResult {
  double mean_before = 0.0;            // posterior mean before the update
  reflexion::v1::StrategyStats stats;  // posterior after the update
};

// The knowledge base: versioned strategies, per-signature Beta posteriors
// and episodic memory. Adapters: RocksDbKnowledgeStore (storage/),
// InMemoryKnowledgeStore (core/ports, tests). Both pass one contract suite.
//
// Thread-safe. Every write is atomic: either all of it is visible or none.
class KnowledgeStore {
 public:
  virtual ~KnowledgeStore() = default;

  // Appends a strategy version. Errors: kInvalidArgument (empty name or
  // version < 1), kFailedPrecondition (version != latest + 1, or != 1 for a
  // new name), kInternal (storage failure).
  virtual absl::Status PutStrategyVersion(
      const reflexion::v1::Strategy& strategy) = 0;

  // The latest version of every strategy, ordered by name.
  virtual absl::StatusOr<std::vector<reflexion::v1::Strategy>>
  ListStrategies() = 0;

  // Every version of one strategy, oldest first. kNotFound if unknown.
  virtual absl::StatusOr<std::vector<reflexion::v1::Strategy>>
  GetStrategyHistory(absl::string_view name) = 0;

  // Posteriors for one signature (all signatures when empty), ordered by
  // (signature, strategy).
  virtual absl::StatusOr<std::vector<reflexion::v1::StrategyStats>> GetStats(
      absl::string_view signature) = 0;

  // Writes the episode, updates the (signature, strategy) posterior by one
  // trial (alpha += success, beta += !success, creating it from the prior
  // when absent) and appends new_version if present, in one atomic write.
  // Concurrent commits on the same posterior never lose an update.
  // Errors: kInvalidArgument (missing episode fields), kFailedPrecondition
  // (new_version is not latest + 1; nothing is written), kInternal.
  virtual absl::StatusOr<LearningResult> CommitLearning(
      const LearningCommit& commit) = 0;

  // Episodes matching the query, newest first. kInvalidArgument for a
  // malformed page token.
  virtual absl::StatusOr<EpisodePage> ListEpisodes(
      const EpisodeQuery& query) = 0;

  // Visits every episode oldest first until `fn` returns false.
  virtual absl::Status ForEachEpisode(
      absl::FunctionRef<bool(const reflexion::v1::Episode&)> fn) = 0;

  // The per-version record of one strategy (CommitLearning counts each
  // episode against (episode.strategy, episode.strategy_version) when the
  // version is >= 1), ordered by version; versions never tried are absent.
  // Unknown strategies give an empty list.
  virtual absl::StatusOr<std::vector<reflexion::v1::VersionStats>>
  GetVersionStats(absl::string_view strategy) = 0;

  // Episodic retention: removes every episode older than `older_than` (by
  // episode time; absl::InfinitePast() for no age bound), then the oldest
  // until at most `max_episodes` remain (0 for no count bound). Posteriors
  // and version records are kept: retention forgets episodes, not what was
  // learned from them. Returns how many were removed. kInvalidArgument for a
  // negative max_episodes.
  virtual absl::StatusOr<int64_t> RetainEpisodes(int64_t max_episodes,
                                                 absl::Time older_than) = 0;

  // Removes the episodes of `signature` and its posteriors (every episode
  // and posterior when empty). Strategy versions and version records stay.
  virtual absl::StatusOr<MemoryCleared> ClearMemory(
      absl::string_view signature) = 0;
};

}  // namespace reflexion::core

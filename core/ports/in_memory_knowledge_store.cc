#include "core/ports/in_memory_knowledge_store.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"
#include "core/status_macros.h"

namespace reflexion::core {
namespace {

namespace v1 = ::reflexion::v1;

// google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31. Inside
// it the time in microseconds fits an int64 with room to spare.
constexpr int64_t kMinTimestampSeconds = -62'135'596'800;
constexpr int64_t kMaxTimestampSeconds = 253'402'300'799;
constexpr size_t kTimeBytes = 8;

bool HasNul(absl::string_view s) {
  return s.find('\0') != absl::string_view::npos;
}

absl::Status RequireField(absl::string_view value, absl::string_view field) {
  if (value.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is required"));
  }
  if (HasNul(value)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " must not contain NUL"));
  }
  return absl::OkStatus();
}

bool IsPositiveFinite(double v) { return std::isfinite(v) && v > 0; }

}  // namespace

absl::Status ValidateStrategy(const v1::Strategy& strategy) {
  REFLEXION_RETURN_IF_ERROR(RequireField(strategy.name(), "strategy.name"));
  // Stored and served: a string the parser refuses would poison the store.
  if (std::string path = FindInvalidUtf8(strategy); !path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategy.", path, " must be valid UTF-8"));
  }
  if (strategy.version() < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategy.version must be >= 1 for ", strategy.name(),
                     ", got ", strategy.version()));
  }
  return absl::OkStatus();
}

absl::Status CheckNextVersion(const v1::Strategy& strategy, int32_t latest) {
  if (strategy.version() != latest + 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "strategy ", strategy.name(), " version ", strategy.version(),
        " is not the next version (latest is ", latest, ")"));
  }
  return absl::OkStatus();
}

absl::Status ValidateLearningCommit(const LearningCommit& commit) {
  const v1::Episode& e = commit.episode;
  if (e.id().empty()) {
    return absl::InvalidArgumentError("episode.id is required");
  }
  REFLEXION_RETURN_IF_ERROR(
      RequireField(e.workflow_id(), "episode.workflow_id"));
  if (!e.has_time()) {
    return absl::InvalidArgumentError("episode.time is required");
  }
  if (e.time().seconds() < kMinTimestampSeconds ||
      e.time().seconds() > kMaxTimestampSeconds || e.time().nanos() < 0 ||
      e.time().nanos() > 999'999'999) {
    return absl::InvalidArgumentError(absl::StrCat(
        "episode.time is out of range: ", e.time().ShortDebugString()));
  }
  REFLEXION_RETURN_IF_ERROR(RequireField(e.signature(), "episode.signature"));
  REFLEXION_RETURN_IF_ERROR(RequireField(e.strategy(), "episode.strategy"));
  if (std::string path = FindInvalidUtf8(e); !path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("episode.", path, " must be valid UTF-8"));
  }
  if (!IsPositiveFinite(commit.prior_alpha) ||
      !IsPositiveFinite(commit.prior_beta)) {
    return absl::InvalidArgumentError(
        absl::StrCat("prior_alpha and prior_beta must be finite and > 0, got ",
                     commit.prior_alpha, " and ", commit.prior_beta));
  }
  if (commit.new_version.has_value()) {
    return ValidateStrategy(*commit.new_version);
  }
  return absl::OkStatus();
}

LearningResult ApplyTrial(const v1::StrategyStats* current,
                          const LearningCommit& commit) {
  const v1::Episode& e = commit.episode;
  LearningResult result;
  v1::StrategyStats& s = result.stats;
  if (current != nullptr) {
    s = *current;
  } else {
    s.set_signature(e.signature());
    s.set_strategy(e.strategy());
    s.set_alpha(commit.prior_alpha);
    s.set_beta(commit.prior_beta);
    s.set_mean(commit.prior_alpha / (commit.prior_alpha + commit.prior_beta));
  }
  result.mean_before = s.mean();
  if (e.success()) {
    s.set_alpha(s.alpha() + 1);
    s.set_successes(s.successes() + 1);
  } else {
    s.set_beta(s.beta() + 1);
  }
  s.set_trials(s.trials() + 1);
  s.set_mean(s.alpha() / (s.alpha() + s.beta()));
  if (e.attempt() >= 2) {
    s.set_retry_trials(s.retry_trials() + 1);
    if (e.success()) s.set_retry_successes(s.retry_successes() + 1);
  }
  *s.mutable_updated_at() = e.time();
  if (commit.params_record.has_value()) {
    const v1::StrategyStats& r = *commit.params_record;
    if (r.has_tuned_params()) {
      *s.mutable_tuned_params() = r.tuned_params();
    } else {
      s.clear_tuned_params();
    }
    s.set_tuned_version(r.tuned_version());
    s.set_base_trials(r.base_trials());
    s.set_base_failures(r.base_failures());
    s.set_tuned_trials(r.tuned_trials());
    s.set_tuned_successes(r.tuned_successes());
  }
  return result;
}

std::string EpisodeOrderKey(const v1::Episode& episode) {
  const int64_t micros =
      episode.time().seconds() * 1'000'000 + episode.time().nanos() / 1'000;
  // Flipping the sign bit makes unsigned big-endian order equal signed order.
  const uint64_t ordered = static_cast<uint64_t>(micros) ^ (uint64_t{1} << 63);
  std::string key(kTimeBytes, '\0');
  for (size_t i = 0; i < kTimeBytes; ++i) {
    key[i] = static_cast<char>((ordered >> (8 * (kTimeBytes - 1 - i))) & 0xff);
  }
  key.append(episode.id());
  return key;
}

std::string EncodePageToken(absl::string_view order_key) {
  return absl::BytesToHexString(order_key);
}

absl::StatusOr<std::string> DecodePageToken(absl::string_view token) {
  if (token.empty()) return std::string();
  // An order key is 8 time bytes plus a non-empty id: at least 18 hex digits.
  bool hex = token.size() % 2 == 0 && token.size() > 2 * kTimeBytes;
  for (char c : token) {
    hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  }
  if (!hex) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed page_token \"", absl::CHexEscape(token), "\""));
  }
  return absl::HexStringToBytes(token);
}

int ClampPageSize(int page_size) {
  if (page_size == 0) return 100;
  return std::clamp(page_size, 1, 1000);
}

v1::VersionStats MakeVersionStats(absl::string_view strategy, int32_t version,
                                  int64_t trials, int64_t successes) {
  v1::VersionStats v;
  v.set_strategy(std::string(strategy));
  v.set_version(version);
  v.set_trials(trials);
  v.set_successes(successes);
  v.set_alpha(1.0 + static_cast<double>(successes));
  v.set_beta(1.0 + static_cast<double>(trials - successes));
  v.set_mean(v.alpha() / (v.alpha() + v.beta()));
  return v;
}

std::string RetentionCutoffKey(absl::Time older_than) {
  if (older_than == absl::InfinitePast()) return std::string();
  v1::Episode probe;
  const int64_t secs = std::clamp(absl::ToUnixSeconds(older_than),
                                  kMinTimestampSeconds, kMaxTimestampSeconds);
  probe.mutable_time()->set_seconds(secs);
  if (secs == absl::ToUnixSeconds(older_than)) {
    probe.mutable_time()->set_nanos(static_cast<int32_t>(
        absl::ToInt64Nanoseconds(older_than - absl::FromUnixSeconds(secs))));
  }
  // Time bytes with an empty id: below every episode of that time.
  return EpisodeOrderKey(probe);
}

bool MatchesQuery(const v1::Episode& e, const EpisodeQuery& q) {
  return (q.error_type.empty() || e.error_type() == q.error_type) &&
         (q.signature.empty() || e.signature() == q.signature) &&
         (q.namespace_name.empty() || e.namespace_() == q.namespace_name) &&
         (q.pod_name.empty() || e.pod_name() == q.pod_name) &&
         (q.workflow_id.empty() || e.workflow_id() == q.workflow_id);
}

// ---------------------------------------------------------------------------
// InMemoryKnowledgeStore
// ---------------------------------------------------------------------------

int32_t InMemoryKnowledgeStore::LatestVersionLocked(
    const std::string& name) const {
  auto it = strategies_.find(name);
  return it == strategies_.end() ? 0 : it->second.back().version();
}

absl::Status InMemoryKnowledgeStore::PutStrategyVersion(
    const v1::Strategy& strategy) {
  REFLEXION_RETURN_IF_ERROR(ValidateStrategy(strategy));
  absl::MutexLock lock(&mu_);
  REFLEXION_RETURN_IF_ERROR(
      CheckNextVersion(strategy, LatestVersionLocked(strategy.name())));
  strategies_[strategy.name()].push_back(strategy);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Strategy>>
InMemoryKnowledgeStore::ListStrategies() {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Strategy> out;
  out.reserve(strategies_.size());
  for (const auto& [name, versions] : strategies_) {
    out.push_back(versions.back());
  }
  return out;
}

absl::StatusOr<std::vector<v1::Strategy>>
InMemoryKnowledgeStore::GetStrategyHistory(absl::string_view name) {
  absl::MutexLock lock(&mu_);
  auto it = strategies_.find(std::string(name));
  if (it == strategies_.end()) {
    return absl::NotFoundError(absl::StrCat("unknown strategy ", name));
  }
  return it->second;
}

absl::StatusOr<std::vector<v1::StrategyStats>> InMemoryKnowledgeStore::GetStats(
    absl::string_view signature) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::StrategyStats> out;
  for (const auto& [key, stats] : stats_) {
    if (signature.empty() || key.first == signature) out.push_back(stats);
  }
  return out;
}

absl::StatusOr<LearningResult> InMemoryKnowledgeStore::CommitLearning(
    const LearningCommit& commit) {
  REFLEXION_RETURN_IF_ERROR(ValidateLearningCommit(commit));
  const v1::Episode& e = commit.episode;
  absl::MutexLock lock(&mu_);
  // Idempotent per episode id: a learn step replayed after a crash must not
  // count its trial twice.
  for (const auto& [order, episode] : episodes_) {
    if (episode.id() == e.id() && episode.workflow_id() == e.workflow_id()) {
      auto it = stats_.find(std::make_pair(e.signature(), e.strategy()));
      LearningResult same;
      if (it != stats_.end()) {
        same.stats = it->second;
        same.mean_before = it->second.mean();
      }
      return same;
    }
  }
  if (commit.new_version.has_value()) {
    REFLEXION_RETURN_IF_ERROR(CheckNextVersion(
        *commit.new_version, LatestVersionLocked(commit.new_version->name())));
  }
  // Nothing below can fail: the write is all-or-nothing.
  auto key = std::make_pair(e.signature(), e.strategy());
  auto it = stats_.find(key);
  LearningResult result =
      ApplyTrial(it == stats_.end() ? nullptr : &it->second, commit);
  stats_[key] = result.stats;
  episodes_[EpisodeOrderKey(e)] = e;
  if (e.strategy_version() >= 1 && commit.count_for_version) {
    auto& counts = version_counts_[{e.strategy(), e.strategy_version()}];
    ++counts.first;
    if (e.success()) ++counts.second;
  }
  if (commit.new_version.has_value()) {
    strategies_[commit.new_version->name()].push_back(*commit.new_version);
  }
  return result;
}

absl::StatusOr<EpisodePage> InMemoryKnowledgeStore::ListEpisodes(
    const EpisodeQuery& query) {
  REFLEXION_ASSIGN_OR_RETURN(const std::string after,
                             DecodePageToken(query.page_token));
  const size_t page_size = ClampPageSize(query.page_size);
  absl::MutexLock lock(&mu_);
  // Newest first: walk backwards from just below the token's key.
  auto it = after.empty() ? episodes_.end() : episodes_.lower_bound(after);
  EpisodePage page;
  std::string last_key;
  while (it != episodes_.begin()) {
    --it;
    if (!MatchesQuery(it->second, query)) continue;
    if (page.episodes.size() == page_size) {
      page.next_page_token = EncodePageToken(last_key);
      break;
    }
    page.episodes.push_back(it->second);
    last_key = it->first;
  }
  return page;
}

absl::Status InMemoryKnowledgeStore::ForEachEpisode(
    absl::FunctionRef<bool(const v1::Episode&)> fn) {
  // Visit a copy so `fn` may call back into the store.
  std::vector<v1::Episode> snapshot;
  {
    absl::MutexLock lock(&mu_);
    snapshot.reserve(episodes_.size());
    for (const auto& [key, episode] : episodes_) snapshot.push_back(episode);
  }
  for (const v1::Episode& e : snapshot) {
    if (!fn(e)) break;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::VersionStats>>
InMemoryKnowledgeStore::GetVersionStats(absl::string_view strategy) {
  absl::MutexLock lock(&mu_);
  std::vector<v1::VersionStats> out;
  const std::string name(strategy);
  for (auto it = version_counts_.lower_bound({name, 0});
       it != version_counts_.end() && it->first.first == name; ++it) {
    out.push_back(MakeVersionStats(name, it->first.second, it->second.first,
                                   it->second.second));
  }
  return out;
}

absl::StatusOr<int64_t> InMemoryKnowledgeStore::RetainEpisodes(
    int64_t max_episodes, absl::Time older_than) {
  if (max_episodes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_episodes must be >= 0, got ", max_episodes));
  }
  const std::string cutoff = RetentionCutoffKey(older_than);
  absl::MutexLock lock(&mu_);
  int64_t removed = 0;
  auto end = cutoff.empty() ? episodes_.begin() : episodes_.lower_bound(cutoff);
  removed += std::distance(episodes_.begin(), end);
  episodes_.erase(episodes_.begin(), end);
  if (max_episodes > 0) {
    while (static_cast<int64_t>(episodes_.size()) > max_episodes) {
      episodes_.erase(episodes_.begin());
      ++removed;
    }
  }
  return removed;
}

absl::StatusOr<MemoryCleared> InMemoryKnowledgeStore::ClearMemory(
    absl::string_view signature) {
  absl::MutexLock lock(&mu_);
  MemoryCleared cleared;
  for (auto it = episodes_.begin(); it != episodes_.end();) {
    if (signature.empty() || it->second.signature() == signature) {
      it = episodes_.erase(it);
      ++cleared.episodes;
    } else {
      ++it;
    }
  }
  for (auto it = stats_.begin(); it != stats_.end();) {
    if (signature.empty() || it->first.first == signature) {
      it = stats_.erase(it);
      ++cleared.posteriors;
    } else {
      ++it;
    }
  }
  return cleared;
}

}  // namespace reflexion::core

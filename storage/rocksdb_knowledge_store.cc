// Key layout (every key ordered for the query that reads it; '\0' separates
// variable-length parts, which is why names, signatures, strategies and
// workflow ids may not contain NUL):
//
//   strategies     <name> \0 <version: 4 bytes big-endian>  -> Strategy
//                  History is a prefix scan, latest the last key of the
//                  prefix. Append-only: a version is never overwritten.
//   stats          <signature> \0 <strategy>                 -> StrategyStats
//                  Ordered by (signature, strategy); one signature is a
//                  prefix scan.
//   episodes       <episode key>                             -> Episode
//                  episode key = core::EpisodeOrderKey: time in micros as 8
//                  big-endian bytes (sign bit flipped), then the id, so keys
//                  sort by (time, id).
//   episode_index  s \0 <signature>   \0 <episode key>       -> ""
//                  w \0 <workflow_id> \0 <episode key>       -> ""
//                  Secondary indexes for the hot ListEpisodes filters, read
//                  backwards for newest first. Other filters scan episodes.
//   version_stats  <strategy> \0 <version: 4 bytes big-endian> -> VersionStats
//                  Trials and successes per strategy version, updated in
//                  the commit's batch; never removed by retention.
//
// A commit (episode, both index entries, posterior, version record,
// optional new version) is one WriteBatch. Retention and ClearMemory delete
// an episode with its two index entries in one batch. Page tokens are
// core::EncodePageToken(episode key) of the last episode returned, shared with
// the in-memory fake.

#include "storage/rocksdb_knowledge_store.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "rocksdb/db.h"
#include "rocksdb/iterator.h"
#include "rocksdb/options.h"
#include "rocksdb/snapshot.h"
#include "rocksdb/write_batch.h"
#include "storage/rocksdb_status.h"

namespace reflexion::storage {
namespace {

namespace v1 = ::reflexion::v1;

constexpr char kSeparator = '\0';
constexpr char kSignatureIndex = 's';
constexpr char kWorkflowIndex = 'w';
constexpr size_t kVersionBytes = 4;

rocksdb::Slice ToSlice(absl::string_view s) {
  return rocksdb::Slice(s.data(), s.size());
}
absl::string_view ToView(const rocksdb::Slice& s) {
  return absl::string_view(s.data(), s.size());
}

// `part` followed by the separator: the prefix of every key whose first
// part is `part`.
std::string WithSeparator(absl::string_view part) {
  return absl::StrCat(part, absl::string_view(&kSeparator, 1));
}

std::string StrategyKey(absl::string_view name, int32_t version) {
  std::string key = WithSeparator(name);
  const uint32_t v = static_cast<uint32_t>(version);
  for (int shift = 24; shift >= 0; shift -= 8) {
    key.push_back(static_cast<char>((v >> shift) & 0xff));
  }
  return key;
}

std::string StatsKey(absl::string_view signature, absl::string_view strategy) {
  return absl::StrCat(signature, absl::string_view(&kSeparator, 1), strategy);
}

std::string IndexPrefix(char kind, absl::string_view value) {
  std::string key(1, kind);
  key.push_back(kSeparator);
  key.append(value.data(), value.size());
  key.push_back(kSeparator);
  return key;
}

// The smallest key above every key starting with `prefix`, which always ends
// with the separator.
std::string PrefixEnd(absl::string_view prefix) {
  DCHECK(!prefix.empty() && prefix.back() == kSeparator);
  std::string end(prefix);
  end.back() = static_cast<char>(kSeparator + 1);
  return end;
}

std::string Printable(absl::string_view key) { return absl::CHexEscape(key); }

template <typename Message>
absl::Status Parse(const rocksdb::Slice& value, absl::string_view cf,
                   absl::string_view key, Message* message) {
  if (!message->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return absl::DataLossError(absl::StrCat(
        "cannot parse ", cf, " value at key \"", Printable(key), "\""));
  }
  return absl::OkStatus();
}

// An iterator confined to the keys starting with `prefix` (all keys when
// empty). The bounds live here because ReadOptions only points at them.
class PrefixIterator {
 public:
  PrefixIterator(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf,
                 rocksdb::ReadOptions options, std::string prefix)
      : prefix_(std::move(prefix)),
        end_(prefix_.empty() ? "" : PrefixEnd(prefix_)),
        lower_(ToSlice(prefix_)),
        upper_(ToSlice(end_)) {
    if (!prefix_.empty()) {
      options.iterate_lower_bound = &lower_;
      options.iterate_upper_bound = &upper_;
    }
    it_.reset(db->NewIterator(options, cf));
  }
  // The bounds point into this object: it must not move.
  PrefixIterator(const PrefixIterator&) = delete;
  PrefixIterator& operator=(const PrefixIterator&) = delete;

  rocksdb::Iterator* operator->() const { return it_.get(); }
  const std::string& prefix() const { return prefix_; }
  // The key without the prefix.
  absl::string_view suffix() const {
    return ToView(it_->key()).substr(prefix_.size());
  }

 private:
  std::string prefix_;
  std::string end_;
  rocksdb::Slice lower_;
  rocksdb::Slice upper_;
  std::unique_ptr<rocksdb::Iterator> it_;
};

}  // namespace

RocksDbKnowledgeStore::RocksDbKnowledgeStore(RocksDb* db)
    : db_(CHECK_NOTNULL(db)),
      strategies_(db->ColumnFamily("strategies")),
      stats_(db->ColumnFamily("stats")),
      episodes_(db->ColumnFamily("episodes")),
      episode_index_(db->ColumnFamily("episode_index")),
      version_stats_(db->ColumnFamily("version_stats")) {}

absl::StatusOr<int32_t> RocksDbKnowledgeStore::LatestVersion(
    absl::string_view name) const {
  PrefixIterator it(db_->db(), strategies_, rocksdb::ReadOptions(),
                    WithSeparator(name));
  it->SeekToLast();
  if (!it->Valid()) {
    REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
        it->status(), absl::StrCat("read latest version of strategy ", name)));
    return 0;
  }
  const absl::string_view suffix = it.suffix();
  if (suffix.size() != kVersionBytes) {
    return absl::DataLossError(absl::StrCat(
        "malformed strategies key \"", Printable(ToView(it->key())), "\""));
  }
  uint32_t v = 0;
  for (char c : suffix) v = (v << 8) | static_cast<uint8_t>(c);
  return static_cast<int32_t>(v);
}

absl::Status RocksDbKnowledgeStore::PutStrategyVersion(
    const v1::Strategy& strategy) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateStrategy(strategy));
  absl::MutexLock lock(&write_mu_);
  REFLEXION_ASSIGN_OR_RETURN(const int32_t latest,
                             LatestVersion(strategy.name()));
  REFLEXION_RETURN_IF_ERROR(core::CheckNextVersion(strategy, latest));
  rocksdb::WriteOptions write_options;
  write_options.sync = db_->options().sync_writes;
  rocksdb::WriteBatch batch;
  (void)batch.Put(strategies_, StrategyKey(strategy.name(), strategy.version()),
                  strategy.SerializeAsString());
  return FromRocksDbStatus(db_->Write(write_options, &batch),
                           absl::StrCat("put strategy ", strategy.name(),
                                        " version ", strategy.version()));
}

absl::StatusOr<std::vector<v1::Strategy>>
RocksDbKnowledgeStore::ListStrategies() {
  PrefixIterator it(db_->db(), strategies_, rocksdb::ReadOptions(), "");
  std::vector<v1::Strategy> out;
  // Keys are ordered by (name, version): keep the last key of each name.
  std::string name, last_key, last_value;
  auto flush = [&]() -> absl::Status {
    if (last_key.empty()) return absl::OkStatus();
    REFLEXION_RETURN_IF_ERROR(Parse(ToSlice(last_value), "strategies", last_key,
                                    &out.emplace_back()));
    return absl::OkStatus();
  };
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const absl::string_view key = ToView(it->key());
    if (key.size() <= kVersionBytes + 1 ||
        key[key.size() - kVersionBytes - 1] != kSeparator) {
      return absl::DataLossError(
          absl::StrCat("malformed strategies key \"", Printable(key), "\""));
    }
    const absl::string_view key_name =
        key.substr(0, key.size() - kVersionBytes - 1);
    if (key_name != name) {
      REFLEXION_RETURN_IF_ERROR(flush());
      name = std::string(key_name);
    }
    last_key = std::string(key);
    last_value = std::string(ToView(it->value()));
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(it->status(), "list strategies"));
  REFLEXION_RETURN_IF_ERROR(flush());
  return out;
}

absl::StatusOr<std::vector<v1::Strategy>>
RocksDbKnowledgeStore::GetStrategyHistory(absl::string_view name) {
  std::vector<v1::Strategy> out;
  // A name with NUL cannot have been stored (and would confuse the prefix).
  if (!name.empty() && name.find(kSeparator) == absl::string_view::npos) {
    PrefixIterator it(db_->db(), strategies_, rocksdb::ReadOptions(),
                      WithSeparator(name));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      REFLEXION_RETURN_IF_ERROR(Parse(it->value(), "strategies",
                                      ToView(it->key()), &out.emplace_back()));
    }
    REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
        it->status(), absl::StrCat("read history of strategy ", name)));
  }
  if (out.empty()) {
    return absl::NotFoundError(absl::StrCat("unknown strategy ", name));
  }
  return out;
}

absl::StatusOr<std::vector<v1::StrategyStats>> RocksDbKnowledgeStore::GetStats(
    absl::string_view signature) {
  PrefixIterator it(db_->db(), stats_, rocksdb::ReadOptions(),
                    signature.empty() ? "" : WithSeparator(signature));
  std::vector<v1::StrategyStats> out;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    v1::StrategyStats stats;
    REFLEXION_RETURN_IF_ERROR(
        Parse(it->value(), "stats", ToView(it->key()), &stats));
    // Guards against a queried signature containing NUL matching a prefix.
    if (signature.empty() || stats.signature() == signature) {
      out.push_back(std::move(stats));
    }
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      it->status(),
      absl::StrCat("read stats of signature \"", Printable(signature), "\"")));
  return out;
}

absl::StatusOr<core::LearningResult> RocksDbKnowledgeStore::CommitLearning(
    const core::LearningCommit& commit) {
  REFLEXION_RETURN_IF_ERROR(core::ValidateLearningCommit(commit));
  const v1::Episode& e = commit.episode;
  const std::string stats_key = StatsKey(e.signature(), e.strategy());
  const std::string what = absl::StrCat("commit learning of episode ", e.id());

  absl::MutexLock lock(&write_mu_);
  // Idempotent per episode id: a learn step replayed after a crash must not
  // count its trial twice. The workflow index holds its few episodes, each
  // key ending with the episode id.
  bool seen = false;
  {
    const std::string prefix = IndexPrefix(kWorkflowIndex, e.workflow_id());
    std::unique_ptr<rocksdb::Iterator> it(
        db_->db()->NewIterator(rocksdb::ReadOptions(), episode_index_));
    for (it->Seek(ToSlice(prefix));
         it->Valid() && it->key().starts_with(ToSlice(prefix)); it->Next()) {
      absl::string_view key(it->key().data(), it->key().size());
      if (absl::EndsWith(key, e.id()) &&
          key.size() == prefix.size() + 8 + e.id().size()) {
        seen = true;
        break;
      }
    }
    if (!it->status().ok()) {
      return FromRocksDbStatus(it->status(), what);
    }
  }
  if (seen) {
    core::LearningResult same;
    std::string value;
    rocksdb::Status got =
        db_->db()->Get(rocksdb::ReadOptions(), stats_, stats_key, &value);
    if (got.ok()) {
      REFLEXION_RETURN_IF_ERROR(
          Parse(ToSlice(value), "stats", stats_key, &same.stats));
      same.mean_before = same.stats.mean();
    }
    return same;
  }
  if (commit.new_version.has_value()) {
    REFLEXION_ASSIGN_OR_RETURN(const int32_t latest,
                               LatestVersion(commit.new_version->name()));
    REFLEXION_RETURN_IF_ERROR(
        core::CheckNextVersion(*commit.new_version, latest));
  }
  std::optional<v1::StrategyStats> current;
  std::string value;
  rocksdb::Status s =
      db_->db()->Get(rocksdb::ReadOptions(), stats_, stats_key, &value);
  if (s.ok()) {
    REFLEXION_RETURN_IF_ERROR(
        Parse(ToSlice(value), "stats", stats_key, &current.emplace()));
  } else if (!s.IsNotFound()) {
    return FromRocksDbStatus(
        s, absl::StrCat("read stats key \"", Printable(stats_key), "\""));
  }
  core::LearningResult result =
      core::ApplyTrial(current.has_value() ? &*current : nullptr, commit);

  const std::string episode_key = core::EpisodeOrderKey(e);
  rocksdb::WriteBatch batch;
  auto put = [&](rocksdb::ColumnFamilyHandle* cf, absl::string_view key,
                 absl::string_view val) {
    return FromRocksDbStatus(batch.Put(cf, ToSlice(key), ToSlice(val)), what);
  };
  REFLEXION_RETURN_IF_ERROR(put(episodes_, episode_key, e.SerializeAsString()));
  REFLEXION_RETURN_IF_ERROR(
      put(episode_index_,
          IndexPrefix(kSignatureIndex, e.signature()) + episode_key, ""));
  REFLEXION_RETURN_IF_ERROR(
      put(episode_index_,
          IndexPrefix(kWorkflowIndex, e.workflow_id()) + episode_key, ""));
  REFLEXION_RETURN_IF_ERROR(
      put(stats_, stats_key, result.stats.SerializeAsString()));
  if (e.strategy_version() >= 1 && commit.count_for_version) {
    const std::string vkey = StrategyKey(e.strategy(), e.strategy_version());
    v1::VersionStats counts;
    rocksdb::Status got =
        db_->db()->Get(rocksdb::ReadOptions(), version_stats_, vkey, &value);
    if (got.ok()) {
      REFLEXION_RETURN_IF_ERROR(
          Parse(ToSlice(value), "version_stats", vkey, &counts));
    } else if (!got.IsNotFound()) {
      return FromRocksDbStatus(got, what);
    }
    counts = core::MakeVersionStats(e.strategy(), e.strategy_version(),
                                    counts.trials() + 1,
                                    counts.successes() + (e.success() ? 1 : 0));
    REFLEXION_RETURN_IF_ERROR(
        put(version_stats_, vkey, counts.SerializeAsString()));
  }
  if (commit.new_version.has_value()) {
    const v1::Strategy& next = *commit.new_version;
    REFLEXION_RETURN_IF_ERROR(put(strategies_,
                                  StrategyKey(next.name(), next.version()),
                                  next.SerializeAsString()));
  }
  rocksdb::WriteOptions write_options;
  write_options.sync = db_->options().sync_writes;
  REFLEXION_RETURN_IF_ERROR(
      FromRocksDbStatus(db_->Write(write_options, &batch), what));
  return result;
}

absl::StatusOr<core::EpisodePage> RocksDbKnowledgeStore::ListEpisodes(
    const core::EpisodeQuery& query) {
  REFLEXION_ASSIGN_OR_RETURN(const std::string after,
                             core::DecodePageToken(query.page_token));
  const size_t page_size = core::ClampPageSize(query.page_size);

  // One snapshot for the index and the episodes it points at.
  rocksdb::ManagedSnapshot snapshot(db_->db());
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot.snapshot();

  // A workflow has a handful of episodes, a signature many: prefer the
  // workflow index. Every candidate is still checked against every filter.
  std::string prefix;
  if (!query.workflow_id.empty()) {
    prefix = IndexPrefix(kWorkflowIndex, query.workflow_id);
  } else if (!query.signature.empty()) {
    prefix = IndexPrefix(kSignatureIndex, query.signature);
  }
  const bool indexed = !prefix.empty();
  PrefixIterator it(db_->db(), indexed ? episode_index_ : episodes_,
                    read_options, prefix);
  if (after.empty()) {
    it->SeekToLast();
  } else {
    const std::string start = prefix + after;
    it->SeekForPrev(start);
    if (it->Valid() && ToView(it->key()) == start) it->Prev();
  }

  core::EpisodePage page;
  std::string last_key;
  std::string value;
  for (; it->Valid(); it->Prev()) {
    const absl::string_view episode_key = it.suffix();
    v1::Episode episode;
    if (indexed) {
      rocksdb::Status s =
          db_->db()->Get(read_options, episodes_, ToSlice(episode_key), &value);
      if (s.IsNotFound()) {
        return absl::DataLossError(absl::StrCat("episode_index key \"",
                                                Printable(ToView(it->key())),
                                                "\" points at no episode"));
      }
      REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
          s, absl::StrCat("read episode \"", Printable(episode_key), "\"")));
      REFLEXION_RETURN_IF_ERROR(
          Parse(ToSlice(value), "episodes", episode_key, &episode));
    } else {
      REFLEXION_RETURN_IF_ERROR(
          Parse(it->value(), "episodes", episode_key, &episode));
    }
    if (!core::MatchesQuery(episode, query)) continue;
    if (page.episodes.size() == page_size) {
      // One more match exists: the next page is not empty.
      page.next_page_token = core::EncodePageToken(last_key);
      break;
    }
    last_key = std::string(episode_key);
    page.episodes.push_back(std::move(episode));
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(it->status(), "list episodes"));
  return page;
}

absl::Status RocksDbKnowledgeStore::ForEachEpisode(
    absl::FunctionRef<bool(const v1::Episode&)> fn) {
  // The iterator reads an implicit snapshot; no lock is held while `fn`
  // runs, so it may call back into the store.
  PrefixIterator it(db_->db(), episodes_, rocksdb::ReadOptions(), "");
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    v1::Episode episode;
    REFLEXION_RETURN_IF_ERROR(
        Parse(it->value(), "episodes", ToView(it->key()), &episode));
    if (!fn(episode)) return absl::OkStatus();
  }
  return FromRocksDbStatus(it->status(), "scan episodes");
}

absl::StatusOr<std::vector<v1::VersionStats>>
RocksDbKnowledgeStore::GetVersionStats(absl::string_view strategy) {
  std::vector<v1::VersionStats> out;
  if (strategy.empty() ||
      strategy.find(kSeparator) != absl::string_view::npos) {
    return out;
  }
  PrefixIterator it(db_->db(), version_stats_, rocksdb::ReadOptions(),
                    WithSeparator(strategy));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    REFLEXION_RETURN_IF_ERROR(Parse(it->value(), "version_stats",
                                    ToView(it->key()), &out.emplace_back()));
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      it->status(), absl::StrCat("read version stats of ", strategy)));
  return out;
}

absl::Status RocksDbKnowledgeStore::DeleteEpisode(absl::string_view key,
                                                  const v1::Episode& episode,
                                                  rocksdb::WriteBatch* batch) {
  const std::string what = absl::StrCat("delete episode ", episode.id());
  REFLEXION_RETURN_IF_ERROR(
      FromRocksDbStatus(batch->Delete(episodes_, ToSlice(key)), what));
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(
      batch->Delete(
          episode_index_,
          IndexPrefix(kSignatureIndex, episode.signature()) + std::string(key)),
      what));
  return FromRocksDbStatus(
      batch->Delete(episode_index_,
                    IndexPrefix(kWorkflowIndex, episode.workflow_id()) +
                        std::string(key)),
      what);
}

absl::Status RocksDbKnowledgeStore::WriteLocked(rocksdb::WriteBatch* batch,
                                                absl::string_view what) {
  rocksdb::WriteOptions write_options;
  write_options.sync = db_->options().sync_writes;
  return FromRocksDbStatus(db_->Write(write_options, batch), what);
}

absl::StatusOr<int64_t> RocksDbKnowledgeStore::RetainEpisodes(
    int64_t max_episodes, absl::Time older_than) {
  if (max_episodes < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_episodes must be >= 0, got ", max_episodes));
  }
  const std::string cutoff = core::RetentionCutoffKey(older_than);
  absl::MutexLock lock(&write_mu_);
  // How many to drop by count: one key-only pass (no parsing).
  int64_t excess = 0;
  if (max_episodes > 0) {
    PrefixIterator it(db_->db(), episodes_, rocksdb::ReadOptions(), "");
    int64_t total = 0;
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++total;
    REFLEXION_RETURN_IF_ERROR(
        FromRocksDbStatus(it->status(), "count episodes"));
    excess = std::max<int64_t>(0, total - max_episodes);
  }
  // Oldest first: drop while older than the cutoff or beyond the count.
  int64_t removed = 0;
  PrefixIterator it(db_->db(), episodes_, rocksdb::ReadOptions(), "");
  rocksdb::WriteBatch batch;
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const absl::string_view key = ToView(it->key());
    const bool old = !cutoff.empty() && key < absl::string_view(cutoff);
    if (!old && removed >= excess) break;
    v1::Episode episode;
    REFLEXION_RETURN_IF_ERROR(Parse(it->value(), "episodes", key, &episode));
    REFLEXION_RETURN_IF_ERROR(DeleteEpisode(key, episode, &batch));
    ++removed;
    // Bounded batches: one write per 1000 episodes.
    if (batch.Count() >= 3000) {
      REFLEXION_RETURN_IF_ERROR(WriteLocked(&batch, "retain episodes"));
      batch.Clear();
    }
  }
  REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(it->status(), "scan episodes"));
  if (batch.Count() > 0) {
    REFLEXION_RETURN_IF_ERROR(WriteLocked(&batch, "retain episodes"));
  }
  return removed;
}

absl::StatusOr<core::MemoryCleared> RocksDbKnowledgeStore::ClearMemory(
    absl::string_view signature) {
  core::MemoryCleared cleared;
  absl::MutexLock lock(&write_mu_);
  rocksdb::WriteBatch batch;
  {
    PrefixIterator it(db_->db(), episodes_, rocksdb::ReadOptions(), "");
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const absl::string_view key = ToView(it->key());
      v1::Episode episode;
      REFLEXION_RETURN_IF_ERROR(Parse(it->value(), "episodes", key, &episode));
      if (!signature.empty() && episode.signature() != signature) continue;
      REFLEXION_RETURN_IF_ERROR(DeleteEpisode(key, episode, &batch));
      ++cleared.episodes;
    }
    REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(it->status(), "scan episodes"));
  }
  {
    PrefixIterator it(db_->db(), stats_, rocksdb::ReadOptions(),
                      signature.empty() ? "" : WithSeparator(signature));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      REFLEXION_RETURN_IF_ERROR(
          FromRocksDbStatus(batch.Delete(stats_, it->key()), "clear stats"));
      ++cleared.posteriors;
    }
    REFLEXION_RETURN_IF_ERROR(FromRocksDbStatus(it->status(), "scan stats"));
  }
  // One batch: all of it or nothing.
  REFLEXION_RETURN_IF_ERROR(WriteLocked(&batch, "clear memory"));
  return cleared;
}

}  // namespace reflexion::storage

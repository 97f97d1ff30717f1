#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "reflexion/v1/reflexion.pb.h"
#include "storage/rocksdb_event_log.h"

namespace reflexion::server {

// Keeps the events of every running workflow and of the most recently
// finished ones in memory, so WatchWorkflow can (re)attach from any sequence
// number and see each event exactly once. Bounded: events of finished
// workflows are dropped from memory oldest-first beyond `max_finished`
// workflows. With a `log`, every message is also stored there, and what
// memory no longer (or, after a restart, never) held is replayed from it;
// the log keeps a workflow's messages until it expires. Thread-safe.
class EventHub {
 public:
  // `log` may be null (memory only); it must outlive the hub.
  explicit EventHub(int max_finished, storage::RocksDbEventLog* log = nullptr)
      : max_finished_(max_finished), log_(log) {}

  // Receives the messages of one watched workflow (events, then one result),
  // in sequence order, never concurrently; returns false to unsubscribe.
  using Listener = std::function<bool(const v1::ResolveResponse&)>;

  // Starts retaining a workflow's messages (before its first event), so a
  // watcher attaching right away waits for them instead of NOT_FOUND.
  void Open(const std::string& workflow_id);
  // Forgets a workflow opened for a run that could not start.
  void Forget(const std::string& workflow_id);
  void Publish(const v1::WorkflowEvent& event);
  void Finish(const v1::IncidentResult& result);

  // Replays every retained message with sequence >= `from_sequence` to
  // `listener` (from memory, or from the log), then (if the workflow is
  // still running) keeps calling it for new ones until the result; each
  // sequence number at most once. kNotFound when nothing of the workflow is
  // retained; kOutOfRange when the first retained event is after
  // `from_sequence` (a re-attach would miss some). A message stored before
  // a crash and emitted again by the resumed run (the steps after its last
  // checkpoint) is delivered in its first version only.
  // Returns the subscription id (0 when the replay already delivered the
  // result or the listener unsubscribed).
  absl::StatusOr<uint64_t> Watch(const std::string& workflow_id,
                                 uint64_t from_sequence, Listener listener);
  void Unwatch(const std::string& workflow_id, uint64_t subscription);

 private:
  struct Stream {
    std::vector<v1::ResolveResponse> messages;  // in sequence order
    bool done = false;
    absl::flat_hash_map<uint64_t, Listener> listeners;
  };
  void Deliver(const std::string& workflow_id, Stream& stream,
               const v1::ResolveResponse& message)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Replays what memory does not hold from the log, then continues from
  // memory (Watch when memory starts after `from_sequence`).
  absl::StatusOr<uint64_t> WatchFromLog(const std::string& workflow_id,
                                        uint64_t from_sequence,
                                        Listener listener);
  void Store(const std::string& workflow_id, uint64_t sequence,
             const v1::ResolveResponse& message);

  const int max_finished_;
  storage::RocksDbEventLog* const log_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Stream> streams_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> finished_ ABSL_GUARDED_BY(mu_);
  uint64_t next_subscription_ ABSL_GUARDED_BY(mu_) = 1;
};

}  // namespace reflexion::server

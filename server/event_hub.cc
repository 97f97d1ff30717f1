#include "server/event_hub.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace reflexion::server {
namespace {

uint64_t SequenceOf(const v1::ResolveResponse& m) {
  return m.has_event() ? m.event().sequence() : m.result().sequence();
}

}  // namespace

void EventHub::Deliver(const std::string& workflow_id, Stream& stream,
                       const v1::ResolveResponse& message) {
  for (auto it = stream.listeners.begin(); it != stream.listeners.end();) {
    if (!it->second(message)) {
      stream.listeners.erase(it++);
    } else {
      ++it;
    }
  }
}

void EventHub::Open(const std::string& workflow_id) {
  absl::MutexLock lock(&mu_);
  Stream& stream = streams_[workflow_id];
  if (stream.done) {
    // Continued after a decision: its WAITING result is superseded (the
    // continuation reuses that sequence number) and a new result will come.
    while (!stream.messages.empty() && stream.messages.back().has_result()) {
      stream.messages.pop_back();
    }
    stream.done = false;
  }
}

void EventHub::Forget(const std::string& workflow_id) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(workflow_id);
  if (it != streams_.end() && !it->second.done) streams_.erase(it);
}

void EventHub::Store(const std::string& workflow_id, uint64_t sequence,
                     const v1::ResolveResponse& message) {
  if (log_ == nullptr) return;
  // Before memory: a watcher that read the log then memory misses nothing.
  absl::Status s =
      log_->Append(workflow_id, sequence, message.SerializeAsString());
  if (!s.ok()) LOG(WARNING) << "event not stored: " << s;
}

void EventHub::Publish(const v1::WorkflowEvent& event) {
  v1::ResolveResponse m;
  *m.mutable_event() = event;
  Store(event.workflow_id(), event.sequence(), m);
  absl::MutexLock lock(&mu_);
  Stream& stream = streams_[event.workflow_id()];
  stream.messages.push_back(m);
  Deliver(event.workflow_id(), stream, m);
}

void EventHub::Finish(const v1::IncidentResult& result) {
  v1::ResolveResponse m;
  *m.mutable_result() = result;
  Store(result.workflow_id(), result.sequence(), m);
  absl::MutexLock lock(&mu_);
  Stream& stream = streams_[result.workflow_id()];
  stream.messages.push_back(m);
  stream.done = true;
  Deliver(result.workflow_id(), stream, m);
  stream.listeners.clear();  // the result is the last message
  finished_.push_back(result.workflow_id());
  while (static_cast<int>(finished_.size()) > max_finished_) {
    auto it = streams_.find(finished_.front());
    // A reopened (continued) workflow is live again: keep it.
    if (it != streams_.end() && it->second.done) streams_.erase(it);
    finished_.pop_front();
  }
}

absl::StatusOr<uint64_t> EventHub::Watch(const std::string& workflow_id,
                                         uint64_t from_sequence,
                                         Listener listener) {
  if (log_ != nullptr) {
    bool memory_has_it = false;
    {
      absl::MutexLock lock(&mu_);
      auto it = streams_.find(workflow_id);
      memory_has_it = it != streams_.end() && !it->second.messages.empty() &&
                      SequenceOf(it->second.messages.front()) <=
                          std::max<uint64_t>(from_sequence, 1);
    }
    if (!memory_has_it) {
      return WatchFromLog(workflow_id, from_sequence, std::move(listener));
    }
  }
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(workflow_id);
  if (it == streams_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "workflow ", workflow_id,
        ": no events retained here (unknown, finished long ago, or run by an "
        "earlier server process)"));
  }
  Stream& stream = it->second;
  if (!stream.messages.empty() && SequenceOf(stream.messages.front()) >
                                      std::max<uint64_t>(from_sequence, 1)) {
    return absl::OutOfRangeError(absl::StrCat(
        "from_sequence: events of ", workflow_id, " before sequence ",
        SequenceOf(stream.messages.front()), " are not retained"));
  }
  for (const v1::ResolveResponse& m : stream.messages) {
    if (SequenceOf(m) < from_sequence) continue;
    if (!listener(m)) return 0;
  }
  if (stream.done) return 0;
  uint64_t id = next_subscription_++;
  stream.listeners.emplace(id, std::move(listener));
  return id;
}

absl::StatusOr<uint64_t> EventHub::WatchFromLog(const std::string& workflow_id,
                                                uint64_t from_sequence,
                                                Listener listener) {
  const uint64_t from = std::max<uint64_t>(from_sequence, 1);
  std::vector<v1::ResolveResponse> stored;
  absl::Status read = log_->Read(workflow_id, from, UINT64_MAX,
                                 [&](uint64_t, absl::string_view bytes) {
                                   v1::ResolveResponse m;
                                   if (m.ParseFromString(std::string(bytes)))
                                     stored.push_back(std::move(m));
                                   return true;
                                 });
  if (!read.ok()) return read;
  bool live = false;
  {
    absl::MutexLock lock(&mu_);
    live = streams_.contains(workflow_id);
  }
  if (stored.empty() && !live) {
    return absl::NotFoundError(absl::StrCat(
        "workflow ", workflow_id,
        ": no events retained (unknown, expired, or not started with "
        "StartWorkflow, ResumeWorkflow or ForkWorkflow)"));
  }
  if (!stored.empty() && SequenceOf(stored.front()) > from) {
    return absl::OutOfRangeError(absl::StrCat(
        "from_sequence: events of ", workflow_id, " before sequence ",
        SequenceOf(stored.front()), " are not retained"));
  }
  // Each sequence number once: a message of the log may come again from
  // memory (stored, then published; or emitted again after a crash).
  uint64_t last = from - 1;
  for (size_t i = 0; i < stored.size(); ++i) {
    const v1::ResolveResponse& m = stored[i];
    if (SequenceOf(m) <= last) continue;
    // A result with messages after it is a WAITING result its workflow was
    // continued from (a decision): superseded, as in memory (Open).
    if (m.has_result() && i + 1 < stored.size()) continue;
    last = SequenceOf(m);
    if (!listener(m)) return 0;
    if (m.has_result()) break;
  }
  if (!stored.empty() && stored.back().has_result() && !live) return 0;
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(workflow_id);
  if (it == streams_.end()) return 0;  // not running here: nothing follows
  Stream& stream = it->second;
  auto filtered = [listener = std::move(listener),
                   last](const v1::ResolveResponse& m) mutable {
    if (SequenceOf(m) <= last) return true;
    last = SequenceOf(m);
    return listener(m);
  };
  for (const v1::ResolveResponse& m : stream.messages) {
    if (!filtered(m)) return 0;
  }
  if (stream.done) return 0;
  uint64_t id = next_subscription_++;
  stream.listeners.emplace(id, std::move(filtered));
  return id;
}

void EventHub::Unwatch(const std::string& workflow_id, uint64_t subscription) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(workflow_id);
  if (it != streams_.end()) it->second.listeners.erase(subscription);
}

}  // namespace reflexion::server

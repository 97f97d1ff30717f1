#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <set>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace reflexion::graph {

// Runs closures. The graph engine posts all node work here, so node work
// never runs on a caller's thread (a gRPC reaction, an HTTP client's I/O
// thread). Implementations are thread-safe.
class TaskRunner {
 public:
  virtual ~TaskRunner() = default;
  // Queues `task`; it runs exactly once unless the runner is destroyed
  // first (ThreadPool runs every queued task before its destructor returns).
  virtual void Post(absl::AnyInvocable<void() &&> task) = 0;
};

// A fixed-size pool of threads sharing one FIFO queue. The destructor lets
// the queue drain (tasks may post more tasks) and joins every thread.
class ThreadPool final : public TaskRunner {
 public:
  // `threads` >= 1.
  explicit ThreadPool(int threads);
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Post(absl::AnyInvocable<void() &&> task) override;

  // Tasks queued and not yet started.
  size_t QueueSize() const;

 private:
  void WorkerLoop();

  mutable absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // queue_.size(), readable without the lock (idle workers spin on it
  // briefly before they sleep).
  std::atomic<size_t> queued_{0};
  std::vector<std::thread> threads_;
};

// Runs closures after a delay. Implementations are thread-safe.
class Timer {
 public:
  virtual ~Timer() = default;
  // Runs `fn` once, `delay` from now, on the timer's thread; it must not
  // block (post real work to a TaskRunner). Returns an id for Cancel.
  virtual uint64_t After(absl::Duration delay,
                         absl::AnyInvocable<void() &&> fn) = 0;
  // Drops a pending `fn` (and what it holds) without running it; a no-op
  // when it already ran.
  virtual void Cancel(uint64_t id) = 0;
};

// One thread and a deadline-ordered queue. The destructor runs whatever is
// still queued at once (nothing is dropped), then joins the thread.
class TimerThread final : public Timer {
 public:
  TimerThread();
  ~TimerThread() override;
  TimerThread(const TimerThread&) = delete;
  TimerThread& operator=(const TimerThread&) = delete;

  uint64_t After(absl::Duration delay,
                 absl::AnyInvocable<void() &&> fn) override;
  void Cancel(uint64_t id) override;

 private:
  void Loop();

  struct Entry {
    absl::Time due;
    uint64_t order;
    mutable absl::AnyInvocable<void() &&> fn;
    bool operator<(const Entry& o) const {
      return due != o.due ? due < o.due : order < o.order;
    }
  };
  absl::Mutex mu_;
  std::set<Entry> queue_ ABSL_GUARDED_BY(mu_);
  // Pending entries by id, for Cancel.
  absl::flat_hash_map<uint64_t, absl::Time> due_by_id_ ABSL_GUARDED_BY(mu_);
  uint64_t next_order_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace reflexion::graph

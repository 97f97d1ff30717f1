#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
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

// One flow of tasks among others sharing a ThreadPool (one Resolve stream's
// workflows). Tasks of one lane run in the order they were posted with
// respect to the pool's dispatch; lanes are served round-robin, so a lane
// with a thousand queued tasks does not delay a lane with one by a thousand
// tasks. A background lane (a stream whose client is not reading its
// output, or has gone) is served only one dispatch in
// ThreadPool::kBackgroundEvery while a foreground lane has work, and fully
// otherwise: its work goes on, never starved, but never at the expense of a
// client that is keeping up.
class Lane : public TaskRunner {
 public:
  virtual void SetBackground(bool background) = 0;
};

// A TaskRunner that can make lanes. Null: it has one flow only (post to it).
class LaneFactory {
 public:
  virtual ~LaneFactory() = default;
  virtual std::shared_ptr<Lane> NewLane() = 0;
};

// A fixed-size pool of threads. Post() queues on the pool's default lane;
// NewLane() makes more (see Lane): each lane is FIFO, lanes are served
// round-robin, background lanes one dispatch in kBackgroundEvery while
// foreground work waits. The destructor lets every queue drain (tasks may
// post more tasks) and joins every thread. A lane may be dropped with
// tasks queued: they still run (the pool holds a lane while it has work).
class ThreadPool final : public TaskRunner, public LaneFactory {
 public:
  static constexpr int kBackgroundEvery = 16;

  // `threads` >= 1.
  explicit ThreadPool(int threads);
  ~ThreadPool() override;
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Post(absl::AnyInvocable<void() &&> task) override;
  std::shared_ptr<Lane> NewLane() override;

  // Tasks queued and not yet started, over every lane.
  size_t QueueSize() const;

 private:
  class PoolLane;
  void PostTo(const std::shared_ptr<PoolLane>& lane,
              absl::AnyInvocable<void() &&> task);
  void SetBackground(const std::shared_ptr<PoolLane>& lane, bool background);
  // The next task to run (mu_ held, a task queued): from the next ready
  // lane of the class whose turn it is.
  absl::AnyInvocable<void() &&> NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  // Lanes with queued tasks, in turn order, by class. A lane is in at most
  // one of them, exactly while it has tasks.
  std::deque<std::shared_ptr<PoolLane>> foreground_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<PoolLane>> background_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<PoolLane> default_lane_;
  size_t queued_total_ ABSL_GUARDED_BY(mu_) = 0;
  // Foreground dispatches since a background one (while both had work).
  int since_background_ ABSL_GUARDED_BY(mu_) = 0;
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // queued_total_, readable without the lock (idle workers spin on it
  // briefly before they sleep).
  std::atomic<size_t> queued_{0};
  std::vector<std::thread> threads_;

  void WorkerLoop();
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

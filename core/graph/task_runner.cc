#include "core/graph/task_runner.h"

#include <utility>

#include "glog/logging.h"

namespace reflexion::graph {
namespace {

// Spins of an idle worker before it sleeps (about 20-50 us).
constexpr int kSpins = 2000;

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  CHECK_GE(threads, 1);
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    // Drain: a running task may still post follow-up work.
    auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return queue_.empty() && busy_ == 0;
    };
    mu_.Await(absl::Condition(&drained));
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
}

void ThreadPool::Post(absl::AnyInvocable<void() &&> task) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
  queued_.store(queue_.size(), std::memory_order_release);
}

size_t ThreadPool::QueueSize() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void ThreadPool::WorkerLoop() {
  while (true) {
    absl::AnyInvocable<void() &&> task;
    // A task posted within a few microseconds (a continuation from another
    // thread) is taken without the cost of sleeping and being woken.
    for (int i = 0; i < kSpins && queued_.load(std::memory_order_acquire) == 0;
         ++i) {
      CpuRelax();
    }
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !queue_.empty() || stopping_;
      };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      queued_.store(queue_.size(), std::memory_order_release);
      ++busy_;
    }
    std::move(task)();
    absl::MutexLock lock(&mu_);
    --busy_;
  }
}

TimerThread::TimerThread() : thread_([this] { Loop(); }) {}

TimerThread::~TimerThread() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

uint64_t TimerThread::After(absl::Duration delay,
                            absl::AnyInvocable<void() &&> fn) {
  absl::MutexLock lock(&mu_);
  const uint64_t id = next_order_++;
  if (stopping_) {
    mu_.Unlock();
    std::move(fn)();
    mu_.Lock();
    return id;
  }
  const absl::Time due = absl::Now() + delay;
  queue_.insert(Entry{due, id, std::move(fn)});
  due_by_id_[id] = due;
  return id;
}

void TimerThread::Cancel(uint64_t id) {
  absl::AnyInvocable<void() &&> dropped;  // destroyed outside the lock
  {
    absl::MutexLock lock(&mu_);
    auto it = due_by_id_.find(id);
    if (it == due_by_id_.end()) return;
    auto entry = queue_.find(Entry{it->second, id, nullptr});
    if (entry != queue_.end()) {
      dropped = std::move(entry->fn);
      queue_.erase(entry);
    }
    due_by_id_.erase(it);
  }
}

void TimerThread::Loop() {
  while (true) {
    absl::AnyInvocable<void() &&> fn;
    {
      absl::MutexLock lock(&mu_);
      while (true) {
        if (!queue_.empty() &&
            (stopping_ || queue_.begin()->due <= absl::Now())) {
          fn = std::move(queue_.begin()->fn);
          due_by_id_.erase(queue_.begin()->order);
          queue_.erase(queue_.begin());
          break;
        }
        if (stopping_) return;
        absl::Duration wait = queue_.empty()
                                  ? absl::Milliseconds(100)
                                  : queue_.begin()->due - absl::Now();
        // Wake early for a stop or for an entry inserted meanwhile (it may
        // be due sooner).
        const uint64_t seen = next_order_;
        auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || next_order_ != seen;
        };
        mu_.AwaitWithTimeout(absl::Condition(&changed), wait);
      }
    }
    std::move(fn)();
  }
}

}  // namespace reflexion::graph

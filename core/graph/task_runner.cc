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

class ThreadPool::PoolLane final
    : public Lane,
      public std::enable_shared_from_this<PoolLane> {
 public:
  explicit PoolLane(ThreadPool* pool) : pool_(pool) {}

  void Post(absl::AnyInvocable<void() &&> task) override {
    pool_->PostTo(shared_from_this(), std::move(task));
  }
  void SetBackground(bool background) override {
    pool_->SetBackground(shared_from_this(), background);
  }

 private:
  friend class ThreadPool;
  ThreadPool* const pool_;
  // Guarded by pool_->mu_.
  std::deque<absl::AnyInvocable<void() &&>> tasks;
  bool background = false;
  // In a ready deque (exactly while tasks is not empty).
  bool ready = false;
};

ThreadPool::ThreadPool(int threads)
    : default_lane_(std::make_shared<PoolLane>(this)) {
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
      return queued_total_ == 0 && busy_ == 0;
    };
    mu_.Await(absl::Condition(&drained));
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
}

void ThreadPool::Post(absl::AnyInvocable<void() &&> task) {
  PostTo(default_lane_, std::move(task));
}

std::shared_ptr<Lane> ThreadPool::NewLane() {
  return std::make_shared<PoolLane>(this);
}

void ThreadPool::PostTo(const std::shared_ptr<PoolLane>& lane,
                        absl::AnyInvocable<void() &&> task) {
  absl::MutexLock lock(&mu_);
  lane->tasks.push_back(std::move(task));
  if (!lane->ready) {
    lane->ready = true;
    (lane->background ? background_ : foreground_).push_back(lane);
  }
  ++queued_total_;
  queued_.store(queued_total_, std::memory_order_release);
}

void ThreadPool::SetBackground(const std::shared_ptr<PoolLane>& lane,
                               bool background) {
  absl::MutexLock lock(&mu_);
  if (lane->background == background) return;
  lane->background = background;
  if (!lane->ready) return;
  // Move it to the back of its new class's turn order.
  auto& from = background ? foreground_ : background_;
  for (auto it = from.begin(); it != from.end(); ++it) {
    if (*it == lane) {
      from.erase(it);
      break;
    }
  }
  (background ? background_ : foreground_).push_back(lane);
}

size_t ThreadPool::QueueSize() const {
  absl::MutexLock lock(&mu_);
  return queued_total_;
}

absl::AnyInvocable<void() &&> ThreadPool::NextLocked() {
  bool from_background;
  if (foreground_.empty()) {
    from_background = true;
  } else if (background_.empty()) {
    from_background = false;
  } else {
    from_background = ++since_background_ >= kBackgroundEvery;
  }
  if (from_background) since_background_ = 0;
  auto& ready = from_background ? background_ : foreground_;
  std::shared_ptr<PoolLane> lane = std::move(ready.front());
  ready.pop_front();
  absl::AnyInvocable<void()&&> task = std::move(lane->tasks.front());
  lane->tasks.pop_front();
  if (lane->tasks.empty()) {
    lane->ready = false;  // the lane may now go away with its last task
  } else {
    ready.push_back(std::move(lane));
  }
  --queued_total_;
  queued_.store(queued_total_, std::memory_order_release);
  return task;
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
        return queued_total_ > 0 || stopping_;
      };
      mu_.Await(absl::Condition(&ready));
      if (queued_total_ == 0) return;  // stopping and drained
      task = NextLocked();
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

#pragma once

#include <cstddef>
#include <deque>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"

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
  std::vector<std::thread> threads_;
};

}  // namespace reflexion::graph

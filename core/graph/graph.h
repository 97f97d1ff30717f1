#pragma once

// A small, generic workflow engine in the spirit of LangGraph: named nodes,
// fixed and conditional edges, START/END, a recursion limit, validation when
// the graph is compiled, an event per node start/finish, and nodes that may
// complete asynchronously. Node work runs on a TaskRunner owned by the
// caller (the engine's executor), never on the thread that completes an
// asynchronous node.
//
// State is any copyable type (in this project a protobuf message, so a
// checkpoint is its serialization). Nodes mutate the state they are given.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/graph/task_runner.h"
#include "core/ports/checkpoint_store.h"
#include "core/ports/clock.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"

namespace reflexion::graph {

inline constexpr absl::string_view kStart = "__start__";
inline constexpr absl::string_view kEnd = "__end__";

// kRetrying: the node failed with a retryable error and runs again after a
// backoff (its retry policy).
// kInterrupted: the node asked for a human decision (Interrupt()).
enum class NodePhase { kStarted, kCompleted, kFailed, kRetrying, kInterrupted };

// What a node passes to NodeDone to stop and wait for a human decision: the
// run ends with this status, its checkpoint is recorded as waiting with the
// same node to run next, and it continues when resumed (after the state was
// updated with the decision). Needs a checkpoint store.
inline absl::Status Interrupt(absl::string_view reason) {
  absl::Status s = absl::AbortedError(reason);
  s.SetPayload("type.reflexion/graph.interrupt", absl::Cord("1"));
  return s;
}
// Whether `status` came from Interrupt().
inline bool IsInterrupt(const absl::Status& status) {
  return status.code() == absl::StatusCode::kAborted &&
         status.GetPayload("type.reflexion/graph.interrupt").has_value();
}

// When a failed node runs again.
struct RetryPolicy {
  // Attempts in all (1 = no retry).
  int max_attempts = 1;
  absl::Duration initial_backoff = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(10);
  double multiplier = 2.0;
  // Each backoff is scaled by a factor in [1 - jitter, 1 + jitter].
  double jitter = 0.2;
  // Status codes that are retried; any other fails the run.
  std::vector<absl::StatusCode> retry_on = {
      absl::StatusCode::kUnavailable, absl::StatusCode::kDeadlineExceeded,
      absl::StatusCode::kResourceExhausted};
};

// Per-node options.
struct NodeOptions {
  RetryPolicy retry;
  // A node not done after this fails with kDeadlineExceeded (retryable by
  // default); its late completion is ignored and its state changes are
  // discarded. Zero: no timeout. Needs RunOptions::timer.
  absl::Duration timeout = absl::ZeroDuration();
};

// One node event. Valid only during the EventSink call.
template <typename State>
struct StepEvent {
  absl::string_view workflow_id;
  uint64_t sequence;  // 1, 2, 3, ... per workflow
  absl::string_view node;
  NodePhase phase;
  absl::Time time;
  absl::Duration duration;     // completed / failed events
  const State& state;          // before the node (started), after it otherwise
  const absl::Status& status;  // the node's error (failed events)
};

// Receives every node event of the workflows it is given to. Events of one
// workflow arrive one at a time, in sequence order; events of different
// workflows may arrive concurrently. Must not block.
template <typename State>
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void OnEvent(const StepEvent<State>& event) = 0;
};

// How a run ended.
template <typename State>
struct RunResult {
  absl::Status status;     // OK when END was reached
  State state;             // the final state
  uint64_t last_sequence;  // sequence number of the last event sent
  int steps;               // node executions
  std::string last_node;   // the last node that ran
  // Step of the last checkpoint the run wrote (for a waiting run: the wait a
  // decision answers, see UpdateWaiting); 0 when it wrote none.
  uint64_t checkpoint_step = 0;
};

// Called when a node's work is done. Exactly once, from any thread. The node
// must not touch the state after calling it.
using NodeDone = absl::AnyInvocable<void(absl::Status) &&>;

template <typename State>
using NodeFn = std::function<void(State& state, NodeDone done)>;

// Picks the next node (or kEnd) from the state. Must return one of the
// targets declared with AddConditionalEdges.
template <typename State>
using RouterFn = std::function<std::string(const State& state)>;

template <typename State>
class CompiledGraph;

// Collects nodes and edges; Compile() validates them.
template <typename State>
class GraphBuilder {
 public:
  // Adds a node. Names must be unique and not kStart/kEnd.
  GraphBuilder& AddNode(std::string name, NodeFn<State> fn,
                        NodeOptions options = {}) {
    nodes_.push_back({std::move(name), std::move(fn), std::move(options)});
    return *this;
  }
  // Adds a node whose work is synchronous.
  GraphBuilder& AddSyncNode(std::string name,
                            std::function<absl::Status(State&)> fn) {
    return AddNode(std::move(name),
                   [fn = std::move(fn)](State& s, NodeDone done) {
                     std::move(done)(fn(s));
                   });
  }
  // After `from` (or kStart), always go to `to` (or kEnd).
  GraphBuilder& AddEdge(std::string from, std::string to) {
    edges_.push_back({std::move(from), {std::move(to)}, nullptr});
    return *this;
  }
  // After `from`, `router` picks one of `targets`.
  GraphBuilder& AddConditionalEdges(std::string from, RouterFn<State> router,
                                    std::vector<std::string> targets) {
    edges_.push_back({std::move(from), std::move(targets), std::move(router)});
    return *this;
  }

  // Validates and freezes the graph. kInvalidArgument naming the problem:
  // duplicate or reserved node names, edges from or to unknown nodes, a node
  // with no outgoing edge or with two, no edge from START, a node that
  // cannot be reached from START, a node from which END cannot be reached.
  absl::StatusOr<std::shared_ptr<const CompiledGraph<State>>> Compile() const;

 private:
  friend class CompiledGraph<State>;
  struct NodeDef {
    std::string name;
    NodeFn<State> fn;
    NodeOptions options;
  };
  struct EdgeDef {
    std::string from;
    std::vector<std::string> targets;
    RouterFn<State> router;  // null for a fixed edge
  };
  std::vector<NodeDef> nodes_;
  std::vector<EdgeDef> edges_;
};

// Options of one run.
// When checkpoints are written (DESIGN §4, LangGraph's durability modes).
enum class Durability {
  // After every step, fsync'd before the next step starts.
  kSync,
  // After every step, written (to the WAL, not fsync'd) while the next steps
  // run: the checkpoints of a stretch of synchronously completing nodes are
  // queued together when a node goes asynchronous, a retry waits or the run
  // ends. The run reports its end (completed, failed, waiting) only once
  // every checkpoint is written. A crash loses at most the unwritten
  // stretch; the run resumes from the checkpoint before it.
  kAsync,
  // Only when the run ends (completed, failed, waiting): not resumable.
  kExit,
};

// Options of one run.
struct RunOptions {
  std::string workflow_id;
  // Node executions allowed before the run fails with kResourceExhausted.
  int recursion_limit = 100;
  // Where checkpoints go (null: none). Must outlive the run.
  core::CheckpointStore* checkpoints = nullptr;
  Durability durability = Durability::kAsync;
  // Checkpoints kept per workflow (0 = all).
  int keep_last = 0;
  // Set to true to cancel: the run stops before its next node with
  // kCancelled (recorded as cancelled when checkpoints are on). May be null.
  std::shared_ptr<const std::atomic<bool>> cancel;
  // Runs node timeouts and retry backoffs (null: timeouts are not enforced
  // and retries run without backoff). Must outlive the run.
  Timer* timer = nullptr;
};

// Encoding of the state in checkpoints: protobuf serialization.
template <typename State>
concept SerializableState = requires(const State& c, State& m, std::string* out,
                                     const std::string& in) {
  { c.SerializeToString(out) } -> std::convertible_to<bool>;
  { m.ParseFromString(in) } -> std::convertible_to<bool>;
};

// Decodes a checkpointed state. A protobuf state whose strings are not valid
// UTF-8 (written by an older build that clipped inside a character) is
// repaired (U+FFFD) and the repair logged, so the workflow can still be read
// and resumed; false only for bytes that do not decode otherwise.
template <typename State>
bool DecodeCheckpointState(const core::Checkpoint& cp, State* state) {
  if constexpr (std::is_base_of_v<google::protobuf::Message, State>) {
    std::vector<std::string> repaired;
    if (!core::ParseRepairingUtf8(state, cp.state, &repaired)) return false;
    if (!repaired.empty()) {
      LOG(WARNING) << "checkpoint " << cp.step << " of " << cp.workflow_id
                   << " held invalid UTF-8 (an older build's clipping), "
                      "repaired: "
                   << absl::StrJoin(repaired, ", ");
    }
    return true;
  } else {
    return state->ParseFromString(cp.state);
  }
}

// A validated, immutable graph. Thread-safe: any number of runs at once.
template <typename State>
class CompiledGraph
    : public std::enable_shared_from_this<CompiledGraph<State>> {
 public:
  using DoneFn = absl::AnyInvocable<void(RunResult<State>) &&>;
  using RecordedFn = absl::AnyInvocable<void(absl::Status) &&>;

  // Starts a run and returns at once. Every node runs on `runner`; events go
  // to `sink` (may be null); `done` is called exactly once, on a `runner`
  // thread, after the last event. `runner`, `sink` and `clock` must outlive
  // the run. A node error, a router returning an undeclared target or the
  // recursion limit end the run with that status after a failed event.
  //
  // `recorded` (may be null) is the acknowledgement: with checkpoints on,
  // the input checkpoint (step 0) is queued from the calling thread — in
  // every durability mode, fsync'd for kSync — and `recorded` gets the
  // write's status once it is applied, before the first node runs and
  // before any event (on a store thread, or inline); on an error the run
  // ends with it (no event, `done` still called). Without checkpoints it is
  // called at once with OK. Same threading rules as CheckpointStore's
  // WriteDone: quick, no lock a store caller may hold.
  void Start(RunOptions options, State initial, TaskRunner* runner,
             EventSink<State>* sink, const core::Clock* clock, DoneFn done,
             RecordedFn recorded = nullptr) const;

  // Continues `options.workflow_id` from its latest checkpoint in
  // `options.checkpoints` (which must be set): the node recorded as next
  // runs first, steps and event sequence numbers continue where they were.
  // Returns at once; `done` as in Start. Errors (returned, `done` is not
  // called): kNotFound (no checkpoint), kFailedPrecondition (the workflow
  // already ended), kDataLoss (the state does not decode), kInvalidArgument
  // (the next node is not in this graph).
  absl::Status Resume(RunOptions options, TaskRunner* runner,
                      EventSink<State>* sink, const core::Clock* clock,
                      DoneFn done) const requires SerializableState<State>;

  // The state at a workflow's latest checkpoint, or at `step`.
  static absl::StatusOr<State> GetState(core::CheckpointStore& store,
                                        absl::string_view workflow_id) requires
      SerializableState<State>;
  static absl::StatusOr<State> GetState(
      core::CheckpointStore& store, absl::string_view workflow_id,
      uint64_t step) requires SerializableState<State>;

  // Creates workflow `new_id` whose history starts at checkpoint `step` of
  // `source_id`, with its state passed through `edit` (may be null). Run
  // it with Resume. kNotFound for a missing checkpoint, kAlreadyExists when
  // `new_id` has checkpoints.
  static absl::Status Fork(core::CheckpointStore& store,
                           absl::string_view source_id, uint64_t step,
                           absl::string_view new_id,
                           const std::function<void(State&)>& edit,
                           absl::Time now) requires SerializableState<State>;

  // Writes a new checkpoint of a waiting workflow with its state passed
  // through `edit` (a human decision), recorded as running, so Resume
  // continues it; the write is fsync'd when `sync`. `wait_step` is the
  // checkpoint step of the wait being answered (RunResult::checkpoint_step
  // of the interrupted run): a stale one is kAborted and writes nothing, and
  // of concurrent updates of one wait exactly one succeeds (the others get
  // kAborted, or kFailedPrecondition once the workflow runs again).
  // kNotFound for an unknown workflow, kFailedPrecondition when it is not
  // waiting. With `phase` kWaiting the workflow keeps waiting (its wait is
  // now the new step, stored in `new_step` when not null); `keep_last` as
  // in CheckpointStore::Put.
  static absl::Status UpdateWaiting(
      core::CheckpointStore& store, absl::string_view workflow_id,
      uint64_t wait_step, const std::function<void(State&)>& edit,
      absl::Time now, bool sync = true,
      core::WorkflowPhase phase = core::WorkflowPhase::kRunning,
      int keep_last = 0,
      uint64_t* new_step = nullptr) requires SerializableState<State>;

  // The graph as a Mermaid flowchart.
  std::string ToMermaid() const;

  // Node names in the order they were added.
  std::vector<std::string> NodeNames() const {
    std::vector<std::string> names;
    for (const auto& n : nodes_) names.push_back(n.name);
    return names;
  }

 private:
  friend class GraphBuilder<State>;
  static constexpr int kEndIndex = -1;

  struct Node {
    std::string name;
    NodeFn<State> fn;
    NodeOptions options;
    int fixed_next = kEndIndex;  // when router is null
    RouterFn<State> router;
    std::vector<std::pair<std::string, int>> targets;  // declared targets
  };

  class Run;

  std::vector<Node> nodes_;
  int entry_ = kEndIndex;
  RouterFn<State> entry_router_;
  std::vector<std::pair<std::string, int>> entry_targets_;
};

// ----------------------------------------------------------------------------
// Implementation.
// ----------------------------------------------------------------------------

template <typename State>
absl::StatusOr<std::shared_ptr<const CompiledGraph<State>>>
GraphBuilder<State>::Compile() const {
  auto graph =
      std::shared_ptr<CompiledGraph<State>>(new CompiledGraph<State>());
  absl::flat_hash_map<std::string, int> index;
  for (const auto& n : nodes_) {
    if (n.name.empty() || n.name == kStart || n.name == kEnd) {
      return absl::InvalidArgumentError(
          absl::StrCat("invalid node name '", n.name, "'"));
    }
    if (!n.fn) {
      return absl::InvalidArgumentError(
          absl::StrCat("node '", n.name, "' has no function"));
    }
    if (!index.emplace(n.name, static_cast<int>(graph->nodes_.size())).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("duplicate node '", n.name, "'"));
    }
    typename CompiledGraph<State>::Node node;
    node.name = n.name;
    node.fn = n.fn;
    node.options = n.options;
    graph->nodes_.push_back(std::move(node));
  }
  auto resolve = [&](const std::string& name) -> absl::StatusOr<int> {
    if (name == kEnd) return CompiledGraph<State>::kEndIndex;
    auto it = index.find(name);
    if (it == index.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("edge to unknown node '", name, "'"));
    }
    return it->second;
  };
  absl::flat_hash_set<std::string> has_out;
  std::vector<std::vector<int>> succ(graph->nodes_.size());
  std::vector<int> entry_succ;
  for (const auto& e : edges_) {
    bool from_start = e.from == kStart;
    if (!from_start && !index.contains(e.from)) {
      return absl::InvalidArgumentError(
          absl::StrCat("edge from unknown node '", e.from, "'"));
    }
    if (!has_out.insert(e.from).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "node '", e.from, "' has more than one outgoing edge definition"));
    }
    if (e.targets.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("conditional edges of '", e.from, "' have no targets"));
    }
    std::vector<std::pair<std::string, int>> targets;
    for (const auto& t : e.targets) {
      if (t == kStart) {
        return absl::InvalidArgumentError(
            absl::StrCat("edge from '", e.from, "' to START"));
      }
      absl::StatusOr<int> idx = resolve(t);
      if (!idx.ok()) return idx.status();
      targets.emplace_back(t, *idx);
    }
    std::vector<int>& out = from_start ? entry_succ : succ[index[e.from]];
    for (const auto& t : targets) out.push_back(t.second);
    if (from_start) {
      if (e.router) {
        graph->entry_router_ = e.router;
        graph->entry_targets_ = targets;
      } else {
        graph->entry_ = targets[0].second;
      }
      continue;
    }
    auto& node = graph->nodes_[index[e.from]];
    if (e.router) {
      node.router = e.router;
      node.targets = std::move(targets);
    } else {
      node.fixed_next = targets[0].second;
      node.targets = std::move(targets);
    }
  }
  if (!has_out.contains(std::string(kStart))) {
    return absl::InvalidArgumentError("no edge from START");
  }
  for (const auto& n : graph->nodes_) {
    if (!has_out.contains(n.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("node '", n.name, "' has no outgoing edge"));
    }
  }
  // Every node reachable from START.
  std::vector<bool> seen(graph->nodes_.size(), false);
  std::vector<int> stack;
  for (int t : entry_succ) {
    if (t >= 0 && !seen[t]) {
      seen[t] = true;
      stack.push_back(t);
    }
  }
  while (!stack.empty()) {
    int n = stack.back();
    stack.pop_back();
    for (int t : succ[n]) {
      if (t >= 0 && !seen[t]) {
        seen[t] = true;
        stack.push_back(t);
      }
    }
  }
  for (size_t i = 0; i < seen.size(); ++i) {
    if (!seen[i]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "node '", graph->nodes_[i].name, "' is unreachable from START"));
    }
  }
  // END reachable from every node (else a run can only hit the limit).
  std::vector<bool> reaches_end(graph->nodes_.size(), false);
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t i = 0; i < succ.size(); ++i) {
      if (reaches_end[i]) continue;
      for (int t : succ[i]) {
        if (t < 0 || reaches_end[t]) {
          reaches_end[i] = true;
          changed = true;
          break;
        }
      }
    }
  }
  for (size_t i = 0; i < reaches_end.size(); ++i) {
    if (!reaches_end[i]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "END cannot be reached from node '", graph->nodes_[i].name, "'"));
    }
  }
  return std::shared_ptr<const CompiledGraph<State>>(std::move(graph));
}

// One run: owns the state; deletes itself after calling done.
template <typename State>
class CompiledGraph<State>::Run {
 public:
  Run(std::shared_ptr<const CompiledGraph<State>> graph, RunOptions options,
      State state, TaskRunner* runner, EventSink<State>* sink,
      const core::Clock* clock, DoneFn done)
      : graph_(std::move(graph)),
        options_(std::move(options)),
        state_(std::move(state)),
        runner_(runner),
        sink_(sink),
        clock_(clock),
        done_(std::move(done)) {}

  // Continues from a checkpoint instead of the entry point.
  void BeginAt(int next, uint64_t steps, uint64_t sequence) {
    current_ = next;
    steps_ = static_cast<int>(steps);
    sequence_ = sequence;
    saved_step_ = steps;
    saved_any_ = true;
    Loop();
  }

  // Start with an acknowledgement: writes the input checkpoint from the
  // calling thread, then runs the entry node once it is written.
  void BeginRecorded(RecordedFn recorded) {
    if (!PickEntry() || current_ == kEndIndex) {
      std::move(recorded)(absl::OkStatus());
      runner_->Post([this] { Finish(entry_status_); });
      return;
    }
    core::Checkpoint c = MakeCheckpoint(current_, 0);
    options_.checkpoints->PutAsync(
        std::move(c), core::WorkflowPhase::kRunning, options_.keep_last,
        options_.durability == Durability::kSync,
        [this, recorded = std::move(recorded)](absl::Status s) mutable {
          RecordWrite(s);
          std::move(recorded)(s);
          runner_->Post([this] {
            if (write_failed_.load(std::memory_order_acquire)) {
              Finish(absl::OkStatus());  // becomes the write's error
            } else {
              Loop();
            }
          });
        });
  }

  // Sets current_ to the entry node (kEndIndex: none); false (with
  // entry_status_) when the START router misbehaves.
  bool PickEntry() {
    if (graph_->entry_router_) {
      std::string next = graph_->entry_router_(state_);
      int idx = Lookup(graph_->entry_targets_, next);
      if (idx == kUnknown) {
        entry_status_ = absl::InternalError(absl::StrCat(
            "START router returned undeclared target '", next, "'"));
        return false;
      }
      current_ = idx;
    } else {
      current_ = graph_->entry_;
    }
    return true;
  }

  void Begin() {
    if (graph_->entry_router_) {
      std::string next = graph_->entry_router_(state_);
      int idx = Lookup(graph_->entry_targets_, next);
      if (idx == kUnknown) {
        Finish(absl::InternalError(absl::StrCat(
            "START router returned undeclared target '", next, "'")));
        return;
      }
      current_ = idx;
    } else {
      current_ = graph_->entry_;
    }
    if (current_ == kEndIndex) {
      Finish(absl::OkStatus());
      return;
    }
    if (Checkpoint(current_)) Loop();
  }

 private:
  static constexpr int kUnknown = -2;
  enum : int { kRunning = 0, kReturned = 1, kCompletedInline = 2 };

  static int Lookup(const std::vector<std::pair<std::string, int>>& targets,
                    absl::string_view name) {
    for (const auto& t : targets) {
      if (t.first == name) return t.second;
    }
    return kUnknown;
  }

  void Emit(NodePhase phase, absl::Duration duration,
            const absl::Status& status) {
    ++sequence_;
    if (sink_ == nullptr) return;
    StepEvent<State> event{options_.workflow_id,
                           sequence_,
                           graph_->nodes_[current_].name,
                           phase,
                           clock_->Now(),
                           duration,
                           state_,
                           status};
    sink_->OnEvent(event);
  }

  // Runs nodes while they complete synchronously; returns when a node goes
  // asynchronous (its completion posts the continuation) or the run ends.
  void Loop() {
    while (true) {
      if (retrying_) {
        retrying_ = false;
        ++node_attempt_;
        Emit(NodePhase::kStarted, absl::ZeroDuration(), absl::OkStatus());
        if (!Invoke()) return;
        if (!Advance()) return;
        continue;
      }
      if (write_failed_.load(std::memory_order_acquire)) {
        Finish(absl::OkStatus());  // becomes the write's error
        return;
      }
      if (options_.cancel != nullptr &&
          options_.cancel->load(std::memory_order_acquire)) {
        absl::Status cancelled = absl::CancelledError(absl::StrCat(
            "workflow ", options_.workflow_id, " was cancelled before node '",
            graph_->nodes_[current_].name, "'"));
        QueueFinal(current_, core::WorkflowPhase::kCancelled, 0,
                   ErrorText(cancelled));
        Finish(cancelled);
        return;
      }
      if (steps_ >= options_.recursion_limit) {
        absl::Status limit = absl::ResourceExhaustedError(absl::StrCat(
            "recursion limit ", options_.recursion_limit,
            " reached before node '", graph_->nodes_[current_].name, "'"));
        Emit(NodePhase::kFailed, absl::ZeroDuration(), limit);
        Fail(limit);
        return;
      }
      ++steps_;
      node_attempt_ = 1;
      Emit(NodePhase::kStarted, absl::ZeroDuration(), absl::OkStatus());
      if (!Invoke()) return;
      if (!Advance()) return;
    }
  }

  // One settled-once completion of one node attempt with a timeout: the
  // node works on its own copy of the state, adopted only if it finishes in
  // time.
  struct TimedCall {
    std::atomic<bool> settled{false};
    std::unique_ptr<State> state;
    uint64_t timer_id = 0;
  };

  // Runs the current node. Returns true when it completed synchronously
  // (the caller advances), false when it went asynchronous (its completion
  // posts the continuation).
  bool Invoke() {
    const Node& node = graph_->nodes_[current_];
    node_start_ = clock_->Now();
    phase_.store(kRunning, std::memory_order_release);
    if (node.options.timeout > absl::ZeroDuration() &&
        options_.timer != nullptr) {
      auto call = std::make_shared<TimedCall>();
      call->state = std::make_unique<State>(state_);
      absl::Duration timeout = node.options.timeout;
      std::string name = node.name;
      // The timer holds only a weak reference, and a completion cancels it:
      // a finished call and its state copy are freed at once.
      std::weak_ptr<TimedCall> weak = call;
      call->timer_id =
          options_.timer->After(timeout, [this, weak, timeout, name] {
            std::shared_ptr<TimedCall> c = weak.lock();
            if (c == nullptr || c->settled.exchange(true)) return;
            OnNodeDone(absl::DeadlineExceededError(
                absl::StrCat("node '", name, "' did not finish within ",
                             absl::FormatDuration(timeout))));
          });
      Timer* timer = options_.timer;
      node.fn(*call->state, [this, call, timer](absl::Status s) {
        if (call->settled.exchange(true)) return;  // too late: ignored
        timer->Cancel(call->timer_id);
        state_ = std::move(*call->state);
        call->state.reset();
        OnNodeDone(std::move(s));
      });
    } else {
      node.fn(state_, [this](absl::Status s) { OnNodeDone(std::move(s)); });
    }
    // A node still running will complete elsewhere, maybe much later: hand
    // the held checkpoints to the store first. (Until this thread settles
    // phase_, a completion touches nothing of the run's but its status.)
    if (!held_.empty() && phase_.load(std::memory_order_acquire) == kRunning) {
      FlushHeld();
    }
    int expected = kRunning;
    return !phase_.compare_exchange_strong(expected, kReturned,
                                           std::memory_order_acq_rel);
  }

  // Schedules another attempt of the current node when its policy allows;
  // returns false when the failure is final.
  bool MaybeRetry(const absl::Status& status, absl::Duration took) {
    const RetryPolicy& policy = graph_->nodes_[current_].options.retry;
    if (node_attempt_ >= policy.max_attempts) return false;
    if (std::find(policy.retry_on.begin(), policy.retry_on.end(),
                  status.code()) == policy.retry_on.end()) {
      return false;
    }
    double factor = 1;
    for (int i = 1; i < node_attempt_; ++i) factor *= policy.multiplier;
    absl::Duration backoff =
        std::min(policy.max_backoff, policy.initial_backoff * factor);
    // Deterministic jitter per (workflow, step, attempt).
    uint64_t h = std::hash<std::string>()(
        absl::StrCat(options_.workflow_id, "/", steps_, "/", node_attempt_));
    double u = static_cast<double>(h % 10007) / 10006.0;
    backoff = backoff * (1 + policy.jitter * (2 * u - 1));
    Emit(NodePhase::kRetrying, took, status);
    FlushHeld();  // the run leaves this thread until the retry
    retrying_ = true;
    if (options_.timer != nullptr && backoff > absl::ZeroDuration()) {
      options_.timer->After(backoff,
                            [this] { runner_->Post([this] { Loop(); }); });
    } else {
      runner_->Post([this] { Loop(); });
    }
    return true;
  }

  void OnNodeDone(absl::Status status) {
    node_status_ = std::move(status);
    int expected = kRunning;
    if (phase_.compare_exchange_strong(expected, kCompletedInline,
                                       std::memory_order_acq_rel)) {
      return;  // the node is still on the stack: Loop() continues
    }
    runner_->Post([this] {
      if (Advance()) Loop();
    });
  }

  // After a node finished: emits its event and picks the next node. Returns
  // false when the run has ended (and `this` is gone).
  bool Advance() {
    absl::Duration took = clock_->Now() - node_start_;
    const Node& node = graph_->nodes_[current_];
    if (IsInterrupt(node_status_) && options_.checkpoints != nullptr) {
      Emit(NodePhase::kInterrupted, took, node_status_);
      // The caller's result for the interrupted run takes the next sequence
      // number: reserve it, so the continuation starts after it.
      QueueFinal(current_, core::WorkflowPhase::kWaiting, /*reserve=*/1);
      Finish(node_status_);
      return false;
    }
    if (!node_status_.ok()) {
      if (MaybeRetry(node_status_, took)) return false;  // continues later
      Emit(NodePhase::kFailed, took, node_status_);
      Fail(node_status_);
      return false;
    }
    Emit(NodePhase::kCompleted, took, node_status_);
    last_node_ = current_;
    int next;
    if (node.router) {
      std::string name = node.router(state_);
      next = Lookup(node.targets, name);
      if (next == kUnknown) {
        Fail(absl::InternalError(absl::StrCat("router of '", node.name,
                                              "' returned undeclared target '",
                                              name, "'")));
        return false;
      }
    } else {
      next = node.fixed_next;
    }
    if (next == kEndIndex) {
      QueueFinal(next, core::WorkflowPhase::kCompleted, 0);
      Finish(absl::OkStatus());
      return false;
    }
    return Checkpoint(next);
  }

  // After a step, with `next` (not END) to run next: checkpoints it as the
  // durability mode asks and makes `next` current. Returns true when the
  // caller runs `next` at once (no checkpoints, kExit, kAsync: the write
  // overlaps the next step); false when the run goes on later (kSync: once
  // the checkpoint is durable) or has ended.
  bool Checkpoint(int next) {
    current_ = next;
    if (options_.checkpoints == nullptr ||
        options_.durability == Durability::kExit) {
      return true;
    }
    if (write_failed_.load(std::memory_order_acquire)) {
      Finish(absl::OkStatus());  // becomes the write's error
      return false;
    }
    if (options_.durability == Durability::kAsync) {
      // Held while the run goes on synchronously (see held_), so the steps
      // of a synchronous stretch reach the store together.
      if constexpr (SerializableState<State>) {
        held_.push_back(MakeCheckpoint(next, 0));
        if (held_.size() >= kMaxHeld) FlushHeld();
      } else {
        Queue(next, core::WorkflowPhase::kRunning, 0, false,
              [this](absl::Status s) { RecordWrite(s); });
      }
      return true;
    }
    Queue(next, core::WorkflowPhase::kRunning, 0, true, [this](absl::Status s) {
      RecordWrite(s);
      runner_->Post([this] {
        if (write_failed_.load(std::memory_order_acquire)) {
          Finish(absl::OkStatus());
        } else {
          Loop();
        }
      });
    });
    return false;
  }

  // Queues the checkpoint that ends the run (completed, failed, cancelled)
  // or its current part (waiting), in every durability mode. Finish waits
  // for it.
  void QueueFinal(int next, core::WorkflowPhase phase, uint64_t reserve,
                  std::string error = "") {
    if (options_.checkpoints == nullptr) return;
    FlushHeld();
    Queue(
        next, phase, reserve, options_.durability == Durability::kSync,
        [this](absl::Status s) { RecordWrite(s); }, std::move(error));
  }

  // "CODE: message" of a status, for a checkpoint's error.
  static std::string ErrorText(const absl::Status& s) {
    return absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message());
  }

  // Queues the held checkpoints (kAsync) in step order.
  void FlushHeld() {
    for (core::Checkpoint& c : held_) {
      options_.checkpoints->PutAsync(
          std::move(c), core::WorkflowPhase::kRunning, options_.keep_last,
          false, [this](absl::Status s) { RecordWrite(s); });
    }
    held_.clear();
  }

  // Queues the checkpoint after the current step (step = nodes completed);
  // `next` is the node to run next. `done` gets the write's outcome.
  void Queue(int next, core::WorkflowPhase phase, uint64_t reserve, bool sync,
             core::CheckpointStore::WriteDone done, std::string error = "") {
    if constexpr (SerializableState<State>) {
      core::Checkpoint c = MakeCheckpoint(next, reserve);
      c.error = std::move(error);
      options_.checkpoints->PutAsync(std::move(c), phase, options_.keep_last,
                                     sync, std::move(done));
    } else {
      std::move(done)(
          absl::FailedPreconditionError("checkpoints need a protobuf state"));
    }
  }

  // The checkpoint after the current step (step = nodes completed), with
  // `next` the node to run next; marks the run as having queued a write.
  core::Checkpoint MakeCheckpoint(int next, uint64_t reserve) {
    core::Checkpoint c;
    if constexpr (SerializableState<State>) {
      c.workflow_id = options_.workflow_id;
      c.step = static_cast<uint64_t>(steps_);
      if (c.step <= saved_step_ && saved_any_) c.step = saved_step_ + 1;
      c.node = last_node_ >= 0 && steps_ > 0 ? graph_->nodes_[last_node_].name
                                             : std::string();
      c.next_node =
          next == kEndIndex ? std::string(kEnd) : graph_->nodes_[next].name;
      c.last_sequence = sequence_ + reserve;
      c.time = clock_->Now();
      state_.SerializeToString(&c.state);
      if constexpr (std::is_base_of_v<google::protobuf::Message, State>) {
        // The one check before a state is stored (nodes sanitize what comes
        // from outside; this catches our own bugs): never an undecodable
        // checkpoint.
        std::string bad =
            core::FindInvalidUtf8InWire(State::descriptor(), c.state);
        if (!bad.empty()) {
          std::vector<std::string> paths;
          core::RepairUtf8(&state_, &paths);
          LOG(ERROR) << "workflow " << c.workflow_id << " step " << c.step
                     << ": invalid UTF-8 in " << absl::StrJoin(paths, ", ")
                     << " (a bug), repaired before the checkpoint";
          c.state.clear();
          state_.SerializeToString(&c.state);
        }
      }
      saved_step_ = c.step;
      saved_any_ = true;
      queued_ = true;
    }
    return c;
  }

  // Remembers the first failed checkpoint write: the run stops before its
  // next step and ends with that error. Called on a store thread.
  void RecordWrite(const absl::Status& s) {
    if (s.ok()) return;
    absl::MutexLock lock(&write_mu_);
    if (write_error_.ok()) write_error_ = s;
    write_failed_.store(true, std::memory_order_release);
  }

  // Ends the run with an error, recording it (and the state that failed)
  // when checkpoints are on.
  void Fail(absl::Status status) {
    QueueFinal(current_, core::WorkflowPhase::kFailed, 0, ErrorText(status));
    Finish(std::move(status));
  }

  // Ends the run once every checkpoint it queued is written.
  void Finish(absl::Status status) {
    if (!held_.empty()) FlushHeld();
    if (!queued_) {
      Complete(std::move(status));
      return;
    }
    queued_ = false;
    finish_status_ = std::move(status);
    // Usually the barrier is passed on a store thread: the run completes on
    // `runner_`. A store that writes synchronously passes it at once.
    finishing_.store(kRunning, std::memory_order_relaxed);
    options_.checkpoints->AfterWrites([this] {
      int expected = kRunning;
      if (finishing_.compare_exchange_strong(expected, kCompletedInline,
                                             std::memory_order_acq_rel)) {
        return;  // still inside AfterWrites: Finish completes
      }
      runner_->Post([this] { Complete(std::move(finish_status_)); });
    });
    int expected = kRunning;
    if (!finishing_.compare_exchange_strong(expected, kReturned,
                                            std::memory_order_acq_rel)) {
      Complete(std::move(finish_status_));
    }
  }

  void Complete(absl::Status status) {
    {
      absl::MutexLock lock(&write_mu_);
      if (!write_error_.ok()) {
        // A run that cannot promise durability stops with the write error;
        // a run that failed anyway keeps its own error.
        if (status.ok() || IsInterrupt(status)) {
          status = write_error_;
        } else {
          LOG(WARNING) << "workflow " << options_.workflow_id
                       << ": could not record how it ended: " << write_error_;
        }
      }
    }
    RunResult<State> result{
        std::move(status),
        std::move(state_),
        sequence_,
        steps_,
        last_node_ >= 0 ? graph_->nodes_[last_node_].name : std::string(),
        saved_any_ ? saved_step_ : 0};
    DoneFn done = std::move(done_);
    delete this;
    std::move(done)(std::move(result));
  }

  std::shared_ptr<const CompiledGraph<State>> graph_;
  RunOptions options_;
  State state_;
  TaskRunner* runner_;
  EventSink<State>* sink_;
  const core::Clock* clock_;
  DoneFn done_;
  int current_ = kEndIndex;
  int last_node_ = -1;
  int steps_ = 0;
  uint64_t sequence_ = 0;
  uint64_t saved_step_ = 0;
  int node_attempt_ = 0;
  bool retrying_ = false;
  bool saved_any_ = false;
  // Whether a checkpoint was queued since the last barrier.
  bool queued_ = false;
  // kAsync checkpoints not yet given to the store: held while the run's
  // nodes complete synchronously, queued together when a node goes
  // asynchronous, a retry waits, the run ends or kMaxHeld are held. So the
  // store writes a synchronous stretch in one batch, where a checkpoint
  // already pruned by keep_last costs nothing; a crash loses at most the
  // stretch, which resumes from the checkpoint before it.
  static constexpr size_t kMaxHeld = 16;
  std::vector<core::Checkpoint> held_;
  absl::Status finish_status_;
  // The first failed checkpoint write (set on a store thread).
  absl::Mutex write_mu_;
  absl::Status write_error_ ABSL_GUARDED_BY(write_mu_);
  std::atomic<bool> write_failed_{false};
  absl::Time node_start_;
  absl::Status node_status_;
  std::atomic<int> phase_{kRunning};
  std::atomic<int> finishing_{kRunning};  // Finish's barrier, like phase_
  absl::Status entry_status_;             // PickEntry's error
};

template <typename State>
void CompiledGraph<State>::Start(RunOptions options, State initial,
                                 TaskRunner* runner, EventSink<State>* sink,
                                 const core::Clock* clock, DoneFn done,
                                 RecordedFn recorded) const {
  const bool record = recorded != nullptr && options.checkpoints != nullptr;
  auto* run = new Run(this->shared_from_this(), std::move(options),
                      std::move(initial), runner, sink, clock, std::move(done));
  if (record) {
    if constexpr (SerializableState<State>) {
      run->BeginRecorded(std::move(recorded));
      return;
    }
  }
  if (recorded != nullptr) std::move(recorded)(absl::OkStatus());
  runner->Post([run] { run->Begin(); });
}

template <typename State>
absl::Status CompiledGraph<State>::Resume(
    RunOptions options, TaskRunner* runner, EventSink<State>* sink,
    const core::Clock* clock,
    DoneFn done) const requires SerializableState<State> {
  if (options.checkpoints == nullptr) {
    return absl::InvalidArgumentError("Resume needs a checkpoint store");
  }
  absl::StatusOr<core::WorkflowRecord> record =
      options.checkpoints->GetWorkflow(options.workflow_id);
  if (!record.ok()) return record.status();
  if (core::IsTerminal(record->phase)) {
    return absl::FailedPreconditionError(
        absl::StrCat("workflow ", options.workflow_id, " is ",
                     core::WorkflowPhaseName(record->phase)));
  }
  absl::StatusOr<core::Checkpoint> cp =
      options.checkpoints->Latest(options.workflow_id);
  if (!cp.ok()) return cp.status();
  State state;
  if (!DecodeCheckpointState(*cp, &state)) {
    return absl::DataLossError(absl::StrCat("checkpoint ", cp->step, " of ",
                                            options.workflow_id,
                                            " does not decode"));
  }
  int next = kEndIndex;
  if (cp->next_node != kEnd) {
    next = -3;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].name == cp->next_node) next = static_cast<int>(i);
    }
    if (next == -3) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint of ", options.workflow_id, " names node '",
                       cp->next_node, "', which this graph does not have"));
    }
  }
  if (next == kEndIndex) {
    return absl::FailedPreconditionError(
        absl::StrCat("workflow ", options.workflow_id, " already reached END"));
  }
  uint64_t step = cp->step, seq = cp->last_sequence;
  auto* run = new Run(this->shared_from_this(), std::move(options),
                      std::move(state), runner, sink, clock, std::move(done));
  runner->Post([run, next, step, seq] { run->BeginAt(next, step, seq); });
  return absl::OkStatus();
}

template <typename State>
absl::StatusOr<State> CompiledGraph<State>::GetState(
    core::CheckpointStore& store,
    absl::string_view workflow_id) requires SerializableState<State> {
  absl::StatusOr<core::Checkpoint> cp = store.Latest(workflow_id);
  if (!cp.ok()) return cp.status();
  State state;
  if (!DecodeCheckpointState(*cp, &state)) {
    return absl::DataLossError(
        absl::StrCat("latest checkpoint of ", workflow_id, " does not decode"));
  }
  return state;
}

template <typename State>
absl::StatusOr<State> CompiledGraph<State>::GetState(
    core::CheckpointStore& store, absl::string_view workflow_id,
    uint64_t step) requires SerializableState<State> {
  absl::StatusOr<core::Checkpoint> cp = store.Get(workflow_id, step);
  if (!cp.ok()) return cp.status();
  State state;
  if (!DecodeCheckpointState(*cp, &state)) {
    return absl::DataLossError(absl::StrCat("checkpoint ", step, " of ",
                                            workflow_id, " does not decode"));
  }
  return state;
}

template <typename State>
absl::Status CompiledGraph<State>::Fork(
    core::CheckpointStore& store, absl::string_view source_id, uint64_t step,
    absl::string_view new_id, const std::function<void(State&)>& edit,
    absl::Time now) requires SerializableState<State> {
  if (store.GetWorkflow(new_id).ok()) {
    return absl::AlreadyExistsError(
        absl::StrCat("workflow ", new_id, " already exists"));
  }
  absl::StatusOr<core::Checkpoint> cp = store.Get(source_id, step);
  if (!cp.ok()) return cp.status();
  if (cp->next_node == kEnd) {
    return absl::FailedPreconditionError(absl::StrCat(
        "checkpoint ", step, " of ", source_id, " is the end: nothing to run"));
  }
  State state;
  if (!DecodeCheckpointState(*cp, &state)) {
    return absl::DataLossError(absl::StrCat("checkpoint ", step, " of ",
                                            source_id, " does not decode"));
  }
  if (edit) edit(state);
  core::Checkpoint fork = *std::move(cp);
  fork.workflow_id = std::string(new_id);
  fork.parent_workflow_id = std::string(source_id);
  fork.parent_step = step;
  fork.time = now;
  fork.error.clear();
  fork.state.clear();
  state.SerializeToString(&fork.state);
  return store.Put(fork, core::WorkflowPhase::kRunning, 0, true);
}

template <typename State>
absl::Status CompiledGraph<State>::UpdateWaiting(
    core::CheckpointStore& store, absl::string_view workflow_id,
    uint64_t wait_step, const std::function<void(State&)>& edit, absl::Time now,
    bool sync, core::WorkflowPhase phase, int keep_last,
    uint64_t* new_step) requires SerializableState<State> {
  absl::StatusOr<core::WorkflowRecord> record = store.GetWorkflow(workflow_id);
  if (!record.ok()) return record.status();
  if (record->phase != core::WorkflowPhase::kWaiting) {
    return absl::FailedPreconditionError(
        absl::StrCat("workflow ", workflow_id, " is ",
                     core::WorkflowPhaseName(record->phase), ", not waiting"));
  }
  absl::StatusOr<core::Checkpoint> cp = store.Latest(workflow_id);
  if (!cp.ok()) return cp.status();
  if (cp->step != wait_step) {
    return absl::AbortedError(absl::StrCat(
        "workflow ", workflow_id, " waits at step ", cp->step, ", not at step ",
        wait_step, ": that wait was already answered"));
  }
  State state;
  if (!DecodeCheckpointState(*cp, &state)) {
    return absl::DataLossError(
        absl::StrCat("latest checkpoint of ", workflow_id, " does not decode"));
  }
  if (edit) edit(state);
  core::Checkpoint next = *std::move(cp);
  next.step += 1;
  next.node.clear();  // a state update, not a node step
  next.time = now;
  next.parent_workflow_id.clear();
  next.parent_step = 0;
  next.error.clear();
  next.state.clear();
  state.SerializeToString(&next.state);
  // The store refuses a step that is not past the last one: of two updates
  // that both read wait_step, the second writes nothing.
  absl::Status put = store.Put(next, phase, keep_last, sync);
  if (absl::IsFailedPrecondition(put)) {
    return absl::AbortedError(absl::StrCat("workflow ", workflow_id,
                                           ": the wait at step ", wait_step,
                                           " was already answered"));
  }
  if (put.ok() && new_step != nullptr) *new_step = next.step;
  return put;
}

template <typename State>
std::string CompiledGraph<State>::ToMermaid() const {
  std::string out = "flowchart TD\n";
  auto id = [&](int idx) -> std::string {
    return idx == kEndIndex ? "__end__([END])" : nodes_[idx].name;
  };
  absl::StrAppend(&out, "  __start__([START])\n");
  if (entry_router_) {
    for (const auto& t : entry_targets_) {
      absl::StrAppend(&out, "  __start__ -.-> ", id(t.second), "\n");
    }
  } else {
    absl::StrAppend(&out, "  __start__ --> ", id(entry_), "\n");
  }
  for (const auto& n : nodes_) {
    if (n.router) {
      for (const auto& t : n.targets) {
        absl::StrAppend(&out, "  ", n.name, " -.-> ", id(t.second), "\n");
      }
    } else {
      absl::StrAppend(&out, "  ", n.name, " --> ", id(n.fixed_next), "\n");
    }
  }
  return out;
}

}  // namespace reflexion::graph

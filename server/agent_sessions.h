#pragma once

// Agent sessions: Resolve streams opened with an AgentHello, grouped by
// cluster, and the requests workflows wait on at their agents.
//
// A request (action, observation, approval) belongs to its workflow: it is
// persisted with the waiting checkpoint (WorkflowState.agent_wait) and kept
// here while the workflow waits, assigned to exactly one live session of
// its cluster. When that session ends the request moves to another live
// session of the cluster, or waits for the next one to connect, which gets
// every unassigned request again with the same action id. Answers are
// applied once (a duplicate or a stale one is logged and ignored), each
// workflow's answers in order, on the pool — never in a gRPC reaction.
// Deadlines (action timeout, end of an observation window) are persisted
// and re-armed after a restart (Recover).

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/graph/task_runner.h"
#include "core/ports/checkpoint_store.h"
#include "core/ports/clock.h"
#include "reflexion/v1/reflexion.pb.h"
#include "server/workflow_runner.h"

namespace reflexion::server {

// What a Resolve stream that is a session offers the registry.
class AgentStream {
 public:
  virtual ~AgentStream() = default;
  // Queues `message` on the stream; dropped once the stream is finished.
  // Never blocks, takes no lock of the registry's callers.
  virtual void SendToAgent(const reflexion::v1::ResolveResponse& message) = 0;
};

struct AgentSessionsOptions {
  // Results of workflows that ended while no session of their cluster was
  // live, kept per cluster until one connects; past this the oldest is
  // dropped (it stays readable with GetWorkflow) and counted.
  size_t max_undelivered_per_cluster = 1024;
  // Told to agents in AgentWelcome.
  absl::Duration action_timeout = absl::Seconds(300);
  absl::Duration report_interval = absl::Seconds(10);
};

struct AgentSessionsStats {
  int64_t sessions = 0;
  int64_t pending = 0;          // requests waiting on agents
  int64_t unassigned = 0;       // ... of which no live session holds
  int64_t answers = 0;          // action results applied
  int64_t duplicates = 0;       // results ignored (duplicate or stale)
  int64_t timeouts = 0;         // action requests that expired
  int64_t reports = 0;          // pod status reports applied
  int64_t undelivered = 0;      // results queued for absent clusters
  int64_t dropped_results = 0;  // ... dropped at the bound
};

// Thread-safe.
class AgentSessions {
 public:
  // Everything passed must outlive this object.
  AgentSessions(WorkflowRunner* runner, graph::TaskRunner* pool,
                graph::Timer* timer, const core::Clock* clock,
                AgentSessionsOptions options);
  ~AgentSessions();

  // Shutdown, after the server stopped and the runner drained: cancels the
  // deadlines (re-armed from the checkpoints at the next start), drops
  // answers not yet applied (agents re-send them) and waits for the ones
  // being applied.
  void Shutdown();

  // kInvalidArgument naming the field ("hello.cluster: ...").
  static absl::Status ValidateHello(const reflexion::v1::AgentHello& hello);

  // Registers a session of hello.cluster (validated) and returns its id.
  // Sends `welcome`, then every request of the cluster no other live
  // session holds, then the results that waited for the cluster.
  std::string Open(AgentStream* stream, const reflexion::v1::AgentHello& hello);
  // Unregisters a session (idempotent); nothing is sent to it afterwards.
  // Its requests move to another live session of the cluster, if any.
  void Close(const std::string& session_id);

  // Callbacks of a workflow of `cluster` (started on `session_id`, "" when
  // resumed): accepted/events go to that session while it lives, else to a
  // live session of the cluster; the final result likewise, or waits for
  // the cluster (bounded, see options).
  WorkflowCallbacks Callbacks(const std::string& cluster,
                              const std::string& session_id,
                              const std::string& request_id);
  // Callbacks for a workflow that waits here (e.g. an approval decided with
  // ResumeWorkflow); nullopt when it does not.
  std::optional<WorkflowCallbacks> CallbacksIfWaiting(
      const std::string& workflow_id);

  // WorkflowRunner's agent wait hook: registers the request and sends it.
  void OnWait(const reflexion::v1::WorkflowState& state, uint64_t step);

  // Answers from session `session_id`. kInvalidArgument naming the field
  // ("action_result.outcome: ...") for a malformed one; OK otherwise — an
  // answer for no pending request, a duplicate or another cluster's is
  // logged, counted and ignored.
  absl::Status OnActionResult(const std::string& session_id,
                              reflexion::v1::ActionResult result);
  absl::Status OnPodStatus(const std::string& session_id,
                           reflexion::v1::PodStatusReport report);

  // Startup: registers the requests of every workflow waiting at an agent
  // (from its latest checkpoint) and re-arms their deadlines.
  absl::Status Recover(core::CheckpointStore* checkpoints);

  // Workflows started on `session_id` that have not ended.
  int OpenWorkflows(const std::string& session_id);

  AgentSessionsStats Stats();
  // Tests: waits until `pred(stats)` holds or `timeout` passes.
  bool AwaitStats(const std::function<bool(const AgentSessionsStats&)>& pred,
                  absl::Duration timeout);

 private:
  enum class Kind { kAction, kObservation, kApproval };
  struct Session {
    std::string id;
    std::string cluster;
    AgentStream* stream = nullptr;
    int open = 0;      // workflows started on it, not ended
    int assigned = 0;  // requests it holds
  };
  struct Pending {
    Kind kind = Kind::kAction;
    std::string cluster;
    std::string request_id;
    std::string action_id;
    uint64_t wait_step = 0;
    reflexion::v1::ResolveResponse message;
    std::string assigned;  // session id; "" = none
    uint64_t timer = 0;
    bool answering = false;  // an answer is being applied
    absl::Time last_report = absl::InfinitePast();
    bool last_healthy = false;
  };
  struct Route {
    std::string cluster;
    std::string session;  // where its messages go; "" = choose
    std::string origin;   // the session it was started on
    std::string request_id;
  };

  // Runs `op` for `workflow_id` after every op queued before it for that
  // workflow (one at a time per workflow, on the pool).
  void Serialize(const std::string& workflow_id, std::function<void()> op);
  void RunOps(const std::string& workflow_id);
  void Expire(const std::string& workflow_id, const std::string& action_id);
  void Deliver(const std::string& workflow_id, const std::string& action_id,
               reflexion::v1::ActionResult result);
  void ApplyReport(const std::string& workflow_id,
                   reflexion::v1::PodStatusReport report);
  // Picks the live session of `cluster` holding the fewest requests.
  Session* PickLocked(const std::string& cluster)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AssignLocked(const std::string& workflow_id, Pending& p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UnassignLocked(Pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The session a workflow's messages go to now (null: none live).
  Session* RouteLocked(const std::string& workflow_id,
                       const std::string& cluster)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendLocked(Session* s, const reflexion::v1::ResolveResponse& m)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ErasePendingLocked(const std::string& workflow_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  WorkflowRunner* const runner_;
  graph::TaskRunner* const pool_;
  graph::Timer* const timer_;
  const core::Clock* const clock_;
  const AgentSessionsOptions options_;

  absl::Mutex mu_;
  uint64_t next_session_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
  // Session ids per cluster, in the order they connected.
  absl::flat_hash_map<std::string, std::vector<std::string>> by_cluster_
      ABSL_GUARDED_BY(mu_);
  // Requests by workflow id (a workflow waits on at most one).
  absl::flat_hash_map<std::string, Pending> pending_ ABSL_GUARDED_BY(mu_);
  // Workflows of sessions that have not ended (bounded by the runner's
  // in-flight limit plus the waiting ones).
  absl::flat_hash_map<std::string, Route> routes_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::deque<reflexion::v1::IncidentResult>>
      undelivered_ ABSL_GUARDED_BY(mu_);
  // Per-workflow op queues (Serialize).
  absl::flat_hash_map<std::string, std::deque<std::function<void()>>> ops_
      ABSL_GUARDED_BY(mu_);
  AgentSessionsStats stats_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Lets a deadline reach this registry only while it is not shut down.
  struct Alive {
    absl::Mutex mu;
    bool alive ABSL_GUARDED_BY(mu) = true;
  };
  std::shared_ptr<Alive> alive_ = std::make_shared<Alive>();
};

}  // namespace reflexion::server

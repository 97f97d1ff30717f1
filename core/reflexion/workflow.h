#pragma once

// The reflexion workflow: twelve nodes on the generic graph engine.
//
//   START -> analyze_error -> (deep_analysis ->) select_strategy
//   analyze_error -> undo (an operator's UndoAction) -> END
//   select_strategy -> policy | approval | human_escalation
//   approval -> policy (approved) | select_strategy (denied)
//   policy -> execute_fix (allowed, or a dry run on the agent)
//           | human_escalation (denied, shadow, dry run elsewhere)
//   execute_fix -> observe_outcome -> (undo on a regression ->) reflect
//     -> (meta_reflect ->) learn
//   execute_fix, observe_outcome -> select_strategy | human_escalation when
//     the agent refused, failed, timed out or dry-ran (not learned from)
//   learn -> END (resolved) | select_strategy (attempts left)
//          | human_escalation (attempts exhausted)
//   human_escalation -> END
//
// meta_reflect sits between reflect and learn so that the one atomic write
// of learn stores the better reflection's lessons.

#include <memory>
#include <optional>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/graph/graph.h"
#include "core/ports/audit_log.h"
#include "core/ports/checkpoint_store.h"
#include "core/ports/clock.h"
#include "core/ports/cluster_executor.h"
#include "core/ports/knowledge_store.h"
#include "core/ports/policy_state_store.h"
#include "core/ports/reflector.h"
#include "core/reflexion/policy.h"
#include "core/reflexion/selector.h"
#include "reflexion/v1/reflexion.pb.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Runs `reflector` on `request`; on any failure writes the heuristic
// reflection instead, with fallback_reason saying why. The reflection's
// strings are made valid UTF-8 and redacted (core/reflexion/redact.h)
// whichever reflector wrote them. `done` runs exactly once, on any thread.
void ReflectOrFallBack(
    Reflector* reflector, const ReflectionRequest& request,
    absl::AnyInvocable<void(reflexion::v1::Reflection) &&> done);

// What SimulateReflection reflects on: a synthetic attempt at the request's
// error type, its evidence taken as the pod's logs and analysed like a real
// incident's. kInvalidArgument naming the field (error_type required,
// strategy from the catalog, bounded sizes).
absl::StatusOr<ReflectionRequest> SyntheticReflectionRequest(
    const reflexion::v1::SimulateReflectionRequest& request,
    ReflectionDepth default_depth);

using WorkflowGraph = graph::CompiledGraph<reflexion::v1::WorkflowState>;
using WorkflowSink = graph::EventSink<reflexion::v1::WorkflowState>;
using WorkflowRunResult = graph::RunResult<reflexion::v1::WorkflowState>;

// Tunables of the workflow (config keys in parentheses).
struct WorkflowConfig {
  // Fix attempts per incident before escalation (workflow.max_retry_count).
  int max_attempts = 3;
  // Reflection quality below which meta_reflect runs
  // (reflexion.meta_reflection_threshold).
  double meta_quality_threshold = 0.5;
  // Meta-reflections allowed per workflow (reflexion.max_reflection_cycles).
  int max_reflection_cycles = 5;
  // Reflection depth (reflexion.reflection_depth).
  ReflectionDepth depth = ReflectionDepth::kMedium;
  // Strategy selection (reflexion.strategy_confidence_threshold, ...).
  SelectorOptions selector;
  // How long a fix is watched before it counts (workflow.observation_window).
  absl::Duration observation_window = absl::Seconds(120);
  // Agent sessions: how long an action request waits for its result before
  // the attempt fails with DEADLINE_EXCEEDED (executor.action_timeout) ...
  absl::Duration action_timeout = absl::Seconds(300);
  // ... and how often the agent reports pod status in an observation window
  // (executor.report_interval; at most a third of the window is asked for).
  absl::Duration report_interval = absl::Seconds(10);
  // Seed of Thompson sampling (reflexion.seed): with a fixed seed and the
  // same history, selections are reproducible.
  uint64_t seed = 0;
  // Lessons from episodic memory fed to analysis and reflection.
  int lessons = 3;
  // Node executions allowed per workflow.
  int recursion_limit = 100;
  // A reflection's proposed change becomes a new strategy version only when
  // the strategy has at least this many trials on the signature
  // (reflexion.min_trials_for_change) ...
  int min_trials_for_change = 3;
  // ... and its posterior mean there is below this
  // (reflexion.max_mean_for_change).
  double max_mean_for_change = 0.6;
  // Automatic rollback in learn (core/reflexion/version_judge.h): a learned
  // version with at least this many trials whose success rate is below its
  // parent's with probability > 0.95 is rolled back
  // (reflexion.rollback_min_trials; 0 = never).
  int rollback_min_trials = 5;
  // When checkpoints are written (workflow.durability: sync | async | exit).
  graph::Durability durability = graph::Durability::kAsync;
  // Checkpoints kept per workflow (workflow.checkpoint_keep_last, 0 = all).
  int keep_last_checkpoints = 10;
  // Nodes that call the executor or the reflector (analyze_error,
  // execute_fix, observe_outcome, reflect, meta_reflect) fail after this
  // (workflow.execution_timeout) ...
  absl::Duration node_timeout = absl::Seconds(120);
  // ... and are retried on UNAVAILABLE / DEADLINE_EXCEEDED /
  // RESOURCE_EXHAUSTED up to this many attempts in all
  // (workflow.node_max_attempts), with exponential backoff and jitter. A
  // retried execute_fix reuses its idempotency key.
  int node_max_attempts = 3;
  // human_escalation waits for a human decision (ResumeWorkflow) instead of
  // ending the workflow (workflow.escalation_waits; needs checkpoints).
  bool escalation_waits = true;
};

// Builds and runs reflexion workflows. Thread-safe: any number of workflows
// at once. The store, executor, reflector and clock must outlive it.
// The etag of a wait (ResumeWorkflowRequest.etag): names the checkpoint step
// of the waiting workflow, so a decision answers one specific wait.
std::string WaitEtag(uint64_t checkpoint_step);
// The step an etag names; kInvalidArgument ("etag: ...") when malformed.
absl::StatusOr<uint64_t> ParseWaitEtag(absl::string_view etag);

// How a workflow starts, besides its incident (ReflexionWorkflow::Start).
struct StartOptions {
  // With a cluster: that cluster's agent is the executor (execute_fix and
  // observe_outcome wait durably for its answers, delivered with
  // AnswerAgent).
  reflexion::v1::SessionExecutor session;
  // Who submitted the incident (WorkflowState.principal).
  std::string principal;
  // The incident's admission (ReflexionWorkflow::Admit): a breaker that
  // tripped on it or holds it sends it straight to a human.
  std::optional<Admission> admission;
  // An operator's undo (UndoAction): the workflow applies this undo record's
  // action and ends (no selection, nothing learned; not admitted again).
  std::optional<reflexion::v1::UndoRecord> undo;
};

class ReflexionWorkflow {
 public:
  // `checkpoints` may be null (no checkpoints, no resume); `timer` may be
  // null (node timeouts not enforced, retries without backoff).
  ReflexionWorkflow(WorkflowConfig config, KnowledgeStore* store,
                    ClusterExecutor* executor, Reflector* reflector,
                    const Clock* clock, CheckpointStore* checkpoints = nullptr,
                    graph::Timer* timer = nullptr);

  // Compiles the graph and seeds the catalog's version-1 strategies into the
  // store where absent. Errors from the store are returned.
  absl::Status Init();

  // Only compiles the graph (no store access): enough for graph() and
  // ToMermaid(), e.g. in reflexionctl graph.
  absl::Status CompileGraph();

  using DoneFn = absl::AnyInvocable<void(WorkflowRunResult) &&>;

  // Starts a workflow for a validated incident and returns at once. Nodes
  // run on `runner`; events go to `sink` (may be null); `done` runs once at
  // the end. `ordinal` (the caller's count of workflows) seeds Thompson
  // sampling together with config().seed, so a sequence of incidents
  // replays identically. Init() must have succeeded.
  // `cancel` (may be null) cancels the run when set. `recorded` (may be
  // null) is called once the workflow is durably recorded, before its first
  // event (see CompiledGraph::Start); on an error the run ends with it.
  // `start` names the session, the submitter and the admission.
  void Start(std::string workflow_id, reflexion::v1::Incident incident,
             uint64_t ordinal, graph::TaskRunner* runner, WorkflowSink* sink,
             DoneFn done,
             std::shared_ptr<const std::atomic<bool>> cancel = nullptr,
             WorkflowGraph::RecordedFn recorded = nullptr,
             const StartOptions& start = {}) const;

  // Safety: the policy consulted before every action, and the audit log
  // written before each action request leaves the service (its outcome
  // after). Either may be null: every action allowed in enforce mode /
  // nothing audited. Set before any workflow runs; both must outlive this
  // object.
  // `policy_state` (may be null) keeps the open breakers across restarts:
  // saved whenever one trips here (the caller saves on a clear).
  // `local_policy` (may be null: `policy`) decides for incidents that run
  // on the server's own executor rather than an agent session (App: the
  // simulated cluster's, without rate limits and breakers).
  void SetSafety(Policy* policy, AuditLog* audit,
                 PolicyStateStore* policy_state = nullptr,
                 Policy* local_policy = nullptr) {
    policy_ = policy;
    audit_ = audit;
    policy_state_ = policy_state;
    local_policy_ = local_policy != nullptr ? local_policy : policy;
  }
  Policy* policy() const { return policy_; }
  AuditLog* audit() const { return audit_; }
  PolicyStateStore* policy_state() const { return policy_state_; }

  // Admission of a validated incident before its workflow starts: the
  // namespace lists and mode `off` refuse it (kPermissionDenied, the
  // policy's reason), the blast-radius breakers count it. Audits a trip.
  // Without a policy everything is admitted.
  absl::StatusOr<Admission> Admit(const reflexion::v1::Incident& incident,
                                  absl::string_view cluster,
                                  absl::string_view principal,
                                  absl::string_view workflow_id) const;

  // What the policy knows about an incident (cluster "" = the policy's
  // default cluster).
  IncidentScope ScopeOf(const reflexion::v1::Incident& incident,
                        absl::string_view cluster,
                        absl::string_view signature = "") const;

  // Continues an interrupted workflow from its latest checkpoint (after a
  // crash). Errors as CompiledGraph::Resume; kFailedPrecondition when
  // checkpointing is disabled.
  absl::Status Resume(
      std::string workflow_id, graph::TaskRunner* runner, WorkflowSink* sink,
      DoneFn done,
      std::shared_ptr<const std::atomic<bool>> cancel = nullptr) const;

  // Records a human decision for a workflow waiting in human_escalation
  // (durably: fsync'd with durability kSync); Resume then continues it.
  // `etag` names the wait it answers (WaitEtag of the waiting checkpoint's
  // step). kInvalidArgument for a malformed etag, a decision without a kind
  // or a retry naming no catalog strategy; kAborted when that wait was
  // already answered (of concurrent decisions exactly one is recorded);
  // kFailedPrecondition when it is not waiting (or checkpointing is off);
  // kNotFound for an unknown id.
  absl::Status Decide(const std::string& workflow_id, absl::string_view etag,
                      const reflexion::v1::HumanDecision& decision) const;

  // Edits the agent wait of a workflow waiting at checkpoint `wait_step`
  // (an action result, a pod status report, the deadline) and records it as
  // a new checkpoint — kRunning when `resume` (Resume then continues it),
  // else still kWaiting (a report inside an observation window). Returns the
  // new checkpoint's step. kAborted for a stale step (answered meanwhile),
  // kFailedPrecondition when not waiting.
  absl::StatusOr<uint64_t> AnswerAgent(
      const std::string& workflow_id, uint64_t wait_step,
      const std::function<void(reflexion::v1::AgentWait&)>& edit,
      bool resume) const;

  // Creates workflow `new_id` from checkpoint `step` of `source_id` (see
  // CompiledGraph::Fork) as a workflow of its own: its id, start time and
  // Thompson seed are new. A non-empty `strategy` (any catalog strategy) is
  // used by its next strategy selection with one more attempt allowed, or,
  // forked where human_escalation runs next, delivered as a RETRY decision.
  // Resume runs it. kInvalidArgument for a strategy outside the catalog,
  // kNotFound for an unknown workflow or pruned step, kFailedPrecondition
  // for the end checkpoint or when checkpointing is disabled,
  // kAlreadyExists when `new_id` exists. `ordinal` seeds its Thompson
  // sampling as in Start. `approved_by` (the operator naming `strategy`)
  // is kept in WorkflowState.approved_by (and the RETRY's decided_by).
  absl::Status Fork(const std::string& source_id, uint64_t step,
                    const std::string& new_id, const std::string& strategy,
                    uint64_t ordinal,
                    const std::string& approved_by = "") const;

  // Analysis only (DiagnoseIncident): the analysis of a validated incident
  // from its own facts (no executor is asked, nothing is executed, learned
  // or stored; deep analysis when the shallow one cannot classify it), the
  // candidate strategies with their current posteriors and tiers, and what
  // the workflow would do first: the eligible candidate with the highest
  // posterior mean (no Thompson draw), or an escalation. Store errors are
  // returned. Thread-safe.
  // `known` holds facts an executor (an agent) reports about the pod's
  // surroundings — the last healthy image, existing pull secrets, a recent
  // rollout — merged under the usual precedence (incident facts win).
  absl::StatusOr<reflexion::v1::DiagnoseIncidentResponse> Diagnose(
      const reflexion::v1::Incident& incident,
      const reflexion::v1::Diagnosis& known = {}) const;

  const WorkflowGraph& graph() const { return *graph_; }
  const WorkflowConfig& config() const { return config_; }

 private:
  using State = reflexion::v1::WorkflowState;

  void AnalyzeError(State& s, graph::NodeDone done) const;
  void DeepAnalysis(State& s, graph::NodeDone done) const;
  void SelectStrategyNode(State& s, graph::NodeDone done) const;
  void ExecuteFix(State& s, graph::NodeDone done) const;
  void ObserveOutcome(State& s, graph::NodeDone done) const;
  void Reflect(State& s, graph::NodeDone done) const;
  void MetaReflect(State& s, graph::NodeDone done) const;
  void Learn(State& s, graph::NodeDone done) const;
  void HumanEscalation(State& s, graph::NodeDone done) const;
  void Approval(State& s, graph::NodeDone done) const;
  // execute_fix / observe_outcome when the agent is the executor: durable
  // waits on the agent's answers (WorkflowState.agent_wait).
  void ExecuteOnAgent(State& s, graph::NodeDone done) const;
  // The policy's decision about the selected action (node "policy").
  void PolicyNode(State& s, graph::NodeDone done) const;
  // The policy deciding for a workflow (on an agent session or not).
  Policy* PolicyFor(bool session) const {
    return session ? policy_ : local_policy_;
  }
  // Applies the inverse of the attempt's action (node "undo").
  void UndoNode(State& s, graph::NodeDone done) const;
  // Asks the agent for `action` and waits durably: true when it interrupted
  // (done was called), false when the agent's answer (or its expiry) is in
  // s.agent_wait().
  bool AwaitAgent(State& s, const reflexion::v1::Action& action,
                  graph::NodeDone& done) const;
  // The audit entry of an action of workflow `s` (kind, action, mode).
  reflexion::v1::AuditEntry AuditOf(const State& s,
                                    reflexion::v1::AuditEntry::Kind kind,
                                    const reflexion::v1::Action& action) const;
  // Audits the outcome of `action` (refers to s.audit_seq()).
  absl::Status AuditOutcome(const State& s, const reflexion::v1::Action& action,
                            absl::string_view outcome,
                            absl::string_view detail) const;
  // Appends to the audit log (OK without one).
  absl::StatusOr<uint64_t> Audit(reflexion::v1::AuditEntry entry) const;
  void ObserveOnAgent(State& s, graph::NodeDone done) const;
  void FinishObservation(State& s) const;

  // Fills lessons and the recovery-time baseline of the signature.
  absl::Status LoadMemory(State& s) const;
  // What each strategy did on the signatures related to the analysis' one
  // (RelatedRecordsOf, for HierarchicalPrior).
  // Empty without a scan when no strategy of the family (or only `only`)
  // lacks a posterior in `known` and a prior from its cause.
  absl::StatusOr<RelatedRecords> RelatedOf(
      const v1::Analysis& analysis,
      const absl::flat_hash_map<std::string, v1::StrategyStats>& known,
      absl::string_view only = "") const;
  ReflectionRequest MakeReflectionRequest(const State& s, bool meta) const;
  graph::RunOptions Options(
      std::string workflow_id,
      std::shared_ptr<const std::atomic<bool>> cancel) const;
  void RunReflector(State& s, bool meta, graph::NodeDone done) const;

  WorkflowConfig config_;
  KnowledgeStore* store_;
  ClusterExecutor* executor_;
  Reflector* reflector_;
  const Clock* clock_;
  CheckpointStore* checkpoints_;
  graph::Timer* timer_;
  Policy* policy_ = nullptr;
  AuditLog* audit_ = nullptr;
  PolicyStateStore* policy_state_ = nullptr;
  Policy* local_policy_ = nullptr;
  std::shared_ptr<const WorkflowGraph> graph_;
};

}  // namespace reflexion::core

#include "core/reflexion/workflow.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/analyzer.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/facts.h"
#include "core/reflexion/heuristic_reflector.h"
#include "core/reflexion/pod_object.h"
#include "core/reflexion/redact.h"
#include "core/reflexion/reflection_quality.h"
#include "core/reflexion/regression.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/version_judge.h"
#include "core/status_macros.h"
#include "glog/logging.h"

namespace reflexion::core {
namespace {

using reflexion::v1::WorkflowState;

constexpr char kAnalyze[] = "analyze_error";
constexpr char kDeep[] = "deep_analysis";
constexpr char kSelect[] = "select_strategy";
constexpr char kExecute[] = "execute_fix";
constexpr char kObserve[] = "observe_outcome";
constexpr char kReflect[] = "reflect";
constexpr char kMeta[] = "meta_reflect";
constexpr char kLearn[] = "learn";
constexpr char kEscalate[] = "human_escalation";
constexpr char kApproval[] = "approval";
constexpr char kPolicy[] = "policy";
constexpr char kUndo[] = "undo";

// The policy stopped the attempt before anything ran (a denial, a dry run
// or shadow mode off the agent): a human takes over.
bool PolicyStopped(const WorkflowState& s) {
  return s.policy().has_action() &&
         s.policy().verdict() != v1::PolicyDecision::VERDICT_ALLOW &&
         !(s.policy().verdict() == v1::PolicyDecision::VERDICT_DRY_RUN &&
           s.has_session());
}

// A breaker held the incident at admission: no automated action at all.
bool HeldByBreaker(const WorkflowState& s) {
  return !s.policy().has_action() && (s.policy().rule() == "breaker_tripped" ||
                                      s.policy().rule() == "breaker_open");
}

// The audit outcome of an agent's answer.
std::string AgentOutcome(const v1::AgentWait& w) {
  if (!w.has_result()) return "timed_out";
  switch (w.result().outcome()) {
    case v1::ActionResult::OUTCOME_APPLIED:
      return "applied";
    case v1::ActionResult::OUTCOME_DRY_RUN:
      return "dry_run";
    case v1::ActionResult::OUTCOME_REFUSED:
      return "refused";
    default:
      return "failed";
  }
}

// An operator asked for an undo (UndoAction): the workflow only applies it.
bool OperatorUndo(const WorkflowState& s) {
  return s.has_undo() && s.undo().requested_by() != "policy";
}

// After a failed attempt whose outcome could not be observed (the agent
// refused, failed, timed out): the next attempt, or a human.
std::string AfterAttemptError(const WorkflowState& s) {
  if (s.execution().dry_run()) return kEscalate;
  return s.attempt() < s.max_attempts() ? kSelect : kEscalate;
}

// Bounded copies of what an agent reports.
constexpr size_t kMaxAgentMessage = 4096;
constexpr int kMaxAgentChanges = 32;

// Episodes read to build a signature's memory (lessons, recovery baseline).
constexpr int kMemoryEpisodes = 20;

// Client or port bytes quoted in a status message or evidence.
constexpr size_t kMaxQuoted = 256;

// A port's error as a node's error: the graph records its message in the
// checkpoint and the events, so it must be valid UTF-8 too.
absl::Status ForeignStatus(absl::Status s) {
  if (IsValidUtf8(s.message())) return s;
  return absl::Status(s.code(), ToValidUtf8(s.message()));
}

// What an executor or a reflector returns is foreign bytes: every string
// must be valid UTF-8 before it enters the state that is checkpointed and
// streamed. Repairs (U+FFFD) and says where.
template <typename M>
void RepairForeign(M& m, absl::string_view from, const std::string& id) {
  std::vector<std::string> paths;
  if (RepairUtf8(&m, &paths) > 0) {
    LOG(WARNING) << id << ": invalid UTF-8 from " << from << " replaced in "
                 << absl::StrJoin(paths, ", ");
  }
}

}  // namespace

ReflexionWorkflow::ReflexionWorkflow(WorkflowConfig config,
                                     KnowledgeStore* store,
                                     ClusterExecutor* executor,
                                     Reflector* reflector, const Clock* clock,
                                     CheckpointStore* checkpoints,
                                     graph::Timer* timer)
    : config_(std::move(config)),
      store_(store),
      executor_(executor),
      reflector_(reflector),
      clock_(clock),
      checkpoints_(checkpoints),
      timer_(timer) {}

absl::Status ReflexionWorkflow::Init() {
  REFLEXION_RETURN_IF_ERROR(CompileGraph());
  // Seed the catalog's strategies where the store has none of that name.
  REFLEXION_ASSIGN_OR_RETURN(std::vector<v1::Strategy> existing,
                             store_->ListStrategies());
  absl::flat_hash_set<std::string> have;
  for (const auto& s : existing) have.insert(s.name());
  for (const v1::Strategy& s : DefaultStrategies(clock_->Now())) {
    if (have.contains(s.name())) continue;
    absl::Status st = store_->PutStrategyVersion(s);
    // Another process may have seeded it between our read and write.
    if (!st.ok() && !absl::IsFailedPrecondition(st)) return st;
  }
  return absl::OkStatus();
}

absl::Status ReflexionWorkflow::CompileGraph() {
  graph::GraphBuilder<State> b;
  auto bind = [this](void (ReflexionWorkflow::*fn)(State&, graph::NodeDone)
                         const) {
    return [this, fn](State& s, graph::NodeDone done) {
      (this->*fn)(s, std::move(done));
    };
  };
  // Nodes that wait on the executor or the reflector get a timeout and
  // retries on transient errors.
  graph::NodeOptions io;
  io.timeout = config_.node_timeout;
  io.retry.max_attempts = std::max(1, config_.node_max_attempts);
  io.retry.initial_backoff = absl::Milliseconds(200);
  io.retry.max_backoff = absl::Seconds(10);
  b.AddNode(kAnalyze, bind(&ReflexionWorkflow::AnalyzeError), io)
      .AddNode(kDeep, bind(&ReflexionWorkflow::DeepAnalysis))
      .AddNode(kSelect, bind(&ReflexionWorkflow::SelectStrategyNode))
      .AddNode(kExecute, bind(&ReflexionWorkflow::ExecuteFix), io)
      .AddNode(kObserve, bind(&ReflexionWorkflow::ObserveOutcome), io)
      .AddNode(kReflect, bind(&ReflexionWorkflow::Reflect), io)
      .AddNode(kMeta, bind(&ReflexionWorkflow::MetaReflect), io)
      .AddNode(kLearn, bind(&ReflexionWorkflow::Learn))
      .AddNode(kEscalate, bind(&ReflexionWorkflow::HumanEscalation))
      .AddNode(kApproval, bind(&ReflexionWorkflow::Approval))
      .AddNode(kPolicy, bind(&ReflexionWorkflow::PolicyNode))
      .AddNode(kUndo, bind(&ReflexionWorkflow::UndoNode), io);
  b.AddEdge(std::string(graph::kStart), kAnalyze);
  b.AddConditionalEdges(
      kAnalyze,
      [](const State& s) {
        if (OperatorUndo(s)) return std::string(kUndo);
        return std::string(NeedsDeepAnalysis(s.analysis()) ? kDeep : kSelect);
      },
      {kDeep, kSelect, kUndo});
  b.AddEdge(kDeep, kSelect);
  b.AddConditionalEdges(kSelect,
                        [](const State& s) {
                          if (!s.no_candidate_reason().empty()) {
                            return std::string(kEscalate);
                          }
                          return std::string(s.selection().needs_approval()
                                                 ? kApproval
                                                 : kPolicy);
                        },
                        {kPolicy, kEscalate, kApproval});
  b.AddConditionalEdges(kApproval,
                        [](const State& s) {
                          // Denied: choose again without it (it is in
                          // denied_strategies).
                          const auto& denied = s.denied_strategies();
                          bool was_denied =
                              std::find(denied.begin(), denied.end(),
                                        s.selection().strategy().name()) !=
                              denied.end();
                          return std::string(was_denied ? kSelect : kPolicy);
                        },
                        {kPolicy, kSelect});
  b.AddConditionalEdges(
      kPolicy,
      [](const State& s) {
        return std::string(PolicyStopped(s) ? kEscalate : kExecute);
      },
      {kExecute, kEscalate});
  b.AddConditionalEdges(kExecute,
                        [](const State& s) {
                          return s.attempt_error().empty()
                                     ? std::string(kObserve)
                                     : AfterAttemptError(s);
                        },
                        {kObserve, kSelect, kEscalate});
  b.AddConditionalEdges(kObserve,
                        [](const State& s) {
                          if (!s.attempt_error().empty()) {
                            return AfterAttemptError(s);
                          }
                          // A regression: its inverse first.
                          return std::string(s.has_undo() ? kUndo : kReflect);
                        },
                        {kReflect, kSelect, kEscalate, kUndo});
  b.AddConditionalEdges(kUndo,
                        [](const State& s) {
                          return OperatorUndo(s) ? std::string(graph::kEnd)
                                                 : std::string(kReflect);
                        },
                        {kReflect, std::string(graph::kEnd)});
  const double meta_threshold = config_.meta_quality_threshold;
  const int max_cycles = config_.max_reflection_cycles;
  b.AddConditionalEdges(
      kReflect,
      [meta_threshold, max_cycles](const State& s) {
        bool low = s.reflection().quality() < meta_threshold;
        return std::string(low && s.meta_reflections() < max_cycles ? kMeta
                                                                    : kLearn);
      },
      {kMeta, kLearn});
  b.AddEdge(kMeta, kLearn);
  b.AddConditionalEdges(kLearn,
                        [](const State& s) {
                          if (s.observation().success())
                            return std::string(graph::kEnd);
                          if (s.attempt() < s.max_attempts())
                            return std::string(kSelect);
                          return std::string(kEscalate);
                        },
                        {std::string(graph::kEnd), kSelect, kEscalate});
  b.AddConditionalEdges(kEscalate,
                        [](const State& s) {
                          // A human approved another attempt: select it.
                          return std::string(s.approved_strategy().empty()
                                                 ? graph::kEnd
                                                 : kSelect);
                        },
                        {std::string(graph::kEnd), kSelect});
  REFLEXION_ASSIGN_OR_RETURN(graph_, b.Compile());
  return absl::OkStatus();
}

void ReflexionWorkflow::Start(std::string workflow_id, v1::Incident incident,
                              uint64_t ordinal, graph::TaskRunner* runner,
                              WorkflowSink* sink, DoneFn done,
                              std::shared_ptr<const std::atomic<bool>> cancel,
                              WorkflowGraph::RecordedFn recorded,
                              const StartOptions& start) const {
  CHECK(graph_ != nullptr) << "ReflexionWorkflow::Init() was not called";
  State state;
  state.set_workflow_id(workflow_id);
  *state.mutable_incident() = std::move(incident);
  const v1::SessionExecutor& session = start.session;
  if (!session.cluster().empty()) *state.mutable_session() = session;
  state.set_principal(start.principal.empty() ? std::string("anonymous")
                                              : start.principal);
  state.set_cluster(!session.cluster().empty() ? session.cluster()
                    : policy_ != nullptr ? policy_->config().default_cluster
                                         : std::string());
  if (start.admission.has_value() && (start.admission->tripped.has_value() ||
                                      start.admission->held_by_breaker)) {
    // A blast-radius breaker: no automated action for this incident.
    *state.mutable_policy() = start.admission->decision;
    v1::Escalation& esc = *state.mutable_escalation();
    esc.set_reason(start.admission->decision.reason());
  }
  if (start.undo.has_value()) *state.mutable_undo() = *start.undo;
  state.set_max_attempts(std::max(1, config_.max_attempts));
  state.set_rng_seed(
      StableHash(absl::StrCat("workflow/", ordinal), config_.seed));
  *state.mutable_started_at() = ToProto(clock_->Now());
  graph_->Start(Options(std::move(workflow_id), std::move(cancel)),
                std::move(state), runner, sink, clock_, std::move(done),
                std::move(recorded));
}

namespace {

// The pod's controller, from its ownerReferences (controller: true first).
v1::WorkloadRef OwnerOf(const v1::Incident& incident) {
  v1::WorkloadRef ref;
  for (const PodOwner& o : ReadPodOwners(incident.pod())) {
    if (o.kind.empty() || o.name.empty()) continue;
    const bool controller = o.controller.value_or(false);
    if (ref.kind().empty() || controller) {
      ref.set_kind(std::string(ClipUtf8(o.kind, 64)));
      ref.set_name(std::string(ClipUtf8(o.name, 253)));
    }
    if (controller) break;
  }
  return ref;
}

std::string WorkloadName(const IncidentScope& scope) {
  if (scope.workload_kind.empty()) return std::string();
  return absl::StrCat(scope.workload_kind, "/", scope.workload_name);
}

constexpr size_t kMaxAuditDetail = 1024;

}  // namespace

IncidentScope ReflexionWorkflow::ScopeOf(const v1::Incident& incident,
                                         absl::string_view cluster,
                                         absl::string_view signature) const {
  IncidentScope scope;
  scope.cluster = std::string(cluster);
  if (scope.cluster.empty() && policy_ != nullptr) {
    scope.cluster = policy_->config().default_cluster;
  }
  scope.namespace_ = incident.namespace_();
  scope.pod = incident.pod_name();
  const v1::WorkloadRef owner = OwnerOf(incident);
  scope.workload_kind = owner.kind();
  scope.workload_name = owner.name();
  if (std::optional<std::string> node =
          StringAt(incident.pod(), "spec.nodeName")) {
    scope.node = std::string(ClipUtf8(*node, 253));
  }
  const IncidentFacts facts = ExtractFacts(incident);
  absl::flat_hash_set<std::string> refs;
  auto add_ref = [&](const ConfigRefFacts& r) {
    if (r.kind.empty() || r.name.empty() || refs.size() >= 16) return;
    std::string ref = absl::StrCat(r.kind, "/", ClipUtf8(r.name, 253));
    if (refs.insert(ref).second) scope.config_refs.push_back(std::move(ref));
  };
  for (const ConfigRefFacts& r : facts.pod.volume_refs) add_ref(r);
  for (const ContainerFacts& c : facts.containers) {
    for (const ConfigRefFacts& r : c.config_refs) add_ref(r);
    if (scope.image.empty() && !c.init && !c.image.empty()) {
      scope.image = std::string(ClipUtf8(c.image, 512));
    }
  }
  scope.signature = signature.empty()
                        ? Analyze(incident, v1::Diagnosis(), false).signature()
                        : std::string(signature);
  return scope;
}

absl::StatusOr<Admission> ReflexionWorkflow::Admit(
    const v1::Incident& incident, absl::string_view cluster,
    absl::string_view principal, absl::string_view workflow_id) const {
  Admission admission;
  admission.decision.set_verdict(v1::PolicyDecision::VERDICT_ALLOW);
  admission.decision.set_mode(v1::POLICY_MODE_ENFORCE);
  admission.decision.set_rule("allowed");
  Policy* policy = PolicyFor(!cluster.empty());
  if (policy == nullptr) return admission;
  IncidentScope scope = ScopeOf(incident, cluster);
  scope.workflow_id = std::string(workflow_id);
  admission = policy->Admit(scope);
  if (admission.decision.verdict() == v1::PolicyDecision::VERDICT_DENY) {
    return absl::PermissionDeniedError(
        absl::StrCat("incident.namespace: ", admission.decision.reason()));
  }
  if (admission.tripped.has_value()) {
    const v1::BreakerState& b = *admission.tripped;
    v1::PolicyDecision& d = admission.decision;
    d.set_verdict(v1::PolicyDecision::VERDICT_DENY);
    d.set_rule("breaker_tripped");
    d.set_scope(b.scope());
    d.set_reason(
        absl::StrCat("blast-radius breaker tripped for ", b.scope(), ": ",
                     b.incidents(), " incidents in ",
                     absl::FormatDuration(absl::Seconds(b.window().seconds())),
                     "; suspected common cause: ", b.suspected_cause(),
                     ". Automated actions there stop until a human clears it "
                     "(reflexionctl clear-breaker ",
                     b.scope(), ")"));
    v1::AuditEntry e;
    e.set_kind(v1::AuditEntry::KIND_BREAKER_TRIPPED);
    *e.mutable_time() = ToProto(clock_->Now());
    e.set_principal(std::string(principal));
    e.set_cluster(scope.cluster);
    e.set_namespace_(scope.namespace_);
    e.set_workload(WorkloadName(scope));
    e.set_pod(scope.pod);
    e.set_workflow_id(scope.workflow_id);
    e.set_decider(v1::AuditEntry::DECIDER_POLICY);
    e.set_mode(policy->ModeFor(scope.cluster, scope.namespace_));
    e.set_detail(std::string(ClipUtf8(d.reason(), kMaxAuditDetail)));
    REFLEXION_RETURN_IF_ERROR(Audit(std::move(e)).status());
    if (policy_state_ != nullptr) {
      // Kept open across a restart. The trip itself is audited; a failure
      // to persist it is logged and the breaker holds in memory anyway.
      if (absl::Status st =
              policy_state_->SaveBreakers(policy->SnapshotBreakers());
          !st.ok()) {
        LOG(ERROR) << "the tripped breaker for " << b.scope()
                   << " was not persisted: " << st;
      }
    }
  } else if (admission.held_by_breaker) {
    v1::PolicyDecision& d = admission.decision;
    d.set_verdict(v1::PolicyDecision::VERDICT_DENY);
    d.set_rule("breaker_open");
    std::string why;
    for (const v1::BreakerState& b : policy->OpenBreakers()) {
      if (b.scope() == scope.cluster ||
          b.scope() == absl::StrCat(scope.cluster, "/", scope.namespace_)) {
        d.set_scope(b.scope());
        why = absl::StrCat(
            " (tripped at ",
            absl::FormatTime(absl::RFC3339_sec, FromProto(b.tripped_at()),
                             absl::UTCTimeZone()),
            "; suspected common cause: ", b.suspected_cause(), ")");
        break;
      }
    }
    d.set_reason(absl::StrCat(
        "held: the blast-radius breaker for ", d.scope(), " is open", why,
        "; no automated action until a human clears it; this incident is "
        "part of the aggregated escalation"));
  }
  return admission;
}

v1::AuditEntry ReflexionWorkflow::AuditOf(const State& s,
                                          v1::AuditEntry::Kind kind,
                                          const v1::Action& action) const {
  v1::AuditEntry e;
  e.set_kind(kind);
  *e.mutable_time() = ToProto(clock_->Now());
  e.set_principal(s.principal());
  e.set_cluster(s.cluster());
  e.set_namespace_(action.namespace_().empty() ? s.incident().namespace_()
                                               : action.namespace_());
  const v1::WorkloadRef owner = OwnerOf(s.incident());
  if (!owner.kind().empty()) {
    e.set_workload(absl::StrCat(owner.kind(), "/", owner.name()));
  }
  e.set_pod(action.pod_name().empty() ? s.incident().pod_name()
                                      : action.pod_name());
  e.set_workflow_id(s.workflow_id());
  e.set_action_id(action.idempotency_key());
  *e.mutable_action() = action;
  e.set_tier(action.tier());
  if (!s.approved_by().empty()) {
    e.set_decider(v1::AuditEntry::DECIDER_HUMAN);
    e.set_decided_by(s.approved_by());
  } else if (action.type() == v1::ACTION_TYPE_UNDO) {
    e.set_decider(s.undo().requested_by() == "policy"
                      ? v1::AuditEntry::DECIDER_POLICY
                      : v1::AuditEntry::DECIDER_HUMAN);
    if (e.decider() == v1::AuditEntry::DECIDER_HUMAN) {
      e.set_decided_by(s.undo().requested_by());
    }
  } else {
    e.set_decider(v1::AuditEntry::DECIDER_LEARNED);
  }
  e.set_mode(s.policy().mode() == v1::POLICY_MODE_UNSPECIFIED
                 ? v1::POLICY_MODE_ENFORCE
                 : s.policy().mode());
  return e;
}

absl::StatusOr<uint64_t> ReflexionWorkflow::Audit(v1::AuditEntry entry) const {
  if (audit_ == nullptr) return 0;
  entry.set_detail(std::string(ClipUtf8(entry.detail(), kMaxAuditDetail)));
  REFLEXION_ASSIGN_OR_RETURN(v1::AuditEntry written,
                             audit_->Append(std::move(entry)));
  return written.seq();
}

std::string WaitEtag(uint64_t checkpoint_step) {
  return absl::StrCat("w", checkpoint_step);
}

absl::StatusOr<uint64_t> ParseWaitEtag(absl::string_view etag) {
  uint64_t step = 0;
  if (etag.empty()) {
    return absl::InvalidArgumentError(
        "etag: is required (GetWorkflow's etag, or the WAITING result's): "
        "it names the wait the decision answers");
  }
  if (etag.size() > 21 || etag[0] != 'w' ||
      !absl::SimpleAtoi(etag.substr(1), &step)) {
    return absl::InvalidArgumentError(
        "etag: malformed (expected the etag GetWorkflow returned, e.g. w12)");
  }
  return step;
}

graph::RunOptions ReflexionWorkflow::Options(
    std::string workflow_id,
    std::shared_ptr<const std::atomic<bool>> cancel) const {
  graph::RunOptions o;
  o.cancel = std::move(cancel);
  o.workflow_id = std::move(workflow_id);
  o.recursion_limit = config_.recursion_limit;
  o.checkpoints = checkpoints_;
  o.durability = config_.durability;
  o.keep_last = config_.keep_last_checkpoints;
  o.timer = timer_;
  return o;
}

absl::Status ReflexionWorkflow::Resume(
    std::string workflow_id, graph::TaskRunner* runner, WorkflowSink* sink,
    DoneFn done, std::shared_ptr<const std::atomic<bool>> cancel) const {
  CHECK(graph_ != nullptr) << "ReflexionWorkflow::Init() was not called";
  if (checkpoints_ == nullptr) {
    return absl::FailedPreconditionError("checkpointing is disabled");
  }
  REFLEXION_ASSIGN_OR_RETURN(core::WorkflowRecord record,
                             checkpoints_->GetWorkflow(workflow_id));
  if (IsTerminal(record.phase)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "workflow ", workflow_id, " is ", WorkflowPhaseName(record.phase)));
  }
  REFLEXION_ASSIGN_OR_RETURN(
      State state, WorkflowGraph::GetState(*checkpoints_, workflow_id));
  if (state.has_session()) {
    // The agent is the executor: it re-reads the cluster itself, and every
    // pending request is re-sent to it.
    return graph_->Resume(Options(workflow_id, std::move(cancel)), runner, sink,
                          clock_, std::move(done));
  }
  // The executor may have restarted too (the simulated cluster always
  // does): a fresh diagnosis, a read, re-establishes its view of the pod
  // before the next step acts on it. The checkpointed analysis is kept.
  executor_->Diagnose(
      state.incident(),
      [this, workflow_id, runner, sink, state, cancel = std::move(cancel),
       done = std::move(done)](absl::StatusOr<v1::Diagnosis> dx) mutable {
        if (!dx.ok()) {
          LOG(WARNING) << "resuming " << workflow_id << ": diagnosis failed: "
                       << ToValidUtf8Clipped(dx.status().ToString(),
                                             kMaxQuoted);
        }
        // `done` must run exactly once, also when Resume refuses.
        auto holder = std::make_shared<DoneFn>(std::move(done));
        absl::Status s =
            graph_->Resume(Options(workflow_id, cancel), runner, sink, clock_,
                           [holder](WorkflowRunResult r) {
                             std::move (*holder)(std::move(r));
                           });
        if (!s.ok()) {
          LOG(WARNING) << "cannot resume " << workflow_id << ": " << s;
          std::move (*holder)(WorkflowRunResult{s, std::move(state), 0, 0, ""});
        }
      });
  return absl::OkStatus();
}

absl::StatusOr<RelatedRecords> ReflexionWorkflow::RelatedOf(
    const v1::Analysis& analysis,
    const absl::flat_hash_map<std::string, v1::StrategyStats>& known,
    absl::string_view only) const {
  // Only a strategy without a posterior here whose prior the cause does
  // not set borrows: without one, no scan of every posterior.
  bool borrows = false;
  for (const std::string& name : StrategiesFor(analysis.error_family())) {
    if (!only.empty() && name != only) continue;
    borrows |= !known.contains(name) &&
               !HasCausePrior(analysis.error_family(), analysis.cause(), name);
  }
  if (!borrows) return RelatedRecords();
  REFLEXION_ASSIGN_OR_RETURN(std::vector<v1::StrategyStats> all,
                             store_->GetStats(""));
  return RelatedRecordsOf(analysis, all);
}

absl::StatusOr<v1::DiagnoseIncidentResponse> ReflexionWorkflow::Diagnose(
    const v1::Incident& incident, const v1::Diagnosis& known) const {
  State s;
  *s.mutable_incident() = incident;
  *s.mutable_diagnosis() = known;
  *s.mutable_analysis() = Analyze(s.incident(), s.diagnosis(), false);
  if (NeedsDeepAnalysis(s.analysis())) {
    *s.mutable_analysis() = Analyze(s.incident(), s.diagnosis(), true);
  }
  REFLEXION_RETURN_IF_ERROR(LoadMemory(s));
  REFLEXION_ASSIGN_OR_RETURN(std::vector<v1::Strategy> strategies,
                             store_->ListStrategies());
  REFLEXION_ASSIGN_OR_RETURN(std::vector<v1::StrategyStats> stats,
                             store_->GetStats(s.analysis().signature()));
  absl::flat_hash_map<std::string, v1::Strategy> by_name;
  for (auto& st : strategies) by_name[st.name()] = std::move(st);
  absl::flat_hash_map<std::string, v1::StrategyStats> stats_by_name;
  for (auto& st : stats) stats_by_name[st.strategy()] = std::move(st);
  REFLEXION_ASSIGN_OR_RETURN(RelatedRecords family,
                             RelatedOf(s.analysis(), stats_by_name));
  SelectionOutcome out = SelectStrategy(
      s.analysis(), s.incident(), s.diagnosis(), by_name, stats_by_name, {}, 1,
      "diagnose", /*rng_seed=*/0, config_.selector, {}, {}, family);

  v1::DiagnoseIncidentResponse r;
  *r.mutable_incident() = incident;
  *r.mutable_analysis() = s.analysis();
  *r.mutable_candidates() = out.selection.candidates();
  v1::FirstStep& first = *r.mutable_first_step();
  if (!out.chosen) {
    first.set_kind(v1::FirstStep::KIND_ESCALATE);
    first.set_reason(out.escalation_reason);
    if (out.recommended_action.type() != v1::ACTION_TYPE_UNSPECIFIED) {
      *first.mutable_action() = out.recommended_action;
      first.mutable_action()->clear_idempotency_key();
      if (const ActionSpec* spec = FindAction(out.recommended_action.type())) {
        first.set_strategy(spec->name);
      }
    }
    return r;
  }
  // The most likely eligible strategy, not this draw's.
  const v1::StrategyCandidate* best = nullptr;
  for (const v1::StrategyCandidate& c : out.selection.candidates()) {
    if (!c.excluded_reason().empty() || c.tier() == v1::SAFETY_TIER_C) continue;
    if (best == nullptr || c.mean() > best->mean()) best = &c;
  }
  std::string name =
      best != nullptr ? best->strategy() : out.selection.strategy().name();
  first.set_kind(v1::FirstStep::KIND_EXECUTE);
  first.set_strategy(name);
  if (auto it = by_name.find(name); it != by_name.end()) {
    absl::StatusOr<v1::Action> action =
        BuildAction(it->second, s.incident(), s.diagnosis(), "diagnose");
    if (action.ok()) {
      *first.mutable_action() = *std::move(action);
      first.mutable_action()->clear_idempotency_key();  // nothing runs
    }
  }
  first.set_reason(absl::StrFormat(
      "%s has the highest expected success for %s (%.0f%%%s)", name,
      s.analysis().signature(), 100 * (best != nullptr ? best->mean() : 0),
      best != nullptr && best->trials() > 0
          ? absl::StrCat(", ", best->trials(), " trials")
          : std::string(", catalog prior")));
  return r;
}

absl::Status ReflexionWorkflow::LoadMemory(State& s) const {
  EpisodeQuery q;
  q.signature = s.analysis().signature();
  q.page_size = kMemoryEpisodes;
  REFLEXION_ASSIGN_OR_RETURN(EpisodePage page, store_->ListEpisodes(q));
  v1::Analysis& a = *s.mutable_analysis();
  a.clear_lessons();
  absl::flat_hash_set<std::string> seen;
  std::vector<double> recoveries;
  for (const v1::Episode& e : page.episodes) {  // newest first
    for (const std::string& lesson : e.lessons()) {
      if (a.lessons_size() >= config_.lessons) break;
      if (seen.insert(lesson).second) a.add_lessons(lesson);
    }
    if (e.success()) recoveries.push_back(e.time_to_recovery_s());
  }
  auto& features = *a.mutable_features();
  features["history_episodes"] = absl::StrCat(page.episodes.size());
  if (recoveries.size() >= 5) {
    double mean = 0;
    for (double r : recoveries) mean += r;
    mean /= recoveries.size();
    double var = 0;
    for (double r : recoveries) var += (r - mean) * (r - mean);
    double sd = std::sqrt(var / (recoveries.size() - 1));
    features["history_recovery_mean_s"] = absl::StrFormat("%.1f", mean);
    features["history_recovery_sd_s"] = absl::StrFormat("%.1f", sd);
  }
  return absl::OkStatus();
}

void ReflexionWorkflow::AnalyzeError(State& s, graph::NodeDone done) const {
  if (s.has_session()) {
    // The agent is the executor: what it knows came with the incident.
    *s.mutable_diagnosis() = s.incident().executor_facts();
    s.mutable_diagnosis()->set_source(
        absl::StrCat("agent:", s.session().cluster()));
    RepairForeign(*s.mutable_diagnosis(), "the agent", s.workflow_id());
    *s.mutable_analysis() = Analyze(s.incident(), s.diagnosis(), false);
    std::move(done)(LoadMemory(s));
    return;
  }
  executor_->Diagnose(
      s.incident(), [this, &s, done = std::move(done)](
                        absl::StatusOr<v1::Diagnosis> dx) mutable {
        if (dx.ok()) {
          *s.mutable_diagnosis() = *std::move(dx);
          RepairForeign(*s.mutable_diagnosis(), executor_->Name(),
                        s.workflow_id());
        } else {
          s.clear_diagnosis();
        }
        *s.mutable_analysis() = Analyze(s.incident(), s.diagnosis(), false);
        if (!dx.ok()) {
          s.mutable_analysis()->add_evidence(absl::StrCat(
              "diagnosis unavailable: ",
              ToValidUtf8Clipped(dx.status().message(), kMaxQuoted)));
        }
        std::move(done)(LoadMemory(s));
      });
}

void ReflexionWorkflow::DeepAnalysis(State& s, graph::NodeDone done) const {
  *s.mutable_analysis() = Analyze(s.incident(), s.diagnosis(), true);
  std::move(done)(LoadMemory(s));
}

void ReflexionWorkflow::SelectStrategyNode(State& s,
                                           graph::NodeDone done) const {
  if (HeldByBreaker(s)) {
    // A blast-radius breaker holds the incident: nothing automated.
    s.set_no_candidate_reason(s.policy().reason());
    s.mutable_escalation()->set_reason(s.policy().reason());
    std::move(done)(absl::OkStatus());
    return;
  }
  const bool last_undone = s.has_undo();
  // A new choice: the previous attempt's policy decision, audit entry and
  // undo no longer apply.
  s.clear_policy();
  s.set_audit_seq(0);
  s.clear_undo();
  absl::StatusOr<std::vector<v1::Strategy>> strategies =
      store_->ListStrategies();
  if (!strategies.ok()) {
    std::move(done)(strategies.status());
    return;
  }
  absl::StatusOr<std::vector<v1::StrategyStats>> stats =
      store_->GetStats(s.analysis().signature());
  if (!stats.ok()) {
    std::move(done)(stats.status());
    return;
  }
  absl::flat_hash_map<std::string, v1::Strategy> by_name;
  for (auto& st : *strategies) by_name[st.name()] = std::move(st);
  absl::flat_hash_map<std::string, v1::StrategyStats> stats_by_name;
  for (auto& st : *stats) stats_by_name[st.strategy()] = std::move(st);
  absl::StatusOr<RelatedRecords> family =
      RelatedOf(s.analysis(), stats_by_name);
  if (!family.ok()) {
    std::move(done)(family.status());
    return;
  }
  // The reflection on the previous attempt may propose a larger raise of
  // the strategy it tried ("the lever is right, the raise too small"): that
  // strategy may then run once more in this workflow with the proposal.
  // Not after a regression (it was undone) nor after a success.
  absl::flat_hash_map<std::string, RetryWith> retry;
  if (s.attempt() > 0 && s.has_reflection() && !s.observation().success() &&
      !last_undone) {
    const std::string& last = s.selection().strategy().name();
    const v1::StrategyParams before =
        ClampParams(s.selection().action().params());
    for (const v1::StrategyChange& c : s.reflection().proposed_changes()) {
      if (c.strategy() != last) continue;
      v1::StrategyParams next = ClampParams(c.params());
      // Only harder than the failed attempt, and not softer than the
      // strategy's current version (which may have changed since).
      if (!ActsHarder(s.selection().action().type(), next, before)) continue;
      if (auto cur = by_name.find(last);
          cur != by_name.end() && !ActsHarder(s.selection().action().type(),
                                              next, cur->second.params())) {
        next = ClampParams(cur->second.params());
        if (!ActsHarder(s.selection().action().type(), next, before)) continue;
      }
      retry[last] =
          RetryWith{std::move(next),
                    absl::StrCat("raised after attempt ", s.attempt(), ": ",
                                 ToValidUtf8Clipped(c.reason(), kMaxQuoted))};
      break;
    }
  }
  std::vector<std::string> tried(s.tried_strategies().begin(),
                                 s.tried_strategies().end());
  int attempt = s.attempt() + 1;
  std::string key = absl::StrCat(s.workflow_id(), "/", attempt);
  if (!s.approved_strategy().empty()) {
    // A human approved this strategy (any tier): run it, and say so.
    std::string name = s.approved_strategy();
    s.clear_approved_strategy();
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      std::move(done)(absl::FailedPreconditionError(
          absl::StrCat("approved strategy ", name, " is not in the store")));
      return;
    }
    absl::StatusOr<v1::Action> action =
        BuildAction(it->second, s.incident(), s.diagnosis(), key);
    if (!action.ok()) {
      std::move(done)(action.status());
      return;
    }
    v1::StrategySelection sel;
    *sel.mutable_strategy() = it->second;
    *sel.mutable_action() = *std::move(action);
    sel.set_attempt(attempt);
    sel.set_selection_reason("human_approved");
    // approved_by stays: who approved it (set with approved_strategy).
    Prior prior = HierarchicalPrior(s.analysis(), name, *family);
    double a = prior.alpha, b = prior.beta;
    if (auto st = stats_by_name.find(name); st != stats_by_name.end()) {
      a = st->second.alpha();
      b = st->second.beta();
    }
    sel.set_confidence(a / (a + b));
    s.set_attempt(attempt);
    s.clear_escalation();
    *s.mutable_selection() = std::move(sel);
    s.add_tried_strategies(name);
    v1::FinalStrategy& fin = *s.mutable_final_strategy();
    fin.set_type(name);
    fin.set_confidence(s.selection().confidence());
    fin.set_selection_reason("human_approved");
    fin.set_version(s.selection().strategy().version());
    s.clear_execution();
    s.clear_observation();
    s.clear_reflection();
    s.clear_learning();
    s.clear_attempt_error();
    std::move(done)(absl::OkStatus());
    return;
  }
  s.clear_approved_by();  // the service chooses (an approval may follow)
  absl::flat_hash_map<std::string, std::string> excluded;
  for (const std::string& name : s.denied_strategies()) {
    excluded[name] = "denied by a human for this incident";
  }
  if (s.has_session() && s.session().action_types_size() > 0) {
    for (const auto& [name, strategy] : by_name) {
      const auto& types = s.session().action_types();
      if (std::find(types.begin(), types.end(), strategy.action_type()) ==
          types.end()) {
        excluded.try_emplace(
            name, absl::StrCat("the agent of cluster ", s.session().cluster(),
                               " does not execute this action"));
      }
    }
  }
  SelectorOptions options = config_.selector;
  options.now = clock_->Now();
  if (checkpoints_ == nullptr) {
    // No durable wait for an approval: such choices escalate instead.
    options.ask_below_threshold = false;
    options.ask_tier_c = false;
  }
  SelectionOutcome out = SelectStrategy(
      s.analysis(), s.incident(), s.diagnosis(), by_name, stats_by_name, tried,
      attempt, key, StableHash(absl::StrCat(attempt), s.rng_seed()), options,
      excluded, retry, *family);
  if (!out.chosen) {
    s.set_no_candidate_reason(out.escalation_reason);
    v1::Escalation& esc = *s.mutable_escalation();
    esc.set_reason(out.escalation_reason);
    if (out.recommended_action.type() != v1::ACTION_TYPE_UNSPECIFIED) {
      *esc.mutable_recommended_action() = out.recommended_action;
    }
    // Keep the candidates so the event shows why nothing was chosen.
    *s.mutable_selection() = std::move(out.selection);
    s.mutable_selection()->set_attempt(s.attempt());
    std::move(done)(absl::OkStatus());
    return;
  }
  s.set_attempt(attempt);
  s.clear_approved_by();
  *s.mutable_selection() = std::move(out.selection);
  s.mutable_selection()->set_attempt(attempt);
  s.add_tried_strategies(s.selection().strategy().name());
  s.clear_attempt_error();
  v1::FinalStrategy& fin = *s.mutable_final_strategy();
  fin.set_type(s.selection().strategy().name());
  fin.set_confidence(s.selection().confidence());
  fin.set_selection_reason(s.selection().selection_reason());
  fin.set_version(s.selection().strategy().version());
  s.clear_execution();
  s.clear_observation();
  s.clear_reflection();
  s.clear_learning();
  std::move(done)(absl::OkStatus());
}

void ReflexionWorkflow::ExecuteFix(State& s, graph::NodeDone done) const {
  // Defence in depth: whatever chose the action, only catalog actions within
  // bounds reach an executor.
  absl::Status valid = ValidateAction(s.selection().action());
  if (!valid.ok()) {
    std::move(done)(valid);
    return;
  }
  if (s.has_session()) {
    ExecuteOnAgent(s, std::move(done));
    return;
  }
  if (s.audit_seq() == 0) {
    // Audited before the request leaves: no audit, no action.
    v1::AuditEntry e =
        AuditOf(s, v1::AuditEntry::KIND_ACTION, s.selection().action());
    e.set_detail(s.selection().selection_reason());
    absl::StatusOr<uint64_t> seq = Audit(std::move(e));
    if (!seq.ok()) {
      std::move(done)(seq.status());
      return;
    }
    s.set_audit_seq(*seq);
  }
  executor_->Execute(s.selection().action(),
                     [this, &s, done = std::move(done)](
                         absl::StatusOr<v1::ExecutionResult> result) mutable {
                       if (!result.ok()) {
                         std::move(done)(ForeignStatus(result.status()));
                         return;
                       }
                       *s.mutable_execution() = *std::move(result);
                       RepairForeign(*s.mutable_execution(), executor_->Name(),
                                     s.workflow_id());
                       const v1::ExecutionResult& ex = s.execution();
                       std::move(done)(AuditOutcome(s, ex.action(),
                                                    ex.dry_run()   ? "dry_run"
                                                    : ex.applied() ? "applied"
                                                                   : "failed",
                                                    ex.message()));
                     });
}

absl::Status ReflexionWorkflow::AuditOutcome(const State& s,
                                             const v1::Action& action,
                                             absl::string_view outcome,
                                             absl::string_view detail) const {
  if (audit_ == nullptr) return absl::OkStatus();
  v1::AuditEntry e = AuditOf(s, v1::AuditEntry::KIND_OUTCOME, action);
  e.set_outcome(std::string(outcome));
  e.set_detail(std::string(detail));
  e.set_refers_to(s.audit_seq());
  return Audit(std::move(e)).status();
}

void ReflexionWorkflow::PolicyNode(State& s, graph::NodeDone done) const {
  const v1::Action& action = s.selection().action();
  v1::PolicyDecision d;
  Policy* policy = PolicyFor(s.has_session());
  if (policy == nullptr) {
    d.set_verdict(v1::PolicyDecision::VERDICT_ALLOW);
    d.set_mode(v1::POLICY_MODE_ENFORCE);
    d.set_rule("allowed");
    d.set_reason("no policy is configured");
  } else {
    d = policy->CheckAction(
        ScopeOf(s.incident(), s.cluster(), s.analysis().signature()), action,
        (s.has_session() && s.session().dry_run()) || s.incident().dry_run());
  }
  *d.mutable_action() = action;
  *s.mutable_policy() = std::move(d);
  if (!PolicyStopped(s)) {
    std::move(done)(absl::OkStatus());
    return;
  }
  const v1::PolicyDecision& p = s.policy();
  const std::string what = DescribeAction(action);
  std::string outcome, reason;
  switch (p.verdict()) {
    case v1::PolicyDecision::VERDICT_DRY_RUN:
      outcome = "dry_run";
      reason = absl::StrCat("dry run: would run ", what, " (", p.reason(),
                            "); nothing was executed");
      break;
    case v1::PolicyDecision::VERDICT_SHADOW:
      outcome = "shadow";
      reason = absl::StrFormat(
          "shadow mode: would run %s (confidence %.0f%%, %s); nothing was "
          "executed. Record what you did with ResumeWorkflow MARK_RESOLVED "
          "naming the strategy you applied",
          what, 100 * s.selection().confidence(),
          s.selection().selection_reason());
      break;
    default:
      outcome = "denied";
      reason = absl::StrCat("policy denied ", what, ": ", p.reason());
      break;
  }
  s.mutable_escalation()->set_reason(reason);
  *s.mutable_escalation()->mutable_recommended_action() = action;
  v1::AuditEntry e = AuditOf(s, v1::AuditEntry::KIND_POLICY, action);
  e.set_decider(v1::AuditEntry::DECIDER_POLICY);
  e.set_outcome(outcome);
  e.set_detail(absl::StrCat(p.rule(), ": ", p.reason()));
  std::move(done)(Audit(std::move(e)).status());
}

void ReflexionWorkflow::ObserveOutcome(State& s, graph::NodeDone done) const {
  if (s.has_session()) {
    ObserveOnAgent(s, std::move(done));
    return;
  }
  executor_->Observe(s.selection().action(), config_.observation_window,
                     [this, &s, done = std::move(done)](
                         absl::StatusOr<v1::Observation> obs) mutable {
                       if (!obs.ok()) {
                         std::move(done)(ForeignStatus(obs.status()));
                         return;
                       }
                       v1::Observation& o = *s.mutable_observation();
                       o = *std::move(obs);
                       RepairForeign(o, executor_->Name(), s.workflow_id());
                       FinishObservation(s);
                       std::move(done)(absl::OkStatus());
                     });
}

// Anomalies and executor time of a fresh observation.
void ReflexionWorkflow::FinishObservation(State& s) const {
  v1::Observation& o = *s.mutable_observation();
  // Anomaly: recovery far outside this signature's history.
  const auto& f = s.analysis().features();
  auto mean_it = f.find("history_recovery_mean_s");
  auto sd_it = f.find("history_recovery_sd_s");
  double mean = 0, sd = 0;
  // No exception on a malformed figure (std::stod would throw).
  if (o.recovered() && mean_it != f.end() && sd_it != f.end() &&
      absl::SimpleAtod(mean_it->second, &mean) &&
      absl::SimpleAtod(sd_it->second, &sd)) {
    sd = std::max(1.0, sd);
    if (std::abs(o.time_to_recovery_s() - mean) > 3 * sd) {
      o.add_anomalies(absl::StrFormat(
          "time to recovery %.0fs is far outside this signature's "
          "history (mean %.0fs, sd %.0fs)",
          o.time_to_recovery_s(), mean, sd));
    }
  }
  s.set_executor_seconds(s.executor_seconds() +
                         (o.recovered() ? o.time_to_recovery_s() : 0) +
                         o.window_s());
  // Did the fix make things worse? Then its inverse runs next (undo).
  s.clear_undo();
  if (s.execution().applied() && !s.execution().dry_run()) {
    if (std::optional<std::string> why = DetectRegression(
            s.incident(), s.analysis(), s.execution(), s.observation())) {
      v1::UndoRecord& u = *s.mutable_undo();
      u.set_undo_of(s.selection().action().idempotency_key());
      u.set_reason(absl::StrCat("regression: ", *why));
      u.set_requested_by("policy");
    }
  }
}

void ReflexionWorkflow::UndoNode(State& s, graph::NodeDone done) const {
  v1::UndoRecord& u = *s.mutable_undo();
  if (!u.has_action()) {
    // After a regression: the inverse of this attempt's action.
    std::vector<v1::ValueChange> changes(s.execution().changes().begin(),
                                         s.execution().changes().end());
    absl::StatusOr<v1::Action> undo = BuildUndo(
        s.selection().action(), changes,
        absl::StrCat(s.selection().action().idempotency_key(), "/undo"));
    if (!undo.ok()) {
      u.set_applied(false);
      u.set_message(absl::StrCat("not undone: ", undo.status().message()));
      s.mutable_observation()->add_anomalies(
          absl::StrCat(u.reason(), "; ", u.message()));
      std::move(done)(absl::OkStatus());
      return;
    }
    *u.mutable_action() = *std::move(undo);
  }
  absl::Status valid = ValidateAction(u.action());
  if (!valid.ok()) {
    std::move(done)(valid);
    return;
  }
  if (Policy* policy = PolicyFor(s.has_session()); policy != nullptr) {
    // An undo is exempt from rate limits and freezes, not from the mode.
    v1::PolicyDecision d = policy->CheckAction(
        ScopeOf(s.incident(), s.cluster(), s.analysis().signature()),
        u.action(), false);
    if (d.verdict() != v1::PolicyDecision::VERDICT_ALLOW) {
      u.set_applied(false);
      u.set_message(absl::StrCat("not undone: ", d.reason()));
      *s.mutable_policy() = std::move(d);
      std::move(done)(absl::OkStatus());
      return;
    }
  }
  auto finish = [this, &s](bool applied, std::string message,
                           absl::string_view outcome) {
    v1::UndoRecord& rec = *s.mutable_undo();
    rec.set_applied(applied);
    rec.set_message(std::string(ClipUtf8(message, kMaxAgentMessage)));
    if (rec.requested_by() == "policy") {
      s.mutable_observation()->add_anomalies(
          absl::StrCat(rec.reason(), "; ",
                       applied ? "undone: " : "undo failed: ", rec.message()));
    }
    return AuditOutcome(s, rec.action(), outcome, rec.message());
  };
  if (s.has_session()) {
    const auto& types = s.session().action_types();
    if (!types.empty() && std::find(types.begin(), types.end(),
                                    v1::ACTION_TYPE_UNDO) == types.end()) {
      // An agent that does not announce undo is not sent one.
      u.set_applied(false);
      u.set_message(absl::StrCat("not undone: the agent of cluster ",
                                 s.session().cluster(),
                                 " does not execute undo"));
      if (u.requested_by() == "policy") {
        s.mutable_observation()->add_anomalies(
            absl::StrCat(u.reason(), "; ", u.message()));
      }
      std::move(done)(absl::OkStatus());
      return;
    }
    if (AwaitAgent(s, u.action(), done)) return;
    const v1::AgentWait w = s.agent_wait();
    s.clear_agent_wait();
    const std::string outcome = AgentOutcome(w);
    std::string message =
        w.has_result()
            ? std::string(ClipUtf8(w.result().message(), kMaxAgentMessage))
            : std::string("no agent answered the undo in time");
    std::move(done)(finish(outcome == "applied", message, outcome));
    return;
  }
  {
    v1::AuditEntry e = AuditOf(s, v1::AuditEntry::KIND_ACTION, u.action());
    e.set_detail(u.reason());
    absl::StatusOr<uint64_t> seq = Audit(std::move(e));
    if (!seq.ok()) {
      std::move(done)(seq.status());
      return;
    }
    s.set_audit_seq(*seq);
  }
  executor_->Execute(
      u.action(), [this, &s, finish, done = std::move(done)](
                      absl::StatusOr<v1::ExecutionResult> result) mutable {
        if (!result.ok()) {
          const absl::StatusCode code = result.status().code();
          if (code == absl::StatusCode::kUnavailable ||
              code == absl::StatusCode::kDeadlineExceeded ||
              code == absl::StatusCode::kResourceExhausted) {
            // Retried by the node's policy, under the same key.
            std::move(done)(ForeignStatus(result.status()));
            return;
          }
          // The executor cannot undo it (e.g. the REST agent has no undo):
          // recorded, and a human takes it from there.
          std::move(done)(
              finish(false, ToValidUtf8(result.status().ToString()), "failed"));
          return;
        }
        RepairForeign(*result, executor_->Name(), s.workflow_id());
        std::move(done)(finish(result->applied(), result->message(),
                               result->applied() ? "applied" : "failed"));
      });
}

bool ReflexionWorkflow::AwaitAgent(State& s, const v1::Action& action,
                                   graph::NodeDone& done) const {
  if (!s.agent_wait().has_action() ||
      s.agent_wait().action().action_id() != action.idempotency_key()) {
    // Audited before the request leaves: no audit, no action.
    v1::AuditEntry e = AuditOf(s, v1::AuditEntry::KIND_ACTION, action);
    const bool dry_run =
        s.session().dry_run() ||
        (action.type() != v1::ACTION_TYPE_UNDO &&
         s.policy().verdict() == v1::PolicyDecision::VERDICT_DRY_RUN);
    if (dry_run) e.set_mode(v1::POLICY_MODE_DRY_RUN);
    e.set_detail(action.type() == v1::ACTION_TYPE_UNDO
                     ? s.undo().reason()
                     : s.selection().selection_reason());
    absl::StatusOr<uint64_t> seq = Audit(std::move(e));
    if (!seq.ok()) {
      std::move(done)(seq.status());
      return true;
    }
    s.set_audit_seq(*seq);
    // Ask the agent, and wait for it durably (no thread held): the request
    // is persisted with the waiting checkpoint and sent to a live session
    // of the cluster, again after every reconnect, until answered or due.
    s.clear_agent_wait();
    v1::AgentWait& w = *s.mutable_agent_wait();
    const absl::Time now = clock_->Now();
    v1::ActionRequest& req = *w.mutable_action();
    req.set_workflow_id(s.workflow_id());
    req.set_action_id(action.idempotency_key());
    *req.mutable_action() = action;
    v1::WorkloadRef owner = OwnerOf(s.incident());
    if (!owner.kind().empty()) *req.mutable_owner() = std::move(owner);
    req.set_container(s.analysis().container());
    req.set_dry_run(dry_run);
    *req.mutable_deadline() = ToProto(now + config_.action_timeout);
    req.set_attempt(s.attempt());
    req.set_request_id(s.incident().request_id());
    *w.mutable_deadline() = req.deadline();
    *w.mutable_since() = ToProto(now);
    std::move(done)(graph::Interrupt(absl::StrCat(
        "waiting for an agent of cluster ", s.session().cluster(), " to run ",
        DescribeAction(action), " (action ", req.action_id(), ")")));
    return true;
  }
  const v1::AgentWait& w = s.agent_wait();
  if (!w.has_result() && !w.expired()) {
    // Resumed while still waiting (after a restart): keep waiting.
    std::move(done)(graph::Interrupt(
        absl::StrCat("waiting for an agent of cluster ", s.session().cluster(),
                     " (action ", w.action().action_id(), ")")));
    return true;
  }
  return false;
}

void ReflexionWorkflow::ExecuteOnAgent(State& s, graph::NodeDone done) const {
  const v1::Action& action = s.selection().action();
  if (AwaitAgent(s, action, done)) return;
  const v1::AgentWait& w = s.agent_wait();
  v1::ExecutionResult& ex = *s.mutable_execution();
  ex.Clear();
  *ex.mutable_action() = action;
  ex.set_executor(absl::StrCat("agent:", s.session().cluster()));
  if (!w.has_result()) {
    s.set_attempt_error(absl::StrCat(
        "DEADLINE_EXCEEDED: no agent of cluster ", s.session().cluster(),
        " answered action ", w.action().action_id(), " within ",
        absl::FormatDuration(FromProto(w.deadline()) - FromProto(w.since()))));
    ex.set_message(s.attempt_error());
  } else {
    const v1::ActionResult& r = w.result();
    std::string message(ClipUtf8(r.message(), kMaxAgentMessage));
    ex.set_message(message);
    for (int i = 0; i < r.changes_size() && i < kMaxAgentChanges; ++i) {
      *ex.add_changes() = r.changes(i);
    }
    switch (r.outcome()) {
      case v1::ActionResult::OUTCOME_APPLIED:
        ex.set_applied(true);
        break;
      case v1::ActionResult::OUTCOME_DRY_RUN:
        ex.set_dry_run(true);
        s.set_attempt_error(absl::StrCat("dry run: the agent validated ",
                                         s.selection().strategy().name(),
                                         " without applying it: ", message));
        s.mutable_escalation()->set_reason(s.attempt_error());
        break;
      case v1::ActionResult::OUTCOME_REFUSED:
        s.set_attempt_error(absl::StrCat("the agent refused ",
                                         s.selection().strategy().name(), ": ",
                                         message));
        break;
      default:
        s.set_attempt_error(absl::StrCat("the agent failed to run ",
                                         s.selection().strategy().name(), ": ",
                                         message));
        break;
    }
  }
  RepairForeign(ex, "the agent", s.workflow_id());
  if (!s.attempt_error().empty() && !ex.dry_run() &&
      s.attempt() >= s.max_attempts()) {
    s.mutable_escalation()->set_reason(s.attempt_error());
  }
  const std::string outcome = AgentOutcome(w);
  s.clear_agent_wait();
  std::move(done)(AuditOutcome(s, action, outcome, ex.message()));
}

void ReflexionWorkflow::ObserveOnAgent(State& s, graph::NodeDone done) const {
  const v1::Action& action = s.selection().action();
  if (!s.agent_wait().has_observation() ||
      s.agent_wait().observation().action_id() != action.idempotency_key()) {
    s.clear_agent_wait();
    v1::AgentWait& w = *s.mutable_agent_wait();
    const absl::Time now = clock_->Now();
    v1::ObservationRequest& req = *w.mutable_observation();
    req.set_workflow_id(s.workflow_id());
    req.set_action_id(action.idempotency_key());
    req.set_namespace_(action.namespace_());
    req.set_pod_name(action.pod_name());
    v1::WorkloadRef owner = OwnerOf(s.incident());
    if (!owner.kind().empty()) *req.mutable_owner() = std::move(owner);
    req.set_container(s.analysis().container());
    *req.mutable_window_end() = ToProto(now + config_.observation_window);
    absl::Duration interval =
        std::min(config_.report_interval, config_.observation_window / 3);
    *req.mutable_report_interval() = ToProto(interval);
    *w.mutable_deadline() = req.window_end();
    *w.mutable_since() = ToProto(now);
    std::move(done)(graph::Interrupt(absl::StrCat(
        "observing ", action.namespace_(), "/", action.pod_name(),
        " through agents of cluster ", s.session().cluster(), " until ",
        absl::FormatTime(absl::RFC3339_sec, now + config_.observation_window,
                         absl::UTCTimeZone()))));
    return;
  }
  const v1::AgentWait w = s.agent_wait();
  if (!w.expired()) {
    // The window is still open (resumed after a restart): keep waiting
    // until its persisted end.
    std::move(done)(graph::Interrupt(absl::StrCat(
        "observing through agents of cluster ", s.session().cluster())));
    return;
  }
  if (w.reports() == 0) {
    // Nothing to judge by: not the strategy's failure.
    s.set_attempt_error(absl::StrCat(
        "DEADLINE_EXCEEDED: no agent of cluster ", s.session().cluster(),
        " reported the pod's status during the observation window"));
    if (s.attempt() >= s.max_attempts()) {
      s.mutable_escalation()->set_reason(s.attempt_error());
    }
    s.clear_agent_wait();
    std::move(done)(absl::OkStatus());
    return;
  }
  v1::Observation& o = *s.mutable_observation();
  o.Clear();
  const absl::Time since = FromProto(w.since());
  const absl::Duration window = FromProto(w.deadline()) - since;
  o.set_window_s(absl::ToDoubleSeconds(window));
  o.set_recovered(w.has_first_healthy_at());
  o.set_success(w.has_first_healthy_at() && !w.regressed() && w.healthy_now());
  if (o.recovered()) {
    o.set_time_to_recovery_s(std::max(
        0.0, absl::ToDoubleSeconds(FromProto(w.first_healthy_at()) - since)));
  }
  o.set_restarts(std::max(0, w.restarts() - w.first_restarts()));
  if (!w.healthy_now()) o.set_failure_reason(w.failure_reason());
  for (const auto& sig : w.signals()) o.add_signals(sig);
  o.add_signals(absl::StrCat(w.reports(), " status report(s) from agents of ",
                             s.session().cluster()));
  if (w.regressed()) {
    o.add_signals("the pod became unhealthy again after it had recovered");
  }
  s.clear_agent_wait();
  FinishObservation(s);
  std::move(done)(absl::OkStatus());
}

void ReflexionWorkflow::Approval(State& s, graph::NodeDone done) const {
  const v1::HumanDecision::Kind kind = s.decision().kind();
  if (kind == v1::HumanDecision::KIND_APPROVE ||
      kind == v1::HumanDecision::KIND_DENY) {
    v1::HumanDecision d = s.decision();
    s.clear_decision();
    s.clear_agent_wait();
    const std::string name = s.selection().strategy().name();
    const std::string note =
        d.note().empty() ? std::string() : absl::StrCat(" (", d.note(), ")");
    if (kind == v1::HumanDecision::KIND_APPROVE) {
      s.set_approved_by(d.decided_by());
      s.mutable_selection()->set_selection_reason(
          absl::StrCat(s.selection().selection_reason(), "+human_approved"));
      s.mutable_final_strategy()->set_selection_reason(
          s.selection().selection_reason());
      s.mutable_escalation()->set_summary(
          absl::StrCat("a human approved ", name, note));
    } else {
      // Not learned as the strategy's failure (nothing ran); it is not
      // proposed again for this incident, and the attempt is not spent.
      s.add_denied_strategies(name);
      s.set_attempt(std::max(0, s.attempt() - 1));
      s.mutable_escalation()->set_summary(
          absl::StrCat("a human denied ", name, note));
    }
    std::move(done)(absl::OkStatus());
    return;
  }
  v1::ApprovalRequest& req = *s.mutable_agent_wait()->mutable_approval();
  s.mutable_agent_wait()->clear_action();
  s.mutable_agent_wait()->clear_observation();
  req.Clear();
  req.set_workflow_id(s.workflow_id());
  req.set_strategy(s.selection().strategy().name());
  *req.mutable_action() = s.selection().action();
  req.set_tier(s.selection().strategy().tier());
  req.set_confidence(s.selection().confidence());
  req.set_reason(s.selection().approval_reason());
  for (const auto& e : s.analysis().evidence()) req.add_evidence(e);
  req.set_request_id(s.incident().request_id());
  req.set_signature(s.analysis().signature());
  s.mutable_escalation()->set_reason(req.reason());
  *s.mutable_escalation()->mutable_recommended_action() = req.action();
  *s.mutable_agent_wait()->mutable_since() = ToProto(clock_->Now());
  std::move(done)(graph::Interrupt(req.reason()));
}

namespace {
void RedactReflectionStrings(v1::Reflection& r) {
  r.set_text(RedactSecrets(r.text()));
  for (std::string& l : *r.mutable_lessons()) l = RedactSecrets(l);
  for (v1::StrategyChange& c : *r.mutable_proposed_changes()) {
    c.set_reason(RedactSecrets(c.reason()));
  }
  for (std::string& d : *r.mutable_dropped()) d = RedactSecrets(d);
}
}  // namespace

void ReflectOrFallBack(Reflector* reflector, const ReflectionRequest& request,
                       absl::AnyInvocable<void(v1::Reflection) &&> done) {
  reflector->Reflect(
      request, [reflector, request, done = std::move(done)](
                   absl::StatusOr<v1::Reflection> result) mutable {
        v1::Reflection r;
        if (result.ok()) {
          r = *std::move(result);
          std::vector<std::string> paths;
          if (RepairUtf8(&r, &paths) > 0) {
            LOG(WARNING) << "invalid UTF-8 from reflector " << reflector->Name()
                         << " replaced in " << absl::StrJoin(paths, ", ");
          }
          if (r.reflector().empty()) r.set_reflector(reflector->Name());
        } else {
          // Any reflector failure falls back to the heuristic, and says so: a
          // workflow never fails because the LLM did.
          r = HeuristicReflector::ReflectNow(request);
          r.set_reflector(HeuristicReflector().Name());
          r.set_fallback_reason(ToValidUtf8Clipped(
              absl::StrCat(reflector->Name(), ": ", result.status().message()),
              kMaxQuoted));
        }
        // What is stored and sent on holds no secret quoted from the pod,
        // whichever reflector wrote it.
        RedactReflectionStrings(r);
        if (r.dropped_size() > 0) {
          // What a model proposed outside the catalog or its bounds is
          // logged (redacted, clipped), besides the event that names it.
          LOG(WARNING) << "reflector " << r.reflector() << ": "
                       << absl::StrJoin(r.dropped(), "; ");
        }
        std::move(done)(std::move(r));
      });
}

absl::StatusOr<ReflectionRequest> SyntheticReflectionRequest(
    const v1::SimulateReflectionRequest& in, ReflectionDepth default_depth) {
  if (in.error_type().empty()) {
    return absl::InvalidArgumentError("error_type: required");
  }
  if (in.error_type().size() > 128) {
    return absl::InvalidArgumentError("error_type: longer than 128 bytes");
  }
  if (in.evidence_size() > 100) {
    return absl::InvalidArgumentError("evidence: more than 100 lines");
  }
  for (const std::string& line : in.evidence()) {
    if (line.size() > 4096) {
      return absl::InvalidArgumentError("evidence: a line over 4096 bytes");
    }
  }
  if (!(in.resolution_time_s() >= 0 && in.resolution_time_s() <= 86400)) {
    return absl::InvalidArgumentError(
        "resolution_time_s: must be between 0 and 86400");
  }
  const int attempt = in.attempt() == 0 ? 1 : in.attempt();
  const int max_attempts =
      in.max_attempts() == 0 ? std::max(3, attempt) : in.max_attempts();
  if (attempt < 1 || attempt > 20) {
    return absl::InvalidArgumentError("attempt: must be between 1 and 20");
  }
  if (max_attempts < attempt || max_attempts > 20) {
    return absl::InvalidArgumentError(
        "max_attempts: must be between attempt and 20");
  }
  ReflectionRequest r;
  r.depth = default_depth;
  if (!in.depth().empty() && !ParseDepth(in.depth(), &r.depth)) {
    return absl::InvalidArgumentError("depth: must be shallow, medium or deep");
  }
  v1::Incident incident;
  incident.set_pod_name("simulated");
  incident.set_namespace_("default");
  incident.set_error_type(in.error_type());
  incident.set_logs(absl::StrJoin(in.evidence(), "\n"));
  // Analysed as the workflow would: deep when the shallow rules fall short.
  r.analysis = Analyze(incident, v1::Diagnosis(), false);
  if (NeedsDeepAnalysis(r.analysis)) {
    r.analysis = Analyze(incident, v1::Diagnosis(), true);
  }
  std::string name = in.strategy();
  if (name.empty()) {
    std::vector<std::string> fits = StrategiesFor(r.analysis.error_family());
    if (!fits.empty()) name = fits.front();
  }
  const ActionSpec* spec = FindActionByName(name);
  if (spec == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategy: '", ToValidUtf8Clipped(name, 64),
                     "' is not in the action catalog"));
  }
  for (v1::Strategy& st : DefaultStrategies(absl::UnixEpoch())) {
    if (st.name() == spec->name) *r.selection.mutable_strategy() = st;
  }
  r.selection.mutable_action()->set_type(spec->type);
  r.selection.mutable_action()->set_tier(spec->tier);
  *r.selection.mutable_action()->mutable_params() =
      r.selection.strategy().params();
  r.selection.set_confidence(0.5);
  r.selection.set_selection_reason("simulated attempt");
  r.selection.set_attempt(attempt);
  r.execution.set_applied(true);
  r.execution.set_message("simulated attempt");
  r.execution.set_executor("simulated");
  r.observation.set_success(in.success());
  r.observation.set_recovered(in.success());
  if (in.success()) {
    r.observation.set_time_to_recovery_s(in.resolution_time_s());
  } else {
    r.observation.set_failure_reason(r.analysis.error_family());
  }
  r.attempt = attempt;
  r.max_attempts = max_attempts;
  r.pod_data = incident.logs();
  return r;
}

ReflectionRequest ReflexionWorkflow::MakeReflectionRequest(const State& s,
                                                           bool meta) const {
  ReflectionRequest r;
  r.analysis = s.analysis();
  r.selection = s.selection();
  r.execution = s.execution();
  r.observation = s.observation();
  r.tried_strategies.assign(s.tried_strategies().begin(),
                            s.tried_strategies().end());
  r.attempt = s.attempt();
  r.max_attempts = s.max_attempts();
  r.depth = config_.depth;
  r.meta = meta;
  if (meta) r.previous = s.reflection();
  // The pod's own words, newest last: its message, its events, then the
  // tail of its logs (bounded; the reflector clips further by depth).
  const v1::Incident& in = s.incident();
  std::string& d = r.pod_data;
  if (!in.error_message().empty()) {
    absl::StrAppend(&d, "error_message: ", in.error_message(), "\n");
  }
  for (const v1::PodEvent& e : in.events()) {
    absl::StrAppend(&d, "event ", e.type(), " ", e.reason(), ": ", e.message(),
                    "\n");
  }
  constexpr size_t kMaxLogTail = 16 << 10;
  absl::string_view logs = in.logs();
  if (logs.size() > kMaxLogTail) logs = logs.substr(logs.size() - kMaxLogTail);
  if (!logs.empty()) absl::StrAppend(&d, "logs:\n", logs);
  return r;
}

void ReflexionWorkflow::RunReflector(State& s, bool meta,
                                     graph::NodeDone done) const {
  ReflectionRequest request = MakeReflectionRequest(s, meta);
  ReflectOrFallBack(
      reflector_, request,
      [&s, meta, done = std::move(done)](v1::Reflection r) mutable {
        if (meta) {
          // Keep the first reflection's proposals; add the meta lessons.
          v1::Reflection merged = s.reflection();
          merged.set_text(absl::StrCat(merged.text(), "\nMeta: ", r.text()));
          merged.set_quality(r.quality());
          merged.set_meta(true);
          for (const auto& l : r.lessons()) merged.add_lessons(l);
          for (const auto& c : r.proposed_changes()) {
            *merged.add_proposed_changes() = c;
          }
          for (const auto& d : r.dropped()) merged.add_dropped(d);
          // What it recommends, so that GetMetrics can tell whether
          // following it did better.
          merged.set_recommended_strategy(
              RecommendedStrategy(r, s.selection().strategy().name()));
          if (r.reflector() != merged.reflector()) {
            merged.set_reflector(
                absl::StrCat(merged.reflector(), ", meta: ", r.reflector()));
          }
          if (!r.fallback_reason().empty()) {
            merged.set_fallback_reason(r.fallback_reason());
          }
          r = std::move(merged);
          s.set_meta_reflections(s.meta_reflections() + 1);
        }
        s.set_reflections_performed(s.reflections_performed() + 1);
        s.set_reflection_quality_sum(s.reflection_quality_sum() + r.quality());
        *s.mutable_reflection() = std::move(r);
        std::move(done)(absl::OkStatus());
      });
}

void ReflexionWorkflow::Reflect(State& s, graph::NodeDone done) const {
  RunReflector(s, false, std::move(done));
}

void ReflexionWorkflow::MetaReflect(State& s, graph::NodeDone done) const {
  RunReflector(s, true, std::move(done));
}

void ReflexionWorkflow::Learn(State& s, graph::NodeDone done) const {
  const v1::StrategySelection& sel = s.selection();
  const std::string& name = sel.strategy().name();
  LearningCommit commit;
  v1::Episode& e = commit.episode;
  e.set_id(absl::StrCat(s.workflow_id(), "/", s.attempt()));
  e.set_workflow_id(s.workflow_id());
  *e.mutable_time() = ToProto(clock_->Now());
  e.set_pod_name(s.incident().pod_name());
  e.set_namespace_(s.incident().namespace_());
  e.set_error_type(s.incident().error_type());
  e.set_signature(s.analysis().signature());
  e.set_attempt(s.attempt());
  e.set_strategy(name);
  e.set_strategy_version(sel.strategy().version());
  e.set_action_id(sel.action().idempotency_key());
  *e.mutable_action() = s.execution().action();
  for (const v1::ValueChange& c : s.execution().changes()) {
    *e.add_changes() = c;
  }
  e.set_cluster(s.cluster());
  if (s.has_undo() && s.undo().applied()) e.set_undone(true);
  e.set_success(s.observation().success());
  e.set_confidence(sel.confidence());
  e.set_selection_reason(sel.selection_reason());
  e.set_time_to_recovery_s(
      s.observation().success() ? s.observation().time_to_recovery_s() : 0);
  e.set_reflection(s.reflection().text());
  e.set_reflection_quality(s.reflection().quality());
  for (const auto& l : s.reflection().lessons()) e.add_lessons(l);
  if (s.reflection().meta()) {
    e.set_meta_reflection(true);
    e.set_meta_recommended_strategy(s.reflection().recommended_strategy());
  }
  // A proposed change to the strategy just tried becomes a new version when
  // its clamped parameters differ from the current ones and the evidence
  // says the current version underperforms on this signature (enough trials,
  // low posterior): one unlucky failure must not ratchet a limit upwards.
  bool evidence = false;
  std::optional<v1::StrategyStats> current_record;
  if (absl::StatusOr<std::vector<v1::StrategyStats>> stats =
          store_->GetStats(s.analysis().signature());
      stats.ok()) {
    for (const v1::StrategyStats& st : *stats) {
      if (st.strategy() != name) continue;
      current_record = st;
      // Counting this failure, which is not committed yet.
      double a = st.alpha(), b = st.beta() + 1;
      evidence = st.trials() + 1 >= config_.min_trials_for_change &&
                 a / (a + b) < config_.max_mean_for_change;
    }
  }
  // The prior a new posterior starts from, as select_strategy saw it (the
  // store uses it only when the posterior does not exist yet).
  if (!current_record.has_value()) {
    absl::StatusOr<RelatedRecords> related = RelatedOf(s.analysis(), {}, name);
    if (!related.ok()) {
      std::move(done)(related.status());
      return;
    }
    Prior prior = HierarchicalPrior(s.analysis(), name, *related);
    commit.prior_alpha = prior.alpha;
    commit.prior_beta = prior.beta;
  }
  for (const v1::StrategyChange& change : s.reflection().proposed_changes()) {
    if (!evidence || s.observation().success()) break;
    if (change.strategy() != name) continue;
    v1::StrategyParams params = ClampParams(change.params());
    const v1::StrategyParams& cur = sel.strategy().params();
    if (params.SerializeAsString() == cur.SerializeAsString()) continue;
    v1::Strategy next = sel.strategy();
    next.set_version(sel.strategy().version() + 1);
    next.set_parent_version(sel.strategy().version());
    *next.mutable_params() = params;
    next.set_author(absl::StrCat("reflector:", reflector_->Name()));
    next.set_reason(change.reason());
    *next.mutable_created_at() = ToProto(clock_->Now());
    commit.new_version = std::move(next);
    break;
  }
  // Parameters learned for the signature (StrategyStats.tuned_params): the
  // counts of the version's own parameters and of the learned ones decide
  // when a raise that resolved an incident is kept, and when the learned
  // parameters become the strategy's next version.
  {
    const int32_t version = sel.strategy().version();
    v1::StrategyStats rec;
    if (current_record.has_value() &&
        current_record->tuned_version() == version) {
      rec = *current_record;
    }
    rec.set_tuned_version(version);
    const v1::ActionType type = sel.action().type();
    const v1::StrategyParams used = ClampParams(sel.action().params());
    const v1::StrategyParams base = ClampParams(sel.strategy().params());
    const bool is_base = used.SerializeAsString() == base.SerializeAsString();
    const bool is_tuned =
        rec.has_tuned_params() &&
        used.SerializeAsString() ==
            ClampParams(rec.tuned_params()).SerializeAsString();
    const bool ok = e.success() && !e.undone();
    commit.count_for_version = is_base;
    if (is_base) {
      rec.set_base_trials(rec.base_trials() + 1);
      if (!ok) rec.set_base_failures(rec.base_failures() + 1);
    }
    if (is_tuned) {
      rec.set_tuned_trials(rec.tuned_trials() + 1);
      if (ok) rec.set_tuned_successes(rec.tuned_successes() + 1);
    }
    bool raised = false;
    for (const v1::StrategyCandidate& c : sel.candidates()) {
      raised |= c.strategy() == name &&
                absl::StartsWith(c.params_source(), "raised after");
    }
    const double fail_share = 1 - config_.max_mean_for_change;
    if (ok && raised && ActsHarder(type, used, base)) {
      bool keep = false;
      if (!rec.has_tuned_params()) {
        // The version's own parameters fail here, credibly and not once;
        // and a version with a parent first has the trials its automatic
        // rollback judges it by (a bad new version is rolled back rather
        // than worked around).
        keep = rec.base_failures() >= 2 &&
               rec.base_failures() >= fail_share * rec.base_trials() &&
               (sel.strategy().parent_version() < 1 ||
                rec.base_trials() >= config_.rollback_min_trials);
      } else if (ActsHarder(type, used, rec.tuned_params())) {
        // So do the learned ones.
        const int64_t fails = rec.tuned_trials() - rec.tuned_successes();
        keep = rec.tuned_trials() >= config_.min_trials_for_change &&
               fails >= fail_share * rec.tuned_trials();
      }
      if (keep) {
        *rec.mutable_tuned_params() = used;
        rec.set_tuned_trials(1);
        rec.set_tuned_successes(1);
      }
    }
    // Learned parameters that keep working here become the next version,
    // for every signature without parameters of its own.
    if (!commit.new_version.has_value() && rec.has_tuned_params() &&
        ActsHarder(type, rec.tuned_params(), base) &&
        rec.tuned_successes() >= config_.min_trials_for_change &&
        rec.tuned_successes() >=
            config_.max_mean_for_change * rec.tuned_trials()) {
      v1::Strategy next = sel.strategy();
      next.set_version(version + 1);
      next.set_parent_version(version);
      *next.mutable_params() = ClampParams(rec.tuned_params());
      next.set_author(absl::StrCat("reflector:", reflector_->Name()));
      next.set_reason(ToValidUtf8Clipped(
          absl::StrCat("learned on ", s.analysis().signature(), ": ",
                       DescribeParams(type, rec.tuned_params()), " resolved ",
                       rec.tuned_successes(), " of ", rec.tuned_trials(),
                       " attempts where version ", version, "'s ",
                       DescribeParams(type, base), " failed ",
                       rec.base_failures(), " of ", rec.base_trials()),
          kMaxQuoted * 2));
      *next.mutable_created_at() = ToProto(clock_->Now());
      commit.new_version = std::move(next);
    }
    commit.params_record = std::move(rec);
  }
  // Automatic rollback: the version just tried, counting this trial, judged
  // against its parent. It replaces a proposal (the proposal was made for
  // the version being rolled back).
  int rolled_back = 0;
  std::string rollback_reason;
  if (config_.rollback_min_trials > 0) {
    absl::StatusOr<std::vector<v1::Strategy>> history =
        store_->GetStrategyHistory(name);
    absl::StatusOr<std::vector<v1::VersionStats>> vstats =
        store_->GetVersionStats(name);
    if (commit.count_for_version && history.ok() && vstats.ok() &&
        !history->empty() &&
        history->back().version() == sel.strategy().version()) {
      bool counted = false;
      for (v1::VersionStats& v : *vstats) {
        if (v.version() != sel.strategy().version()) continue;
        v = MakeVersionStats(name, v.version(), v.trials() + 1,
                             v.successes() + (e.success() ? 1 : 0));
        counted = true;
      }
      if (!counted) {
        vstats->push_back(MakeVersionStats(name, sel.strategy().version(), 1,
                                           e.success() ? 1 : 0));
      }
      RollbackRule rule;
      rule.min_trials = config_.rollback_min_trials;
      if (std::optional<v1::Strategy> back =
              JudgeLatestVersion(*history, *vstats, rule, clock_->Now())) {
        rolled_back = sel.strategy().version();
        rollback_reason = back->reason();
        commit.new_version = *std::move(back);
      }
    }
  }
  absl::StatusOr<LearningResult> result = store_->CommitLearning(commit);
  int new_version = commit.new_version ? commit.new_version->version() : 0;
  if (!result.ok() && absl::IsFailedPrecondition(result.status()) &&
      commit.new_version) {
    // Another workflow versioned the strategy first: learn without ours.
    commit.new_version.reset();
    new_version = 0;
    rolled_back = 0;
    rollback_reason.clear();
    result = store_->CommitLearning(commit);
  }
  if (!result.ok()) {
    std::move(done)(result.status());
    return;
  }
  v1::LearningUpdate& u = *s.mutable_learning();
  u.set_signature(s.analysis().signature());
  u.set_strategy(name);
  u.set_mean_before(result->mean_before);
  *u.mutable_stats() = result->stats;
  u.set_new_version(new_version);
  u.set_episode_id(e.id());
  if (rolled_back > 0) {
    u.set_rolled_back_version(rolled_back);
    u.set_rollback_reason(rollback_reason);
    LOG(INFO) << "strategy " << name << " version " << rolled_back
              << " rolled back as version " << new_version << ": "
              << rollback_reason;
  }
  if (std::find(s.learned_strategies().begin(), s.learned_strategies().end(),
                name) == s.learned_strategies().end()) {
    s.add_learned_strategies(name);
  }
  s.set_learning_velocity(s.learning_velocity() + result->stats.mean() -
                          result->mean_before);
  if (!s.observation().success() && s.attempt() >= s.max_attempts()) {
    v1::Escalation& esc = *s.mutable_escalation();
    esc.set_reason(absl::StrCat("all ", s.max_attempts(),
                                " attempts failed for ",
                                s.analysis().signature()));
  }
  std::move(done)(absl::OkStatus());
}

void ReflexionWorkflow::HumanEscalation(State& s, graph::NodeDone done) const {
  if (s.decision().kind() != v1::HumanDecision::KIND_UNSPECIFIED) {
    // Resumed with a human decision: apply it (and consume it).
    v1::HumanDecision d = s.decision();
    s.clear_decision();
    const std::string note =
        d.note().empty() ? std::string() : absl::StrCat(" (", d.note(), ")");
    switch (d.kind()) {
      case v1::HumanDecision::KIND_RETRY:
        s.set_approved_strategy(d.strategy());
        s.set_approved_by(d.decided_by());
        s.set_max_attempts(s.attempt() + 1);
        s.clear_no_candidate_reason();
        s.mutable_escalation()->set_summary(absl::StrCat(
            "a human approved ", d.strategy(), " for one more attempt", note));
        break;
      case v1::HumanDecision::KIND_MARK_RESOLVED:
        s.set_resolved_by_human(true);
        s.mutable_escalation()->set_summary(
            absl::StrCat("resolved by a human", note));
        break;
      default:
        s.mutable_escalation()->set_summary(
            absl::StrCat("a human gave up on automatic resolution", note));
        break;
    }
    std::move(done)(absl::OkStatus());
    return;
  }
  v1::Escalation& esc = *s.mutable_escalation();
  if (esc.reason().empty()) {
    esc.set_reason(
        absl::StrCat("no resolution for ", s.analysis().signature()));
  }
  std::string tried =
      s.tried_strategies().empty()
          ? std::string("nothing was tried automatically")
          : absl::StrCat("tried: ", absl::StrJoin(s.tried_strategies(), ", "));
  esc.set_summary(absl::StrCat(s.incident().namespace_(), "/",
                               s.incident().pod_name(), " (",
                               s.analysis().signature(), "): ", tried));
  // While a blast-radius breaker is open for this workflow's scope, every
  // escalation there but the one that tripped it (a rate-limited or denied
  // attempt of the same burst, say) joins that aggregated escalation.
  bool held = s.policy().rule() == "breaker_open";
  if (Policy* policy = PolicyFor(s.has_session()); !held && policy != nullptr) {
    const std::string ns_scope =
        absl::StrCat(s.cluster(), "/", s.incident().namespace_());
    for (const v1::BreakerState& b : policy->OpenBreakers()) {
      if ((b.scope() == s.cluster() || b.scope() == ns_scope) &&
          b.workflow_id() != s.workflow_id()) {
        held = true;
        esc.set_reason(absl::StrCat(
            esc.reason(), "; held: the blast-radius breaker for ", b.scope(),
            " is open (aggregated escalation: workflow ", b.workflow_id(),
            ")"));
        break;
      }
    }
  }
  if (checkpoints_ != nullptr && config_.escalation_waits && !held) {
    // Wait for a human: persisted as waiting, no thread held. (An incident
    // held by an open breaker is part of the one aggregated escalation that
    // tripped it, and does not wait on its own.)
    std::move(done)(graph::Interrupt(esc.reason()));
    return;
  }
  std::move(done)(absl::OkStatus());
}

absl::Status ReflexionWorkflow::Decide(
    const std::string& workflow_id, absl::string_view etag,
    const v1::HumanDecision& decision) const {
  if (checkpoints_ == nullptr) {
    return absl::FailedPreconditionError("checkpointing is disabled");
  }
  switch (decision.kind()) {
    case v1::HumanDecision::KIND_RETRY:
      if (FindActionByName(decision.strategy()) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("decision.strategy: '",
                         ToValidUtf8Clipped(decision.strategy(), kMaxQuoted),
                         "' is not a catalog strategy"));
      }
      break;
    case v1::HumanDecision::KIND_MARK_RESOLVED:
      if (!decision.strategy().empty() &&
          FindActionByName(decision.strategy()) == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("decision.strategy: '",
                         ToValidUtf8Clipped(decision.strategy(), kMaxQuoted),
                         "' is not a catalog strategy"));
      }
      break;
    case v1::HumanDecision::KIND_GIVE_UP:
    case v1::HumanDecision::KIND_APPROVE:
    case v1::HumanDecision::KIND_DENY:
      break;
    default:
      return absl::InvalidArgumentError(
          "decision.kind: must be RETRY, MARK_RESOLVED, GIVE_UP, APPROVE or "
          "DENY");
  }
  if (decision.note().size() > 1024) {
    return absl::InvalidArgumentError("decision.note: at most 1024 bytes");
  }
  if (!IsValidUtf8(decision.note())) {
    return absl::InvalidArgumentError("decision.note: must be valid UTF-8");
  }
  absl::StatusOr<uint64_t> wait_step = ParseWaitEtag(etag);
  if (wait_step.ok()) {
    // Approvals answer the approval node; the other kinds human_escalation.
    REFLEXION_ASSIGN_OR_RETURN(core::Checkpoint latest,
                               checkpoints_->Latest(workflow_id));
    const bool approval = decision.kind() == v1::HumanDecision::KIND_APPROVE ||
                          decision.kind() == v1::HumanDecision::KIND_DENY;
    if (latest.step == *wait_step &&
        (latest.next_node == kApproval) != approval) {
      return absl::FailedPreconditionError(absl::StrCat(
          "decision.kind: workflow ", workflow_id, " waits in ",
          latest.next_node, ", which takes ",
          latest.next_node == kApproval ? "APPROVE or DENY"
                                        : "RETRY, MARK_RESOLVED or GIVE_UP"));
    }
  }
  if (!wait_step.ok()) {
    // A workflow that is not waiting says so, whatever the etag.
    REFLEXION_ASSIGN_OR_RETURN(core::WorkflowRecord record,
                               checkpoints_->GetWorkflow(workflow_id));
    if (record.phase != WorkflowPhase::kWaiting) {
      return absl::FailedPreconditionError(
          absl::StrCat("workflow ", workflow_id, " is ",
                       WorkflowPhaseName(record.phase), ", not waiting"));
    }
    return wait_step.status();
  }
  v1::AuditEntry entry;
  REFLEXION_RETURN_IF_ERROR(WorkflowGraph::UpdateWaiting(
      *checkpoints_, workflow_id, *wait_step,
      [&](State& s) {
        *s.mutable_decision() = decision;
        const v1::Action action = s.agent_wait().has_approval()
                                      ? s.agent_wait().approval().action()
                                      : s.escalation().recommended_action();
        entry = AuditOf(s, v1::AuditEntry::KIND_DECISION, action);
      },
      clock_->Now(), config_.durability == graph::Durability::kSync));
  // Recorded after the decision is durable (it has happened); a failure to
  // audit it is logged, the decision stands.
  entry.set_decider(v1::AuditEntry::DECIDER_HUMAN);
  entry.set_decided_by(decision.decided_by());
  entry.set_outcome(std::string(absl::AsciiStrToLower(absl::StripPrefix(
      v1::HumanDecision::Kind_Name(decision.kind()), "KIND_"))));
  entry.set_detail(absl::StrCat(
      decision.strategy().empty() ? "" : "strategy ", decision.strategy(),
      decision.strategy().empty() || decision.note().empty() ? "" : ": ",
      decision.note()));
  if (absl::StatusOr<uint64_t> seq = Audit(std::move(entry)); !seq.ok()) {
    LOG(ERROR) << workflow_id
               << ": the decision was not audited: " << seq.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ReflexionWorkflow::AnswerAgent(
    const std::string& workflow_id, uint64_t wait_step,
    const std::function<void(v1::AgentWait&)>& edit, bool resume) const {
  if (checkpoints_ == nullptr) {
    return absl::FailedPreconditionError("checkpointing is disabled");
  }
  uint64_t step = 0;
  absl::Status s = WorkflowGraph::UpdateWaiting(
      *checkpoints_, workflow_id, wait_step,
      [&](State& st) { edit(*st.mutable_agent_wait()); }, clock_->Now(),
      config_.durability == graph::Durability::kSync,
      resume ? WorkflowPhase::kRunning : WorkflowPhase::kWaiting,
      config_.keep_last_checkpoints, &step);
  if (!s.ok()) return s;
  return step;
}

absl::Status ReflexionWorkflow::Fork(const std::string& source_id,
                                     uint64_t step, const std::string& new_id,
                                     const std::string& strategy,
                                     uint64_t ordinal,
                                     const std::string& approved_by) const {
  if (checkpoints_ == nullptr) {
    return absl::FailedPreconditionError("checkpointing is disabled");
  }
  if (!strategy.empty() && FindActionByName(strategy) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("strategy: '", ToValidUtf8Clipped(strategy, kMaxQuoted),
                     "' is not a catalog strategy"));
  }
  REFLEXION_ASSIGN_OR_RETURN(core::Checkpoint from,
                             checkpoints_->Get(source_id, step));
  const bool at_escalation = from.next_node == kEscalate;
  const absl::Time now = clock_->Now();
  return WorkflowGraph::Fork(
      *checkpoints_, source_id, step, new_id,
      [&](State& s) {
        s.set_workflow_id(new_id);
        *s.mutable_started_at() = ToProto(now);
        // From the ordinal, not the id: runs with a fixed seed replay.
        s.set_rng_seed(
            StableHash(absl::StrCat("fork/", ordinal), config_.seed));
        s.clear_decision();
        if (strategy.empty()) return;
        const std::string note =
            absl::StrCat("forked from ", source_id, " step ", step);
        if (at_escalation) {
          v1::HumanDecision& d = *s.mutable_decision();
          d.set_kind(v1::HumanDecision::KIND_RETRY);
          d.set_strategy(strategy);
          d.set_note(note);
          d.set_decided_by(approved_by);
        } else {
          s.set_approved_strategy(strategy);
          s.set_approved_by(approved_by);
          s.set_max_attempts(std::max(s.max_attempts(), s.attempt() + 1));
          s.clear_no_candidate_reason();
        }
      },
      now);
}

}  // namespace reflexion::core

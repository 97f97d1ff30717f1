#include "core/reflexion/events.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"

namespace reflexion::core {
namespace {

using reflexion::v1::WorkflowEvent;
using reflexion::v1::WorkflowState;

std::string Percent(double p) { return absl::StrFormat("%.0f%%", 100 * p); }

void FillCompleted(absl::string_view node, const WorkflowState& s,
                   WorkflowEvent& ev) {
  if (node == "analyze_error" || node == "deep_analysis") {
    *ev.mutable_analysis() = s.analysis();
    std::string summary = absl::StrCat("signature ", s.analysis().signature());
    if (!s.analysis().known()) absl::StrAppend(&summary, " (unknown family)");
    if (s.analysis().lessons_size() > 0) {
      absl::StrAppend(&summary, "; ", s.analysis().lessons_size(),
                      " lessons recalled");
    }
    ev.set_summary(summary);
  } else if (node == "select_strategy") {
    *ev.mutable_selection() = s.selection();
    if (!s.no_candidate_reason().empty()) {
      ev.set_summary(
          absl::StrCat("no automatic choice: ", s.no_candidate_reason()));
    } else {
      ev.set_summary(absl::StrFormat(
          "attempt %d: %s v%d (confidence %s, %s)", s.attempt(),
          s.selection().strategy().name(), s.selection().strategy().version(),
          Percent(s.selection().confidence()),
          s.selection().selection_reason()));
    }
  } else if (node == "execute_fix") {
    *ev.mutable_execution() = s.execution();
    ev.set_summary(
        absl::StrCat(DescribeAction(s.execution().action()), " via ",
                     s.execution().executor(),
                     s.execution().deduplicated() ? " (deduplicated)" : ""));
  } else if (node == "observe_outcome") {
    const auto& o = s.observation();
    *ev.mutable_observation() = o;
    if (o.success()) {
      ev.set_summary(
          absl::StrFormat("healthy after %.0fs, stayed healthy %.0fs",
                          o.time_to_recovery_s(), o.window_s()));
    } else if (o.recovered()) {
      ev.set_summary(absl::StrFormat("recovered after %.0fs then relapsed (%s)",
                                     o.time_to_recovery_s(),
                                     o.failure_reason()));
    } else {
      ev.set_summary(absl::StrCat("still failing: ", o.failure_reason()));
    }
  } else if (node == "reflect" || node == "meta_reflect") {
    const reflexion::v1::Reflection& r = s.reflection();
    *ev.mutable_reflection() = r;
    std::string summary =
        absl::StrFormat("quality %.2f by %s", r.quality(), r.reflector());
    if (!r.fallback_reason().empty()) {
      absl::StrAppend(&summary, " (fallback: ", r.fallback_reason(), ")");
    }
    if (r.proposed_changes_size() > 0) {
      absl::StrAppend(&summary, ", proposes ", r.proposed_changes_size(),
                      " change(s)");
    }
    if (r.dropped_size() > 0) {
      absl::StrAppend(&summary,
                      ", dropped: ", absl::StrJoin(r.dropped(), "; "));
    }
    ev.set_summary(std::move(summary));
  } else if (node == "learn") {
    const auto& u = s.learning();
    *ev.mutable_learning() = u;
    std::string summary =
        absl::StrFormat("%s on %s: %s -> %s (%d trials)", u.strategy(),
                        u.signature(), Percent(u.mean_before()),
                        Percent(u.stats().mean()), u.stats().trials());
    if (u.new_version() > 0) {
      absl::StrAppend(&summary, "; new version v", u.new_version());
    }
    ev.set_summary(summary);
  } else if (node == "policy") {
    const reflexion::v1::PolicyDecision& p = s.policy();
    *ev.mutable_policy() = p;
    const char* verdict =
        p.verdict() == reflexion::v1::PolicyDecision::VERDICT_ALLOW ? "allowed"
        : p.verdict() == reflexion::v1::PolicyDecision::VERDICT_DRY_RUN
            ? "dry run"
        : p.verdict() == reflexion::v1::PolicyDecision::VERDICT_SHADOW
            ? "shadow"
            : "denied";
    ev.set_summary(absl::StrCat(verdict, " (", p.rule(),
                                "): ", DescribeAction(p.action()),
                                p.reason().empty() ? "" : "; ", p.reason()));
  } else if (node == "undo") {
    const reflexion::v1::UndoRecord& u = s.undo();
    *ev.mutable_undo() = u;
    ev.set_summary(absl::StrCat(u.applied() ? "undid " : "did not undo ",
                                u.undo_of(), ": ", u.reason(),
                                u.message().empty() ? "" : " (", u.message(),
                                u.message().empty() ? "" : ")"));
  } else if (node == "human_escalation") {
    *ev.mutable_escalation() = s.escalation();
    ev.set_summary(absl::StrCat("needs a human: ", s.escalation().reason()));
  }
}

}  // namespace

WorkflowEvent MakeWorkflowEvent(const graph::StepEvent<WorkflowState>& event) {
  WorkflowEvent ev;
  const WorkflowState& s = event.state;
  ev.set_workflow_id(std::string(event.workflow_id));
  ev.set_request_id(s.incident().request_id());
  ev.set_sequence(event.sequence);
  *ev.mutable_time() = ToProto(event.time);
  ev.set_node(std::string(event.node));
  ev.set_attempt(s.attempt());
  switch (event.phase) {
    case graph::NodePhase::kStarted:
      ev.set_phase(v1::NODE_PHASE_STARTED);
      ev.set_summary("started");
      break;
    case graph::NodePhase::kCompleted:
      ev.set_phase(v1::NODE_PHASE_COMPLETED);
      *ev.mutable_duration() = ToProto(event.duration);
      FillCompleted(event.node, s, ev);
      break;
    case graph::NodePhase::kRetrying:
      ev.set_phase(v1::NODE_PHASE_RETRYING);
      *ev.mutable_duration() = ToProto(event.duration);
      ev.set_error(ToValidUtf8(event.status.ToString()));
      ev.set_summary(
          absl::StrCat("retrying: ", ToValidUtf8(event.status.message())));
      break;
    case graph::NodePhase::kInterrupted:
      ev.set_phase(v1::NODE_PHASE_INTERRUPTED);
      *ev.mutable_duration() = ToProto(event.duration);
      if (s.agent_wait().has_action() || s.agent_wait().has_observation()) {
        // A durable wait on the cluster's agent, not on a human.
        ev.set_summary(ToValidUtf8(event.status.message()));
      } else {
        *ev.mutable_escalation() = s.escalation();
        ev.set_summary(absl::StrCat(s.agent_wait().has_approval()
                                        ? "waiting for a human's approval: "
                                        : "waiting for a human decision: ",
                                    s.escalation().reason()));
      }
      break;
    case graph::NodePhase::kFailed:
      ev.set_phase(v1::NODE_PHASE_FAILED);
      *ev.mutable_duration() = ToProto(event.duration);
      ev.set_error(ToValidUtf8(event.status.ToString()));
      ev.set_summary(
          absl::StrCat("failed: ", ToValidUtf8(event.status.message())));
      break;
  }
  return ev;
}

v1::IncidentResult MakeIncidentResult(const WorkflowRunResult& run,
                                      absl::Time end) {
  const WorkflowState& s = run.state;
  v1::IncidentResult r;
  r.set_workflow_id(s.workflow_id());
  r.set_request_id(s.incident().request_id());
  r.set_pod_name(s.incident().pod_name());
  r.set_namespace_(s.incident().namespace_());
  r.set_error_type(s.incident().error_type());
  r.set_signature(s.analysis().signature());
  r.set_attempts(s.attempt());
  if (!s.final_strategy().type().empty()) {
    *r.mutable_final_strategy() = s.final_strategy();
  }
  double wall = absl::ToDoubleSeconds(end - FromProto(s.started_at()));
  r.set_resolution_time(std::max(0.0, wall));
  r.set_simulated_resolution_time(s.executor_seconds());
  auto& sum = *r.mutable_reflexion_summary();
  sum.set_reflections_performed(s.reflections_performed());
  sum.set_strategies_learned(s.learned_strategies_size());
  sum.set_self_awareness_level(s.reflections_performed() > 0
                                   ? s.reflection_quality_sum() /
                                         s.reflections_performed()
                                   : 0.0);
  sum.set_learning_velocity(s.learning_velocity());
  r.set_sequence(run.last_sequence + 1);
  if (graph::IsInterrupt(run.status)) {
    r.set_status(v1::WORKFLOW_STATUS_WAITING);
    r.set_requires_human_intervention(true);
    r.set_escalation_reason(s.escalation().reason());
    r.set_etag(WaitEtag(run.checkpoint_step));
  } else if (!run.status.ok()) {
    r.set_status(v1::WORKFLOW_STATUS_FAILED);
    r.set_error(ToValidUtf8(run.status.ToString()));
    r.set_requires_human_intervention(true);
  } else if (s.has_undo() && s.undo().requested_by() != "policy" &&
             run.last_node == "undo") {
    // An operator's undo: done or not, the pod is back in human hands.
    r.set_status(v1::WORKFLOW_STATUS_ESCALATED);
    r.set_requires_human_intervention(true);
    r.set_escalation_reason(absl::StrCat(
        s.undo().applied() ? "undo applied" : "undo not applied", " for ",
        s.undo().undo_of(), " at the request of ", s.undo().requested_by(),
        s.undo().message().empty() ? "" : ": ", s.undo().message()));
  } else if (s.resolved_by_human()) {
    r.set_status(v1::WORKFLOW_STATUS_RESOLVED);
    r.set_success(true);
  } else if (s.observation().success() && run.last_node == "learn") {
    r.set_status(v1::WORKFLOW_STATUS_RESOLVED);
    r.set_success(true);
  } else {
    r.set_status(v1::WORKFLOW_STATUS_ESCALATED);
    r.set_requires_human_intervention(true);
    r.set_escalation_reason(s.escalation().reason());
  }
  return r;
}

}  // namespace reflexion::core

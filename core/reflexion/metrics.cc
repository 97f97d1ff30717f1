#include "core/reflexion/metrics.h"

#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/reflexion/events.h"
#include "core/reflexion/time_util.h"
#include "core/status_macros.h"
#include "glog/logging.h"
#include "reflexion/v1/reflexion.pb.h"

namespace reflexion::core {
namespace {

struct Incident {
  std::string error_type;
  int64_t order;  // index of its first episode
  int max_attempt = 0;
  bool resolved = false;
  bool first_attempt = false;
};

// A meta reflection's recommendation not yet followed.
struct Recommendation {
  std::string strategy;
};

}  // namespace

absl::StatusOr<v1::GetMetricsResponse> ComputeLearningMetrics(
    KnowledgeStore& store) {
  absl::flat_hash_map<std::string, Incident> incidents;
  std::vector<double> qualities;
  double brier_sum = 0;
  int64_t episodes = 0;
  // Per signature, recommendations waiting for a later attempt running
  // them. Bounded by the episodes of this pass.
  absl::flat_hash_map<std::string, std::vector<Recommendation>> pending;
  int64_t followed = 0, followed_success = 0;
  REFLEXION_RETURN_IF_ERROR(store.ForEachEpisode([&](const v1::Episode& e) {
    auto [it, inserted] = incidents.try_emplace(e.workflow_id());
    Incident& inc = it->second;
    if (inserted) {
      inc.error_type = e.error_type();
      inc.order = episodes;
    }
    inc.max_attempt = std::max(inc.max_attempt, e.attempt());
    if (e.success()) {
      inc.resolved = true;
      if (e.attempt() == 1) inc.first_attempt = true;
    }
    double miss = e.confidence() - (e.success() ? 1.0 : 0.0);
    brier_sum += miss * miss;
    qualities.push_back(e.reflection_quality());
    ++episodes;
    // First: does this attempt follow earlier recommendations? (An episode
    // never follows its own.)
    if (auto p = pending.find(e.signature()); p != pending.end()) {
      std::vector<Recommendation>& recs = p->second;
      auto follows = [&e](const Recommendation& r) {
        return r.strategy == e.strategy();
      };
      const auto n = std::count_if(recs.begin(), recs.end(), follows);
      followed += n;
      if (e.success()) followed_success += n;
      recs.erase(std::remove_if(recs.begin(), recs.end(), follows), recs.end());
      if (recs.empty()) pending.erase(p);
    }
    if (e.meta_reflection() && !e.meta_recommended_strategy().empty()) {
      pending[e.signature()].push_back({e.meta_recommended_strategy()});
    }
    return true;
  }));

  v1::GetMetricsResponse m;
  m.set_episodes(episodes);
  m.set_incidents(static_cast<int64_t>(incidents.size()));
  std::map<std::string, std::vector<const Incident*>> by_type;
  double resolved = 0, first = 0, attempts = 0;
  for (const auto& [id, inc] : incidents) {
    resolved += inc.resolved;
    first += inc.first_attempt;
    attempts += inc.max_attempt;
    by_type[inc.error_type].push_back(&inc);
  }
  const double n = static_cast<double>(incidents.size());
  if (n > 0) {
    m.set_success_rate(resolved / n);
    m.set_first_attempt_success_rate(first / n);
    m.set_mean_attempts(attempts / n);
  }
  if (episodes > 0) {
    m.set_brier_score(brier_sum / static_cast<double>(episodes));
    double qsum = 0;
    for (double q : qualities) qsum += q;
    m.set_mean_reflection_quality(qsum / static_cast<double>(qualities.size()));
  }
  if (qualities.size() >= 2) {
    size_t half = qualities.size() / 2;
    double old_sum = 0, new_sum = 0;
    for (size_t i = 0; i < half; ++i) old_sum += qualities[i];
    for (size_t i = qualities.size() - half; i < qualities.size(); ++i) {
      new_sum += qualities[i];
    }
    m.set_reflection_quality_trend(new_sum / half - old_sum / half);
  }
  m.set_meta_recommendations_followed(followed);
  if (followed > 0) {
    m.set_meta_recommendation_success_rate(
        static_cast<double>(followed_success) / static_cast<double>(followed));
  }
  for (auto& [type, list] : by_type) {
    std::sort(list.begin(), list.end(),
              [](const Incident* a, const Incident* b) {
                return a->order < b->order;
              });
    v1::ErrorTypeMetrics* t = m.add_error_types();
    t->set_error_type(type);
    t->set_incidents(static_cast<int64_t>(list.size()));
    double r = 0, f = 0, a = 0;
    for (const Incident* inc : list) {
      r += inc->resolved;
      f += inc->first_attempt;
      a += inc->max_attempt;
    }
    const double cnt = static_cast<double>(list.size());
    t->set_success_rate(r / cnt);
    t->set_first_attempt_success_rate(f / cnt);
    t->set_mean_attempts(a / cnt);
    if (list.size() >= static_cast<size_t>(kMinIncidentsForThirds)) {
      const size_t third = list.size() / 3;
      double head = 0, tail = 0;
      for (size_t i = 0; i < third; ++i) head += list[i]->first_attempt;
      for (size_t i = list.size() - third; i < list.size(); ++i) {
        tail += list[i]->first_attempt;
      }
      t->set_first_third_first_attempt_success(head / third);
      t->set_last_third_first_attempt_success(tail / third);
      t->set_learning_velocity(tail / third - head / third);
    }
  }
  return m;
}

absl::Status AddWorkflowMetrics(CheckpointStore& checkpoints,
                                v1::GetMetricsResponse& m) {
  m.set_workflow_counts_stored(true);
  int64_t started = 0, resolved = 0, escalated = 0, before_attempt = 0;
  double wall_sum = 0, simulated_sum = 0;
  for (WorkflowPhase phase : {WorkflowPhase::kRunning, WorkflowPhase::kWaiting,
                              WorkflowPhase::kCompleted, WorkflowPhase::kFailed,
                              WorkflowPhase::kCancelled}) {
    REFLEXION_ASSIGN_OR_RETURN(std::vector<WorkflowRecord> records,
                               checkpoints.ListByPhase(phase));
    started += static_cast<int64_t>(records.size());
    switch (phase) {
      case WorkflowPhase::kWaiting:
        m.set_workflows_waiting(static_cast<int64_t>(records.size()));
        continue;
      case WorkflowPhase::kFailed:
        m.set_workflows_failed(static_cast<int64_t>(records.size()));
        continue;
      case WorkflowPhase::kCancelled:
        m.set_workflows_cancelled(static_cast<int64_t>(records.size()));
        continue;
      case WorkflowPhase::kRunning:
        continue;
      case WorkflowPhase::kCompleted:
        break;
    }
    for (const WorkflowRecord& rec : records) {
      absl::StatusOr<Checkpoint> cp = checkpoints.Latest(rec.workflow_id);
      if (absl::IsNotFound(cp.status())) {
        LOG(WARNING) << "metrics: completed workflow " << rec.workflow_id
                     << " has no checkpoint; its outcome is not counted";
        continue;
      }
      if (!cp.ok()) return cp.status();
      WorkflowRunResult run;
      run.status = absl::OkStatus();
      run.last_sequence = cp->last_sequence;
      run.steps = 0;
      run.last_node = cp->node;
      run.checkpoint_step = cp->step;
      if (!run.state.ParseFromString(cp->state)) {
        LOG(WARNING) << "metrics: completed workflow " << rec.workflow_id
                     << " has an undecodable checkpoint " << cp->step
                     << "; its outcome is not counted";
        continue;
      }
      const v1::IncidentResult r = MakeIncidentResult(run, cp->time);
      if (r.status() == v1::WORKFLOW_STATUS_RESOLVED) {
        ++resolved;
        wall_sum += r.resolution_time();
        simulated_sum += r.simulated_resolution_time();
      } else if (r.status() == v1::WORKFLOW_STATUS_ESCALATED) {
        ++escalated;
        if (run.state.attempt() == 0) ++before_attempt;
      }
    }
  }
  m.set_workflows_started(started);
  m.set_workflows_resolved(resolved);
  m.set_workflows_escalated(escalated);
  m.set_escalated_before_attempt(before_attempt);
  if (resolved > 0) {
    m.set_mean_time_to_resolution_s(wall_sum / static_cast<double>(resolved));
    m.set_mean_simulated_resolution_time_s(simulated_sum /
                                           static_cast<double>(resolved));
  }
  return absl::OkStatus();
}

}  // namespace reflexion::core

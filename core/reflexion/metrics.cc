#include "core/reflexion/metrics.h"

#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "core/status_macros.h"
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

double Ratio(double num, double den) { return den > 0 ? num / den : 0.0; }

}  // namespace

absl::StatusOr<v1::GetMetricsResponse> ComputeLearningMetrics(
    KnowledgeStore& store) {
  absl::flat_hash_map<std::string, Incident> incidents;
  std::vector<double> qualities;
  double brier_sum = 0, ttr_sum = 0;
  int64_t episodes = 0, ttr_n = 0;
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
      ttr_sum += e.time_to_recovery_s();
      ++ttr_n;
    }
    double miss = e.confidence() - (e.success() ? 1.0 : 0.0);
    brier_sum += miss * miss;
    qualities.push_back(e.reflection_quality());
    ++episodes;
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
  double n = static_cast<double>(incidents.size());
  m.set_success_rate(Ratio(resolved, n));
  m.set_first_attempt_success_rate(Ratio(first, n));
  m.set_mean_attempts(Ratio(attempts, n));
  m.set_mean_time_to_resolution_s(Ratio(ttr_sum, ttr_n));
  m.set_brier_score(Ratio(brier_sum, episodes));
  double qsum = 0;
  for (double q : qualities) qsum += q;
  m.set_mean_reflection_quality(Ratio(qsum, qualities.size()));
  if (qualities.size() >= 2) {
    size_t half = qualities.size() / 2;
    double old_sum = 0, new_sum = 0;
    for (size_t i = 0; i < half; ++i) old_sum += qualities[i];
    for (size_t i = qualities.size() - half; i < qualities.size(); ++i) {
      new_sum += qualities[i];
    }
    m.set_reflection_quality_trend(new_sum / half - old_sum / half);
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
    double cnt = static_cast<double>(list.size());
    t->set_success_rate(Ratio(r, cnt));
    t->set_first_attempt_success_rate(Ratio(f, cnt));
    t->set_mean_attempts(Ratio(a, cnt));
    size_t third = list.size() / 3;
    if (third > 0) {
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

}  // namespace reflexion::core

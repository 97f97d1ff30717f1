#include "core/sim/learning.h"

#include <algorithm>
#include <memory>
#include <random>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/graph/task_runner.h"
#include "core/ports/clock.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/analyzer.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/events.h"
#include "core/reflexion/heuristic_reflector.h"
#include "core/reflexion/selector.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/workflow.h"
#include "core/sim/scenario.h"
#include "core/sim/simulated_cluster.h"
#include "core/sim/stable_hash.h"
#include "core/status_macros.h"

namespace reflexion::sim {
namespace {

namespace v1 = ::reflexion::v1;

constexpr absl::string_view kNamespace = "bench";
constexpr int kMaxPodTries = 1000;
constexpr int kMaxIncidents = 100000;
// The workflow's default observation window (workflow.observation_window).
constexpr absl::Duration kWindow = absl::Seconds(120);

// Runs a synchronous port call of the simulated cluster.
template <typename T, typename Start>
absl::StatusOr<T> Now(Start&& start) {
  std::optional<absl::StatusOr<T>> out;
  start([&out](absl::StatusOr<T> r) { out = std::move(r); });
  if (!out.has_value()) {
    return absl::InternalError("the simulated cluster did not answer at once");
  }
  return *std::move(out);
}

absl::StatusOr<v1::Diagnosis> DiagnoseNow(SimulatedCluster& c,
                                          const v1::Incident& in) {
  return Now<v1::Diagnosis>(
      [&](auto done) { c.Diagnose(in, std::move(done)); });
}

// The analysis as analyze_error (and deep_analysis) make it.
v1::Analysis AnalysisOf(const v1::Incident& in, const v1::Diagnosis& dx) {
  v1::Analysis a = core::Analyze(in, dx, false);
  if (core::NeedsDeepAnalysis(a)) a = core::Analyze(in, dx, true);
  return a;
}

// The error type an incident of catch-all scenario `s` reports.
std::string CatchAllType(const Scenario& s,
                         const std::vector<Scenario>& scenarios) {
  auto listed = [&](const std::string& t) {
    for (const Scenario& o : scenarios) {
      if (o.Matches(t)) return true;
    }
    return false;
  };
  if (s.signals.container_statuses_size() > 0) {
    const v1::ContainerStatus& c = s.signals.container_statuses(0);
    for (const std::string& t :
         {c.last_termination_reason(), c.waiting_reason()}) {
      if (!t.empty() && !listed(t)) return t;
    }
  }
  return "Unknown";
}

// A candidate strategy of an incident: eligible (automated, buildable).
struct Candidate {
  v1::Strategy strategy;
  v1::Action action;
};

// The eligible automated strategies for the analysis, in catalog order,
// built for the incident (version-1 strategies: the baselines do not
// change parameters), minus `tried`.
std::vector<Candidate> Eligible(const v1::Analysis& analysis,
                                const v1::Incident& in, const v1::Diagnosis& dx,
                                const std::vector<std::string>& tried,
                                absl::string_view key) {
  static const auto* defaults =
      new absl::flat_hash_map<std::string, v1::Strategy>([] {
        absl::flat_hash_map<std::string, v1::Strategy> m;
        for (v1::Strategy& s : core::DefaultStrategies(absl::UnixEpoch())) {
          std::string name = s.name();
          m.emplace(std::move(name), std::move(s));
        }
        return m;
      }());
  std::vector<Candidate> out;
  for (const std::string& name : core::StrategiesFor(analysis.error_family())) {
    if (std::find(tried.begin(), tried.end(), name) != tried.end()) continue;
    const core::ActionSpec* spec = core::FindActionByName(name);
    if (spec == nullptr || spec->tier == v1::SAFETY_TIER_C) continue;
    auto it = defaults->find(name);
    if (it == defaults->end()) continue;
    absl::StatusOr<v1::Action> action =
        core::BuildAction(it->second, in, dx, key);
    if (!action.ok()) continue;
    out.push_back({it->second, *std::move(action)});
  }
  return out;
}

// The probability that `action` fixes scenario `s` for good; with
// `tune`, the memory factor is first raised to what the scenario needs
// (within the catalog's bounds).
double HoldProbability(const Scenario& s, v1::Action& action, bool tune) {
  if (s.FindRegression(action.type()) != nullptr) return 0;
  const ActionModel* m = s.FindAction(action.type());
  if (m == nullptr) return 0;
  if (tune && action.type() == v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT &&
      m->min_memory_factor.has_value() &&
      action.params().memory_factor() < *m->min_memory_factor) {
    const core::ParamSpec* p = core::ParamOf(action.type());
    const double hi = p != nullptr ? p->max : *m->min_memory_factor;
    action.mutable_params()->set_memory_factor(
        std::min(hi, *m->min_memory_factor));
  }
  return m->SuccessProbability(action.params()) * (1 - m->relapse);
}

// The oracle's choice among `candidates`: index and probability, or -1.
std::pair<int, double> OracleChoice(const Scenario& s,
                                    std::vector<Candidate>& candidates) {
  int best = -1;
  double best_p = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const double p = HoldProbability(s, candidates[i].action, true);
    if (p > best_p) {
      best_p = p;
      best = static_cast<int>(i);
    }
  }
  if (best_p < kFixThreshold) return {-1, best_p};
  return {best, best_p};
}

absl::StatusOr<const Scenario*> Find(const std::vector<Scenario>& scenarios,
                                     absl::string_view id) {
  for (const Scenario& s : scenarios) {
    if (s.id == id) return &s;
  }
  return absl::InternalError(absl::StrCat("no scenario ", id));
}

// One incident under a baseline policy (everything but ours).
class Baseline {
 public:
  Baseline(BenchPolicy policy, const BenchRunOptions& options,
           const std::vector<Scenario>& scenarios, SimulatedCluster* cluster)
      : policy_(policy),
        options_(options),
        scenarios_(scenarios),
        cluster_(cluster),
        rng_(StableHash(options.seed).Add("random-policy").Finish()) {}

  absl::StatusOr<BenchEpisode> Run(const BenchIncident& bi, int index) {
    BenchEpisode e;
    e.index = index;
    e.scenario_id = bi.scenario_id;
    e.fixable = bi.fixable;
    const v1::Incident& in = bi.incident;
    REFLEXION_ASSIGN_OR_RETURN(v1::Diagnosis dx, DiagnoseNow(*cluster_, in));
    const v1::Analysis analysis = AnalysisOf(in, dx);
    e.signature = analysis.signature();
    REFLEXION_ASSIGN_OR_RETURN(
        std::string scenario_id,
        cluster_->ScenarioOf(in.namespace_(), in.pod_name()));
    REFLEXION_ASSIGN_OR_RETURN(const Scenario* scenario,
                               Find(scenarios_, scenario_id));
    std::vector<std::string> tried;
    for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
      const std::string key =
          absl::StrCat(BenchPolicyName(policy_), "-", index, "/", attempt);
      std::vector<Candidate> candidates =
          Eligible(analysis, in, dx, tried, key);
      int chosen = -1;
      std::optional<double> predicted;
      switch (policy_) {
        case BenchPolicy::kRandom:
          if (!candidates.empty()) {
            chosen = static_cast<int>(std::uniform_int_distribution<size_t>(
                0, candidates.size() - 1)(rng_));
          }
          break;
        case BenchPolicy::kStatic:
          if (!candidates.empty()) chosen = 0;
          break;
        case BenchPolicy::kGreedy: {
          double best = -1;
          for (size_t i = 0; i < candidates.size(); ++i) {
            const double m = Mean(analysis, candidates[i].strategy.name());
            if (m > best) {
              best = m;
              chosen = static_cast<int>(i);
            }
          }
          if (chosen >= 0 &&
              best < core::SelectorOptions{}.min_candidate_confidence) {
            chosen = -1;
          }
          if (chosen >= 0) predicted = best;
          break;
        }
        case BenchPolicy::kOracle: {
          auto [i, p] = OracleChoice(*scenario, candidates);
          chosen = i;
          if (chosen >= 0) predicted = p;
          break;
        }
        case BenchPolicy::kOurs:
          return absl::InternalError("ours runs through the workflow");
      }
      if (chosen < 0) {
        e.escalated = true;
        return e;
      }
      Candidate& c = candidates[chosen];
      tried.push_back(c.strategy.name());
      REFLEXION_ASSIGN_OR_RETURN(v1::ExecutionResult result,
                                 Now<v1::ExecutionResult>([&](auto done) {
                                   cluster_->Execute(c.action, std::move(done));
                                 }));
      REFLEXION_ASSIGN_OR_RETURN(
          v1::Observation obs, Now<v1::Observation>([&](auto done) {
            cluster_->Observe(c.action, kWindow, std::move(done));
          }));
      const bool success = result.applied() && obs.success();
      e.attempts.push_back({c.strategy.name(), success, predicted});
      Learn(analysis, c.strategy.name(), success);
      if (success) {
        e.resolved = true;
        return e;
      }
    }
    e.escalated = true;  // attempts exhausted: a human takes over
    return e;
  }

 private:
  struct Beta {
    double a;
    double b;
  };
  Beta& PosteriorOf(const v1::Analysis& analysis, const std::string& name) {
    const std::string k = absl::StrCat(analysis.signature(), "\t", name);
    auto it = posterior_.find(k);
    if (it == posterior_.end()) {
      core::Prior p =
          core::PriorFor(analysis.error_family(), analysis.cause(), name);
      it = posterior_.emplace(k, Beta{p.alpha, p.beta}).first;
    }
    return it->second;
  }
  double Mean(const v1::Analysis& analysis, const std::string& name) {
    const Beta& b = PosteriorOf(analysis, name);
    return b.a / (b.a + b.b);
  }
  void Learn(const v1::Analysis& analysis, const std::string& name,
             bool success) {
    Beta& b = PosteriorOf(analysis, name);
    (success ? b.a : b.b) += 1;
  }

  const BenchPolicy policy_;
  const BenchRunOptions options_;
  const std::vector<Scenario>& scenarios_;
  SimulatedCluster* cluster_;
  std::mt19937_64 rng_;
  // By signature and strategy: bounded by the signatures of the scenario
  // document times the catalog.
  absl::flat_hash_map<std::string, Beta> posterior_;
};

// Ours: the service's workflow, one incident after the other.
absl::StatusOr<std::vector<BenchEpisode>> RunOurs(
    SimulatedCluster* cluster, const std::vector<BenchIncident>& incidents,
    const BenchRunOptions& options, std::vector<BenchVersion>* versions) {
  core::FakeClock clock;
  core::InMemoryKnowledgeStore store;
  core::HeuristicReflector reflector;
  core::WorkflowConfig config;
  config.seed = options.seed;
  config.max_attempts = options.max_attempts;
  config.observation_window = kWindow;
  if (options.cost_escalation.has_value()) {
    config.selector.cost_escalation = *options.cost_escalation;
  }
  if (options.cost_failed_attempt.has_value()) {
    config.selector.cost_failed_attempt = *options.cost_failed_attempt;
  }
  core::ReflexionWorkflow workflow(config, &store, cluster, &reflector, &clock);
  REFLEXION_RETURN_IF_ERROR(workflow.Init());
  graph::ThreadPool pool(1);
  std::vector<BenchEpisode> out;
  out.reserve(incidents.size());
  // The latest version of each strategy seen so far.
  absl::flat_hash_map<std::string, int> seen;
  auto note_versions = [&](size_t before) -> absl::Status {
    REFLEXION_ASSIGN_OR_RETURN(std::vector<v1::Strategy> latest,
                               store.ListStrategies());
    for (const v1::Strategy& s : latest) {
      int& known = seen[s.name()];
      if (known == 0) known = 1;  // the catalog's
      if (s.version() <= known) continue;
      REFLEXION_ASSIGN_OR_RETURN(std::vector<v1::Strategy> history,
                                 store.GetStrategyHistory(s.name()));
      for (const v1::Strategy& h : history) {
        if (h.version() > known && versions != nullptr) {
          versions->push_back({static_cast<int>(before), h});
        }
      }
      known = s.version();
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < incidents.size(); ++i) {
    if (static_cast<int>(i) == options.plant_bad_version_at) {
      REFLEXION_RETURN_IF_ERROR(note_versions(i));
      REFLEXION_ASSIGN_OR_RETURN(
          std::vector<v1::Strategy> history,
          store.GetStrategyHistory("increase_memory_limit"));
      if (history.empty()) {
        return absl::InternalError("no increase_memory_limit to plant over");
      }
      v1::Strategy bad = history.back();
      bad.set_parent_version(bad.version());
      bad.set_version(bad.version() + 1);
      const core::ParamSpec* spec =
          core::ParamOf(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
      bad.mutable_params()->set_memory_factor(spec != nullptr ? spec->min
                                                              : 1.1);
      // As if a reflection (an LLM's, say) had proposed it: the automatic
      // rollback judges only versions learned from reflections.
      bad.set_author("reflector:planted");
      bad.set_reason(
          "planted by --plant_bad_version: the smallest raise, too small for "
          "every OOM");
      *bad.mutable_created_at() = core::ToProto(clock.Now());
      REFLEXION_RETURN_IF_ERROR(store.PutStrategyVersion(bad));
    }
    if (versions != nullptr) REFLEXION_RETURN_IF_ERROR(note_versions(i));
    const std::string id = absl::StrCat("bench-", i + 1);
    absl::Notification finished;
    v1::IncidentResult result;
    absl::Status status;
    workflow.Start(id, incidents[i].incident, i + 1, &pool, nullptr,
                   [&](core::WorkflowRunResult run) {
                     status = run.status;
                     result = core::MakeIncidentResult(run, clock.Now());
                     finished.Notify();
                   });
    finished.WaitForNotification();
    if (!status.ok()) {
      return absl::Status(status.code(),
                          absl::StrCat("incident ", i, ": ", status.message()));
    }
    clock.Advance(absl::Minutes(5));
    core::EpisodeQuery q;
    q.workflow_id = id;
    q.page_size = 1000;
    REFLEXION_ASSIGN_OR_RETURN(core::EpisodePage page, store.ListEpisodes(q));
    std::vector<v1::Episode>& eps = page.episodes;
    std::sort(eps.begin(), eps.end(),
              [](const v1::Episode& a, const v1::Episode& b) {
                return a.attempt() < b.attempt();
              });
    BenchEpisode e;
    e.index = static_cast<int>(i);
    e.signature = result.signature();
    e.scenario_id = incidents[i].scenario_id;
    e.fixable = incidents[i].fixable;
    for (const v1::Episode& ep : eps) {
      e.attempts.push_back({ep.strategy(), ep.success(), ep.confidence()});
    }
    e.resolved = result.success();
    e.escalated = !result.success();
    out.push_back(std::move(e));
  }
  if (versions != nullptr) {
    REFLEXION_RETURN_IF_ERROR(note_versions(incidents.size()));
  }
  return out;
}

}  // namespace

absl::string_view BenchPolicyName(BenchPolicy policy) {
  switch (policy) {
    case BenchPolicy::kRandom:
      return "random";
    case BenchPolicy::kStatic:
      return "static";
    case BenchPolicy::kGreedy:
      return "greedy";
    case BenchPolicy::kOurs:
      return "ours";
    case BenchPolicy::kOracle:
      return "oracle";
  }
  return "";
}

absl::StatusOr<BenchPolicy> BenchPolicyFromName(absl::string_view name) {
  for (BenchPolicy p : kBenchPolicies) {
    if (BenchPolicyName(p) == name) return p;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("policy \"", name,
                   "\" is not one of random, static, greedy, ours, oracle"));
}

int BenchEpisode::Wasted() const {
  int wasted = 0;
  for (const BenchAttempt& a : attempts) wasted += !a.success;
  return wasted;
}

bool BenchEpisode::FirstDecisionRight() const {
  if (!attempts.empty()) return attempts.front().success;
  return escalated && !fixable;
}

absl::StatusOr<std::vector<BenchIncident>> MakeBenchIncidents(
    absl::string_view scenarios_yaml, uint64_t seed, int count) {
  if (count < 1 || count > kMaxIncidents) {
    return absl::InvalidArgumentError(absl::StrCat(
        "incidents: ", count, " is outside [1, ", kMaxIncidents, "]"));
  }
  REFLEXION_ASSIGN_OR_RETURN(std::vector<Scenario> scenarios,
                             ParseScenarios(scenarios_yaml));
  // A scratch cluster with the benchmark's simulator seed: which pod names
  // land on which scenario.
  REFLEXION_ASSIGN_OR_RETURN(std::unique_ptr<SimulatedCluster> scratch,
                             SimulatedCluster::FromYaml(scenarios_yaml, seed));
  double total = 0;
  for (const Scenario& s : scenarios) total += s.weight;
  std::vector<BenchIncident> out;
  out.reserve(count);
  for (int i = 0; i < count; ++i) {
    const double u =
        StableHash(seed).Add("bench-scenario").Add(uint64_t(i)).Unit() * total;
    size_t pick = scenarios.size() - 1;
    double cumulative = 0;
    for (size_t k = 0; k < scenarios.size(); ++k) {
      cumulative += scenarios[k].weight;
      if (u < cumulative) {
        pick = k;
        break;
      }
    }
    const Scenario& s = scenarios[pick];
    std::string type;
    if (s.IsCatchAll()) {
      type = CatchAllType(s, scenarios);
    } else {
      const size_t n = s.error_types.size();
      type = s.error_types
                 [StableHash(seed).Add("bench-type").Add(uint64_t(i)).Finish() %
                  n];
    }
    BenchIncident bi;
    bool found = false;
    for (int j = 0; j < kMaxPodTries && !found; ++j) {
      v1::Incident in;
      in.set_namespace_(std::string(kNamespace));
      in.set_pod_name(absl::StrCat(s.id, "-", i, "-", j));
      in.set_error_type(type);
      REFLEXION_ASSIGN_OR_RETURN(v1::Diagnosis dx, DiagnoseNow(*scratch, in));
      REFLEXION_ASSIGN_OR_RETURN(
          std::string got, scratch->ScenarioOf(in.namespace_(), in.pod_name()));
      if (got != s.id) continue;
      found = true;
      const v1::Analysis analysis = AnalysisOf(in, dx);
      std::vector<Candidate> candidates =
          Eligible(analysis, in, dx, {}, "ground-truth");
      auto [best, p] = OracleChoice(s, candidates);
      bi.incident = std::move(in);
      bi.scenario_id = s.id;
      bi.signature = analysis.signature();
      bi.fixable = best >= 0;
      bi.best_strategy = best >= 0 ? candidates[best].strategy.name() : "";
      bi.best_probability = p;
    }
    if (!found) {
      return absl::FailedPreconditionError(absl::StrCat(
          "no pod name within ", kMaxPodTries, " tries lands on scenario \"",
          s.id, "\" for error type ", type,
          ": its weight is tiny beside the others listing that type"));
    }
    out.push_back(std::move(bi));
  }
  return out;
}

absl::StatusOr<std::vector<BenchEpisode>> RunBenchPolicy(
    absl::string_view scenarios_yaml,
    const std::vector<BenchIncident>& incidents, const BenchRunOptions& options,
    std::vector<BenchVersion>* versions) {
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError("max_attempts must be at least 1");
  }
  REFLEXION_ASSIGN_OR_RETURN(std::vector<Scenario> scenarios,
                             ParseScenarios(scenarios_yaml));
  REFLEXION_ASSIGN_OR_RETURN(
      std::unique_ptr<SimulatedCluster> cluster,
      SimulatedCluster::FromYaml(scenarios_yaml, options.seed));
  if (options.policy == BenchPolicy::kOurs) {
    return RunOurs(cluster.get(), incidents, options, versions);
  }
  Baseline baseline(options.policy, options, scenarios, cluster.get());
  std::vector<BenchEpisode> out;
  out.reserve(incidents.size());
  for (size_t i = 0; i < incidents.size(); ++i) {
    REFLEXION_ASSIGN_OR_RETURN(BenchEpisode e,
                               baseline.Run(incidents[i], static_cast<int>(i)));
    out.push_back(std::move(e));
  }
  return out;
}

BenchFigures Figures(const std::vector<BenchEpisode>& episodes, size_t from,
                     size_t to) {
  BenchFigures f;
  to = std::min(to, episodes.size());
  double brier = 0;
  int predictions = 0;
  int first = 0, right = 0;
  for (size_t i = from; i < to; ++i) {
    const BenchEpisode& e = episodes[i];
    ++f.episodes;
    f.attempts += static_cast<int>(e.attempts.size());
    f.wasted += e.Wasted();
    f.escalations += e.escalated;
    f.resolved += e.resolved;
    first += !e.attempts.empty() && e.attempts.front().success;
    right += e.FirstDecisionRight();
    for (const BenchAttempt& a : e.attempts) {
      if (!a.predicted.has_value()) continue;
      const double d = *a.predicted - (a.success ? 1.0 : 0.0);
      brier += d * d;
      ++predictions;
    }
  }
  if (f.episodes > 0) {
    f.first_attempt_success = static_cast<double>(first) / f.episodes;
    f.first_decision_right = static_cast<double>(right) / f.episodes;
  }
  if (predictions > 0) f.brier = brier / predictions;
  return f;
}

std::optional<double> FirstDecisionRightAfter(
    const std::vector<BenchEpisode>& episodes, int after) {
  absl::flat_hash_map<std::string, int> seen;
  int n = 0, right = 0;
  for (const BenchEpisode& e : episodes) {
    if (seen[e.signature]++ < after) continue;
    ++n;
    right += e.FirstDecisionRight();
  }
  if (n == 0) return std::nullopt;
  return static_cast<double>(right) / n;
}

}  // namespace reflexion::sim

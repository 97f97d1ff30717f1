// The learning benchmark: five policies side by side on the same incidents
// and seeds of a scenario file (core/sim/learning.h). Prints a summary per
// policy, writes learning.csv (one row per seed x policy x window, plus the
// mean over seeds), summary.csv and, when gnuplot is on PATH, PNG plots of
// the learning curves. See bench/README.md.
//
//   learning_bench [--incidents 400] [--seeds 1,2,3] [--window 50]
//                  [--out DIR] [--scenarios FILE | FILE]

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/sim/default_scenarios.h"
#include "core/sim/learning.h"
#include "glog/logging.h"

ABSL_FLAG(int, incidents, 400, "incidents per run (1..100000)");
ABSL_FLAG(std::string, seeds, "1,2,3",
          "comma-separated seeds; each is simulator.seed and reflexion.seed "
          "of one run of every policy");
ABSL_FLAG(int, window, 50, "episodes per window of the learning curves");
ABSL_FLAG(std::string, out, "learning-out",
          "directory for learning.csv, summary.csv and the PNG plots");
ABSL_FLAG(std::string, scenarios, "",
          "scenario file (core/sim/scenarios.yaml's format); empty: the "
          "embedded core/sim/scenarios.yaml");
ABSL_FLAG(double, cost_escalation, 0,
          "ours' reflexion.cost_escalation (0: the server's default)");
ABSL_FLAG(double, cost_failed_attempt, 0,
          "ours' reflexion.cost_failed_attempt (0: the server's default)");
ABSL_FLAG(int, plant_bad_version, 0,
          "ours: before this incident (1-based; 0: never) make an "
          "increase_memory_limit x1.1 authored reflector:planted current, to "
          "watch the automatic rollback");
ABSL_FLAG(std::string, trace, "",
          "print every episode of this scenario id under ours and the oracle "
          "(first seed): each attempt with its predicted success");
ABSL_FLAG(int, after, 20,
          "first decision right is also reported over the episodes whose "
          "signature had at least this many earlier episodes");

namespace {

using reflexion::sim::BenchEpisode;
using reflexion::sim::BenchFigures;
using reflexion::sim::BenchPolicy;

std::string Opt(const std::optional<double>& v, const char* fmt = "%.4f") {
  return v.has_value() ? absl::StrFormat(fmt, *v) : std::string();
}

bool OnPath(const std::string& tool) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  for (absl::string_view dir : absl::StrSplit(path, ':')) {
    std::string p = absl::StrCat(dir, "/", tool);
    if (access(p.c_str(), X_OK) == 0) return true;
  }
  return false;
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / v.size();
}
std::optional<double> MeanOpt(const std::vector<std::optional<double>>& v) {
  double s = 0;
  int n = 0;
  for (const auto& x : v) {
    if (x.has_value()) {
      s += *x;
      ++n;
    }
  }
  if (n == 0) return std::nullopt;
  return s / n;
}

int Fail(const std::string& what) {
  std::fprintf(stderr, "learning_bench: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  // The workflow logs each automatic rollback; the table below shows them.
  FLAGS_minloglevel = google::GLOG_WARNING;
  std::string file = absl::GetFlag(FLAGS_scenarios);
  if (args.size() > 2) return Fail("at most one scenario file");
  if (args.size() == 2) {
    if (!file.empty()) return Fail("a scenario file and --scenarios: one only");
    file = args[1];
  }
  const int n = absl::GetFlag(FLAGS_incidents);
  const int window = absl::GetFlag(FLAGS_window);
  const int after = absl::GetFlag(FLAGS_after);
  if (window < 1) return Fail("--window must be at least 1");
  if (after < 0) return Fail("--after must be at least 0");
  std::vector<uint64_t> seeds;
  for (absl::string_view s :
       absl::StrSplit(absl::GetFlag(FLAGS_seeds), ',', absl::SkipEmpty())) {
    uint64_t v = 0;
    if (!absl::SimpleAtoi(s, &v)) {
      return Fail(absl::StrCat("--seeds: \"", s, "\" is not a number"));
    }
    seeds.push_back(v);
  }
  if (seeds.empty()) return Fail("--seeds: give at least one seed");

  std::string yaml;
  std::string suite = "embedded";
  if (file.empty()) {
    yaml = std::string(reflexion::sim::DefaultScenariosYaml());
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) return Fail(absl::StrCat("cannot read scenario file ", file));
    std::ostringstream text;
    text << in.rdbuf();
    yaml = text.str();
    suite = std::filesystem::path(file).stem().string();
  }
  const std::string out_dir = absl::GetFlag(FLAGS_out);
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec)
    return Fail(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));

  // runs[policy][seed index] = episodes.
  std::map<BenchPolicy, std::vector<std::vector<BenchEpisode>>> runs;
  // The strategy versions ours made in the first seed's run.
  std::vector<reflexion::sim::BenchVersion> versions;
  const absl::Time t0 = absl::Now();
  std::string truth;
  for (uint64_t seed : seeds) {
    absl::StatusOr<std::vector<reflexion::sim::BenchIncident>> incidents =
        reflexion::sim::MakeBenchIncidents(yaml, seed, n);
    if (!incidents.ok()) {
      return Fail(absl::StrCat(file.empty() ? "embedded scenarios" : file, ": ",
                               incidents.status().ToString()));
    }
    if (truth.empty()) {
      // The ground truth of the first seed's incidents, by scenario.
      struct Count {
        int incidents = 0;
        std::string signature, best;
        double p = 0;
      };
      std::map<std::string, Count> by;
      for (const reflexion::sim::BenchIncident& bi : *incidents) {
        Count& c = by[bi.scenario_id];
        ++c.incidents;
        c.signature = bi.signature;
        c.best = bi.fixable ? bi.best_strategy : "escalate (no fix)";
        c.p = bi.best_probability;
      }
      absl::StrAppend(&truth, "| scenario | incidents (seed ", seed,
                      ") | signature | oracle | p(fix holds) |\n"
                      "|---|---|---|---|---|\n");
      for (const auto& [id, c] : by) {
        absl::StrAppend(&truth, "| ", id, " | ", c.incidents, " | ",
                        c.signature, " | ", c.best, " | ",
                        absl::StrFormat("%.2f", c.p), " |\n");
      }
    }
    for (BenchPolicy p : reflexion::sim::kBenchPolicies) {
      reflexion::sim::BenchRunOptions options;
      options.policy = p;
      options.seed = seed;
      if (absl::GetFlag(FLAGS_cost_escalation) > 0) {
        options.cost_escalation = absl::GetFlag(FLAGS_cost_escalation);
      }
      if (absl::GetFlag(FLAGS_cost_failed_attempt) > 0) {
        options.cost_failed_attempt = absl::GetFlag(FLAGS_cost_failed_attempt);
      }
      options.plant_bad_version_at = absl::GetFlag(FLAGS_plant_bad_version) - 1;
      const bool first_ours = p == BenchPolicy::kOurs && seed == seeds.front();
      absl::StatusOr<std::vector<BenchEpisode>> episodes =
          reflexion::sim::RunBenchPolicy(yaml, *incidents, options,
                                         first_ours ? &versions : nullptr);
      if (!episodes.ok()) {
        return Fail(absl::StrCat(reflexion::sim::BenchPolicyName(p), " seed ",
                                 seed, ": ", episodes.status().ToString()));
      }
      runs[p].push_back(*std::move(episodes));
    }
  }
  const double secs = absl::ToDoubleSeconds(absl::Now() - t0);

  // learning.csv: per seed x policy x window, then the mean over seeds.
  const std::string csv_path = out_dir + "/learning.csv";
  std::ofstream csv(csv_path);
  csv << "suite,seed,policy,window,episodes_from,episodes_to,"
         "first_attempt_success,first_decision_right,brier,"
         "cumulative_attempts,cumulative_wasted,cumulative_escalations\n";
  const int windows = (n + window - 1) / window;
  for (BenchPolicy p : reflexion::sim::kBenchPolicies) {
    const std::string name(reflexion::sim::BenchPolicyName(p));
    std::vector<std::vector<BenchFigures>> per_seed(windows);
    std::vector<std::vector<BenchFigures>> cumulative(windows);
    for (size_t s = 0; s < seeds.size(); ++s) {
      const std::vector<BenchEpisode>& eps = runs[p][s];
      for (int w = 0; w < windows; ++w) {
        const size_t from = static_cast<size_t>(w) * window;
        const size_t to = from + window;
        BenchFigures f = reflexion::sim::Figures(eps, from, to);
        BenchFigures c = reflexion::sim::Figures(eps, 0, to);
        per_seed[w].push_back(f);
        cumulative[w].push_back(c);
        csv << absl::StrJoin(
                   {suite, absl::StrCat(seeds[s]), name, absl::StrCat(w + 1),
                    absl::StrCat(from + 1),
                    absl::StrCat(std::min<size_t>(to, eps.size())),
                    absl::StrFormat("%.4f", f.first_attempt_success),
                    absl::StrFormat("%.4f", f.first_decision_right),
                    Opt(f.brier), absl::StrCat(c.attempts),
                    absl::StrCat(c.wasted), absl::StrCat(c.escalations)},
                   ",")
            << "\n";
      }
    }
    std::ofstream dat(absl::StrCat(out_dir, "/", name, ".dat"));
    dat << "# window_end first_attempt_success first_decision_right "
           "cumulative_wasted brier (mean over seeds)\n";
    for (int w = 0; w < windows; ++w) {
      std::vector<double> fas, fdr, wasted, attempts, esc;
      std::vector<std::optional<double>> brier;
      for (size_t s = 0; s < seeds.size(); ++s) {
        fas.push_back(per_seed[w][s].first_attempt_success);
        fdr.push_back(per_seed[w][s].first_decision_right);
        brier.push_back(per_seed[w][s].brier);
        wasted.push_back(cumulative[w][s].wasted);
        attempts.push_back(cumulative[w][s].attempts);
        esc.push_back(cumulative[w][s].escalations);
      }
      const int end = std::min((w + 1) * window, n);
      csv << absl::StrJoin(
                 {suite, std::string("mean"), name, absl::StrCat(w + 1),
                  absl::StrCat(w * window + 1), absl::StrCat(end),
                  absl::StrFormat("%.4f", Mean(fas)),
                  absl::StrFormat("%.4f", Mean(fdr)), Opt(MeanOpt(brier)),
                  absl::StrFormat("%.1f", Mean(attempts)),
                  absl::StrFormat("%.1f", Mean(wasted)),
                  absl::StrFormat("%.1f", Mean(esc))},
                 ",")
          << "\n";
      dat << end << " " << absl::StrFormat("%.4f", Mean(fas)) << " "
          << absl::StrFormat("%.4f", Mean(fdr)) << " "
          << absl::StrFormat("%.1f", Mean(wasted)) << " "
          << (MeanOpt(brier).has_value() ? Opt(MeanOpt(brier)) : "NaN") << "\n";
    }
  }
  csv.close();

  // Summary: whole runs, mean over seeds.
  struct Row {
    double wasted, attempts, escalations, resolved, fas, fdr;
    std::optional<double> fdr_after, brier;
  };
  std::map<BenchPolicy, Row> rows;
  for (BenchPolicy p : reflexion::sim::kBenchPolicies) {
    std::vector<double> wasted, attempts, esc, res, fas, fdr;
    std::vector<std::optional<double>> after_v, brier;
    for (const std::vector<BenchEpisode>& eps : runs[p]) {
      BenchFigures f = reflexion::sim::Figures(eps, 0, eps.size());
      wasted.push_back(f.wasted);
      attempts.push_back(f.attempts);
      esc.push_back(f.escalations);
      res.push_back(f.resolved);
      fas.push_back(f.first_attempt_success);
      fdr.push_back(f.first_decision_right);
      brier.push_back(f.brier);
      after_v.push_back(reflexion::sim::FirstDecisionRightAfter(eps, after));
    }
    rows[p] =
        Row{Mean(wasted), Mean(attempts), Mean(esc),        Mean(res),
            Mean(fas),    Mean(fdr),      MeanOpt(after_v), MeanOpt(brier)};
  }
  std::ofstream summary(out_dir + "/summary.csv");
  summary << "suite,policy,incidents,seeds,wasted_attempts,attempts,"
             "escalations,resolved,first_attempt_success,first_decision_right,"
             "first_decision_right_after_"
          << after << ",brier\n";
  std::printf(
      "learning_bench: suite %s, %d incidents x %zu seeds (%s), window %d, "
      "%.1f s\n\n",
      suite.c_str(), n, seeds.size(), absl::GetFlag(FLAGS_seeds).c_str(),
      window, secs);
  std::printf("%s\n", truth.c_str());
  std::printf(
      "| policy | wasted attempts | attempts | escalations | resolved | "
      "first-attempt success | first decision right | FDR after %d/signature "
      "| Brier |\n|---|---|---|---|---|---|---|---|---|\n",
      after);
  for (BenchPolicy p : reflexion::sim::kBenchPolicies) {
    const Row& r = rows[p];
    const std::string name(reflexion::sim::BenchPolicyName(p));
    std::printf(
        "| %s | %.1f | %.1f | %.1f | %.1f | %.1f%% | %.1f%% | %s | %s |\n",
        name.c_str(), r.wasted, r.attempts, r.escalations, r.resolved,
        100 * r.fas, 100 * r.fdr,
        r.fdr_after.has_value()
            ? absl::StrFormat("%.1f%%", 100 * *r.fdr_after).c_str()
            : "n/a",
        r.brier.has_value() ? absl::StrFormat("%.3f", *r.brier).c_str()
                            : "n/a");
    summary << absl::StrJoin(
                   {suite, name, absl::StrCat(n), absl::StrJoin(seeds, " "),
                    absl::StrFormat("%.1f", r.wasted),
                    absl::StrFormat("%.1f", r.attempts),
                    absl::StrFormat("%.1f", r.escalations),
                    absl::StrFormat("%.1f", r.resolved),
                    absl::StrFormat("%.4f", r.fas),
                    absl::StrFormat("%.4f", r.fdr), Opt(r.fdr_after),
                    Opt(r.brier)},
                   ",")
            << "\n";
  }
  // Where ours' first decision was wrong, by hidden cause (all seeds).
  {
    struct Wrong {
      int episodes = 0, ours = 0, ours_escalated_fixable = 0,
          ours_tried_unfixable = 0, oracle = 0, ours_wasted = 0,
          greedy_wasted = 0, oracle_wasted = 0;
    };
    std::map<std::string, Wrong> by;
    for (size_t s = 0; s < seeds.size(); ++s) {
      for (const BenchEpisode& e : runs[BenchPolicy::kOurs][s]) {
        Wrong& w = by[e.scenario_id];
        ++w.episodes;
        w.ours_wasted += e.Wasted();
        if (e.FirstDecisionRight()) continue;
        ++w.ours;
        w.ours_escalated_fixable += e.attempts.empty() && e.fixable;
        w.ours_tried_unfixable += !e.attempts.empty() && !e.fixable;
      }
      for (const BenchEpisode& e : runs[BenchPolicy::kOracle][s]) {
        by[e.scenario_id].oracle += !e.FirstDecisionRight();
        by[e.scenario_id].oracle_wasted += e.Wasted();
      }
      for (const BenchEpisode& e : runs[BenchPolicy::kGreedy][s]) {
        by[e.scenario_id].greedy_wasted += e.Wasted();
      }
    }
    std::printf(
        "\nfirst decisions that were wrong and wasted attempts, by hidden "
        "cause "
        "(all seeds):\n"
        "| scenario | episodes | ours wrong | of which escalated a fixable "
        "one at once | of which tried an unfixable one | oracle wrong | "
        "wasted greedy / ours / oracle |\n"
        "|---|---|---|---|---|---|---|\n");
    for (const auto& [id, w] : by) {
      std::printf("| %s | %d | %d | %d | %d | %d | %d / %d / %d |\n",
                  id.c_str(), w.episodes, w.ours, w.ours_escalated_fixable,
                  w.ours_tried_unfixable, w.oracle, w.greedy_wasted,
                  w.ours_wasted, w.oracle_wasted);
    }
  }
  std::printf(
      "\nstrategy versions made during ours' run (seed %llu; the catalog's "
      "are version 1):\n",
      static_cast<unsigned long long>(seeds.front()));
  if (versions.empty()) {
    std::printf("(none)\n");
  } else {
    std::printf(
        "| before incident | strategy | version | parent | author | "
        "memory x | reason |\n|---|---|---|---|---|---|---|\n");
    for (const reflexion::sim::BenchVersion& v : versions) {
      std::printf("| %d | %s | %d | %d | %s | %.3g | %s |\n", v.incident + 1,
                  v.strategy.name().c_str(), v.strategy.version(),
                  v.strategy.parent_version(), v.strategy.author().c_str(),
                  v.strategy.params().memory_factor(),
                  v.strategy.reason().c_str());
    }
  }
  if (const std::string trace = absl::GetFlag(FLAGS_trace); !trace.empty()) {
    for (BenchPolicy p : {BenchPolicy::kOurs, BenchPolicy::kOracle}) {
      std::printf("\n%s, scenario %s (seed %llu):\n",
                  std::string(reflexion::sim::BenchPolicyName(p)).c_str(),
                  trace.c_str(),
                  static_cast<unsigned long long>(seeds.front()));
      for (const BenchEpisode& e : runs[p].front()) {
        if (e.scenario_id != trace) continue;
        std::string line = absl::StrFormat("%4d %s:", e.index + 1, e.signature);
        for (const reflexion::sim::BenchAttempt& a : e.attempts) {
          absl::StrAppendFormat(&line, " %s%s", a.strategy,
                                a.success ? "+" : "-");
          if (a.predicted.has_value()) {
            absl::StrAppendFormat(&line, "(%.2f)", *a.predicted);
          }
        }
        if (e.escalated) absl::StrAppend(&line, " -> human");
        std::printf("%s\n", line.c_str());
      }
    }
  }
  const Row& ours = rows[BenchPolicy::kOurs];
  const Row& greedy = rows[BenchPolicy::kGreedy];
  const Row& oracle = rows[BenchPolicy::kOracle];
  auto ratio = [](double a, double b) {
    return b > 0 ? absl::StrFormat("%.2f", a / b) : std::string("n/a");
  };
  std::printf(
      "\nwasted attempts ours/greedy %s (target <= 0.33), ours/oracle %s "
      "(target <= 2)\n",
      ratio(ours.wasted, greedy.wasted).c_str(),
      ratio(ours.wasted, oracle.wasted).c_str());
  if (ours.fdr_after.has_value() && oracle.fdr_after.has_value()) {
    std::printf(
        "first decision right after %d episodes per signature: ours %.1f%%, "
        "oracle %.1f%% (target: within 5 points)\n",
        after, 100 * *ours.fdr_after, 100 * *oracle.fdr_after);
  }
  std::printf("\nwrote %s, %s/summary.csv\n", csv_path.c_str(),
              out_dir.c_str());

  // Plots.
  const std::string gp_path = out_dir + "/learning.gp";
  {
    std::ofstream gp(gp_path);
    gp << "# gnuplot " << gp_path << " (run from " << out_dir << ")\n"
       << "set datafile missing 'NaN'\nset key outside right\nset grid\n"
       << "set xlabel 'episodes'\n";
    struct Plot {
      const char* file;
      const char* title;
      int column;
    };
    const Plot plots[] = {
        {"first_attempt_success.png", "first-attempt success per window", 2},
        {"first_decision_right.png", "first decision right per window", 3},
        {"wasted_attempts.png", "cumulative wasted attempts", 4},
        {"brier.png", "Brier score per window (lower is better)", 5}};
    auto emit = [&](const Plot& p, const std::string& terminal,
                    const std::string& output) {
      gp << "set terminal " << terminal << "\nset output '" << output << "'\n"
         << "set title '" << suite << ": " << p.title << " (" << n
         << " incidents, mean of " << seeds.size() << " seeds)'\n"
         << (p.column == 4 ? "set yrange [0:*]\n" : "set yrange [0:1]\n")
         << "plot ";
      bool first = true;
      for (BenchPolicy pol : reflexion::sim::kBenchPolicies) {
        const std::string name(reflexion::sim::BenchPolicyName(pol));
        // Only the policies that predict a probability have a Brier score.
        if (p.column == 5 && !rows[pol].brier.has_value()) continue;
        gp << (first ? "" : ", ") << "'" << name << ".dat' using 1:" << p.column
           << " with linespoints title '" << name << "'";
        first = false;
      }
      gp << "\n";
    };
    for (const Plot& p : plots) emit(p, "png size 900,500", p.file);
    // Text renderings of the two main curves, for a terminal or a note.
    for (const Plot& p : plots) {
      if (p.column != 3 && p.column != 4) continue;
      std::string txt = p.file;
      txt.replace(txt.size() - 4, 4, ".txt");
      emit(p, "dumb size 100,30", txt);
    }
  }
  if (!OnPath("gnuplot")) {
    std::printf(
        "gnuplot not found on PATH: plots skipped (apt-get install "
        "gnuplot-nox, then: cd %s && gnuplot learning.gp)\n",
        out_dir.c_str());
    return 0;
  }
  const std::string cmd =
      absl::StrCat("cd '", out_dir, "' && gnuplot learning.gp");
  if (std::system(cmd.c_str()) != 0) {
    return Fail(absl::StrCat("gnuplot failed: ", cmd));
  }
  std::printf(
      "wrote %s/{first_attempt_success,first_decision_right,"
      "wasted_attempts,brier}.png and {first_decision_right,wasted_attempts}"
      ".txt\n",
      out_dir.c_str());
  return 0;
}

#include "core/reflexion/patterns.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/validation.h"
#include "glog/logging.h"

namespace reflexion::core {

namespace v1 = reflexion::v1;

// ---------------------------------------------------------------------------
// Beta.
// ---------------------------------------------------------------------------

namespace {

// The continued fraction of I_x(a, b) (Numerical Recipes 6.4, modified
// Lentz). Converges fast for x < (a + 1) / (a + b + 2); the caller uses the
// symmetry otherwise. The iteration bound is far above what parameters up to
// 1e6 need (about sqrt(max(a, b)) terms).
double BetaContinuedFraction(double a, double b, double x) {
  constexpr int kMaxIterations = 100000;
  constexpr double kEpsilon = 1e-15;
  constexpr double kTiny = 1e-300;
  const double qab = a + b;
  const double qap = a + 1.0;
  const double qam = a - 1.0;
  double c = 1.0;
  double d = 1.0 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (int m = 1; m <= kMaxIterations; ++m) {
    const double m2 = 2.0 * m;
    // Even step.
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    // Odd step.
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1.0) < kEpsilon) break;
  }
  return h;
}

}  // namespace

double RegularizedIncompleteBeta(double a, double b, double x) {
  CHECK(std::isfinite(a) && std::isfinite(b) && a > 0 && b > 0)
      << "Beta(" << a << ", " << b << ")";
  if (!(x > 0.0)) return 0.0;  // also NaN
  if (x >= 1.0) return 1.0;
  // x^a (1-x)^b / B(a, b), in logs.
  const double log_front = std::lgamma(a + b) - std::lgamma(a) -
                           std::lgamma(b) + a * std::log(x) +
                           b * std::log1p(-x);
  const double front = std::exp(log_front);
  double value;
  if (x < (a + 1.0) / (a + b + 2.0)) {
    value = front * BetaContinuedFraction(a, b, x) / a;
  } else {
    value = 1.0 - front * BetaContinuedFraction(b, a, 1.0 - x) / b;
  }
  return std::clamp(value, 0.0, 1.0);
}

double BetaQuantile(double a, double b, double p) {
  CHECK(std::isfinite(a) && std::isfinite(b) && a > 0 && b > 0)
      << "Beta(" << a << ", " << b << ")";
  if (!(p > 0.0)) return 0.0;
  if (p >= 1.0) return 1.0;
  double lo = 0.0, hi = 1.0;
  // 60 halvings bring the interval below 1e-18; stop at 1e-12.
  for (int i = 0; i < 200 && hi - lo > 1e-12; ++i) {
    const double mid = 0.5 * (lo + hi);
    if (RegularizedIncompleteBeta(a, b, mid) < p) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return 0.5 * (lo + hi);
}

std::string SignatureFamily(absl::string_view signature) {
  const size_t slash = signature.find('/');
  return std::string(slash == absl::string_view::npos
                         ? signature
                         : signature.substr(0, slash));
}

// ---------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------

namespace {

absl::StatusOr<absl::Duration> ReadDuration(const google::protobuf::Duration& d,
                                            absl::string_view field,
                                            absl::Duration min,
                                            absl::Duration max) {
  // google.protobuf.Duration: |seconds| <= 315576000000, |nanos| < 1e9 and
  // of the same sign.
  if (d.seconds() < -315576000000 || d.seconds() > 315576000000 ||
      d.nanos() <= -1000000000 || d.nanos() >= 1000000000 ||
      (d.seconds() > 0 && d.nanos() < 0) ||
      (d.seconds() < 0 && d.nanos() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": not a valid Duration"));
  }
  const absl::Duration out =
      absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
  if (out < min || out > max) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": must be between ", absl::FormatDuration(min), " and ",
        absl::FormatDuration(max), ", got ", absl::FormatDuration(out)));
  }
  return out;
}

bool IsZero(const google::protobuf::Duration& d) {
  return d.seconds() == 0 && d.nanos() == 0;
}

}  // namespace

absl::StatusOr<PatternOptions> PatternOptionsFromRequest(
    const v1::ListPatternsRequest& request, absl::Time now,
    absl::string_view default_cluster) {
  PatternOptions o;
  o.now = now;
  o.default_cluster = std::string(default_cluster);
  const std::string& sig = request.signature();
  if (sig.size() > 256 || !IsValidUtf8(sig) ||
      sig.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        "signature: at most 256 bytes of UTF-8 without NUL");
  }
  o.signature = sig;
  if (!request.namespace_().empty() && !IsDns1123Label(request.namespace_())) {
    return absl::InvalidArgumentError("namespace: must be a DNS-1123 label");
  }
  o.namespace_name = request.namespace_();
  if (!request.cluster().empty() && !IsDns1123Label(request.cluster())) {
    return absl::InvalidArgumentError("cluster: must be a DNS-1123 label");
  }
  o.cluster = request.cluster();
  if (request.min_count() < 0 || request.min_count() > kMaxPatternMinCount) {
    return absl::InvalidArgumentError(absl::StrCat(
        "min_count: must be between 0 and ", kMaxPatternMinCount,
        " (0 = ", kDefaultPatternMinCount, "), got ", request.min_count()));
  }
  o.min_count =
      request.min_count() == 0 ? kDefaultPatternMinCount : request.min_count();
  if (request.has_window() && !IsZero(request.window())) {
    absl::StatusOr<absl::Duration> w = ReadDuration(
        request.window(), "window", absl::Seconds(1), absl::Hours(7 * 24));
    if (!w.ok()) return w.status();
    o.window = *w;
  }
  if (request.limit() < 0 || request.limit() > kMaxPatternLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "limit: must be between 0 and ", kMaxPatternLimit,
        " (0 = ", kDefaultPatternLimit, "), got ", request.limit()));
  }
  o.limit = request.limit() == 0 ? kDefaultPatternLimit : request.limit();
  if (request.has_lookback()) {
    absl::StatusOr<absl::Duration> l =
        ReadDuration(request.lookback(), "lookback", absl::ZeroDuration(),
                     absl::Hours(3650 * 24));
    if (!l.ok()) return l.status();
    o.lookback = *l;
  }
  switch (request.correlate_by()) {
    case v1::ListPatternsRequest::GROUPING_UNSPECIFIED:
    case v1::ListPatternsRequest::GROUPING_FAMILY:
      o.correlate_by = v1::ListPatternsRequest::GROUPING_FAMILY;
      break;
    case v1::ListPatternsRequest::GROUPING_SIGNATURE:
      o.correlate_by = v1::ListPatternsRequest::GROUPING_SIGNATURE;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("correlate_by: unknown value ", request.correlate_by(),
                       " (1 = family, 2 = signature)"));
  }
  return o;
}

// ---------------------------------------------------------------------------
// Patterns.
// ---------------------------------------------------------------------------

namespace {

// One incident: one workflow.
struct Incident {
  absl::Time time = absl::InfinitePast();
  std::string namespace_name;
  std::string cluster;
  std::string family;
  std::string signature;  // "" when never analysed
};

// Whether `signature` (of `family`) passes the signature filter: equal to a
// filter with '/', of the family named by a filter without one.
bool SignatureMatches(absl::string_view filter, absl::string_view signature,
                      absl::string_view family) {
  if (filter.empty()) return true;
  if (filter.find('/') == absl::string_view::npos) return family == filter;
  return signature == filter;
}

double Median(std::vector<double>& v) {
  DCHECK(!v.empty());
  const size_t mid = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + mid, v.end());
  const double upper = v[mid];
  if (v.size() % 2 == 1) return upper;
  const double lower = *std::max_element(v.begin(), v.begin() + mid);
  return 0.5 * (lower + upper);
}

template <typename T>
void Truncate(google::protobuf::RepeatedPtrField<T>* items, int limit) {
  while (items->size() > limit) items->RemoveLast();
}

}  // namespace

v1::ListPatternsResponse ComputePatterns(const PatternInputs& in,
                                         const PatternOptions& o) {
  v1::ListPatternsResponse out;
  *out.mutable_now() = ToProto(o.now);
  out.set_workflows_capped(in.workflows_capped);
  out.set_episodes_capped(in.episodes_capped);
  const absl::Time cutoff = o.lookback > absl::ZeroDuration()
                                ? o.now - o.lookback
                                : absl::InfinitePast();
  auto cluster_of = [&o](const std::string& c) -> const std::string& {
    return c.empty() ? o.default_cluster : c;
  };

  // Episodes oldest first ((time, id): the store's order).
  std::vector<const v1::Episode*> episodes;
  episodes.reserve(in.episodes.size());
  for (const v1::Episode& e : in.episodes) episodes.push_back(&e);
  std::sort(episodes.begin(), episodes.end(),
            [](const v1::Episode* a, const v1::Episode* b) {
              const absl::Time ta = FromProto(a->time());
              const absl::Time tb = FromProto(b->time());
              if (ta != tb) return ta < tb;
              return a->id() < b->id();
            });

  // ---- Incidents: the workflow records, then workflows known only by
  // their episodes.
  absl::flat_hash_map<std::string, Incident> incidents;
  for (const WorkflowSummary& w : in.workflows) {
    Incident& inc = incidents[w.workflow_id];
    inc.time = w.time;
    inc.namespace_name = w.namespace_name;
    inc.cluster = cluster_of(w.cluster);
    inc.signature = w.signature;
    inc.family = w.signature.empty() ? FamilyOf(w.error_type)
                                     : SignatureFamily(w.signature);
  }
  {
    absl::flat_hash_set<std::string> from_episodes;
    for (const v1::Episode* e : episodes) {
      auto [it, inserted] = incidents.try_emplace(e->workflow_id());
      if (inserted) from_episodes.insert(e->workflow_id());
      if (!from_episodes.contains(e->workflow_id())) continue;
      Incident& inc = it->second;
      if (inserted) {
        inc.time = FromProto(e->time());
        inc.namespace_name = e->namespace_();
        inc.cluster = cluster_of(e->cluster());
      }
      // The last attempt's signature (a deep analysis may refine it).
      if (!e->signature().empty()) {
        inc.signature = e->signature();
        inc.family = SignatureFamily(e->signature());
      } else if (inc.family.empty()) {
        inc.family = FamilyOf(e->error_type());
      }
    }
  }
  // Ordered by id so that every later pass is deterministic.
  std::vector<std::pair<std::string, const Incident*>> ordered;
  ordered.reserve(incidents.size());
  for (const auto& [id, inc] : incidents) ordered.emplace_back(id, &inc);
  std::sort(ordered.begin(), ordered.end());
  // The base: the cluster filter and the lookback (correlation totals);
  // the filtered set adds the signature and namespace filters.
  auto in_base = [&](const Incident& inc) {
    return (o.cluster.empty() || inc.cluster == o.cluster) &&
           inc.time >= cutoff && inc.time != absl::InfinitePast();
  };
  auto in_filtered = [&](const Incident& inc) {
    return in_base(inc) &&
           (o.namespace_name.empty() ||
            inc.namespace_name == o.namespace_name) &&
           SignatureMatches(o.signature, inc.signature, inc.family);
  };

  // ---- Correlations.
  {
    const bool by_family =
        o.correlate_by != v1::ListPatternsRequest::GROUPING_SIGNATURE;
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    absl::flat_hash_map<std::string, int64_t> ns_total, err_total;
    int64_t total = 0;
    for (const auto& [id, inc] : ordered) {
      if (!in_base(*inc)) continue;
      const std::string& key = by_family ? inc->family : inc->signature;
      if (key.empty()) continue;
      ++pairs[{key, inc->namespace_name}];
      ++ns_total[inc->namespace_name];
      ++err_total[key];
      ++total;
    }
    // In family mode a signature filter selects its family's pairs.
    const std::string filter = by_family && !o.signature.empty()
                                   ? SignatureFamily(o.signature)
                                   : o.signature;
    for (const auto& [pair, count] : pairs) {
      const auto& [key, ns] = pair;
      if (!o.namespace_name.empty() && ns != o.namespace_name) continue;
      if (!SignatureMatches(filter, key, SignatureFamily(key))) continue;
      if (count < o.min_count) continue;
      const int64_t nt = ns_total[ns];
      const int64_t et = err_total[key];
      // lift > 1 exactly, in integers: count / nt > et / total.
      if (static_cast<double>(count) * static_cast<double>(total) <=
          static_cast<double>(nt) * static_cast<double>(et)) {
        continue;
      }
      v1::PatternCorrelation* c = out.add_correlations();
      c->set_error(key);
      c->set_namespace_(ns);
      c->set_count(count);
      c->set_namespace_total(nt);
      c->set_error_total(et);
      c->set_total(total);
      c->set_lift((static_cast<double>(count) / static_cast<double>(nt)) /
                  (static_cast<double>(et) / static_cast<double>(total)));
    }
    std::sort(
        out.mutable_correlations()->begin(), out.mutable_correlations()->end(),
        [](const v1::PatternCorrelation& a, const v1::PatternCorrelation& b) {
          return std::make_tuple(-a.lift(), -a.count(), a.error(),
                                 a.namespace_()) <
                 std::make_tuple(-b.lift(), -b.count(), b.error(),
                                 b.namespace_());
        });
    out.set_correlations_found(out.correlations_size());
  }

  // ---- Bursts.
  {
    std::map<std::string, std::vector<absl::Time>> by_signature;
    absl::Time oldest = absl::InfiniteFuture();
    int64_t considered = 0;
    for (const auto& [id, inc] : ordered) {
      if (!in_filtered(*inc)) continue;
      ++considered;
      oldest = std::min(oldest, inc->time);
      if (!inc->signature.empty()) {
        by_signature[inc->signature].push_back(inc->time);
      }
    }
    out.set_incidents(considered);
    if (considered > 0) {
      const absl::Time start =
          o.lookback > absl::ZeroDuration() ? cutoff : oldest;
      *out.mutable_history_start() = ToProto(start);
      const double window_s = absl::ToDoubleSeconds(o.window);
      const double history_s =
          std::max(window_s, absl::ToDoubleSeconds(o.now - start));
      for (auto& [signature, times] : by_signature) {
        std::sort(times.begin(), times.end());
        const double n = static_cast<double>(times.size());
        const double expected = n / history_s * window_s;
        const double threshold =
            std::max(static_cast<double>(o.min_count),
                     expected + kBurstSigmas * std::sqrt(expected));
        size_t j = 0;
        for (size_t i = 0; i < times.size();) {
          const absl::Time end = times[i] + o.window;
          j = std::max(j, i);
          while (j < times.size() && times[j] < end) ++j;
          const int64_t count = static_cast<int64_t>(j - i);
          if (static_cast<double>(count) >= threshold) {
            v1::PatternBurst* b = out.add_bursts();
            b->set_signature(signature);
            *b->mutable_window_start() = ToProto(times[i]);
            *b->mutable_window_end() = ToProto(end);
            b->set_count(count);
            b->set_expected(expected);
            b->set_threshold(threshold);
            b->set_history_incidents(static_cast<int64_t>(times.size()));
            b->set_history_s(history_s);
            i = j;  // bursts never overlap
          } else {
            ++i;
          }
        }
      }
    }
    std::sort(out.mutable_bursts()->begin(), out.mutable_bursts()->end(),
              [](const v1::PatternBurst& a, const v1::PatternBurst& b) {
                const absl::Time ta = FromProto(a.window_start());
                const absl::Time tb = FromProto(b.window_start());
                if (ta != tb) return ta > tb;
                return a.signature() < b.signature();
              });
    out.set_bursts_found(out.bursts_size());
  }

  // The episodes the filters keep.
  std::vector<const v1::Episode*> kept;
  kept.reserve(episodes.size());
  for (const v1::Episode* e : episodes) {
    if (!o.namespace_name.empty() && e->namespace_() != o.namespace_name) {
      continue;
    }
    if (!o.cluster.empty() && cluster_of(e->cluster()) != o.cluster) continue;
    if (FromProto(e->time()) < cutoff) continue;
    const std::string family = e->signature().empty()
                                   ? FamilyOf(e->error_type())
                                   : SignatureFamily(e->signature());
    if (!SignatureMatches(o.signature, e->signature(), family)) continue;
    kept.push_back(e);
  }
  out.set_episodes(static_cast<int64_t>(kept.size()));

  // ---- Effectiveness.
  {
    const bool stored = in.stats.has_value() && o.namespace_name.empty() &&
                        o.cluster.empty() && o.lookback == absl::ZeroDuration();
    auto add = [&out](const std::string& signature, const std::string& strategy,
                      int64_t trials, int64_t successes, double alpha,
                      double beta, double prior_alpha, double prior_beta,
                      v1::PatternEffectiveness::Source source) {
      v1::PatternEffectiveness* p = out.add_effectiveness();
      p->set_signature(signature);
      p->set_strategy(strategy);
      p->set_trials(trials);
      p->set_successes(successes);
      p->set_prior_alpha(prior_alpha);
      p->set_prior_beta(prior_beta);
      p->set_mean(alpha / (alpha + beta));
      p->set_lower(BetaQuantile(alpha, beta, kIntervalLower));
      p->set_upper(BetaQuantile(alpha, beta, kIntervalUpper));
      p->set_source(source);
    };
    if (stored) {
      for (const v1::StrategyStats& s : *in.stats) {
        if (!SignatureMatches(o.signature, s.signature(),
                              SignatureFamily(s.signature()))) {
          continue;
        }
        const double a = s.alpha(), b = s.beta();
        if (!std::isfinite(a) || !std::isfinite(b) || a <= 0 || b <= 0 ||
            s.trials() < 0 || s.successes() < 0 || s.successes() > s.trials()) {
          LOG(WARNING) << "patterns: skipping the malformed posterior of "
                       << s.signature() << " / " << s.strategy();
          continue;
        }
        const double failures = static_cast<double>(s.trials() - s.successes());
        add(s.signature(), s.strategy(), s.trials(), s.successes(), a, b,
            a - static_cast<double>(s.successes()), b - failures,
            v1::PatternEffectiveness::SOURCE_STORED_POSTERIOR);
      }
    } else {
      std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>>
          counts;  // (trials, successes)
      for (const v1::Episode* e : kept) {
        if (e->signature().empty() || e->strategy().empty()) continue;
        auto& [trials, successes] = counts[{e->signature(), e->strategy()}];
        ++trials;
        successes += e->success() ? 1 : 0;
      }
      for (const auto& [key, c] : counts) {
        const auto& [signature, strategy] = key;
        const size_t slash = signature.find('/');
        const absl::string_view cause =
            slash == std::string::npos
                ? absl::string_view()
                : absl::string_view(signature).substr(slash + 1);
        const Prior prior =
            PriorFor(SignatureFamily(signature), cause, strategy);
        const double a = prior.alpha + static_cast<double>(c.second);
        const double b = prior.beta + static_cast<double>(c.first - c.second);
        add(signature, strategy, c.first, c.second, a, b, prior.alpha,
            prior.beta, v1::PatternEffectiveness::SOURCE_EPISODES);
      }
    }
    std::sort(out.mutable_effectiveness()->begin(),
              out.mutable_effectiveness()->end(),
              [](const v1::PatternEffectiveness& a,
                 const v1::PatternEffectiveness& b) {
                return std::make_tuple(a.signature(), -a.mean(), a.strategy()) <
                       std::make_tuple(b.signature(), -b.mean(), b.strategy());
              });
    out.set_effectiveness_found(out.effectiveness_size());
  }

  // ---- Anomalies.
  {
    // Slow resolution: per signature, the most recent earlier successful
    // times to recovery.
    absl::flat_hash_map<std::string, std::deque<double>> resolved;
    // Strategy drop: per (signature, strategy), the outcomes in order and
    // the latest episode.
    std::map<std::pair<std::string, std::string>,
             std::pair<std::vector<bool>, const v1::Episode*>>
        runs;
    for (const v1::Episode* e : kept) {
      if (e->signature().empty()) continue;
      if (!e->strategy().empty()) {
        auto& run = runs[{e->signature(), e->strategy()}];
        run.first.push_back(e->success());
        run.second = e;
      }
      if (!e->success()) continue;
      const double ttr = e->time_to_recovery_s();
      if (!std::isfinite(ttr) || ttr < 0) continue;
      std::deque<double>& history = resolved[e->signature()];
      if (history.size() >= static_cast<size_t>(kSlowMinHistory)) {
        std::vector<double> values(history.begin(), history.end());
        const double median = Median(values);
        std::vector<double> deviations;
        deviations.reserve(history.size());
        for (double v : history) deviations.push_back(std::fabs(v - median));
        const double mad = Median(deviations);
        const double threshold =
            std::max(median + kSlowMadFactor * kMadToSigma * mad,
                     kSlowMedianFactor * median);
        if (median > 0 && ttr > threshold) {
          v1::PatternAnomaly* a = out.add_anomalies();
          a->set_kind(v1::PatternAnomaly::KIND_SLOW_RESOLUTION);
          a->set_signature(e->signature());
          a->set_strategy(e->strategy());
          a->set_episode_id(e->id());
          a->set_workflow_id(e->workflow_id());
          *a->mutable_time() = e->time();
          a->set_value(ttr);
          a->set_baseline(median);
          a->set_detail(absl::StrFormat(
              "resolved in %.1fs; the %d earlier resolutions of %s took a "
              "median %.1fs (MAD %.1fs): above max(median + 3*1.4826*MAD, "
              "3*median) = %.1fs",
              ttr, static_cast<int>(history.size()), e->signature(), median,
              mad, threshold));
        }
      }
      history.push_back(ttr);
      if (history.size() > static_cast<size_t>(kSlowHistory)) {
        history.pop_front();
      }
    }
    for (const auto& [key, run] : runs) {
      const std::vector<bool>& outcomes = run.first;
      if (outcomes.size() <
          static_cast<size_t>(kDropRecent + kDropMinEarlier)) {
        continue;
      }
      const size_t split = outcomes.size() - kDropRecent;
      int64_t early_s = 0, recent_s = 0;
      for (size_t i = 0; i < outcomes.size(); ++i) {
        (i < split ? early_s : recent_s) += outcomes[i] ? 1 : 0;
      }
      const int64_t early_n = static_cast<int64_t>(split);
      const double early_mean = (1.0 + static_cast<double>(early_s)) /
                                (2.0 + static_cast<double>(early_n));
      const double upper =
          BetaQuantile(1.0 + static_cast<double>(recent_s),
                       1.0 + static_cast<double>(kDropRecent - recent_s),
                       kDropUpperQuantile);
      if (upper >= early_mean) continue;
      const v1::Episode* last = run.second;
      v1::PatternAnomaly* a = out.add_anomalies();
      a->set_kind(v1::PatternAnomaly::KIND_STRATEGY_DROP);
      a->set_signature(key.first);
      a->set_strategy(key.second);
      a->set_episode_id(last->id());
      a->set_workflow_id(last->workflow_id());
      *a->mutable_time() = last->time();
      a->set_value(static_cast<double>(recent_s) / kDropRecent);
      a->set_baseline(early_mean);
      a->set_detail(absl::StrFormat(
          "%s on %s: %d of the last %d attempts succeeded (95%% upper bound "
          "%.3f) against %d of %d before (posterior mean %.3f)",
          key.second, key.first, static_cast<int>(recent_s), kDropRecent, upper,
          static_cast<int>(early_s), static_cast<int>(early_n), early_mean));
    }
    std::sort(out.mutable_anomalies()->begin(), out.mutable_anomalies()->end(),
              [](const v1::PatternAnomaly& a, const v1::PatternAnomaly& b) {
                const absl::Time ta = FromProto(a.time());
                const absl::Time tb = FromProto(b.time());
                if (ta != tb) return ta > tb;
                return std::make_tuple(a.kind(), a.signature(), a.strategy(),
                                       a.episode_id()) <
                       std::make_tuple(b.kind(), b.signature(), b.strategy(),
                                       b.episode_id());
              });
    out.set_anomalies_found(out.anomalies_size());
  }

  Truncate(out.mutable_correlations(), o.limit);
  Truncate(out.mutable_bursts(), o.limit);
  Truncate(out.mutable_effectiveness(), o.limit);
  Truncate(out.mutable_anomalies(), o.limit);
  return out;
}

}  // namespace reflexion::core

#include "core/reflexion/version_judge.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"

namespace reflexion::core {
namespace {

namespace v1 = ::reflexion::v1;

constexpr int kGrid = 4000;

// Unnormalised log density of Beta(a, b) at x in (0, 1).
double LogKernel(double a, double b, double x) {
  return (a - 1) * std::log(x) + (b - 1) * std::log1p(-x);
}

const v1::VersionStats* Find(const std::vector<v1::VersionStats>& stats,
                             int32_t version) {
  for (const v1::VersionStats& s : stats) {
    if (s.version() == version) return &s;
  }
  return nullptr;
}

}  // namespace

double ProbabilityBelow(double a_x, double b_x, double a_y, double b_y) {
  // Densities on the midpoints, shifted by their maxima before exp so that
  // large counts do not underflow, then normalised on the grid.
  std::vector<double> fx(kGrid), fy(kGrid);
  double max_x = -INFINITY, max_y = -INFINITY;
  for (int i = 0; i < kGrid; ++i) {
    const double t = (i + 0.5) / kGrid;
    fx[i] = LogKernel(a_x, b_x, t);
    fy[i] = LogKernel(a_y, b_y, t);
    max_x = std::max(max_x, fx[i]);
    max_y = std::max(max_y, fy[i]);
  }
  double sum_x = 0, sum_y = 0;
  for (int i = 0; i < kGrid; ++i) {
    fx[i] = std::exp(fx[i] - max_x);
    fy[i] = std::exp(fy[i] - max_y);
    sum_x += fx[i];
    sum_y += fy[i];
  }
  // F_X at the i-th midpoint: the mass of the cells below plus half its own.
  double below = 0, p = 0;
  for (int i = 0; i < kGrid; ++i) {
    const double cdf = (below + fx[i] / 2) / sum_x;
    p += fy[i] / sum_y * cdf;
    below += fx[i];
  }
  return std::clamp(p, 0.0, 1.0);
}

v1::Strategy RollbackVersion(const v1::Strategy& latest,
                             const v1::Strategy& target,
                             const std::string& author,
                             const std::string& reason, absl::Time now) {
  v1::Strategy next = latest;
  next.set_version(latest.version() + 1);
  next.set_parent_version(latest.version());
  *next.mutable_params() = target.params();
  next.set_author(author);
  next.set_reason(std::string(ClipUtf8(reason, 1024)));
  *next.mutable_created_at() = ToProto(now);
  return next;
}

std::optional<v1::Strategy> JudgeLatestVersion(
    const std::vector<v1::Strategy>& history,
    const std::vector<v1::VersionStats>& stats, const RollbackRule& rule,
    absl::Time now) {
  if (rule.min_trials <= 0 || history.empty()) return std::nullopt;
  const v1::Strategy& latest = history.back();
  if (!absl::StartsWith(latest.author(), "reflector:")) return std::nullopt;
  const int32_t parent_version = latest.parent_version();
  if (parent_version < 1 || parent_version > latest.version()) {
    return std::nullopt;
  }
  const v1::Strategy* parent = nullptr;
  for (const v1::Strategy& s : history) {
    if (s.version() == parent_version) parent = &s;
  }
  const v1::VersionStats* mine = Find(stats, latest.version());
  if (parent == nullptr || mine == nullptr ||
      mine->trials() < rule.min_trials) {
    return std::nullopt;
  }
  const v1::VersionStats* theirs = Find(stats, parent_version);
  const int64_t parent_trials = theirs == nullptr ? 0 : theirs->trials();
  const int64_t parent_successes = theirs == nullptr ? 0 : theirs->successes();
  const double p = ProbabilityBelow(
      1.0 + mine->successes(), 1.0 + mine->trials() - mine->successes(),
      1.0 + parent_successes, 1.0 + parent_trials - parent_successes);
  if (!(p > rule.threshold)) return std::nullopt;
  return RollbackVersion(
      latest, *parent, "auto-rollback",
      absl::StrFormat("version %d succeeded %d of %d, its parent version %d "
                      "%d of %d: P(version %d is worse) = %.3f > %.2f",
                      latest.version(), mine->successes(), mine->trials(),
                      parent_version, parent_successes, parent_trials,
                      latest.version(), p, rule.threshold),
      now);
}

}  // namespace reflexion::core

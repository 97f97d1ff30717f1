#include "core/sim/simulated_cluster.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "core/reflexion/analyzer.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/facts.h"
#include "core/sim/default_scenarios.h"
#include "core/sim/stable_hash.h"
#include "core/status_macros.h"

namespace reflexion::sim {
namespace {

using reflexion::v1::Action;
using reflexion::v1::ActionType;
using reflexion::v1::Diagnosis;
using reflexion::v1::ExecutionResult;
using reflexion::v1::Incident;
using reflexion::v1::Observation;

constexpr absl::string_view kName = "simulated";

std::string PodKey(absl::string_view ns, absl::string_view pod) {
  return absl::StrCat(ns, "/", pod);
}

double Round1(double x) { return std::round(x * 10) / 10; }

// Fills the "{pod}" and "{namespace}" placeholders of scenario text.
std::string Render(absl::string_view text, absl::string_view ns,
                   absl::string_view pod) {
  return absl::StrReplaceAll(text, {{"{pod}", pod}, {"{namespace}", ns}});
}

std::string ContainerName(const Scenario& s) {
  if (s.signals.container_statuses_size() == 0 ||
      s.signals.container_statuses(0).name().empty()) {
    return "the container";
  }
  return absl::StrCat("container ", s.signals.container_statuses(0).name());
}

std::string Mebibytes(double bytes) {
  return absl::StrFormat("%.0fMi", bytes / (1024.0 * 1024.0));
}

// What the executor says it did. Says nothing about the hidden root cause.
std::string ActionMessage(const Action& a, const Scenario& s) {
  const std::string pod = PodKey(a.namespace_(), a.pod_name());
  const std::string container = ContainerName(s);
  switch (a.type()) {
    case reflexion::v1::ACTION_TYPE_DELETE_POD:
      return absl::StrCat("deleted pod ", pod,
                          "; its controller created a replacement");
    case reflexion::v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT:
      return absl::StrCat("rolled back the deployment of pod ", pod,
                          " to its previous revision");
    case reflexion::v1::ACTION_TYPE_PATCH_IMAGE:
      return absl::StrCat("set the image of ", container, " in pod ", pod,
                          " to ", a.image());
    case reflexion::v1::ACTION_TYPE_ATTACH_PULL_SECRET:
      return absl::StrCat("attached image pull secret ", a.pull_secret(),
                          " to the service account of pod ", pod);
    case reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT: {
      const double factor = a.params().memory_factor();
      const int64_t limit = s.signals.memory_limit_bytes();
      if (limit <= 0) {
        return absl::StrFormat("raised the memory limit of %s in pod %s by x%g",
                               container, pod, factor);
      }
      return absl::StrFormat(
          "raised the memory limit of %s in pod %s from %s to %s (x%g)",
          container, pod, Mebibytes(static_cast<double>(limit)),
          Mebibytes(static_cast<double>(limit) * factor), factor);
    }
    case reflexion::v1::ACTION_TYPE_RELAX_PROBES:
      return absl::StrFormat(
          "relaxed the liveness and readiness probes of %s in pod %s by x%g",
          container, pod, a.params().probe_factor());
    case reflexion::v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS:
      return absl::StrFormat(
          "lowered the resource requests of %s in pod %s by x%g", container,
          pod, a.params().requests_factor());
    case reflexion::v1::ACTION_TYPE_CREATE_MISSING_CONFIG:
      return absl::StrCat(
          "created the missing configuration referenced by pod ", pod);
    case reflexion::v1::ACTION_TYPE_RELAX_NODE_SELECTOR:
      return absl::StrCat("relaxed the node selector and affinity of pod ",
                          pod);
    case reflexion::v1::ACTION_TYPE_SCALE_NODE_POOL:
      return absl::StrCat("added a node to the node pool serving pod ", pod);
    default:
      return absl::StrCat("applied ", ActionName(a.type()), " to pod ", pod);
  }
}

// What a failing pod shows: waiting state, last termination, events.
void AddFailureSignals(const Scenario& s, absl::string_view ns,
                       absl::string_view pod, Observation* o) {
  if (s.signals.container_statuses_size() > 0) {
    const reflexion::v1::ContainerStatus& c = s.signals.container_statuses(0);
    if (!c.waiting_reason().empty()) {
      o->add_signals(absl::StrCat(
          ContainerName(s), " is waiting: ", c.waiting_reason(),
          c.waiting_message().empty()
              ? ""
              : absl::StrCat(": ", Render(c.waiting_message(), ns, pod))));
    }
    if (!c.last_termination_reason().empty()) {
      o->add_signals(absl::StrCat(
          ContainerName(s), " last terminated: ", c.last_termination_reason(),
          " (exit code ", c.last_exit_code(), ")"));
    }
  }
  for (const reflexion::v1::PodEvent& e : s.signals.events()) {
    o->add_signals(absl::StrCat(e.type(), " ", e.reason(), ": ",
                                Render(e.message(), ns, pod)));
  }
}

// Whether the scenario's container runs and crashes (so restarts count up),
// as opposed to never starting (image pull, config, scheduling, eviction).
bool Crashes(const Scenario& s) {
  if (s.signals.container_statuses_size() == 0) return false;
  const reflexion::v1::ContainerStatus& c = s.signals.container_statuses(0);
  return c.restart_count() > 0 || !c.last_termination_reason().empty();
}

constexpr int64_t kMi = int64_t{1} << 20;

// Quantities as the Go agent writes them (client/go/agent/quantity.go).
std::string FormatMi(double bytes) {
  int64_t n = static_cast<int64_t>(std::llround(bytes / kMi));
  return absl::StrCat(std::max<int64_t>(n, 1), "Mi");
}
std::string FormatBytes(int64_t bytes) {
  return bytes % kMi == 0 ? absl::StrCat(bytes / kMi, "Mi")
                          : absl::StrCat(bytes);
}
std::string FormatMilliCpu(int64_t m) {
  m = std::max<int64_t>(m, 1);
  return m % 1000 == 0 ? absl::StrCat(m / 1000) : absl::StrCat(m, "m");
}

// The Deployment of a pod named like a ReplicaSet's ("web-7d4b9c-x2k4p" ->
// "web"); the pod's own name when it has fewer parts.
std::string DeploymentOfPod(absl::string_view pod) {
  std::vector<absl::string_view> parts = absl::StrSplit(pod, '-');
  if (parts.size() < 3) return std::string(pod);
  parts.resize(parts.size() - 2);
  return absl::StrJoin(parts, "-");
}

// A probe timing as the Go agent reports it: "N", or "N (default)" when the
// pod spec leaves it unset.
std::string Timing(std::optional<int64_t> v, int64_t def) {
  return v.has_value() ? absl::StrCat(*v) : absl::StrCat(def, " (default)");
}
// The number a timing or revision value starts with (0 when none).
int64_t LeadingInt(absl::string_view v) {
  size_t n = 0;
  while (n < v.size() && absl::ascii_isdigit(static_cast<unsigned char>(v[n])))
    ++n;
  int64_t out = 0;
  if (!absl::SimpleAtoi(v.substr(0, n), &out)) return 0;
  return out;
}

constexpr absl::string_view kTemplateOf = "template of revision ";

// The model of a pod at Diagnose: from its pod object (`facts`, when the
// incident has one) or the scenario's signals and the documented defaults.
PodModel InitialModel(const Scenario& s, const core::IncidentFacts* facts,
                      absl::string_view pod) {
  PodModel m;
  m.pod = absl::StrCat("Pod/", pod);
  m.ready = s.workload.ready;
  std::string container = "app", image;
  std::string memory_limit = "512Mi", cpu_request = "250m",
              memory_request = "256Mi";
  std::string liveness_delay = "10", liveness_timeout = "1",
              readiness_delay = "5", readiness_timeout = "1";
  std::string deployment = DeploymentOfPod(pod);
  bool bare = false;
  if (facts != nullptr) {
    const core::ContainerFacts* c = nullptr;
    for (const core::ContainerFacts& f : facts->containers) {
      if (f.init) continue;
      if (c == nullptr || (!f.ready && c->ready)) c = &f;
    }
    if (c != nullptr && !c->name.empty()) {
      container = c->name;
      image = c->image;
      const core::ResourceFacts& r = c->resources;
      if (r.memory_limit_bytes)
        memory_limit = FormatBytes(*r.memory_limit_bytes);
      if (r.cpu_request_millis)
        cpu_request = FormatMilliCpu(*r.cpu_request_millis);
      if (r.memory_request_bytes) {
        memory_request = FormatBytes(*r.memory_request_bytes);
      }
      // Only the probes the pod has (as the Go agent relaxes them).
      liveness_delay = liveness_timeout = readiness_delay = readiness_timeout =
          "";
      if (c->liveness.present) {
        liveness_delay = Timing(c->liveness.initial_delay_seconds, 0);
        liveness_timeout = Timing(c->liveness.timeout_seconds, 1);
      }
      if (c->readiness.present) {
        readiness_delay = Timing(c->readiness.initial_delay_seconds, 0);
        readiness_timeout = Timing(c->readiness.timeout_seconds, 1);
      }
    }
    bare = true;
    for (const auto& [kind, name] : facts->pod.owners) {
      if (kind == "ReplicaSet") {
        bare = false;
        const size_t dash = name.rfind('-');
        deployment = dash == std::string::npos ? name : name.substr(0, dash);
      }
    }
  } else {
    if (s.signals.container_statuses_size() > 0) {
      const reflexion::v1::ContainerStatus& c = s.signals.container_statuses(0);
      if (!c.name().empty()) container = c.name();
      image = c.image();
    }
    if (s.signals.memory_limit_bytes() > 0) {
      memory_limit = FormatBytes(s.signals.memory_limit_bytes());
    }
  }
  const std::string workload =
      bare ? m.pod : absl::StrCat("Deployment/", deployment);
  m.fields = absl::StrCat(
      workload, bare ? " spec.containers[" : " spec.template.spec.containers[",
      container, "].");
  m.secrets = "ServiceAccount/default imagePullSecrets";
  auto& v = m.values;
  if (!image.empty()) v[m.fields + "image"] = image;
  v[m.fields + "resources.limits.memory"] = memory_limit;
  v[m.fields + "resources.requests.cpu"] = cpu_request;
  v[m.fields + "resources.requests.memory"] = memory_request;
  if (!liveness_delay.empty()) {
    v[m.fields + "livenessProbe.initialDelaySeconds"] = liveness_delay;
    v[m.fields + "livenessProbe.timeoutSeconds"] = liveness_timeout;
  }
  if (!readiness_delay.empty()) {
    v[m.fields + "readinessProbe.initialDelaySeconds"] = readiness_delay;
    v[m.fields + "readinessProbe.timeoutSeconds"] = readiness_timeout;
  }
  if (!bare) {
    m.revision = absl::StrCat(workload, " revision");
    v[m.revision] = "2";
  }
  v[m.secrets] = "[]";
  return m;
}

// Applies a tier-A/B action to the model and returns what it changed, in
// the Go agent's order and format.
std::vector<reflexion::v1::ValueChange> ApplyToModel(const Action& a,
                                                     const Scenario& s,
                                                     PodModel& m) {
  std::vector<reflexion::v1::ValueChange> out;
  auto set = [&](const std::string& path, std::string after) {
    std::string& cur = m.values[path];
    if (cur == after) return;
    reflexion::v1::ValueChange c;
    c.set_path(path);
    c.set_before(cur);
    c.set_after(after);
    cur = std::move(after);
    out.push_back(std::move(c));
  };
  auto deleted = [&] {
    reflexion::v1::ValueChange c;
    c.set_path(m.pod);
    c.set_before("present");
    c.set_after("deleted");
    out.push_back(std::move(c));
  };
  const std::string image = m.fields + "image";
  switch (a.type()) {
    case reflexion::v1::ACTION_TYPE_DELETE_POD:
      deleted();
      break;
    case reflexion::v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT: {
      if (m.revision.empty()) break;
      const std::string& cur = m.values[m.revision];
      const int64_t rev = absl::StartsWith(cur, kTemplateOf)
                              ? LeadingInt(cur.substr(kTemplateOf.size()))
                              : LeadingInt(cur);
      if (rev <= 1) break;  // a first revision: nothing to go back to
      set(m.revision, absl::StrCat(kTemplateOf, rev - 1));
      const std::string& healthy = s.signals.last_healthy_image();
      if (!healthy.empty() && m.values.contains(image)) set(image, healthy);
      break;
    }
    case reflexion::v1::ACTION_TYPE_PATCH_IMAGE:
      set(image, a.image());
      break;
    case reflexion::v1::ACTION_TYPE_ATTACH_PULL_SECRET: {
      std::string& cur = m.values[m.secrets];
      std::vector<std::string> names;
      if (cur.size() > 2)
        names = absl::StrSplit(cur.substr(1, cur.size() - 2), ',');
      if (std::find(names.begin(), names.end(), a.pull_secret()) ==
          names.end()) {
        names.push_back(a.pull_secret());
        set(m.secrets, absl::StrCat("[", absl::StrJoin(names, ","), "]"));
      }
      deleted();  // so the replacement pulls with the secret
      break;
    }
    case reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT: {
      const std::string path = m.fields + "resources.limits.memory";
      std::optional<int64_t> b = core::ParseMemoryBytes(m.values[path]);
      if (!b.has_value()) break;
      const double mib =
          std::ceil(static_cast<double>(*b) * a.params().memory_factor() / kMi);
      set(path, FormatMi(mib * kMi));
      break;
    }
    case reflexion::v1::ACTION_TYPE_RELAX_PROBES:
      for (const char* field :
           {"livenessProbe.initialDelaySeconds", "livenessProbe.timeoutSeconds",
            "readinessProbe.initialDelaySeconds",
            "readinessProbe.timeoutSeconds"}) {
        const std::string path = m.fields + field;
        if (!m.values.contains(path)) continue;  // the pod has no such probe
        const int64_t old = LeadingInt(m.values[path]);
        const int64_t now = static_cast<int64_t>(
            std::ceil(static_cast<double>(old) * a.params().probe_factor()));
        if (now != old) set(path, absl::StrCat(now));
      }
      break;
    case reflexion::v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS: {
      const double f = a.params().requests_factor();
      const std::string cpu = m.fields + "resources.requests.cpu";
      if (std::optional<int64_t> mc = core::ParseCpuMillis(m.values[cpu])) {
        set(cpu, FormatMilliCpu(static_cast<int64_t>(
                     std::floor(static_cast<double>(*mc) * f))));
      }
      const std::string mem = m.fields + "resources.requests.memory";
      if (std::optional<int64_t> b = core::ParseMemoryBytes(m.values[mem])) {
        set(mem, FormatMi(static_cast<double>(*b) * f));
      }
      break;
    }
    default:  // tier C: a human's change, not modelled
      break;
  }
  return out;
}

// Restores an undo's entries in the model. Returns false (nothing changed)
// when a path is unknown or no entry could be restored; `message` says
// what happened either way.
bool UndoInModel(const Action& a, PodModel& m,
                 std::vector<reflexion::v1::ValueChange>* changes,
                 std::string* message) {
  for (const reflexion::v1::ValueChange& r : a.restore()) {
    if (!m.values.contains(r.path())) {
      *message =
          absl::StrCat("refused: undo of ", a.undo_of(), ": path \"", r.path(),
                       "\" is not a value this cluster changes");
      return false;
    }
  }
  std::vector<std::string> skipped;
  for (const reflexion::v1::ValueChange& r : a.restore()) {
    std::string& cur = m.values[r.path()];
    if (cur != r.after()) {
      skipped.push_back(absl::StrCat(r.path(), " is now \"", cur, "\", not \"",
                                     r.after(),
                                     "\": changed since, left alone"));
      continue;
    }
    if (cur == r.before()) continue;
    reflexion::v1::ValueChange c;
    c.set_path(r.path());
    c.set_before(cur);
    c.set_after(r.before());
    cur = r.before();
    changes->push_back(std::move(c));
  }
  const std::string pod = PodKey(a.namespace_(), a.pod_name());
  if (changes->empty()) {
    *message = absl::StrCat("refused: undo of ", a.undo_of(), " on pod ", pod,
                            ": nothing to restore", skipped.empty() ? "" : ": ",
                            absl::StrJoin(skipped, "; "));
    return false;
  }
  std::vector<std::string> done;
  for (const auto& c : *changes) {
    done.push_back(absl::StrCat(c.path(), " ", c.before(), " -> ", c.after()));
  }
  *message = absl::StrCat(
      "undid ", a.undo_of(), " on pod ", pod, ": restored ",
      absl::StrJoin(done, "; "),
      skipped.empty() ? "" : "; not restored: ", absl::StrJoin(skipped, "; "));
  return true;
}

}  // namespace

absl::StatusOr<std::unique_ptr<SimulatedCluster>> SimulatedCluster::FromYaml(
    absl::string_view yaml_text, uint64_t seed) {
  REFLEXION_ASSIGN_OR_RETURN(std::vector<Scenario> scenarios,
                             ParseScenarios(yaml_text));
  return absl::WrapUnique(new SimulatedCluster(std::move(scenarios), seed));
}

absl::StatusOr<std::unique_ptr<SimulatedCluster>> SimulatedCluster::FromFile(
    const std::string& path, uint64_t seed) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read scenario file ", path));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::NotFoundError(
        absl::StrCat("cannot read scenario file ", path));
  }
  absl::StatusOr<std::unique_ptr<SimulatedCluster>> cluster =
      FromYaml(text.str(), seed);
  if (!cluster.ok()) {
    return absl::Status(cluster.status().code(),
                        absl::StrCat(path, ": ", cluster.status().message()));
  }
  return cluster;
}

absl::StatusOr<std::unique_ptr<SimulatedCluster>>
SimulatedCluster::WithDefaultScenarios(uint64_t seed) {
  return FromYaml(DefaultScenariosYaml(), seed);
}

namespace {

// The analysis of what an incident itself says (no executor).
reflexion::v1::Analysis OwnAnalysis(const Incident& incident) {
  reflexion::v1::Analysis a =
      core::Analyze(incident, reflexion::v1::Diagnosis(), false);
  if (core::NeedsDeepAnalysis(a)) {
    a = core::Analyze(incident, reflexion::v1::Diagnosis(), true);
  }
  return a;
}

// The signature a scenario presents: its signals analysed as a diagnosis of
// an incident that says nothing itself.
std::string SignatureOf(const Scenario& s) {
  Incident bare;
  bare.set_pod_name("pod");
  bare.set_namespace_("default");
  for (const std::string& t : s.error_types) {
    if (t != kCatchAll) {
      bare.set_error_type(t);
      break;
    }
  }
  if (bare.error_type().empty()) bare.set_error_type("Unknown");
  reflexion::v1::Analysis a = core::Analyze(bare, s.signals, false);
  if (core::NeedsDeepAnalysis(a)) a = core::Analyze(bare, s.signals, true);
  return a.signature();
}

constexpr absl::string_view kNeutralPrefix = "neutral:";

}  // namespace

SimulatedCluster::SimulatedCluster(std::vector<Scenario> scenarios,
                                   uint64_t seed)
    : scenarios_(std::move(scenarios)), seed_(seed) {
  signatures_.reserve(scenarios_.size());
  for (const Scenario& sc : scenarios_) signatures_.push_back(SignatureOf(sc));
}

const Scenario& SimulatedCluster::ScenarioAt(size_t index) const {
  if (index < scenarios_.size()) return scenarios_[index];
  return neutral_[index - scenarios_.size()];
}

size_t SimulatedCluster::NeutralFor(const std::string& signature) {
  if (auto it = neutral_index_.find(signature); it != neutral_index_.end()) {
    return it->second;
  }
  std::vector<std::string> parts = absl::StrSplit(signature, '/');
  const std::string family = parts.empty() ? signature : parts[0];
  const std::string cause = parts.size() > 1 ? parts[1] : "";
  Scenario n;
  n.id = absl::StrCat(kNeutralPrefix, signature);
  n.error_types = {family};
  n.root_cause = absl::StrCat(
      "no scenario agrees with the pod's own facts (", signature,
      "): actions succeed with the catalog's prior for the signature");
  for (const core::ActionSpec& spec : core::Catalog()) {
    if (!spec.strategy) continue;
    core::Prior prior = core::PriorFor(family, cause, spec.name);
    ActionModel m;
    m.success = prior.alpha / (prior.alpha + prior.beta);
    m.relapse = 0.1;
    m.recovery_s = 30;
    n.actions[spec.type] = m;
  }
  neutral_.push_back(std::move(n));
  size_t index = scenarios_.size() + neutral_.size() - 1;
  neutral_index_.emplace(signature, index);
  return index;
}

absl::StatusOr<size_t> SimulatedCluster::FromJournal(absl::string_view field) {
  size_t index = 0;
  if (absl::SimpleAtoi(field, &index)) {  // older journals: an index
    if (index < scenarios_.size()) return index;
  } else if (absl::StartsWith(field, kNeutralPrefix)) {
    return NeutralFor(std::string(field.substr(kNeutralPrefix.size())));
  } else {
    for (size_t i = 0; i < scenarios_.size(); ++i) {
      if (scenarios_[i].id == field) return i;
    }
  }
  return absl::DataLossError(
      absl::StrCat("no scenario \"", absl::CEscape(field), "\""));
}

std::string SimulatedCluster::Name() const { return std::string(kName); }

// The port allows completing on any thread; completing synchronously keeps
// the simulation free of threads and of timing, hence deterministic.
void SimulatedCluster::Diagnose(const Incident& incident,
                                core::Callback<Diagnosis> done) {
  Complete([r = DiagnoseNow(incident), done = std::move(done)]() mutable {
    std::move(done)(std::move(r));
  });
}

void SimulatedCluster::Execute(const Action& action,
                               core::Callback<ExecutionResult> done) {
  Complete([r = ExecuteNow(action), done = std::move(done)]() mutable {
    std::move(done)(std::move(r));
  });
}

void SimulatedCluster::Observe(const Action& action, absl::Duration window,
                               core::Callback<Observation> done) {
  Complete([r = ObserveNow(action, window), done = std::move(done)]() mutable {
    std::move(done)(std::move(r));
  });
}

SimulatedCluster::~SimulatedCluster() {
  if (timer_.joinable()) {
    {
      absl::MutexLock lock(&timer_mu_);
      stopping_ = true;
    }
    timer_.join();
  }
  if (journal_fd_ >= 0) close(journal_fd_);
}

void SimulatedCluster::SetLatency(absl::Duration latency) {
  latency_ = latency;
  if (latency_ > absl::ZeroDuration() && !timer_.joinable()) {
    timer_ = std::thread([this] { TimerLoop(); });
  }
}

void SimulatedCluster::Complete(absl::AnyInvocable<void() &&> fn) {
  if (latency_ <= absl::ZeroDuration()) {
    std::move(fn)();
    return;
  }
  absl::MutexLock lock(&timer_mu_);
  if (stopping_) {
    timer_mu_.Unlock();
    std::move(fn)();
    timer_mu_.Lock();
    return;
  }
  // The latency is constant, so arrival order is deadline order.
  delayed_.push_back({absl::Now() + latency_, std::move(fn)});
}

void SimulatedCluster::TimerLoop() {
  while (true) {
    absl::AnyInvocable<void() &&> fn;
    {
      absl::MutexLock lock(&timer_mu_);
      while (true) {
        if (!delayed_.empty() &&
            (stopping_ || delayed_.front().due <= absl::Now())) {
          fn = std::move(delayed_.front().fn);
          delayed_.pop_front();
          break;
        }
        if (stopping_) return;  // and drained
        absl::Duration wait = delayed_.empty()
                                  ? absl::Milliseconds(50)
                                  : delayed_.front().due - absl::Now();
        auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(timer_mu_) {
          return stopping_;
        };
        timer_mu_.AwaitWithTimeout(absl::Condition(&woken), wait);
      }
    }
    std::move(fn)();  // no lock held: `fn` may call back in
  }
}

absl::Status SimulatedCluster::AppendToJournal(const Action& action,
                                               size_t scenario,
                                               absl::string_view error_type,
                                               const ExecutionResult& result,
                                               int64_t draw_n) {
  if (journal_fd_ < 0) return absl::OkStatus();
  ExecutionResult kept;  // the action is in the first field already
  kept.set_message(result.message());
  *kept.mutable_changes() = result.changes();
  std::string line = absl::StrCat(
      absl::BytesToHexString(action.SerializeAsString()), "\t",
      ScenarioAt(scenario).id, "\t", error_type, "\t",
      absl::BytesToHexString(kept.SerializeAsString()), "\t", draw_n, "\n");
  // One write(2) per line with O_APPEND: whole lines, in the page cache
  // before Execute completes, so a killed process loses none.
  ssize_t n = write(journal_fd_, line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) {
    return absl::UnavailableError(
        absl::StrCat("cannot append to the simulator journal: ",
                     n < 0 ? strerror(errno) : "short write"));
  }
  return absl::OkStatus();
}

absl::Status SimulatedCluster::EnableJournal(const std::string& path) {
  absl::MutexLock lock(&mu_);
  if (journal_fd_ >= 0) {
    return absl::FailedPreconditionError("journal already enabled");
  }
  std::ifstream in(path);
  std::string line;
  int line_no = 0;
  while (in && std::getline(in, line)) {
    ++line_no;
    if (line.empty()) continue;
    // Three fields from older builds; the fourth is the result's changes,
    // the fifth the n of the outcome's draw (older: drawn from the key).
    std::vector<std::string> parts = absl::StrSplit(line, '\t');
    absl::StatusOr<size_t> index =
        parts.size() >= 3 && parts.size() <= 5
            ? FromJournal(parts[1])
            : absl::DataLossError("not three to five fields");
    size_t scenario = index.ok() ? *index : 0;
    Action action;
    ExecutionResult recorded;
    int64_t draw_n = 0;
    if (!index.ok() ||
        !action.ParseFromString(absl::HexStringToBytes(parts[0])) ||
        action.idempotency_key().empty() ||
        (parts.size() >= 4 &&
         !recorded.ParseFromString(absl::HexStringToBytes(parts[3]))) ||
        (parts.size() == 5 &&
         (!absl::SimpleAtoi(parts[4], &draw_n) || draw_n < 1))) {
      return absl::DataLossError(absl::StrCat(
          "simulator journal ", path, ": line ", line_no, " is corrupt"));
    }
    if (results_.contains(action.idempotency_key())) continue;
    const Scenario& s = ScenarioAt(scenario);
    PodState& state = pods_[PodKey(action.namespace_(), action.pod_name())];
    if (state.model.values.empty() || state.scenario != scenario) {
      state.model = InitialModel(s, nullptr, action.pod_name());
    }
    state.scenario = scenario;
    state.error_type = parts[2];
    ExecutionResult result;
    *result.mutable_action() = action;
    result.set_applied(true);
    result.set_executor(std::string(kName));
    if (parts.size() >= 4) {
      result.set_message(recorded.message());
      *result.mutable_changes() = recorded.changes();
      for (const reflexion::v1::ValueChange& c : recorded.changes()) {
        if (c.path() != state.model.pod) {
          state.model.values[c.path()] = c.after();
        }
      }
    } else {
      result.set_message(ActionMessage(action, s));
      for (auto& c : ApplyToModel(action, s, state.model)) {
        *result.add_changes() = std::move(c);
      }
    }
    int64_t& applied = state.applied[action.type()];
    std::string draw_key;
    if (parts.size() == 5) {
      applied = std::max(applied, draw_n);
      draw_key = DrawKey(action, parts[2], draw_n);
    } else {
      ++applied;
      draw_key = action.idempotency_key();
    }
    const Outcome outcome = Resolve(s, action, draw_key, state);
    results_.emplace(action.idempotency_key(), result);
    keyed_[action.idempotency_key()] = Keyed{scenario, parts[2], outcome};
    state.outcomes[action.idempotency_key()] = outcome;
    state.last_key = action.idempotency_key();
    log_.push_back(ExecutedAction{
        .pod_name = action.pod_name(),
        .pod_namespace = action.namespace_(),
        .type = action.type(),
        .idempotency_key = action.idempotency_key(),
        .scenario_id = s.id,
        .recovered = outcome.recovered,
        .relapsed = outcome.relapsed,
    });
  }
  journal_fd_ =
      open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (journal_fd_ < 0) {
    return absl::UnavailableError(absl::StrCat("cannot open simulator journal ",
                                               path, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> SimulatedCluster::Assign(const Incident& incident) {
  std::vector<size_t> candidates;
  for (size_t i = 0; i < scenarios_.size(); ++i) {
    if (scenarios_[i].Matches(incident.error_type())) candidates.push_back(i);
  }
  if (incident.has_pod()) {
    // Only worlds that agree with what the pod itself says.
    const std::string own = OwnAnalysis(incident).signature();
    std::vector<size_t> agreeing;
    for (size_t i = 0; i < scenarios_.size(); ++i) {
      if (signatures_[i] == own) agreeing.push_back(i);
    }
    if (agreeing.empty()) {
      absl::MutexLock lock(&mu_);
      return NeutralFor(own);
    }
    candidates = std::move(agreeing);
  }
  if (candidates.empty()) {
    for (size_t i = 0; i < scenarios_.size(); ++i) {
      if (scenarios_[i].IsCatchAll()) candidates.push_back(i);
    }
  }
  if (candidates.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "no simulated scenario matches error type \"", incident.error_type(),
        "\" and none is a catch-all (\"*\")"));
  }
  double total = 0;
  for (size_t i : candidates) total += scenarios_[i].weight;
  const double target = StableHash(seed_)
                            .Add("assign")
                            .Add(incident.namespace_())
                            .Add(incident.pod_name())
                            .Add(incident.error_type())
                            .Unit() *
                        total;
  double cumulative = 0;
  for (size_t i : candidates) {
    cumulative += scenarios_[i].weight;
    if (target < cumulative) return i;
  }
  return candidates.back();  // rounding at the top end
}

absl::StatusOr<Diagnosis> SimulatedCluster::DiagnoseNow(
    const Incident& incident) {
  if (incident.pod_name().empty() || incident.namespace_().empty()) {
    return absl::InvalidArgumentError(
        "incident needs pod_name and namespace to diagnose");
  }
  REFLEXION_ASSIGN_OR_RETURN(size_t index, Assign(incident));
  const std::string& ns = incident.namespace_();
  const std::string& pod = incident.pod_name();
  std::optional<core::IncidentFacts> facts;
  if (incident.has_pod()) facts = core::ExtractFacts(incident);

  absl::MutexLock lock(&mu_);
  const Scenario& s = ScenarioAt(index);
  Diagnosis d;
  if (incident.has_pod()) {
    // The pod object is the truth: add only what it cannot say (which pull
    // secrets exist, whether a rollout happened), never statuses, events,
    // logs or an image of the scenario's own.
    *d.mutable_available_pull_secrets() = s.signals.available_pull_secrets();
    d.set_recent_rollout(s.signals.recent_rollout());
  } else {
    d = s.signals;
    for (reflexion::v1::ContainerStatus& c : *d.mutable_container_statuses()) {
      c.set_waiting_message(Render(c.waiting_message(), ns, pod));
    }
    for (reflexion::v1::PodEvent& e : *d.mutable_events()) {
      e.set_message(Render(e.message(), ns, pod));
    }
    d.set_logs(Render(d.logs(), ns, pod));
  }
  d.set_source(std::string(kName));

  PodState& state = pods_[PodKey(ns, pod)];
  // A new incident of the pod; its action counts stay (DrawKey's n).
  absl::flat_hash_map<int, int64_t> applied = std::move(state.applied);
  state = PodState{};
  state.applied = std::move(applied);
  state.scenario = index;
  state.error_type = incident.error_type();
  state.model = InitialModel(s, facts.has_value() ? &*facts : nullptr, pod);
  return d;
}

std::string SimulatedCluster::DrawKey(const Action& action,
                                      absl::string_view error_type, int64_t n) {
  return absl::StrCat(PodKey(action.namespace_(), action.pod_name()), "\t",
                      error_type, "\t", ActionName(action.type()), "\t", n);
}

SimulatedCluster::Outcome SimulatedCluster::Draw(
    const Scenario& s, const Action& action, absl::string_view draw_key) const {
  // Independent draws per purpose, all from (seed, draw_key) only.
  auto draw = [&](absl::string_view purpose) {
    return StableHash(seed_).Add(purpose).Add(draw_key).Unit();
  };
  if (const std::string* reason = s.FindRegression(action.type())) {
    // Worse than before: a new failure and more restarts than
    // core::DetectRegression lets pass (2x the count and more than 5).
    const int32_t before = s.signals.container_statuses_size() > 0
                               ? s.signals.container_statuses(0).restart_count()
                               : 0;
    Outcome o;
    o.type = action.type();
    o.regression = *reason;
    o.restarts =
        2 * before + 6 + static_cast<int32_t>(draw("regression_restarts") * 3);
    return o;
  }
  const ActionModel* model = s.FindAction(action.type());
  const double p = model ? model->SuccessProbability(action.params()) : 0;
  const double relapse = model ? model->relapse : 0;
  const double recovery_s =
      model ? model->recovery_s : ActionModel{}.recovery_s;

  Outcome o;
  o.type = action.type();
  o.recovered = draw("success") < p;
  o.relapsed = o.recovered && draw("relapse") < relapse;
  if (o.recovered) {
    // ±20% jitter around the scenario's recovery time.
    o.time_to_recovery_s =
        Round1(recovery_s * (0.8 + 0.4 * draw("recovery_time")));
  }
  if (o.relapsed) {
    o.relapse_after_s =
        Round1(o.time_to_recovery_s * (1.5 + draw("relapse_time")));
    o.restarts = 1 + static_cast<int32_t>(draw("restarts") * 2);
  } else if (!o.recovered && Crashes(s)) {
    o.restarts = 2 + static_cast<int32_t>(draw("restarts") * 4);
  }
  return o;
}

SimulatedCluster::Outcome SimulatedCluster::Resolve(const Scenario& s,
                                                    const Action& action,
                                                    absl::string_view draw_key,
                                                    PodState& state) {
  Outcome o = Draw(s, action, draw_key);  // an undo: the original failure
  if (action.type() == reflexion::v1::ACTION_TYPE_UNDO) {
    o.undo_of = action.undo_of();
    auto undone = keyed_.find(action.undo_of());
    if (undone != keyed_.end() &&
        undone->second.outcome.type == reflexion::v1::ACTION_TYPE_UNDO) {
      // Undoing an undo re-applies the action that undo undid.
      if (auto again = keyed_.find(undone->second.outcome.undo_of);
          again != keyed_.end()) {
        o = again->second.outcome;
        o.type = reflexion::v1::ACTION_TYPE_UNDO;
        o.undo_of = action.undo_of();
      }
    }
  }
  if (s.workload.replicas > 0) {
    o.ready_before = state.model.ready;
    o.ready_after = !o.regression.empty()        ? 0
                    : o.recovered && !o.relapsed ? s.workload.replicas
                                                 : s.workload.ready;
    state.model.ready = o.ready_after;
  }
  return o;
}

absl::StatusOr<ExecutionResult> SimulatedCluster::ExecuteNow(
    const Action& action) {
  if (action.type() == reflexion::v1::ACTION_TYPE_UNSPECIFIED ||
      !reflexion::v1::ActionType_IsValid(action.type())) {
    return absl::InvalidArgumentError(
        absl::StrCat("action type ", static_cast<int>(action.type()),
                     " is not a catalog action (pod ",
                     PodKey(action.namespace_(), action.pod_name()), ")"));
  }
  if (action.idempotency_key().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(ActionName(action.type()), " on pod ",
                     PodKey(action.namespace_(), action.pod_name()),
                     " has no idempotency_key"));
  }
  if (action.type() == reflexion::v1::ACTION_TYPE_PATCH_IMAGE &&
      action.image().empty()) {
    return absl::InvalidArgumentError("patch_image needs an image");
  }
  if (action.type() == reflexion::v1::ACTION_TYPE_ATTACH_PULL_SECRET &&
      action.pull_secret().empty()) {
    return absl::InvalidArgumentError("attach_pull_secret needs a pull_secret");
  }
  if (action.type() == reflexion::v1::ACTION_TYPE_UNDO &&
      (action.undo_of().empty() || action.restore_size() == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "undo on pod ", PodKey(action.namespace_(), action.pod_name()),
        " needs undo_of and at least one restore entry"));
  }

  const std::string pod_key = PodKey(action.namespace_(), action.pod_name());
  absl::MutexLock lock(&mu_);
  if (auto it = results_.find(action.idempotency_key()); it != results_.end()) {
    ExecutionResult again = it->second;
    again.set_deduplicated(true);
    return again;
  }
  auto pod = pods_.find(pod_key);
  if (pod == pods_.end()) {
    return absl::NotFoundError(
        absl::StrCat("pod ", pod_key, " was never diagnosed"));
  }
  PodState& state = pod->second;
  const Scenario& s = ScenarioAt(state.scenario);

  ExecutionResult result;
  *result.mutable_action() = action;
  result.set_executor(std::string(kName));
  result.set_deduplicated(false);
  PodModel model = state.model;  // applied only once journaled
  if (action.type() == reflexion::v1::ACTION_TYPE_UNDO) {
    std::vector<reflexion::v1::ValueChange> changes;
    std::string message;
    const bool restored = UndoInModel(action, model, &changes, &message);
    result.set_message(message);
    for (auto& c : changes) *result.add_changes() = std::move(c);
    if (!restored) {
      // Refused, like an agent's refusal: remembered by key, nothing
      // applied, nothing journaled.
      results_.emplace(action.idempotency_key(), result);
      return result;
    }
  } else {
    result.set_message(ActionMessage(action, s));
    for (auto& c : ApplyToModel(action, s, model)) {
      *result.add_changes() = std::move(c);
    }
  }
  result.set_applied(true);
  const int64_t draw_n = state.applied[action.type()] + 1;
  // Journal first: an action is applied only once it is durable.
  REFLEXION_RETURN_IF_ERROR(AppendToJournal(action, state.scenario,
                                            state.error_type, result, draw_n));
  state.model = std::move(model);
  state.applied[action.type()] = draw_n;
  const Outcome outcome =
      Resolve(s, action, DrawKey(action, state.error_type, draw_n), state);
  keyed_[action.idempotency_key()] =
      Keyed{state.scenario, state.error_type, outcome};
  state.outcomes[action.idempotency_key()] = outcome;
  state.last_key = action.idempotency_key();
  results_.emplace(action.idempotency_key(), result);
  log_.push_back(ExecutedAction{
      .pod_name = action.pod_name(),
      .pod_namespace = action.namespace_(),
      .type = action.type(),
      .idempotency_key = action.idempotency_key(),
      .scenario_id = s.id,
      .recovered = outcome.recovered,
      .relapsed = outcome.relapsed,
  });
  return result;
}

absl::StatusOr<Observation> SimulatedCluster::ObserveNow(
    const Action& action, absl::Duration window) const {
  if (window < absl::ZeroDuration() || window == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("observation window ",
                                                   absl::FormatDuration(window),
                                                   " must be finite and >= 0"));
  }
  const std::string& ns = action.namespace_();
  const std::string& pod = action.pod_name();
  const std::string pod_key = PodKey(ns, pod);

  absl::MutexLock lock(&mu_);
  auto it = pods_.find(pod_key);
  if (it == pods_.end()) {
    return absl::NotFoundError(
        absl::StrCat("pod ", pod_key, " was never diagnosed"));
  }
  PodState state = it->second;
  auto outcome = state.outcomes.find(action.idempotency_key());
  if (outcome == state.outcomes.end()) {
    // Executed before the pod was diagnosed again (a resumed workflow).
    if (auto k = keyed_.find(action.idempotency_key()); k != keyed_.end()) {
      state.scenario = k->second.scenario;
      state.error_type = k->second.error_type;
      outcome = state.outcomes.emplace(k->first, k->second.outcome).first;
    } else {
      outcome = state.outcomes.find(state.last_key);
    }
  }
  if (outcome == state.outcomes.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no action was executed on pod ", pod_key, " since it was diagnosed"));
  }
  const Outcome& o = outcome->second;
  const Scenario& s = ScenarioAt(state.scenario);
  const double window_s = absl::ToDoubleSeconds(window);

  Observation obs;
  obs.set_recovered(o.recovered);
  obs.set_success(o.recovered && !o.relapsed);
  obs.set_window_s(window_s);
  obs.set_restarts(o.restarts);
  if (o.recovered) obs.set_time_to_recovery_s(o.time_to_recovery_s);
  if (s.workload.replicas > 0) {
    obs.set_workload_replicas(s.workload.replicas);
    obs.set_workload_ready_before(o.ready_before);
    obs.set_workload_ready_after(o.ready_after);
  }
  if (!o.regression.empty()) {
    obs.set_failure_reason(o.regression);
    obs.add_signals(absl::StrFormat(
        "pod did not become Ready within the %.0fs window after %s", window_s,
        ActionName(o.type)));
    obs.add_signals(absl::StrCat(ContainerName(s), " now fails with ",
                                 o.regression, " and restarted ", o.restarts,
                                 " times in the window"));
    return obs;
  }
  if (obs.success()) {
    obs.add_signals(absl::StrFormat(
        "pod became Ready after %.0fs and stayed Ready for the rest of the "
        "%.0fs window",
        o.time_to_recovery_s, window_s));
    return obs;
  }
  const std::string& waiting =
      s.signals.container_statuses_size() > 0
          ? s.signals.container_statuses(0).waiting_reason()
          : std::string();
  obs.set_failure_reason(waiting.empty() ? state.error_type : waiting);
  if (o.relapsed) {
    obs.add_signals(absl::StrFormat(
        "pod became Ready after %.0fs, then restarted after %.0fs",
        o.time_to_recovery_s, o.relapse_after_s));
  } else {
    obs.add_signals(absl::StrFormat(
        "pod did not become Ready within the %.0fs window after %s", window_s,
        ActionName(o.type)));
  }
  AddFailureSignals(s, ns, pod, &obs);
  return obs;
}

std::vector<ExecutedAction> SimulatedCluster::ExecutionLog() const {
  absl::MutexLock lock(&mu_);
  return log_;
}

std::vector<std::string> SimulatedCluster::ScenarioIds() const {
  std::vector<std::string> ids;
  ids.reserve(scenarios_.size());
  for (const Scenario& s : scenarios_) ids.push_back(s.id);
  return ids;
}

absl::StatusOr<std::string> SimulatedCluster::ScenarioOf(
    absl::string_view pod_namespace, absl::string_view pod_name) const {
  absl::MutexLock lock(&mu_);
  auto it = pods_.find(PodKey(pod_namespace, pod_name));
  if (it == pods_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "pod ", PodKey(pod_namespace, pod_name), " was never diagnosed"));
  }
  return ScenarioAt(it->second.scenario).id;
}

}  // namespace reflexion::sim

#include "core/reflexion/analyzer.h"

#include <algorithm>
#include <climits>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/facts.h"
#include "core/reflexion/utf8.h"

namespace reflexion::core {
namespace {

constexpr size_t kEvidenceMax = 240;
constexpr int kMaxFacts = 24;
constexpr int kMaxLogQuotes = 3;

// Quoted text comes from the incident or the executor: made valid UTF-8, then
// clipped at a character boundary (a clipped character once made checkpoints
// undecodable).
std::string Clip(absl::string_view s) {
  std::string valid = ToValidUtf8(s);
  if (valid.size() <= kEvidenceMax) return valid;
  return absl::StrCat(ClipUtf8(valid, kEvidenceMax), "...");
}

std::string Lower(absl::string_view s) { return absl::AsciiStrToLower(s); }

std::string Text(absl::string_view s) { return ToValidUtf8Clipped(s, 253); }

bool ContainsAny(absl::string_view haystack,
                 std::initializer_list<absl::string_view> needles) {
  for (absl::string_view n : needles) {
    if (absl::StrContains(haystack, n)) return true;
  }
  return false;
}

std::string Bytes(int64_t b) {
  if (b % (1 << 30) == 0) return absl::StrCat(b >> 30, "Gi");
  if (b % (1 << 20) == 0) return absl::StrCat(b >> 20, "Mi");
  return absl::StrCat(b, " bytes");
}

// The analysis being built: facts (with sources) double as evidence.
class Out {
 public:
  explicit Out(v1::Analysis* a) : a_(a) {}
  void Fact(absl::string_view text, absl::string_view source) {
    if (a_->facts_size() >= kMaxFacts) return;
    std::string t = Clip(text);
    for (const v1::Fact& f : a_->facts()) {
      if (f.text() == t) return;  // folded events repeat themselves
    }
    v1::Fact* f = a_->add_facts();
    f->set_text(std::move(t));
    f->set_source(ToValidUtf8Clipped(source, 128));
  }
  v1::Analysis* a() { return a_; }

 private:
  v1::Analysis* a_;
};

bool IsErrorTermination(const ContainerStateFacts& s) {
  if (s.kind != "terminated") return false;
  if (s.exit_code.value_or(0) != 0) return true;
  return !s.reason.empty() && s.reason != "Completed";
}

enum class Trouble { kNone, kNotReady, kCreating, kFailing };

Trouble TroubleOf(const ContainerFacts& c) {
  const ContainerStateFacts& s = c.state;
  if (s.kind == "waiting") {
    if (s.reason.empty() || s.reason == "ContainerCreating" ||
        s.reason == "PodInitializing") {
      if (IsErrorTermination(c.last_state)) return Trouble::kFailing;
      return s.reason == "PodInitializing" ? Trouble::kNone
                                           : Trouble::kCreating;
    }
    return Trouble::kFailing;
  }
  if (s.kind == "terminated") {
    if (IsErrorTermination(s)) return Trouble::kFailing;
    // A main container that keeps completing is restarted by its pod.
    return !c.init && c.restart_count > 0 ? Trouble::kFailing : Trouble::kNone;
  }
  if (IsErrorTermination(c.last_state) &&
      (c.restart_count > 0 || c.source != kSourcePod)) {
    return Trouble::kFailing;
  }
  if (s.kind == "running" && !c.ready && !c.init) return Trouble::kNotReady;
  return Trouble::kNone;
}

// The container the incident is about: a failing init container, else a
// failing container, else one stuck creating, else one never ready.
const ContainerFacts* PickContainer(const IncidentFacts& f, Trouble* trouble) {
  for (Trouble want :
       {Trouble::kFailing, Trouble::kCreating, Trouble::kNotReady}) {
    for (bool init : {true, false}) {
      for (const ContainerFacts& c : f.containers) {
        if (c.init == init && c.has_status && TroubleOf(c) == want) {
          *trouble = want;
          return &c;
        }
      }
    }
  }
  *trouble = Trouble::kNone;
  return nullptr;
}

// Events about `container` or the whole pod.
std::vector<const EventFacts*> EventsFor(const IncidentFacts& f,
                                         absl::string_view container) {
  std::vector<const EventFacts*> out;
  for (const EventFacts& e : f.events) {
    if (e.container.empty() || e.container == container) out.push_back(&e);
  }
  return out;
}

std::string EventLine(const EventFacts& e) {
  return absl::StrCat("event ", e.reason,
                      e.count > 1 ? absl::StrCat(" (x", e.count, ")") : "",
                      ": ", Clip(e.message));
}

std::string StateLine(const ContainerFacts& c, absl::string_view which,
                      const ContainerStateFacts& s) {
  std::string line = absl::StrCat("container ", c.name, c.init ? " (init)" : "",
                                  ": ", which, " ", s.reason);
  if (s.exit_code.has_value())
    absl::StrAppend(&line, ", exit code ", *s.exit_code);
  if (s.signal.has_value()) absl::StrAppend(&line, ", signal ", *s.signal);
  if (!s.message.empty()) absl::StrAppend(&line, ": ", Clip(s.message));
  return line;
}

// Everything the classification reads about one container.
struct Subject {
  const ContainerFacts* c = nullptr;
  std::string waiting;                        // waiting reason ("" when none)
  const ContainerStateFacts* term = nullptr;  // the termination at issue
  std::vector<const EventFacts*> events;
  std::string text;  // lowercased messages: waiting, termination, events
};

Subject MakeSubject(const IncidentFacts& f, const ContainerFacts& c) {
  Subject s;
  s.c = &c;
  if (c.state.kind == "waiting") s.waiting = c.state.reason;
  if (c.state.kind == "terminated") {
    s.term = &c.state;
  } else if (c.last_state.kind == "terminated") {
    s.term = &c.last_state;
  }
  s.events = EventsFor(f, c.name);
  std::vector<absl::string_view> texts;
  if (c.state.kind == "waiting") texts.push_back(c.state.message);
  if (s.term != nullptr) texts.push_back(s.term->message);
  texts.push_back(f.error_message);
  for (const EventFacts* e : s.events) {
    if (e->type != "Normal") texts.push_back(e->message);
  }
  s.text = Lower(absl::StrJoin(texts, "\n"));
  return s;
}

// Quotes the events whose reason is in `reasons` (all when empty).
void QuoteEvents(const Subject& s,
                 std::initializer_list<absl::string_view> reasons, Out& out) {
  for (const EventFacts* e : s.events) {
    bool match = reasons.size() == 0;
    for (absl::string_view r : reasons) match |= e->reason == r;
    if (match) out.Fact(EventLine(*e), e->source);
  }
}

// ------------------------------------------------------------ image pulls

std::string ImagePullCause(absl::string_view text) {
  if (ContainsAny(text, {"429", "toomanyrequests", "too many requests",
                         "rate limit"})) {
    return "rate_limited";
  }
  if (ContainsAny(text, {"unauthorized", "authentication required",
                         "access denied", "pull access denied", "403 forbidden",
                         "denied:", "no basic auth credentials",
                         "authorization failed"})) {
    return "registry_auth";
  }
  // The registry's name does not resolve: most often the reference is
  // wrong (a mistyped host in a new revision), else the node's resolver.
  if (ContainsAny(text, {"no such host", "server misbehaving"})) {
    return "registry_unreachable";
  }
  // The name resolved but the connection failed: the network path or the
  // registry itself, which a fresh pull (a new pod) often gets past.
  if (ContainsAny(text, {"i/o timeout", "connection refused",
                         "tls handshake timeout", "network is unreachable",
                         "no route to host", "connection reset"})) {
    return "registry_network_error";
  }
  if (ContainsAny(text, {"dial tcp"})) return "registry_unreachable";
  if (ContainsAny(text, {"manifest unknown", "not found",
                         "repository does not exist"})) {
    return "image_not_found";
  }
  return "unclassified";
}

// ------------------------------------------------------------ config

std::string ConfigCause(absl::string_view text) {
  if (absl::StrContains(text, "couldn't find key")) return "missing_config_key";
  if (ContainsAny(text, {"configmap \"", "configmaps \""}) &&
      absl::StrContains(text, "not found")) {
    return "missing_configmap";
  }
  if (ContainsAny(text, {"secret \"", "secrets \""}) &&
      absl::StrContains(text, "not found")) {
    return "missing_secret";
  }
  return "unclassified";
}

// The config references a missing object or key is about, as facts.
void QuoteConfigRefs(const IncidentFacts& f, const ContainerFacts* c,
                     absl::string_view cause, absl::string_view text,
                     Out& out) {
  std::string want = cause == "missing_secret" ? "Secret" : "ConfigMap";
  auto quote = [&](const ConfigRefFacts& r, absl::string_view who) {
    if (cause != "missing_config_key" && r.kind != want) return;
    if (r.name.empty()) return;
    bool named =
        absl::StrContains(text, Lower(absl::StrCat("\"", r.name, "\""))) ||
        absl::StrContains(text, Lower(absl::StrCat("/", r.name)));
    if (!named) return;
    out.Fact(absl::StrCat(who, " references ", r.kind, " ", r.name,
                          r.key.empty() ? "" : absl::StrCat(" key ", r.key),
                          " via ", r.via, r.optional ? " (optional)" : ""),
             kSourcePod);
  };
  if (c != nullptr) {
    for (const ConfigRefFacts& r : c->config_refs) {
      quote(r, absl::StrCat("container ", c->name));
    }
  }
  for (const ConfigRefFacts& r : f.pod.volume_refs) quote(r, "pod");
}

// ------------------------------------------------------------ start errors

std::string StartCause(absl::string_view text, absl::string_view fallback) {
  if (ContainsAny(text,
                  {"executable file not found", "no such file or directory",
                   "no command specified", "not found in $path"})) {
    return "command_not_found";
  }
  if (absl::StrContains(text, "permission denied")) {
    return "command_not_executable";
  }
  return std::string(fallback);
}

// ------------------------------------------------------------ crashes

// The kubelet says it restarted the container for a failing probe ("Container
// app failed liveness probe, will be restarted"), whatever the exit code (an
// app may exit 0 or 2 on the SIGTERM).
bool KilledByProbe(const Subject& s) {
  for (const EventFacts* e : s.events) {
    if (e->reason == "Killing" &&
        ContainsAny(Lower(e->message),
                    {"failed liveness probe", "failed startup probe"})) {
      return true;
    }
  }
  return false;
}

bool LivenessKilled(const Subject& s) {
  for (const EventFacts* e : s.events) {
    std::string m = Lower(e->message);
    if ((e->reason == "Unhealthy" &&
         ContainsAny(m, {"liveness probe failed", "startup probe failed"})) ||
        (e->reason == "Killing" &&
         ContainsAny(m, {"failed liveness probe", "failed startup probe"}))) {
      return true;
    }
  }
  return false;
}

struct LogRule {
  const char* cause;
  std::initializer_list<absl::string_view> needles;
};

// App-level causes a restart will not fix, matched (never interpreted) in the
// log tail, in this order.
const LogRule kLogRules[] = {
    {"certificate_expired",
     {"certificate has expired", "certificate expired",
      "x509: certificate has expired"}},
    {"authentication_failed",
     {"authentication failed", "access denied for user",
      "login failed for user", "invalid credentials", "invalid password"}},
    {"dependency_unavailable",
     {"connection refused", "econnrefused", "could not connect",
      "couldn't connect", "can't connect", "cannot connect",
      "unable to connect", "failed to connect", "no route to host",
      "could not translate host name", "name or service not known"}},
};

// The first log rule that matches, quoting the matching line.
std::string LogCause(const IncidentFacts& f, Out& out) {
  if (f.logs.empty()) return "";
  std::vector<absl::string_view> lines = absl::StrSplit(f.logs, '\n');
  for (const LogRule& rule : kLogRules) {
    // The newest matching line is the most telling.
    for (auto it = lines.rbegin(); it != lines.rend(); ++it) {
      std::string lower = Lower(*it);
      for (absl::string_view n : rule.needles) {
        if (absl::StrContains(lower, n)) {
          out.Fact(absl::StrCat("log: \"", Clip(*it), "\""), f.logs_source);
          return rule.cause;
        }
      }
    }
  }
  return "";
}

std::string ReleaseOrApp(const IncidentFacts& f) {
  return f.recent_rollout.value_or(false) ? "bad_release" : "app_error";
}

std::string CrashCause(const IncidentFacts& f, const Subject& s, bool deep,
                       Out& out) {
  bool liveness = LivenessKilled(s);
  if (liveness) QuoteEvents(s, {"Unhealthy", "Killing"}, out);
  std::optional<int64_t> code;
  std::string reason;
  if (s.term != nullptr) {
    code = s.term->exit_code;
    reason = s.term->reason;
  }
  if (reason == "StartError" || reason == "ContainerCannotRun") {
    return StartCause(Lower(s.term->message), "start_error");
  }
  if (KilledByProbe(s)) return "probe_failure";
  if (code.has_value()) {
    switch (*code) {
      case 0:
        return "command_exits";
      case 137:
        return liveness ? "probe_failure" : "killed";
      case 143:
        return liveness ? "probe_failure" : "terminated";
      case 139:
        return "segfault";
      case 125:
        return "container_runtime_error";
      case 126:
        return "command_not_executable";
      case 127:
        return "command_not_found";
      case 128:
        return StartCause(Lower(s.term->message), "start_error");
      default:
        break;
    }
  }
  if (liveness && !code.has_value()) return "probe_failure";
  std::string from_logs = LogCause(f, out);
  if (!from_logs.empty()) return from_logs;
  if (code.has_value()) return ReleaseOrApp(f);
  std::string logs = Lower(f.logs);
  if (deep && ContainsAny(logs, {"segmentation fault", "sigsegv"})) {
    return "segfault";
  }
  if (deep && ContainsAny(logs, {"panic:", "exception", "fatal"})) {
    return ReleaseOrApp(f);
  }
  return "unclassified";
}

// ------------------------------------------------------------ creating

std::string CreatingCause(const Subject& s, Out& out) {
  for (const EventFacts* e : s.events) {
    std::string m = Lower(e->message);
    if (e->reason == "FailedMount" || e->reason == "FailedAttachVolume" ||
        e->reason == "FailedMapVolume") {
      out.Fact(EventLine(*e), e->source);
      std::string config = ConfigCause(m);
      if (config != "unclassified") return config;
      if (absl::StrContains(m, "persistentvolumeclaim") &&
          absl::StrContains(m, "not found")) {
        return "unbound_volume";
      }
      return "volume_mount_failed";
    }
    if (e->reason == "FailedCreatePodSandBox") {
      out.Fact(EventLine(*e), e->source);
      return "sandbox_creation_failed";
    }
  }
  return "unclassified";
}

// ------------------------------------------------------------ scheduling

struct SchedulingReason {
  const char* cause;
  int64_t nodes;  // INT64_MAX for a reason about the pod itself
  std::string text;
};

// Most actionable first: breaks ties between reasons covering as many nodes.
constexpr const char* kSchedulingPriority[] = {"unbound_volume",
                                               "volume_node_affinity_conflict",
                                               "insufficient_memory",
                                               "insufficient_cpu",
                                               "insufficient_ephemeral_storage",
                                               "insufficient_extended_resource",
                                               "host_port_conflict",
                                               "node_selector_mismatch",
                                               "node_affinity_mismatch",
                                               "pod_affinity_mismatch",
                                               "untolerated_taint",
                                               "node_unschedulable",
                                               "too_many_pods"};

int PriorityOf(absl::string_view cause) {
  int i = 0;
  for (const char* c : kSchedulingPriority) {
    if (cause == c) return i;
    ++i;
  }
  return i;
}

const char* SchedulingCauseOf(absl::string_view lower, const PodFacts& pod) {
  if (ContainsAny(lower, {"unbound immediate persistentvolumeclaims",
                          "unbound persistentvolumeclaims"}) ||
      (absl::StrContains(lower, "persistentvolumeclaim") &&
       absl::StrContains(lower, "not found"))) {
    return "unbound_volume";
  }
  if (absl::StrContains(lower, "volume node affinity conflict")) {
    return "volume_node_affinity_conflict";
  }
  if (absl::StrContains(lower, "insufficient memory")) {
    return "insufficient_memory";
  }
  if (absl::StrContains(lower, "insufficient cpu")) return "insufficient_cpu";
  if (absl::StrContains(lower, "insufficient ephemeral-storage")) {
    return "insufficient_ephemeral_storage";
  }
  if (absl::StrContains(lower, "insufficient ")) {
    return "insufficient_extended_resource";
  }
  if (ContainsAny(lower, {"free ports", "free port"})) {
    return "host_port_conflict";
  }
  if (absl::StrContains(lower, "node affinity/selector")) {
    // Newer schedulers do not say which; the pod does.
    if (pod.has_node_affinity && pod.node_selector.empty()) {
      return "node_affinity_mismatch";
    }
    return "node_selector_mismatch";
  }
  if (absl::StrContains(lower, "didn't match node selector")) {
    return "node_selector_mismatch";
  }
  if (absl::StrContains(lower, "node affinity")) {
    return "node_affinity_mismatch";
  }
  if (ContainsAny(lower, {"pod affinity", "pod anti-affinity"})) {
    return "pod_affinity_mismatch";
  }
  if (ContainsAny(lower, {"untolerated taint", "didn't tolerate"})) {
    return "untolerated_taint";
  }
  if (absl::StrContains(lower, "were unschedulable")) {
    return "node_unschedulable";
  }
  if (absl::StrContains(lower, "too many pods")) return "too_many_pods";
  return nullptr;
}

// "0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had untolerated
// taint {...}. preemption: ..." -> one reason per clause with its node count.
std::vector<SchedulingReason> ParseScheduling(absl::string_view message,
                                              const PodFacts& pod) {
  std::vector<SchedulingReason> out;
  std::string lower = Lower(message);
  absl::string_view body = lower;
  if (size_t p = body.find("preemption:"); p != absl::string_view::npos) {
    body = body.substr(0, p);
  }
  if (size_t p = body.find("available:"); p != absl::string_view::npos) {
    body = body.substr(p + 10);
  }
  for (absl::string_view clause : absl::StrSplit(body, ", ")) {
    clause = absl::StripAsciiWhitespace(clause);
    clause = absl::StripSuffix(clause, ".");
    if (clause.empty()) continue;
    const char* cause = SchedulingCauseOf(clause, pod);
    if (cause == nullptr) continue;
    int64_t nodes = INT64_MAX;
    size_t digits = 0;
    while (digits < clause.size() && absl::ascii_isdigit(clause[digits])) {
      ++digits;
    }
    int64_t n;
    if (digits > 0 && digits < 12 &&
        absl::SimpleAtoi(clause.substr(0, digits), &n)) {
      nodes = n;
    }
    out.push_back({cause, nodes, std::string(clause)});
  }
  return out;
}

std::string PendingCause(const IncidentFacts& f, Out& out) {
  // The PodScheduled condition is the scheduler's current word; the latest
  // FailedScheduling event otherwise; a legacy message last.
  std::string message;
  std::string source;
  for (const ConditionFacts& c : f.pod.conditions) {
    if (c.type == "PodScheduled" && c.status == "False" && !c.message.empty()) {
      message = c.message;
      source = kSourcePod;
    }
  }
  if (message.empty()) {
    for (const EventFacts& e : f.events) {
      if (e.reason == "FailedScheduling" && !e.message.empty()) {
        message = e.message;
        source = e.source;
      }
    }
  }
  if (message.empty()) {
    for (const EventFacts& e : f.events) {
      if (e.type != "Normal" && !e.message.empty()) {
        message = e.message;
        source = e.source;
      }
    }
  }
  if (message.empty() && !f.error_message.empty()) {
    message = f.error_message;
    source = kSourceErrorMessage;
  }
  if (message.empty()) return "unclassified";
  out.Fact(absl::StrCat("scheduling: ", Clip(message)), source);
  std::vector<SchedulingReason> reasons = ParseScheduling(message, f.pod);
  if (reasons.empty()) return "unclassified";
  std::stable_sort(reasons.begin(), reasons.end(),
                   [](const SchedulingReason& a, const SchedulingReason& b) {
                     if (a.nodes != b.nodes) return a.nodes > b.nodes;
                     return PriorityOf(a.cause) < PriorityOf(b.cause);
                   });
  for (size_t i = 1; i < reasons.size(); ++i) {
    out.Fact(absl::StrCat("also: ", reasons[i].cause, " (",
                          Clip(reasons[i].text), ")"),
             source);
  }
  const char* cause = reasons[0].cause;
  // The constraints the cause is about.
  if (absl::string_view(cause) == "node_selector_mismatch") {
    for (const auto& [k, v] : f.pod.node_selector) {
      out.Fact(absl::StrCat("pod: nodeSelector ", k, "=", v), kSourcePod);
    }
  }
  if (absl::string_view(cause) == "untolerated_taint") {
    out.Fact(absl::StrCat("pod: tolerations [",
                          absl::StrJoin(f.pod.tolerations, ", "), "]"),
             kSourcePod);
  }
  if (absl::string_view(cause) == "unbound_volume") {
    for (const std::string& claim : f.pod.pvc_claims) {
      out.Fact(absl::StrCat("pod: PersistentVolumeClaim ", claim), kSourcePod);
    }
  }
  return cause;
}

// ------------------------------------------------------------ eviction

struct EvictionResult {
  std::string cause;
  std::string container;
};

// "Container app was using 1.2Gi, request is 256Mi": the consumer most over
// its request (a request of 0 is infinitely exceeded); "" when none parses.
struct Consumer {
  std::string container;
  double ratio = 0;
};
Consumer TopConsumer(absl::string_view text) {
  Consumer top;
  for (absl::string_view sentence : absl::StrSplit(text, ". ")) {
    absl::string_view rest = absl::StripAsciiWhitespace(sentence);
    if (!absl::ConsumePrefix(&rest, "Container ")) continue;
    size_t was = rest.find(" was using ");
    size_t req = rest.find(", request is ");
    if (was == absl::string_view::npos || req == absl::string_view::npos ||
        req < was) {
      continue;
    }
    absl::string_view used = rest.substr(was + 11, req - was - 11);
    absl::string_view request = rest.substr(req + 13);
    request = request.substr(0, request.find(','));
    std::optional<int64_t> u = ParseMemoryBytes(used);
    std::optional<int64_t> r = ParseMemoryBytes(request);
    if (!u.has_value() || !r.has_value()) continue;
    double ratio = *r == 0 ? (*u > 0 ? 1e18 : 0)
                           : static_cast<double>(*u) / static_cast<double>(*r);
    if (top.container.empty() || ratio > top.ratio) {
      top.container = Text(rest.substr(0, was));
      top.ratio = ratio;
    }
  }
  return top;
}

EvictionResult EvictedCause(const IncidentFacts& f, Out& out) {
  std::vector<std::pair<std::string, std::string>> texts;
  if (!f.pod.message.empty()) texts.emplace_back(f.pod.message, kSourcePod);
  if (!f.error_message.empty()) {
    texts.emplace_back(f.error_message, kSourceErrorMessage);
  }
  for (const EventFacts& e : f.events) {
    if (e.reason == "Evicted" || e.type == "Warning") {
      texts.emplace_back(e.message, e.source);
    }
  }
  for (const auto& [text, source] : texts) {
    std::string m = Lower(text);
    if (ContainsAny(
            m, {"low on resource: ephemeral-storage", "ephemeral local storage",
                "ephemeral-storage", "emptydir volume"})) {
      out.Fact(absl::StrCat("eviction: ", Clip(text)), source);
      // Right after a rollout, the new revision writes more than the old
      // one did (as an OOM after a rollout is a memory_regression).
      return {f.recent_rollout.value_or(false) ? "storage_regression"
                                               : "ephemeral_storage",
              TopConsumer(text).container};
    }
    if (absl::StrContains(m, "low on resource: memory")) {
      out.Fact(absl::StrCat("eviction: ", Clip(text)), source);
      Consumer top = TopConsumer(text);
      // Far over its request: the pod's own fault, not the node's.
      if (!top.container.empty() && top.ratio >= 2) {
        return {"over_memory_request", top.container};
      }
      return {"memory_pressure", ""};
    }
    if (ContainsAny(m, {"diskpressure", "low on resource: nodefs",
                        "low on resource: imagefs"})) {
      out.Fact(absl::StrCat("eviction: ", Clip(text)), source);
      return {"disk_pressure", ""};
    }
    if (ContainsAny(m, {"memorypressure"})) {
      out.Fact(absl::StrCat("eviction: ", Clip(text)), source);
      return {"memory_pressure", ""};
    }
  }
  return {"unclassified", ""};
}

// ------------------------------------------------------------ containers

struct Verdict {
  std::string family;
  std::string cause;
};

Verdict ClassifyContainer(const IncidentFacts& f, const Subject& s,
                          Trouble trouble, bool deep, Out& out) {
  const ContainerFacts& c = *s.c;
  if (!c.name.empty() || c.source != kSourceErrorMessage) {
    if (c.state.kind == "waiting")
      out.Fact(StateLine(c, "waiting", c.state), c.source);
    if (c.state.kind == "terminated") {
      out.Fact(StateLine(c, "terminated", c.state), c.source);
    } else if (c.last_state.kind == "terminated") {
      out.Fact(StateLine(c, "last terminated", c.last_state), c.source);
    }
    if (c.restart_count > 0) {
      out.Fact(absl::StrCat("container ", c.name, ": restarted ",
                            c.restart_count, " times"),
               c.source);
    }
  }
  const std::string& r = s.waiting;
  Verdict v;
  if (trouble == Trouble::kCreating) {
    v = {"ContainerCreating", CreatingCause(s, out)};
  } else if (trouble == Trouble::kNotReady) {
    v.family = "NotReady";
    v.cause = "unclassified";
    for (const EventFacts* e : s.events) {
      if (e->reason == "Unhealthy" &&
          absl::StrContains(Lower(e->message), "readiness probe failed")) {
        out.Fact(EventLine(*e), e->source);
        v.cause = "readiness_probe_failure";
      }
    }
    if (c.readiness.present) {
      out.Fact(absl::StrCat("container ", c.name, ": readiness probe ",
                            c.readiness.type,
                            c.readiness.failure_threshold
                                ? absl::StrCat(", failureThreshold ",
                                               *c.readiness.failure_threshold)
                                : ""),
               kSourcePod);
    }
  } else if (r == "ImagePullBackOff" || r == "ErrImagePull" ||
             r == "ErrImageNeverPull" || r == "RegistryUnavailable" ||
             r == "ImageInspectError") {
    QuoteEvents(s, {"Failed"}, out);
    v = {"ImagePullBackOff",
         r == "ErrImageNeverPull" ? "image_not_found" : ImagePullCause(s.text)};
  } else if (r == "InvalidImageName") {
    QuoteEvents(s, {"InspectFailed", "Failed"}, out);
    v = {"InvalidImageName", "invalid_reference"};
  } else if (r == "CreateContainerConfigError") {
    QuoteEvents(s, {"Failed"}, out);
    v = {"CreateContainerConfigError", ConfigCause(s.text)};
    QuoteConfigRefs(f, &c, v.cause, s.text, out);
  } else if (r == "CreateContainerError") {
    QuoteEvents(s, {"Failed"}, out);
    std::string config = ConfigCause(s.text);
    v = {"CreateContainerError",
         config != "unclassified"
             ? config
             : StartCause(s.text, "container_runtime_error")};
  } else if (r == "RunContainerError") {
    QuoteEvents(s, {"Failed"}, out);
    v = {"RunContainerError", StartCause(s.text, "start_error")};
  } else if (r == "OOMKilled" ||
             (s.term != nullptr && s.term->reason == "OOMKilled")) {
    v = {"OOMKilled", "memory_limit_too_low"};
    if (f.recent_rollout.value_or(false)) {
      v.cause = "memory_regression";
    } else if (absl::StrContains(Lower(f.logs), "java.lang.outofmemoryerror")) {
      // A JVM whose heap is sized from the container's limit (its own
      // OutOfMemoryError in the logs): it needs a larger raise than most.
      v.cause = "jvm_heap";
      for (absl::string_view line : absl::StrSplit(f.logs, '\n')) {
        if (absl::StrContains(Lower(line), "java.lang.outofmemoryerror")) {
          out.Fact(absl::StrCat("log: \"", Clip(line), "\""), f.logs_source);
          break;
        }
      }
    }
  } else {
    // CrashLoopBackOff, a termination, or a reason the catalog does not know.
    v.family =
        r.empty() || r == "CrashLoopBackOff" ? "CrashLoopBackOff" : FamilyOf(r);
    v.cause = CrashCause(f, s, deep, out);
  }
  if (v.cause == "memory_limit_too_low" || v.cause == "memory_regression" ||
      v.cause == "jvm_heap") {
    if (c.resources.memory_limit_bytes.has_value()) {
      out.Fact(absl::StrCat("container ", c.name, ": memory limit ",
                            Bytes(*c.resources.memory_limit_bytes)),
               c.resources.memory_limit_source.empty()
                   ? kSourcePod
                   : c.resources.memory_limit_source);
    }
  }
  if (c.init && v.family != "ContainerCreating")
    v.family = "InitContainerError";
  return v;
}

bool Unscheduled(const IncidentFacts& f) {
  for (const ConditionFacts& c : f.pod.conditions) {
    if (c.type == "PodScheduled" && c.status == "False") return true;
  }
  if (f.pod.present && f.pod.phase == "Pending") {
    bool any_status = false;
    for (const ContainerFacts& c : f.containers) any_status |= c.has_status;
    for (const EventFacts& e : f.events) {
      if (e.reason == "FailedScheduling" && !any_status) return true;
    }
  }
  return false;
}

std::string UnknownFamilyCause(const IncidentFacts& f, bool deep, Out& out) {
  std::string from_logs = LogCause(f, out);
  if (!from_logs.empty()) return from_logs;
  std::string logs = Lower(f.logs);
  if (deep && ContainsAny(logs, {"segmentation fault", "sigsegv"})) {
    return "segfault";
  }
  if (deep && ContainsAny(logs, {"panic:", "exception", "fatal"})) {
    return ReleaseOrApp(f);
  }
  return "unclassified";
}

}  // namespace

v1::Analysis Analyze(const v1::Incident& incident, const v1::Diagnosis& dx,
                     bool deep) {
  IncidentFacts f = ExtractFacts(incident);
  MergeExecutorDiagnosis(&f, dx, dx.source());

  v1::Analysis a;
  Out out(&a);
  Verdict v;
  std::string container;
  std::string reported = FamilyOf(f.error_type);
  Trouble trouble;
  const ContainerFacts* picked = PickContainer(f, &trouble);

  if (f.pod.reason == "Evicted" ||
      (!f.pod.present && picked == nullptr && reported == "Evicted")) {
    if (f.pod.present) {
      out.Fact(absl::StrCat("pod: phase ", f.pod.phase, ", reason Evicted"),
               kSourcePod);
    }
    EvictionResult e = EvictedCause(f, out);
    v = {"Evicted", e.cause};
    container = e.container;
  } else if (picked != nullptr && trouble == Trouble::kFailing) {
    Subject s = MakeSubject(f, *picked);
    v = ClassifyContainer(f, s, trouble, deep, out);
    container = picked->name;
  } else if (Unscheduled(f) ||
             (!f.pod.present && picked == nullptr && reported == "Pending")) {
    if (f.pod.present) {
      out.Fact(absl::StrCat("pod: phase ", f.pod.phase, ", not scheduled"),
               kSourcePod);
    }
    v = {"Pending", PendingCause(f, out)};
  } else if (picked != nullptr) {
    Subject s = MakeSubject(f, *picked);
    v = ClassifyContainer(f, s, trouble, deep, out);
    container = picked->name;
  } else {
    // No container says what is wrong (a legacy caller, or a pod that looks
    // fine): classify the reported type with the incident's messages.
    ContainerFacts reported_state;
    reported_state.state.kind = "waiting";
    reported_state.state.reason = f.error_type;
    reported_state.state.message = f.error_message;
    reported_state.source = kSourceErrorMessage;
    if (!f.error_message.empty()) {
      out.Fact(
          absl::StrCat("reported ", f.error_type, ": ", Clip(f.error_message)),
          kSourceErrorMessage);
    }
    Subject s = MakeSubject(f, reported_state);
    s.waiting = reported;
    QuoteEvents(s, {}, out);
    if (reported == "Pending") {
      v = {"Pending", PendingCause(f, out)};
    } else if (reported == "Evicted") {
      EvictionResult e = EvictedCause(f, out);
      v = {"Evicted", e.cause};
      container = e.container;
    } else if (reported == "ContainerCreating") {
      v = {"ContainerCreating", CreatingCause(s, out)};
    } else if (reported == "NotReady") {
      v = ClassifyContainer(f, s, Trouble::kNotReady, deep, out);
    } else if (IsKnownFamily(reported)) {
      v = ClassifyContainer(f, s, Trouble::kFailing, deep, out);
    } else {
      v = {reported.empty() ? "Unknown" : reported,
           UnknownFamilyCause(f, deep, out)};
      // Exit codes of statuses that did not look failing still tell.
      if (v.cause == "unclassified") {
        for (const ContainerFacts& c : f.containers) {
          if (c.last_state.exit_code.value_or(0) == 139) v.cause = "segfault";
        }
      }
    }
  }
  // A type the catalog does not know, reported by a caller that sent no
  // statuses of its own: the executor's statuses may refine the cause, but
  // the incident's own word names the family, and it is analysed deeply.
  if (!reported.empty() && !IsKnownFamily(reported) && picked != nullptr &&
      absl::StartsWith(picked->source, "executor:") && !f.pod.present) {
    v.family = reported;
    if (!deep) v.cause = "unclassified";
  }
  if (v.cause.empty()) v.cause = "unclassified";
  if (v.family.empty()) v.family = "Unknown";

  if (f.recent_rollout.value_or(false)) {
    out.Fact("a new revision was rolled out recently", f.executor_source);
  }
  if (!f.last_healthy_image.empty()) {
    out.Fact(absl::StrCat("last healthy image ", f.last_healthy_image),
             f.executor_source);
  }
  if (!f.available_pull_secrets.empty()) {
    out.Fact(absl::StrCat("pull secrets available: ",
                          absl::StrJoin(f.available_pull_secrets, ", ")),
             f.executor_source);
  }

  a.set_error_family(v.family);
  a.set_cause(v.cause);
  a.set_signature(absl::StrCat(v.family, "/", v.cause));
  a.set_known(IsKnownFamily(v.family));
  a.set_deep(deep);
  a.set_container(ToValidUtf8Clipped(container, 253));
  auto& features = *a.mutable_features();
  if (picked != nullptr) {
    const ContainerStateFacts* term =
        picked->state.kind == "terminated"        ? &picked->state
        : picked->last_state.kind == "terminated" ? &picked->last_state
                                                  : nullptr;
    if (term != nullptr && !term->reason.empty()) {
      features["termination_reason"] = term->reason;
      features["exit_code"] = absl::StrCat(term->exit_code.value_or(0));
    }
    if (picked->resources.memory_limit_bytes.has_value()) {
      features["memory_limit_bytes"] =
          absl::StrCat(*picked->resources.memory_limit_bytes);
    }
  } else if (dx.memory_limit_bytes() > 0) {
    features["memory_limit_bytes"] = absl::StrCat(dx.memory_limit_bytes());
  }
  features["recent_rollout"] =
      f.recent_rollout.value_or(false) ? "true" : "false";
  if (v.cause == "probe_failure") features["probe_failure"] = "true";
  if (!f.last_healthy_image.empty()) {
    features["last_healthy_image"] = f.last_healthy_image;
  }
  for (const std::string& i : f.ignored) a.add_ignored(i);

  size_t evidence_cap = deep ? 12 : 6;
  for (const v1::Fact& fact : a.facts()) {
    if (static_cast<size_t>(a.evidence_size()) >= evidence_cap) break;
    a.add_evidence(fact.text());
  }
  if (deep) {
    // Quote (never interpret) the log lines that look like the failure.
    int quoted = 0;
    for (absl::string_view line : absl::StrSplit(f.logs, '\n')) {
      std::string lower = Lower(line);
      if (ContainsAny(lower,
                      {"panic", "fatal", "error", "exception",
                       "segmentation fault", "killed", "out of memory"})) {
        a.add_evidence(absl::StrCat("log: \"", Clip(line), "\""));
        if (++quoted == kMaxLogQuotes) break;
      }
    }
  }
  // Names, reasons and features are copied from foreign bytes; one walk,
  // nothing to do in the usual case.
  RepairUtf8(&a);
  return a;
}

bool NeedsDeepAnalysis(const v1::Analysis& analysis) {
  return !analysis.deep() &&
         (!analysis.known() || analysis.cause() == "unclassified");
}

}  // namespace reflexion::core

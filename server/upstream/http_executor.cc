#include "server/upstream/http_executor.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <list>
#include <optional>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/memory/memory.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

namespace reflexion::upstream {
namespace {

using Json = nlohmann::json;
using reflexion::v1::Action;
using reflexion::v1::Diagnosis;
using reflexion::v1::ExecutionResult;
using reflexion::v1::Incident;
using reflexion::v1::Observation;

constexpr char kName[] = "http";
constexpr char kAnalyzePath[] = "/api/v1/k8sgpt-analyze";
constexpr char kExecutePath[] = "/api/v1/execute-fix";
constexpr char kPodStatusPath[] = "/api/v1/pod-status/";
constexpr char kHealthPath[] = "/health";

// Bounds on what the agent may make us keep: the proto's documented limits.
constexpr size_t kMaxContainers = 32;
constexpr size_t kMaxEvents = 64;
constexpr size_t kMaxLogs = 65536;
constexpr size_t kMaxName = 253;
constexpr size_t kMaxImage = 512;
constexpr size_t kMaxText = 4096;
constexpr size_t kMaxReason = 128;
constexpr size_t kMaxSecrets = 32;
constexpr size_t kMaxChanges = 32;
constexpr size_t kMaxChangePath = 512;
constexpr size_t kMaxChangeValue = 1024;
constexpr size_t kMaxSignals = 16;
constexpr size_t kMaxSignal = 512;
// Agent bytes quoted in an error message or a log line.
constexpr size_t kMaxQuoted = 200;
// Ignored fields named in one log line (the count is always given).
constexpr size_t kMaxIgnoredNamed = 8;

constexpr absl::Duration kMinPollInterval = absl::Milliseconds(100);
constexpr absl::Duration kMaxPollInterval = absl::Seconds(60);
// After the window, how long past one request timeout we wait for the last
// poll before deciding without it (the client's own timeout should end it
// first; this only guards against a client that breaks its contract).
constexpr absl::Duration kFinishSlack = absl::Seconds(1);

std::string Quote(absl::string_view bytes) {
  std::string q = core::ToValidUtf8Clipped(bytes, kMaxQuoted);
  if (q.size() < bytes.size()) q += "...";
  return absl::StrCat("\"", q, "\"");
}

// RFC 3986 percent-encoding of everything but the unreserved characters:
// safe in a path segment and in a query value.
std::string PercentEncode(absl::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' ||
        c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xF]);
    }
  }
  return out;
}

const char* TierLetter(reflexion::v1::SafetyTier tier) {
  switch (tier) {
    case reflexion::v1::SAFETY_TIER_A:
      return "A";
    case reflexion::v1::SAFETY_TIER_B:
      return "B";
    case reflexion::v1::SAFETY_TIER_C:
      return "C";
    default:
      return "";
  }
}

std::string Dump(const Json& j) {
  // replace: no exception on invalid UTF-8 (our strings are valid; this is
  // the belt to their braces).
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// The last `max` bytes of `s` (a log tail keeps its end), starting on a
// character boundary, valid UTF-8.
std::string Tail(absl::string_view s, size_t max) {
  if (s.size() > max) {
    size_t from = s.size() - max;
    // Skip the continuation bytes of a character cut at its start.
    for (int i = 0; i < 3 && from < s.size() &&
                    (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80;
         ++i) {
      ++from;
    }
    s.remove_prefix(from);
  }
  return core::ToValidUtf8Clipped(s, max);
}

// Reads the members of one JSON object leniently: a member that is absent
// or null is left unset; one of the wrong type or out of range is left
// unset and named in `ignored` ("events[2].count: not an integer in
// [0, 2147483647]"); the rest is kept.
class Fields {
 public:
  Fields(const Json& object, std::string path,
         std::vector<std::string>* ignored)
      : object_(object), path_(std::move(path)), ignored_(ignored) {}

  // The member, or null when absent or JSON null.
  const Json* Get(const char* key) const {
    auto it = object_.find(key);
    if (it == object_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  void String(const char* key, size_t max, std::string* out) const {
    const Json* v = Get(key);
    if (v == nullptr) return;
    if (!v->is_string()) {
      Ignore(key, "not a string");
      return;
    }
    *out = core::ToValidUtf8Clipped(v->get_ref<const std::string&>(), max);
  }

  void Bool(const char* key, bool* out) const {
    const Json* v = Get(key);
    if (v == nullptr) return;
    if (!v->is_boolean()) {
      Ignore(key, "not a boolean");
      return;
    }
    *out = v->get<bool>();
  }

  // An integer in [lo, hi]; floats (even 3.0) are refused: an agent that
  // sends them for a count has a bug worth seeing.
  bool Int(const char* key, int64_t lo, int64_t hi, int64_t* out) const {
    const Json* v = Get(key);
    if (v == nullptr) return false;
    bool ok = false;
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      ok = u <= static_cast<uint64_t>(hi);
      if (ok) *out = static_cast<int64_t>(u);
    } else if (v->is_number_integer()) {
      const int64_t i = v->get<int64_t>();
      ok = i >= lo && i <= hi;
      if (ok) *out = i;
    }
    if (!ok)
      Ignore(key, absl::StrCat("not an integer in [", lo, ", ", hi, "]"));
    return ok;
  }

  void Int32(const char* key, int32_t lo, int32_t hi, int32_t* out) const {
    int64_t v = 0;
    if (Int(key, lo, hi, &v)) *out = static_cast<int32_t>(v);
  }

  // The member if it is an array; null (and named) otherwise.
  const Json* Array(const char* key) const {
    const Json* v = Get(key);
    if (v == nullptr) return nullptr;
    if (!v->is_array()) {
      Ignore(key, "not an array");
      return nullptr;
    }
    return v;
  }

  std::string PathOf(absl::string_view key) const {
    return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", key);
  }

  void Ignore(absl::string_view key, absl::string_view why) const {
    ignored_->push_back(absl::StrCat(PathOf(key), ": ", why));
  }

 private:
  const Json& object_;
  const std::string path_;
  std::vector<std::string>* const ignored_;
};

// Elements of array `key` that are objects, at most `max`; the others are
// named in `ignored`. `fn(fields)` reads each.
template <typename Fn>
void ForEachObject(const Fields& parent, const char* key, size_t max,
                   std::vector<std::string>* ignored, Fn fn) {
  const Json* array = parent.Array(key);
  if (array == nullptr) return;
  for (size_t i = 0; i < array->size(); ++i) {
    const std::string path = absl::StrCat(parent.PathOf(key), "[", i, "]");
    if (i >= max) {
      ignored->push_back(absl::StrCat(path, "..: more than ", max, " entries"));
      return;
    }
    const Json& element = (*array)[i];
    if (!element.is_object()) {
      ignored->push_back(absl::StrCat(path, ": not an object"));
      continue;
    }
    fn(Fields(element, path, ignored));
  }
}

void LogIgnored(absl::string_view what, const std::string& url,
                const std::vector<std::string>& ignored) {
  if (ignored.empty()) return;
  std::vector<std::string> named(
      ignored.begin(),
      ignored.begin() + std::min(ignored.size(), kMaxIgnoredNamed));
  LOG(WARNING) << what << " response from " << url << ": ignored "
               << ignored.size() << " field(s): " << absl::StrJoin(named, "; ")
               << (ignored.size() > named.size() ? "; ..." : "");
}

// The body of a 200 as a JSON object. kUnavailable when it is not JSON (a
// proxy's error page, a cut connection: worth another try later);
// kInvalidArgument when it is JSON but not an object (an agent bug).
absl::StatusOr<Json> ParseObject(absl::string_view what, const std::string& url,
                                 const HttpResponse& response) {
  Json j = Json::parse(response.body, /*cb=*/nullptr,
                       /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return absl::UnavailableError(
        absl::StrCat(what, " response from ", url, " (HTTP ", response.status,
                     ") is not JSON: ", Quote(response.body)));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " response from ", url, " (HTTP ", response.status,
                     ") is not a JSON object: ", Quote(response.body)));
  }
  return j;
}

absl::StatusOr<Diagnosis> MapDiagnosis(const std::string& url,
                                       const HttpResponse& response) {
  absl::StatusOr<Json> j = ParseObject("k8sgpt-analyze", url, response);
  if (!j.ok()) return j.status();
  std::vector<std::string> ignored;
  const Fields top(*j, "", &ignored);
  Diagnosis d;
  ForEachObject(
      top, "container_statuses", kMaxContainers, &ignored,
      [&](const Fields& f) {
        reflexion::v1::ContainerStatus* c = d.add_container_statuses();
        f.String("name", kMaxName, c->mutable_name());
        f.String("image", kMaxImage, c->mutable_image());
        int32_t n = 0;
        f.Int32("restart_count", 0, std::numeric_limits<int32_t>::max(), &n);
        c->set_restart_count(n);
        f.String("last_termination_reason", kMaxReason,
                 c->mutable_last_termination_reason());
        n = 0;
        f.Int32("last_exit_code", std::numeric_limits<int32_t>::min(),
                std::numeric_limits<int32_t>::max(), &n);
        c->set_last_exit_code(n);
        f.String("waiting_reason", kMaxReason, c->mutable_waiting_reason());
        f.String("waiting_message", kMaxText, c->mutable_waiting_message());
        bool ready = false;
        f.Bool("ready", &ready);
        c->set_ready(ready);
      });
  ForEachObject(top, "events", kMaxEvents, &ignored, [&](const Fields& f) {
    reflexion::v1::PodEvent* e = d.add_events();
    f.String("type", kMaxReason, e->mutable_type());
    f.String("reason", kMaxReason, e->mutable_reason());
    f.String("message", kMaxText, e->mutable_message());
    int32_t count = 0;
    f.Int32("count", 0, std::numeric_limits<int32_t>::max(), &count);
    e->set_count(count);
  });
  if (const Json* logs = top.Get("logs"); logs != nullptr) {
    if (logs->is_string()) {
      d.set_logs(Tail(logs->get_ref<const std::string&>(), kMaxLogs));
    } else {
      top.Ignore("logs", "not a string");
    }
  }
  top.String("last_healthy_image", kMaxImage, d.mutable_last_healthy_image());
  if (const Json* secrets = top.Array("available_pull_secrets")) {
    for (size_t i = 0; i < secrets->size(); ++i) {
      const std::string path = absl::StrCat("available_pull_secrets[", i, "]");
      if (i >= kMaxSecrets) {
        ignored.push_back(
            absl::StrCat(path, "..: more than ", kMaxSecrets, " entries"));
        break;
      }
      const Json& s = (*secrets)[i];
      if (!s.is_string() || s.get_ref<const std::string&>().empty()) {
        ignored.push_back(absl::StrCat(path, ": not a non-empty string"));
        continue;
      }
      d.add_available_pull_secrets(
          core::ToValidUtf8Clipped(s.get_ref<const std::string&>(), kMaxName));
    }
  }
  bool b = false;
  top.Bool("recent_rollout", &b);
  d.set_recent_rollout(b);
  int64_t limit = 0;
  top.Int("memory_limit_bytes", 0, std::numeric_limits<int64_t>::max(), &limit);
  d.set_memory_limit_bytes(limit);
  b = false;
  top.Bool("first_revision", &b);
  d.set_first_revision(b);
  d.set_source(kName);
  LogIgnored("k8sgpt-analyze", url, ignored);
  return d;
}

absl::StatusOr<ExecutionResult> MapExecution(const std::string& url,
                                             const HttpResponse& response,
                                             const Action& action) {
  absl::StatusOr<Json> j = ParseObject("execute-fix", url, response);
  if (!j.ok()) return j.status();
  std::vector<std::string> ignored;
  const Fields top(*j, "", &ignored);
  // The one field we never guess: whether the cluster was changed.
  const Json* applied = top.Get("applied");
  if (applied == nullptr || !applied->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "execute-fix response from ", url, ": field \"applied\" is ",
        applied == nullptr ? "missing" : "not a boolean", ": ",
        Quote(response.body)));
  }
  ExecutionResult r;
  *r.mutable_action() = action;
  r.set_applied(applied->get<bool>());
  bool b = false;
  top.Bool("dry_run", &b);
  r.set_dry_run(b);
  top.String("message", kMaxText, r.mutable_message());
  ForEachObject(top, "changes", kMaxChanges, &ignored, [&](const Fields& f) {
    reflexion::v1::ValueChange* c = r.add_changes();
    f.String("path", kMaxChangePath, c->mutable_path());
    f.String("before", kMaxChangeValue, c->mutable_before());
    f.String("after", kMaxChangeValue, c->mutable_after());
  });
  // The agent may say it had seen the key (its own dedup); ours is added
  // by the caller.
  b = false;
  top.Bool("deduplicated", &b);
  r.set_deduplicated(b);
  r.set_executor(kName);
  LogIgnored("execute-fix", url, ignored);
  return r;
}

// One answer of pod-status.
struct PodStatus {
  bool healthy = false;
  std::string phase;
  std::optional<int64_t> restarts;
  std::string reason;  // failure_reason, else reason
  std::optional<bool> ready;
  std::vector<std::string> signals;
};

absl::StatusOr<PodStatus> MapPodStatus(const std::string& url,
                                       const HttpResponse& response) {
  absl::StatusOr<Json> j = ParseObject("pod-status", url, response);
  if (!j.ok()) return j.status();
  std::vector<std::string> ignored;
  const Fields top(*j, "", &ignored);
  const Json* healthy = top.Get("healthy");
  if (healthy == nullptr || !healthy->is_boolean()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pod-status response from ", url, ": field \"healthy\" is ",
        healthy == nullptr ? "missing" : "not a boolean", ": ",
        Quote(response.body)));
  }
  PodStatus s;
  s.healthy = healthy->get<bool>();
  top.String("phase", kMaxReason, &s.phase);
  int64_t restarts = 0;
  if (top.Int("restarts", 0, std::numeric_limits<int32_t>::max(), &restarts)) {
    s.restarts = restarts;
  }
  top.String("failure_reason", kMaxReason, &s.reason);
  if (s.reason.empty()) top.String("reason", kMaxReason, &s.reason);
  bool ready = false;
  if (const Json* r = top.Get("ready"); r != nullptr) {
    top.Bool("ready", &ready);
    if (r->is_boolean()) s.ready = ready;
  }
  if (const Json* signals = top.Array("signals")) {
    for (size_t i = 0; i < signals->size() && i < kMaxSignals; ++i) {
      const Json& sig = (*signals)[i];
      if (sig.is_string() && !sig.get_ref<const std::string&>().empty()) {
        s.signals.push_back(core::ToValidUtf8Clipped(
            sig.get_ref<const std::string&>(), kMaxSignal));
      }
    }
  }
  LogIgnored("pod-status", url, ignored);
  return s;
}

std::string FailureReasonOf(const PodStatus& s) {
  if (!s.reason.empty()) return s.reason;
  if (!s.phase.empty() && s.phase != "Running") return s.phase;
  if (s.ready.has_value() && !*s.ready) return "NotReady";
  return "Unhealthy";
}

}  // namespace

// State shared with callbacks, which may outlive the executor.
struct HttpExecutor::Shared {
  explicit Shared(size_t capacity) : capacity(capacity) {}

  // Remembers the first result of `key`, evicting the least recently used
  // key at the bound.
  void Remember(const std::string& key, const ExecutionResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (results.contains(key)) return;
    while (results.size() >= capacity && !lru.empty()) {
      results.erase(lru.back());
      lru.pop_back();
    }
    lru.push_front(key);
    results.emplace(key, Remembered{result, lru.begin()});
  }

  const size_t capacity;
  absl::Mutex mu;
  struct Remembered {
    ExecutionResult result;
    std::list<std::string>::iterator lru_position;
  };
  // Most recently used first.
  std::list<std::string> lru ABSL_GUARDED_BY(mu);
  absl::flat_hash_map<std::string, Remembered> results ABSL_GUARDED_BY(mu);
  // Keys whose request is in flight, with the Execute calls that came
  // meanwhile (bounded by the calls in flight: one per workflow).
  absl::flat_hash_map<std::string, std::vector<core::Callback<ExecutionResult>>>
      in_flight ABSL_GUARDED_BY(mu);
  // Open observation windows (one per workflow observing), so that the
  // destructor can end them.
  absl::flat_hash_set<std::shared_ptr<Watch>> watches ABSL_GUARDED_BY(mu);
};

// One observation window.
struct HttpExecutor::Watch {
  // Set at the start, then read only.
  std::shared_ptr<Shared> shared;
  HttpClient* client = nullptr;
  const core::Clock* clock = nullptr;
  graph::Timer* timer = nullptr;
  HttpRequest request;  // the poll
  absl::Duration interval;
  absl::Duration request_timeout;
  absl::Time start;
  absl::Time end;
  absl::Duration window;

  absl::Mutex mu;
  core::Callback<Observation> done ABSL_GUARDED_BY(mu);
  bool finished ABSL_GUARDED_BY(mu) = false;
  bool poll_in_flight ABSL_GUARDED_BY(mu) = false;
  bool window_closed ABSL_GUARDED_BY(mu) = false;
  absl::Time last_poll_start ABSL_GUARDED_BY(mu);
  // Timer ids to cancel when finishing (an id that already fired is a
  // no-op for Cancel).
  std::vector<uint64_t> timers ABSL_GUARDED_BY(mu);
  // The thread inside timer->After for this watch: a callback that runs on
  // it ran inline, which a Timer does only while it is being destroyed.
  std::optional<std::thread::id> scheduling_thread ABSL_GUARDED_BY(mu);

  int polls ABSL_GUARDED_BY(mu) = 0;
  int answered ABSL_GUARDED_BY(mu) = 0;
  absl::Status last_error ABSL_GUARDED_BY(mu);
  std::optional<int64_t> first_restarts ABSL_GUARDED_BY(mu);
  int64_t max_restarts ABSL_GUARDED_BY(mu) = 0;
  std::optional<absl::Time> first_healthy ABSL_GUARDED_BY(mu);
  int64_t restarts_when_healthy ABSL_GUARDED_BY(mu) = 0;
  bool regressed ABSL_GUARDED_BY(mu) = false;
  std::string regression ABSL_GUARDED_BY(mu);
  bool healthy_now ABSL_GUARDED_BY(mu) = false;
  std::string failure_reason ABSL_GUARDED_BY(mu);
  std::vector<std::string> signals ABSL_GUARDED_BY(mu);

  enum class Fire { kPoll, kWindowEnd, kGiveUp };

  // Runs `what` after `delay` on the timer.
  static void Schedule(const std::shared_ptr<Watch>& w, absl::Duration delay,
                       Fire what) {
    {
      absl::MutexLock lock(&w->mu);
      if (w->finished) return;
      w->scheduling_thread = std::this_thread::get_id();
    }
    const uint64_t id = w->timer->After(
        delay, [w, what]() mutable { OnTimer(std::move(w), what); });
    absl::MutexLock lock(&w->mu);
    w->scheduling_thread.reset();
    if (!w->finished) w->timers.push_back(id);
  }

  static void OnTimer(std::shared_ptr<Watch> w, Fire what) {
    {
      absl::MutexLock lock(&w->mu);
      if (w->finished) return;
      if (w->scheduling_thread == std::this_thread::get_id()) {
        // Ran inside After: the timer is shutting down. Polling on would
        // recurse through it until the window ends; decide now instead.
        what = Fire::kGiveUp;
      }
    }
    switch (what) {
      case Fire::kPoll:
        StartPoll(w, /*final=*/false);
        return;
      case Fire::kWindowEnd:
        OnWindowEnd(w);
        return;
      case Fire::kGiveUp:
        Finish(w, std::nullopt);
        return;
    }
  }

  static void StartPoll(const std::shared_ptr<Watch>& w, bool final) {
    {
      absl::MutexLock lock(&w->mu);
      if (w->finished || w->poll_in_flight) return;
      if (w->window_closed && !final) return;
      w->poll_in_flight = true;
      w->last_poll_start = w->clock->Now();
      ++w->polls;
    }
    w->client->Send(w->request, [w](absl::StatusOr<HttpResponse> r) {
      OnPollDone(w, std::move(r));
    });
  }

  static void OnWindowEnd(const std::shared_ptr<Watch>& w) {
    bool poll_now = false;
    bool decide_now = false;
    {
      absl::MutexLock lock(&w->mu);
      if (w->finished) return;
      w->window_closed = true;
      // The end state is the last poll's: make one unless one is on its
      // way (it started at most one interval ago) or one already started
      // at the end (a zero window).
      if (!w->poll_in_flight) {
        if (w->polls > 0 && w->last_poll_start >= w->end) {
          decide_now = true;
        } else {
          poll_now = true;
        }
      }
    }
    if (decide_now) {
      Finish(w, std::nullopt);
      return;
    }
    Schedule(w, w->request_timeout + kFinishSlack, Fire::kGiveUp);
    if (poll_now) StartPoll(w, /*final=*/true);
  }

  static void OnPollDone(const std::shared_ptr<Watch>& w,
                         absl::StatusOr<HttpResponse> response) {
    absl::StatusOr<PodStatus> status =
        response.ok() ? MapPodStatus(w->request.url, *response)
                      : absl::StatusOr<PodStatus>(response.status());
    const absl::Time now = w->clock->Now();
    bool finish = false;
    std::optional<absl::Duration> next;
    {
      absl::MutexLock lock(&w->mu);
      if (w->finished) return;
      w->poll_in_flight = false;
      if (status.ok()) {
        w->Record(*status, now);
      } else {
        w->last_error = status.status();
      }
      if (w->window_closed) {
        finish = true;
      } else if (w->last_poll_start + w->interval < w->end) {
        next = std::max(absl::ZeroDuration(),
                        w->last_poll_start + w->interval - now);
      }
      // Otherwise the window-end timer makes the last poll.
    }
    if (finish) {
      Finish(w, std::nullopt);
    } else if (next.has_value()) {
      Schedule(w, *next, Fire::kPoll);
    }
  }

  void Record(const PodStatus& s, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ++answered;
    if (s.restarts.has_value()) {
      if (!first_restarts.has_value()) first_restarts = *s.restarts;
      max_restarts = std::max(max_restarts, *s.restarts);
    }
    const double at_s = absl::ToDoubleSeconds(now - start);
    if (s.healthy) {
      if (!first_healthy.has_value()) {
        first_healthy = now;
        restarts_when_healthy = max_restarts;
      } else if (!regressed && max_restarts > restarts_when_healthy) {
        // Healthy at both polls, but it crashed and came back in between.
        regressed = true;
        regression = absl::StrFormat(
            "regressed after being healthy: restarted %d time(s) by %.1fs",
            max_restarts - restarts_when_healthy, at_s);
      }
      healthy_now = true;
      failure_reason.clear();
    } else {
      if (first_healthy.has_value() && !regressed) {
        regressed = true;
        regression =
            absl::StrFormat("regressed after being healthy: %s at %.1fs",
                            FailureReasonOf(s), at_s);
      }
      healthy_now = false;
      failure_reason = FailureReasonOf(s);
    }
    for (const std::string& sig : s.signals) {
      if (std::find(signals.begin(), signals.end(), sig) != signals.end()) {
        continue;
      }
      signals.push_back(sig);
      // The latest are the most telling about the end of the window.
      if (signals.size() > kMaxSignals) signals.erase(signals.begin());
    }
  }

  // The decision from what was seen; kUnavailable when no poll answered.
  absl::StatusOr<Observation> Judge() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    if (answered == 0) {
      return absl::UnavailableError(absl::StrCat(
          "no poll of ", request.url, " answered in the ",
          absl::FormatDuration(window), " observation window (", polls,
          " tried); last error: ",
          core::ToValidUtf8Clipped(last_error.ToString(), kMaxQuoted)));
    }
    Observation o;
    o.set_window_s(absl::ToDoubleSeconds(window));
    o.set_recovered(first_healthy.has_value());
    o.set_success(first_healthy.has_value() && !regressed && healthy_now);
    if (first_healthy.has_value()) {
      o.set_time_to_recovery_s(
          std::max(0.0, absl::ToDoubleSeconds(*first_healthy - start)));
    }
    o.set_restarts(static_cast<int32_t>(std::clamp<int64_t>(
        max_restarts - first_restarts.value_or(max_restarts), 0,
        std::numeric_limits<int32_t>::max())));
    if (!healthy_now) o.set_failure_reason(failure_reason);
    for (const std::string& s : signals) o.add_signals(s);
    if (o.success()) {
      o.add_signals(absl::StrFormat(
          "pod healthy after %.1fs and stayed healthy for the rest of the "
          "%.1fs window",
          o.time_to_recovery_s(), o.window_s()));
    } else if (regressed) {
      o.add_signals(regression);
    } else if (!o.recovered()) {
      o.add_signals(absl::StrFormat("pod never healthy in the %.1fs window",
                                    o.window_s()));
    }
    o.add_signals(absl::StrCat(answered, " of ", polls, " status poll(s) of ",
                               request.url, " answered"));
    if (answered < polls) {
      o.add_signals(absl::StrCat(
          polls - answered, " poll(s) failed, last: ",
          core::ToValidUtf8Clipped(last_error.ToString(), kMaxQuoted)));
    }
    return o;
  }

  // Ends the window once: with `error` when set, else with Judge().
  static void Finish(const std::shared_ptr<Watch>& w,
                     std::optional<absl::Status> error) {
    core::Callback<Observation> done;
    absl::StatusOr<Observation> result;
    std::vector<uint64_t> timers;
    {
      absl::MutexLock lock(&w->mu);
      if (w->finished) return;
      w->finished = true;
      result =
          error.has_value() ? absl::StatusOr<Observation>(*error) : w->Judge();
      done = std::move(w->done);
      timers.swap(w->timers);
    }
    for (uint64_t id : timers) w->timer->Cancel(id);
    {
      absl::MutexLock lock(&w->shared->mu);
      w->shared->watches.erase(w);
    }
    std::move(done)(std::move(result));
  }
};

absl::StatusOr<std::unique_ptr<HttpExecutor>> HttpExecutor::Create(
    HttpExecutorOptions options, HttpClient* client, const core::Clock* clock,
    graph::Timer* timer) {
  if (client == nullptr || clock == nullptr || timer == nullptr) {
    return absl::InvalidArgumentError(
        "http executor needs an HttpClient, a Clock and a Timer");
  }
  while (absl::EndsWith(options.base_url, "/")) options.base_url.pop_back();
  if (!absl::StartsWith(options.base_url, "http://") &&
      !absl::StartsWith(options.base_url, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("executor base_url ", Quote(options.base_url),
                     " is not an http:// or https:// URL (GO_SERVICE_URL)"));
  }
  if (options.base_url.find_first_of("?# \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("executor base_url ", Quote(options.base_url),
                     " must not hold a query, a fragment or blanks"));
  }
  if (options.poll_interval < kMinPollInterval ||
      options.poll_interval > kMaxPollInterval) {
    return absl::InvalidArgumentError(absl::StrCat(
        "executor poll_interval ", absl::FormatDuration(options.poll_interval),
        " is outside [100ms, 60s]"));
  }
  if (options.max_attempts < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "executor max_attempts ", options.max_attempts, " must be >= 1"));
  }
  if (options.request_timeout <= absl::ZeroDuration() ||
      options.request_timeout == absl::InfiniteDuration() ||
      options.connect_timeout <= absl::ZeroDuration() ||
      options.connect_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        "executor request_timeout and connect_timeout must be positive and "
        "finite");
  }
  if (options.initial_backoff < absl::ZeroDuration() ||
      options.max_backoff < options.initial_backoff ||
      options.max_backoff == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        "executor backoff: need 0 <= initial_backoff <= max_backoff < inf");
  }
  if (options.dedup_capacity == 0) {
    return absl::InvalidArgumentError("executor dedup_capacity must be >= 1");
  }
  return absl::WrapUnique(
      new HttpExecutor(std::move(options), client, clock, timer));
}

HttpExecutor::HttpExecutor(HttpExecutorOptions options, HttpClient* client,
                           const core::Clock* clock, graph::Timer* timer)
    : options_(std::move(options)),
      client_(client),
      clock_(clock),
      timer_(timer),
      shared_(std::make_shared<Shared>(options_.dedup_capacity)) {}

HttpExecutor::~HttpExecutor() {
  absl::flat_hash_set<std::shared_ptr<Watch>> open;
  {
    absl::MutexLock lock(&shared_->mu);
    open.swap(shared_->watches);
  }
  for (const std::shared_ptr<Watch>& w : open) {
    Watch::Finish(w, absl::UnavailableError(absl::StrCat(
                         "http executor for ", options_.base_url,
                         " shutting down during the observation window")));
  }
}

std::string HttpExecutor::Name() const { return kName; }

HttpRequest HttpExecutor::NewRequest(std::string method,
                                     std::string url) const {
  HttpRequest r;
  r.method = std::move(method);
  r.url = std::move(url);
  r.headers.emplace_back("Accept", "application/json");
  r.connect_timeout = options_.connect_timeout;
  r.timeout = options_.request_timeout;
  r.max_response_bytes = options_.max_response_bytes;
  r.max_attempts = 1;
  r.initial_backoff = options_.initial_backoff;
  r.max_backoff = options_.max_backoff;
  return r;
}

void HttpExecutor::Diagnose(const Incident& incident,
                            core::Callback<Diagnosis> done) {
  if (incident.pod_name().empty() || incident.namespace_().empty()) {
    std::move(done)(absl::InvalidArgumentError(
        "http executor: incident.pod_name and incident.namespace are "
        "required"));
    return;
  }
  HttpRequest r = NewRequest("POST", options_.base_url + kAnalyzePath);
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = Dump(Json{{"pod_name", incident.pod_name()},
                     {"namespace", incident.namespace_()},
                     {"incident_id", incident.request_id()},
                     {"error_type", incident.error_type()}});
  // A read: safe to repeat.
  r.max_attempts = options_.max_attempts;
  std::string url = r.url;
  client_->Send(std::move(r),
                [url = std::move(url), done = std::move(done)](
                    absl::StatusOr<HttpResponse> response) mutable {
                  if (!response.ok()) {
                    std::move(done)(response.status());
                    return;
                  }
                  std::move(done)(MapDiagnosis(url, *response));
                });
}

void HttpExecutor::Execute(const Action& action,
                           core::Callback<ExecutionResult> done) {
  if (absl::Status valid = core::ValidateAction(action); !valid.ok()) {
    std::move(done)(absl::InvalidArgumentError(
        absl::StrCat("http executor refuses the action: ", valid.message())));
    return;
  }
  const std::string& key = action.idempotency_key();
  if (key.empty()) {
    std::move(done)(absl::InvalidArgumentError(
        "http executor refuses the action: action.idempotency_key is empty"));
    return;
  }
  if (action.type() == reflexion::v1::ACTION_TYPE_UNDO) {
    // execute-fix knows the seed's strategy types only; sending "undo"
    // would be refused at best, so say what is missing instead.
    std::move(done)(absl::FailedPreconditionError(absl::StrCat(
        "the REST agent at ", options_.base_url, " has no undo: undo of ",
        action.undo_of(), " on pod ", action.namespace_(), "/",
        action.pod_name(),
        " not sent; restore its values by hand or connect the reflexion "
        "agent over Resolve")));
    return;
  }
  std::optional<ExecutionResult> again;
  {
    absl::MutexLock lock(&shared_->mu);
    if (auto it = shared_->results.find(key); it != shared_->results.end()) {
      shared_->lru.splice(shared_->lru.begin(), shared_->lru,
                          it->second.lru_position);
      again = it->second.result;
      again->set_deduplicated(true);
    } else if (auto in = shared_->in_flight.find(key);
               in != shared_->in_flight.end()) {
      in->second.push_back(std::move(done));
      return;
    } else {
      shared_->in_flight[key];
    }
  }
  if (again.has_value()) {
    std::move(done)(*std::move(again));
    return;
  }

  const core::ActionSpec* spec = core::FindAction(action.type());
  const reflexion::v1::StrategyParams& p = action.params();
  Json strategy = {{"type", spec->name},
                   {"tier", TierLetter(action.tier())},
                   {"params",
                    {{"memory_factor", p.memory_factor()},
                     {"probe_factor", p.probe_factor()},
                     {"requests_factor", p.requests_factor()}}},
                   {"image", action.image()},
                   {"pull_secret", action.pull_secret()}};
  HttpRequest r = NewRequest("POST", options_.base_url + kExecutePath);
  r.headers.emplace_back("Content-Type", "application/json");
  r.headers.emplace_back("Idempotency-Key", key);
  r.body = Dump(Json{{"pod_name", action.pod_name()},
                     {"namespace", action.namespace_()},
                     {"strategy", std::move(strategy)},
                     {"idempotency_key", key}});
  // Safe to repeat only because the agent deduplicates by the key.
  r.max_attempts = options_.max_attempts;
  std::string url = r.url;
  client_->Send(
      std::move(r),
      [shared = shared_, url = std::move(url), action, key,
       done = std::move(done)](absl::StatusOr<HttpResponse> response) mutable {
        absl::StatusOr<ExecutionResult> result =
            response.ok() ? MapExecution(url, *response, action)
                          : absl::StatusOr<ExecutionResult>(response.status());
        std::vector<core::Callback<ExecutionResult>> waiters;
        {
          absl::MutexLock lock(&shared->mu);
          if (auto it = shared->in_flight.find(key);
              it != shared->in_flight.end()) {
            waiters = std::move(it->second);
            shared->in_flight.erase(it);
          }
          if (result.ok()) shared->Remember(key, *result);
        }
        for (core::Callback<ExecutionResult>& waiter : waiters) {
          absl::StatusOr<ExecutionResult> copy = result;
          if (copy.ok()) copy->set_deduplicated(true);
          std::move(waiter)(std::move(copy));
        }
        std::move(done)(std::move(result));
      });
}

void HttpExecutor::Observe(const Action& action, absl::Duration window,
                           core::Callback<Observation> done) {
  if (action.pod_name().empty() || action.namespace_().empty()) {
    std::move(done)(absl::InvalidArgumentError(
        "http executor: action.pod_name and action.namespace are required to "
        "observe"));
    return;
  }
  if (window < absl::ZeroDuration() || window == absl::InfiniteDuration()) {
    std::move(done)(absl::InvalidArgumentError(
        absl::StrCat("observation window ", absl::FormatDuration(window),
                     " must be finite and >= 0")));
    return;
  }
  auto w = std::make_shared<Watch>();
  w->shared = shared_;
  w->client = client_;
  w->clock = clock_;
  w->timer = timer_;
  w->request = NewRequest(
      "GET", absl::StrCat(options_.base_url, kPodStatusPath,
                          PercentEncode(action.pod_name()),
                          "?namespace=", PercentEncode(action.namespace_())));
  w->interval = options_.poll_interval;
  w->request_timeout = options_.request_timeout;
  w->window = window;
  w->start = clock_->Now();
  w->end = w->start + window;
  {
    absl::MutexLock lock(&w->mu);
    w->done = std::move(done);
  }
  {
    absl::MutexLock lock(&shared_->mu);
    shared_->watches.insert(w);
  }
  Watch::Schedule(w, window, Watch::Fire::kWindowEnd);
  Watch::StartPoll(w, /*final=*/false);
}

void HttpExecutor::Check(absl::AnyInvocable<void(absl::Status) &&> done) {
  HttpRequest r = NewRequest("GET", options_.base_url + kHealthPath);
  client_->Send(
      std::move(r),
      [done = std::move(done)](absl::StatusOr<HttpResponse> response) mutable {
        std::move(done)(response.status());
      });
}

std::string HttpExecutor::Describe(const absl::Status& health) const {
  return absl::StrCat(
      "http at ", options_.base_url, " (",
      health.ok()
          ? std::string("healthy")
          : absl::StrCat("unreachable: ", core::ToValidUtf8Clipped(
                                              health.ToString(), kMaxQuoted)),
      ")");
}

}  // namespace reflexion::upstream

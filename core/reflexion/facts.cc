#include "core/reflexion/facts.h"

#include <cmath>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/validation.h"

namespace reflexion::core {
namespace {

using google::protobuf::ListValue;
using google::protobuf::Struct;
using google::protobuf::Value;

std::string Text(absl::string_view s) {
  return ToValidUtf8Clipped(s, kMaxFactText);
}

const char* KindName(const Value& v) {
  switch (v.kind_case()) {
    case Value::kNullValue:
      return "null";
    case Value::kNumberValue:
      return "a number";
    case Value::kStringValue:
      return "a string";
    case Value::kBoolValue:
      return "a bool";
    case Value::kStructValue:
      return "an object";
    case Value::kListValue:
      return "a list";
    default:
      return "empty";
  }
}

// Reads fields of Struct objects, noting in `facts->ignored` every field
// that is present but unreadable. `path` names the object read from.
class Reader {
 public:
  explicit Reader(IncidentFacts* facts) : facts_(facts) {}

  const Value* Field(const Struct* s, absl::string_view key) {
    if (s == nullptr) return nullptr;
    auto it = s->fields().find(std::string(key));
    if (it == s->fields().end()) return nullptr;
    // JSON null reads as absent (Kubernetes writes null for empty fields).
    if (it->second.kind_case() == Value::kNullValue) return nullptr;
    return &it->second;
  }

  std::string Str(const Struct* s, absl::string_view key,
                  absl::string_view path) {
    const Value* v = Field(s, key);
    if (v == nullptr) return "";
    if (!v->has_string_value()) {
      Wrong(path, key, *v, "not a string");
      return "";
    }
    return Text(v->string_value());
  }

  std::optional<int64_t> Int(const Struct* s, absl::string_view key,
                             absl::string_view path) {
    const Value* v = Field(s, key);
    if (v == nullptr) return std::nullopt;
    if (!v->has_number_value()) {
      // Kubernetes never quotes these, but a hand-written file might.
      int64_t parsed;
      if (v->has_string_value() &&
          absl::SimpleAtoi(v->string_value(), &parsed)) {
        return parsed;
      }
      Wrong(path, key, *v, "not a number");
      return std::nullopt;
    }
    double d = v->number_value();
    if (!std::isfinite(d) || d != std::floor(d) || d < -9.2e18 || d > 9.2e18) {
      facts_->Ignore(absl::StrCat(path, ".", key, ": not an integer in range"));
      return std::nullopt;
    }
    return static_cast<int64_t>(d);
  }

  bool Bool(const Struct* s, absl::string_view key, absl::string_view path) {
    const Value* v = Field(s, key);
    if (v == nullptr) return false;
    if (!v->has_bool_value()) {
      Wrong(path, key, *v, "not a bool");
      return false;
    }
    return v->bool_value();
  }

  const Struct* Obj(const Struct* s, absl::string_view key,
                    absl::string_view path) {
    const Value* v = Field(s, key);
    if (v == nullptr) return nullptr;
    if (!v->has_struct_value()) {
      Wrong(path, key, *v, "not an object");
      return nullptr;
    }
    return &v->struct_value();
  }

  // The list at `key`, or null; `n` is how many of its items to read (at
  // most `max`, the rest noted as ignored).
  const ListValue* List(const Struct* s, absl::string_view key,
                        absl::string_view path, int max, int* n) {
    *n = 0;
    const Value* v = Field(s, key);
    if (v == nullptr) return nullptr;
    if (!v->has_list_value()) {
      Wrong(path, key, *v, "not a list");
      return nullptr;
    }
    *n = v->list_value().values_size();
    if (*n > max) {
      facts_->Ignore(absl::StrCat(path, ".", key, ": ", *n,
                                  " items, only the first ", max, " read"));
      *n = max;
    }
    return &v->list_value();
  }

  // Item `i` of `list` as an object, or null (noted).
  const Struct* Item(const ListValue* list, int i, absl::string_view path) {
    const Value& v = list->values(i);
    if (v.has_struct_value()) return &v.struct_value();
    facts_->Ignore(
        absl::StrCat(path, "[", i, "]: ", KindName(v), ", not an object"));
    return nullptr;
  }

  std::string ItemStr(const ListValue* list, int i, absl::string_view path) {
    const Value& v = list->values(i);
    if (v.has_string_value()) return Text(v.string_value());
    facts_->Ignore(
        absl::StrCat(path, "[", i, "]: ", KindName(v), ", not a string"));
    return "";
  }

  void Wrong(absl::string_view path, absl::string_view key, const Value& v,
             absl::string_view what) {
    facts_->Ignore(
        absl::StrCat(path, ".", Text(key), ": ", KindName(v), ", ", what));
  }

  IncidentFacts* facts() { return facts_; }

 private:
  IncidentFacts* facts_;
};

std::string Indexed(absl::string_view path, int i) {
  return absl::StrCat(path, "[", i, "]");
}

void ReadState(Reader& r, const Struct* state, const std::string& path,
               ContainerStateFacts* out) {
  if (state == nullptr) return;
  for (const char* kind : {"waiting", "terminated", "running"}) {
    std::string sub = absl::StrCat(path, ".", kind);
    const Struct* s = r.Obj(state, kind, path);
    if (s == nullptr) continue;
    out->kind = kind;
    out->reason = r.Str(s, "reason", sub);
    out->message = r.Str(s, "message", sub);
    if (out->kind == "terminated") {
      out->exit_code = r.Int(s, "exitCode", sub);
      out->signal = r.Int(s, "signal", sub);
    }
    return;  // a state is exactly one of the three
  }
}

void ReadStatus(Reader& r, const Struct* st, const std::string& path,
                ContainerFacts* c) {
  c->has_status = true;
  c->source = kSourcePod;
  if (c->image.empty()) c->image = r.Str(st, "image", path);
  if (auto n = r.Int(st, "restartCount", path)) {
    if (*n >= 0 && *n <= std::numeric_limits<int32_t>::max()) {
      c->restart_count = *n;
    } else {
      r.facts()->Ignore(absl::StrCat(path, ".restartCount: out of range"));
    }
  }
  c->ready = r.Bool(st, "ready", path);
  ReadState(r, r.Obj(st, "state", path), path + ".state", &c->state);
  ReadState(r, r.Obj(st, "lastState", path), path + ".lastState",
            &c->last_state);
}

// A quantity's value as a double: the number then an optional suffix.
std::optional<double> ParseQuantity(absl::string_view q) {
  q = absl::StripAsciiWhitespace(q);
  if (q.empty() || q.size() > 64) return std::nullopt;
  size_t i = 0;
  if (q[i] == '+' || q[i] == '-') ++i;
  while (i < q.size() && (absl::ascii_isdigit(q[i]) || q[i] == '.')) ++i;
  // A decimal exponent ("129e6"); "E" alone is the exa suffix.
  if (i + 1 < q.size() && (q[i] == 'e' || q[i] == 'E') &&
      (absl::ascii_isdigit(q[i + 1]) || q[i + 1] == '-' || q[i + 1] == '+')) {
    size_t j = i + 1;
    if (q[j] == '-' || q[j] == '+') ++j;
    if (j < q.size() && absl::ascii_isdigit(q[j])) {
      while (j < q.size() && absl::ascii_isdigit(q[j])) ++j;
      if (j == q.size()) i = j;
    }
  }
  double number;
  if (!absl::SimpleAtod(q.substr(0, i), &number) || !std::isfinite(number) ||
      number < 0) {
    return std::nullopt;
  }
  absl::string_view suffix = q.substr(i);
  struct Suffix {
    const char* s;
    double m;
  };
  static constexpr Suffix kSuffixes[] = {{"", 1},
                                         {"n", 1e-9},
                                         {"u", 1e-6},
                                         {"m", 1e-3},
                                         {"k", 1e3},
                                         {"M", 1e6},
                                         {"G", 1e9},
                                         {"T", 1e12},
                                         {"P", 1e15},
                                         {"E", 1e18},
                                         {"Ki", 1024.0},
                                         {"Mi", 1048576.0},
                                         {"Gi", 1073741824.0},
                                         {"Ti", 1099511627776.0},
                                         {"Pi", 1125899906842624.0},
                                         {"Ei", 1152921504606846976.0}};
  for (const Suffix& s : kSuffixes) {
    if (suffix == s.s) {
      double v = number * s.m;
      if (!std::isfinite(v)) return std::nullopt;
      return v;
    }
  }
  return std::nullopt;
}

std::optional<int64_t> ToInt64(double v) {
  v = std::ceil(v);
  if (!std::isfinite(v) || v < 0 || v > 9.2e18) return std::nullopt;
  return static_cast<int64_t>(v);
}

// A quantity field: a string, or (hand-written) a number.
std::string QuantityText(Reader& r, const Struct* s, absl::string_view key,
                         absl::string_view path) {
  const Value* v = r.Field(s, key);
  if (v == nullptr) return "";
  if (v->has_string_value()) return Text(v->string_value());
  if (v->has_number_value() && std::isfinite(v->number_value())) {
    return absl::StrCat(v->number_value());
  }
  r.Wrong(path, key, *v, "not a quantity");
  return "";
}

void ReadResourceList(Reader& r, const Struct* list, const std::string& path,
                      std::optional<int64_t>* memory,
                      std::optional<int64_t>* cpu,
                      std::vector<std::pair<std::string, std::string>>* other) {
  if (list == nullptr) return;
  int n = 0;
  for (const auto& [name, value] : list->fields()) {
    if (++n > kMaxFactListItems) {
      r.facts()->Ignore(absl::StrCat(path, ": too many resources"));
      return;
    }
    std::string q = QuantityText(r, list, name, path);
    if (q.empty()) continue;
    if (name == "memory") {
      *memory = ParseMemoryBytes(q);
      if (!memory->has_value()) {
        r.facts()->Ignore(absl::StrCat(path, ".memory: not a quantity"));
      }
    } else if (name == "cpu") {
      *cpu = ParseCpuMillis(q);
      if (!cpu->has_value()) {
        r.facts()->Ignore(absl::StrCat(path, ".cpu: not a quantity"));
      }
    } else {
      other->emplace_back(Text(name), q);
    }
  }
}

void ReadProbe(Reader& r, const Struct* p, const std::string& path,
               ProbeFacts* out) {
  if (p == nullptr) return;
  out->present = true;
  for (const char* type : {"httpGet", "tcpSocket", "exec", "grpc"}) {
    if (r.Field(p, type) != nullptr) {
      out->type = type;
      break;
    }
  }
  out->initial_delay_seconds = r.Int(p, "initialDelaySeconds", path);
  out->period_seconds = r.Int(p, "periodSeconds", path);
  out->timeout_seconds = r.Int(p, "timeoutSeconds", path);
  out->failure_threshold = r.Int(p, "failureThreshold", path);
  out->success_threshold = r.Int(p, "successThreshold", path);
}

void ReadKeyRef(Reader& r, const Struct* ref, const std::string& path,
                const char* kind, const char* via,
                std::vector<ConfigRefFacts>* out) {
  if (ref == nullptr) return;
  ConfigRefFacts f;
  f.kind = kind;
  f.via = via;
  f.name = r.Str(ref, "name", path);
  f.key = r.Str(ref, "key", path);
  f.optional = r.Bool(ref, "optional", path);
  out->push_back(std::move(f));
}

void ReadSpec(Reader& r, const Struct* spec, const std::string& path,
              ContainerFacts* c) {
  c->has_spec = true;
  c->image = r.Str(spec, "image", path);
  int n;
  for (const char* key : {"command", "args"}) {
    const ListValue* l = r.List(spec, key, path, kMaxFactListItems, &n);
    for (int i = 0; i < n; ++i) {
      std::string s = r.ItemStr(l, i, absl::StrCat(path, ".", key));
      if (!s.empty()) c->command.push_back(std::move(s));
    }
  }
  if (const Struct* res = r.Obj(spec, "resources", path)) {
    std::string rp = path + ".resources";
    ReadResourceList(r, r.Obj(res, "requests", rp), rp + ".requests",
                     &c->resources.memory_request_bytes,
                     &c->resources.cpu_request_millis,
                     &c->resources.extended_requests);
    ReadResourceList(r, r.Obj(res, "limits", rp), rp + ".limits",
                     &c->resources.memory_limit_bytes,
                     &c->resources.cpu_limit_millis,
                     &c->resources.extended_limits);
  }
  ReadProbe(r, r.Obj(spec, "livenessProbe", path), path + ".livenessProbe",
            &c->liveness);
  ReadProbe(r, r.Obj(spec, "readinessProbe", path), path + ".readinessProbe",
            &c->readiness);
  ReadProbe(r, r.Obj(spec, "startupProbe", path), path + ".startupProbe",
            &c->startup);
  const ListValue* env = r.List(spec, "env", path, kMaxFactListItems, &n);
  for (int i = 0; i < n; ++i) {
    std::string ep = Indexed(path + ".env", i);
    const Struct* e = r.Item(env, i, path + ".env");
    const Struct* from = r.Obj(e, "valueFrom", ep);
    if (from == nullptr) continue;
    std::string fp = ep + ".valueFrom";
    ReadKeyRef(r, r.Obj(from, "configMapKeyRef", fp), fp + ".configMapKeyRef",
               "ConfigMap", "env", &c->config_refs);
    ReadKeyRef(r, r.Obj(from, "secretKeyRef", fp), fp + ".secretKeyRef",
               "Secret", "env", &c->config_refs);
  }
  const ListValue* env_from =
      r.List(spec, "envFrom", path, kMaxFactListItems, &n);
  for (int i = 0; i < n; ++i) {
    std::string ep = Indexed(path + ".envFrom", i);
    const Struct* e = r.Item(env_from, i, path + ".envFrom");
    ReadKeyRef(r, r.Obj(e, "configMapRef", ep), ep + ".configMapRef",
               "ConfigMap", "envFrom", &c->config_refs);
    ReadKeyRef(r, r.Obj(e, "secretRef", ep), ep + ".secretRef", "Secret",
               "envFrom", &c->config_refs);
  }
}

void ReadContainers(Reader& r, const Struct* pod, bool init, IncidentFacts* f) {
  const char* spec_key = init ? "initContainers" : "containers";
  const char* status_key = init ? "initContainerStatuses" : "containerStatuses";
  const Struct* spec = r.Obj(pod, "spec", "pod");
  const Struct* status = r.Obj(pod, "status", "pod");
  int n;
  std::string sp = absl::StrCat("pod.spec.", spec_key);
  const ListValue* specs = r.List(spec, spec_key, "pod.spec", 32, &n);
  for (int i = 0; i < n; ++i) {
    const Struct* s = r.Item(specs, i, sp);
    if (s == nullptr) continue;
    ContainerFacts c;
    c.init = init;
    c.name = r.Str(s, "name", Indexed(sp, i));
    ReadSpec(r, s, Indexed(sp, i), &c);
    f->containers.push_back(std::move(c));
  }
  std::string tp = absl::StrCat("pod.status.", status_key);
  const ListValue* statuses = r.List(status, status_key, "pod.status", 32, &n);
  for (int i = 0; i < n; ++i) {
    const Struct* s = r.Item(statuses, i, tp);
    if (s == nullptr) continue;
    std::string name = r.Str(s, "name", Indexed(tp, i));
    ContainerFacts* c = nullptr;
    for (ContainerFacts& x : f->containers) {
      if (x.init == init && x.name == name && !x.has_status) c = &x;
    }
    if (c == nullptr) {
      f->containers.emplace_back();
      c = &f->containers.back();
      c->init = init;
      c->name = name;
    }
    ReadStatus(r, s, Indexed(tp, i), c);
  }
}

void ReadPod(Reader& r, const Struct& pod_object, IncidentFacts* f) {
  const Struct* pod = &pod_object;
  PodFacts& p = f->pod;
  p.present = true;
  const Struct* meta = r.Obj(pod, "metadata", "pod");
  p.name = r.Str(meta, "name", "pod.metadata");
  p.namespace_name = r.Str(meta, "namespace", "pod.metadata");
  int n;
  const ListValue* owners =
      r.List(meta, "ownerReferences", "pod.metadata", kMaxFactListItems, &n);
  for (int i = 0; i < n; ++i) {
    std::string op = Indexed("pod.metadata.ownerReferences", i);
    const Struct* o = r.Item(owners, i, "pod.metadata.ownerReferences");
    if (o == nullptr) continue;
    p.owners.emplace_back(r.Str(o, "kind", op), r.Str(o, "name", op));
  }
  if (const Struct* labels = r.Obj(meta, "labels", "pod.metadata")) {
    p.pod_template_hash =
        r.Str(labels, "pod-template-hash", "pod.metadata.labels");
  }

  const Struct* spec = r.Obj(pod, "spec", "pod");
  if (const Struct* sel = r.Obj(spec, "nodeSelector", "pod.spec")) {
    for (const auto& [k, v] : sel->fields()) {
      if (static_cast<int>(p.node_selector.size()) >= kMaxFactListItems) break;
      p.node_selector.emplace_back(Text(k),
                                   r.Str(sel, k, "pod.spec.nodeSelector"));
    }
  }
  if (const Struct* aff = r.Obj(spec, "affinity", "pod.spec")) {
    p.has_affinity = aff->fields_size() > 0;
    p.has_node_affinity = r.Field(aff, "nodeAffinity") != nullptr;
  }
  const ListValue* tols =
      r.List(spec, "tolerations", "pod.spec", kMaxFactListItems, &n);
  for (int i = 0; i < n; ++i) {
    std::string tp = Indexed("pod.spec.tolerations", i);
    const Struct* t = r.Item(tols, i, "pod.spec.tolerations");
    if (t == nullptr) continue;
    std::string key = r.Str(t, "key", tp);
    std::string op = r.Str(t, "operator", tp);
    std::string value = r.Str(t, "value", tp);
    std::string effect = r.Str(t, "effect", tp);
    p.tolerations.push_back(absl::StrCat(key.empty() ? "*" : key,
                                         op == "Exists" ? "" : "=", value,
                                         effect.empty() ? "" : ":", effect));
  }
  const ListValue* vols =
      r.List(spec, "volumes", "pod.spec", kMaxFactListItems, &n);
  for (int i = 0; i < n; ++i) {
    std::string vp = Indexed("pod.spec.volumes", i);
    const Struct* v = r.Item(vols, i, "pod.spec.volumes");
    if (v == nullptr) continue;
    if (const Struct* pvc = r.Obj(v, "persistentVolumeClaim", vp)) {
      std::string claim =
          r.Str(pvc, "claimName", vp + ".persistentVolumeClaim");
      if (!claim.empty()) p.pvc_claims.push_back(claim);
    }
    if (const Struct* cm = r.Obj(v, "configMap", vp)) {
      ReadKeyRef(r, cm, vp + ".configMap", "ConfigMap", "volume",
                 &p.volume_refs);
    }
    if (const Struct* s = r.Obj(v, "secret", vp)) {
      ConfigRefFacts ref;
      ref.kind = "Secret";
      ref.via = "volume";
      ref.name = r.Str(s, "secretName", vp + ".secret");
      ref.optional = r.Bool(s, "optional", vp + ".secret");
      p.volume_refs.push_back(std::move(ref));
    }
  }
  const ListValue* pulls =
      r.List(spec, "imagePullSecrets", "pod.spec", kMaxFactListItems, &n);
  for (int i = 0; i < n; ++i) {
    const Struct* s = r.Item(pulls, i, "pod.spec.imagePullSecrets");
    std::string name =
        r.Str(s, "name", Indexed("pod.spec.imagePullSecrets", i));
    if (!name.empty()) p.image_pull_secrets.push_back(name);
  }

  const Struct* status = r.Obj(pod, "status", "pod");
  p.phase = r.Str(status, "phase", "pod.status");
  p.reason = r.Str(status, "reason", "pod.status");
  p.message = r.Str(status, "message", "pod.status");
  const ListValue* conds =
      r.List(status, "conditions", "pod.status", kMaxFactListItems, &n);
  for (int i = 0; i < n; ++i) {
    std::string cp = Indexed("pod.status.conditions", i);
    const Struct* c = r.Item(conds, i, "pod.status.conditions");
    if (c == nullptr) continue;
    p.conditions.push_back({r.Str(c, "type", cp), r.Str(c, "status", cp),
                            r.Str(c, "reason", cp), r.Str(c, "message", cp)});
  }
  ReadContainers(r, pod, /*init=*/true, f);
  ReadContainers(r, pod, /*init=*/false, f);
}

// "spec.containers{app}" -> "app".
std::string ContainerOfFieldPath(absl::string_view path) {
  size_t open = path.find('{');
  size_t close = path.rfind('}');
  if (open == absl::string_view::npos || close == absl::string_view::npos ||
      close <= open) {
    return "";
  }
  return Text(path.substr(open + 1, close - open - 1));
}

void ReadEvent(Reader& r, const Struct& e, int i, IncidentFacts* f) {
  std::string path = Indexed("pod_events", i);
  EventFacts ev;
  ev.source = kSourcePodEvents;
  ev.type = r.Str(&e, "type", path);
  ev.reason = r.Str(&e, "reason", path);
  ev.message = r.Str(&e, "message", path);
  std::optional<int64_t> count = r.Int(&e, "count", path);
  if (!count.has_value()) {
    if (const Struct* series = r.Obj(&e, "series", path)) {
      count = r.Int(series, "count", path + ".series");
    }
  }
  if (count.has_value()) {
    if (*count >= 1 && *count <= std::numeric_limits<int32_t>::max()) {
      ev.count = *count;
    } else {
      f->Ignore(absl::StrCat(path, ".count: out of range"));
    }
  }
  if (const Struct* obj = r.Obj(&e, "involvedObject", path)) {
    ev.container =
        ContainerOfFieldPath(r.Str(obj, "fieldPath", path + ".involvedObject"));
  }
  if (ev.reason.empty() && ev.message.empty()) return;
  f->events.push_back(std::move(ev));
}

ContainerFacts FromFlatStatus(const v1::ContainerStatus& s,
                              absl::string_view source) {
  ContainerFacts c;
  c.name = Text(s.name());
  c.image = Text(s.image());
  c.has_status = true;
  c.source = std::string(source);
  c.restart_count = std::max(0, s.restart_count());
  c.ready = s.ready();
  if (!s.waiting_reason().empty() || !s.waiting_message().empty()) {
    c.state.kind = "waiting";
    c.state.reason = Text(s.waiting_reason());
    c.state.message = Text(s.waiting_message());
  }
  if (!s.last_termination_reason().empty() || s.last_exit_code() != 0) {
    c.last_state.kind = "terminated";
    c.last_state.reason = Text(s.last_termination_reason());
    c.last_state.exit_code = s.last_exit_code();
  }
  return c;
}

EventFacts FromFlatEvent(const v1::PodEvent& e, absl::string_view source) {
  EventFacts ev;
  ev.type = Text(e.type());
  ev.reason = Text(e.reason());
  ev.message = Text(e.message());
  ev.count = std::max(1, e.count());
  ev.source = std::string(source);
  return ev;
}

}  // namespace

bool IncidentFacts::HasIncidentObservations() const {
  if (pod.present || !logs.empty()) return true;
  for (const ContainerFacts& c : containers) {
    if (c.source.rfind("executor:", 0) != 0) return true;
  }
  for (const EventFacts& e : events) {
    if (e.source.rfind("executor:", 0) != 0) return true;
  }
  return false;
}

const ContainerFacts* IncidentFacts::FindContainer(
    absl::string_view name) const {
  for (const ContainerFacts& c : containers) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

void IncidentFacts::Ignore(std::string what) {
  if (static_cast<int>(ignored.size()) < kMaxIgnored - 1) {
    ignored.push_back(ToValidUtf8Clipped(what, 256));
    return;
  }
  ++ignored_dropped;
  std::string last = absl::StrCat("... and ", ignored_dropped, " more");
  if (static_cast<int>(ignored.size()) < kMaxIgnored) {
    ignored.push_back(std::move(last));
  } else {
    ignored.back() = std::move(last);
  }
}

IncidentFacts ExtractFacts(const v1::Incident& in) {
  IncidentFacts f;
  Reader r(&f);
  f.error_type = Text(in.error_type());
  f.error_message = ToValidUtf8Clipped(in.error_message(), kMaxMessage);
  if (in.has_pod()) ReadPod(r, in.pod(), &f);
  int n = std::min(in.pod_events_size(), kMaxFactEvents);
  if (in.pod_events_size() > n) {
    f.Ignore(absl::StrCat("pod_events: ", in.pod_events_size(),
                          " events, only the first ", n, " read"));
  }
  for (int i = 0; i < n; ++i) ReadEvent(r, in.pod_events(i), i, &f);
  // Flat statuses fill what the pod object does not say; the pod wins.
  for (const v1::ContainerStatus& s : in.container_statuses()) {
    if (static_cast<int>(f.containers.size()) >= kMaxFactContainers) {
      f.Ignore("container_statuses: too many containers");
      break;
    }
    bool known = false;
    for (ContainerFacts& c : f.containers) {
      if (c.init || c.name != s.name()) continue;
      known = true;
      if (!c.has_status) {
        ContainerFacts flat = FromFlatStatus(s, kSourceStatuses);
        c.has_status = true;
        c.source = kSourceStatuses;
        c.state = flat.state;
        c.last_state = flat.last_state;
        c.restart_count = flat.restart_count;
        c.ready = flat.ready;
        if (c.image.empty()) c.image = flat.image;
      }
    }
    if (!known) f.containers.push_back(FromFlatStatus(s, kSourceStatuses));
  }
  for (const v1::PodEvent& e : in.events()) {
    if (static_cast<int>(f.events.size()) >= kMaxFactEvents) {
      f.Ignore("events: too many events");
      break;
    }
    f.events.push_back(FromFlatEvent(e, kSourceEvents));
  }
  if (!in.logs().empty()) {
    f.logs = ToValidUtf8Clipped(in.logs(), kMaxLogs);
    f.logs_source = kSourceLogs;
  }
  return f;
}

void MergeExecutorDiagnosis(IncidentFacts* f, const v1::Diagnosis& dx,
                            absl::string_view executor_name) {
  std::string source = absl::StrCat(
      "executor:", Text(executor_name.empty() ? "unknown" : executor_name));
  f->executor_source = source;
  // What only the executor can know (the incident has no field for it).
  if (f->last_healthy_image.empty()) {
    f->last_healthy_image = Text(dx.last_healthy_image());
  }
  if (f->available_pull_secrets.empty()) {
    for (const std::string& s : dx.available_pull_secrets()) {
      if (f->available_pull_secrets.size() >= kMaxFactListItems) break;
      f->available_pull_secrets.push_back(Text(s));
    }
  }
  // A pod object shows no rollout either way; only say yes when told so.
  if (!f->recent_rollout.has_value() && dx.recent_rollout()) {
    f->recent_rollout = true;
  }
  if (dx.memory_limit_bytes() > 0) {
    for (ContainerFacts& c : f->containers) {
      if (!c.resources.memory_limit_bytes.has_value()) {
        c.resources.memory_limit_bytes = dx.memory_limit_bytes();
        c.resources.memory_limit_source = source;
      }
    }
  }
  // Observations: only for a legacy caller that sent none of its own, so an
  // executor can never contradict what the incident shows.
  if (f->HasIncidentObservations()) return;
  for (const v1::ContainerStatus& s : dx.container_statuses()) {
    if (static_cast<int>(f->containers.size()) >= kMaxFactContainers) break;
    f->containers.push_back(FromFlatStatus(s, source));
  }
  for (const v1::PodEvent& e : dx.events()) {
    if (static_cast<int>(f->events.size()) >= kMaxFactEvents) break;
    f->events.push_back(FromFlatEvent(e, source));
  }
  if (!dx.logs().empty()) {
    f->logs = ToValidUtf8Clipped(dx.logs(), kMaxLogs);
    f->logs_source = source;
  }
}

std::optional<int64_t> ParseMemoryBytes(absl::string_view quantity) {
  std::optional<double> v = ParseQuantity(quantity);
  if (!v.has_value()) return std::nullopt;
  return ToInt64(*v);
}

std::optional<int64_t> ParseCpuMillis(absl::string_view quantity) {
  std::optional<double> v = ParseQuantity(quantity);
  if (!v.has_value()) return std::nullopt;
  return ToInt64(*v * 1000);
}

}  // namespace reflexion::core

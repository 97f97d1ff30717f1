#include "server/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "core/reflexion/utf8.h"
#include "server/config_text.h"
#include "server/policy_config.h"
#include "yaml-cpp/yaml.h"

namespace reflexion::server {
namespace {

// Keys of the original service's config.yaml that this build accepts
// without using them (so an existing file loads), reported at startup.
constexpr const char* kAcceptedUnused[] = {
    "service.debug",

    "workflow.checkpointing_enabled",
};

using config_text::Bad;
using config_text::KindOf;
using config_text::Quote;

// The key of a mapping entry as a string. `where` names the mapping
// ("config" or "config key service"). Only plain scalar keys are keys:
// YAML also allows null, sequence and map keys ("? :", "? [a]"), on which
// yaml-cpp's as<std::string>() throws.
absl::Status KeyOf(const YAML::Node& key, absl::string_view where,
                   std::string& out) {
  if (!key.IsScalar()) {
    const YAML::Mark mark = key.Mark();
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": the key at line ", mark.is_null() ? 0 : mark.line + 1,
        " must be a string, not ", KindOf(key)));
  }
  out = key.Scalar();
  return absl::OkStatus();
}

template <typename T>
absl::Status Read(const YAML::Node& node, absl::string_view key, T& out) {
  // Checked first for a clear message: converting a sequence or map (or a
  // recursive alias) to a scalar type fails with "bad conversion".
  if (!node.IsScalar()) {
    return Bad(key, absl::StrCat("must be a scalar, not ", KindOf(node)));
  }
  try {
    out = node.as<T>();
  } catch (const YAML::Exception& e) {
    return Bad(key, absl::StrCat("has the wrong type (", Quote(e.msg), ")"));
  }
  return absl::OkStatus();
}

absl::Status ReadInt(const YAML::Node& n, absl::string_view key, int lo, int hi,
                     int& out) {
  int v = 0;
  absl::Status s = Read(n, key, v);
  if (!s.ok()) return s;
  if (v < lo || v > hi) {
    return Bad(key, absl::StrCat("must be between ", lo, " and ", hi));
  }
  out = v;
  return absl::OkStatus();
}

absl::Status ReadDouble(const YAML::Node& n, absl::string_view key, double lo,
                        double hi, double& out) {
  double v = 0;
  absl::Status s = Read(n, key, v);
  if (!s.ok()) return s;
  if (!(v >= lo && v <= hi)) {
    return Bad(key, absl::StrCat("must be between ", lo, " and ", hi));
  }
  out = v;
  return absl::OkStatus();
}

// A duration key in seconds (fractions allowed), between lo and hi.
absl::Status ReadSeconds(const YAML::Node& n, absl::string_view key, double lo,
                         double hi, absl::Duration& out) {
  double seconds = 0;
  absl::Status s = ReadDouble(n, key, lo, hi, seconds);
  if (s.ok()) out = absl::Seconds(seconds);
  return s;
}

// A duration key in whole seconds, between lo and hi.
absl::Status ReadWholeSeconds(const YAML::Node& n, absl::string_view key,
                              int lo, int hi, absl::Duration& out) {
  int seconds = 0;
  absl::Status s = ReadInt(n, key, lo, hi, seconds);
  if (s.ok()) out = absl::Seconds(seconds);
  return s;
}

// A duration key: a number of seconds (fractions allowed) or a duration
// with units ("8760h", "90m", "1h30m"), between 0 and `hi`.
absl::Status ReadDuration(const YAML::Node& n, absl::string_view key,
                          absl::Duration hi, absl::Duration& out) {
  std::string text;
  absl::Status s = Read(n, key, text);
  if (!s.ok()) return s;
  absl::Duration d;
  double seconds = 0;
  if (absl::SimpleAtod(text, &seconds) && std::isfinite(seconds)) {
    d = absl::Seconds(seconds);
  } else if (!absl::ParseDuration(text, &d) || d == absl::InfiniteDuration()) {
    return Bad(key, absl::StrCat("'", Quote(text),
                                 "' is not a duration (seconds, or e.g. "
                                 "8760h, 90m, 1h30m)"));
  }
  if (d < absl::ZeroDuration() || d > hi) {
    return Bad(
        key, absl::StrCat("must be between 0 and ", absl::FormatDuration(hi)));
  }
  out = d;
  return absl::OkStatus();
}

// A list of Kubernetes namespace names (valid UTF-8, 1..253 bytes, no '/'),
// at most 1000 of them.
absl::Status ReadNamespaceNames(const YAML::Node& n, absl::string_view key,
                                std::vector<std::string>& out) {
  if (n.IsNull()) {
    out.clear();
    return absl::OkStatus();
  }
  if (!n.IsSequence()) return Bad(key, "must be a list of namespace names");
  if (n.size() > 1000) return Bad(key, "has more than 1000 names");
  std::vector<std::string> list;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string k = absl::StrCat(key, "[", i, "]");
    std::string v;
    absl::Status s = Read(n[i], k, v);
    if (!s.ok()) return s;
    if (v.empty() || v.size() > 253 || !core::IsValidUtf8(v) ||
        absl::StrContains(v, "/")) {
      return Bad(k, "must be a namespace name (1..253 bytes of UTF-8, no '/')");
    }
    list.push_back(std::move(v));
  }
  out = std::move(list);
  return absl::OkStatus();
}

bool IsHttpUrl(absl::string_view url) {
  return absl::StartsWith(url, "http://") || absl::StartsWith(url, "https://");
}

// A URL key: http:// or https://.
absl::Status ReadHttpUrl(const YAML::Node& n, absl::string_view key,
                         std::string& out) {
  absl::Status s = Read(n, key, out);
  if (s.ok() && !IsHttpUrl(out)) {
    return Bad(key, "must start with http:// or https://");
  }
  return s;
}

absl::Status ApplyKey(const std::string& key, const YAML::Node& v,
                      ServerConfig& c) {
  core::WorkflowConfig& w = c.workflow;
  if (absl::StartsWith(key, "policy.")) {
    return ApplyPolicyKey(key, v, c.policy, &c.policy_own_namespace_set);
  }
  if (key == "service.port") return ReadInt(v, key, 0, 65535, c.port);
  if (key == "service.host") return Read(v, key, c.host);
  if (key == "service.data_dir") return Read(v, key, c.data_dir);
  if (key == "service.insecure_listen") return Read(v, key, c.insecure_listen);
  if (key == "auth.tokens_file") return Read(v, key, c.auth_tokens_file);
  if (key == "auth.anonymous_health") {
    return Read(v, key, c.auth_anonymous_health);
  }
  if (key == "auth.reload_interval") {
    return ReadSeconds(v, key, 0.1, 3600, c.auth_reload_interval);
  }
  if (key == "tls.cert_file") return Read(v, key, c.tls_cert_file);
  if (key == "tls.key_file") return Read(v, key, c.tls_key_file);
  if (key == "tls.client_ca_file") return Read(v, key, c.tls_client_ca_file);
  if (key == "tls.reload_interval") {
    return ReadWholeSeconds(v, key, 1, 86400, c.tls_reload_interval);
  }
  if (key == "service.max_in_flight") {
    return ReadInt(v, key, 1, 1'000'000, c.max_in_flight);
  }
  if (key == "service.max_in_flight_per_stream") {
    return ReadInt(v, key, 1, 1'000'000, c.max_in_flight_per_stream);
  }
  if (key == "service.stream_buffer_bytes") {
    // Bytes, at least 64 KiB, at most 1 GiB.
    int bytes = 0;
    absl::Status s = ReadInt(v, key, 65536, 1 << 30, bytes);
    if (!s.ok()) return s;
    c.stream_buffer_bytes = bytes;
    return absl::OkStatus();
  }
  if (key == "service.watch_retained_workflows") {
    return ReadInt(v, key, 0, 1'000'000, c.watch_retained_workflows);
  }
  if (key == "service.worker_threads") {
    return ReadInt(v, key, 0, 256, c.worker_threads);
  }
  if (key == "service.shutdown_drain" || key == "service.shutdown_grace") {
    return ReadSeconds(
        v, key, 0, 3600,
        key == "service.shutdown_drain" ? c.shutdown_drain : c.shutdown_grace);
  }
  if (key == "executor.action_timeout" || key == "executor.report_interval") {
    return ReadSeconds(v, key, 0.01, 86400,
                       key == "executor.action_timeout" ? w.action_timeout
                                                        : w.report_interval);
  }
  if (key == "service.stalled_stream_timeout") {
    return ReadSeconds(v, key, 0, 86400, c.stalled_stream_timeout);
  }
  if (key == "reflexion.tier_c") {
    std::string policy;
    absl::Status st = Read(v, key, policy);
    if (!st.ok()) return st;
    if (policy != "escalate" && policy != "ask") {
      return Bad(key, "must be escalate or ask");
    }
    w.selector.ask_tier_c = policy == "ask";
    return absl::OkStatus();
  }
  if (key == "reflector.type") {
    std::string type;
    absl::Status s = Read(v, key, type);
    if (!s.ok()) return s;
    if (type != "auto" && type != "openai" && type != "heuristic") {
      return Bad(key, "must be auto, openai or heuristic");
    }
    c.reflector = type;
    return absl::OkStatus();
  }
  if (key == "openai.base_url") {
    std::string url;
    absl::Status s = ReadHttpUrl(v, key, url);
    if (!s.ok()) return s;
    c.openai.base_url = url;
    c.openai_base_url_set = true;
    return absl::OkStatus();
  }
  if (key == "openai.model") {
    absl::Status s = Read(v, key, c.openai.model);
    if (s.ok() && c.openai.model.empty()) return Bad(key, "must not be empty");
    return s;
  }
  if (key == "openai.temperature") {
    return ReadDouble(v, key, 0, 2, c.openai.temperature);
  }
  if (key == "openai.max_tokens") {
    return ReadInt(v, key, 16, 32768, c.openai.max_tokens);
  }
  if (key == "openai.timeout") {
    return ReadSeconds(v, key, 0.1, 600, c.openai.timeout);
  }
  if (key == "openai.api_key_file") return Read(v, key, c.openai_api_key_file);
  if (key == "openai.json_schema") return Read(v, key, c.openai.json_schema);
  if (key == "executor.type") {
    std::string type;
    absl::Status s = Read(v, key, type);
    if (!s.ok()) return s;
    if (type != "simulated" && type != "http") {
      return Bad(key, absl::StrCat("'", Quote(type),
                                   "' is not an executor: simulated or http"));
    }
    c.executor = type;
    return absl::OkStatus();
  }
  if (key == "upstream.breaker_failures") {
    return ReadInt(v, key, 1, 1000, c.breaker_failures);
  }
  if (key == "upstream.breaker_open_for") {
    return ReadSeconds(v, key, 0.01, 3600, c.breaker_open_for);
  }
  if (key == "executor.url") {
    std::string url;
    absl::Status s = ReadHttpUrl(v, key, url);
    if (!s.ok()) return s;
    c.executor_url = url;
    return absl::OkStatus();
  }
  if (key == "executor.request_timeout") {
    return ReadSeconds(v, key, 0.1, 600, c.executor_request_timeout);
  }
  if (key == "executor.poll_interval") {
    return ReadSeconds(v, key, 0.1, 60, c.executor_poll_interval);
  }
  if (key == "executor.max_attempts") {
    return ReadInt(v, key, 1, 10, c.executor_max_attempts);
  }
  if (key == "simulator.seed") return Read(v, key, c.simulator_seed);
  if (key == "simulator.scenarios") return Read(v, key, c.simulator_scenarios);
  if (key == "simulator.latency_ms") {
    int ms = 0;
    absl::Status s = ReadInt(v, key, 0, 60'000, ms);
    if (!s.ok()) return s;
    c.simulator_latency = absl::Milliseconds(ms);
    return absl::OkStatus();
  }
  if (key == "simulator.journal") return Read(v, key, c.simulator_journal);
  if (key == "reflexion.reflection_depth") {
    std::string depth;
    absl::Status s = Read(v, key, depth);
    if (!s.ok()) return s;
    if (!core::ParseDepth(depth, &w.depth)) {
      return Bad(key, "must be shallow, medium or deep");
    }
    return absl::OkStatus();
  }
  if (key == "reflexion.strategy_confidence_threshold") {
    return ReadDouble(v, key, 0, 1, w.selector.confidence_threshold);
  }
  if (key == "reflexion.below_threshold") {
    std::string policy;
    absl::Status s = Read(v, key, policy);
    if (!s.ok()) return s;
    if (policy != "explore" && policy != "escalate" && policy != "ask") {
      return Bad(key, "must be explore, escalate or ask");
    }
    w.selector.escalate_below_threshold = policy == "escalate";
    w.selector.ask_below_threshold = policy == "ask";
    return absl::OkStatus();
  }
  if (key == "reflexion.min_candidate_confidence") {
    return ReadDouble(v, key, 0, 1, w.selector.min_candidate_confidence);
  }
  if (key == "reflexion.cost_failed_attempt") {
    return ReadDouble(v, key, 1e-3, 1e6, w.selector.cost_failed_attempt);
  }
  if (key == "reflexion.cost_escalation") {
    return ReadDouble(v, key, 1e-3, 1e6, w.selector.cost_escalation);
  }
  if (key == "reflexion.min_retry_trials") {
    return ReadInt(v, key, 0, 1000000, w.selector.min_retry_trials);
  }
  if (key == "reflexion.posterior_half_life") {
    return ReadDuration(v, key, absl::Hours(100 * 8760),
                        w.selector.posterior_half_life);
  }
  if (key == "reflexion.critical_namespaces") {
    return ReadNamespaceNames(v, key, w.selector.critical_namespaces);
  }
  if (key == "reflexion.critical_margin") {
    return ReadDouble(v, key, 0, 1, w.selector.critical_margin);
  }
  if (key == "reflexion.max_reflection_cycles") {
    return ReadInt(v, key, 0, 20, w.max_reflection_cycles);
  }
  if (key == "reflexion.meta_reflection_threshold") {
    return ReadDouble(v, key, 0, 1, w.meta_quality_threshold);
  }
  if (key == "reflexion.seed") return Read(v, key, w.seed);
  if (key == "reflexion.min_trials_for_change") {
    return ReadInt(v, key, 1, 1000, w.min_trials_for_change);
  }
  if (key == "reflexion.max_mean_for_change") {
    return ReadDouble(v, key, 0, 1, w.max_mean_for_change);
  }
  if (key == "reflexion.rollback_min_trials") {
    return ReadInt(v, key, 0, 100000, w.rollback_min_trials);
  }
  if (key == "memory.max_episodes") {
    return ReadInt(v, key, 0, 100000000, c.memory_max_episodes);
  }
  if (key == "memory.max_age") {
    return ReadDuration(v, key, absl::Hours(100 * 8760), c.memory_max_age);
  }
  if (key == "workflow.max_retry_count") {
    return ReadInt(v, key, 1, 20, w.max_attempts);
  }
  if (key == "workflow.observation_window") {
    return ReadWholeSeconds(v, key, 1, 86400, w.observation_window);
  }
  if (key == "workflow.checkpointing_enabled") {
    return Read(v, key, c.checkpointing);
  }
  if (key == "workflow.durability") {
    std::string mode;
    absl::Status s = Read(v, key, mode);
    if (!s.ok()) return s;
    if (mode == "sync") {
      w.durability = graph::Durability::kSync;
    } else if (mode == "async") {
      w.durability = graph::Durability::kAsync;
    } else if (mode == "exit") {
      w.durability = graph::Durability::kExit;
    } else {
      return Bad(key, "must be sync, async or exit");
    }
    return absl::OkStatus();
  }
  if (key == "workflow.checkpoint_keep_last") {
    return ReadInt(v, key, 0, 100000, w.keep_last_checkpoints);
  }
  if (key == "workflow.finished_ttl") {
    return ReadWholeSeconds(v, key, 0, 365 * 86400, c.finished_ttl);
  }
  if (key == "workflow.retention_interval") {
    return ReadWholeSeconds(v, key, 1, 86400, c.retention_interval);
  }
  if (key == "audit.max_age") {
    return ReadDuration(v, key, absl::Hours(100 * 8760), c.audit_max_age);
  }
  if (key == "workflow.execution_timeout") {
    return ReadWholeSeconds(v, key, 1, 86400, w.node_timeout);
  }
  if (key == "workflow.escalation_waits") {
    return Read(v, key, w.escalation_waits);
  }
  if (key == "workflow.node_max_attempts") {
    return ReadInt(v, key, 1, 10, w.node_max_attempts);
  }
  if (key == "workflow.recursion_limit") {
    return ReadInt(v, key, 10, 10'000, w.recursion_limit);
  }
  for (const char* accepted : kAcceptedUnused) {
    if (key == accepted) {
      c.notes.push_back(absl::StrCat(
          "config key ", key, " is accepted but not used by this build"));
      return absl::OkStatus();
    }
  }
  return Bad(key, "is not a known key");
}

// ApplyYaml on a parsed document. Every YAML shape other than a map of
// sections, each a map of scalar keys to scalar values, is an error; so is
// a key given twice (yaml-cpp keeps both entries).
absl::Status ApplyDocument(const YAML::Node& root, ServerConfig& config) {
  if (root.IsNull()) return absl::OkStatus();  // empty file
  if (!root.IsMap()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config must be a YAML mapping of sections, not ", KindOf(root)));
  }
  absl::flat_hash_set<std::string> sections;
  for (const auto& section : root) {
    std::string name;
    absl::Status s = KeyOf(section.first, "config", name);
    if (!s.ok()) return s;
    if (!sections.insert(name).second) return Bad(name, "is given twice");
    if (!section.second.IsMap()) {
      return Bad(name, absl::StrCat("must be a mapping of keys, not ",
                                    KindOf(section.second)));
    }
    absl::flat_hash_set<std::string> keys;
    const std::string where = absl::StrCat("config key ", Quote(name));
    for (const auto& entry : section.second) {
      std::string leaf;
      s = KeyOf(entry.first, where, leaf);
      if (!s.ok()) return s;
      std::string key = absl::StrCat(name, ".", leaf);
      if (!keys.insert(leaf).second) return Bad(key, "is given twice");
      s = ApplyKey(key, entry.second, config);
      if (!s.ok()) return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyYaml(const std::string& yaml_text, ServerConfig& config) {
  // yaml-cpp reports errors by throwing, in Load and in node accessors; no
  // exception may leave this function.
  try {
    return ApplyDocument(YAML::Load(yaml_text), config);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("config is not valid YAML: ", Quote(e.what())));
  }
}

absl::Status ApplyYamlFile(const std::string& path, ServerConfig& config) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  absl::Status s = ApplyYaml(buf.str(), config);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status ApplyEnvironment(
    const std::function<const char*(const char*)>& getenv,
    ServerConfig& config) {
  if (const char* depth = getenv("REFLECTION_DEPTH"); depth && *depth) {
    if (!core::ParseDepth(depth, &config.workflow.depth)) {
      return absl::InvalidArgumentError(
          "REFLECTION_DEPTH must be shallow, medium or deep");
    }
  }
  if (const char* v = getenv("OPENAI_API_KEY"); v && *v) {
    config.openai.api_key = v;
  }
  if (const char* v = getenv("OPENAI_BASE_URL"); v && *v) {
    absl::string_view url = v;
    if (!IsHttpUrl(url)) {
      return absl::InvalidArgumentError(
          "OPENAI_BASE_URL must start with http:// or https://");
    }
    config.openai.base_url = std::string(url);
    config.openai_base_url_set = true;
  }
  if (const char* v = getenv("POD_NAMESPACE");
      v && *v && !config.policy_own_namespace_set) {
    if (!core::IsValidUtf8(v) || absl::StrContains(v, "/")) {
      return absl::InvalidArgumentError(
          "POD_NAMESPACE must be a namespace name (UTF-8, no '/')");
    }
    config.policy.own_namespace = v;
  }
  if (const char* v = getenv("GO_SERVICE_URL"); v && *v) {
    absl::string_view url = v;
    if (!IsHttpUrl(url)) {
      return absl::InvalidArgumentError(
          "GO_SERVICE_URL must start with http:// or https://");
    }
    config.executor = "http";
    config.executor_url = std::string(url);
  }
  return absl::OkStatus();
}

}  // namespace reflexion::server

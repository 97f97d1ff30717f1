// reflexionctl: the command-line client of reflexion-server.
//
//   reflexionctl [--server HOST:PORT] [-o text|json] COMMAND [flags]
//
// Commands: process, strategies, episodes, metrics, audit, health, ... (see
// kUsage).

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "core/reflexion/audit_chain.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/workflow.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

ABSL_FLAG(std::string, server, "127.0.0.1:50051", "Server address HOST:PORT");
ABSL_FLAG(std::string, o, "text", "Output format: text or json");
ABSL_FLAG(std::string, token, "",
          "Bearer token sent as metadata authorization (default: env "
          "REFLEXION_TOKEN)");
ABSL_FLAG(std::string, tls_ca, "",
          "TLS: the CA (PEM file) the server's certificate chains to");
ABSL_FLAG(std::string, tls_cert, "",
          "mTLS: this client's certificate (PEM file; with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "mTLS: this client's private key");
ABSL_FLAG(std::string, tls_server_name, "",
          "TLS: the name to verify the server's certificate against when it "
          "differs from the --server host");
ABSL_FLAG(std::string, pod, "", "process: pod name");
ABSL_FLAG(std::string, namespace, "",
          "process, start: namespace (default: default); diagnose: default: "
          "the pod object's; audit, patterns: namespace filter");
ABSL_FLAG(std::string, error_type, "",
          "process, reflect: error type (e.g. ImagePullBackOff); "
          "strategies/episodes: filter");
ABSL_FLAG(std::string, message, "", "process: error message");
ABSL_FLAG(std::string, logs_file, "", "process: file with the log tail");
ABSL_FLAG(std::string, request_id, "", "process: correlation id");
ABSL_FLAG(bool, quiet, false, "process: print only the result");
ABSL_FLAG(bool, dry_run, false,
          "process, start: plan and report every action, execute nothing");
ABSL_FLAG(std::string, signature, "",
          "strategies/episodes: signature filter; clear-memory: only this "
          "signature; patterns: a signature or an error family");
ABSL_FLAG(std::string, workflow, "", "episodes, audit: workflow id filter");
ABSL_FLAG(std::string, pod_filter, "", "episodes: pod name filter");
ABSL_FLAG(std::string, namespace_filter, "", "episodes: namespace filter");
ABSL_FLAG(int, limit, 20,
          "episodes: page size (1..1000); audit: entries to print (1..1000); "
          "patterns: items per section (1..1000, default 50)");
ABSL_FLAG(std::string, page_token, "", "episodes: page token");
ABSL_FLAG(int, timeout, 600, "Deadline of the call in seconds");
ABSL_FLAG(std::string, decision, "",
          "resume: retry (with --strategy NAME) | resolved | give_up");
ABSL_FLAG(std::string, strategy, "",
          "resume, fork: the strategy a human approves; reflect: the "
          "strategy tried");
ABSL_FLAG(int64_t, step, -1, "fork: the checkpoint step to fork from");
ABSL_FLAG(std::string, reason, "",
          "undo, clear-breaker, rollback: why (kept in the audit log)");
ABSL_FLAG(int, to, 0, "rollback: the version to make current again");
ABSL_FLAG(bool, no_wait, false,
          "undo: print the undo's workflow id and return without following "
          "it");
ABSL_FLAG(std::string, note, "",
          "resume, approve, deny: a note kept with the decision");
ABSL_FLAG(std::string, etag, "",
          "resume, approve, deny: the wait the decision answers (GetWorkflow's "
          "etag); "
          "default: the wait `status` shows now");
ABSL_FLAG(std::string, f, "",
          "diagnose: a v1.Pod as JSON (kubectl get pod P -o json); - reads "
          "standard input");
ABSL_FLAG(std::string, events, "",
          "diagnose: v1.Event objects as JSON (kubectl get events -o json, a "
          "list, or one event)");
ABSL_FLAG(bool, success, false, "reflect: whether the attempt resolved it");
ABSL_FLAG(double, resolution_time, 0,
          "reflect: seconds to recovery of a successful attempt");
ABSL_FLAG(std::string, depth, "",
          "reflect: shallow | medium | deep (default: the server's)");
ABSL_FLAG(uint64_t, after, 0,
          "audit: only entries after this seq (a previous listing's last)");
ABSL_FLAG(std::string, cluster, "", "audit, patterns: cluster filter");
ABSL_FLAG(std::string, principal, "", "audit: principal filter");
ABSL_FLAG(std::string, kind, "",
          "audit: kind filter: action, outcome, policy, decision, cancel, "
          "fork, breaker_tripped, breaker_cleared, admin");
ABSL_FLAG(bool, verify, false,
          "audit: fetch the whole log and verify its hash chain here");
ABSL_FLAG(int, min_count, 5,
          "patterns: the least count of a correlation pair and of a burst");
ABSL_FLAG(absl::Duration, window, absl::Minutes(10),
          "patterns: the burst window (e.g. 10m, 1h)");
ABSL_FLAG(absl::Duration, lookback, absl::ZeroDuration(),
          "patterns: only the last DURATION (e.g. 24h; 0 = all stored)");
ABSL_FLAG(std::string, by, "family",
          "patterns: correlate errors by family or signature");
ABSL_FLAG(uint64_t, from, 0,
          "watch: first sequence number to show (re-attach after the last "
          "one seen)");

namespace {

using reflexion::v1::ReflexionService;

constexpr char kUsage[] =
    "reflexionctl [--server HOST:PORT] [-o text|json] [--token T]\n"
    "             [--tls_ca CA.pem [--tls_cert C.pem --tls_key K.pem]]\n"
    "             [--tls_server_name NAME] COMMAND [flags]\n"
    "(the token defaults to env REFLEXION_TOKEN)\n\n"
    "Commands:\n"
    "  process     --pod P [--namespace N] --error_type T [--message M]\n"
    "              [--logs_file F] [--request_id R] [--quiet] [--dry_run]\n"
    "              Resolve one incident, streaming every node event live.\n"
    "  diagnose    -f POD.json|- [--events EVENTS.json] [--pod P]\n"
    "              [--namespace N] [--error_type T] [--logs_file F]\n"
    "              Analysis only: signature, facts and their sources,\n"
    "              candidate strategies, what would run first. Nothing runs.\n"
    "  strategies  [--error_type T] [--signature S]\n"
    "              Strategies with their learned posteriors.\n"
    "  episodes    [--limit N] [--error_type T] [--signature S] [--workflow "
    "W]\n"
    "              [--pod_filter P] [--namespace_filter N] [--page_token T]\n"
    "              Episodic memory, newest first.\n"
    "  metrics     Learning and system metrics.\n"
    "  start       --pod P [--namespace N] --error_type T [...]: start "
    "without\n"
    "              waiting; prints the workflow id.\n"
    "  status ID   Phase, current node, progress; the result once done.\n"
    "  watch ID    Stream a workflow's events live, then its result\n"
    "              ([--from N] re-attaches after sequence N-1).\n"
    "  resume ID   --decision retry --strategy NAME | resolved [--strategy\n"
    "              NAME: the one you applied] | give_up\n"
    "              [--note TEXT] [--etag E]: the human decision for a waiting\n"
    "              workflow (for the wait it is in now, or the one E names).\n"
    "  approve ID  [--note TEXT] [--etag E]: approve the action a workflow\n"
    "              waiting in `approval` asks for; it runs at once.\n"
    "  deny ID     [--note TEXT] [--etag E]: deny it; that strategy is not\n"
    "              proposed again for the incident.\n"
    "  cancel ID   Cancel a running workflow.\n"
    "  history ID  The workflow's checkpoints, newest first ([--limit N]).\n"
    "  history STRATEGY  When the argument is a catalog strategy name: its\n"
    "              versions, oldest first (parent, author, reason, time,\n"
    "              parameters, trials and successes of each version).\n"
    "  rollback STRATEGY --to N [--reason TEXT]\n"
    "              Make version N's parameters current again (a new "
    "version).\n"
    "  clear-memory [--signature S]\n"
    "              Remove episodes and posteriors (of S, or all); admin.\n"
    "  fork ID     --step N [--strategy NAME]: a new workflow from checkpoint\n"
    "              N of ID (time travel), optionally trying NAME next.\n"
    "  reflect     --error_type T [--success] [--resolution_time S]\n"
    "              [--strategy NAME] [--depth D] [--message M] [--logs_file "
    "F]\n"
    "              Run only the active reflector on a synthetic attempt (the\n"
    "              message and log lines are its evidence); nothing is "
    "stored.\n"
    "  undo ACTION_ID [--reason TEXT] [--no_wait]\n"
    "              Apply the inverse of an action the service ran (its id "
    "from\n"
    "              the events or the audit log) and follow it to its result.\n"
    "  breakers    The open blast-radius breakers.\n"
    "  patterns    [--signature S] [--namespace N] [--cluster C]\n"
    "              [--min_count 5] [--window 10m] [--lookback D] [--limit 50]\n"
    "              [--by family|signature]: what memory shows across\n"
    "              incidents: error-namespace correlations (lift), bursts,\n"
    "              strategy effectiveness with 90% credible intervals,\n"
    "              anomalies (slow resolutions, strategy drops).\n"
    "  shadow      [--cluster C] [--namespace NS]: shadow mode's would-be\n"
    "              actions next to what a human did afterwards (a resume\n"
    "              --decision resolved --strategy NAME), and the agreement.\n"
    "  clear-breaker SCOPE [--reason TEXT]\n"
    "              Clear an open breaker: automated actions resume there.\n"
    "  audit       [--after N] [--limit N] [--cluster C] [--namespace NS]\n"
    "              [--workflow ID] [--principal P] [--kind K]: the audit log,\n"
    "              oldest first, one line per entry (K: action, outcome,\n"
    "              policy, decision, cancel, fork, breaker_tripped,\n"
    "              breaker_cleared, admin).\n"
    "  audit --verify  Fetch every entry and verify the hash chain here (not\n"
    "              trusting the server): exit 0 when intact, 3 naming the\n"
    "              first broken link.\n"
    "  health      Exit 0 when the service is SERVING (for health checks).\n"
    "  graph       Print the reflexion workflow graph as Mermaid (offline).\n";

bool Json() { return absl::GetFlag(FLAGS_o) == "json"; }

std::string ToJson(const google::protobuf::Message& m, bool pretty) {
  google::protobuf::util::JsonPrintOptions opts;
  opts.preserve_proto_field_names = true;
  opts.always_print_primitive_fields = true;
  opts.add_whitespace = pretty;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, opts);
  if (!pretty) return out;
  return out;
}

int Error(const absl::Status& s) {
  std::cerr << "reflexionctl: " << absl::StatusCodeToString(s.code()) << ": "
            << s.message() << "\n";
  return 1;
}

double Seconds(const google::protobuf::Duration& d) {
  return d.seconds() + d.nanos() / 1e9;
}

std::string FormatDuration(const google::protobuf::Duration& d) {
  double s = Seconds(d);
  if (s < 1e-3) return absl::StrFormat("%6.0fus", s * 1e6);
  if (s < 1) return absl::StrFormat("%6.1fms", s * 1e3);
  return absl::StrFormat("%6.2fs ", s);
}

const char* StatusName(reflexion::v1::WorkflowStatus s) {
  switch (s) {
    case reflexion::v1::WORKFLOW_STATUS_RESOLVED:
      return "RESOLVED";
    case reflexion::v1::WORKFLOW_STATUS_ESCALATED:
      return "ESCALATED";
    case reflexion::v1::WORKFLOW_STATUS_FAILED:
      return "FAILED";
    case reflexion::v1::WORKFLOW_STATUS_WAITING:
      return "WAITING";
    default:
      return "UNKNOWN";
  }
}

// One line per completed or failed node: id, sequence, node, duration,
// summary.
void PrintEvent(const reflexion::v1::WorkflowEvent& e) {
  if (e.phase() == reflexion::v1::NODE_PHASE_STARTED) return;
  std::printf("%s #%-3llu %-17s %s %s%s\n", e.workflow_id().c_str(),
              static_cast<unsigned long long>(e.sequence()), e.node().c_str(),
              FormatDuration(e.duration()).c_str(),
              e.phase() == reflexion::v1::NODE_PHASE_FAILED     ? "FAILED "
              : e.phase() == reflexion::v1::NODE_PHASE_RETRYING ? "RETRY "
                                                                : "",
              e.summary().c_str());
}

void PrintResult(const reflexion::v1::IncidentResult& r) {
  std::printf("result %s: %s %s/%s (%s) after %d attempt(s), %.1fs\n",
              r.workflow_id().c_str(), StatusName(r.status()),
              r.namespace_().c_str(), r.pod_name().c_str(),
              r.signature().c_str(), r.attempts(), r.resolution_time());
  if (!r.final_strategy().type().empty()) {
    std::printf("  final_strategy: %s v%d (confidence %.2f, %s)\n",
                r.final_strategy().type().c_str(), r.final_strategy().version(),
                r.final_strategy().confidence(),
                r.final_strategy().selection_reason().c_str());
  }
  const auto& s = r.reflexion_summary();
  std::printf(
      "  reflexion_summary: %d reflections, %d strategies learned, "
      "self-awareness %.2f, learning velocity %+.3f\n",
      s.reflections_performed(), s.strategies_learned(),
      s.self_awareness_level(), s.learning_velocity());
  if (r.requires_human_intervention()) {
    std::printf("  requires_human_intervention: %s\n",
                r.status() == reflexion::v1::WORKFLOW_STATUS_FAILED
                    ? r.error().c_str()
                    : r.escalation_reason().c_str());
  }
}

// --namespace, or "default".
std::string NamespaceOrDefault() {
  std::string ns = absl::GetFlag(FLAGS_namespace);
  return ns.empty() ? "default" : ns;
}

int Process(ReflexionService::Stub& stub) {
  reflexion::v1::Incident in;
  in.set_pod_name(absl::GetFlag(FLAGS_pod));
  in.set_namespace_(NamespaceOrDefault());
  in.set_error_type(absl::GetFlag(FLAGS_error_type));
  in.set_error_message(absl::GetFlag(FLAGS_message));
  in.set_request_id(absl::GetFlag(FLAGS_request_id));
  in.set_dry_run(absl::GetFlag(FLAGS_dry_run));
  if (std::string path = absl::GetFlag(FLAGS_logs_file); !path.empty()) {
    std::ifstream f(path);
    if (!f) return Error(absl::NotFoundError("cannot read " + path));
    std::stringstream buf;
    buf << f.rdbuf();
    in.set_logs(buf.str());
  }
  const bool quiet = absl::GetFlag(FLAGS_quiet);
  int exit_code = 0;
  bool got_result = false;
  bool handed_off = false;
  absl::Status s = reflexion::client::ResolveAll(
      stub, {in},
      [&](const reflexion::v1::ResolveResponse& m) {
        if (Json()) {
          if (!quiet || m.has_result() || m.has_rejected() ||
              m.has_handed_off()) {
            std::printf("%s\n", ToJson(m, false).c_str());
          }
        } else if (m.has_event()) {
          if (!quiet) PrintEvent(m.event());
        } else if (m.has_result()) {
          PrintResult(m.result());
        } else if (m.has_rejected()) {
          std::fprintf(stderr, "rejected: %s\n",
                       m.rejected().message().c_str());
        } else if (m.has_accepted()) {
          if (!quiet) {
            std::printf("accepted as %s\n", m.accepted().workflow_id().c_str());
          }
        } else if (m.has_handed_off()) {
          std::printf(
              "handed off: %s continues on the server (reflexionctl watch %s "
              "--from %llu): %s\n",
              m.handed_off().workflow_id().c_str(),
              m.handed_off().workflow_id().c_str(),
              static_cast<unsigned long long>(m.handed_off().next_sequence()),
              m.handed_off().message().c_str());
        }
        std::fflush(stdout);
        if (m.has_result()) {
          got_result = true;
          if (m.result().status() == reflexion::v1::WORKFLOW_STATUS_FAILED) {
            exit_code = 1;
          }
        }
        if (m.has_rejected()) exit_code = 2;
        if (m.has_handed_off()) handed_off = true;
      },
      absl::GetFlag(FLAGS_timeout));
  // Handed off at a server shutdown: it continues there (exit 0, as WAITING).
  if (handed_off && !got_result && exit_code == 0) return 0;
  if (!s.ok()) return Error(s);
  if (!got_result && exit_code == 0) exit_code = 1;
  return exit_code;
}

// Reads a whole file, or standard input for "-".
absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::stringstream buf;
  if (path == "-") {
    buf << std::cin.rdbuf();
  } else {
    std::ifstream f(path);
    if (!f) return absl::NotFoundError("cannot read " + path);
    buf << f.rdbuf();
  }
  return buf.str();
}

// JSON text into a google.protobuf.Value (any JSON).
absl::StatusOr<google::protobuf::Value> ParseJson(const std::string& text,
                                                  const std::string& what) {
  google::protobuf::Value v;
  auto s = google::protobuf::util::JsonStringToMessage(text, &v);
  if (!s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": not JSON: ", s.message().as_string()));
  }
  return v;
}

int Diagnose(ReflexionService::Stub& stub) {
  reflexion::v1::DiagnoseIncidentRequest req;
  if (std::string path = absl::GetFlag(FLAGS_f); !path.empty()) {
    absl::StatusOr<std::string> text = ReadAll(path);
    if (!text.ok()) return Error(text.status());
    absl::StatusOr<google::protobuf::Value> pod = ParseJson(*text, "-f");
    if (!pod.ok()) return Error(pod.status());
    if (!pod->has_struct_value()) {
      return Error(absl::InvalidArgumentError("-f: expected a v1.Pod object"));
    }
    *req.mutable_pod() = pod->struct_value();
  }
  if (std::string path = absl::GetFlag(FLAGS_events); !path.empty()) {
    absl::StatusOr<std::string> text = ReadAll(path);
    if (!text.ok()) return Error(text.status());
    absl::StatusOr<google::protobuf::Value> v = ParseJson(*text, "--events");
    if (!v.ok()) return Error(v.status());
    // An EventList ({"items": [...]}), a list, or one event.
    const google::protobuf::ListValue* list = nullptr;
    if (v->has_list_value()) list = &v->list_value();
    if (v->has_struct_value()) {
      auto it = v->struct_value().fields().find("items");
      if (it != v->struct_value().fields().end() &&
          it->second.has_list_value()) {
        list = &it->second.list_value();
      } else {
        *req.add_pod_events() = v->struct_value();
      }
    }
    if (list != nullptr) {
      for (const auto& e : list->values()) {
        if (e.has_struct_value()) *req.add_pod_events() = e.struct_value();
      }
    }
  }
  // Empty fields are read from the pod object by the server.
  req.set_pod_name(absl::GetFlag(FLAGS_pod));
  req.set_namespace_(req.has_pod() ? absl::GetFlag(FLAGS_namespace)
                                   : NamespaceOrDefault());
  req.set_error_type(absl::GetFlag(FLAGS_error_type));
  req.set_error_message(absl::GetFlag(FLAGS_message));
  if (std::string path = absl::GetFlag(FLAGS_logs_file); !path.empty()) {
    absl::StatusOr<std::string> logs = ReadAll(path);
    if (!logs.ok()) return Error(logs.status());
    req.set_logs(*logs);
  }
  reflexion::v1::DiagnoseIncidentResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.DiagnoseIncident(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  const reflexion::v1::Analysis& a = resp.analysis();
  std::printf("pod        %s/%s (%s)\n", resp.incident().namespace_().c_str(),
              resp.incident().pod_name().c_str(),
              resp.incident().error_type().c_str());
  std::printf("signature  %s%s\n", a.signature().c_str(),
              a.container().empty()
                  ? ""
                  : absl::StrCat("  (container ", a.container(), ")").c_str());
  if (a.facts_size() > 0) {
    std::printf("facts\n");
    for (const auto& f : a.facts()) {
      std::printf("  - %s  [%s]\n", f.text().c_str(), f.source().c_str());
    }
  } else {
    for (const auto& e : a.evidence()) std::printf("  - %s\n", e.c_str());
  }
  for (const auto& i : a.ignored()) std::printf("  ignored: %s\n", i.c_str());
  std::printf("candidates\n");
  for (const auto& c : resp.candidates()) {
    std::printf("  %-24s v%-2d tier %s  mean %4.0f%%  trials %-4lld %s\n",
                c.strategy().c_str(), c.version(),
                reflexion::v1::SafetyTier_Name(c.tier()).c_str() + 12,
                100 * c.mean(), static_cast<long long>(c.trials()),
                c.excluded_reason().c_str());
  }
  const reflexion::v1::FirstStep& first = resp.first_step();
  std::printf("first      %s %s: %s\n",
              first.kind() == reflexion::v1::FirstStep::KIND_EXECUTE
                  ? "run"
                  : "escalate",
              first.strategy().c_str(), first.reason().c_str());
  return 0;
}

int Strategies(ReflexionService::Stub& stub) {
  reflexion::v1::ListStrategiesRequest req;
  req.set_error_type(absl::GetFlag(FLAGS_error_type));
  req.set_signature(absl::GetFlag(FLAGS_signature));
  reflexion::v1::ListStrategiesResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ListStrategies(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  for (const auto& v : resp.strategies()) {
    const auto& st = v.strategy();
    std::printf("%-24s v%-2d tier %s  %s\n", st.name().c_str(), st.version(),
                st.tier() == reflexion::v1::SAFETY_TIER_A   ? "A"
                : st.tier() == reflexion::v1::SAFETY_TIER_B ? "B"
                                                            : "C",
                st.description().c_str());
    if (st.version() > 1) {
      std::printf("    latest change by %s: %s\n", st.author().c_str(),
                  st.reason().c_str());
    }
    for (const auto& stat : v.stats()) {
      std::printf("    %-44s %5.1f%% success belief  %lld/%lld succeeded\n",
                  stat.signature().c_str(), 100 * stat.mean(),
                  static_cast<long long>(stat.successes()),
                  static_cast<long long>(stat.trials()));
    }
  }
  return 0;
}

int Episodes(ReflexionService::Stub& stub) {
  reflexion::v1::ListEpisodesRequest req;
  req.set_page_size(absl::GetFlag(FLAGS_limit));
  req.set_page_token(absl::GetFlag(FLAGS_page_token));
  req.set_error_type(absl::GetFlag(FLAGS_error_type));
  req.set_signature(absl::GetFlag(FLAGS_signature));
  req.set_workflow_id(absl::GetFlag(FLAGS_workflow));
  req.set_pod_name(absl::GetFlag(FLAGS_pod_filter));
  req.set_namespace_(absl::GetFlag(FLAGS_namespace_filter));
  reflexion::v1::ListEpisodesResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ListEpisodes(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  for (const auto& e : resp.episodes()) {
    std::printf("%s  attempt %d  %-7s %-44s %s v%d (%.2f, %s)\n",
                e.workflow_id().c_str(), e.attempt(),
                e.success() ? "success" : "failure", e.signature().c_str(),
                e.strategy().c_str(), e.strategy_version(), e.confidence(),
                e.selection_reason().c_str());
  }
  if (!resp.next_page_token().empty()) {
    std::printf("next page: --page_token %s\n", resp.next_page_token().c_str());
  }
  return 0;
}

int Reflect(ReflexionService::Stub& stub) {
  reflexion::v1::SimulateReflectionRequest req;
  req.set_error_type(absl::GetFlag(FLAGS_error_type));
  req.set_success(absl::GetFlag(FLAGS_success));
  req.set_resolution_time_s(absl::GetFlag(FLAGS_resolution_time));
  req.set_strategy(absl::GetFlag(FLAGS_strategy));
  req.set_depth(absl::GetFlag(FLAGS_depth));
  if (std::string m = absl::GetFlag(FLAGS_message); !m.empty()) {
    req.add_evidence(m);
  }
  if (std::string path = absl::GetFlag(FLAGS_logs_file); !path.empty()) {
    absl::StatusOr<std::string> logs = ReadAll(path);
    if (!logs.ok()) return Error(logs.status());
    for (absl::string_view line : absl::StrSplit(*logs, '\n')) {
      if (!line.empty()) req.add_evidence(std::string(line));
    }
  }
  reflexion::v1::SimulateReflectionResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_timeout)));
  absl::Status s =
      reflexion::client::FromGrpc(stub.SimulateReflection(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  const reflexion::v1::Reflection& r = resp.reflection();
  std::printf("reflector %s, depth %s, quality %.2f\n", r.reflector().c_str(),
              r.depth().c_str(), r.quality());
  if (!r.fallback_reason().empty()) {
    std::printf("fallback: %s\n", r.fallback_reason().c_str());
  }
  std::printf("\n%s\n", r.text().c_str());
  for (const auto& l : r.lessons()) std::printf("lesson: %s\n", l.c_str());
  for (const auto& c : r.proposed_changes()) {
    std::printf("proposes: %s (%s)\n", c.strategy().c_str(),
                c.reason().c_str());
  }
  for (const auto& d : r.dropped()) std::printf("dropped: %s\n", d.c_str());
  return 0;
}

int Metrics(ReflexionService::Stub& stub) {
  reflexion::v1::GetMetricsResponse resp;
  grpc::ClientContext ctx;
  absl::Status s = reflexion::client::FromGrpc(
      stub.GetMetrics(&ctx, reflexion::v1::GetMetricsRequest(), &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  // A figure the server could not compute (no data) is absent: "n/a".
  auto fig = [](bool has, double v, int decimals, bool sign = false) {
    if (!has) return std::string("n/a");
    return sign ? absl::StrFormat("%+.*f", decimals, v)
                : absl::StrFormat("%.*f", decimals, v);
  };
  auto pct = [](bool has, double v) {
    return has ? absl::StrFormat("%.0f%%", 100 * v) : std::string("n/a");
  };
  std::printf(
      "executor %s, reflector %s, up %.0fs; workflows (%s): %lld started, "
      "%lld in flight, %lld waiting, %lld resolved, %lld escalated (%lld "
      "before any attempt), %lld failed, %lld cancelled\n",
      resp.executor().c_str(), resp.reflector().c_str(), resp.uptime_s(),
      resp.workflow_counts_stored() ? "stored" : "since this process started",
      static_cast<long long>(resp.workflows_started()),
      static_cast<long long>(resp.workflows_in_flight()),
      static_cast<long long>(resp.workflows_waiting()),
      static_cast<long long>(resp.workflows_resolved()),
      static_cast<long long>(resp.workflows_escalated()),
      static_cast<long long>(resp.escalated_before_attempt()),
      static_cast<long long>(resp.workflows_failed()),
      static_cast<long long>(resp.workflows_cancelled()));
  std::printf("resolution time (wall, arrival to verdict) %ss, simulated %ss\n",
              fig(resp.has_mean_time_to_resolution_s(),
                  resp.mean_time_to_resolution_s(), 3)
                  .c_str(),
              fig(resp.has_mean_simulated_resolution_time_s(),
                  resp.mean_simulated_resolution_time_s(), 0)
                  .c_str());
  for (const auto& u : resp.upstreams()) {
    std::printf(
        "upstream %s: breaker %s (%d consecutive failures); %lld requests, "
        "%lld failed attempts, %lld failed fast, opened %lld times, %lld in "
        "flight\n",
        u.upstream().c_str(), u.breaker().c_str(), u.consecutive_failures(),
        static_cast<long long>(u.requests()),
        static_cast<long long>(u.failures()),
        static_cast<long long>(u.rejected()),
        static_cast<long long>(u.opened()),
        static_cast<long long>(u.in_flight()));
  }
  if (resp.storage_read_only()) {
    std::printf(
        "storage: READ-ONLY (disk full or I/O error): new work is refused\n");
  }
  if (resp.storage_recovered_with_loss()) {
    std::printf(
        "storage: started with --accept_data_loss after losing %lld "
        "acknowledged sequence(s)\n",
        static_cast<long long>(resp.storage_lost_sequences()));
  }
  std::printf(
      "all time: %lld incidents, %lld episodes; success %s, first-attempt "
      "success %s, mean attempts %s,\n"
      "          Brier score %s, reflection quality %s (trend %s), meta "
      "recommendations followed %lld (success %s)\n\n",
      static_cast<long long>(resp.incidents()),
      static_cast<long long>(resp.episodes()),
      pct(resp.has_success_rate(), resp.success_rate()).c_str(),
      pct(resp.has_first_attempt_success_rate(),
          resp.first_attempt_success_rate())
          .c_str(),
      fig(resp.has_mean_attempts(), resp.mean_attempts(), 2).c_str(),
      fig(resp.has_brier_score(), resp.brier_score(), 3).c_str(),
      fig(resp.has_mean_reflection_quality(), resp.mean_reflection_quality(), 2)
          .c_str(),
      fig(resp.has_reflection_quality_trend(), resp.reflection_quality_trend(),
          3, true)
          .c_str(),
      static_cast<long long>(resp.meta_recommendations_followed()),
      pct(resp.has_meta_recommendation_success_rate(),
          resp.meta_recommendation_success_rate())
          .c_str());
  std::printf("%-28s %9s %8s %10s %9s %14s %14s\n", "error type", "incidents",
              "success", "1st-try", "attempts", "1st-try first",
              "1st-try last");
  std::printf("%-28s %9s %8s %10s %9s %14s %14s\n", "", "", "", "", "", "third",
              "third");
  for (const auto& t : resp.error_types()) {
    std::printf("%-28s %9lld %8s %10s %9.2f %14s %14s\n",
                t.error_type().c_str(), static_cast<long long>(t.incidents()),
                pct(true, t.success_rate()).c_str(),
                pct(true, t.first_attempt_success_rate()).c_str(),
                t.mean_attempts(),
                pct(t.has_first_third_first_attempt_success(),
                    t.first_third_first_attempt_success())
                    .c_str(),
                pct(t.has_last_third_first_attempt_success(),
                    t.last_third_first_attempt_success())
                    .c_str());
  }
  return 0;
}

int Graph() {
  reflexion::core::ReflexionWorkflow workflow({}, nullptr, nullptr, nullptr,
                                              nullptr);
  if (absl::Status s = workflow.CompileGraph(); !s.ok()) return Error(s);
  std::string mermaid = workflow.graph().ToMermaid();
  if (Json()) {
    nlohmann::json j;
    j["mermaid"] = mermaid;
    j["nodes"] = workflow.graph().NodeNames();
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s", mermaid.c_str());
  }
  return 0;
}

const char* PhaseName(reflexion::v1::WorkflowPhase p) {
  switch (p) {
    case reflexion::v1::WORKFLOW_PHASE_RUNNING:
      return "RUNNING";
    case reflexion::v1::WORKFLOW_PHASE_WAITING:
      return "WAITING";
    case reflexion::v1::WORKFLOW_PHASE_COMPLETED:
      return "COMPLETED";
    case reflexion::v1::WORKFLOW_PHASE_FAILED:
      return "FAILED";
    case reflexion::v1::WORKFLOW_PHASE_CANCELLED:
      return "CANCELLED";
    default:
      return "UNKNOWN";
  }
}

int Start(ReflexionService::Stub& stub) {
  reflexion::v1::StartWorkflowRequest req;
  req.set_pod_name(absl::GetFlag(FLAGS_pod));
  req.set_namespace_(NamespaceOrDefault());
  req.set_error_type(absl::GetFlag(FLAGS_error_type));
  req.set_error_message(absl::GetFlag(FLAGS_message));
  req.set_request_id(absl::GetFlag(FLAGS_request_id));
  req.set_dry_run(absl::GetFlag(FLAGS_dry_run));
  if (std::string path = absl::GetFlag(FLAGS_logs_file); !path.empty()) {
    std::ifstream f(path);
    if (!f) return Error(absl::NotFoundError("cannot read " + path));
    std::stringstream buf;
    buf << f.rdbuf();
    req.set_logs(buf.str());
  }
  reflexion::v1::StartWorkflowResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.StartWorkflow(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, false).c_str());
  } else {
    std::printf("%s\n", resp.workflow_id().c_str());
  }
  return 0;
}

int Status(ReflexionService::Stub& stub, const std::string& id) {
  reflexion::v1::GetWorkflowRequest req;
  req.set_workflow_id(id);
  reflexion::v1::GetWorkflowResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.GetWorkflow(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  std::printf(
      "%s: %s %s/%s %s, %llu steps, attempt %d of %d%s%s\n",
      resp.workflow_id().c_str(), PhaseName(resp.phase()),
      resp.incident().namespace_().c_str(), resp.incident().pod_name().c_str(),
      resp.signature().empty() ? resp.incident().error_type().c_str()
                               : resp.signature().c_str(),
      static_cast<unsigned long long>(resp.steps()), resp.attempt(),
      resp.max_attempts(), resp.current_node().empty() ? "" : ", next: ",
      resp.current_node().c_str());
  if (resp.has_result()) PrintResult(resp.result());
  return 0;
}

int Watch(ReflexionService::Stub& stub, const std::string& id) {
  reflexion::v1::WatchWorkflowRequest req;
  req.set_workflow_id(id);
  req.set_from_sequence(absl::GetFlag(FLAGS_from));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_timeout)));
  auto reader = stub.WatchWorkflow(&ctx, req);
  reflexion::v1::WatchWorkflowResponse m;
  int exit_code = 1;  // until a result arrives
  while (reader->Read(&m)) {
    if (Json()) {
      std::printf("%s\n", ToJson(m, false).c_str());
    } else if (m.has_event()) {
      PrintEvent(m.event());
    } else {
      PrintResult(m.result());
    }
    std::fflush(stdout);
    if (m.has_result()) {
      exit_code =
          m.result().status() == reflexion::v1::WORKFLOW_STATUS_FAILED ? 1 : 0;
    }
  }
  absl::Status s = reflexion::client::FromGrpc(reader->Finish());
  if (!s.ok()) return Error(s);
  return exit_code;
}

// `approval`: "approve" / "deny" (reflexionctl approve|deny), else "" and
// --decision says what.
int Resume(ReflexionService::Stub& stub, const std::string& id,
           const std::string& approval = "") {
  reflexion::v1::ResumeWorkflowRequest req;
  req.set_workflow_id(id);
  auto* d = req.mutable_decision();
  std::string decision = absl::GetFlag(FLAGS_decision);
  if (approval == "approve") {
    d->set_kind(reflexion::v1::HumanDecision::KIND_APPROVE);
  } else if (approval == "deny") {
    d->set_kind(reflexion::v1::HumanDecision::KIND_DENY);
  } else if (decision == "retry") {
    d->set_kind(reflexion::v1::HumanDecision::KIND_RETRY);
    d->set_strategy(absl::GetFlag(FLAGS_strategy));
  } else if (decision == "resolved") {
    d->set_kind(reflexion::v1::HumanDecision::KIND_MARK_RESOLVED);
    // Optional: what the human applied (shadow mode's agreement).
    d->set_strategy(absl::GetFlag(FLAGS_strategy));
  } else if (decision == "give_up") {
    d->set_kind(reflexion::v1::HumanDecision::KIND_GIVE_UP);
  } else {
    std::cerr
        << "reflexionctl: --decision must be retry, resolved or give_up\n";
    return 2;
  }
  d->set_note(absl::GetFlag(FLAGS_note));
  req.set_etag(absl::GetFlag(FLAGS_etag));
  if (req.etag().empty()) {
    // Answer the wait the workflow is in now; if another decision lands
    // first, the server refuses this one (ABORTED) instead of applying both.
    reflexion::v1::GetWorkflowRequest get;
    get.set_workflow_id(id);
    reflexion::v1::GetWorkflowResponse status;
    grpc::ClientContext get_ctx;
    absl::Status s =
        reflexion::client::FromGrpc(stub.GetWorkflow(&get_ctx, get, &status));
    if (!s.ok()) return Error(s);
    if (status.phase() != reflexion::v1::WORKFLOW_PHASE_WAITING) {
      return Error(absl::FailedPreconditionError(absl::StrCat(
          "workflow ", id, " is not waiting for a decision (",
          reflexion::v1::WorkflowPhase_Name(status.phase()), ")")));
    }
    req.set_etag(status.etag());
  }
  reflexion::v1::ResumeWorkflowResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ResumeWorkflow(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (!approval.empty()) {
    const char* verb = approval == "approve" ? "approved" : "denied";
    std::printf(Json() ? "{\"%s\": \"%s\"}\n"
                       : "%s %s (follow it with: reflexionctl watch %s)\n",
                verb, id.c_str(), id.c_str());
    return 0;
  }
  std::printf(Json() ? "{\"resumed\": \"%s\"}\n"
                     : "resumed %s (follow it with: reflexionctl watch %s)\n",
              id.c_str(), id.c_str());
  return 0;
}

int Fork(ReflexionService::Stub& stub, const std::string& id) {
  const int64_t step = absl::GetFlag(FLAGS_step);
  if (step < 0) {
    std::cerr << "reflexionctl: fork needs --step (see reflexionctl history "
              << id << ")\n";
    return 2;
  }
  reflexion::v1::ForkWorkflowRequest req;
  req.set_workflow_id(id);
  req.set_step(static_cast<uint64_t>(step));
  req.set_strategy(absl::GetFlag(FLAGS_strategy));
  reflexion::v1::ForkWorkflowResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ForkWorkflow(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, false).c_str());
  } else {
    std::printf(
        "%s (forked from %s step %lld; follow it with: reflexionctl "
        "watch %s)\n",
        resp.workflow_id().c_str(), id.c_str(), static_cast<long long>(step),
        resp.workflow_id().c_str());
  }
  return 0;
}

int Cancel(ReflexionService::Stub& stub, const std::string& id) {
  reflexion::v1::CancelWorkflowRequest req;
  req.set_workflow_id(id);
  reflexion::v1::CancelWorkflowResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.CancelWorkflow(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  std::printf(Json() ? "{\"cancelled\": \"%s\"}\n" : "cancelled %s\n",
              id.c_str());
  return 0;
}

int History(ReflexionService::Stub& stub, const std::string& id) {
  reflexion::v1::ListCheckpointsRequest req;
  req.set_workflow_id(id);
  req.set_limit(absl::GetFlag(FLAGS_limit));
  req.set_include_state(Json());
  reflexion::v1::ListCheckpointsResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ListCheckpoints(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  for (const auto& c : resp.checkpoints()) {
    std::printf("step %-3llu after %-17s next %-17s events up to #%llu%s\n",
                static_cast<unsigned long long>(c.step()),
                c.node().empty() ? "(input)" : c.node().c_str(),
                c.next_node().c_str(),
                static_cast<unsigned long long>(c.last_sequence()),
                c.parent_workflow_id().empty()
                    ? ""
                    : absl::StrCat("  (forked from ", c.parent_workflow_id(),
                                   " step ", c.parent_step(), ")")
                          .c_str());
  }
  return 0;
}

int Undo(ReflexionService::Stub& stub, const std::string& action_id) {
  reflexion::v1::UndoActionRequest req;
  req.set_action_id(action_id);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  reflexion::v1::UndoActionResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.UndoAction(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, false).c_str());
  } else {
    std::printf("undoing %s in workflow %s: %s\n", action_id.c_str(),
                resp.workflow_id().c_str(),
                reflexion::core::DescribeAction(resp.undo().action()).c_str());
  }
  if (absl::GetFlag(FLAGS_no_wait)) return 0;
  return Watch(stub, resp.workflow_id());
}

int Breakers(ReflexionService::Stub& stub) {
  reflexion::v1::ListBreakersRequest req;
  reflexion::v1::ListBreakersResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ListBreakers(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  if (resp.breakers_size() == 0) std::printf("no breaker is open\n");
  for (const auto& b : resp.breakers()) {
    std::printf(
        "%s  tripped %s  %d incidents in %llds  held %d  escalation %s\n"
        "  suspected common cause: %s\n",
        b.scope().c_str(),
        absl::FormatTime(absl::RFC3339_sec,
                         absl::FromUnixSeconds(b.tripped_at().seconds()),
                         absl::UTCTimeZone())
            .c_str(),
        b.incidents(), static_cast<long long>(b.window().seconds()),
        b.held_incidents(),
        b.workflow_id().empty() ? "-" : b.workflow_id().c_str(),
        b.suspected_cause().c_str());
    for (const auto& e : b.evidence()) std::printf("  %s\n", e.c_str());
  }
  return 0;
}

// Whether --limit was given (its default, 20, is episodes' and audit's;
// patterns then leaves the limit to the server's default, 50).
bool limit_given = false;

std::string Time(const google::protobuf::Timestamp& t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                          absl::FromUnixSeconds(t.seconds()),
                          absl::UTCTimeZone());
}

google::protobuf::Duration DurationProto(absl::Duration d) {
  google::protobuf::Duration out;
  out.set_seconds(absl::IDivDuration(d, absl::Seconds(1), &d));
  out.set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
  return out;
}

// "(showing N of M)" when a section was cut by the limit.
std::string Shown(int shown, int64_t found) {
  if (found <= shown) return "";
  return absl::StrFormat(" (showing %d of %lld; raise --limit)", shown,
                         static_cast<long long>(found));
}

int Patterns(ReflexionService::Stub& stub) {
  reflexion::v1::ListPatternsRequest req;
  req.set_signature(absl::GetFlag(FLAGS_signature));
  req.set_namespace_(absl::GetFlag(FLAGS_namespace));
  req.set_cluster(absl::GetFlag(FLAGS_cluster));
  req.set_min_count(absl::GetFlag(FLAGS_min_count));
  *req.mutable_window() = DurationProto(absl::GetFlag(FLAGS_window));
  *req.mutable_lookback() = DurationProto(absl::GetFlag(FLAGS_lookback));
  if (limit_given) req.set_limit(absl::GetFlag(FLAGS_limit));
  const std::string by = absl::GetFlag(FLAGS_by);
  if (by == "family") {
    req.set_correlate_by(reflexion::v1::ListPatternsRequest::GROUPING_FAMILY);
  } else if (by == "signature") {
    req.set_correlate_by(
        reflexion::v1::ListPatternsRequest::GROUPING_SIGNATURE);
  } else {
    std::cerr << "reflexionctl: --by must be family or signature\n";
    return 2;
  }
  reflexion::v1::ListPatternsResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ListPatterns(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  std::printf("%lld incidents and %lld episodes considered",
              static_cast<long long>(resp.incidents()),
              static_cast<long long>(resp.episodes()));
  if (resp.has_history_start()) {
    std::printf(", from %s", Time(resp.history_start()).c_str());
  }
  std::printf(" to %s%s%s\n", Time(resp.now()).c_str(),
              resp.workflows_capped() ? "; only the newest workflows read" : "",
              resp.episodes_capped() ? "; only the newest episodes read" : "");

  std::printf(
      "\nError-namespace correlation (lift = P(error | namespace) / P(error); "
      "count >= %d, lift > 1)%s\n",
      req.min_count() == 0 ? 5 : req.min_count(),
      Shown(resp.correlations_size(), resp.correlations_found()).c_str());
  if (resp.correlations_size() == 0) {
    std::printf("  none\n");
  } else {
    std::printf("  %-40s %-20s %6s %8s %9s %6s %6s\n", "ERROR", "NAMESPACE",
                "COUNT", "NS_TOTAL", "ERR_TOTAL", "TOTAL", "LIFT");
  }
  for (const auto& c : resp.correlations()) {
    std::printf("  %-40s %-20s %6lld %8lld %9lld %6lld %6.2f\n",
                c.error().c_str(), c.namespace_().c_str(),
                static_cast<long long>(c.count()),
                static_cast<long long>(c.namespace_total()),
                static_cast<long long>(c.error_total()),
                static_cast<long long>(c.total()), c.lift());
  }

  std::printf(
      "\nBursts (window %s; a burst when count >= max(min_count, expected + "
      "3*sqrt(expected)))%s\n",
      absl::FormatDuration(absl::GetFlag(FLAGS_window) == absl::ZeroDuration()
                               ? absl::Minutes(10)
                               : absl::GetFlag(FLAGS_window))
          .c_str(),
      Shown(resp.bursts_size(), resp.bursts_found()).c_str());
  if (resp.bursts_size() == 0) {
    std::printf("  none\n");
  } else {
    std::printf("  %-40s %-20s %-20s %6s %8s %9s\n", "SIGNATURE",
                "WINDOW_START", "WINDOW_END", "COUNT", "EXPECTED", "THRESHOLD");
  }
  for (const auto& b : resp.bursts()) {
    std::printf("  %-40s %-20s %-20s %6lld %8.2f %9.2f\n",
                b.signature().c_str(), Time(b.window_start()).c_str(),
                Time(b.window_end()).c_str(), static_cast<long long>(b.count()),
                b.expected(), b.threshold());
  }

  std::printf(
      "\nStrategy effectiveness (posterior mean and 90%% credible "
      "interval)%s\n",
      Shown(resp.effectiveness_size(), resp.effectiveness_found()).c_str());
  if (resp.effectiveness_size() == 0) {
    std::printf("  none\n");
  } else {
    std::printf("  %-40s %-24s %6s %9s %5s %15s %s\n", "SIGNATURE", "STRATEGY",
                "TRIALS", "SUCCESSES", "MEAN", "90% INTERVAL", "SOURCE");
  }
  for (const auto& e : resp.effectiveness()) {
    std::printf(
        "  %-40s %-24s %6lld %9lld %5.2f %15s %s\n", e.signature().c_str(),
        e.strategy().c_str(), static_cast<long long>(e.trials()),
        static_cast<long long>(e.successes()), e.mean(),
        absl::StrFormat("[%.2f, %.2f]", e.lower(), e.upper()).c_str(),
        e.source() ==
                reflexion::v1::PatternEffectiveness::SOURCE_STORED_POSTERIOR
            ? "posterior"
            : "episodes");
  }

  std::printf("\nAnomalies%s\n",
              Shown(resp.anomalies_size(), resp.anomalies_found()).c_str());
  if (resp.anomalies_size() == 0) std::printf("  none\n");
  for (const auto& a : resp.anomalies()) {
    std::printf("  %-15s %s  %s  %s  workflow %s\n    %s\n",
                a.kind() == reflexion::v1::PatternAnomaly::KIND_SLOW_RESOLUTION
                    ? "slow_resolution"
                    : "strategy_drop",
                Time(a.time()).c_str(), a.signature().c_str(),
                a.strategy().empty() ? "-" : a.strategy().c_str(),
                a.workflow_id().c_str(), a.detail().c_str());
  }
  return 0;
}

// Whether `name` is a catalog strategy (then `history NAME` lists its
// versions; anything else is a workflow id).
bool IsCatalogStrategy(const std::string& name) {
  for (const reflexion::v1::Strategy& s :
       reflexion::core::DefaultStrategies(absl::UnixEpoch())) {
    if (s.name() == name) return true;
  }
  return false;
}

int StrategyHistory(ReflexionService::Stub& stub, const std::string& name) {
  reflexion::v1::GetStrategyHistoryRequest req;
  req.set_strategy(name);
  reflexion::v1::GetStrategyHistoryResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.GetStrategyHistory(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, true).c_str());
    return 0;
  }
  for (const auto& v : resp.versions()) {
    const auto& st = v.strategy();
    std::printf(
        "v%d%s parent v%d  %-22s %s  trials %lld, successes %lld, mean "
        "%.2f\n    params %s\n    reason: %s\n",
        st.version(), v.current() ? " (current)" : "", st.parent_version(),
        st.author().c_str(),
        absl::FormatTime("%Y-%m-%dT%H:%M:%SZ",
                         absl::FromUnixSeconds(st.created_at().seconds()),
                         absl::UTCTimeZone())
            .c_str(),
        static_cast<long long>(v.stats().trials()),
        static_cast<long long>(v.stats().successes()), v.stats().mean(),
        absl::StrFormat("memory_factor %g, probe_factor %g, requests_factor %g",
                        st.params().memory_factor(), st.params().probe_factor(),
                        st.params().requests_factor())
            .c_str(),
        st.reason().empty() ? "-" : st.reason().c_str());
  }
  return 0;
}

int Rollback(ReflexionService::Stub& stub, const std::string& name) {
  reflexion::v1::RollbackStrategyRequest req;
  req.set_strategy(name);
  req.set_to_version(absl::GetFlag(FLAGS_to));
  req.set_reason(absl::GetFlag(FLAGS_reason));
  if (req.to_version() < 1) {
    std::cerr << "reflexionctl: rollback needs --to N (a version >= 1)\n";
    return 2;
  }
  reflexion::v1::RollbackStrategyResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.RollbackStrategy(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, false).c_str());
  } else {
    std::printf("%s: version %d (parent %d) has the parameters of version %d\n",
                name.c_str(), resp.strategy().version(),
                resp.strategy().parent_version(), req.to_version());
  }
  return 0;
}

int ClearMemory(ReflexionService::Stub& stub) {
  reflexion::v1::ClearMemoryRequest req;
  req.set_signature(absl::GetFlag(FLAGS_signature));
  reflexion::v1::ClearMemoryResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ClearMemory(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  if (Json()) {
    std::printf("%s\n", ToJson(resp, false).c_str());
  } else {
    std::printf("removed %lld episodes and %lld posteriors%s%s\n",
                static_cast<long long>(resp.episodes_removed()),
                static_cast<long long>(resp.posteriors_removed()),
                req.signature().empty() ? "" : " of signature ",
                req.signature().c_str());
  }
  return 0;
}

int ClearBreaker(ReflexionService::Stub& stub, const std::string& scope) {
  reflexion::v1::ClearBreakerRequest req;
  req.set_scope(scope);
  req.set_reason(absl::GetFlag(FLAGS_reason));
  reflexion::v1::ClearBreakerResponse resp;
  grpc::ClientContext ctx;
  absl::Status s =
      reflexion::client::FromGrpc(stub.ClearBreaker(&ctx, req, &resp));
  if (!s.ok()) return Error(s);
  std::printf(Json() ? "{\"cleared\": \"%s\"}\n" : "cleared breaker %s\n",
              scope.c_str());
  return 0;
}

// "action" for KIND_ACTION, ... (the enum name without its prefix, lower
// case).
std::string AuditKindName(reflexion::v1::AuditEntry::Kind kind) {
  std::string name = reflexion::v1::AuditEntry::Kind_Name(kind);
  if (absl::StartsWith(name, "KIND_")) name = name.substr(5);
  return absl::AsciiStrToLower(name);
}

// --kind as an AuditEntry.Kind ("" = any).
absl::StatusOr<reflexion::v1::AuditEntry::Kind> ParseAuditKind(
    const std::string& text) {
  if (text.empty()) return reflexion::v1::AuditEntry::KIND_UNSPECIFIED;
  std::vector<std::string> names;
  for (int k = reflexion::v1::AuditEntry::Kind_MIN + 1;
       k <= reflexion::v1::AuditEntry::Kind_MAX; ++k) {
    if (!reflexion::v1::AuditEntry::Kind_IsValid(k)) continue;
    const auto kind = static_cast<reflexion::v1::AuditEntry::Kind>(k);
    if (AuditKindName(kind) == text) return kind;
    names.push_back(AuditKindName(kind));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "--kind: '", text, "' is not one of ", absl::StrJoin(names, ", ")));
}

// The lower-case enum value name without `prefix` ("" for the zero value).
std::string EnumWord(const std::string& name, absl::string_view prefix) {
  if (absl::EndsWith(name, "_UNSPECIFIED") || name.empty()) return "";
  absl::string_view v(name);
  absl::ConsumePrefix(&v, prefix);
  return absl::AsciiStrToLower(v);
}

// `text` with line breaks and tabs escaped, so an entry stays on its line.
std::string OneLine(absl::string_view text) {
  return absl::StrReplaceAll(text,
                             {{"\n", "\\n"}, {"\r", "\\r"}, {"\t", "\\t"}});
}

// One audit entry on one line: seq, time, kind, principal, where, what,
// who decided, mode, outcome, detail (fields without a value are left out).
void PrintAuditEntry(const reflexion::v1::AuditEntry& e) {
  std::vector<std::string> parts;
  parts.push_back(
      absl::StrFormat("%6llu", static_cast<unsigned long long>(e.seq())));
  parts.push_back(absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ",
                                   absl::FromUnixSeconds(e.time().seconds()) +
                                       absl::Nanoseconds(e.time().nanos()),
                                   absl::UTCTimeZone()));
  parts.push_back(absl::StrFormat("%-8s", AuditKindName(e.kind())));
  if (!e.principal().empty()) parts.push_back("by " + e.principal());
  if (!e.cluster().empty() || !e.namespace_().empty()) {
    parts.push_back(
        absl::StrCat(e.cluster().empty() ? "-" : e.cluster(), "/",
                     e.namespace_().empty() ? "-" : e.namespace_()));
  }
  if (!e.workload().empty()) parts.push_back(e.workload());
  if (!e.pod().empty()) parts.push_back("pod " + e.pod());
  if (!e.workflow_id().empty()) parts.push_back(e.workflow_id());
  if (e.has_action() &&
      e.action().type() != reflexion::v1::ACTION_TYPE_UNSPECIFIED) {
    const reflexion::v1::Action& a = e.action();
    std::vector<std::string> params;
    if (a.params().memory_factor() != 0) {
      params.push_back(
          absl::StrCat("memory_factor=", a.params().memory_factor()));
    }
    if (a.params().probe_factor() != 0) {
      params.push_back(
          absl::StrCat("probe_factor=", a.params().probe_factor()));
    }
    if (a.params().requests_factor() != 0) {
      params.push_back(
          absl::StrCat("requests_factor=", a.params().requests_factor()));
    }
    if (!a.image().empty()) params.push_back("image=" + a.image());
    if (!a.pull_secret().empty()) {
      params.push_back("pull_secret=" + a.pull_secret());
    }
    if (!a.undo_of().empty()) params.push_back("undo_of=" + a.undo_of());
    for (const auto& r : a.restore()) {
      params.push_back(absl::StrCat(r.path(), "=", r.before()));
    }
    parts.push_back(absl::StrCat(
        EnumWord(reflexion::v1::ActionType_Name(a.type()), "ACTION_TYPE_"), "(",
        absl::StrJoin(params, ", "), ")"));
  }
  if (std::string tier =
          EnumWord(reflexion::v1::SafetyTier_Name(e.tier()), "SAFETY_TIER_");
      !tier.empty()) {
    parts.push_back("tier " + absl::AsciiStrToUpper(tier));
  }
  if (std::string decider = EnumWord(
          reflexion::v1::AuditEntry::Decider_Name(e.decider()), "DECIDER_");
      !decider.empty()) {
    parts.push_back(absl::StrCat(
        "decided by ", decider,
        e.decided_by().empty() ? "" : absl::StrCat(" (", e.decided_by(), ")")));
  }
  if (std::string mode =
          EnumWord(reflexion::v1::PolicyMode_Name(e.mode()), "POLICY_MODE_");
      !mode.empty()) {
    parts.push_back("mode " + mode);
  }
  if (!e.outcome().empty()) parts.push_back("-> " + OneLine(e.outcome()));
  if (e.refers_to() != 0)
    parts.push_back(absl::StrCat("(of ", e.refers_to(), ")"));
  if (!e.detail().empty()) {
    parts.push_back(absl::StrCat(": ", OneLine(e.detail())));
  }
  std::printf("%s\n", absl::StrJoin(parts, "  ").c_str());
}

absl::Status CallListAudit(ReflexionService::Stub& stub,
                           const reflexion::v1::ListAuditRequest& req,
                           reflexion::v1::ListAuditResponse* resp) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(absl::GetFlag(FLAGS_timeout)));
  return reflexion::client::FromGrpc(stub.ListAudit(&ctx, req, resp));
}

// reflexionctl audit --verify: every page from the start, the chain checked
// here with the same code the server uses. Exit 0 intact, 3 broken.
int AuditVerify(ReflexionService::Stub& stub) {
  // Retention may move the anchor past entries not read yet while we page:
  // then the walk starts again (a few times at most).
  for (int walk = 0; walk < 3; ++walk) {
    reflexion::v1::ListAuditRequest req;
    req.set_page_size(1000);
    std::optional<reflexion::core::AuditChainVerifier> verifier;
    reflexion::v1::AuditAnchor anchor;
    uint64_t last_seq = 0;
    bool restart = false;
    while (true) {
      reflexion::v1::ListAuditResponse resp;
      if (absl::Status s = CallListAudit(stub, req, &resp); !s.ok()) {
        return Error(s);
      }
      if (!verifier.has_value()) {
        anchor = resp.anchor();
        verifier.emplace(anchor);
      } else if (resp.anchor().seq() > verifier->last_seq()) {
        restart = true;
        break;
      }
      for (const auto& e : resp.entries()) {
        if (!verifier->Add(e)) break;
      }
      last_seq = resp.last_seq();
      if (!verifier->result().ok || resp.next_after() == 0) break;
      req.set_after(resp.next_after());
    }
    if (restart) continue;
    const reflexion::core::AuditVerification v = verifier->Finish(last_seq);
    if (Json()) {
      nlohmann::json j;
      j["ok"] = v.ok;
      j["checked"] = v.checked;
      j["anchor_seq"] = anchor.seq();
      j["last_seq"] = last_seq;
      if (!v.ok) {
        j["first_bad_seq"] = v.first_bad_seq;
        j["problem"] = v.problem;
      }
      std::printf("%s\n", j.dump().c_str());
    } else if (v.ok) {
      std::printf("audit chain OK: %llu entries from anchor %llu\n",
                  static_cast<unsigned long long>(v.checked),
                  static_cast<unsigned long long>(anchor.seq()));
    } else {
      std::printf(
          "audit chain BROKEN at entry %llu: %s (%llu entries from anchor %llu "
          "verified before it)\n",
          static_cast<unsigned long long>(v.first_bad_seq), v.problem.c_str(),
          static_cast<unsigned long long>(v.checked),
          static_cast<unsigned long long>(anchor.seq()));
    }
    return v.ok ? 0 : 3;
  }
  return Error(absl::UnavailableError(
      "audit --verify: retention kept moving the anchor during the walk; try "
      "again"));
}

// reflexionctl shadow: what shadow mode would have done next to what a human
// did afterwards (the MARK_RESOLVED or RETRY decision naming a strategy),
// from the audit log, and how often they agree.
int Shadow(ReflexionService::Stub& stub) {
  struct Row {
    std::string would, human, where;
  };
  std::map<std::string, Row> rows;  // by workflow id, in id order
  reflexion::v1::ListAuditRequest req;
  req.set_page_size(1000);
  req.set_namespace_(absl::GetFlag(FLAGS_namespace));
  req.set_cluster(absl::GetFlag(FLAGS_cluster));
  for (;;) {
    reflexion::v1::ListAuditResponse resp;
    if (absl::Status s = CallListAudit(stub, req, &resp); !s.ok()) {
      return Error(s);
    }
    for (const auto& e : resp.entries()) {
      if (e.kind() == reflexion::v1::AuditEntry::KIND_POLICY &&
          e.mode() == reflexion::v1::POLICY_MODE_SHADOW) {
        Row& r = rows[e.workflow_id()];
        if (const auto* spec = reflexion::core::FindAction(e.action().type())) {
          r.would = spec->name;
        }
        r.where = absl::StrCat(e.cluster(), "/", e.namespace_(), "/", e.pod());
      } else if (e.kind() == reflexion::v1::AuditEntry::KIND_DECISION &&
                 rows.contains(e.workflow_id())) {
        // The decision's detail starts "strategy NAME" when it names one.
        absl::string_view d = e.detail();
        if (absl::ConsumePrefix(&d, "strategy ")) {
          rows[e.workflow_id()].human = std::string(d.substr(0, d.find(':')));
        } else if (rows[e.workflow_id()].human.empty()) {
          rows[e.workflow_id()].human = absl::StrCat("(", e.outcome(), ")");
        }
      }
    }
    if (resp.next_after() == 0) break;
    req.set_after(resp.next_after());
  }
  int decided = 0, agreed = 0;
  for (const auto& [id, r] : rows) {
    const bool named = !r.human.empty() && r.human[0] != '(';
    decided += named;
    agreed += named && r.human == r.would;
    if (!Json()) {
      std::printf(
          "%-22s %-40s would run %-24s human: %s%s\n", id.c_str(),
          r.where.c_str(), r.would.c_str(),
          r.human.empty() ? "(no decision yet)" : r.human.c_str(),
          named ? (r.human == r.would ? "  = agree" : "  ≠ differ") : "");
    }
  }
  if (Json()) {
    std::printf(
        "{\"shadow_workflows\": %zu, \"decided\": %d, \"agreed\": %d}\n",
        rows.size(), decided, agreed);
  } else if (decided == 0) {
    std::printf(
        "%zu shadow workflow(s); no human decision names a strategy "
        "yet: no agreement figure\n",
        rows.size());
  } else {
    std::printf(
        "%zu shadow workflow(s); %d decided by a human naming a "
        "strategy, %d agree (%.0f%%)\n",
        rows.size(), decided, agreed, 100.0 * agreed / decided);
  }
  return 0;
}

int Audit(ReflexionService::Stub& stub) {
  reflexion::v1::ListAuditRequest req;
  req.set_cluster(absl::GetFlag(FLAGS_cluster));
  req.set_namespace_(absl::GetFlag(FLAGS_namespace));
  req.set_workflow_id(absl::GetFlag(FLAGS_workflow));
  req.set_principal(absl::GetFlag(FLAGS_principal));
  absl::StatusOr<reflexion::v1::AuditEntry::Kind> kind =
      ParseAuditKind(absl::GetFlag(FLAGS_kind));
  if (!kind.ok()) return Error(kind.status());
  req.set_kind(*kind);
  if (absl::GetFlag(FLAGS_verify)) {
    if (!req.cluster().empty() || !req.namespace_().empty() ||
        !req.workflow_id().empty() || !req.principal().empty() ||
        req.kind() != reflexion::v1::AuditEntry::KIND_UNSPECIFIED ||
        absl::GetFlag(FLAGS_after) != 0) {
      std::cerr << "reflexionctl: audit --verify checks the whole chain from "
                   "its anchor: it takes no --after, --cluster, --namespace, "
                   "--workflow, --principal or --kind\n";
      return 2;
    }
    return AuditVerify(stub);
  }
  const int limit = absl::GetFlag(FLAGS_limit);
  if (limit < 1 || limit > 1000) {
    std::cerr << "reflexionctl: --limit must be between 1 and 1000\n";
    return 2;
  }
  req.set_after(absl::GetFlag(FLAGS_after));
  // Pages scan a bounded stretch of the log, so a selective filter may need
  // several (some empty) to fill `limit` lines.
  int printed = 0;
  uint64_t more_after = 0;
  while (printed < limit) {
    req.set_page_size(limit - printed);
    reflexion::v1::ListAuditResponse resp;
    if (absl::Status s = CallListAudit(stub, req, &resp); !s.ok()) {
      return Error(s);
    }
    for (const auto& e : resp.entries()) {
      if (Json()) {
        std::printf("%s\n", ToJson(e, false).c_str());
      } else {
        PrintAuditEntry(e);
      }
      ++printed;
      more_after = e.seq();
    }
    if (resp.next_after() == 0) {
      more_after = 0;
      break;
    }
    req.set_after(resp.next_after());
    more_after = resp.next_after();
  }
  if (more_after != 0 && !Json()) {
    std::printf("(more: reflexionctl audit --after %llu ...)\n",
                static_cast<unsigned long long>(more_after));
  }
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel) {
  absl::StatusOr<int> status =
      reflexion::client::CheckHealth(*channel, "reflexion.v1.ReflexionService");
  if (!status.ok()) return Error(status.status());
  const char* name = *status == 1   ? "SERVING"
                     : *status == 2 ? "NOT_SERVING"
                                    : "UNKNOWN";
  if (Json()) {
    std::printf("{\"status\": \"%s\"}\n", name);
  } else {
    std::printf("%s\n", name);
  }
  return *status == 1 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  // `-f -` (standard input) as `-f=-`: absl would warn about a value that
  // looks like a flag.
  std::vector<std::string> joined;
  std::vector<char*> argv2;
  joined.reserve(argc);
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--limit" || a == "-limit" || absl::StartsWith(a, "--limit=") ||
        absl::StartsWith(a, "-limit=")) {
      limit_given = true;
    }
    if ((a == "-f" || a == "--f") && i + 1 < argc &&
        std::string(argv[i + 1]) == "-") {
      joined.push_back(a + "=-");
      ++i;
    } else {
      joined.push_back(a);
    }
  }
  for (std::string& a : joined) argv2.push_back(a.data());
  std::vector<char*> args =
      absl::ParseCommandLine(static_cast<int>(argv2.size()), argv2.data());
  if (args.size() < 2 || args.size() > 3) {
    std::cerr << kUsage;
    return 2;
  }
  std::string format = absl::GetFlag(FLAGS_o);
  if (format != "text" && format != "json") {
    std::cerr << "reflexionctl: -o must be text or json\n";
    return 2;
  }
  std::string command = args[1];
  if (command == "graph") return Graph();
  reflexion::client::ConnectOptions connect;
  connect.token = absl::GetFlag(FLAGS_token);
  if (const char* env = std::getenv("REFLEXION_TOKEN");
      connect.token.empty() && env != nullptr) {
    connect.token = env;
  }
  connect.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  connect.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  connect.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  connect.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  absl::StatusOr<std::shared_ptr<grpc::Channel>> connected =
      reflexion::client::Connect(absl::GetFlag(FLAGS_server), connect);
  if (!connected.ok()) return Error(connected.status());
  std::shared_ptr<grpc::Channel> channel = *std::move(connected);
  auto stub = ReflexionService::NewStub(channel);
  if (command == "process") return Process(*stub);
  if (command == "diagnose") return Diagnose(*stub);
  if (command == "strategies") return Strategies(*stub);
  if (command == "episodes") return Episodes(*stub);
  if (command == "metrics") return Metrics(*stub);
  if (command == "reflect") return Reflect(*stub);
  if (command == "health") return Health(channel);
  if (command == "audit") return Audit(*stub);
  if (command == "start") return Start(*stub);
  if (command == "breakers") return Breakers(*stub);
  if (command == "shadow") return Shadow(*stub);
  if (command == "patterns") return Patterns(*stub);
  if (command == "clear-memory" && args.size() == 2) return ClearMemory(*stub);
  if (command == "rollback") {
    if (args.size() != 3) {
      std::cerr << "reflexionctl: rollback needs a strategy name\n";
      return 2;
    }
    return Rollback(*stub, args[2]);
  }
  if (command == "history" && args.size() == 3 && IsCatalogStrategy(args[2])) {
    return StrategyHistory(*stub, args[2]);
  }
  if (command == "undo" || command == "clear-breaker") {
    if (args.size() != 3) {
      std::cerr << "reflexionctl: " << command << " needs "
                << (command == "undo" ? "an action id" : "a breaker scope")
                << "\n";
      return 2;
    }
    return command == "undo" ? Undo(*stub, args[2])
                             : ClearBreaker(*stub, args[2]);
  }
  if (command == "status" || command == "cancel" || command == "history" ||
      command == "watch" || command == "resume" || command == "fork" ||
      command == "approve" || command == "deny") {
    if (args.size() != 3) {
      std::cerr << "reflexionctl: " << command << " needs a workflow id\n";
      return 2;
    }
    std::string id = args[2];
    if (command == "status") return Status(*stub, id);
    if (command == "cancel") return Cancel(*stub, id);
    if (command == "watch") return Watch(*stub, id);
    if (command == "resume") return Resume(*stub, id);
    if (command == "approve" || command == "deny") {
      return Resume(*stub, id, command);
    }
    if (command == "fork") return Fork(*stub, id);
    return History(*stub, id);
  }
  if (args.size() != 2) {
    std::cerr << kUsage;
    return 2;
  }
  std::cerr << "reflexionctl: unknown command '" << command << "'\n\n"
            << kUsage;
  return 2;
}

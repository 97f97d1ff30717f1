// Table test over the pod capture corpus (tests/testdata/pods, see its
// README.md): each real-shaped v1.Pod with its events and log goes through
// NormalizeIncident + ValidateIncident + Analyze with an empty diagnosis (no
// executor), and the signature and container must be the case's.
//
// A case whose expected signature needs the related objects (an agent's
// facts, e.g. a rollout) names what the pod alone gives as
// pod_only_signature; PodCorpusAgentTest then checks the full expectation,
// first action included, with those facts. Absent corpus: the suite is
// empty and the summary test skips.

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "core/ports/clock.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/analyzer.h"
#include "core/reflexion/heuristic_reflector.h"
#include "core/reflexion/pod_object.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/validation.h"
#include "core/reflexion/workflow.h"
#include "core/sim/simulated_cluster.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"

namespace reflexion::core {
namespace {

namespace fs = std::filesystem;

const fs::path& PodsDir() {
  static const fs::path* dir =
      new fs::path(fs::path(REFLEXION_TESTDATA_DIR) / "pods");
  return *dir;
}

struct Case {
  std::string name;
  std::string signature;
  // The signature from the pod, events and logs alone, when the expected
  // one needs the related objects (an agent's facts).
  std::string pod_only_signature;
  std::string container;
  std::string first_action;
  bool has_related = false;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> LoadCases() {
  std::vector<Case> out;
  fs::path file = PodsDir() / "cases.yaml";
  if (!fs::exists(file)) return out;
  try {
    YAML::Node root = YAML::LoadFile(file.string());
    for (const YAML::Node& n : root) {
      Case c;
      c.name = n["name"].as<std::string>("");
      c.signature = n["signature"].as<std::string>("");
      c.pod_only_signature = n["pod_only_signature"].as<std::string>("");
      for (const YAML::Node& f : n["files"]) {
        if (f.as<std::string>("") == "related") c.has_related = true;
      }
      c.container = n["container"].as<std::string>("");
      c.first_action = n["first_action"].as<std::string>("");
      if (!c.name.empty()) out.push_back(std::move(c));
    }
  } catch (const YAML::Exception& e) {
    ADD_FAILURE() << "cases.yaml: " << e.what();
  }
  return out;
}

bool ReadFile(const fs::path& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

// Events: a v1.List / EventList (items), a JSON list, or one object.
void AddEvents(const google::protobuf::Value& v, v1::Incident* in) {
  if (v.has_list_value()) {
    for (const auto& item : v.list_value().values()) {
      if (item.has_struct_value()) *in->add_pod_events() = item.struct_value();
    }
    return;
  }
  if (!v.has_struct_value()) return;
  auto items = v.struct_value().fields().find("items");
  if (items != v.struct_value().fields().end()) {
    AddEvents(items->second, in);
    return;
  }
  *in->add_pod_events() = v.struct_value();
}

struct Result {
  std::string signature;
  std::string container;
  std::string error;
  v1::Incident incident;  // as normalised
};

Result RunCase(const Case& c) {
  Result r;
  v1::Incident in;
  std::string json;
  if (!ReadFile(PodsDir() / (c.name + ".pod.json"), &json)) {
    r.error = "no pod.json";
    return r;
  }
  auto st = google::protobuf::util::JsonStringToMessage(json, in.mutable_pod());
  if (!st.ok()) {
    r.error = absl::StrCat("pod.json: ", st.ToString());
    return r;
  }
  if (ReadFile(PodsDir() / (c.name + ".events.json"), &json)) {
    google::protobuf::Value events;
    st = google::protobuf::util::JsonStringToMessage(json, &events);
    if (!st.ok()) {
      r.error = absl::StrCat("events.json: ", st.ToString());
      return r;
    }
    AddEvents(events, &in);
  }
  std::string log;
  if (ReadFile(PodsDir() / (c.name + ".log"), &log)) {
    // The tail, at a character boundary.
    if (log.size() > kMaxLogs) log = log.substr(log.size() - kMaxLogs);
    in.set_logs(ToValidUtf8(log));
    if (in.logs().size() > kMaxLogs) {
      in.set_logs(std::string(ClipUtf8(in.logs(), kMaxLogs)));
    }
  }
  absl::Status s = NormalizeIncident(&in, "incident.");
  if (s.ok()) s = ValidateIncident(in, "incident.");
  if (!s.ok()) {
    r.error = std::string(s.message());
    return r;
  }
  v1::Analysis a = Analyze(in, {}, false);
  if (NeedsDeepAnalysis(a)) a = Analyze(in, {}, true);
  r.signature = a.signature();
  r.container = a.container();
  r.incident = std::move(in);
  return r;
}

std::string Expected(const Case& c) {
  return c.pod_only_signature.empty() ? c.signature : c.pod_only_signature;
}

class PodCorpusTest : public ::testing::TestWithParam<Case> {};
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(PodCorpusTest);

TEST_P(PodCorpusTest, SignatureAndContainerAreTheCasesExpectation) {
  const Case& c = GetParam();
  Result r = RunCase(c);
  ASSERT_EQ(r.error, "");
  EXPECT_EQ(r.signature, Expected(c));
  EXPECT_EQ(r.container, c.container);
}

INSTANTIATE_TEST_SUITE_P(Corpus, PodCorpusTest,
                         ::testing::ValuesIn(LoadCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           std::string name;
                           for (char ch : info.param.name) {
                             name +=
                                 std::isalnum(static_cast<unsigned char>(ch))
                                     ? ch
                                     : '_';
                           }
                           return name;
                         });

// One line per case and per-cause counts, for the report.
TEST(PodCorpusSummaryTest, PrintsPerCaseAndPerCauseResults) {
  std::vector<Case> cases = LoadCases();
  if (cases.empty()) GTEST_SKIP() << "no corpus at " << PodsDir();
  std::map<std::string, std::pair<int, int>> per_cause;  // pass, total
  int pass = 0;
  for (const Case& c : cases) {
    Result r = RunCase(c);
    bool ok = r.error.empty() && r.signature == Expected(c) &&
              r.container == c.container;
    pass += ok;
    auto& counts = per_cause[c.signature];
    counts.first += ok;
    counts.second += 1;
    std::cout << (ok ? "PASS " : "FAIL ") << c.name << ": " << r.signature
              << " [" << r.container << "]" << r.error;
    if (!ok)
      std::cout << " (want " << Expected(c) << " [" << c.container << "])";
    std::cout << "\n";
  }
  for (const auto& [cause, counts] : per_cause) {
    std::cout << "  " << cause << ": " << counts.first << "/" << counts.second
              << "\n";
  }
  std::cout << pass << "/" << cases.size() << " cases pass\n";
  EXPECT_EQ(pass, static_cast<int>(cases.size()));
}

// What an agent reports from the objects around the pod (the case's
// related.json): the image of the newest healthy earlier ReplicaSet of the
// pod's Deployment (the last healthy image) and, when the pod's own
// ReplicaSet is newer, a recent rollout; the dockerconfigjson Secrets that
// exist in the namespace (pull secrets).
v1::Diagnosis AgentFacts(const Case& c, const v1::Incident& in) {
  v1::Diagnosis dx;
  dx.set_source("agent");
  std::string json;
  if (!ReadFile(PodsDir() / (c.name + ".related.json"), &json)) return dx;
  google::protobuf::Value related;
  if (!google::protobuf::util::JsonStringToMessage(json, &related).ok()) {
    ADD_FAILURE() << c.name << ": related.json does not parse";
    return dx;
  }
  std::string own_rs;
  if (const auto* owners = ListAt(in.pod(), "metadata.ownerReferences")) {
    for (const auto& o : owners->values()) {
      if (StringAt(o.struct_value(), "kind").value_or("") == "ReplicaSet") {
        own_rs = StringAt(o.struct_value(), "name").value_or("");
      }
    }
  }
  auto revision = [](const google::protobuf::Struct& rs) {
    const auto* v = FindPath(rs, "metadata.annotations");
    if (v == nullptr || !v->has_struct_value()) return 0;
    auto it =
        v->struct_value().fields().find("deployment.kubernetes.io/revision");
    int r = 0;
    if (it != v->struct_value().fields().end()) {
      (void)absl::SimpleAtoi(it->second.string_value(), &r);
    }
    return r;
  };
  int own_revision = 0, best_revision = 0;
  std::string best_image;
  const google::protobuf::ListValue empty;
  const auto* items = ListAt(related.struct_value(), "items");
  for (const auto& item : (items != nullptr ? *items : empty).values()) {
    const google::protobuf::Struct& o = item.struct_value();
    const std::string kind = StringAt(o, "kind").value_or("");
    if (kind == "Secret" &&
        StringAt(o, "type").value_or("") == "kubernetes.io/dockerconfigjson") {
      dx.add_available_pull_secrets(StringAt(o, "metadata.name").value_or(""));
    }
    if (kind != "ReplicaSet") continue;
    const std::string name = StringAt(o, "metadata.name").value_or("");
    if (name == own_rs) {
      own_revision = revision(o);
      continue;
    }
    if (IntAt(o, "status.readyReplicas").value_or(0) <= 0) continue;
    const auto* containers = ListAt(o, "spec.template.spec.containers");
    if (containers == nullptr || revision(o) < best_revision) continue;
    for (const auto& ctr : containers->values()) {
      if (StringAt(ctr.struct_value(), "name").value_or("") == c.container) {
        best_revision = revision(o);
        best_image = StringAt(ctr.struct_value(), "image").value_or("");
      }
    }
  }
  // Only the pod's own revision, and it is the first: nothing to go back to.
  if (own_revision == 1 && best_revision == 0) dx.set_first_revision(true);
  if (!best_image.empty() && own_revision > best_revision) {
    dx.set_last_healthy_image(best_image);
    dx.set_recent_rollout(true);
  }
  return dx;
}

// "<strategy>", "escalate:<tier-C strategy>", or "escalate".
std::string FirstActionOf(const v1::FirstStep& f) {
  if (f.kind() == v1::FirstStep::KIND_EXECUTE) return f.strategy();
  return f.action().tier() == v1::SAFETY_TIER_C ? "escalate:" + f.strategy()
                                                : "escalate";
}

// The cases whose expectation needs the related objects, with the facts an
// agent would report from them: the full signature and the first action.
TEST(PodCorpusAgentTest, WithTheRelatedObjectsTheSignatureAndFirstActionHold) {
  std::vector<Case> cases = LoadCases();
  if (cases.empty()) GTEST_SKIP() << "no corpus at " << PodsDir();
  InMemoryKnowledgeStore store;
  FakeClock clock;
  HeuristicReflector reflector;
  auto cluster = sim::SimulatedCluster::WithDefaultScenarios(1);
  ASSERT_TRUE(cluster.ok());
  ReflexionWorkflow workflow(WorkflowConfig(), &store, cluster->get(),
                             &reflector, &clock);
  ASSERT_TRUE(workflow.Init().ok());
  int checked = 0;
  for (const Case& c : cases) {
    if (!c.has_related) continue;
    SCOPED_TRACE(c.name);
    Result r = RunCase(c);
    ASSERT_EQ(r.error, "");
    absl::StatusOr<v1::DiagnoseIncidentResponse> d =
        workflow.Diagnose(r.incident, AgentFacts(c, r.incident));
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->analysis().signature(), c.signature);
    EXPECT_EQ(d->analysis().container(), c.container);
    EXPECT_EQ(FirstActionOf(d->first_step()), c.first_action)
        << d->first_step().reason();
    ++checked;
  }
  EXPECT_GE(checked, 6);
}

}  // namespace
}  // namespace reflexion::core

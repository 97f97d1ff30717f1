// Table test over the pod capture corpus (tests/testdata/pods, see its
// README.md): each real-shaped v1.Pod with its events and log goes through
// NormalizeIncident + ValidateIncident + Analyze with an empty diagnosis (no
// executor), and the signature and container must be the case's.
//
// Where the analyzer deliberately disagrees with a case, kDisagreements says
// what it answers instead and why; that answer is checked, so the test still
// fails on any other change. Absent corpus: the suite is empty and the
// summary test skips.

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/analyzer.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/validation.h"
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
  std::string container;
  std::string first_action;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct Disagreement {
  const char* signature;  // what the analyzer answers
  const char* why;
};

// The reported waiting reason ErrImagePull is the same failure as
// ImagePullBackOff a few seconds earlier (the kubelet alternates between
// them); the catalog normalises it (FamilyOf) so that one signature learns
// from both. The corpus keeps the reported reason as the family.
const std::map<std::string, Disagreement>& Disagreements() {
  static const auto* m = new std::map<std::string, Disagreement>{
      {"errimagepull-tag-not-found-fresh-install",
       {"ImagePullBackOff/image_not_found",
        "ErrImagePull is ImagePullBackOff"}},
      {"errimagepull-access-denied-no-secret",
       {"ImagePullBackOff/registry_auth", "ErrImagePull is ImagePullBackOff"}},
      {"errimagepull-unauthorized-with-pull-secret",
       {"ImagePullBackOff/registry_auth", "ErrImagePull is ImagePullBackOff"}},
      {"errimagepull-node-dns-server-misbehaving",
       {"ImagePullBackOff/registry_unreachable",
        "ErrImagePull is ImagePullBackOff"}},
      // The pod alone does not show that its revision is new: the
      // executor's recent_rollout (related.json's ReplicaSets) does, and an
      // analysis without an executor cannot know it.
      {"crashloop-bad-release",
       {"CrashLoopBackOff/app_error",
        "bad_release needs the executor's recent_rollout; none here"}},
  };
  return *m;
}

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
  return r;
}

std::string Expected(const Case& c) {
  auto it = Disagreements().find(c.name);
  return it == Disagreements().end() ? c.signature : it->second.signature;
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
    auto d = Disagreements().find(c.name);
    std::cout << (ok ? "PASS " : "FAIL ") << c.name << ": " << r.signature
              << " [" << r.container << "]" << r.error;
    if (!ok)
      std::cout << " (want " << Expected(c) << " [" << c.container << "])";
    if (d != Disagreements().end()) {
      std::cout << " (corpus says " << c.signature << "; " << d->second.why
                << ")";
    }
    std::cout << "\n";
  }
  for (const auto& [cause, counts] : per_cause) {
    std::cout << "  " << cause << ": " << counts.first << "/" << counts.second
              << "\n";
  }
  std::cout << pass << "/" << cases.size() << " cases pass\n";
  EXPECT_EQ(pass, static_cast<int>(cases.size()));
}

}  // namespace
}  // namespace reflexion::core

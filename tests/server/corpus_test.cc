// The pod corpus (tests/testdata/pods, sources in its README) through the
// real server: DiagnoseIncident must give each case's signature, container
// and first action; ProcessIncident in the default simulated mode must give
// the same signature as the analysis alone (the simulated world never
// overrides the pod's facts).

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/app.h"
#include "tests/server/server_process.h"
#include "tests/testing/status_matchers.h"
#include "yaml-cpp/yaml.h"

namespace reflexion::server {
namespace {

using ::reflexion::testing::IsOk;

struct Case {
  std::string name, signature, container, first_action;
  bool has_related = false;
};
// A case's signature from the pod, events and logs alone (what the server
// sees without an agent): `pod_only_signature` when the expected one needs
// the related objects (a rollout, say).

std::string Dir() { return std::string(REFLEXION_TESTDATA_DIR) + "/pods/"; }

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

std::vector<Case> LoadCases() {
  std::vector<Case> cases;
  YAML::Node root = YAML::LoadFile(Dir() + "cases.yaml");
  for (const YAML::Node& n : root) {
    Case c;
    c.name = n["name"].as<std::string>();
    c.signature = n["pod_only_signature"]
                      ? n["pod_only_signature"].as<std::string>()
                      : n["signature"].as<std::string>();
    c.container = n["container"].as<std::string>("");
    c.first_action = n["first_action"].as<std::string>();
    for (const YAML::Node& f : n["files"]) {
      if (f.as<std::string>() == "related") c.has_related = true;
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

// The case's pod, events and logs as a DiagnoseIncidentRequest.
v1::DiagnoseIncidentRequest RequestFor(const Case& c) {
  v1::DiagnoseIncidentRequest req;
  google::protobuf::Value pod;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(
                  Read(Dir() + c.name + ".pod.json"), &pod)
                  .ok());
  *req.mutable_pod() = pod.struct_value();
  if (std::filesystem::exists(Dir() + c.name + ".events.json")) {
    google::protobuf::Value events;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(
                    Read(Dir() + c.name + ".events.json"), &events)
                    .ok());
    const auto& fields = events.struct_value().fields();
    if (auto it = fields.find("items"); it != fields.end()) {
      for (const auto& e : it->second.list_value().values()) {
        *req.add_pod_events() = e.struct_value();
      }
    }
  }
  if (std::filesystem::exists(Dir() + c.name + ".log")) {
    req.set_logs(Read(Dir() + c.name + ".log"));
  }
  return req;
}

// "<strategy>", "escalate:<tier-C strategy>" (a human approves that
// action), or "escalate" (nothing in the catalog is recommended: the
// recommendation, if any, is not a human-only action).
std::string FirstActionOf(const v1::FirstStep& f) {
  if (f.kind() == v1::FirstStep::KIND_EXECUTE) return f.strategy();
  return f.action().tier() == v1::SAFETY_TIER_C ? "escalate:" + f.strategy()
                                                : "escalate";
}

TEST(CorpusTest, EveryCaptureIsDiagnosedAsExpectedAndTheSimulatorAgrees) {
  std::vector<Case> cases = LoadCases();
  ASSERT_GE(cases.size(), 40u);
  std::string dir = MakeTempDir();
  ServerConfig config;
  config.host = "127.0.0.1";
  config.port = 0;
  config.data_dir = dir + "/data";
  config.worker_threads = 2;
  App app(config);
  ASSERT_THAT(app.Start(), IsOk());
  auto stub = v1::ReflexionService::NewStub(
      client::Connect(absl::StrCat("127.0.0.1:", app.port())));

  std::map<std::string, std::pair<int, int>> by_cause;  // passed, total
  int passed = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::DiagnoseIncidentRequest req = RequestFor(c);
    v1::DiagnoseIncidentResponse d;
    grpc::ClientContext ctx;
    grpc::Status s = stub->DiagnoseIncident(&ctx, req, &d);
    if (!s.ok()) {
      ADD_FAILURE() << "DiagnoseIncident: " << s.error_message();
      ++by_cause[c.signature].second;
      continue;
    }
    bool ok = d.analysis().signature() == c.signature &&
              d.analysis().container() == c.container;
    EXPECT_EQ(d.analysis().signature(), c.signature);
    EXPECT_EQ(d.analysis().container(), c.container);
    // The first action needs facts only related objects show (a previous
    // healthy image, an existing pull secret): those an agent supplies.
    if (!c.has_related) {
      EXPECT_EQ(FirstActionOf(d.first_step()), c.first_action)
          << d.first_step().reason();
      ok = ok && FirstActionOf(d.first_step()) == c.first_action;
    }

    // The whole workflow on the simulated cluster: same signature.
    v1::ProcessIncidentRequest p;
    *p.mutable_pod() = req.pod();
    *p.mutable_pod_events() = req.pod_events();
    p.set_logs(req.logs());
    v1::ProcessIncidentResponse r;
    grpc::ClientContext pctx;
    s = stub->ProcessIncident(&pctx, p, &r);
    EXPECT_TRUE(s.ok()) << "ProcessIncident: " << s.error_message();
    EXPECT_EQ(r.result().signature(), d.analysis().signature());
    ok = ok && r.result().signature() == d.analysis().signature();

    auto& [good, total] = by_cause[c.signature];
    ++total;
    if (ok) {
      ++good, ++passed;
    } else {
      std::printf("MISMATCH %s: got %s [%s] %s (sim %s); want %s [%s] %s\n",
                  c.name.c_str(), d.analysis().signature().c_str(),
                  d.analysis().container().c_str(),
                  FirstActionOf(d.first_step()).c_str(),
                  r.result().signature().c_str(), c.signature.c_str(),
                  c.container.c_str(),
                  c.has_related ? "(related)" : c.first_action.c_str());
    }
  }
  std::printf("corpus: %d of %zu cases as expected\n", passed, cases.size());
  for (const auto& [cause, counts] : by_cause) {
    std::printf("  %-48s %d/%d\n", cause.c_str(), counts.first, counts.second);
  }
  app.Stop(absl::ZeroDuration(), absl::ZeroDuration());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace reflexion::server

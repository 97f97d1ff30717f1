// Unit tests of the reflexion domain: validation, catalog, analyzer,
// selector, heuristic reflector, events and metrics.

#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/ports/in_memory_checkpoint_store.h"
#include "core/ports/in_memory_knowledge_store.h"
#include "core/reflexion/analyzer.h"
#include "core/reflexion/catalog.h"
#include "core/reflexion/heuristic_reflector.h"
#include "core/reflexion/metrics.h"
#include "core/reflexion/selector.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "core/reflexion/validation.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::core {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::HasSubstr;

v1::Incident MakeIncident(std::string pod, std::string ns, std::string type) {
  v1::Incident in;
  in.set_pod_name(std::move(pod));
  in.set_namespace_(std::move(ns));
  in.set_error_type(std::move(type));
  return in;
}

// ---------------------------------------------------------------- validation

TEST(ValidationTest, AcceptsAWellFormedIncident) {
  EXPECT_THAT(
      ValidateIncident(MakeIncident("web-1.shop", "default", "OOMKilled"),
                       "incident."),
      IsOk());
}

// Kubernetes objects on an incident: names and type read from the pod,
// duplicate events folded, the limits named.
v1::Incident WithPodObject() {
  v1::Incident in;
  auto& f = *in.mutable_pod()->mutable_fields();
  auto& meta = *f["metadata"].mutable_struct_value()->mutable_fields();
  meta["name"].set_string_value("web-1");
  meta["namespace"].set_string_value("shop");
  auto& status = *f["status"].mutable_struct_value()->mutable_fields();
  status["phase"].set_string_value("Running");
  auto* cs = status["containerStatuses"].mutable_list_value()->add_values();
  auto& c = *cs->mutable_struct_value()->mutable_fields();
  c["name"].set_string_value("app");
  (*(*c["state"].mutable_struct_value()->mutable_fields())["waiting"]
        .mutable_struct_value()
        ->mutable_fields())["reason"]
      .set_string_value("CrashLoopBackOff");
  return in;
}

google::protobuf::Struct Event(const std::string& reason,
                               const std::string& message, double count) {
  google::protobuf::Struct e;
  (*e.mutable_fields())["reason"].set_string_value(reason);
  (*e.mutable_fields())["message"].set_string_value(message);
  (*e.mutable_fields())["count"].set_number_value(count);
  return e;
}

TEST(ValidationTest, APodObjectNamesTheIncidentAndDuplicateEventsAreFolded) {
  v1::Incident in = WithPodObject();
  for (int i = 0; i < 300; ++i) *in.add_pod_events() = Event("BackOff", "x", 2);
  *in.add_pod_events() = Event("Killing", "y", 1);
  ASSERT_THAT(NormalizeIncident(&in, "incident."), IsOk());
  EXPECT_EQ(in.pod_name(), "web-1");
  EXPECT_EQ(in.namespace_(), "shop");
  EXPECT_EQ(in.error_type(), "CrashLoopBackOff");
  ASSERT_EQ(in.pod_events_size(), 2);
  EXPECT_EQ(in.pod_events(0).fields().at("count").number_value(), 600);
  EXPECT_THAT(ValidateIncident(in, "incident."), IsOk());
  // A caller's own names win over the object's.
  v1::Incident named = WithPodObject();
  named.set_pod_name("other");
  ASSERT_THAT(NormalizeIncident(&named, ""), IsOk());
  EXPECT_EQ(named.pod_name(), "other");
}

TEST(ValidationTest,
     TooManyDistinctEventsOrTooBigAPodAreRejectedNamingTheField) {
  v1::Incident in = WithPodObject();
  for (int i = 0; i < 257; ++i) {
    *in.add_pod_events() = Event("BackOff", absl::StrCat("m", i), 1);
  }
  EXPECT_THAT(NormalizeIncident(&in, "incident."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("incident.pod_events: at most 256")));
  v1::Incident big = WithPodObject();
  (*big.mutable_pod()->mutable_fields())["blob"].set_string_value(
      std::string((1 << 20) + 1, 'x'));
  EXPECT_THAT(NormalizeIncident(&big, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("pod: at most 1 MiB")));
  EXPECT_THAT(ValidateIncident(big, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("pod: at most 1 MiB")));
}

TEST(ValidationTest, RejectsEmptyPodNameNamingTheField) {
  EXPECT_THAT(
      ValidateIncident(MakeIncident("", "default", "OOMKilled"), "incident."),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("incident.pod_name")));
}

TEST(ValidationTest, RejectsNonDns1123PodAndNamespace) {
  EXPECT_THAT(
      ValidateIncident(MakeIncident("Web_1", "default", "OOMKilled"), ""),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("pod_name")));
  EXPECT_THAT(
      ValidateIncident(MakeIncident("web-1", "-bad", "OOMKilled"), ""),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("namespace")));
  EXPECT_THAT(
      ValidateIncident(MakeIncident("web-1", "a.b", "OOMKilled"), ""),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("namespace")));
  EXPECT_THAT(
      ValidateIncident(MakeIncident("web-1", std::string(64, 'a'), "OOMKilled"),
                       ""),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("namespace")));
}

v1::Incident FullIncident() {
  v1::Incident in = MakeIncident("web-1", "default", "CrashLoopBackOff");
  in.set_error_message("back-off \u00e9\u20ac\U0001F600");
  in.set_logs("caf\u00e9 \U0001F600\n");
  in.set_request_id("req-\u00e9");
  for (int i = 0; i < 2; ++i) {
    v1::ContainerStatus* c = in.add_container_statuses();
    c->set_name("app");
    c->set_image("registry/app:1");
    c->set_waiting_reason("CrashLoopBackOff");
    c->set_waiting_message("\u20ac");
  }
  for (int i = 0; i < 4; ++i) {
    v1::PodEvent* e = in.add_events();
    e->set_type("Warning");
    e->set_reason("BackOff");
    e->set_message("\u00e9");
  }
  return in;
}

TEST(ValidationTest, AcceptsMultiByteTextInFreeTextFields) {
  EXPECT_THAT(ValidateIncident(FullIncident(), "incident."), IsOk());
}

TEST(ValidationTest, RejectsInvalidUtf8InAnyStringFieldNamingItsPath) {
  struct Case {
    void (*poison)(v1::Incident&);
    const char* field;
  };
  static const std::string kBad = "a\xC3";  // a truncated character
  const Case cases[] = {
      {[](v1::Incident& in) { in.set_pod_name(kBad); }, "pod_name"},
      {[](v1::Incident& in) { in.set_namespace_(kBad); }, "namespace"},
      {[](v1::Incident& in) { in.set_error_type(kBad); }, "error_type"},
      {[](v1::Incident& in) { in.set_error_message(kBad); }, "error_message"},
      {[](v1::Incident& in) { in.set_logs(kBad); }, "logs"},
      {[](v1::Incident& in) { in.set_request_id(kBad); }, "request_id"},
      {[](v1::Incident& in) {
         in.mutable_container_statuses(1)->set_waiting_message(kBad);
       },
       "container_statuses[1].waiting_message"},
      {[](v1::Incident& in) {
         in.mutable_container_statuses(0)->set_name(kBad);
       },
       "container_statuses[0].name"},
      {[](v1::Incident& in) { in.mutable_events(3)->set_message(kBad); },
       "events[3].message"},
      {[](v1::Incident& in) {
         in.mutable_events(0)->set_reason("\xED\xA0\x80");
       },
       "events[0].reason"},
  };
  for (const Case& c : cases) {
    v1::Incident in = FullIncident();
    c.poison(in);
    absl::Status s = ValidateIncident(in, "incident.");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_EQ(s.message(),
              absl::StrCat("incident.", c.field, ": must be valid UTF-8"));
    EXPECT_TRUE(IsValidUtf8(s.message()));
  }
}

TEST(ValidationTest, RequestIdForRejectionIsValidUtf8WithinTheLimit) {
  // The server once echoed request_id.substr(0, 128) on a rejection.
  const std::string split =
      absl::StrCat(std::string(127, 'a'), "\u00e9", "tail");
  ASSERT_FALSE(IsValidUtf8(split.substr(0, kMaxRequestId)));
  EXPECT_EQ(RequestIdForRejection(split), std::string(127, 'a'));
  std::string euros;
  while (euros.size() < 200) euros += "\u20ac";
  std::string clipped = RequestIdForRejection(euros);
  EXPECT_TRUE(IsValidUtf8(clipped));
  EXPECT_EQ(clipped.size(), 126u);  // 42 whole 3-byte characters
  EXPECT_EQ(RequestIdForRejection("ok\xFF"), "ok\xEF\xBF\xBD");
  EXPECT_EQ(RequestIdForRejection("req-1"), "req-1");
  std::string bad(300, '\xFF');
  clipped = RequestIdForRejection(bad);
  EXPECT_TRUE(IsValidUtf8(clipped));
  EXPECT_LE(clipped.size(), kMaxRequestId);
}

TEST(ValidationTest, StoresRejectInvalidUtf8IdsStrategiesAndEpisodes) {
  EXPECT_THAT(ValidateWorkflowId("wf-\u00e9"), IsOk());
  EXPECT_THAT(ValidateWorkflowId("wf-\xC3"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("workflow_id must be valid UTF-8")));
  v1::Strategy st;
  st.set_name("delete_pod");
  st.set_version(1);
  EXPECT_THAT(ValidateStrategy(st), IsOk());
  st.set_reason("too small \xE2\x82");
  EXPECT_THAT(ValidateStrategy(st),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("strategy.reason must be valid UTF-8")));
  LearningCommit commit;
  v1::Episode& e = commit.episode;
  e.set_id("wf-1/1");
  e.set_workflow_id("wf-1");
  e.mutable_time()->set_seconds(1'700'000'000);
  e.set_signature("OOMKilled/memory_limit_too_low");
  e.set_strategy("increase_memory_limit");
  commit.prior_alpha = commit.prior_beta = 1;
  EXPECT_THAT(ValidateLearningCommit(commit), IsOk());
  e.add_lessons("ok");
  e.add_lessons("bad \xFF");
  EXPECT_THAT(ValidateLearningCommit(commit),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("episode.lessons[1] must be valid UTF-8")));
}

TEST(ValidationTest, RejectsMalformedErrorTypes) {
  for (std::string bad : {std::string(""), std::string("Crash Loop"),
                          std::string(65, 'X'), std::string("a;rm -rf")}) {
    EXPECT_THAT(
        ValidateIncident(MakeIncident("web-1", "default", bad), ""),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("error_type")))
        << bad;
  }
}

TEST(ValidationTest, RejectsOversizedFieldsNamingThem) {
  v1::Incident in = MakeIncident("web-1", "default", "OOMKilled");
  in.set_logs(std::string(kMaxLogs + 1, 'x'));
  EXPECT_THAT(
      ValidateIncident(in, "incident."),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("incident.logs")));
  in.clear_logs();
  for (int i = 0; i <= kMaxEvents; ++i) in.add_events()->set_reason("x");
  EXPECT_THAT(ValidateIncident(in, "incident."),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("incident.events")));
  in.clear_events();
  in.add_container_statuses()->set_waiting_message(
      std::string(kMaxMessage + 1, 'm'));
  EXPECT_THAT(ValidateIncident(in, ""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("container_statuses[0].waiting_message")));
}

// ---------------------------------------------------------------- catalog

TEST(CatalogTest, EveryKnownFamilyHasAnAutomatableStrategy) {
  for (const char* family : kKnownFamilies) {
    bool automatable = false;
    for (const std::string& name : StrategiesFor(family)) {
      const ActionSpec* spec = FindActionByName(name);
      ASSERT_NE(spec, nullptr) << name;
      automatable |= spec->tier != v1::SAFETY_TIER_C;
    }
    EXPECT_TRUE(automatable) << family;
  }
}

TEST(CatalogTest, ClampsParametersToBounds) {
  v1::StrategyParams p;
  p.set_memory_factor(50);
  p.set_probe_factor(0.1);
  p.set_requests_factor(-1);
  v1::StrategyParams c = ClampParams(p);
  EXPECT_DOUBLE_EQ(c.memory_factor(), 3.0);
  EXPECT_DOUBLE_EQ(c.probe_factor(), 1.5);
  EXPECT_DOUBLE_EQ(c.requests_factor(), 0.75);  // invalid -> default
}

TEST(CatalogTest, PatchImageNeedsAKnownHealthyImage) {
  auto strategies = DefaultStrategies(absl::UnixEpoch());
  const v1::Strategy* patch = nullptr;
  for (const auto& s : strategies) {
    if (s.name() == "patch_image") patch = &s;
  }
  ASSERT_NE(patch, nullptr);
  v1::Incident in = MakeIncident("web-1", "default", "ImagePullBackOff");
  v1::Diagnosis dx;
  EXPECT_THAT(BuildAction(*patch, in, dx, "k"),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  dx.set_last_healthy_image("shop/web:v1");
  absl::StatusOr<v1::Action> a = BuildAction(*patch, in, dx, "k");
  ASSERT_THAT(a, IsOk());
  EXPECT_EQ(a->image(), "shop/web:v1");
  EXPECT_EQ(a->tier(), v1::SAFETY_TIER_B);
  EXPECT_THAT(ValidateAction(*a), IsOk());
}

TEST(CatalogTest, ValidateActionRejectsForgedTierAndUnknownType) {
  v1::Action a;
  a.set_type(v1::ACTION_TYPE_CREATE_MISSING_CONFIG);
  a.set_tier(v1::SAFETY_TIER_A);  // forged: the catalog says C
  a.set_pod_name("p");
  a.set_namespace_("n");
  *a.mutable_params() = ClampParams({});
  EXPECT_THAT(ValidateAction(a), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("action.tier")));
  a.set_type(static_cast<v1::ActionType>(999));
  EXPECT_THAT(ValidateAction(a), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("action.type")));
}

// ---------------------------------------------------------------- analyzer

TEST(AnalyzerTest, OomInsideCrashLoopIsAnOom) {
  v1::Incident in = MakeIncident("api-1", "shop", "CrashLoopBackOff");
  auto* c = in.add_container_statuses();
  c->set_name("api");
  c->set_last_termination_reason("OOMKilled");
  c->set_last_exit_code(137);
  v1::Analysis a = Analyze(in, {}, false);
  EXPECT_EQ(a.error_family(), "OOMKilled");
  EXPECT_EQ(a.signature(), "OOMKilled/memory_limit_too_low");
  EXPECT_EQ(a.features().at("exit_code"), "137");
}

// A JVM's own OutOfMemoryError in the logs makes an OOM a jvm_heap one,
// unless a rollout came first (then the release is suspected).
TEST(AnalyzerTest, AJvmOutOfMemoryErrorIsAJvmHeapOomUnlessARolloutCameFirst) {
  v1::Incident in = MakeIncident("catalog-1", "shop", "OOMKilled");
  in.set_logs(
      "loading product index\nException in thread \"main\" "
      "java.lang.OutOfMemoryError: Java heap space\n");
  v1::Analysis a = Analyze(in, {}, false);
  EXPECT_EQ(a.signature(), "OOMKilled/jvm_heap");
  bool quoted = false;
  for (const v1::Fact& f : a.facts()) {
    quoted |= absl::StrContains(f.text(), "java.lang.OutOfMemoryError");
  }
  EXPECT_TRUE(quoted);
  v1::Diagnosis rollout;
  rollout.set_recent_rollout(true);
  EXPECT_EQ(Analyze(in, rollout, false).signature(),
            "OOMKilled/memory_regression");
  in.set_logs("handled 13112 requests in the last minute\n");
  EXPECT_EQ(Analyze(in, {}, false).signature(),
            "OOMKilled/memory_limit_too_low");
}

// Ephemeral-storage evictions: after a rollout the new revision is
// suspected (storage_regression), otherwise the pod fills its own disk.
TEST(AnalyzerTest,
     AnEphemeralStorageEvictionAfterARolloutIsAStorageRegression) {
  v1::Incident in = MakeIncident("indexer-1", "shop", "Evicted");
  in.set_error_message(
      "Pod ephemeral local storage usage exceeds the total limit of "
      "containers 1Gi.");
  EXPECT_EQ(Analyze(in, {}, false).signature(), "Evicted/ephemeral_storage");
  v1::Diagnosis rollout;
  rollout.set_recent_rollout(true);
  EXPECT_EQ(Analyze(in, rollout, false).signature(),
            "Evicted/storage_regression");
}

TEST(AnalyzerTest, ImagePullCausesAreDistinguished) {
  auto cause = [](std::string message) {
    v1::Incident in = MakeIncident("web-1", "default", "ErrImagePull");
    v1::Diagnosis dx;
    auto* c = dx.add_container_statuses();
    c->set_waiting_reason("ErrImagePull");
    c->set_waiting_message(std::move(message));
    return Analyze(in, dx, false).signature();
  };
  EXPECT_EQ(cause("failed to resolve reference \"x:1\": x:1: not found"),
            "ImagePullBackOff/image_not_found");
  EXPECT_EQ(cause("pull access denied, unauthorized: authentication required"),
            "ImagePullBackOff/registry_auth");
  EXPECT_EQ(cause("dial tcp 10.0.0.12:443: i/o timeout"),
            "ImagePullBackOff/registry_network_error");
  EXPECT_EQ(cause("net/http: TLS handshake timeout"),
            "ImagePullBackOff/registry_network_error");
  EXPECT_EQ(cause("dial tcp: lookup reg.exmaple.com on 10.96.0.10:53: no "
                  "such host"),
            "ImagePullBackOff/registry_unreachable");
  EXPECT_EQ(cause("something else"), "ImagePullBackOff/unclassified");
}

TEST(AnalyzerTest, ExitCodesSeparateCrashCauses) {
  auto sig = [](int exit_code, bool rollout) {
    v1::Incident in = MakeIncident("w", "d", "CrashLoopBackOff");
    auto* c = in.add_container_statuses();
    c->set_last_termination_reason("Error");
    c->set_last_exit_code(exit_code);
    v1::Diagnosis dx;
    dx.set_recent_rollout(rollout);
    return Analyze(in, dx, false).cause();
  };
  // 143 without failing-liveness events is a plain SIGTERM.
  EXPECT_EQ(sig(143, false), "terminated");
  EXPECT_EQ(sig(127, false), "command_not_found");
  EXPECT_EQ(sig(126, false), "command_not_executable");
  EXPECT_EQ(sig(139, false), "segfault");
  EXPECT_EQ(sig(1, true), "bad_release");
  EXPECT_EQ(sig(1, false), "app_error");
}

TEST(AnalyzerTest, UnknownErrorTypeNeedsDeepAnalysisWhichQuotesLogs) {
  v1::Incident in = MakeIncident("w", "d", "Segfault");
  in.set_logs("starting\nSegmentation fault (core dumped)\n");
  v1::Analysis shallow = Analyze(in, {}, false);
  EXPECT_FALSE(shallow.known());
  EXPECT_TRUE(NeedsDeepAnalysis(shallow));
  v1::Analysis deep = Analyze(in, {}, true);
  EXPECT_EQ(deep.signature(), "Segfault/segfault");
  EXPECT_FALSE(NeedsDeepAnalysis(deep));
  EXPECT_THAT(deep.evidence(),
              ::testing::Contains(HasSubstr("log: \"Segmentation fault")));
}

// A multi-byte character straddling the 240-byte evidence clip: `pad` ASCII
// bytes, then `ch`, then more text so the message is clipped.
struct ClipCase {
  int pad;
  const char* ch;
};
void PrintTo(const ClipCase& c, std::ostream* os) {
  *os << c.pad << " x 'a' + \"" << absl::CHexEscape(c.ch) << "\"";
}

class AnalyzerClipTest : public ::testing::TestWithParam<ClipCase> {
 protected:
  static std::string Straddling() {
    return absl::StrCat(std::string(GetParam().pad, 'a'), GetParam().ch,
                        std::string(20, 'z'));
  }
};

// Serializing and parsing back is what a checkpoint or a client does; the
// proto3 parser refuses a string field holding invalid UTF-8.
bool ParsesBack(const google::protobuf::Message& m) {
  std::unique_ptr<google::protobuf::Message> copy(m.New());
  return copy->ParseFromString(m.SerializeAsString());
}

TEST_P(AnalyzerClipTest, EvidenceClippedInsideACharacterStillParsesBack) {
  v1::Incident in = MakeIncident("web-1", "default", "CrashLoopBackOff");
  in.add_events()->set_message(Straddling());
  in.set_logs(absl::StrCat("fatal error: ", Straddling()));
  v1::Diagnosis dx;
  dx.set_last_healthy_image(Straddling());
  // The status is the incident's: an executor's would be unused next to the
  // incident's own events and logs.
  auto* c = in.add_container_statuses();
  c->set_name("web");
  c->set_waiting_reason("CrashLoopBackOff");
  c->set_waiting_message(Straddling());
  for (bool deep : {false, true}) {
    v1::Analysis a = Analyze(in, dx, deep);
    ASSERT_GE(a.evidence_size(), 2);
    EXPECT_TRUE(ParsesBack(a)) << "deep=" << deep;
    for (const std::string& e : a.evidence()) {
      EXPECT_TRUE(IsValidUtf8(e)) << absl::CHexEscape(e);
      EXPECT_LE(e.size(), 300u);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AtTheClip, AnalyzerClipTest,
                         ::testing::Values(ClipCase{239, "\u00e9"},
                                           ClipCase{238, "\u20ac"},
                                           ClipCase{239, "\u20ac"},
                                           ClipCase{237, "\U0001F600"},
                                           ClipCase{238, "\U0001F600"},
                                           ClipCase{239, "\U0001F600"}));

// ---------------------------------------------------------------- selector

struct SelectorFixture {
  absl::flat_hash_map<std::string, v1::Strategy> strategies;
  SelectorFixture() {
    for (auto& s : DefaultStrategies(absl::UnixEpoch())) {
      strategies[s.name()] = s;
    }
  }
};

v1::StrategyStats Stats(std::string strategy, double a, double b, int trials) {
  v1::StrategyStats s;
  s.set_strategy(std::move(strategy));
  s.set_alpha(a);
  s.set_beta(b);
  s.set_trials(trials);
  s.set_mean(a / (a + b));
  return s;
}

TEST(SelectorTest, NeverAutoSelectsTierC) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("Pending");
  a.set_cause("insufficient_resources");
  a.set_signature("Pending/insufficient_resources");
  // Make the tier-C strategies look excellent: still never chosen.
  absl::flat_hash_map<std::string, v1::StrategyStats> stats;
  stats["scale_node_pool"] = Stats("scale_node_pool", 90, 10, 98);
  stats["lower_resource_requests"] =
      Stats("lower_resource_requests", 80, 20, 98);
  v1::Incident in = MakeIncident("w", "d", "Pending");
  for (int i = 0; i < 200; ++i) {
    SelectionOutcome out = SelectStrategy(a, in, {}, f.strategies, stats, {}, 1,
                                          "k", i, SelectorOptions());
    if (out.chosen) {
      EXPECT_NE(out.selection.strategy().tier(), v1::SAFETY_TIER_C);
    }
  }
}

TEST(SelectorTest, StrongPosteriorIsChosenAsHighestConfidenceLearned) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("ImagePullBackOff");
  a.set_cause("registry_auth");
  a.set_signature("ImagePullBackOff/registry_auth");
  absl::flat_hash_map<std::string, v1::StrategyStats> stats;
  stats["attach_pull_secret"] = Stats("attach_pull_secret", 40, 2, 38);
  stats["patch_image"] = Stats("patch_image", 2, 30, 28);
  v1::Diagnosis dx;
  dx.add_available_pull_secrets("regcred");
  dx.set_last_healthy_image("img:1");
  SelectionOutcome out =
      SelectStrategy(a, MakeIncident("w", "d", "ImagePullBackOff"), dx,
                     f.strategies, stats, {}, 1, "k", 7, SelectorOptions());
  ASSERT_TRUE(out.chosen);
  EXPECT_EQ(out.selection.strategy().name(), "attach_pull_secret");
  EXPECT_EQ(out.selection.selection_reason(), "highest_confidence_learned");
  EXPECT_EQ(out.selection.action().pull_secret(), "regcred");
  EXPECT_NEAR(out.selection.confidence(), 40.0 / 42.0, 1e-9);
}

TEST(SelectorTest, NoHistoryIsDefaultFallbackAndTriedAreExcluded) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("OOMKilled");
  a.set_cause("memory_limit_too_low");
  a.set_signature("OOMKilled/memory_limit_too_low");
  // delete_pod's prior is low for this cause: with the default costs the
  // selector escalates instead (SelectorCostTest); an expensive escalation
  // keeps it trying.
  SelectorOptions opts;
  opts.cost_escalation = 100;
  SelectionOutcome out = SelectStrategy(
      a, MakeIncident("w", "d", "OOMKilled"), {}, f.strategies, {},
      {"increase_memory_limit", "rollback_deployment"}, 3, "k", 1, opts);
  ASSERT_TRUE(out.chosen);
  EXPECT_EQ(out.selection.strategy().name(), "delete_pod");
  EXPECT_EQ(out.selection.selection_reason(), "default_fallback");
}

TEST(SelectorTest, EscalatesWhenOnlyTierCIsLikelyToWork) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("CreateContainerConfigError");
  a.set_cause("missing_secret");
  a.set_signature("CreateContainerConfigError/missing_secret");
  SelectionOutcome out =
      SelectStrategy(a, MakeIncident("w", "d", "CreateContainerConfigError"),
                     {}, f.strategies, {}, {}, 1, "k", 1, SelectorOptions());
  EXPECT_FALSE(out.chosen);
  EXPECT_THAT(out.escalation_reason, HasSubstr("create_missing_config"));
  EXPECT_EQ(out.recommended_action.type(),
            v1::ACTION_TYPE_CREATE_MISSING_CONFIG);
}

TEST(SelectorTest, TierCAskChoosesTheTierCActionPendingApproval) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("CreateContainerConfigError");
  a.set_cause("missing_secret");
  a.set_signature("CreateContainerConfigError/missing_secret");
  SelectorOptions opts;
  opts.ask_tier_c = true;
  SelectionOutcome out =
      SelectStrategy(a, MakeIncident("w", "d", "CreateContainerConfigError"),
                     {}, f.strategies, {}, {}, 1, "k", 1, opts);
  ASSERT_TRUE(out.chosen);
  EXPECT_EQ(out.selection.strategy().name(), "create_missing_config");
  EXPECT_TRUE(out.selection.needs_approval());
  EXPECT_THAT(out.selection.approval_reason(), HasSubstr("tier C"));
  EXPECT_EQ(out.selection.action().tier(), v1::SAFETY_TIER_C);
}

TEST(SelectorTest, AskBelowThresholdNeedsApprovalAndExcludedAreSkipped) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("OOMKilled");
  a.set_cause("memory_limit_too_low");
  a.set_signature("OOMKilled/memory_limit_too_low");
  SelectorOptions opts;
  opts.ask_below_threshold = true;
  opts.confidence_threshold = 0.999;
  opts.cost_escalation = 3;  // the runner-up (27%) is still worth asking
  absl::flat_hash_map<std::string, std::string> excluded = {
      {"increase_memory_limit", "denied by a human for this incident"}};
  SelectionOutcome out =
      SelectStrategy(a, MakeIncident("w", "d", "OOMKilled"), {}, f.strategies,
                     {}, {}, 1, "k", 1, opts, excluded);
  ASSERT_TRUE(out.chosen);
  EXPECT_NE(out.selection.strategy().name(), "increase_memory_limit");
  EXPECT_TRUE(out.selection.needs_approval());
  bool saw = false;
  for (const auto& c : out.selection.candidates()) {
    if (c.strategy() == "increase_memory_limit") {
      saw = true;
      EXPECT_EQ(c.excluded_reason(), "denied by a human for this incident");
    }
  }
  EXPECT_TRUE(saw);
}

TEST(SelectorTest, EscalatePolicyBelowThresholdEscalates) {
  SelectorFixture f;
  v1::Analysis a;
  // delete_pod's prior for the node's disk pressure is Beta(2, 2): 0.5.
  a.set_error_family("Evicted");
  a.set_cause("disk_pressure");
  a.set_signature("Evicted/disk_pressure");
  SelectorOptions opts;
  opts.escalate_below_threshold = true;
  SelectionOutcome out =
      SelectStrategy(a, MakeIncident("w", "d", "Evicted"), {}, f.strategies, {},
                     {}, 1, "k", 1, opts);
  EXPECT_FALSE(out.chosen);
  EXPECT_THAT(out.escalation_reason, HasSubstr("below the threshold"));
}

// Parameters learned for the signature replace the version's in the
// action; a retry lets a tried strategy run again with its raise; without
// one it stays excluded.
TEST(SelectorTest, LearnedParametersAndARaiseRetryShapeTheAction) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("OOMKilled");
  a.set_cause("memory_limit_too_low");
  a.set_signature("OOMKilled/memory_limit_too_low");
  const v1::Incident in = MakeIncident("w", "d", "OOMKilled");
  absl::flat_hash_map<std::string, v1::StrategyStats> stats;
  stats["increase_memory_limit"] = Stats("increase_memory_limit", 30, 2, 30);
  stats["increase_memory_limit"].mutable_tuned_params()->set_memory_factor(
      2.25);
  stats["increase_memory_limit"].set_tuned_version(1);
  SelectionOutcome out =
      SelectStrategy(a, in, {}, f.strategies, stats, {}, 1, "k", 1, {});
  ASSERT_TRUE(out.chosen);
  EXPECT_EQ(out.selection.strategy().name(), "increase_memory_limit");
  EXPECT_DOUBLE_EQ(out.selection.action().params().memory_factor(), 2.25);
  // The strategy itself is the version's, unchanged.
  EXPECT_DOUBLE_EQ(out.selection.strategy().params().memory_factor(), 1.5);
  for (const auto& c : out.selection.candidates()) {
    if (c.strategy() == "increase_memory_limit") {
      EXPECT_EQ(c.params_source(),
                "learned for OOMKilled/memory_limit_too_low");
    } else {
      EXPECT_EQ(c.params_source(), "");
    }
  }

  // Learned with another version: the current version's parameters.
  stats["increase_memory_limit"].set_tuned_version(2);
  SelectionOutcome stale =
      SelectStrategy(a, in, {}, f.strategies, stats, {}, 1, "k", 1, {});
  ASSERT_TRUE(stale.chosen);
  EXPECT_DOUBLE_EQ(stale.selection.action().params().memory_factor(), 1.5);

  // Tried: excluded, unless a retry names it.
  stats["increase_memory_limit"].clear_tuned_params();
  SelectionOutcome no_retry = SelectStrategy(
      a, in, {}, f.strategies, stats, {"increase_memory_limit"}, 2, "k", 1, {});
  EXPECT_NE(no_retry.selection.strategy().name(), "increase_memory_limit");
  for (const auto& c : no_retry.selection.candidates()) {
    if (c.strategy() == "increase_memory_limit") {
      EXPECT_EQ(c.excluded_reason(), "already tried in this workflow");
    }
  }
  absl::flat_hash_map<std::string, RetryWith> retry;
  v1::StrategyParams raised;
  raised.set_memory_factor(9.0);  // clamped to the catalog's 3.0
  retry["increase_memory_limit"] = {raised, "raised after attempt 1: test"};
  SelectionOutcome again =
      SelectStrategy(a, in, {}, f.strategies, stats, {"increase_memory_limit"},
                     2, "k", 1, {}, {}, retry);
  ASSERT_TRUE(again.chosen);
  EXPECT_EQ(again.selection.strategy().name(), "increase_memory_limit");
  EXPECT_DOUBLE_EQ(again.selection.action().params().memory_factor(), 3.0);
  bool saw = false;
  for (const auto& c : again.selection.candidates()) {
    if (c.strategy() != "increase_memory_limit") continue;
    saw = true;
    EXPECT_EQ(c.params_source(), "raised after attempt 1: test");
    EXPECT_EQ(c.excluded_reason(), "");
  }
  EXPECT_TRUE(saw);
}

// After a failed attempt the signature's retry record caps the chance of
// the next one: retries that kept failing hand the incident to a human;
// the same candidates without that record are tried.
TEST(SelectorTest, ASignatureWhoseRetriesKeepFailingEscalatesAfterAFailure) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("OOMKilled");
  a.set_cause("memory_regression");
  a.set_signature("OOMKilled/memory_regression");
  const v1::Incident in = MakeIncident("w", "d", "OOMKilled");
  absl::flat_hash_map<std::string, v1::StrategyStats> stats;
  // increase_memory_limit's mean 0.5 is worth a try (0.5 * 3 > 0.6) ...
  stats["increase_memory_limit"] = Stats("increase_memory_limit", 5, 5, 4);
  SelectionOutcome tried = SelectStrategy(
      a, in, {}, f.strategies, stats, {"rollback_deployment"}, 2, "k", 1, {});
  ASSERT_TRUE(tried.chosen) << tried.escalation_reason;
  // ... unless 0 of 4 retries on this signature fixed it: (1 + 0) / (2 + 4).
  stats["rollback_deployment"] = Stats("rollback_deployment", 20, 3, 20);
  stats["rollback_deployment"].set_retry_trials(1);
  stats["increase_memory_limit"].set_retry_trials(3);
  SelectionOutcome out = SelectStrategy(a, in, {}, f.strategies, stats,
                                        {"rollback_deployment"}, 2, "k", 1, {});
  EXPECT_FALSE(out.chosen);
  EXPECT_THAT(out.escalation_reason,
              HasSubstr("0 of 4 retries on this signature fixed it"));
  // The first attempt is not concerned; nor is min_retry_trials 0.
  EXPECT_TRUE(
      SelectStrategy(a, in, {}, f.strategies, stats, {}, 1, "k", 1, {}).chosen);
  SelectorOptions off;
  off.min_retry_trials = 0;
  EXPECT_TRUE(SelectStrategy(a, in, {}, f.strategies, stats,
                             {"rollback_deployment"}, 2, "k", 1, off)
                  .chosen);
}

// A signature the catalog knows nothing about (for a strategy) borrows
// strength from the same cause under other families; other causes of its
// family say nothing; what the cause says is kept as it is.
TEST(SelectorTest,
     ARareSignatureBorrowsFromTheSameCauseWhereTheCatalogIsSilent) {
  v1::Analysis a;
  a.set_error_family("CrashLoopBackOff");
  a.set_cause("segfault");
  a.set_signature("CrashLoopBackOff/segfault");
  std::vector<v1::StrategyStats> all;
  auto add = [&](std::string sig, std::string strategy, int trials,
                 int successes) {
    v1::StrategyStats st = Stats(std::move(strategy), 1, 1, trials);
    st.set_signature(std::move(sig));
    st.set_successes(successes);
    all.push_back(st);
  };
  add("Error/segfault", "rollback_deployment", 9, 9);
  add("InitContainerError/segfault", "rollback_deployment", 1, 0);
  add("CrashLoopBackOff/segfault", "rollback_deployment", 50, 0);  // own
  add("CrashLoopBackOff/probe_failure", "relax_probes", 40, 40);
  const RelatedRecords related = RelatedRecordsOf(a, all);
  ASSERT_EQ(related.size(), 1u);
  EXPECT_EQ(related.at("rollback_deployment").trials, 10);
  EXPECT_EQ(related.at("rollback_deployment").successes, 9);
  // Catalog: CrashLoopBackOff rollback_deployment Beta(2, 2); 4 borrowed
  // trials at (9 + 0.5) / 11.
  const Prior p = HierarchicalPrior(a, "rollback_deployment", related);
  EXPECT_NEAR(p.alpha, 2 + 4 * 9.5 / 11, 1e-12);
  EXPECT_NEAR(p.beta, 2 + 4 * 1.5 / 11, 1e-12);
  // A probe fix on another cause lends nothing.
  const Prior probes = HierarchicalPrior(a, "relax_probes", related);
  EXPECT_DOUBLE_EQ(
      probes.alpha,
      PriorFor("CrashLoopBackOff", "segfault", "relax_probes").alpha);
  // Nor is anything borrowed for an unclassified cause, or where the
  // cause speaks.
  v1::Analysis unknown = a;
  unknown.set_cause("unclassified");
  unknown.set_signature("CrashLoopBackOff/unclassified");
  EXPECT_TRUE(RelatedRecordsOf(unknown, all).empty());
  v1::Analysis bad = a;
  bad.set_cause("bad_release");
  bad.set_signature("CrashLoopBackOff/bad_release");
  add("Error/bad_release", "rollback_deployment", 10, 0);
  const Prior known =
      HierarchicalPrior(bad, "rollback_deployment", RelatedRecordsOf(bad, all));
  EXPECT_DOUBLE_EQ(known.alpha, 12.0);
  EXPECT_DOUBLE_EQ(known.beta, 3.0);
  // The selection reports the borrowed prior's mean.
  SelectorFixture f;
  SelectionOutcome out =
      SelectStrategy(a, MakeIncident("w", "d", "CrashLoopBackOff"), {},
                     f.strategies, {}, {}, 1, "k", 1, {}, {}, {}, related);
  bool saw = false;
  for (const auto& c : out.selection.candidates()) {
    if (c.strategy() != "rollback_deployment") continue;
    saw = true;
    EXPECT_NEAR(c.mean(), p.alpha / (p.alpha + p.beta), 1e-12);
  }
  EXPECT_TRUE(saw);
}

TEST(CatalogTest, ActsHarderFollowsEachParametersDirection) {
  v1::StrategyParams lo, hi;
  lo.set_memory_factor(1.5);
  hi.set_memory_factor(2.0);
  EXPECT_TRUE(ActsHarder(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, hi, lo));
  EXPECT_FALSE(ActsHarder(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, lo, hi));
  EXPECT_FALSE(ActsHarder(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, lo, lo));
  v1::StrategyParams less, more;
  less.set_requests_factor(0.5);
  more.set_requests_factor(0.8);
  // Lower requests free more room.
  EXPECT_TRUE(ActsHarder(v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS, less, more));
  EXPECT_FALSE(ActsHarder(v1::ACTION_TYPE_LOWER_RESOURCE_REQUESTS, more, less));
  EXPECT_FALSE(ActsHarder(v1::ACTION_TYPE_DELETE_POD, hi, lo));
}

TEST(SelectorTest, SameSeedSameChoice) {
  SelectorFixture f;
  v1::Analysis a;
  a.set_error_family("CrashLoopBackOff");
  a.set_cause("probe_failure");
  a.set_signature("CrashLoopBackOff/probe_failure");
  v1::Incident in = MakeIncident("w", "d", "CrashLoopBackOff");
  for (uint64_t seed = 0; seed < 50; ++seed) {
    auto x = SelectStrategy(a, in, {}, f.strategies, {}, {}, 1, "k", seed, {});
    auto y = SelectStrategy(a, in, {}, f.strategies, {}, {}, 1, "k", seed, {});
    EXPECT_EQ(x.selection.strategy().name(), y.selection.strategy().name());
  }
}

// ---------------------------------------------------------------- reflector

ReflectionRequest Request(v1::ActionType type, bool recovered, bool success) {
  ReflectionRequest r;
  r.analysis.set_error_family("OOMKilled");
  r.analysis.set_cause("memory_limit_too_low");
  r.analysis.set_signature("OOMKilled/memory_limit_too_low");
  const ActionSpec* spec = FindAction(type);
  r.selection.mutable_strategy()->set_name(spec->name);
  *r.selection.mutable_strategy()->mutable_params() = ClampParams({});
  r.selection.mutable_action()->set_type(type);
  *r.selection.mutable_action()->mutable_params() = ClampParams({});
  r.observation.set_recovered(recovered);
  r.observation.set_success(success);
  r.observation.set_failure_reason(success ? "" : "OOMKilled");
  r.observation.set_window_s(120);
  r.observation.set_time_to_recovery_s(30);
  return r;
}

TEST(HeuristicReflectorTest, MemoryRaiseTooSmallProposesABoundedBiggerRaise) {
  v1::Reflection r = HeuristicReflector::ReflectNow(
      Request(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, false, false));
  ASSERT_EQ(r.proposed_changes_size(), 1);
  double next = r.proposed_changes(0).params().memory_factor();
  EXPECT_GT(next, 1.5);
  EXPECT_LE(next, 3.0);
  EXPECT_GE(r.quality(), 0.5);
}

TEST(HeuristicReflectorTest, ShallowDepthProposesNoChanges) {
  ReflectionRequest req =
      Request(v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT, false, false);
  req.depth = ReflectionDepth::kShallow;
  EXPECT_EQ(HeuristicReflector::ReflectNow(req).proposed_changes_size(), 0);
}

TEST(HeuristicReflectorTest, RelapseIsExplainedAsSymptomRelief) {
  v1::Reflection r = HeuristicReflector::ReflectNow(
      Request(v1::ACTION_TYPE_DELETE_POD, true, false));
  EXPECT_THAT(r.text(), HasSubstr("relapsed"));
  EXPECT_THAT(r.lessons(), ::testing::Contains(HasSubstr("relapse")));
}

TEST(HeuristicReflectorTest, UnexplainedFailureHasLowQualityAndMetaImprovesIt) {
  ReflectionRequest req = Request(v1::ACTION_TYPE_DELETE_POD, false, false);
  v1::Reflection first = HeuristicReflector::ReflectNow(req);
  EXPECT_LT(first.quality(), 0.5);
  req.meta = true;
  req.previous = first;
  v1::Reflection meta = HeuristicReflector::ReflectNow(req);
  EXPECT_TRUE(meta.meta());
  EXPECT_GT(meta.quality(), first.quality());
  EXPECT_THAT(meta.text(), HasSubstr("increase_memory_limit"));
}

// ---------------------------------------------------------------- metrics

TEST(MetricsTest, ComputesLearningFiguresFromEpisodes) {
  InMemoryKnowledgeStore store;
  // 6 OOM incidents: the first three fail at attempt 1 and succeed at 2,
  // the last three succeed at attempt 1.
  absl::Time t = absl::FromUnixSeconds(1'700'000'000);
  for (int i = 0; i < 6; ++i) {
    for (int attempt = 1; attempt <= (i < 3 ? 2 : 1); ++attempt) {
      LearningCommit c;
      v1::Episode& e = c.episode;
      e.set_id(absl::StrCat("wf", i, "/", attempt));
      e.set_workflow_id(absl::StrCat("wf", i));
      *e.mutable_time() = ToProto(t += absl::Seconds(1));
      e.set_error_type("OOMKilled");
      e.set_signature("OOMKilled/memory_limit_too_low");
      e.set_strategy(attempt == 1 && i < 3 ? "delete_pod"
                                           : "increase_memory_limit");
      e.set_attempt(attempt);
      e.set_success(!(attempt == 1 && i < 3));
      e.set_confidence(0.5);
      e.set_reflection_quality(0.8);
      e.set_time_to_recovery_s(e.success() ? 30 : 0);
      ASSERT_THAT(store.CommitLearning(c), IsOk());
    }
  }
  absl::StatusOr<v1::GetMetricsResponse> m = ComputeLearningMetrics(store);
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(m->incidents(), 6);
  EXPECT_EQ(m->episodes(), 9);
  EXPECT_DOUBLE_EQ(m->success_rate(), 1.0);
  EXPECT_DOUBLE_EQ(m->first_attempt_success_rate(), 0.5);
  EXPECT_DOUBLE_EQ(m->mean_attempts(), 1.5);
  EXPECT_DOUBLE_EQ(m->brier_score(), 0.25);
  ASSERT_EQ(m->error_types_size(), 1);
  EXPECT_DOUBLE_EQ(m->error_types(0).first_third_first_attempt_success(), 0.0);
  EXPECT_DOUBLE_EQ(m->error_types(0).last_third_first_attempt_success(), 1.0);
  EXPECT_DOUBLE_EQ(m->error_types(0).learning_velocity(), 1.0);
}

// ---------------------------------------------------------------- cause priors

struct FirstChoice {
  const char* family;
  const char* cause;
  bool healthy_image;
  bool pull_secret;
  const char* expected;  // strategy, or "escalate:<recommended>"
};

TEST(CatalogTest, FirstChoiceFollowsTheCause) {
  SelectorFixture f;
  const FirstChoice kCases[] = {
      {"OOMKilled", "memory_limit_too_low", false, false,
       "increase_memory_limit"},
      {"CrashLoopBackOff", "bad_release", false, false, "rollback_deployment"},
      {"ImagePullBackOff", "image_not_found", true, false, "patch_image"},
      {"ImagePullBackOff", "image_not_found", false, false,
       "rollback_deployment"},
      {"ImagePullBackOff", "registry_auth", false, true, "attach_pull_secret"},
      {"ImagePullBackOff", "registry_auth", false, false,
       "escalate:create_missing_config"},
      {"CreateContainerConfigError", "missing_configmap", false, false,
       "escalate:create_missing_config"},
      {"Pending", "unbound_volume", false, false,
       "escalate:create_missing_config"},
      {"Pending", "untolerated_taint", false, false,
       "escalate:relax_node_selector"},
      // A selector no node matches came with a revision: roll back first
      // (tier A); relax_node_selector is recommended if that fails.
      {"Pending", "node_selector_mismatch", false, false,
       "rollback_deployment"},
      {"CreateContainerConfigError", "missing_config_key", false, false,
       "rollback_deployment"},
      {"CreateContainerConfigError", "missing_secret", false, false,
       "escalate:create_missing_config"},
      {"Pending", "insufficient_cpu", false, false, "lower_resource_requests"},
      {"Pending", "insufficient_extended_resource", false, false,
       "escalate:scale_node_pool"},
      {"CrashLoopBackOff", "probe_failure", false, false, "relax_probes"},
      {"NotReady", "readiness_probe_failure", false, false, "relax_probes"},
      {"CrashLoopBackOff", "certificate_expired", false, false, "escalate"},
      {"CrashLoopBackOff", "dependency_unavailable", false, false, "escalate"},
  };
  for (const FirstChoice& c : kCases) {
    v1::Analysis a;
    a.set_error_family(c.family);
    a.set_cause(c.cause);
    a.set_signature(absl::StrCat(c.family, "/", c.cause));
    v1::Diagnosis dx;
    if (c.healthy_image) dx.set_last_healthy_image("img:1");
    if (c.pull_secret) dx.add_available_pull_secrets("regcred");
    SelectionOutcome out =
        SelectStrategy(a, MakeIncident("w", "d", c.family), dx, f.strategies,
                       {}, {}, 1, "k", 1, SelectorOptions());
    std::string got;
    if (out.chosen) {
      got = out.selection.strategy().name();
    } else {
      got = "escalate";
      const ActionSpec* spec = FindAction(out.recommended_action.type());
      if (spec != nullptr && spec->tier == v1::SAFETY_TIER_C) {
        absl::StrAppend(&got, ":", spec->name);
      }
    }
    EXPECT_EQ(got, c.expected) << a.signature();
  }
}

}  // namespace
}  // namespace reflexion::core

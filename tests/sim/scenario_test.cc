#include "core/sim/scenario.h"

#include <fstream>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "core/sim/default_scenarios.h"
#include "core/sim/simulated_cluster.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::sim {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::HasSubstr;

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

// A one-scenario document whose `actions` block is `actions`.
std::string WithActions(const std::string& actions) {
  return absl::StrCat(
      "scenarios:\n"
      "  - id: s1\n"
      "    error_types: [CrashLoopBackOff]\n"
      "    actions:\n",
      actions);
}

TEST(ScenarioTest, EmbeddedDefaultsParseIntoAtLeastSixteenScenarios) {
  absl::StatusOr<std::vector<Scenario>> scenarios =
      ParseScenarios(DefaultScenariosYaml());
  ASSERT_THAT(scenarios, IsOk());
  EXPECT_GE(scenarios->size(), 16u);
  int catch_all = 0;
  for (const Scenario& s : *scenarios) {
    EXPECT_FALSE(s.actions.empty()) << s.id;
    EXPECT_FALSE(s.root_cause.empty()) << s.id;
    EXPECT_EQ(s.signals.container_statuses_size(), 1) << s.id;
    catch_all += s.IsCatchAll();
  }
  EXPECT_EQ(catch_all, 1);
}

TEST(ScenarioTest, EmbeddedDefaultsShareAtLeastThreeErrorTypes) {
  absl::StatusOr<std::vector<Scenario>> scenarios =
      ParseScenarios(DefaultScenariosYaml());
  ASSERT_THAT(scenarios, IsOk());
  std::map<std::string, int> scenarios_per_type;
  for (const Scenario& s : *scenarios) {
    for (const std::string& t : s.error_types) ++scenarios_per_type[t];
  }
  int shared = 0;
  for (const auto& [type, n] : scenarios_per_type) shared += n >= 2;
  EXPECT_GE(shared, 3);
}

TEST(ScenarioTest, EmbeddedDefaultsHonourTheDocumentedProbabilities) {
  absl::StatusOr<std::vector<Scenario>> scenarios =
      ParseScenarios(DefaultScenariosYaml());
  ASSERT_THAT(scenarios, IsOk());
  const Scenario* batch = nullptr;
  for (const Scenario& s : *scenarios) {
    if (s.id == "oom-batch-peak") batch = &s;
  }
  ASSERT_NE(batch, nullptr);
  const ActionModel* raise =
      batch->FindAction(reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
  ASSERT_NE(raise, nullptr);
  EXPECT_DOUBLE_EQ(raise->success, 0.9);
  ASSERT_TRUE(raise->min_memory_factor.has_value());
  EXPECT_DOUBLE_EQ(*raise->min_memory_factor, 2.0);
  EXPECT_DOUBLE_EQ(raise->success_below, 0.1);
  EXPECT_EQ(batch->FindAction(reflexion::v1::ACTION_TYPE_RELAX_PROBES),
            nullptr);
}

TEST(ScenarioTest, MalformedYamlIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios("scenarios: [ {id: a, error_types: [X]"),
              StatusIs(kInvalid, HasSubstr("malformed YAML")));
}

TEST(ScenarioTest, DocumentWithoutScenariosListIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios(""), StatusIs(kInvalid, HasSubstr("scenarios")));
  EXPECT_THAT(ParseScenarios("just a string"),
              StatusIs(kInvalid, HasSubstr("scenarios")));
}

TEST(ScenarioTest, EmptyScenarioListIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios("scenarios: []"),
              StatusIs(kInvalid, HasSubstr("no scenarios")));
}

TEST(ScenarioTest, UnknownActionNameIsInvalidArgumentNamingScenarioAndAction) {
  EXPECT_THAT(
      ParseScenarios(WithActions("      reboot_node: {success: 0.5}\n")),
      StatusIs(kInvalid, HasSubstr("scenario \"s1\": actions.reboot_node: "
                                   "unknown action \"reboot_node\"")));
}

TEST(ScenarioTest, ProbabilityAboveOneIsInvalidArgumentNamingTheField) {
  EXPECT_THAT(
      ParseScenarios(WithActions("      delete_pod: {success: 1.5}\n")),
      StatusIs(kInvalid, HasSubstr("scenario \"s1\": actions.delete_pod."
                                   "success: 1.5 is outside [0, 1]")));
}

TEST(ScenarioTest, NegativeRelapseIsInvalidArgumentNamingTheField) {
  EXPECT_THAT(ParseScenarios(WithActions(
                  "      delete_pod: {success: 0.5, relapse: -0.1}\n")),
              StatusIs(kInvalid, HasSubstr("actions.delete_pod.relapse")));
}

TEST(ScenarioTest, NonNumericProbabilityIsInvalidArgument) {
  EXPECT_THAT(
      ParseScenarios(WithActions("      delete_pod: {success: high}\n")),
      StatusIs(kInvalid, HasSubstr("actions.delete_pod.success: expected a "
                                   "number, got \"high\"")));
}

TEST(ScenarioTest, MissingSuccessIsInvalidArgument) {
  EXPECT_THAT(
      ParseScenarios(WithActions("      delete_pod: {recovery_s: 10}\n")),
      StatusIs(kInvalid, HasSubstr("actions.delete_pod.success: missing")));
}

TEST(ScenarioTest, MisspelledFieldIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios(WithActions("      delete_pod: {sucess: 0.5}\n")),
              StatusIs(kInvalid,
                       HasSubstr("actions.delete_pod.sucess: unknown field")));
}

TEST(ScenarioTest, MinMemoryFactorOnAnotherActionIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios(WithActions(
                  "      delete_pod: {success: 0.5, min_memory_factor: 2}\n")),
              StatusIs(kInvalid, HasSubstr("min_memory_factor")));
}

TEST(ScenarioTest, DuplicateIdsAreInvalidArgument) {
  EXPECT_THAT(
      ParseScenarios("scenarios:\n"
                     "  - id: twin\n"
                     "    error_types: [A]\n"
                     "    actions: {delete_pod: {success: 1}}\n"
                     "  - id: twin\n"
                     "    error_types: [B]\n"
                     "    actions: {delete_pod: {success: 1}}\n"),
      StatusIs(kInvalid, HasSubstr("scenario \"twin\": id: duplicate")));
}

TEST(ScenarioTest, MissingErrorTypesIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios("scenarios:\n"
                             "  - id: s1\n"
                             "    actions: {delete_pod: {success: 1}}\n"),
              StatusIs(kInvalid, HasSubstr("scenario \"s1\": error_types")));
}

TEST(ScenarioTest, ZeroWeightIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios("scenarios:\n"
                             "  - id: s1\n"
                             "    error_types: [A]\n"
                             "    weight: 0\n"
                             "    actions: {delete_pod: {success: 1}}\n"),
              StatusIs(kInvalid, HasSubstr("scenario \"s1\": weight")));
}

TEST(ScenarioTest, NullComplexKeyIsInvalidArgumentNotACrash) {
  EXPECT_THAT(ParseScenarios("? :\n"), StatusIs(kInvalid));
  EXPECT_THAT(ParseScenarios("scenarios:\n  - ? :\n"),
              StatusIs(kInvalid, HasSubstr("scenarios[0]")));
  EXPECT_THAT(ParseScenarios(WithActions("      ? [delete_pod]\n"
                                         "      : {success: 1}\n")),
              StatusIs(kInvalid, HasSubstr("scenario \"s1\": actions")));
}

TEST(ScenarioTest, FieldGivenTwiceIsInvalidArgumentNamingTheField) {
  EXPECT_THAT(ParseScenarios(WithActions(
                  "      delete_pod: {success: 0.5, success: 0.9}\n")),
              StatusIs(kInvalid, HasSubstr("scenario \"s1\": actions."
                                           "delete_pod.success: given twice")));
  EXPECT_THAT(ParseScenarios("scenarios:\n"
                             "  - id: s1\n"
                             "    id: s2\n"
                             "    error_types: [A]\n"
                             "    actions: {delete_pod: {success: 1}}\n"),
              StatusIs(kInvalid, HasSubstr("id: given twice")));
}

TEST(ScenarioTest, ScenariosListGivenTwiceIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios("scenarios: []\n"
                             "scenarios:\n"
                             "  - id: s1\n"
                             "    error_types: [A]\n"
                             "    actions: {delete_pod: {success: 1}}\n"),
              StatusIs(kInvalid, HasSubstr("scenarios: given twice")));
}

TEST(ScenarioTest, RecursiveAliasIsInvalidArgumentNotFollowedForever) {
  EXPECT_THAT(ParseScenarios("scenarios: &s [*s]\n"),
              StatusIs(kInvalid, HasSubstr("scenarios[0]: expected a map")));
  EXPECT_THAT(ParseScenarios("scenarios:\n"
                             "  - id: s1\n"
                             "    error_types: [A]\n"
                             "    signals: &g {events: [*g]}\n"
                             "    actions: {delete_pod: {success: 1}}\n"),
              StatusIs(kInvalid, HasSubstr("signals.events[0].events: "
                                           "unknown field")));
}

TEST(ScenarioTest, NonScalarValueWhereANumberIsExpectedIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios("scenarios:\n"
                             "  - id: s1\n"
                             "    error_types: [A]\n"
                             "    weight: [1]\n"
                             "    actions: {delete_pod: {success: 1}}\n"),
              StatusIs(kInvalid, HasSubstr("weight: expected a number")));
}

TEST(ScenarioTest, IntegerOutsideItsTypeIsInvalidArgument) {
  EXPECT_THAT(
      ParseScenarios("scenarios:\n"
                     "  - id: s1\n"
                     "    error_types: [A]\n"
                     "    signals: {container: {restart_count: 99999999999}}\n"
                     "    actions: {delete_pod: {success: 1}}\n"),
      StatusIs(kInvalid, HasSubstr("container.restart_count: expected an "
                                   "integer")));
}

TEST(ScenarioTest, DeeplyNestedDocumentIsInvalidArgument) {
  EXPECT_THAT(ParseScenarios("scenarios: " + std::string(100000, '[')),
              StatusIs(kInvalid, HasSubstr("malformed YAML")));
}

TEST(ScenarioTest, ActionNamesRoundTripForEveryCatalogAction) {
  for (int v = reflexion::v1::ActionType_MIN + 1;
       v <= reflexion::v1::ActionType_MAX; ++v) {
    const auto type = static_cast<reflexion::v1::ActionType>(v);
    const std::string name = ActionName(type);
    ASSERT_FALSE(name.empty()) << v;
    EXPECT_THAT(ActionTypeFromName(name), IsOk());
    EXPECT_EQ(*ActionTypeFromName(name), type);
  }
  EXPECT_EQ(ActionName(reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT),
            "increase_memory_limit");
  EXPECT_EQ(ActionName(reflexion::v1::ACTION_TYPE_UNSPECIFIED), "");
}

TEST(ScenarioTest, FromFileOnMissingPathIsNotFound) {
  EXPECT_THAT(SimulatedCluster::FromFile(
                  absl::StrCat(::testing::TempDir(), "/no-such-file.yaml"), 1),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(ScenarioTest, FromFileLoadsScenariosAndNamesTheFileInErrors) {
  const std::string good = absl::StrCat(::testing::TempDir(), "/good.yaml");
  std::ofstream(good) << WithActions("      delete_pod: {success: 1}\n");
  absl::StatusOr<std::unique_ptr<SimulatedCluster>> cluster =
      SimulatedCluster::FromFile(good, 1);
  ASSERT_THAT(cluster, IsOk());
  EXPECT_EQ((*cluster)->ScenarioIds(), std::vector<std::string>{"s1"});

  const std::string bad = absl::StrCat(::testing::TempDir(), "/bad.yaml");
  std::ofstream(bad) << WithActions("      delete_pod: {success: 2}\n");
  EXPECT_THAT(SimulatedCluster::FromFile(bad, 1),
              StatusIs(kInvalid, HasSubstr("bad.yaml: scenario \"s1\"")));
}

}  // namespace
}  // namespace reflexion::sim

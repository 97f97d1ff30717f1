#include "core/sim/simulated_cluster.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "core/reflexion/analyzer.h"
#include "core/sim/default_scenarios.h"
#include "core/sim/scenario.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/sim/sim_test_util.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::sim {
namespace {

using ::reflexion::sim::testing::Diagnose;
using ::reflexion::sim::testing::Execute;
using ::reflexion::sim::testing::MakeAction;
using ::reflexion::sim::testing::MakeIncident;
using ::reflexion::sim::testing::Observe;
using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::reflexion::v1::ACTION_TYPE_DELETE_POD;
using ::reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT;
using ::reflexion::v1::ACTION_TYPE_RELAX_PROBES;
using ::reflexion::v1::ACTION_TYPE_ROLLBACK_DEPLOYMENT;
using ::reflexion::v1::ACTION_TYPE_UNSPECIFIED;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr uint64_t kSeed = 20240514;

std::unique_ptr<SimulatedCluster> Defaults(uint64_t seed = kSeed) {
  absl::StatusOr<std::unique_ptr<SimulatedCluster>> c =
      SimulatedCluster::WithDefaultScenarios(seed);
  EXPECT_THAT(c, IsOk());
  return c.ok() ? *std::move(c) : nullptr;
}

std::unique_ptr<SimulatedCluster> FromYaml(const std::string& yaml,
                                           uint64_t seed = kSeed) {
  absl::StatusOr<std::unique_ptr<SimulatedCluster>> c =
      SimulatedCluster::FromYaml(yaml, seed);
  EXPECT_THAT(c, IsOk());
  return c.ok() ? *std::move(c) : nullptr;
}

// One crash-looping scenario with the given delete_pod model.
std::string OneScenario(const std::string& delete_pod_model) {
  return absl::StrCat(
      "scenarios:\n"
      "  - id: only\n"
      "    error_types: [CrashLoopBackOff]\n"
      "    root_cause: ROOT-CAUSE-MARKER the config is wrong\n"
      "    signals:\n"
      "      container:\n"
      "        name: app\n"
      "        image: example/app:1\n"
      "        restart_count: 3\n"
      "        last_termination_reason: Error\n"
      "        last_exit_code: 1\n"
      "        waiting_reason: CrashLoopBackOff\n"
      "        waiting_message: back-off 40s restarting failed "
      "container=app pod={pod}_{namespace}\n"
      "      events:\n"
      "        - {type: Warning, reason: BackOff, message: 'Back-off "
      "restarting failed container app in pod {pod}', count: 4}\n"
      "      logs: 'fatal: cannot start'\n"
      "    actions:\n"
      "      delete_pod: ",
      delete_pod_model, "\n");
}

const char* const kErrorTypes[] = {
    "ImagePullBackOff", "ErrImagePull",
    "InvalidImageName", "CrashLoopBackOff",
    "OOMKilled",        "CreateContainerConfigError",
    "Pending",          "Evicted",
    "FailedScheduling", "SomethingNobodyKnows"};

TEST(SimulatedClusterTest, NameIsSimulated) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  EXPECT_EQ(cluster->Name(), "simulated");
}

TEST(SimulatedClusterTest,
     EmbeddedDefaultsSpreadSeveralErrorTypesOverScenarios) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  EXPECT_GE(cluster->ScenarioIds().size(), 12u);
  // Count, per error type, how many distinct scenarios pods land in.
  int shared_types = 0;
  for (const char* type : kErrorTypes) {
    std::set<std::string> seen;
    for (int i = 0; i < 60; ++i) {
      const std::string pod = absl::StrCat("web-", i);
      ASSERT_THAT(Diagnose(*cluster, MakeIncident("shop", pod, type)), IsOk());
      absl::StatusOr<std::string> id = cluster->ScenarioOf("shop", pod);
      ASSERT_THAT(id, IsOk());
      seen.insert(*id);
    }
    shared_types += seen.size() >= 2;
  }
  EXPECT_GE(shared_types, 3);
}

TEST(SimulatedClusterTest, SameSeedGivesSameAssignmentsAndOutcomes) {
  auto a = Defaults(7);
  auto b = Defaults(7);
  auto other = Defaults(8);
  ASSERT_TRUE(a && b && other);
  int assignments_differing_from_other_seed = 0;
  for (int i = 0; i < 100; ++i) {
    const std::string pod = absl::StrCat("pod-", i);
    const char* type = kErrorTypes[i % 10];
    for (SimulatedCluster* c : {a.get(), b.get(), other.get()}) {
      ASSERT_THAT(Diagnose(*c, MakeIncident("ns", pod, type)), IsOk());
      ASSERT_THAT(Execute(*c, MakeAction("ns", pod, ACTION_TYPE_DELETE_POD,
                                         absl::StrCat("key-", i))),
                  IsOk());
    }
    EXPECT_EQ(*a->ScenarioOf("ns", pod), *b->ScenarioOf("ns", pod));
    assignments_differing_from_other_seed +=
        *a->ScenarioOf("ns", pod) != *other->ScenarioOf("ns", pod);
  }
  const std::vector<ExecutedAction> log_a = a->ExecutionLog();
  const std::vector<ExecutedAction> log_b = b->ExecutionLog();
  ASSERT_EQ(log_a.size(), 100u);
  ASSERT_EQ(log_b.size(), 100u);
  for (size_t i = 0; i < log_a.size(); ++i) {
    EXPECT_EQ(log_a[i].scenario_id, log_b[i].scenario_id);
    EXPECT_EQ(log_a[i].recovered, log_b[i].recovered) << i;
    EXPECT_EQ(log_a[i].relapsed, log_b[i].relapsed) << i;
  }
  // The seed matters: another seed assigns many pods differently.
  EXPECT_GT(assignments_differing_from_other_seed, 10);
}

TEST(SimulatedClusterTest, OutcomesDependOnTheIncidentAndActionNotTheKey) {
  // Two clusters with one seed, the same incidents, and keys holding
  // different workflow ids (another start of the data dir): the outcomes
  // are the same. Another seed gives other outcomes.
  auto a = Defaults(7);
  auto b = Defaults(7);
  auto other = Defaults(8);
  ASSERT_TRUE(a && b && other);
  for (int i = 0; i < 200; ++i) {
    const std::string pod = absl::StrCat("pod-", i);
    const char* type = kErrorTypes[i % 10];
    const std::string prefix[] = {"wf-1-", "wf-2-", "wf-1-"};
    SimulatedCluster* clusters[] = {a.get(), b.get(), other.get()};
    for (int c = 0; c < 3; ++c) {
      ASSERT_THAT(Diagnose(*clusters[c], MakeIncident("ns", pod, type)),
                  IsOk());
      for (reflexion::v1::ActionType t :
           {ACTION_TYPE_DELETE_POD, ACTION_TYPE_ROLLBACK_DEPLOYMENT}) {
        ASSERT_THAT(
            Execute(*clusters[c],
                    MakeAction("ns", pod, t,
                               absl::StrCat(prefix[c], i, "/", ActionName(t)))),
            IsOk());
      }
    }
  }
  const std::vector<ExecutedAction> log_a = a->ExecutionLog();
  const std::vector<ExecutedAction> log_b = b->ExecutionLog();
  const std::vector<ExecutedAction> log_o = other->ExecutionLog();
  ASSERT_EQ(log_a.size(), 400u);
  ASSERT_EQ(log_b.size(), 400u);
  ASSERT_EQ(log_o.size(), 400u);
  int differ_from_other_seed = 0;
  for (size_t i = 0; i < log_a.size(); ++i) {
    EXPECT_EQ(log_a[i].recovered, log_b[i].recovered) << i;
    EXPECT_EQ(log_a[i].relapsed, log_b[i].relapsed) << i;
    differ_from_other_seed += log_a[i].recovered != log_o[i].recovered ||
                              log_a[i].relapsed != log_o[i].relapsed;
  }
  EXPECT_GT(differ_from_other_seed, 20);
}

TEST(SimulatedClusterTest, TheSameActionFaresTheSameAtAnyAttempt) {
  // rollback first on one cluster, second (after delete_pod) on the other:
  // its outcome on each incident is the same.
  auto a = Defaults(7);
  auto b = Defaults(7);
  ASSERT_TRUE(a && b);
  int recovered = 0;
  for (int i = 0; i < 100; ++i) {
    const std::string pod = absl::StrCat("crash-", i);
    for (SimulatedCluster* c : {a.get(), b.get()}) {
      ASSERT_THAT(Diagnose(*c, MakeIncident("ns", pod, "CrashLoopBackOff")),
                  IsOk());
    }
    ASSERT_THAT(
        Execute(*a, MakeAction("ns", pod, ACTION_TYPE_ROLLBACK_DEPLOYMENT,
                               absl::StrCat("a-", i, "/1"))),
        IsOk());
    ASSERT_THAT(Execute(*b, MakeAction("ns", pod, ACTION_TYPE_DELETE_POD,
                                       absl::StrCat("b-", i, "/1"))),
                IsOk());
    ASSERT_THAT(
        Execute(*b, MakeAction("ns", pod, ACTION_TYPE_ROLLBACK_DEPLOYMENT,
                               absl::StrCat("b-", i, "/2"))),
        IsOk());
  }
  const std::vector<ExecutedAction> log_a = a->ExecutionLog();
  const std::vector<ExecutedAction> log_b = b->ExecutionLog();
  ASSERT_EQ(log_a.size(), 100u);
  ASSERT_EQ(log_b.size(), 200u);
  for (size_t i = 0; i < log_a.size(); ++i) {
    EXPECT_EQ(log_a[i].recovered, log_b[2 * i + 1].recovered) << i;
    recovered += log_a[i].recovered;
  }
  EXPECT_GT(recovered, 0);
  EXPECT_LT(recovered, 100);
}

TEST(SimulatedClusterTest, ARepeatedIncidentOfAPodDrawsAnew) {
  // The n-th delete_pod on a pod draws differently from the first, so a
  // pod failing again is not doomed to the same outcome.
  auto cluster = Defaults(7);
  ASSERT_NE(cluster, nullptr);
  int same = 0;
  for (int i = 0; i < 100; ++i) {
    const std::string pod = absl::StrCat("evicted-", i);
    for (int k = 0; k < 2; ++k) {
      ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", pod, "Evicted")),
                  IsOk());
      ASSERT_THAT(
          Execute(*cluster, MakeAction("ns", pod, ACTION_TYPE_DELETE_POD,
                                       absl::StrCat(pod, "/", k))),
          IsOk());
    }
  }
  const std::vector<ExecutedAction> log = cluster->ExecutionLog();
  ASSERT_EQ(log.size(), 200u);
  int recovered = 0;
  for (size_t i = 0; i < log.size(); i += 2) {
    same += log[i].recovered == log[i + 1].recovered;
    recovered += log[i].recovered + log[i + 1].recovered;
  }
  ASSERT_GT(recovered, 20);
  ASSERT_LT(recovered, 180);
  EXPECT_LT(same, 100);
}

TEST(SimulatedClusterTest, PodsOfOneErrorTypeSpreadOverAllItsScenarios) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  std::map<std::string, int> count;
  for (int i = 0; i < 150; ++i) {
    const std::string pod = absl::StrCat("checkout-7d9c8b6f5-", i);
    ASSERT_THAT(
        Diagnose(*cluster, MakeIncident("shop", pod, "CrashLoopBackOff")),
        IsOk());
    ++count[*cluster->ScenarioOf("shop", pod)];
  }
  ASSERT_EQ(count.size(), 3u);
  for (const auto& [id, n] : count) {
    EXPECT_GE(n, 25) << id;  // each expected ~50
  }
}

TEST(SimulatedClusterTest, ScenarioWeightsBiasAssignment) {
  auto cluster = FromYaml(
      "scenarios:\n"
      "  - {id: heavy, error_types: [X], weight: 9, actions: {delete_pod: "
      "{success: 1}}}\n"
      "  - {id: light, error_types: [X], actions: {delete_pod: {success: "
      "1}}}\n");
  ASSERT_NE(cluster, nullptr);
  int heavy = 0;
  for (int i = 0; i < 2000; ++i) {
    const std::string pod = absl::StrCat("p", i);
    ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", pod, "X")), IsOk());
    heavy += *cluster->ScenarioOf("ns", pod) == "heavy";
  }
  EXPECT_NEAR(heavy / 2000.0, 0.9, 0.03);
}

TEST(SimulatedClusterTest, DiagnoseReturnsSignalsWithPodNameAndSource) {
  auto cluster = FromYaml(OneScenario("{success: 1}"));
  ASSERT_NE(cluster, nullptr);
  absl::StatusOr<reflexion::v1::Diagnosis> d =
      Diagnose(*cluster, MakeIncident("shop", "web-5f7c", "CrashLoopBackOff"));
  ASSERT_THAT(d, IsOk());
  EXPECT_EQ(d->source(), "simulated");
  ASSERT_EQ(d->container_statuses_size(), 1);
  EXPECT_EQ(d->container_statuses(0).name(), "app");
  EXPECT_EQ(d->container_statuses(0).last_exit_code(), 1);
  EXPECT_EQ(d->container_statuses(0).waiting_message(),
            "back-off 40s restarting failed container=app pod=web-5f7c_shop");
  ASSERT_EQ(d->events_size(), 1);
  EXPECT_EQ(d->events(0).message(),
            "Back-off restarting failed container app in pod web-5f7c");
  EXPECT_EQ(d->events(0).count(), 4);
  EXPECT_EQ(d->logs(), "fatal: cannot start");
}

TEST(SimulatedClusterTest, RootCauseNeverLeavesTheSimulator) {
  auto cluster = FromYaml(OneScenario("{success: 0.5, relapse: 0.5}"));
  ASSERT_NE(cluster, nullptr);
  const auto action = [](int i) {
    return MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, absl::StrCat("k", i));
  };
  absl::StatusOr<reflexion::v1::Diagnosis> d =
      Diagnose(*cluster, MakeIncident("ns", "p", "CrashLoopBackOff"));
  ASSERT_THAT(d, IsOk());
  EXPECT_THAT(d->DebugString(), Not(HasSubstr("ROOT-CAUSE-MARKER")));
  for (int i = 0; i < 20; ++i) {  // successes, failures and relapses
    absl::StatusOr<reflexion::v1::ExecutionResult> r =
        Execute(*cluster, action(i));
    ASSERT_THAT(r, IsOk());
    EXPECT_THAT(r->DebugString(), Not(HasSubstr("ROOT-CAUSE-MARKER")));
    absl::StatusOr<reflexion::v1::Observation> o = Observe(*cluster, action(i));
    ASSERT_THAT(o, IsOk());
    EXPECT_THAT(o->DebugString(), Not(HasSubstr("ROOT-CAUSE-MARKER")));
  }
}

TEST(SimulatedClusterTest, DefaultDiagnosesNeverContainTheirRootCause) {
  absl::StatusOr<std::vector<Scenario>> scenarios =
      ParseScenarios(DefaultScenariosYaml());
  ASSERT_THAT(scenarios, IsOk());
  std::map<std::string, std::string> root_cause;
  for (const Scenario& s : *scenarios) root_cause[s.id] = s.root_cause;
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  std::set<std::string> covered;
  for (int i = 0; i < 400; ++i) {
    const std::string pod = absl::StrCat("pod-", i);
    absl::StatusOr<reflexion::v1::Diagnosis> d =
        Diagnose(*cluster, MakeIncident("shop", pod, kErrorTypes[i % 10]));
    ASSERT_THAT(d, IsOk());
    const std::string id = *cluster->ScenarioOf("shop", pod);
    covered.insert(id);
    ASSERT_FALSE(root_cause[id].empty()) << id;
    EXPECT_THAT(d->DebugString(), Not(HasSubstr(root_cause[id])));
  }
  EXPECT_EQ(covered.size(), scenarios->size());
}

TEST(SimulatedClusterTest, IdempotencyKeyExecutedTwiceAppliesOnce) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("shop", "web-1", "OOMKilled")),
              IsOk());
  const reflexion::v1::Action action =
      MakeAction("shop", "web-1", ACTION_TYPE_ROLLBACK_DEPLOYMENT, "wf-1/1");
  absl::StatusOr<reflexion::v1::ExecutionResult> first =
      Execute(*cluster, action);
  absl::StatusOr<reflexion::v1::ExecutionResult> second =
      Execute(*cluster, action);
  ASSERT_THAT(first, IsOk());
  ASSERT_THAT(second, IsOk());
  EXPECT_FALSE(first->deduplicated());
  EXPECT_TRUE(first->applied());
  EXPECT_EQ(first->executor(), "simulated");
  EXPECT_THAT(first->message(), HasSubstr("rolled back"));
  EXPECT_TRUE(second->deduplicated());
  EXPECT_EQ(second->message(), first->message());
  EXPECT_EQ(cluster->ExecutionLog().size(), 1u);
}

TEST(SimulatedClusterTest, ExecuteOnUndiagnosedPodIsNotFound) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  EXPECT_THAT(Execute(*cluster, MakeAction("shop", "ghost",
                                           ACTION_TYPE_DELETE_POD, "k1")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("shop/ghost")));
  EXPECT_THAT(cluster->ExecutionLog(), IsEmpty());
}

TEST(SimulatedClusterTest, ExecuteRejectsUnspecifiedTypeAndMissingKey) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "Evicted")), IsOk());
  EXPECT_THAT(
      Execute(*cluster, MakeAction("ns", "p", ACTION_TYPE_UNSPECIFIED, "k")),
      StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(
      Execute(*cluster, MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, "")),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("idempotency_key")));
  EXPECT_THAT(cluster->ExecutionLog(), IsEmpty());
}

TEST(SimulatedClusterTest, ObserveBeforeExecuteIsFailedPrecondition) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  const reflexion::v1::Action action =
      MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, "k");
  EXPECT_THAT(Observe(*cluster, action), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "Evicted")), IsOk());
  EXPECT_THAT(Observe(*cluster, action),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST(SimulatedClusterTest, DiagnoseStartsANewIncidentOnThePod) {
  auto cluster = FromYaml(OneScenario("{success: 1}"));
  ASSERT_NE(cluster, nullptr);
  const auto incident = MakeIncident("ns", "p", "CrashLoopBackOff");
  const auto action = MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, "k");
  ASSERT_THAT(Diagnose(*cluster, incident), IsOk());
  ASSERT_THAT(Execute(*cluster, action), IsOk());
  ASSERT_THAT(Observe(*cluster, action), IsOk());
  ASSERT_THAT(Diagnose(*cluster, incident), IsOk());
  // The new incident has no action yet...
  EXPECT_THAT(Observe(*cluster, MakeAction("ns", "p", ACTION_TYPE_DELETE_POD,
                                           "never-executed")),
              StatusIs(absl::StatusCode::kFailedPrecondition));
  // ...but an executed key's outcome stays observable (a workflow resumed
  // after a restart re-diagnoses, then observes the action it executed).
  EXPECT_THAT(Observe(*cluster, action), IsOk());
  // The key stays spent: the new incident needs a new key.
  absl::StatusOr<reflexion::v1::ExecutionResult> again =
      Execute(*cluster, action);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated());
}

TEST(SimulatedClusterTest, SuccessfulActionIsObservedHealthyWithRecoveryTime) {
  auto cluster = FromYaml(OneScenario("{success: 1, recovery_s: 50}"));
  ASSERT_NE(cluster, nullptr);
  const auto action = MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, "k");
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "CrashLoopBackOff")),
              IsOk());
  ASSERT_THAT(Execute(*cluster, action), IsOk());
  absl::StatusOr<reflexion::v1::Observation> o =
      Observe(*cluster, action, absl::Seconds(300));
  ASSERT_THAT(o, IsOk());
  EXPECT_TRUE(o->success());
  EXPECT_TRUE(o->recovered());
  EXPECT_GE(o->time_to_recovery_s(), 40);
  EXPECT_LE(o->time_to_recovery_s(), 60);
  EXPECT_EQ(o->window_s(), 300);
  EXPECT_EQ(o->restarts(), 0);
  EXPECT_EQ(o->failure_reason(), "");
  EXPECT_THAT(o->anomalies(), IsEmpty());
}

TEST(SimulatedClusterTest, FailedActionReportsTheWaitingReasonAndMessage) {
  auto cluster = FromYaml(OneScenario("{success: 0}"));
  ASSERT_NE(cluster, nullptr);
  const auto action = MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, "k");
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "CrashLoopBackOff")),
              IsOk());
  ASSERT_THAT(Execute(*cluster, action), IsOk());
  absl::StatusOr<reflexion::v1::Observation> o = Observe(*cluster, action);
  ASSERT_THAT(o, IsOk());
  EXPECT_FALSE(o->success());
  EXPECT_FALSE(o->recovered());
  EXPECT_EQ(o->time_to_recovery_s(), 0);
  EXPECT_EQ(o->failure_reason(), "CrashLoopBackOff");
  EXPECT_GE(o->restarts(), 2);
  EXPECT_THAT(o->signals(),
              Contains(HasSubstr("restarting failed container=app pod=p_ns")));
}

TEST(SimulatedClusterTest, FailureReasonFallsBackToTheReportedErrorType) {
  auto cluster = FromYaml(
      "scenarios:\n"
      "  - id: evicted\n"
      "    error_types: [Evicted]\n"
      "    signals:\n"
      "      events: [{reason: Evicted, message: 'The node was low on "
      "resource: memory.'}]\n"
      "    actions: {delete_pod: {success: 0}}\n");
  ASSERT_NE(cluster, nullptr);
  const auto action = MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, "k");
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "Evicted")), IsOk());
  ASSERT_THAT(Execute(*cluster, action), IsOk());
  absl::StatusOr<reflexion::v1::Observation> o = Observe(*cluster, action);
  ASSERT_THAT(o, IsOk());
  EXPECT_EQ(o->failure_reason(), "Evicted");
  EXPECT_EQ(o->restarts(), 0);  // the pod never ran
  EXPECT_THAT(o->signals(), Contains(HasSubstr("low on resource: memory")));
}

TEST(SimulatedClusterTest, RelapseIsRecoveredButNotSuccessful) {
  auto cluster = FromYaml(OneScenario("{success: 1, relapse: 1}"));
  ASSERT_NE(cluster, nullptr);
  const auto action = MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, "k");
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "CrashLoopBackOff")),
              IsOk());
  ASSERT_THAT(Execute(*cluster, action), IsOk());
  absl::StatusOr<reflexion::v1::Observation> o = Observe(*cluster, action);
  ASSERT_THAT(o, IsOk());
  EXPECT_TRUE(o->recovered());
  EXPECT_FALSE(o->success());
  EXPECT_GT(o->time_to_recovery_s(), 0);
  EXPECT_GE(o->restarts(), 1);
  EXPECT_EQ(o->failure_reason(), "CrashLoopBackOff");
  EXPECT_THAT(o->signals(), Contains(HasSubstr("became Ready after")));
  EXPECT_THAT(o->signals(), Contains(HasSubstr("then restarted after")));
  const std::vector<ExecutedAction> log = cluster->ExecutionLog();
  ASSERT_EQ(log.size(), 1u);
  EXPECT_TRUE(log[0].recovered);
  EXPECT_TRUE(log[0].relapsed);
}

TEST(SimulatedClusterTest, UnlistedActionNeverSucceeds) {
  auto cluster = FromYaml(OneScenario("{success: 1}"));
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "CrashLoopBackOff")),
              IsOk());
  for (int i = 0; i < 200; ++i) {
    ASSERT_THAT(
        Execute(*cluster, MakeAction("ns", "p", ACTION_TYPE_RELAX_PROBES,
                                     absl::StrCat("k", i))),
        IsOk());
  }
  for (const ExecutedAction& e : cluster->ExecutionLog()) {
    EXPECT_FALSE(e.recovered) << e.idempotency_key;
  }
}

TEST(SimulatedClusterTest, MinMemoryFactorIsHonouredOnOomBatchPeak) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  std::string pod;
  for (int i = 0; i < 200 && pod.empty(); ++i) {
    const std::string candidate = absl::StrCat("report-builder-", i);
    ASSERT_THAT(
        Diagnose(*cluster, MakeIncident("batch", candidate, "OOMKilled")),
        IsOk());
    if (*cluster->ScenarioOf("batch", candidate) == "oom-batch-peak") {
      pod = candidate;
    }
  }
  ASSERT_FALSE(pod.empty()) << "no pod assigned to oom-batch-peak";
  constexpr int kKeys = 400;
  int succeeded_at_1_5 = 0;
  int succeeded_at_2_0 = 0;
  for (int i = 0; i < kKeys; ++i) {
    for (double factor : {1.5, 2.0}) {
      reflexion::v1::Action action =
          MakeAction("batch", pod, ACTION_TYPE_INCREASE_MEMORY_LIMIT,
                     absl::StrCat("wf-", i, "/x", factor));
      action.mutable_params()->set_memory_factor(factor);
      ASSERT_THAT(Execute(*cluster, action), IsOk());
      absl::StatusOr<reflexion::v1::Observation> o = Observe(*cluster, action);
      ASSERT_THAT(o, IsOk());
      (factor < 2 ? succeeded_at_1_5 : succeeded_at_2_0) += o->success();
    }
  }
  // Configured: 0.9 at factor >= 2.0, 0.1 below.
  EXPECT_NEAR(succeeded_at_2_0 / double{kKeys}, 0.9, 0.06);
  EXPECT_NEAR(succeeded_at_1_5 / double{kKeys}, 0.1, 0.06);
}

TEST(SimulatedClusterTest, UnknownErrorTypeGoesToTheCatchAllScenario) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  for (int i = 0; i < 30; ++i) {
    const std::string pod = absl::StrCat("worker-", i);
    ASSERT_THAT(
        Diagnose(*cluster, MakeIncident("jobs", pod, "ContainerCannotRun")),
        IsOk());
    EXPECT_EQ(*cluster->ScenarioOf("jobs", pod), "unknown-segfault");
  }
}

TEST(SimulatedClusterTest, UnmatchedErrorTypeWithoutCatchAllIsNotFound) {
  auto cluster = FromYaml(OneScenario("{success: 1}"));
  ASSERT_NE(cluster, nullptr);
  EXPECT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "OOMKilled")),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("OOMKilled")));
  EXPECT_THAT(cluster->ScenarioOf("ns", "p"),
              StatusIs(absl::StatusCode::kNotFound));
}

TEST(SimulatedClusterTest, OutcomeFrequenciesMatchTheConfiguredProbabilities) {
  auto cluster = FromYaml(OneScenario("{success: 0.3, relapse: 0.5}"));
  ASSERT_NE(cluster, nullptr);
  ASSERT_THAT(Diagnose(*cluster, MakeIncident("ns", "p", "CrashLoopBackOff")),
              IsOk());
  constexpr int kKeys = 2000;
  for (int i = 0; i < kKeys; ++i) {
    ASSERT_THAT(Execute(*cluster, MakeAction("ns", "p", ACTION_TYPE_DELETE_POD,
                                             absl::StrCat("wf-", i, "/1"))),
                IsOk());
  }
  int recovered = 0;
  int relapsed = 0;
  for (const ExecutedAction& e : cluster->ExecutionLog()) {
    recovered += e.recovered;
    relapsed += e.relapsed;
  }
  // ~4 standard deviations: 0.010 for recovery, 0.020 for relapse.
  EXPECT_NEAR(recovered / double{kKeys}, 0.3, 0.04);
  ASSERT_GT(recovered, 0);
  EXPECT_NEAR(static_cast<double>(relapsed) / recovered, 0.5, 0.08);
}

TEST(SimulatedClusterTest, OutcomesDoNotDependOnThreadInterleaving) {
  auto serial = FromYaml(OneScenario("{success: 0.5, relapse: 0.3}"));
  auto threaded = FromYaml(OneScenario("{success: 0.5, relapse: 0.3}"));
  ASSERT_TRUE(serial && threaded);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 250;
  for (SimulatedCluster* c : {serial.get(), threaded.get()}) {
    for (int t = 0; t < kThreads; ++t) {
      ASSERT_THAT(Diagnose(*c, MakeIncident("ns", absl::StrCat("p", t),
                                            "CrashLoopBackOff")),
                  IsOk());
    }
  }
  const auto action = [](int t, int i) {
    return MakeAction("ns", absl::StrCat("p", t), ACTION_TYPE_DELETE_POD,
                      absl::StrCat("k", t, "-", i));
  };
  // Serial pod after pod (in reverse), threaded interleaved; each pod's
  // actions in the same order (an outcome depends on how many actions of
  // its type the pod had before, not on the other pods).
  for (int t = kThreads - 1; t >= 0; --t) {
    for (int i = 0; i < kPerThread; ++i) {
      ASSERT_THAT(Execute(*serial, action(t, i)), IsOk());
    }
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        EXPECT_THAT(Execute(*threaded, action(t, i)), IsOk());
        EXPECT_THAT(Observe(*threaded, action(t, i)), IsOk());
      }
    });
  }
  for (std::thread& th : threads) th.join();

  std::map<std::string, std::pair<bool, bool>> expected;
  for (const ExecutedAction& e : serial->ExecutionLog()) {
    expected[e.idempotency_key] = {e.recovered, e.relapsed};
  }
  const std::vector<ExecutedAction> log = threaded->ExecutionLog();
  ASSERT_EQ(log.size(), size_t{kThreads * kPerThread});
  for (const ExecutedAction& e : log) {
    EXPECT_EQ((std::pair<bool, bool>{e.recovered, e.relapsed}),
              expected[e.idempotency_key])
        << e.idempotency_key;
  }
}

TEST(SimulatedClusterTest, CallbacksCompleteBeforeTheCallReturns) {
  auto cluster = Defaults();
  ASSERT_NE(cluster, nullptr);
  bool called = false;
  cluster->Diagnose(MakeIncident("ns", "p", "Evicted"),
                    [&called](absl::StatusOr<reflexion::v1::Diagnosis> d) {
                      EXPECT_THAT(d, IsOk());
                      called = true;
                    });
  EXPECT_TRUE(called);
}

TEST(SimulatedClusterJournalTest, ExecutedActionsSurviveARestart) {
  std::string path = ::testing::TempDir() + "/sim-journal-" +
                     std::to_string(::getpid()) + ".log";
  std::remove(path.c_str());
  const auto incident = MakeIncident("ns", "p", "CrashLoopBackOff");
  const auto action = MakeAction("ns", "p", ACTION_TYPE_DELETE_POD, "wf/1");
  bool recovered;
  {
    auto first = FromYaml(OneScenario("{success: 0.5}"));
    ASSERT_NE(first, nullptr);
    ASSERT_THAT(first->EnableJournal(path), IsOk());
    ASSERT_THAT(Diagnose(*first, incident), IsOk());
    ASSERT_THAT(Execute(*first, action), IsOk());
    auto obs = Observe(*first, action);
    ASSERT_THAT(obs, IsOk());
    recovered = obs->recovered();
  }  // the process "dies"
  auto second = FromYaml(OneScenario("{success: 0.5}"));
  ASSERT_NE(second, nullptr);
  ASSERT_THAT(second->EnableJournal(path), IsOk());
  EXPECT_EQ(second->ExecutionLog().size(), 1u);
  // Re-executing the same key after the restart applies nothing.
  ASSERT_THAT(Diagnose(*second, incident), IsOk());
  auto again = Execute(*second, action);
  ASSERT_THAT(again, IsOk());
  EXPECT_TRUE(again->deduplicated());
  EXPECT_EQ(second->ExecutionLog().size(), 1u);
  auto obs = Observe(*second, action);
  ASSERT_THAT(obs, IsOk());
  EXPECT_EQ(obs->recovered(), recovered);
  std::remove(path.c_str());
}

TEST(SimulatedClusterJournalTest, ACorruptJournalIsDataLossNamingTheLine) {
  std::string path = ::testing::TempDir() + "/sim-journal-bad-" +
                     std::to_string(::getpid()) + ".log";
  {
    std::ofstream out(path);
    out << "zz-not-hex\t0\tCrashLoopBackOff\n";
  }
  auto cluster = FromYaml(OneScenario("{success: 1}"));
  ASSERT_NE(cluster, nullptr);
  EXPECT_THAT(cluster->EnableJournal(path),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("line 1")));
  std::remove(path.c_str());
}

// An incident that carries a pod object: the simulated world agrees with
// it. Diagnose adds nothing the pod says otherwise (no statuses, events,
// logs or image of a scenario), and the hidden scenario presents the same
// signature as the incident's own facts — or is the neutral one.
reflexion::v1::Incident WithPod(reflexion::v1::Incident in) {
  auto& fields = *in.mutable_pod()->mutable_fields();
  fields["kind"].set_string_value("Pod");
  auto& meta = *fields["metadata"].mutable_struct_value()->mutable_fields();
  meta["name"].set_string_value(in.pod_name());
  meta["namespace"].set_string_value(in.namespace_());
  return in;
}

TEST(SimulatedClusterPodObjectTest, TheWorldAgreesWithThePodsOwnFacts) {
  auto cluster = SimulatedCluster::WithDefaultScenarios(42);
  ASSERT_THAT(cluster, IsOk());
  for (int i = 0; i < 30; ++i) {
    auto in = WithPod(
        MakeIncident("shop", absl::StrCat("web-", i), "ImagePullBackOff"));
    auto* e = in.add_events();
    e->set_type("Warning");
    e->set_reason("Failed");
    e->set_message(
        "Failed to pull image \"shop/web:1.2.3\": rpc error: code = NotFound "
        "desc = failed to pull and unpack image: not found");
    auto d = Diagnose(**cluster, in);
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(d->container_statuses_size(), 0);
    EXPECT_EQ(d->events_size(), 0);
    EXPECT_TRUE(d->logs().empty());
    EXPECT_TRUE(d->last_healthy_image().empty());
    // Never the private-registry (auth) or flaky-registry worlds.
    auto scenario = (*cluster)->ScenarioOf("shop", absl::StrCat("web-", i));
    ASSERT_THAT(scenario, IsOk());
    EXPECT_EQ(*scenario, "img-bad-tag") << "pod web-" << i;
  }
}

TEST(SimulatedClusterPodObjectTest, NoAgreeingScenarioMeansTheNeutralWorld) {
  auto cluster = SimulatedCluster::WithDefaultScenarios(42);
  ASSERT_THAT(cluster, IsOk());
  auto in = WithPod(MakeIncident("shop", "api-1", "CrashLoopBackOff"));
  auto* c = in.add_container_statuses();
  c->set_name("api");
  c->set_waiting_reason("CrashLoopBackOff");
  c->set_last_termination_reason("Error");
  c->set_last_exit_code(139);
  reflexion::v1::Analysis own =
      core::Analyze(in, reflexion::v1::Diagnosis(), false);
  ASSERT_THAT(Diagnose(**cluster, in), IsOk());
  auto scenario = (*cluster)->ScenarioOf("shop", "api-1");
  ASSERT_THAT(scenario, IsOk());
  EXPECT_EQ(*scenario, "neutral:" + own.signature());
  // Its actions run and are observed like any other.
  auto action = MakeAction("shop", "api-1", ACTION_TYPE_DELETE_POD, "wf/1");
  ASSERT_THAT(Execute(**cluster, action), IsOk());
  EXPECT_THAT(Observe(**cluster, action), IsOk());
}

TEST(SimulatedClusterJournalTest, ANeutralWorldSurvivesARestart) {
  std::string path = ::testing::TempDir() + "/sim-journal-neutral-" +
                     std::to_string(::getpid()) + ".log";
  std::remove(path.c_str());
  auto in = WithPod(MakeIncident("shop", "api-2", "CrashLoopBackOff"));
  auto* c = in.add_container_statuses();
  c->set_name("api");
  c->set_last_exit_code(139);
  const auto action =
      MakeAction("shop", "api-2", ACTION_TYPE_DELETE_POD, "wf/9");
  std::string before;
  bool recovered;
  {
    auto first = SimulatedCluster::WithDefaultScenarios(42);
    ASSERT_THAT(first, IsOk());
    ASSERT_THAT((*first)->EnableJournal(path), IsOk());
    ASSERT_THAT(Diagnose(**first, in), IsOk());
    ASSERT_THAT(Execute(**first, action), IsOk());
    auto obs = Observe(**first, action);
    ASSERT_THAT(obs, IsOk());
    recovered = obs->recovered();
    before = *(*first)->ScenarioOf("shop", "api-2");
  }
  auto second = SimulatedCluster::WithDefaultScenarios(42);
  ASSERT_THAT(second, IsOk());
  ASSERT_THAT((*second)->EnableJournal(path), IsOk());
  ASSERT_EQ((*second)->ExecutionLog().size(), 1u);
  EXPECT_EQ((*second)->ExecutionLog()[0].scenario_id, before);
  auto obs = Observe(**second, action);
  ASSERT_THAT(obs, IsOk());
  EXPECT_EQ(obs->recovered(), recovered);
  std::remove(path.c_str());
}

TEST(SimulatedClusterLatencyTest, CallsCompleteLaterOnTheTimerThread) {
  auto cluster = FromYaml(OneScenario("{success: 1}"));
  ASSERT_NE(cluster, nullptr);
  cluster->SetLatency(absl::Milliseconds(20));
  absl::Notification done;
  bool returned_first = false;
  std::atomic<bool> returned{false};
  cluster->Diagnose(MakeIncident("ns", "p", "CrashLoopBackOff"),
                    [&](absl::StatusOr<reflexion::v1::Diagnosis> d) {
                      EXPECT_THAT(d, IsOk());
                      returned_first = returned.load();
                      done.Notify();
                    });
  returned = true;
  done.WaitForNotification();
  EXPECT_TRUE(returned_first);
}

}  // namespace
}  // namespace reflexion::sim

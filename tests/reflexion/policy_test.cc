// The safety policy engine: namespace lists, modes, rate limits, the
// blast-radius breaker, freeze windows and bounds. Time from FakeClock only.
#include "core/reflexion/policy.h"

#include <atomic>
#include <cmath>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "core/reflexion/time_util.h"
#include "core/reflexion/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::core {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using v1::PolicyDecision;

IncidentScope Incident(std::string ns, std::string pod,
                       std::string cluster = "prod") {
  IncidentScope s;
  s.cluster = std::move(cluster);
  s.namespace_ = std::move(ns);
  s.pod = pod;
  s.workload_kind = "Deployment";
  s.workload_name = absl::StrCat("wl-", pod);  // one workload per pod
  s.node = absl::StrCat("node-", pod);
  s.image = absl::StrCat("registry/app:", pod);
  s.signature = "crash_loop/exit_1";
  s.workflow_id = absl::StrCat("wf-", pod);
  return s;
}

v1::Action Act(v1::ActionType type = v1::ACTION_TYPE_DELETE_POD) {
  v1::Action a;
  a.set_type(type);
  a.set_pod_name("p");
  a.set_namespace_("payments");
  return a;
}

// Policy limits off except what a test sets.
PolicyConfig Unlimited() {
  PolicyConfig c;
  c.per_workload = {};
  c.per_namespace = {};
  c.per_cluster = {};
  c.breaker.namespace_incidents = 0;
  c.breaker.cluster_incidents = 0;
  c.breaker.workload_min_pods = 0;
  return c;
}

absl::Time Utc(int y, int m, int d, int hh, int mm) {
  return absl::FromCivil(absl::CivilMinute(y, m, d, hh, mm),
                         absl::UTCTimeZone());
}

// ------------------------------------------------------------ namespaces

TEST(PolicyTest, DeniesKubeSystemKubePublicAndItsOwnNamespaceByDefault) {
  FakeClock clock;
  Policy policy(PolicyConfig{}, &clock);
  for (const char* ns : {"kube-system", "kube-public", "reflexion"}) {
    Admission a = policy.Admit(Incident(ns, "p"));
    EXPECT_EQ(a.decision.verdict(), PolicyDecision::VERDICT_DENY) << ns;
    EXPECT_EQ(a.decision.rule(), "namespace_denied") << ns;
    EXPECT_THAT(a.decision.reason(), HasSubstr(absl::StrCat("prod/", ns)));
    EXPECT_EQ(policy.CheckAction(Incident(ns, "p"), Act(), false).verdict(),
              PolicyDecision::VERDICT_DENY);
  }
  Admission ok = policy.Admit(Incident("payments", "p"));
  EXPECT_EQ(ok.decision.verdict(), PolicyDecision::VERDICT_ALLOW);
  EXPECT_EQ(ok.decision.rule(), "allowed");
  EXPECT_EQ(ok.decision.scope(), "prod/payments");
  EXPECT_FALSE(ok.held_by_breaker);
}

TEST(PolicyTest, AllowListAdmitsOnlyListedNamespacesAndNeverTheOwn) {
  FakeClock clock;
  PolicyConfig c;
  c.own_namespace = "ops";
  c.deny_namespaces = {};  // replaces the default list
  c.allow_namespaces = {"payments", "staging/web", "ops", "kube-system"};
  Policy policy(c, &clock);
  EXPECT_EQ(policy.Admit(Incident("payments", "p")).decision.verdict(),
            PolicyDecision::VERDICT_ALLOW);
  EXPECT_EQ(policy.Admit(Incident("kube-system", "p")).decision.verdict(),
            PolicyDecision::VERDICT_ALLOW);
  EXPECT_EQ(policy.Admit(Incident("web", "p", "staging")).decision.verdict(),
            PolicyDecision::VERDICT_ALLOW);
  Admission other_cluster = policy.Admit(Incident("web", "p", "prod"));
  EXPECT_EQ(other_cluster.decision.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_THAT(other_cluster.decision.reason(),
              HasSubstr("prod/web is not in policy.allow_namespaces"));
  Admission own = policy.Admit(Incident("ops", "p"));
  EXPECT_EQ(own.decision.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_THAT(own.decision.reason(), HasSubstr("service's own namespace"));
}

TEST(PolicyTest, EmptyClusterIsTheDefaultClusterAndReasonsAreValidUtf8) {
  FakeClock clock;
  Policy policy(PolicyConfig{}, &clock);
  Admission a = policy.Admit(Incident("pay\xffments", "p\xc3", ""));
  EXPECT_EQ(a.decision.scope(), "local/pay\xef\xbf\xbdments");
  EXPECT_TRUE(IsValidUtf8(a.decision.reason()));
  Admission denied = policy.Admit(Incident("reflexion", "p", ""));
  EXPECT_THAT(denied.decision.reason(), HasSubstr("local/reflexion"));
}

// ------------------------------------------------------------ modes

TEST(PolicyTest, ModeResolutionMostSpecificWins) {
  FakeClock clock;
  PolicyConfig c;
  c.mode = v1::POLICY_MODE_DRY_RUN;
  c.clusters = {{"prod", v1::POLICY_MODE_ENFORCE}};
  c.namespaces = {{"payments", v1::POLICY_MODE_SHADOW},
                  {"prod/payments", v1::POLICY_MODE_ENFORCE},
                  {"staging/web", v1::POLICY_MODE_OFF}};
  Policy policy(c, &clock);
  EXPECT_EQ(policy.ModeFor("dev", "x"), v1::POLICY_MODE_DRY_RUN);   // default
  EXPECT_EQ(policy.ModeFor("prod", "x"), v1::POLICY_MODE_ENFORCE);  // cluster
  EXPECT_EQ(policy.ModeFor("dev", "payments"), v1::POLICY_MODE_SHADOW);  // ns
  EXPECT_EQ(policy.ModeFor("prod", "payments"), v1::POLICY_MODE_ENFORCE);
  EXPECT_EQ(policy.ModeFor("staging", "web"), v1::POLICY_MODE_OFF);
  EXPECT_EQ(policy.ModeFor("", "x"), v1::POLICY_MODE_DRY_RUN);  // "local"
  PolicyDecision d =
      policy.CheckAction(Incident("payments", "p", "dev"), Act(), false);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_SHADOW);
  EXPECT_EQ(d.mode(), v1::POLICY_MODE_SHADOW);
  EXPECT_EQ(d.rule(), "mode_shadow");
  EXPECT_THAT(d.reason(), HasSubstr("policy.namespaces \"payments\""));
  EXPECT_EQ(d.action().type(), v1::ACTION_TYPE_DELETE_POD);
  d = policy.CheckAction(Incident("x", "p", "dev"), Act(), false);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_DRY_RUN);
  EXPECT_EQ(d.rule(), "mode_dry_run");
  EXPECT_EQ(
      policy.CheckAction(Incident("payments", "p"), Act(), false).verdict(),
      PolicyDecision::VERDICT_ALLOW);
}

TEST(PolicyTest, RequestedDryRunNeverEscalates) {
  FakeClock clock;
  PolicyConfig c = Unlimited();
  c.namespaces = {{"dry", v1::POLICY_MODE_DRY_RUN},
                  {"shadow", v1::POLICY_MODE_SHADOW},
                  {"off", v1::POLICY_MODE_OFF}};
  Policy policy(c, &clock);
  PolicyDecision d = policy.CheckAction(Incident("app", "p"), Act(), true);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_DRY_RUN);
  EXPECT_EQ(d.rule(), "requested_dry_run");
  EXPECT_EQ(d.mode(), v1::POLICY_MODE_ENFORCE);
  EXPECT_EQ(policy.CheckAction(Incident("dry", "p"), Act(), true).verdict(),
            PolicyDecision::VERDICT_DRY_RUN);
  EXPECT_EQ(policy.CheckAction(Incident("shadow", "p"), Act(), true).verdict(),
            PolicyDecision::VERDICT_SHADOW);
  EXPECT_EQ(policy.CheckAction(Incident("off", "p"), Act(), true).verdict(),
            PolicyDecision::VERDICT_DENY);
}

TEST(PolicyTest, ModeOffDeniesAdmissionAndActions) {
  FakeClock clock;
  PolicyConfig c;
  c.clusters = {{"prod", v1::POLICY_MODE_OFF}};
  Policy policy(c, &clock);
  Admission a = policy.Admit(Incident("payments", "p"));
  EXPECT_EQ(a.decision.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_EQ(a.decision.rule(), "mode_off");
  EXPECT_EQ(a.decision.mode(), v1::POLICY_MODE_OFF);
  EXPECT_THAT(a.decision.reason(), HasSubstr("policy.clusters \"prod\""));
  PolicyDecision d = policy.CheckAction(Incident("payments", "p"),
                                        Act(v1::ACTION_TYPE_UNDO), false);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_EQ(d.rule(), "mode_off");
  EXPECT_EQ(policy.Admit(Incident("payments", "p", "dev")).decision.verdict(),
            PolicyDecision::VERDICT_ALLOW);
}

TEST(PolicyTest, ParsesAndNamesModes) {
  v1::PolicyMode m = v1::POLICY_MODE_UNSPECIFIED;
  ASSERT_TRUE(ParsePolicyMode("dry-run", &m));
  EXPECT_EQ(m, v1::POLICY_MODE_DRY_RUN);
  EXPECT_EQ(PolicyModeName(m), "dry-run");
  EXPECT_FALSE(ParsePolicyMode("dry_run", &m));
  EXPECT_FALSE(ParsePolicyMode("unspecified", &m));
}

TEST(PolicyTest, AnActionOfNoCatalogTypeIsDenied) {
  FakeClock clock;
  Policy policy(Unlimited(), &clock);
  PolicyDecision d = policy.CheckAction(
      Incident("app", "p"), Act(v1::ACTION_TYPE_UNSPECIFIED), false);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_EQ(d.rule(), "invalid_action");
  d = policy.CheckAction(Incident("app", "p"),
                         Act(static_cast<v1::ActionType>(999)), false);
  EXPECT_EQ(d.rule(), "invalid_action");
}

TEST(PolicyTest, OutOfRangeNumbersInACodeBuiltConfigAreClamped) {
  FakeClock clock;
  PolicyConfig c = Unlimited();
  c.per_workload = {6, -5};  // burst at least 1
  c.breaker.workload_share = std::nan("");
  c.breaker.workload_min_pods = 3;
  c.breaker.window = -absl::Minutes(1);  // at least 1 s
  Policy policy(c, &clock);
  EXPECT_EQ(policy.CheckAction(Incident("app", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  EXPECT_EQ(policy.CheckAction(Incident("app", "p"), Act(), false).rule(),
            "rate_limit_workload");
  int trips = 0;
  for (int i = 0; i < 3; ++i) {
    IncidentScope s = Incident("app", absl::StrCat("p", i));
    s.workload_name = "web";
    s.replicas = 10;
    if (policy.Admit(s).tripped) ++trips;
  }
  EXPECT_EQ(trips, 1);  // share NaN -> 0: three failing pods trip
}

// ------------------------------------------------------------ rate limits

TEST(PolicyTest, WorkloadRateLimitDeniesAfterTheBurstAndRefillsWithTime) {
  FakeClock clock;
  PolicyConfig c = Unlimited();
  c.per_workload = {6, 3};
  Policy policy(c, &clock);
  IncidentScope web = Incident("payments", "p");
  web.workload_name = "web";
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(policy.CheckAction(web, Act(), false).verdict(),
              PolicyDecision::VERDICT_ALLOW)
        << i;
  }
  PolicyDecision d = policy.CheckAction(web, Act(), false);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_EQ(d.rule(), "rate_limit_workload");
  EXPECT_EQ(d.scope(), "prod/payments/Deployment/web");
  EXPECT_EQ(d.reason(),
            "rate limit for Deployment payments/web in cluster prod: 3 "
            "actions in the last hour (limit 6/h, burst 3); next in 10m");
  // Another workload has its own bucket.
  EXPECT_EQ(
      policy.CheckAction(Incident("payments", "q"), Act(), false).verdict(),
      PolicyDecision::VERDICT_ALLOW);
  clock.Advance(absl::Minutes(7));
  d = policy.CheckAction(web, Act(), false);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_THAT(d.reason(), HasSubstr("next in 3m"));
  clock.Advance(absl::Minutes(3));
  EXPECT_EQ(policy.CheckAction(web, Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  EXPECT_EQ(policy.CheckAction(web, Act(), false).verdict(),
            PolicyDecision::VERDICT_DENY);
  // An hour after the burst it is full again (burst 3, not 6).
  clock.Advance(absl::Hours(2));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(policy.CheckAction(web, Act(), false).verdict(),
              PolicyDecision::VERDICT_ALLOW);
  }
  EXPECT_EQ(policy.CheckAction(web, Act(), false).verdict(),
            PolicyDecision::VERDICT_DENY);
}

TEST(PolicyTest, NamespaceRateLimitCountsEveryWorkloadAndTakesNoTokenOnDeny) {
  FakeClock clock;
  PolicyConfig c = Unlimited();
  c.per_workload = {6, 1};
  c.per_namespace = {30, 10};
  Policy policy(c, &clock);
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(policy
                  .CheckAction(Incident("payments", absl::StrCat("p", i)),
                               Act(), false)
                  .verdict(),
              PolicyDecision::VERDICT_ALLOW);
  }
  PolicyDecision d =
      policy.CheckAction(Incident("payments", "fresh"), Act(), false);
  EXPECT_EQ(d.rule(), "rate_limit_namespace");
  EXPECT_EQ(d.scope(), "prod/payments");
  EXPECT_THAT(d.reason(),
              HasSubstr("namespace prod/payments: 10 actions in the last hour "
                        "(limit 30/h, burst 10); next in 2m"));
  EXPECT_EQ(
      policy.CheckAction(Incident("other", "fresh"), Act(), false).verdict(),
      PolicyDecision::VERDICT_ALLOW);
  // The denied action took no workload token: once the namespace refills,
  // "fresh" still has its single token.
  clock.Advance(absl::Minutes(2));
  EXPECT_EQ(
      policy.CheckAction(Incident("payments", "fresh"), Act(), false).verdict(),
      PolicyDecision::VERDICT_ALLOW);
}

TEST(PolicyTest, ClusterRateLimitSpansNamespaces) {
  FakeClock clock;
  PolicyConfig c = Unlimited();
  c.per_cluster = {2, 2};
  Policy policy(c, &clock);
  EXPECT_EQ(policy.CheckAction(Incident("a", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  EXPECT_EQ(policy.CheckAction(Incident("b", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  PolicyDecision d = policy.CheckAction(Incident("c", "p"), Act(), false);
  EXPECT_EQ(d.rule(), "rate_limit_cluster");
  EXPECT_EQ(d.scope(), "prod");
  EXPECT_THAT(d.reason(), HasSubstr("next in 30m"));
  EXPECT_EQ(
      policy.CheckAction(Incident("c", "p", "staging"), Act(), false).verdict(),
      PolicyDecision::VERDICT_ALLOW);
}

TEST(PolicyTest, DryRunAndShadowTakeNoTokens) {
  FakeClock clock;
  PolicyConfig c = Unlimited();
  c.per_workload = {1, 1};
  c.namespaces = {{"shadow", v1::POLICY_MODE_SHADOW}};
  Policy policy(c, &clock);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(policy.CheckAction(Incident("app", "p"), Act(), true).verdict(),
              PolicyDecision::VERDICT_DRY_RUN);
    EXPECT_EQ(
        policy.CheckAction(Incident("shadow", "p"), Act(), false).verdict(),
        PolicyDecision::VERDICT_SHADOW);
  }
  EXPECT_EQ(policy.CheckAction(Incident("app", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  EXPECT_EQ(policy.CheckAction(Incident("app", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_DENY);
}

TEST(PolicyTest, UndoIsExemptFromRateLimitsAndFreezeWindowsButNotFromModes) {
  FakeClock clock(Utc(2026, 12, 5, 23, 0));  // a Saturday
  PolicyConfig c = Unlimited();
  c.per_workload = {1, 1};
  c.namespaces = {{"dry", v1::POLICY_MODE_DRY_RUN}};
  Policy policy(c, &clock);
  ASSERT_EQ(policy.CheckAction(Incident("app", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  ASSERT_EQ(policy.CheckAction(Incident("app", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_DENY);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(
        policy
            .CheckAction(Incident("app", "p"), Act(v1::ACTION_TYPE_UNDO), false)
            .verdict(),
        PolicyDecision::VERDICT_ALLOW);
  }
  EXPECT_EQ(
      policy.CheckAction(Incident("dry", "p"), Act(v1::ACTION_TYPE_UNDO), false)
          .verdict(),
      PolicyDecision::VERDICT_DRY_RUN);

  PolicyConfig frozen = Unlimited();
  FreezeWindow w;
  w.name = "weekend";
  w.days = 1 << 6;  // Saturday
  w.start_minute = 22 * 60;
  w.duration = absl::Hours(8);
  frozen.freeze_windows = {w};
  Policy during(frozen, &clock);
  EXPECT_EQ(during.CheckAction(Incident("app", "p"), Act(), false).rule(),
            "freeze_window");
  EXPECT_EQ(
      during.CheckAction(Incident("app", "p"), Act(v1::ACTION_TYPE_UNDO), false)
          .verdict(),
      PolicyDecision::VERDICT_ALLOW);
}

// ------------------------------------------------------------ breaker

PolicyConfig BreakerOnly() {
  PolicyConfig c = Unlimited();
  c.breaker.namespace_incidents = 20;
  return c;
}

TEST(PolicyTest, BreakerTripsOnceOnABurstAndNamesTheCommonNode) {
  FakeClock clock;
  Policy policy(BreakerOnly(), &clock);
  int trips = 0;
  int held = 0;
  for (int i = 0; i < 50; ++i) {
    IncidentScope s = Incident("payments", absl::StrCat("p", i));
    // 16 of the first 20 on worker-3, the rest spread; signatures in three
    // kinds, images and workloads all different.
    s.node = i % 5 == 4 ? absl::StrCat("worker-", 10 + i) : "worker-3";
    s.signature = absl::StrCat("sig-", i % 3);
    Admission a = policy.Admit(s);
    EXPECT_EQ(a.decision.verdict(), PolicyDecision::VERDICT_ALLOW);
    if (a.tripped.has_value()) {
      ++trips;
      EXPECT_EQ(i, 19);
      EXPECT_EQ(a.tripped->scope(), "prod/payments");
      EXPECT_EQ(a.tripped->incidents(), 20);
      EXPECT_EQ(a.tripped->suspected_cause(),
                "node worker-3: 16 of 20 incidents");
      EXPECT_EQ(a.tripped->workflow_id(), "wf-p19");
      EXPECT_EQ(FromProto(a.tripped->tripped_at()), clock.Now());
      ASSERT_THAT(a.tripped->evidence(), SizeIs(5));
      EXPECT_EQ(a.tripped->evidence(0),
                "20 incidents in namespace prod/payments within 10m (limit "
                "20)");
      EXPECT_EQ(a.tripped->evidence(1), "signature sig-0: 7 of 20 incidents");
      EXPECT_EQ(a.decision.rule(), "breaker_open");
    }
    EXPECT_EQ(a.held_by_breaker, i >= 19) << i;
    if (a.held_by_breaker && !a.tripped) ++held;
    clock.Advance(absl::Seconds(1));
  }
  EXPECT_EQ(trips, 1);
  std::vector<v1::BreakerState> open = policy.OpenBreakers();
  ASSERT_THAT(open, SizeIs(1));
  EXPECT_EQ(open[0].held_incidents(), 30);
  EXPECT_EQ(held, 30);
  PolicyDecision d =
      policy.CheckAction(Incident("payments", "p0"), Act(), false);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_EQ(d.rule(), "breaker_open");
  EXPECT_EQ(d.scope(), "prod/payments");
  EXPECT_THAT(d.reason(), HasSubstr("node worker-3"));
  // Elsewhere automation goes on.
  EXPECT_FALSE(policy.Admit(Incident("orders", "p")).held_by_breaker);
  EXPECT_EQ(policy.CheckAction(Incident("orders", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
}

TEST(PolicyTest, BreakerNamesASharedConfigMap) {
  FakeClock clock;
  Policy policy(BreakerOnly(), &clock);
  std::optional<v1::BreakerState> tripped;
  for (int i = 0; i < 20; ++i) {
    IncidentScope s = Incident("payments", absl::StrCat("p", i));
    s.signature = absl::StrCat("sig-", i);
    s.config_refs = {"ConfigMap/app-config", absl::StrCat("Secret/s", i),
                     "ConfigMap/app-config"};  // duplicates count once
    Admission a = policy.Admit(s);
    if (a.tripped) tripped = a.tripped;
  }
  ASSERT_TRUE(tripped.has_value());
  EXPECT_EQ(tripped->suspected_cause(),
            "ConfigMap/app-config referenced by 20 of 20 incidents");
}

TEST(PolicyTest, BreakerSaysWhenNoCauseIsCommon) {
  FakeClock clock;
  Policy policy(BreakerOnly(), &clock);
  std::optional<v1::BreakerState> tripped;
  for (int i = 0; i < 20; ++i) {
    IncidentScope s = Incident("payments", absl::StrCat("p", i));
    s.signature = absl::StrCat("sig-", i % 4);
    Admission a = policy.Admit(s);
    if (a.tripped) tripped = a.tripped;
  }
  ASSERT_TRUE(tripped.has_value());
  EXPECT_EQ(tripped->suspected_cause(),
            "no common cause; the most shared attribute is signature sig-0: 5 "
            "of 20 incidents");
}

TEST(PolicyTest, ClearBreakerResumesAndTheWindowStartsAfresh) {
  FakeClock clock;
  Policy policy(BreakerOnly(), &clock);
  for (int i = 0; i < 20; ++i) policy.Admit(Incident("payments", "p"));
  ASSERT_THAT(policy.OpenBreakers(), SizeIs(1));
  EXPECT_THAT(policy.ClearBreaker(""),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(policy.ClearBreaker("prod/orders"),
              StatusIs(absl::StatusCode::kNotFound));
  ASSERT_THAT(policy.ClearBreaker("prod/payments"), IsOk());
  EXPECT_THAT(policy.OpenBreakers(), IsEmpty());
  EXPECT_THAT(policy.ClearBreaker("prod/payments"),
              StatusIs(absl::StatusCode::kNotFound));
  // The same burst continues: 19 more do not trip, the 20th after the clear
  // does.
  for (int i = 0; i < 19; ++i) {
    Admission a = policy.Admit(Incident("payments", "p"));
    EXPECT_FALSE(a.held_by_breaker) << i;
    EXPECT_FALSE(a.tripped.has_value()) << i;
  }
  EXPECT_EQ(
      policy.CheckAction(Incident("payments", "p"), Act(), false).verdict(),
      PolicyDecision::VERDICT_ALLOW);
  EXPECT_TRUE(policy.Admit(Incident("payments", "p")).tripped.has_value());
}

TEST(PolicyTest, ASlowTrickleNeverTripsAndTheWindowSlides) {
  FakeClock clock;
  Policy policy(BreakerOnly(), &clock);
  // One every 32 s: at most 19 in any 10 minutes.
  for (int i = 0; i < 500; ++i) {
    Admission a = policy.Admit(Incident("payments", absl::StrCat("p", i)));
    ASSERT_FALSE(a.tripped.has_value()) << i;
    clock.Advance(absl::Seconds(32));
  }
  // 19 at once, then the window passes: they no longer count.
  clock.Advance(absl::Hours(1));
  for (int i = 0; i < 19; ++i) policy.Admit(Incident("orders", "p"));
  clock.Advance(absl::Minutes(10));
  for (int i = 0; i < 19; ++i) {
    ASSERT_FALSE(policy.Admit(Incident("orders", "p")).tripped.has_value());
  }
  EXPECT_TRUE(policy.Admit(Incident("orders", "p")).tripped.has_value());
}

TEST(PolicyTest, ClusterBreakerHoldsEveryNamespaceOfItsCluster) {
  FakeClock clock;
  PolicyConfig c = Unlimited();
  c.breaker.namespace_incidents = 20;
  c.breaker.cluster_incidents = 60;
  Policy policy(c, &clock);
  std::optional<v1::BreakerState> tripped;
  for (int i = 0; i < 60; ++i) {
    IncidentScope s =
        Incident(absl::StrCat("ns", i % 30), absl::StrCat("p", i));
    s.image = "registry/base:1.2";
    Admission a = policy.Admit(s);
    if (a.tripped) {
      EXPECT_EQ(i, 59);
      tripped = a.tripped;
    }
  }
  ASSERT_TRUE(tripped.has_value());
  EXPECT_EQ(tripped->scope(), "prod");
  EXPECT_EQ(tripped->incidents(), 60);
  EXPECT_EQ(tripped->suspected_cause(),
            "image registry/base:1.2: 60 of 60 incidents");
  EXPECT_EQ(tripped->evidence(0),
            "60 incidents in cluster prod within 10m (limit 60)");
  Admission other = policy.Admit(Incident("never-seen", "p"));
  EXPECT_TRUE(other.held_by_breaker);
  EXPECT_FALSE(other.tripped.has_value());
  EXPECT_EQ(
      policy.CheckAction(Incident("never-seen", "p"), Act(), false).scope(),
      "prod");
  EXPECT_FALSE(policy.Admit(Incident("ns0", "p", "staging")).held_by_breaker);
  ASSERT_THAT(policy.ClearBreaker("prod"), IsOk());
  EXPECT_FALSE(policy.Admit(Incident("ns0", "p")).held_by_breaker);
}

TEST(PolicyTest, AFailingShareOfAWorkloadTripsItsNamespace) {
  FakeClock clock;
  PolicyConfig c = Unlimited();
  c.breaker.workload_share = 0.5;
  c.breaker.workload_min_pods = 3;
  Policy policy(c, &clock);
  auto pod_of = [](const std::string& workload, int i, int replicas) {
    IncidentScope s = Incident("payments", absl::StrCat(workload, "-", i));
    s.workload_name = workload;
    s.replicas = replicas;
    s.signature = "";
    return s;
  };
  // The same pod failing again is one failing pod.
  for (int i = 0; i < 10; ++i) {
    ASSERT_FALSE(policy.Admit(pod_of("api", 0, 4)).tripped.has_value());
  }
  ASSERT_FALSE(policy.Admit(pod_of("api", 1, 4)).tripped.has_value());
  // 3 of 4 replicas: at least 3 pods and at least half.
  Admission a = policy.Admit(pod_of("api", 2, 4));
  ASSERT_TRUE(a.tripped.has_value());
  EXPECT_EQ(a.tripped->scope(), "prod/payments");
  EXPECT_EQ(a.tripped->suspected_cause(),
            "workload Deployment/api: 12 of 12 incidents");
  EXPECT_THAT(a.tripped->evidence(0),
              HasSubstr("3 distinct pods of Deployment/api in prod/payments"));

  // With 10 replicas half is 5: 4 failing pods do not trip.
  Policy big(c, &clock);
  for (int i = 0; i < 4; ++i) {
    ASSERT_FALSE(big.Admit(pod_of("web", i, 10)).tripped.has_value()) << i;
  }
  EXPECT_TRUE(big.Admit(pod_of("web", 4, 10)).tripped.has_value());
}

TEST(PolicyTest, SnapshotAndRestoreKeepAnOpenBreaker) {
  FakeClock clock;
  Policy policy(BreakerOnly(), &clock);
  for (int i = 0; i < 25; ++i) policy.Admit(Incident("payments", "p"));
  std::vector<v1::BreakerState> snapshot = policy.SnapshotBreakers();
  ASSERT_THAT(snapshot, SizeIs(1));
  EXPECT_EQ(snapshot[0].held_incidents(), 5);

  Policy restarted(BreakerOnly(), &clock);
  v1::BreakerState junk;  // no scope: skipped
  snapshot.push_back(junk);
  restarted.RestoreBreakers(snapshot);
  ASSERT_THAT(restarted.OpenBreakers(), SizeIs(1));
  EXPECT_EQ(restarted.OpenBreakers()[0].suspected_cause(),
            snapshot[0].suspected_cause());
  EXPECT_TRUE(restarted.Admit(Incident("payments", "p")).held_by_breaker);
  EXPECT_EQ(restarted.OpenBreakers()[0].held_incidents(), 6);
  EXPECT_EQ(
      restarted.CheckAction(Incident("payments", "p"), Act(), false).rule(),
      "breaker_open");
  ASSERT_THAT(restarted.ClearBreaker("prod/payments"), IsOk());
  EXPECT_FALSE(restarted.Admit(Incident("payments", "p")).held_by_breaker);
}

TEST(PolicyTest, ExactlyOneTripUnderConcurrentAdmission) {
  FakeClock clock;
  Policy policy(BreakerOnly(), &clock);
  std::atomic<int> trips{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        if (policy.Admit(Incident("payments", absl::StrCat(t, "-", i)))
                .tripped) {
          ++trips;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(trips.load(), 1);
  ASSERT_THAT(policy.OpenBreakers(), SizeIs(1));
  EXPECT_EQ(policy.OpenBreakers()[0].held_incidents(), 180);
}

// ------------------------------------------------------------ freeze windows

TEST(PolicyTest, AWeeklyFreezeWindowCrossesMidnightAndTheWeekBoundary) {
  // Saturday 22:00 for 8 h: ends Sunday 06:00, in the next week.
  FakeClock clock(Utc(2026, 12, 5, 21, 59));  // Saturday
  PolicyConfig c = Unlimited();
  FreezeWindow w;
  w.name = "weekend";
  w.days = 1 << 6;
  w.start_minute = 22 * 60;
  w.duration = absl::Hours(8);
  FreezeWindow late;
  late.name = "nightly";
  late.days = 1 << 2;  // Tuesday 23:30 for 1 h
  late.start_minute = 23 * 60 + 30;
  late.duration = absl::Hours(1);
  c.freeze_windows = {w, late};
  Policy policy(c, &clock);
  const IncidentScope s = Incident("app", "p");
  EXPECT_EQ(policy.CheckAction(s, Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  clock.Advance(absl::Minutes(1));  // Saturday 22:00
  PolicyDecision d = policy.CheckAction(s, Act(), false);
  EXPECT_EQ(d.verdict(), PolicyDecision::VERDICT_DENY);
  EXPECT_EQ(d.rule(), "freeze_window");
  EXPECT_EQ(d.reason(),
            "freeze window \"weekend\" is in force for prod/app until "
            "2026-12-06T06:00:00Z (in 8h): no change runs there until then "
            "(undo excepted)");
  clock.Advance(absl::Hours(7) + absl::Minutes(59));  // Sunday 05:59
  EXPECT_THAT(policy.CheckAction(s, Act(), false).reason(),
              HasSubstr("(in 1m)"));
  clock.Advance(absl::Minutes(1));  // Sunday 06:00
  EXPECT_EQ(policy.CheckAction(s, Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  // Tuesday 23:29 / 23:30 / Wednesday 00:29 / 00:30.
  FakeClock tue(Utc(2026, 12, 8, 23, 29));
  Policy nightly(c, &tue);
  EXPECT_EQ(nightly.CheckAction(s, Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  tue.Advance(absl::Minutes(1));
  EXPECT_EQ(nightly.CheckAction(s, Act(), false).rule(), "freeze_window");
  tue.Advance(absl::Minutes(59));
  EXPECT_THAT(nightly.CheckAction(s, Act(), false).reason(),
              HasSubstr("\"nightly\""));
  tue.Advance(absl::Minutes(1));
  EXPECT_EQ(nightly.CheckAction(s, Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
}

TEST(PolicyTest, AnAbsoluteFreezeWindowAppliesOnlyToItsScope) {
  FakeClock clock(Utc(2026, 12, 24, 11, 59));
  PolicyConfig c = Unlimited();
  FreezeWindow w;
  w.name = "xmas";
  w.from = Utc(2026, 12, 24, 12, 0);
  w.until = Utc(2026, 12, 27, 0, 0);
  w.clusters = {"prod"};
  w.namespaces = {"payments", "staging/web"};
  c.freeze_windows = {w};
  Policy policy(c, &clock);
  EXPECT_EQ(
      policy.CheckAction(Incident("payments", "p"), Act(), false).verdict(),
      PolicyDecision::VERDICT_ALLOW);
  clock.Advance(absl::Minutes(1));
  PolicyDecision d =
      policy.CheckAction(Incident("payments", "p"), Act(), false);
  EXPECT_EQ(d.rule(), "freeze_window");
  EXPECT_THAT(d.reason(), HasSubstr("until 2026-12-27T00:00:00Z (in 60h)"));
  EXPECT_EQ(policy.CheckAction(Incident("orders", "p"), Act(), false).verdict(),
            PolicyDecision::VERDICT_ALLOW);
  EXPECT_EQ(
      policy.CheckAction(Incident("payments", "p", "staging"), Act(), false)
          .verdict(),
      PolicyDecision::VERDICT_ALLOW);  // cluster not listed
  clock.Advance(absl::Hours(60));      // 2026-12-27 00:00: over
  EXPECT_EQ(
      policy.CheckAction(Incident("payments", "p"), Act(), false).verdict(),
      PolicyDecision::VERDICT_ALLOW);
}

// ------------------------------------------------------------ bounds

TEST(PolicyTest, ManyScopesEvictTheLeastRecentlyUsedAndStayBounded) {
  FakeClock clock;
  PolicyConfig c;  // namespace and workload breakers and limits on
  c.breaker.cluster_incidents = 0;
  c.per_cluster = {};
  c.per_workload = {1, 1};
  Policy policy(c, &clock);
  const int n = static_cast<int>(Policy::kMaxTrackedScopes) * 2 + 500;
  for (int i = 0; i < n; ++i) {
    IncidentScope s = Incident(absl::StrCat("ns", i), "p");
    ASSERT_FALSE(policy.Admit(s).held_by_breaker);
    ASSERT_EQ(policy.CheckAction(s, Act(), false).verdict(),
              PolicyDecision::VERDICT_ALLOW);
  }
  // At the bound: namespace windows, workload pod sets, workload and
  // namespace buckets.
  EXPECT_EQ(policy.TrackedScopes(), 4 * Policy::kMaxTrackedScopes);
  // The most recent workload's bucket is still tracked (its one token is
  // spent); the first one's was evicted and comes back full.
  EXPECT_EQ(
      policy.CheckAction(Incident(absl::StrCat("ns", n - 1), "p"), Act(), false)
          .rule(),
      "rate_limit_workload");
  EXPECT_EQ(policy.CheckAction(Incident("ns0", "p"), Act(), false).rule(),
            "allowed");
  EXPECT_EQ(policy.TrackedScopes(), 4 * Policy::kMaxTrackedScopes);
}

TEST(PolicyTest, AtTheBoundOfOpenBreakersThePolicyFailsClosed) {
  FakeClock clock;
  Policy policy(BreakerOnly(), &clock);
  std::vector<v1::BreakerState> open;
  for (size_t i = 0; i < Policy::kMaxOpenBreakers + 5; ++i) {
    v1::BreakerState b;
    b.set_scope(absl::StrCat("c", i, "/ns"));
    open.push_back(b);
  }
  policy.RestoreBreakers(open);
  EXPECT_THAT(policy.OpenBreakers(), SizeIs(Policy::kMaxOpenBreakers));
  Admission a = policy.Admit(Incident("payments", "p"));
  EXPECT_TRUE(a.held_by_breaker);
  EXPECT_THAT(a.decision.reason(), HasSubstr("(the bound)"));
  EXPECT_EQ(policy.CheckAction(Incident("payments", "p"), Act(), false).rule(),
            "breaker_open");
  ASSERT_THAT(policy.ClearBreaker("c0/ns"), IsOk());
  EXPECT_FALSE(policy.Admit(Incident("payments", "p")).held_by_breaker);
  EXPECT_EQ(policy.CheckAction(Incident("payments", "p"), Act(), false).rule(),
            "allowed");
}

}  // namespace
}  // namespace reflexion::core

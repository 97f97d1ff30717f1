// The safety policy, undo and the audit log end to end: a real server on
// 127.0.0.1:0 and a test agent that executes (and counts) what it is asked
// to. Waits are on received messages (conditions), never sleeps.

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "core/ports/audit_log.h"
#include "core/reflexion/audit_chain.h"
#include "core/reflexion/catalog.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "server/app.h"
#include "server/config.h"
#include "tests/server/run_ctl.h"
#include "tests/server/server_process.h"
#include "tests/server/test_agent.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

using ::reflexion::testing::IsOk;
using ::testing::HasSubstr;

// An OOMKilled pod of Deployment `shop/web` on node `node`, with its pod
// object (so the policy knows its workload and node).
v1::Incident PodIncident(const std::string& pod, const std::string& ns,
                         const std::string& node, const std::string& rid,
                         const std::string& owner = "web-5d8f7") {
  v1::Incident in = OomIncident(pod, rid);
  in.set_namespace_(ns);
  const std::string json = absl::StrCat(
      R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":")", pod,
      R"(","namespace":")", ns,
      R"(","ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet",)",
      R"("name":")", owner, R"(","controller":true}]},)",
      R"("spec":{"nodeName":")", node,
      R"(","containers":[{"name":"app","image":"shop/app:1.4",)",
      R"("resources":{"limits":{"memory":"128Mi"}}}]},)",
      R"("status":{"phase":"Running","containerStatuses":[{"name":"app",)",
      R"("image":"shop/app:1.4","restartCount":4,"ready":false,)",
      R"("state":{"waiting":{"reason":"CrashLoopBackOff"}},)",
      R"("lastState":{"terminated":{"reason":"OOMKilled","exitCode":137}}}]}})");
  EXPECT_TRUE(
      google::protobuf::util::JsonStringToMessage(json, in.mutable_pod()).ok());
  return in;
}

class SafetyTest : public ::testing::Test {
 protected:
  void TearDown() override {
    agent_.reset();
    app_.reset();
  }

  void Start(const std::function<void(ServerConfig&)>& tweak = nullptr) {
    dir_ = MakeTempDir();
    ServerConfig config;
    config.host = "127.0.0.1";
    config.port = 0;
    config.data_dir = dir_;
    config.worker_threads = 2;
    config.workflow.seed = 5;
    config.workflow.observation_window = absl::Milliseconds(300);
    config.workflow.report_interval = absl::Milliseconds(50);
    // Several pods of one workload fail in these tests: only the tests of
    // the namespace breaker trip one.
    config.policy.breaker.workload_min_pods = 0;
    if (tweak) tweak(config);
    app_ = std::make_unique<App>(config);
    ASSERT_THAT(app_->Start(), IsOk());
    channel_ = client::Connect(absl::StrCat("127.0.0.1:", app_->port()));
    stub_ = v1::ReflexionService::NewStub(channel_);
    agent_ = std::make_unique<TestAgent>(stub_.get(), "prod", "agent-a");
    ASSERT_GE(agent_->WaitFor(
                  [](const v1::ResolveResponse& m) { return m.has_welcome(); }),
              0);
  }

  // Every audit entry, oldest first.
  std::vector<v1::AuditEntry> Audit(v1::AuditAnchor* anchor = nullptr) {
    std::vector<v1::AuditEntry> all;
    uint64_t after = 0;
    for (;;) {
      v1::ListAuditRequest req;
      req.set_after(after);
      req.set_page_size(1000);
      v1::ListAuditResponse resp;
      grpc::ClientContext ctx;
      grpc::Status s = stub_->ListAudit(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      if (anchor != nullptr) *anchor = resp.anchor();
      for (const auto& e : resp.entries()) all.push_back(e);
      if (resp.next_after() == 0) break;
      after = resp.next_after();
    }
    return all;
  }

  // The events of one workflow received on the agent's stream.
  std::vector<v1::WorkflowEvent> Events(const std::string& workflow_id) {
    std::vector<v1::WorkflowEvent> out;
    for (const auto& m : agent_->All()) {
      if (m.has_event() && m.event().workflow_id() == workflow_id) {
        out.push_back(m.event());
      }
    }
    return out;
  }

  // Final or WAITING results received so far.
  std::vector<v1::IncidentResult> Results() {
    std::vector<v1::IncidentResult> out;
    for (const auto& m : agent_->All()) {
      if (m.has_result()) out.push_back(m.result());
    }
    return out;
  }

  int ActionRequests() {
    int n = 0;
    for (const auto& m : agent_->All()) n += m.has_action_request() ? 1 : 0;
    return n;
  }

  // Waits for the result of the incident with request id `rid`.
  v1::IncidentResult WaitResult(const std::string& rid) {
    int i = agent_->WaitFor([&](const v1::ResolveResponse& m) {
      return m.has_result() && m.result().request_id() == rid;
    });
    EXPECT_GE(i, 0) << "no result for " << rid;
    return i < 0 ? v1::IncidentResult() : agent_->At(i).result();
  }

  std::string dir_;
  std::unique_ptr<App> app_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ReflexionService::Stub> stub_;
  std::unique_ptr<TestAgent> agent_;
};

void NoRateLimits(ServerConfig& c) {
  c.policy.per_workload = core::RateLimit{};
  c.policy.per_namespace = core::RateLimit{};
  c.policy.per_cluster = core::RateLimit{};
}

TEST_F(SafetyTest, AnIncidentInADeniedNamespaceIsRefusedAndNothingRuns) {
  Start();
  agent_->SendIncident(PodIncident("dns-1", "kube-system", "n1", "denied"));
  int i = agent_->WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_rejected(); });
  ASSERT_GE(i, 0);
  const v1::IncidentRejected r = agent_->At(i).rejected();
  EXPECT_EQ(r.request_id(), "denied");
  EXPECT_EQ(r.code(), static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_EQ(r.field(), "incident.namespace");
  EXPECT_THAT(r.message(), HasSubstr("kube-system"));
  // A normal incident after it runs; the denied one never produced a
  // request or a workflow.
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "allowed"));
  std::map<std::string, int> executed;
  ASSERT_EQ(agent_->Serve(1, &executed).size(), 1u);
  EXPECT_EQ(executed.size(), 1u);
}

TEST_F(SafetyTest, AnAllowedActionIsAuditedBeforeItIsSentAndItsOutcomeAfter) {
  Start();
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "r1"));
  std::map<std::string, int> executed;
  bool audited_before = false;
  std::vector<v1::IncidentResult> results = agent_->Serve(
      1, &executed,
      [&](const v1::ActionRequest& a, v1::ActionResult*) {
        // The request is here: its audit entry must already be stored.
        for (const auto& e : Audit()) {
          if (e.kind() == v1::AuditEntry::KIND_ACTION &&
              e.action_id() == a.action_id()) {
            audited_before = true;
          }
        }
      },
      nullptr);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].status(), v1::WORKFLOW_STATUS_RESOLVED);
  EXPECT_TRUE(audited_before);
  // The policy's decision is an event with its reason.
  bool policy_event = false;
  for (const auto& ev : Events(results[0].workflow_id())) {
    if (ev.has_policy()) {
      policy_event = true;
      EXPECT_EQ(ev.node(), "policy");
      EXPECT_EQ(ev.policy().verdict(), v1::PolicyDecision::VERDICT_ALLOW);
      EXPECT_EQ(ev.policy().mode(), v1::POLICY_MODE_ENFORCE);
      EXPECT_FALSE(ev.policy().reason().empty());
    }
  }
  EXPECT_TRUE(policy_event);
  std::vector<v1::AuditEntry> audit = Audit();
  ASSERT_EQ(audit.size(), 2u);
  const v1::AuditEntry& act = audit[0];
  EXPECT_EQ(act.kind(), v1::AuditEntry::KIND_ACTION);
  EXPECT_EQ(act.cluster(), "prod");
  EXPECT_EQ(act.namespace_(), "shop");
  EXPECT_EQ(act.workload(), "ReplicaSet/web-5d8f7");
  EXPECT_EQ(act.pod(), "web-1");
  EXPECT_EQ(act.workflow_id(), results[0].workflow_id());
  EXPECT_EQ(act.decider(), v1::AuditEntry::DECIDER_LEARNED);
  EXPECT_EQ(act.mode(), v1::POLICY_MODE_ENFORCE);
  EXPECT_NE(act.action().type(), v1::ACTION_TYPE_UNSPECIFIED);
  EXPECT_NE(act.tier(), v1::SAFETY_TIER_UNSPECIFIED);
  const v1::AuditEntry& out = audit[1];
  EXPECT_EQ(out.kind(), v1::AuditEntry::KIND_OUTCOME);
  EXPECT_EQ(out.outcome(), "applied");
  EXPECT_EQ(out.refers_to(), act.seq());
  EXPECT_EQ(out.prev_hash(), act.hash());
  v1::AuditAnchor anchor;
  std::vector<v1::AuditEntry> again = Audit(&anchor);
  core::AuditVerification v = core::VerifyChain(anchor, again);
  EXPECT_TRUE(v.ok) << v.problem;
}

TEST_F(SafetyTest, DryRunModeAsksTheAgentForADryRunAndChangesNothing) {
  Start([](ServerConfig& c) {
    c.policy.namespaces["shop"] = v1::POLICY_MODE_DRY_RUN;
  });
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "dry"));
  int i = agent_->WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_action_request(); });
  ASSERT_GE(i, 0);
  v1::ActionRequest req = agent_->At(i).action_request();
  EXPECT_TRUE(req.dry_run());
  v1::ResolveRequest answer;
  auto* res = answer.mutable_action_result();
  res->set_workflow_id(req.workflow_id());
  res->set_action_id(req.action_id());
  res->set_outcome(v1::ActionResult::OUTCOME_DRY_RUN);
  res->set_message("validated by the API server (dryRun=All)");
  agent_->Send(answer);
  v1::IncidentResult r = WaitResult("dry");
  EXPECT_TRUE(r.requires_human_intervention());
  EXPECT_THAT(r.escalation_reason(), HasSubstr("dry run"));
  EXPECT_EQ(ActionRequests(), 1);
  std::vector<v1::AuditEntry> audit = Audit();
  ASSERT_GE(audit.size(), 2u);
  EXPECT_EQ(audit[0].kind(), v1::AuditEntry::KIND_ACTION);
  EXPECT_EQ(audit[0].mode(), v1::POLICY_MODE_DRY_RUN);
  EXPECT_EQ(audit[1].outcome(), "dry_run");
}

TEST_F(SafetyTest, ShadowModeExecutesNothingAndAuditsTheWouldBeAction) {
  Start([](ServerConfig& c) { c.policy.mode = v1::POLICY_MODE_SHADOW; });
  for (int i = 0; i < 3; ++i) {
    agent_->SendIncident(PodIncident(absl::StrCat("web-", i), "shop", "n1",
                                     absl::StrCat("s", i)));
  }
  std::vector<v1::IncidentResult> results;
  for (int i = 0; i < 3; ++i)
    results.push_back(WaitResult(absl::StrCat("s", i)));
  EXPECT_EQ(ActionRequests(), 0);
  for (const auto& r : results) {
    EXPECT_EQ(r.status(), v1::WORKFLOW_STATUS_WAITING) << r.DebugString();
    EXPECT_THAT(r.escalation_reason(), HasSubstr("shadow mode: would run"));
  }
  int shadow = 0;
  for (const auto& e : Audit()) {
    EXPECT_NE(e.kind(), v1::AuditEntry::KIND_ACTION);
    if (e.kind() == v1::AuditEntry::KIND_POLICY) {
      ++shadow;
      EXPECT_EQ(e.mode(), v1::POLICY_MODE_SHADOW);
      EXPECT_EQ(e.outcome(), "shadow");
      EXPECT_NE(e.action().type(), v1::ACTION_TYPE_UNSPECIFIED);
    }
  }
  EXPECT_EQ(shadow, 3);
  // What a human did afterwards is recorded next to it.
  v1::ResumeWorkflowRequest resume;
  resume.set_workflow_id(results[0].workflow_id());
  resume.set_etag(results[0].etag());
  resume.mutable_decision()->set_kind(v1::HumanDecision::KIND_MARK_RESOLVED);
  resume.mutable_decision()->set_strategy("increase_memory_limit");
  resume.mutable_decision()->set_note("raised the limit by hand");
  v1::ResumeWorkflowResponse resumed;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->ResumeWorkflow(&ctx, resume, &resumed).ok());
  // Audited before ResumeWorkflow answered.
  bool decision = false;
  for (const auto& e : Audit()) {
    if (e.kind() == v1::AuditEntry::KIND_DECISION &&
        e.workflow_id() == results[0].workflow_id()) {
      decision = true;
      EXPECT_EQ(e.outcome(), "mark_resolved");
      EXPECT_EQ(e.decider(), v1::AuditEntry::DECIDER_HUMAN);
      EXPECT_THAT(e.detail(), HasSubstr("increase_memory_limit"));
    }
  }
  EXPECT_TRUE(decision);
}

TEST_F(SafetyTest, TheRateLimitDeniesAnActionOverItAndSaysWhy) {
  Start([](ServerConfig& c) {
    NoRateLimits(c);
    c.policy.per_namespace = core::RateLimit{1, 1};
  });
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "first"));
  std::map<std::string, int> executed;
  ASSERT_EQ(agent_->Serve(1, &executed).size(), 1u);
  agent_->SendIncident(PodIncident("web-2", "shop", "n1", "second"));
  v1::IncidentResult r = WaitResult("second");
  EXPECT_EQ(r.status(), v1::WORKFLOW_STATUS_WAITING);
  EXPECT_THAT(r.escalation_reason(), HasSubstr("policy denied"));
  bool denied = false;
  for (const auto& ev : Events(r.workflow_id())) {
    if (ev.has_policy()) {
      denied = ev.policy().verdict() == v1::PolicyDecision::VERDICT_DENY &&
               ev.policy().rule() == "rate_limit_namespace";
    }
  }
  EXPECT_TRUE(denied);
  EXPECT_EQ(ActionRequests(), 1);
}

TEST_F(SafetyTest, AFreezeWindowStopsAutomatedActions) {
  Start([](ServerConfig& c) {
    // Every day, all day: frozen whenever the test runs.
    core::FreezeWindow w;
    w.name = "release-freeze";
    w.days = 0x7f;
    w.start_minute = 0;
    w.duration = absl::Hours(24);
    c.policy.freeze_windows.push_back(w);
  });
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "frozen"));
  v1::IncidentResult r = WaitResult("frozen");
  EXPECT_EQ(r.status(), v1::WORKFLOW_STATUS_WAITING);
  EXPECT_THAT(r.escalation_reason(), HasSubstr("release-freeze"));
  EXPECT_EQ(ActionRequests(), 0);
}

TEST_F(SafetyTest, TheBreakerTripsOnABurstRaisesOneEscalationAndClears) {
  // Default rate limits but the namespace's (raised so that the incident
  // after the clear is not rate limited); each pod is its own workload, as
  // in a node outage, so no attempt is rate limited and the counts below do
  // not depend on timing.
  Start([](ServerConfig& c) {
    c.policy.breaker.namespace_incidents = 20;
    c.policy.breaker.window = absl::Hours(1);
    c.policy.per_namespace = core::RateLimit{1000, 100};
  });
  constexpr int kBurst = 50;
  for (int i = 0; i < kBurst; ++i) {
    agent_->SendIncident(PodIncident(absl::StrCat("web-", i), "shop",
                                     "worker-3", absl::StrCat("b", i),
                                     absl::StrCat("app", i, "-5d8f7")));
  }
  // The agent executes what it is asked; the incidents end resolved, held
  // (escalated without an action) or waiting (the one escalation).
  std::map<std::string, int> executed;
  agent_->Serve(kBurst - 1, &executed);
  std::vector<v1::IncidentResult> results = Results();
  int waiting = 0, held = 0, resolved = 0;
  std::string escalation;
  for (const auto& r : results) {
    if (r.status() == v1::WORKFLOW_STATUS_WAITING) {
      ++waiting;
      escalation = r.workflow_id();
      EXPECT_THAT(r.escalation_reason(), HasSubstr("worker-3"));
    } else if (r.status() == v1::WORKFLOW_STATUS_RESOLVED) {
      ++resolved;
    } else {
      ++held;
      EXPECT_THAT(r.escalation_reason(), HasSubstr("held"));
    }
  }
  // The 20th incident trips the breaker and is the one escalation; those
  // after it are held at admission, and those before it that had not acted
  // yet are stopped at their policy node: none of them waits for a human.
  EXPECT_EQ(waiting, 1);
  EXPECT_EQ(resolved + held, kBurst - 1);
  EXPECT_GE(held, kBurst - 20);
  EXPECT_EQ(static_cast<int>(executed.size()), resolved);
  for (const auto& r : results) {
    if (r.status() == v1::WORKFLOW_STATUS_WAITING) {
      EXPECT_EQ(r.request_id(), "b19");
    }
  }
  // One open breaker naming the planted common cause.
  v1::ListBreakersResponse open;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(
        stub_->ListBreakers(&ctx, v1::ListBreakersRequest(), &open).ok());
  }
  ASSERT_EQ(open.breakers_size(), 1);
  EXPECT_EQ(open.breakers(0).scope(), "prod/shop");
  EXPECT_THAT(open.breakers(0).suspected_cause(), HasSubstr("worker-3"));
  EXPECT_EQ(open.breakers(0).workflow_id(), escalation);
  EXPECT_EQ(open.breakers(0).held_incidents(), kBurst - 20);
  // Cleared by a human: automation resumes.
  {
    v1::ClearBreakerRequest req;
    req.set_scope("prod/shop");
    req.set_reason("node worker-3 drained");
    v1::ClearBreakerResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ClearBreaker(&ctx, req, &resp).ok());
  }
  {
    v1::ListBreakersResponse none;
    grpc::ClientContext ctx;
    ASSERT_TRUE(
        stub_->ListBreakers(&ctx, v1::ListBreakersRequest(), &none).ok());
    EXPECT_EQ(none.breakers_size(), 0);
  }
  {
    v1::ClearBreakerRequest req;
    req.set_scope("prod/shop");
    v1::ClearBreakerResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub_->ClearBreaker(&ctx, req, &resp).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  agent_->SendIncident(
      PodIncident("api-after", "shop", "worker-4", "after", "api-7c9d2"));
  std::map<std::string, int> after;
  std::vector<v1::IncidentResult> last = agent_->Serve(1, &after);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].status(), v1::WORKFLOW_STATUS_RESOLVED);
  int tripped = 0, cleared = 0;
  for (const auto& e : Audit()) {
    tripped += e.kind() == v1::AuditEntry::KIND_BREAKER_TRIPPED;
    cleared += e.kind() == v1::AuditEntry::KIND_BREAKER_CLEARED;
  }
  EXPECT_EQ(tripped, 1);
  EXPECT_EQ(cleared, 1);
  if (tripped != 1) {
    for (const auto& e : Audit()) ADD_FAILURE() << e.DebugString();
  }
}

// The agent reports what the fix changed; the pod then fails in a new way.
void ChangedTheLimit(const v1::ActionRequest& a, v1::ActionResult* res) {
  if (a.action().type() == v1::ACTION_TYPE_UNDO) {
    res->set_message("restored");
    return;
  }
  auto* c = res->add_changes();
  c->set_path(
      "Deployment/web spec.template.spec.containers[app].resources.limits."
      "memory");
  c->set_before("128Mi");
  c->set_after("256Mi");
}

TEST_F(SafetyTest, ARegressionIsUndoneAtOnceAndTheEventSaysSo) {
  Start([](ServerConfig& c) {
    c.workflow.max_attempts = 1;
    c.workflow.escalation_waits = false;
  });
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "worse"));
  std::map<std::string, int> executed;
  std::vector<v1::IncidentResult> results =
      agent_->Serve(1, &executed, ChangedTheLimit,
                    [](const v1::ObservationRequest&, v1::PodStatusReport* st) {
                      st->set_healthy(false);
                      st->set_restarts(30);
                      st->set_failure_reason("CreateContainerConfigError");
                    });
  ASSERT_EQ(results.size(), 1u);
  // The second request was the undo, restoring what the first changed.
  std::vector<v1::ActionRequest> requests;
  for (const auto& m : agent_->All()) {
    if (m.has_action_request()) requests.push_back(m.action_request());
  }
  ASSERT_EQ(requests.size(), 2u);
  const v1::Action& undo = requests[1].action();
  EXPECT_EQ(undo.type(), v1::ACTION_TYPE_UNDO);
  EXPECT_EQ(undo.undo_of(), requests[0].action_id());
  ASSERT_EQ(undo.restore_size(), 1);
  EXPECT_EQ(undo.restore(0).before(), "128Mi");
  EXPECT_EQ(undo.restore(0).after(), "256Mi");
  bool undo_event = false;
  for (const auto& ev : Events(results[0].workflow_id())) {
    if (ev.has_undo()) {
      undo_event = true;
      EXPECT_TRUE(ev.undo().applied());
      EXPECT_THAT(ev.undo().reason(), HasSubstr("regression"));
      EXPECT_EQ(ev.undo().requested_by(), "policy");
    }
  }
  EXPECT_TRUE(undo_event);
}

TEST_F(SafetyTest, NoUndoWhenTheFixSimplyDidNotWork) {
  Start([](ServerConfig& c) {
    c.workflow.max_attempts = 1;
    c.workflow.escalation_waits = false;
  });
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "same"));
  std::map<std::string, int> executed;
  std::vector<v1::IncidentResult> results =
      agent_->Serve(1, &executed, ChangedTheLimit,
                    [](const v1::ObservationRequest&, v1::PodStatusReport* st) {
                      st->set_healthy(false);
                      st->set_restarts(5);
                      st->set_failure_reason("OOMKilled");
                    });
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(ActionRequests(), 1);
  for (const auto& ev : Events(results[0].workflow_id())) {
    EXPECT_FALSE(ev.has_undo());
  }
}

TEST_F(SafetyTest, AnOperatorUndoesAnActionOnTheAgent) {
  Start();
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "fixed"));
  std::map<std::string, int> executed;
  std::vector<v1::IncidentResult> results =
      agent_->Serve(1, &executed, ChangedTheLimit, nullptr);
  ASSERT_EQ(results.size(), 1u);
  ASSERT_EQ(executed.size(), 1u);
  const std::string action_id = executed.begin()->first;
  v1::UndoActionRequest req;
  req.set_action_id(action_id);
  req.set_reason("the new limit starves the node");
  v1::UndoActionResponse resp;
  {
    grpc::ClientContext ctx;
    grpc::Status s = stub_->UndoAction(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(resp.undo().undo_of(), action_id);
  EXPECT_EQ(resp.undo().action().type(), v1::ACTION_TYPE_UNDO);
  std::vector<v1::IncidentResult> undone =
      agent_->Serve(1, &executed, ChangedTheLimit, nullptr);
  ASSERT_EQ(undone.size(), 1u);
  EXPECT_EQ(undone[0].workflow_id(), resp.workflow_id());
  EXPECT_THAT(undone[0].escalation_reason(), HasSubstr("undo applied"));
  EXPECT_EQ(executed.count(absl::StrCat(action_id, "/undo")), 1u);
  // Bad and unknown ids are answered, naming the field.
  for (const std::string& bad : {std::string(), std::string("no-slash")}) {
    v1::UndoActionRequest b;
    b.set_action_id(bad);
    grpc::ClientContext ctx;
    grpc::Status s = stub_->UndoAction(&ctx, b, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_THAT(s.error_message(), HasSubstr("action_id"));
  }
  v1::UndoActionRequest unknown;
  unknown.set_action_id("wf-9-000009/1");
  grpc::ClientContext ctx;
  EXPECT_EQ(stub_->UndoAction(&ctx, unknown, &resp).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(SafetyTest, CancelAndForkAreAuditedWithWhoDidThem) {
  Start([](ServerConfig& c) { c.policy.mode = v1::POLICY_MODE_SHADOW; });
  agent_->SendIncident(PodIncident("web-1", "shop", "n1", "ops"));
  v1::IncidentResult r = WaitResult("ops");
  ASSERT_EQ(r.status(), v1::WORKFLOW_STATUS_WAITING);
  v1::ForkWorkflowResponse forked;
  {
    v1::ForkWorkflowRequest req;
    req.set_workflow_id(r.workflow_id());
    req.set_step(1);
    grpc::ClientContext ctx;
    grpc::Status s = stub_->ForkWorkflow(&ctx, req, &forked);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  {
    v1::CancelWorkflowRequest req;
    req.set_workflow_id(r.workflow_id());
    v1::CancelWorkflowResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->CancelWorkflow(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  int forks = 0, cancels = 0;
  for (const auto& e : Audit()) {
    if (e.kind() == v1::AuditEntry::KIND_FORK) {
      ++forks;
      EXPECT_EQ(e.workflow_id(), r.workflow_id());
      EXPECT_THAT(e.detail(), HasSubstr(forked.workflow_id()));
      EXPECT_EQ(e.namespace_(), "shop");
      EXPECT_EQ(e.cluster(), "prod");
      EXPECT_EQ(e.principal(), "anonymous");
    }
    if (e.kind() == v1::AuditEntry::KIND_CANCEL) {
      ++cancels;
      EXPECT_EQ(e.workflow_id(), r.workflow_id());
      EXPECT_EQ(e.decider(), v1::AuditEntry::DECIDER_HUMAN);
    }
  }
  EXPECT_EQ(forks, 1);
  EXPECT_EQ(cancels, 1);
}

TEST_F(SafetyTest, ReflexionctlShadowComparesWouldBeActionsWithWhatHumansDid) {
  Start([](ServerConfig& c) { c.policy.mode = v1::POLICY_MODE_SHADOW; });
  for (int i = 0; i < 2; ++i) {
    agent_->SendIncident(PodIncident(absl::StrCat("web-", i), "shop", "n1",
                                     absl::StrCat("sh", i)));
  }
  const std::string ctl =
      absl::StrCat("--server 127.0.0.1:", app_->port(), " -o json shadow");
  std::vector<v1::IncidentResult> waiting = {WaitResult("sh0"),
                                             WaitResult("sh1")};
  CommandResult before = RunCtl(ctl);
  EXPECT_EQ(before.exit_code, 0) << before.output;
  EXPECT_THAT(before.output,
              HasSubstr(R"("shadow_workflows": 2, "decided": 0, "agreed": 0)"));
  // One human did what shadow mode proposed, the other something else.
  std::string proposed;
  for (const auto& e : Audit()) {
    if (e.kind() == v1::AuditEntry::KIND_POLICY &&
        e.workflow_id() == waiting[0].workflow_id()) {
      proposed = core::FindAction(e.action().type())->name;
    }
  }
  ASSERT_FALSE(proposed.empty());
  for (int i = 0; i < 2; ++i) {
    v1::ResumeWorkflowRequest req;
    req.set_workflow_id(waiting[i].workflow_id());
    req.set_etag(waiting[i].etag());
    req.mutable_decision()->set_kind(v1::HumanDecision::KIND_MARK_RESOLVED);
    req.mutable_decision()->set_strategy(
        i == 0 ? proposed
               : (proposed == "delete_pod" ? "patch_image" : "delete_pod"));
    v1::ResumeWorkflowResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->ResumeWorkflow(&ctx, req, &resp).ok());
  }
  CommandResult after = RunCtl(ctl);
  EXPECT_EQ(after.exit_code, 0) << after.output;
  EXPECT_THAT(after.output,
              HasSubstr(R"("shadow_workflows": 2, "decided": 2, "agreed": 1)"));
  // A strategy outside the catalog is refused, naming the field.
  v1::ResumeWorkflowRequest bad;
  bad.set_workflow_id(waiting[0].workflow_id());
  bad.set_etag("w1");
  bad.mutable_decision()->set_kind(v1::HumanDecision::KIND_MARK_RESOLVED);
  bad.mutable_decision()->set_strategy("rm_rf");
  v1::ResumeWorkflowResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = stub_->ResumeWorkflow(&ctx, bad, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("decision.strategy"));
}

TEST_F(SafetyTest, ARequestMayAskForADryRunButNeverForMore) {
  Start([](ServerConfig& c) {
    c.policy.namespaces["quiet"] = v1::POLICY_MODE_SHADOW;
  });
  // In an enforce namespace a dry run is asked of the agent.
  v1::Incident dry = PodIncident("web-1", "shop", "n1", "asked");
  dry.set_dry_run(true);
  agent_->SendIncident(dry);
  int i = agent_->WaitFor(
      [](const v1::ResolveResponse& m) { return m.has_action_request(); });
  ASSERT_GE(i, 0);
  EXPECT_TRUE(agent_->At(i).action_request().dry_run());
  // In a shadow namespace it stays shadow: nothing is asked of the agent.
  v1::Incident more = PodIncident("web-2", "quiet", "n1", "shadowed");
  more.set_dry_run(true);
  agent_->SendIncident(more);
  v1::IncidentResult r = WaitResult("shadowed");
  EXPECT_THAT(r.escalation_reason(), HasSubstr("shadow mode"));
  EXPECT_EQ(ActionRequests(), 1);
}

}  // namespace
}  // namespace reflexion::server

#pragma once

// A test agent for end-to-end tests of agent sessions: one Resolve stream
// opened with an AgentHello, a reader thread collecting every message, and
// helpers that wait for a kind of message (conditions, never sleeps) and
// act as the Go agent does.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "reflexion/v1/reflexion.grpc.pb.h"

namespace reflexion::server {

namespace v1 = ::reflexion::v1;

inline constexpr absl::Duration kWait = absl::Seconds(60);

// An OOMKilled pod of a Deployment, as an agent reports it.
inline v1::Incident OomIncident(const std::string& pod,
                                const std::string& rid) {
  v1::Incident in;
  in.set_pod_name(pod);
  in.set_namespace_("shop");
  in.set_error_type("OOMKilled");
  in.set_request_id(rid);
  auto* c = in.add_container_statuses();
  c->set_name("app");
  c->set_image("shop/app:1.4");
  c->set_restart_count(4);
  c->set_last_termination_reason("OOMKilled");
  c->set_last_exit_code(137);
  c->set_waiting_reason("CrashLoopBackOff");
  in.mutable_executor_facts()->set_memory_limit_bytes(128 << 20);
  in.mutable_executor_facts()->set_last_healthy_image("shop/app:1.3");
  return in;
}

// A test agent: one Resolve stream, a reader thread collecting every
// message, and helpers that wait for a kind of message.
class TestAgent {
 public:
  TestAgent(v1::ReflexionService::Stub* stub, const std::string& cluster,
            const std::string& agent_id) {
    stream_ = stub->Resolve(&ctx_);
    v1::ResolveRequest hello;
    hello.mutable_hello()->set_cluster(cluster);
    hello.mutable_hello()->set_agent_id(agent_id);
    hello.mutable_hello()->set_agent_version("test");
    hello.mutable_hello()->mutable_capabilities()->set_executes_actions(true);
    hello.mutable_hello()->mutable_capabilities()->set_observes_pods(true);
    EXPECT_TRUE(stream_->Write(hello));
    reader_ = std::thread([this] {
      v1::ResolveResponse m;
      while (stream_->Read(&m)) {
        absl::MutexLock lock(&mu_);
        got_.push_back(m);
      }
      absl::MutexLock lock(&mu_);
      ended_ = true;
    });
  }
  ~TestAgent() { Cancel(); }

  void Send(const v1::ResolveRequest& r) {
    absl::MutexLock lock(&write_mu_);
    EXPECT_TRUE(stream_->Write(r));
  }
  void SendIncident(const v1::Incident& in) {
    v1::ResolveRequest r;
    *r.mutable_incident() = in;
    Send(r);
  }
  void Cancel() {
    if (!reader_.joinable()) return;
    ctx_.TryCancel();
    reader_.join();
  }

  // Waits for the first message (from index `from`) that `pred` accepts;
  // returns its index, -1 on timeout.
  int WaitFor(const std::function<bool(const v1::ResolveResponse&)>& pred,
              size_t from = 0, absl::Duration timeout = kWait) {
    absl::MutexLock lock(&mu_);
    int found = -1;
    auto cond = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      for (size_t i = from; i < got_.size(); ++i) {
        if (pred(got_[i])) {
          found = static_cast<int>(i);
          return true;
        }
      }
      return ended_;
    };
    mu_.AwaitWithTimeout(absl::Condition(&cond), timeout);
    return found;
  }
  v1::ResolveResponse At(int i) {
    absl::MutexLock lock(&mu_);
    return got_.at(i);
  }
  std::vector<v1::ResolveResponse> All() {
    absl::MutexLock lock(&mu_);
    return got_;
  }

  // Answers every action request with APPLIED and every observation request
  // with a healthy report, until `results` final (not WAITING) results
  // arrived or the stream ended; returns them. `executed` counts the
  // requests per action id.
  std::vector<v1::IncidentResult> Serve(size_t results,
                                        std::map<std::string, int>* executed) {
    return Serve(results, executed, nullptr, nullptr);
  }

  // As above; `on_action` (may be null) fills the result of an action
  // request (preset: APPLIED), `on_observe` (may be null) the pod status
  // report of an observation request (preset: healthy, 4 restarts).
  using ActionHook =
      std::function<void(const v1::ActionRequest&, v1::ActionResult*)>;
  using ObserveHook =
      std::function<void(const v1::ObservationRequest&, v1::PodStatusReport*)>;
  std::vector<v1::IncidentResult> Serve(size_t results,
                                        std::map<std::string, int>* executed,
                                        const ActionHook& on_action,
                                        const ObserveHook& on_observe) {
    // Continues after the messages an earlier Serve handled.
    size_t next = served_;
    std::vector<v1::IncidentResult> out;
    while (out.size() < results) {
      int i = WaitFor([](const v1::ResolveResponse&) { return true; }, next);
      if (i < 0) break;
      next = i + 1;
      served_ = next;
      v1::ResolveResponse m = At(i);
      if (m.has_action_request()) {
        const auto& a = m.action_request();
        int& n = (*executed)[a.action_id()];
        ++n;
        v1::ResolveRequest r;
        auto* res = r.mutable_action_result();
        res->set_workflow_id(a.workflow_id());
        res->set_action_id(a.action_id());
        res->set_outcome(v1::ActionResult::OUTCOME_APPLIED);
        res->set_message(n == 1 ? "patched" : "already applied");
        if (on_action) on_action(a, res);
        Send(r);
      } else if (m.has_observation_request()) {
        v1::ResolveRequest r;
        auto* st = r.mutable_pod_status();
        st->set_workflow_id(m.observation_request().workflow_id());
        st->set_action_id(m.observation_request().action_id());
        st->set_pod_name(m.observation_request().pod_name());
        st->set_healthy(true);
        st->set_restarts(4);
        if (on_observe) on_observe(m.observation_request(), st);
        Send(r);
      } else if (m.has_result() &&
                 m.result().status() != v1::WORKFLOW_STATUS_WAITING) {
        out.push_back(m.result());
      }
    }
    return out;
  }

 private:
  grpc::ClientContext ctx_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::ResolveRequest, v1::ResolveResponse>>
      stream_;
  std::thread reader_;
  absl::Mutex write_mu_;
  absl::Mutex mu_;
  std::vector<v1::ResolveResponse> got_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  size_t served_ = 0;  // messages handled by Serve (one caller at a time)
};

}  // namespace reflexion::server

// Cost of the UTF-8 guards on the hot path: RepairUtf8 / FindInvalidUtf8 on
// a typical ~1 KB WorkflowState (all strings valid: the fast path), against
// serializing the same state for a checkpoint.

#include <string>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "core/reflexion/utf8.h"
#include "reflexion/v1/types.pb.h"

namespace {

reflexion::v1::WorkflowState TypicalState() {
  reflexion::v1::WorkflowState s;
  s.set_workflow_id("wf-20240514-101500-abcd-000042");
  reflexion::v1::Incident& in = *s.mutable_incident();
  in.set_pod_name("checkout-7d9f8b6c5-x2k4q");
  in.set_namespace_("shop");
  in.set_error_type("CrashLoopBackOff");
  in.set_error_message("back-off 5m0s restarting failed container");
  in.set_request_id("req-42");
  reflexion::v1::ContainerStatus* c = in.add_container_statuses();
  c->set_name("checkout");
  c->set_image("registry.example.com/shop/checkout:2.4.1");
  c->set_last_termination_reason("Error");
  for (int i = 0; i < 3; ++i) {
    reflexion::v1::PodEvent* e = in.add_events();
    e->set_type("Warning");
    e->set_reason("BackOff");
    e->set_message("Back-off restarting failed container checkout in pod");
  }
  in.set_logs(
      "2024-05-14T10:15:00Z INFO starting checkout\n"
      "2024-05-14T10:15:01Z ERROR cannot connect to payments: refused\n");
  reflexion::v1::Analysis& a = *s.mutable_analysis();
  a.set_error_family("CrashLoopBackOff");
  a.set_cause("app_error");
  a.set_signature("CrashLoopBackOff/app_error");
  (*a.mutable_features())["exit_code"] = "1";
  (*a.mutable_features())["termination_reason"] = "Error";
  (*a.mutable_features())["recent_rollout"] = "false";
  a.add_evidence("container checkout: last termination Error (exit 1)");
  a.add_evidence("event BackOff: Back-off restarting failed container");
  a.add_lessons("CrashLoopBackOff/app_error: rollback_deployment works");
  s.set_attempt(1);
  s.set_max_attempts(3);
  s.add_tried_strategies("rollback_deployment");
  return s;
}

void BM_RepairUtf8AllValid(benchmark::State& st) {
  reflexion::v1::WorkflowState s = TypicalState();
  st.SetLabel(absl::StrCat(s.ByteSizeLong(), " bytes"));
  for (auto _ : st) benchmark::DoNotOptimize(reflexion::core::RepairUtf8(&s));
}
BENCHMARK(BM_RepairUtf8AllValid);

void BM_FindInvalidUtf8AllValid(benchmark::State& st) {
  const reflexion::v1::WorkflowState s = TypicalState();
  for (auto _ : st) {
    benchmark::DoNotOptimize(reflexion::core::FindInvalidUtf8(s));
  }
}
BENCHMARK(BM_FindInvalidUtf8AllValid);

// The alternative for a checkpoint, whose bytes exist anyway: walk them.
void BM_FindInvalidUtf8InWireAllValid(benchmark::State& st) {
  const std::string wire = TypicalState().SerializeAsString();
  const auto* d = reflexion::v1::WorkflowState::descriptor();
  for (auto _ : st) {
    benchmark::DoNotOptimize(reflexion::core::FindInvalidUtf8InWire(d, wire));
  }
}
BENCHMARK(BM_FindInvalidUtf8InWireAllValid);

void BM_SerializeForComparison(benchmark::State& st) {
  const reflexion::v1::WorkflowState s = TypicalState();
  std::string out;
  for (auto _ : st) {
    out.clear();
    s.SerializeToString(&out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_SerializeForComparison);

void BM_RepairUtf8OneInvalid(benchmark::State& st) {
  for (auto _ : st) {
    st.PauseTiming();
    reflexion::v1::WorkflowState s = TypicalState();
    s.mutable_analysis()->set_evidence(1, "cut in the middle \xC3");
    st.ResumeTiming();
    benchmark::DoNotOptimize(reflexion::core::RepairUtf8(&s));
  }
}
BENCHMARK(BM_RepairUtf8OneInvalid);

}  // namespace

BENCHMARK_MAIN();

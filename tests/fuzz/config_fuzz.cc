// Fuzzes the server config loader: any bytes given to ApplyYaml return a
// status (no exception, no crash, no sanitizer report), and an error names
// what failed in valid UTF-8 (it is logged and printed). A config that
// loads drives a Policy through one incident and one action: no crash, and
// its reasons are valid UTF-8.

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/ports/clock.h"
#include "core/reflexion/policy.h"
#include "server/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  reflexion::server::ServerConfig config;
  const absl::Status s = reflexion::server::ApplyYaml(text, config);
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
    reflexion::fuzz::CheckUtf8(s.message(), "the config error");
    return 0;
  }
  reflexion::core::FakeClock clock;
  reflexion::core::Policy policy(config.policy, &clock);
  reflexion::core::IncidentScope incident;
  incident.namespace_ = "payments";
  incident.pod = "web-1";
  incident.workload_kind = "Deployment";
  incident.workload_name = "web";
  const reflexion::core::Admission a = policy.Admit(incident);
  reflexion::fuzz::CheckUtf8(a.decision.reason(), "the admission reason");
  reflexion::v1::Action action;
  action.set_type(reflexion::v1::ACTION_TYPE_DELETE_POD);
  reflexion::fuzz::CheckUtf8(
      policy.CheckAction(incident, action, false).reason(),
      "the action reason");
  return 0;
}

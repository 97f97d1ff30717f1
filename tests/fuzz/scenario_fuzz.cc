// Fuzzes the scenario loader: any bytes given to SimulatedCluster::FromYaml
// return a status or a cluster (no exception, no crash, no sanitizer
// report); a loaded cluster diagnoses a pod of each scenario's first error
// type.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/sim/scenario.h"
#include "core/sim/simulated_cluster.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::unique_ptr<reflexion::sim::SimulatedCluster>> cluster =
      reflexion::sim::SimulatedCluster::FromYaml(text, /*seed=*/1);
  if (!cluster.ok()) {
    if (cluster.status().code() != absl::StatusCode::kInvalidArgument) {
      __builtin_trap();
    }
    return 0;
  }
  // ParseScenarios accepted it too (FromYaml is built on it).
  absl::StatusOr<std::vector<reflexion::sim::Scenario>> scenarios =
      reflexion::sim::ParseScenarios(text);
  if (!scenarios.ok() || scenarios->empty()) __builtin_trap();
  for (const reflexion::sim::Scenario& s : *scenarios) {
    reflexion::v1::Incident incident;
    incident.set_pod_name("web-1");
    incident.set_namespace_("default");
    incident.set_error_type(s.error_types.front());
    bool called = false;
    (*cluster)->Diagnose(incident,
                         [&](absl::StatusOr<reflexion::v1::Diagnosis> d) {
                           called = true;
                           if (!d.ok())
                             __builtin_trap();  // a listed type always matches
                         });
    if (!called) __builtin_trap();  // synchronous without latency
  }
  return 0;
}

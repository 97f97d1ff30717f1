#pragma once

// Helpers shared by the sim tests.

#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "core/sim/simulated_cluster.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::sim::testing {

// Runs an asynchronous port call and returns its result. The simulated
// cluster completes synchronously, so an unset result is a bug: it comes
// back as kInternal and fails the test.
template <typename T, typename Start>
absl::StatusOr<T> Await(Start&& start) {
  std::optional<absl::StatusOr<T>> out;
  start([&out](absl::StatusOr<T> r) { out = std::move(r); });
  if (!out.has_value()) {
    return absl::InternalError("callback was not called synchronously");
  }
  return *std::move(out);
}

inline reflexion::v1::Incident MakeIncident(const std::string& ns,
                                            const std::string& pod,
                                            const std::string& error_type) {
  reflexion::v1::Incident incident;
  incident.set_namespace_(ns);
  incident.set_pod_name(pod);
  incident.set_error_type(error_type);
  return incident;
}

inline reflexion::v1::Action MakeAction(const std::string& ns,
                                        const std::string& pod,
                                        reflexion::v1::ActionType type,
                                        const std::string& key) {
  reflexion::v1::Action action;
  action.set_namespace_(ns);
  action.set_pod_name(pod);
  action.set_type(type);
  action.set_idempotency_key(key);
  return action;
}

inline absl::StatusOr<reflexion::v1::Diagnosis> Diagnose(
    SimulatedCluster& cluster, const reflexion::v1::Incident& incident) {
  return Await<reflexion::v1::Diagnosis>(
      [&](auto done) { cluster.Diagnose(incident, std::move(done)); });
}

inline absl::StatusOr<reflexion::v1::ExecutionResult> Execute(
    SimulatedCluster& cluster, const reflexion::v1::Action& action) {
  return Await<reflexion::v1::ExecutionResult>(
      [&](auto done) { cluster.Execute(action, std::move(done)); });
}

inline absl::StatusOr<reflexion::v1::Observation> Observe(
    SimulatedCluster& cluster, const reflexion::v1::Action& action,
    absl::Duration window = absl::Seconds(300)) {
  return Await<reflexion::v1::Observation>(
      [&](auto done) { cluster.Observe(action, window, std::move(done)); });
}

}  // namespace reflexion::sim::testing

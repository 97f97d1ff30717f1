#pragma once

#include <string>

#include "absl/time/time.h"
#include "core/ports/callback.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Acts on the cluster. Adapters: the simulated cluster (core/sim), the Go
// agent's REST API, the caller over the Resolve stream.
//
// Every method is asynchronous: it returns at once and calls `done` exactly
// once, possibly on another thread, possibly before returning. Errors:
// kInvalidArgument for an action the executor refuses, kNotFound for an
// unknown pod, kUnavailable when the executor cannot be reached.
// Implementations are thread-safe.
class ClusterExecutor {
 public:
  virtual ~ClusterExecutor() = default;

  // Short name for logs and events ("simulated", "http").
  virtual std::string Name() const = 0;

  // Collects what can be observed about the incident's pod.
  virtual void Diagnose(const reflexion::v1::Incident& incident,
                        Callback<reflexion::v1::Diagnosis> done) = 0;

  // Applies `action` (already validated against the catalog). An action
  // whose idempotency_key was seen before is not applied again: the first
  // result is returned with deduplicated = true.
  virtual void Execute(const reflexion::v1::Action& action,
                       Callback<reflexion::v1::ExecutionResult> done) = 0;

  // Watches the pod after `action` for `window` and reports whether it
  // became healthy and stayed healthy.
  virtual void Observe(const reflexion::v1::Action& action,
                       absl::Duration window,
                       Callback<reflexion::v1::Observation> done) = 0;
};

}  // namespace reflexion::core

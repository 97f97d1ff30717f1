#pragma once

#include "core/ports/reflector.h"

namespace reflexion::core {

// The built-in rule-based reflector: no network, deterministic. It explains
// an attempt from the observation (relapse, unchanged failure, partial
// recovery), proposes bounded parameter changes when the evidence says the
// action was right but too weak (memory still OOM, probes still failing,
// still unschedulable), and scores its own confidence: a failure it cannot
// explain gets a low quality, which routes the workflow to meta_reflect.
// Completes synchronously. Thread-safe (stateless).
class HeuristicReflector final : public Reflector {
 public:
  std::string Name() const override { return "heuristic"; }
  void Reflect(const ReflectionRequest& request,
               Callback<reflexion::v1::Reflection> done) override;

  // The same, synchronously.
  static reflexion::v1::Reflection ReflectNow(const ReflectionRequest& request);
};

}  // namespace reflexion::core

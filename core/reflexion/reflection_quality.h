#pragma once

#include <string>

#include "core/ports/reflector.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// The parts of a reflection's judged quality, each in [0, 1].
struct ReflectionQuality {
  // Specific evidence: how many distinct facts of this attempt the text
  // names (lessons are not read: they start with the signature by
  // construction) — the error family, the cause, the strategy tried, its
  // parameter and value, feature values, the observed failure reason, the
  // observation's signals and anomalies, distinctive evidence words —
  // min(1, facts / 3).
  double evidence = 0;
  // A concrete next step: 1 when it proposes a strategy change or
  // recommends a catalog strategy, or its text names a catalog strategy
  // other than the one tried or a strategy parameter (e.g.
  // "memory_factor"), or — after a success — names the strategy that
  // worked; 0 otherwise (naming only the strategy that failed is evidence,
  // not a next step).
  double next_step = 0;
  // Agreement with the observed outcome: 1 when it says it worked and it
  // did, or says it failed and it did; 0 when it says the opposite only;
  // 0.5 when it says neither (or both for a success).
  double agreement = 0;
  // agreement * (0.5 * evidence + 0.5 * next_step): a reflection that
  // misreads the outcome scores 0 however specific; one without a next
  // step at most 0.5 (so an unexplained failure goes to meta_reflect).
  double score = 0;
};

// Judges `reflection` (its text, its proposed changes and recommended
// strategy) against the attempt in `request`. Pure, thread-safe;
// the same input always gives the same result. Used by every reflector so
// that Reflection.quality means one thing.
ReflectionQuality JudgeReflection(const ReflectionRequest& request,
                                  const reflexion::v1::Reflection& reflection);

// The catalog strategy a (meta) reflection recommends: its
// recommended_strategy when that names a catalog strategy, else the first
// catalog strategy named in its text after "prefer", "try", "use",
// "recommend" or "next" that is not the one tried (`tried`), else "".
std::string RecommendedStrategy(const reflexion::v1::Reflection& reflection,
                                const std::string& tried);

}  // namespace reflexion::core

#pragma once

#include <string>
#include <vector>

#include "core/ports/callback.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Depth of a reflection.
enum class ReflectionDepth { kShallow, kMedium, kDeep };

// "shallow" / "medium" / "deep".
std::string DepthName(ReflectionDepth depth);
// Parses "shallow" / "medium" / "deep"; false on anything else.
bool ParseDepth(std::string_view text, ReflectionDepth* depth);

// Everything a reflector may look at. Copies, so the request outlives the
// workflow step that made it.
struct ReflectionRequest {
  reflexion::v1::Analysis analysis;
  reflexion::v1::StrategySelection selection;
  reflexion::v1::ExecutionResult execution;
  reflexion::v1::Observation observation;
  // Strategies tried earlier in this workflow, oldest first.
  std::vector<std::string> tried_strategies;
  int attempt = 1;
  int max_attempts = 1;
  ReflectionDepth depth = ReflectionDepth::kMedium;
  // For meta-reflection: the reflection being re-examined.
  bool meta = false;
  reflexion::v1::Reflection previous;
  // Text copied from the pod (its error message, event messages, the tail
  // of its logs), as the incident carried it: untrusted data. A reflector
  // that sends it anywhere redacts it first and passes it as quoted data,
  // never as instructions.
  std::string pod_data;
};

// Writes a verbal reflection on one attempt. Adapters: the heuristic
// (rule-based) reflector, an OpenAI-compatible LLM.
//
// Asynchronous: returns at once, calls `done` exactly once on any thread.
// Errors: kUnavailable / kDeadlineExceeded when an upstream fails (callers
// fall back to the heuristic reflector). Thread-safe.
class Reflector {
 public:
  virtual ~Reflector() = default;
  virtual std::string Name() const = 0;
  virtual void Reflect(const ReflectionRequest& request,
                       Callback<reflexion::v1::Reflection> done) = 0;
};

}  // namespace reflexion::core

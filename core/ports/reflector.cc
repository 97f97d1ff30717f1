#include "core/ports/reflector.h"

namespace reflexion::core {

std::string DepthName(ReflectionDepth depth) {
  switch (depth) {
    case ReflectionDepth::kShallow:
      return "shallow";
    case ReflectionDepth::kMedium:
      return "medium";
    case ReflectionDepth::kDeep:
      return "deep";
  }
  return "medium";
}

bool ParseDepth(std::string_view text, ReflectionDepth* depth) {
  if (text == "shallow") {
    *depth = ReflectionDepth::kShallow;
  } else if (text == "medium") {
    *depth = ReflectionDepth::kMedium;
  } else if (text == "deep") {
    *depth = ReflectionDepth::kDeep;
  } else {
    return false;
  }
  return true;
}

}  // namespace reflexion::core

#pragma once

#include "absl/strings/string_view.h"

namespace reflexion::sim {

// The text of core/sim/scenarios.yaml, embedded into the library at build
// time (core/sim/sources.cmake), so the server needs no file at run time.
// Static storage; thread-safe.
absl::string_view DefaultScenariosYaml();

}  // namespace reflexion::sim

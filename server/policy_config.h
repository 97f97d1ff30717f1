#pragma once

#include <string>

#include "absl/status/status.h"
#include "core/reflexion/policy.h"
#include "yaml-cpp/yaml.h"

namespace reflexion::server {

// Applies one key of the YAML `policy:` section (`key` is the full key,
// "policy.<leaf>"; `value` its node, scalar or nested) to `policy`:
//   mode, clusters, namespaces, allow_namespaces, deny_namespaces,
//   own_namespace, default_cluster, rate_limits, breaker, freeze_windows
// (README.md, "Safety policy"). A map or list replaces the configured one;
// rate_limits and breaker set only the sub-keys given. Unknown keys (at any
// depth), wrong shapes and out-of-range values are kInvalidArgument whose
// message names the full key path, e.g.
//   config key policy.freeze_windows[1].start: "25:00" is not HH:MM
// Sets `*own_namespace_set` when policy.own_namespace is given (so
// POD_NAMESPACE does not override it). Never throws.
absl::Status ApplyPolicyKey(const std::string& key, const YAML::Node& value,
                            core::PolicyConfig& policy,
                            bool* own_namespace_set);

}  // namespace reflexion::server

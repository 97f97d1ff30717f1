#pragma once

// Helpers shared by the config parsers (config.cc, policy_config.cc).

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "yaml-cpp/yaml.h"

namespace reflexion::server::config_text {

// Config text in messages: C-escaped, so a key or value with bytes that are
// not UTF-8 (or control characters) is still a valid, printable message.
std::string Quote(absl::string_view text);

// kInvalidArgument "config key <key>: <why>".
absl::Status Bad(absl::string_view key, absl::string_view why);

// "a map", "null", ... for messages about a node of the wrong shape.
const char* KindOf(const YAML::Node& node);

}  // namespace reflexion::server::config_text

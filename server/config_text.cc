#include "server/config_text.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace reflexion::server::config_text {

std::string Quote(absl::string_view text) { return absl::CHexEscape(text); }

absl::Status Bad(absl::string_view key, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("config key ", Quote(key), ": ", why));
}

const char* KindOf(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "null";
    case YAML::NodeType::Scalar:
      return "a scalar";
    case YAML::NodeType::Sequence:
      return "a sequence";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Undefined:
      break;
  }
  return "undefined";
}

}  // namespace reflexion::server::config_text

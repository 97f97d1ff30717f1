#pragma once
// TEMPORARY (replaced by the utf8 branch): the subset the server uses.
#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace reflexion::core {
inline absl::string_view ClipUtf8(absl::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}
inline std::string FindInvalidUtf8InWire(const google::protobuf::Descriptor*,
                                         absl::string_view,
                                         absl::string_view = "") {
  return "";
}
}  // namespace reflexion::core

// Fuzzes the server config loader: any bytes given to ApplyYaml return a
// status (no exception, no crash, no sanitizer report), and an error names
// what failed in valid UTF-8 (it is logged and printed).

#include <cstddef>
#include <cstdint>
#include <string>

#include "server/config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  reflexion::server::ServerConfig config;
  const absl::Status s = reflexion::server::ApplyYaml(text, config);
  if (!s.ok()) {
    if (s.code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
    reflexion::fuzz::CheckUtf8(s.message(), "the config error");
  }
  return 0;
}

// Fuzzes secret redaction, which sees every byte of pod data before it is
// sent, logged or stored. The first input byte picks the mode:
//   even: the rest is text for RedactSecrets;
//   odd:  the rest is "name\nvalue" for RedactNamedValue (no newline: all
//         name, empty value).
// Checks: the output is valid UTF-8; redacting the output again changes
// nothing and counts nothing (idempotence); the Redaction is consistent
// with the output (distinct kinds, each written as a marker; no more
// redactions counted than markers written).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/reflexion/redact.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using reflexion::core::Redaction;

[[noreturn]] void Fail(const char* what, absl::string_view in,
                       absl::string_view out, absl::string_view again) {
  std::fprintf(stderr, "%s\n in:    \"%s\"\n out:   \"%s\"\n again: \"%s\"\n",
               what, absl::CHexEscape(in).c_str(),
               absl::CHexEscape(out).c_str(), absl::CHexEscape(again).c_str());
  std::abort();
}

// Markers "[REDACTED:kind]" in s (kind: 1-40 of [a-z0-9_]); written apart
// from redact.cc on purpose, as an independent oracle.
int CountMarkers(absl::string_view s) {
  int count = 0;
  for (size_t i = s.find("[REDACTED:"); i != absl::string_view::npos;
       i = s.find("[REDACTED:", i + 1)) {
    size_t k = i + 10;
    while (k < s.size() && k - (i + 10) < 40 &&
           ((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= '0' && s[k] <= '9') ||
            s[k] == '_')) {
      ++k;
    }
    if (k > i + 10 && k < s.size() && s[k] == ']') ++count;
  }
  return count;
}

void CheckRedaction(const Redaction& r, absl::string_view in,
                    absl::string_view out) {
  if (r.count < static_cast<int>(r.kinds.size())) {
    Fail("fewer redactions than kinds", in, out, "");
  }
  for (size_t a = 0; a < r.kinds.size(); ++a) {
    for (size_t b = a + 1; b < r.kinds.size(); ++b) {
      if (r.kinds[a] == r.kinds[b]) Fail("duplicate kind", in, out, r.kinds[a]);
    }
    if (out.find(absl::StrCat("[REDACTED:", r.kinds[a], "]")) ==
        absl::string_view::npos) {
      Fail("kind without its marker", in, out, r.kinds[a]);
    }
  }
  if (r.count > CountMarkers(out))
    Fail("more redactions than markers", in, out, "");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const absl::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    Redaction first;
    const std::string out = reflexion::core::RedactSecrets(in, &first);
    reflexion::fuzz::CheckUtf8(out, "RedactSecrets output");
    CheckRedaction(first, in, out);
    Redaction second;
    const std::string again = reflexion::core::RedactSecrets(out, &second);
    if (again != out || second.count != 0) {
      Fail("RedactSecrets is not idempotent", in, out, again);
    }
  } else {
    const size_t nl = in.find('\n');
    const absl::string_view name = in.substr(0, nl);
    const absl::string_view value =
        nl == absl::string_view::npos ? absl::string_view() : in.substr(nl + 1);
    Redaction first;
    const std::string out =
        reflexion::core::RedactNamedValue(name, value, &first);
    reflexion::fuzz::CheckUtf8(out, "RedactNamedValue output");
    CheckRedaction(first, value, out);
    const std::string again = reflexion::core::RedactNamedValue(name, out);
    if (again != out)
      Fail("RedactNamedValue is not idempotent", value, out, again);
  }
  return 0;
}

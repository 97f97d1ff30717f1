#pragma once

// Helpers shared by the libFuzzer targets. A failed check prints what was
// wrong and aborts, which libFuzzer reports as a crash with the input.

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

namespace reflexion::fuzz {

// Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF). Written apart from
// core/reflexion/utf8.h on purpose: an independent oracle also checks it.
inline bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return false;  // continuation byte, C0/C1 or F5..FF
    }
    if (n - i < len) return false;
    const unsigned char c1 = static_cast<unsigned char>(s[i + 1]);
    if (c1 < lo || c1 > hi) return false;
    for (size_t k = 2; k < len; ++k) {
      const unsigned char ck = static_cast<unsigned char>(s[i + k]);
      if (ck < 0x80 || ck > 0xBF) return false;
    }
    i += len;
  }
  return true;
}

// Aborts, naming `what`, when `s` is not valid UTF-8.
inline void CheckUtf8(absl::string_view s, absl::string_view what) {
  if (IsValidUtf8(s)) return;
  std::fprintf(stderr, "invalid UTF-8 in %.*s: \"%s\"\n",
               static_cast<int>(what.size()), what.data(),
               absl::CHexEscape(s).c_str());
  std::abort();
}

// CheckUtf8 on every string field of `m`, recursively (map entries are
// messages, so map keys and values are covered).
inline void CheckMessageUtf8(const google::protobuf::Message& m,
                             const std::string& path) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* r = m.GetReflection();
  const google::protobuf::Descriptor* d = m.GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    const std::string name = path + "." + f->name();
    if (f->type() == FieldDescriptor::TYPE_STRING) {
      if (f->is_repeated()) {
        for (int k = 0; k < r->FieldSize(m, f); ++k) {
          CheckUtf8(r->GetRepeatedString(m, f, k), name);
        }
      } else {
        CheckUtf8(r->GetString(m, f), name);
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int k = 0; k < r->FieldSize(m, f); ++k) {
          CheckMessageUtf8(r->GetRepeatedMessage(m, f, k), name);
        }
      } else if (r->HasField(m, f)) {
        CheckMessageUtf8(r->GetMessage(m, f), name);
      }
    }
  }
}

}  // namespace reflexion::fuzz

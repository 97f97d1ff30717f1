#include "core/reflexion/redact.h"

#include <algorithm>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"
#include "re2/re2.h"

namespace reflexion::core {
namespace {

struct Rule {
  const char* kind;
  const char* pattern;
  // RE2 rewrite around the marker: `\1` keeps a prefix (a key, a scheme
  // and user); `after` puts back a delimiter the pattern consumed.
  const char* keep;
  const char* after = "";
};

// Applied in order; each is one linear RE2 pass. Earlier rules take the
// specific shapes, so a later generic one never splits them.
constexpr Rule kRules[] = {
    {"private_key",
     R"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z))",
     ""},
    {"url_password",
     R"(([a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@\[\]]+:)[^\s@/\[\]]+@)", R"(\1)",
     "@"},
    {"jwt",
     R"(\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*)", ""},
    {"aws_access_key",
     R"(\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b)", ""},
    {"gcp_api_key", R"(\bAIza[0-9A-Za-z_\-]{35})", ""},
    {"github_token",
     R"(\b(?:(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}))",
     ""},
    {"slack_token", R"(\bxox[abprs]-[A-Za-z0-9\-]{10,})", ""},
    {"api_key",
     R"(\b(?:sk-(?:proj-)?[A-Za-z0-9_\-]{20,}|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}))",
     ""},
    {"oauth_token", R"(\bya29\.[A-Za-z0-9_\-]{20,})", ""},
    {"bearer_token", R"((?i)(\b(?:bearer|basic)\s+)[A-Za-z0-9\-._~+/]{8,}=*)",
     R"(\1)"},
    // An Authorization header without a scheme (a bare token; "Bearer X"
    // was taken above).
    {"bearer_token",
     R"((?i)(\bauthorization["']?\s*[:=]\s*["']?)[A-Za-z0-9\-._~+/]{16,}=*)",
     R"(\1)"},
    {"secret_value",
     R"((?i)((?:^|[^a-z0-9])[a-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api_key|api-key|apikey|access_key|access-key|accesskey|private_key|private-key|credentials|credential|auth)["']?\s*[:=]\s*["']?)([^\s"',;&\[][^\s"',;&]*))",
     R"(\1)"},
};

struct Compiled {
  const char* kind;
  std::unique_ptr<RE2> re;
  std::string rewrite;
};

const std::vector<Compiled>& Rules() {
  static const auto* rules = [] {
    auto* out = new std::vector<Compiled>;
    RE2::Options o;
    o.set_log_errors(false);
    o.set_max_mem(64 << 20);
    for (const Rule& r : kRules) {
      Compiled c;
      c.kind = r.kind;
      c.re = std::make_unique<RE2>(r.pattern, o);
      c.rewrite = absl::StrCat(r.keep, "[REDACTED:", r.kind, "]", r.after);
      out->push_back(std::move(c));
    }
    return out;
  }();
  return *rules;
}

void Note(Redaction* found, const char* kind, int n) {
  if (found == nullptr || n <= 0) return;
  found->count += n;
  if (std::find(found->kinds.begin(), found->kinds.end(), kind) ==
      found->kinds.end()) {
    found->kinds.push_back(kind);
  }
}

bool IsBase64Char(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '+' ||
         c == '/' || c == '-' || c == '_';
}

// Runs of 40+ base64 characters mixing upper case, lower case and digits
// (so hex digests, words and paths of one case stay). One pass.
std::string RedactBase64(const std::string& in, Redaction* found) {
  constexpr size_t kMinRun = 40;
  std::string out;
  out.reserve(in.size());
  size_t i = 0;
  int n = 0;
  while (i < in.size()) {
    if (!IsBase64Char(in[i])) {
      out.push_back(in[i++]);
      continue;
    }
    size_t j = i;
    bool upper = false, lower = false, digit = false;
    int slashes = 0;
    while (j < in.size() && IsBase64Char(in[j])) {
      const unsigned char c = static_cast<unsigned char>(in[j]);
      upper |= absl::ascii_isupper(c);
      lower |= absl::ascii_islower(c);
      digit |= absl::ascii_isdigit(c);
      slashes += in[j] == '/';
      ++j;
    }
    size_t end = j;
    while (end < in.size() && in[end] == '=' && end - j < 2) ++end;
    const size_t len = j - i;
    // A path has slashes between words; a blob has few.
    if (len >= kMinRun && upper && lower && digit &&
        static_cast<size_t>(slashes) * 8 < len) {
      out.append("[REDACTED:base64_secret]");
      ++n;
      i = end;
    } else {
      out.append(in, i, j - i);
      i = j;
    }
  }
  Note(found, "base64_secret", n);
  return out;
}

}  // namespace

std::string RedactSecrets(absl::string_view text, Redaction* found) {
  std::string s = ToValidUtf8(text);
  for (const Compiled& r : Rules()) {
    if (!r.re->ok()) continue;  // a pattern RE2 refused (never expected)
    // Markers are never matched again (no pattern accepts a '['), so a
    // second pass changes nothing: idempotent.
    Note(found, r.kind, RE2::GlobalReplace(&s, *r.re, r.rewrite));
  }
  return RedactBase64(s, found);
}

std::string RedactNamedValue(absl::string_view name, absl::string_view value,
                             Redaction* found) {
  std::string lower = absl::AsciiStrToLower(name);
  // "author" is a name, not a credential.
  for (size_t p = lower.find("author"); p != std::string::npos;
       p = lower.find("author", p + 1)) {
    if (lower.compare(p, 13, "authorization") != 0)
      lower.replace(p, 6, "      ");
  }
  static constexpr const char* kSecretWords[] = {"password",
                                                 "passwd",
                                                 "secret",
                                                 "token",
                                                 "api_key",
                                                 "apikey",
                                                 "api-key",
                                                 "access_key",
                                                 "accesskey",
                                                 "private_key",
                                                 "privatekey",
                                                 "credential",
                                                 "auth",
                                                 "dsn",
                                                 "connection_string",
                                                 "connectionstring",
                                                 "conn_str"};
  for (const char* w : kSecretWords) {
    if (lower.find(w) != std::string::npos && !value.empty()) {
      Note(found, "secret_value", 1);
      return "[REDACTED:secret_value]";
    }
  }
  return RedactSecrets(value, found);
}

}  // namespace reflexion::core

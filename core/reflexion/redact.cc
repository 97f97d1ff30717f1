#include "core/reflexion/redact.h"

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"
#include "google/protobuf/struct.pb.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {
namespace {

// One left-to-right scan with no backtracking: at each position a few
// detectors look at a bounded window or at one run of characters, and a
// rejected run is never read again from inside. That keeps it linear.
//
// Idempotence (a second pass sees markers where the first wrote them, and
// must change nothing) rests on three rules, which the fuzz target checks:
//  1. no detector starts inside a run of base64 characters, so a run is
//     always judged whole, never as the pieces a redaction left;
//  2. a detector that accepts copies what it keeps (a key, a scheme, a URL's
//     authority) without scanning it; on a second pass it finds its marker
//     and copies the same (Keep), so that text is not scanned then either;
//  3. a detector that rejects bases the verdict only on text whose verdict a
//     later redaction cannot change: a word that a marker replaced is still
//     "not a number", a run cut by a marker is shorter (still too short).

constexpr absl::string_view kMarkerPrefix = "[REDACTED:";
constexpr size_t kMaxKindLength = 40;
// Longer identifiers are not keys (and reading them stays O(1)).
constexpr size_t kMaxKeyLength = 128;
constexpr size_t kMaxNameValueLength = 64;
constexpr size_t kMinBlobLength = 40;
// Random base64 of 40 characters changes between capital, small letter and
// digit ~23 times; paths and CamelCase identifiers far less often.
constexpr int kMinBlobClassChanges = 12;
constexpr size_t kAwsSecretLength = 40;
constexpr size_t kAwsLookback = 64;
constexpr size_t kToolLookback = 160;
constexpr size_t kMaxPemLabel = 64;
constexpr int kPendingNameLines = 2;

bool IsAlpha(char c) {
  return absl::ascii_isalpha(static_cast<unsigned char>(c));
}
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsUpper(char c) { return c >= 'A' && c <= 'Z'; }
bool IsLower(char c) { return c >= 'a' && c <= 'z'; }
bool IsAlnum(char c) { return IsAlpha(c) || IsDigit(c); }
bool IsSpace(char c) { return c == ' ' || c == '\t'; }
bool IsLineEnd(char c) { return c == '\n' || c == '\r'; }
bool IsWhite(char c) {
  return IsSpace(c) || IsLineEnd(c) || c == '\f' || c == '\v';
}
// base64 and base64url characters: the runs the blob detector judges, and
// what no detector may start right after.
bool IsRunChar(char c) {
  return IsAlnum(c) || c == '+' || c == '/' || c == '_' || c == '-';
}
bool IsKeyChar(char c) {
  return IsAlnum(c) || c == '_' || c == '.' || c == '-';
}
bool IsB64Url(char c) { return IsAlnum(c) || c == '_' || c == '-'; }
bool IsB64Std(char c) { return IsAlnum(c) || c == '+' || c == '/'; }
bool IsUpperOrDigit(char c) { return IsUpper(c) || IsDigit(c); }
bool IsBearerChar(char c) {
  return IsAlnum(c) || c == '.' || c == '_' || c == '~' || c == '+' ||
         c == '/' || c == '-';
}

template <typename Pred>
size_t RunEnd(absl::string_view s, size_t i, Pred pred) {
  while (i < s.size() && pred(s[i])) ++i;
  return i;
}

bool StartsAt(absl::string_view s, size_t i, absl::string_view p) {
  return i <= s.size() && absl::StartsWith(s.substr(i), p);
}

bool StartsAtIgnoreCase(absl::string_view s, size_t i, absl::string_view p) {
  return i <= s.size() && absl::StartsWithIgnoreCase(s.substr(i), p);
}

bool ContainsIgnoreCase(absl::string_view s, absl::string_view p) {
  for (size_t i = 0; i + p.size() <= s.size(); ++i) {
    if (absl::StartsWithIgnoreCase(s.substr(i), p)) return true;
  }
  return false;
}

// Length of the marker "[REDACTED:kind]" at s[i], 0 when there is none.
size_t MarkerLength(absl::string_view s, size_t i) {
  if (!StartsAt(s, i, kMarkerPrefix)) return 0;
  const size_t j = i + kMarkerPrefix.size();
  size_t k = j;
  while (k < s.size() && k - j < kMaxKindLength &&
         (IsLower(s[k]) || IsDigit(s[k]) || s[k] == '_')) {
    ++k;
  }
  if (k == j || k >= s.size() || s[k] != ']') return 0;
  return k + 1 - i;
}

bool IsExactMarker(absl::string_view v) {
  return !v.empty() && MarkerLength(v, 0) == v.size();
}

// ------------------------------------------------------------ known tokens

struct TokenMatch {
  size_t end;
  absl::string_view kind;
};

bool HasDigit(absl::string_view s) {
  return std::any_of(s.begin(), s.end(), IsDigit);
}
bool HasUpper(absl::string_view s) {
  return std::any_of(s.begin(), s.end(), IsUpper);
}

// The provider token starting at s[i] (prefix, length and alphabet as each
// provider documents them), if any.
std::optional<TokenMatch> MatchKnownToken(absl::string_view s, size_t i) {
  const size_t n = s.size();
  auto ends_clean = [&](size_t e, auto pred) { return e == n || !pred(s[e]); };
  if (StartsAt(s, i, "eyJ")) {  // base64url of '{"': header.payload.sig
    const size_t a = RunEnd(s, i, IsB64Url);
    if (a - i < 8 || a >= n || s[a] != '.' || !StartsAt(s, a + 1, "eyJ")) {
      return std::nullopt;
    }
    const size_t b = RunEnd(s, a + 1, IsB64Url);
    if (b - (a + 1) < 8 || b >= n || s[b] != '.') return std::nullopt;
    return TokenMatch{RunEnd(s, b + 1, IsB64Url), "jwt"};
  }
  if (StartsAt(s, i, "AKIA") || StartsAt(s, i, "ASIA")) {
    const size_t e = RunEnd(s, i + 4, IsUpperOrDigit);
    if (e - (i + 4) == 16 && ends_clean(e, IsAlnum)) {
      return TokenMatch{e, "aws_access_key_id"};
    }
    return std::nullopt;
  }
  if (StartsAt(s, i, "AIza")) {
    const size_t e = RunEnd(s, i + 4, IsB64Url);
    if (e - (i + 4) == 35) return TokenMatch{e, "gcp_api_key"};
    return std::nullopt;
  }
  if (StartsAt(s, i, "gh") && i + 3 < n && s[i + 3] == '_' &&
      absl::string_view("pousr").find(s[i + 2]) != absl::string_view::npos) {
    const size_t e = RunEnd(s, i + 4, IsAlnum);
    if (e - (i + 4) >= 30 && ends_clean(e, IsB64Url)) {
      return TokenMatch{e, "github_token"};
    }
    return std::nullopt;
  }
  if (StartsAt(s, i, "github_pat_")) {
    const size_t e =
        RunEnd(s, i + 11, [](char c) { return IsAlnum(c) || c == '_'; });
    if (e - (i + 11) >= 22) return TokenMatch{e, "github_token"};
    return std::nullopt;
  }
  if (StartsAt(s, i, "glpat-")) {
    const size_t e = RunEnd(s, i + 6, IsB64Url);
    if (e - (i + 6) >= 20) return TokenMatch{e, "gitlab_token"};
    return std::nullopt;
  }
  if (StartsAt(s, i, "xox") && i + 4 < n && s[i + 4] == '-' &&
      absl::string_view("abprs").find(s[i + 3]) != absl::string_view::npos) {
    const size_t e =
        RunEnd(s, i + 5, [](char c) { return IsAlnum(c) || c == '-'; });
    if (e - (i + 5) >= 10 && HasDigit(s.substr(i + 5, e - (i + 5))) &&
        ends_clean(e, IsB64Url)) {
      return TokenMatch{e, "slack_token"};
    }
    return std::nullopt;
  }
  if (StartsAt(s, i, "sk_live_") || StartsAt(s, i, "rk_live_") ||
      StartsAt(s, i, "sk_test_") || StartsAt(s, i, "rk_test_")) {
    const size_t e = RunEnd(s, i + 8, IsAlnum);
    if (e - (i + 8) >= 10 && ends_clean(e, IsB64Url)) {
      return TokenMatch{e, "stripe_key"};
    }
    return std::nullopt;
  }
  if (StartsAt(s, i, "sk-")) {
    // sk-…, sk-proj-…, sk-ant-…: random, so digits and capitals; a
    // hyphenated lower-case name (sk-my-deployment-name) is not one.
    const size_t e = RunEnd(s, i + 3, IsB64Url);
    const absl::string_view body = s.substr(i + 3, e - (i + 3));
    if (body.size() >= 20 && HasDigit(body) && HasUpper(body)) {
      return TokenMatch{e, "openai_api_key"};
    }
    return std::nullopt;
  }
  if (StartsAt(s, i, "ya29.")) {
    const size_t e = RunEnd(s, i + 5, IsB64Url);
    if (e - (i + 5) >= 20) return TokenMatch{e, "google_oauth_token"};
    return std::nullopt;
  }
  return std::nullopt;
}

// End of "-----BEGIN <label>-----" (or END) at s[i] when the label names a
// private key, else 0.
size_t PemLineEnd(absl::string_view s, size_t i, absl::string_view word) {
  if (!StartsAt(s, i, "-----") || !StartsAt(s, i + 5, word) ||
      !StartsAt(s, i + 5 + word.size(), " ")) {
    return 0;
  }
  const size_t j = i + 5 + word.size() + 1;
  size_t k = j;
  while (k < s.size() && k - j <= kMaxPemLabel &&
         (IsUpperOrDigit(s[k]) || s[k] == ' ')) {
    ++k;
  }
  if (!StartsAt(s, k, "-----")) return 0;
  if (s.substr(j, k - j).find("PRIVATE KEY") == absl::string_view::npos) {
    return 0;
  }
  return k + 5;
}

// The kind of a value that is one known token or a PEM key, "" otherwise: a
// redacted value then names what it was.
absl::string_view ClassifyValue(absl::string_view v) {
  if (v.empty()) return {};
  if (std::optional<TokenMatch> m = MatchKnownToken(v, 0);
      m.has_value() && m->end == v.size()) {
    return m->kind;
  }
  if (PemLineEnd(v, 0, "BEGIN") > 0) return "private_key";
  return {};
}

// --------------------------------------------------------------- key names

struct SecretWord {
  absl::string_view word;
  absl::string_view kind;
};
struct SecretPair {
  absl::string_view first;
  absl::string_view second;
  absl::string_view kind;
};

constexpr SecretWord kSecretWords[] = {
    {"password", "password"},
    {"passwd", "password"},
    {"pwd", "password"},
    {"pass", "password"},
    {"passphrase", "password"},
    {"secret", "secret"},
    {"secretkey", "secret"},
    {"clientsecret", "secret"},
    {"token", "token"},
    {"auth", "auth"},
    {"authorization", "auth"},
    {"credential", "credentials"},
    {"credentials", "credentials"},
    {"creds", "credentials"},
    {"cookie", "cookie"},
    {"dsn", "connection_string"},
    {"connectionstring", "connection_string"},
    {"connstr", "connection_string"},
    {"apikey", "api_key"},
    {"accesskey", "access_key"},
    {"privatekey", "private_key"},
};
// Run together (dbpassword, authtoken, PGPASSWORD). Not pwd (OLDPWD), auth
// (oauth), pass (bypass, compass).
constexpr SecretWord kSecretSuffixes[] = {
    {"password", "password"},
    {"passwd", "password"},
    {"secret", "secret"},
    {"secretkey", "secret"},
    {"token", "token"},
    {"credentials", "credentials"},
    {"apikey", "api_key"},
    {"accesskey", "access_key"},
    {"privatekey", "private_key"},
};
constexpr SecretPair kSecretPairs[] = {
    {"api", "key", "api_key"},
    {"access", "key", "access_key"},
    {"account", "key", "access_key"},
    {"private", "key", "private_key"},
    {"signing", "key", "private_key"},
    {"encryption", "key", "private_key"},
    {"master", "key", "private_key"},
    {"connection", "string", "connection_string"},
    {"conn", "str", "connection_string"},
};
// Words that, after the secret word, say the value describes the secret
// (where it is, how long it lives, whether it is on) rather than holds it.
constexpr absl::string_view kMetaWords[] = {
    "file",       "files",     "path",     "dir",      "directory", "folder",
    "name",       "names",     "ref",      "url",      "uri",       "endpoint",
    "host",       "hostname",  "port",     "type",     "kind",      "method",
    "mode",       "count",     "length",   "len",      "size",      "limit",
    "min",        "max",       "ttl",      "timeout",  "expiry",    "expires",
    "expiration", "lifetime",  "age",      "duration", "seconds",   "interval",
    "enabled",    "disabled",  "enable",   "required", "header",    "version",
    "format",     "algorithm", "alg",      "policy",   "provider",  "issuer",
    "audience",   "scope",     "domain",   "location", "source",    "mount",
    "volume",     "field",     "label",    "prefix",   "suffix",    "pattern",
    "regex",      "rotation",  "strategy", "usage",    "store",     "user",
    "username",   "email",     "login",
};

// Lower-cased words of a name: split at non-alphanumerics, camelCase
// (githubToken, APIKey) and letter/digit changes.
std::vector<std::string> SplitWords(absl::string_view name) {
  std::vector<std::string> words;
  std::string cur;
  for (size_t k = 0; k < name.size(); ++k) {
    const char c = name[k];
    if (!IsAlnum(c)) {
      if (!cur.empty()) words.push_back(std::move(cur));
      cur.clear();
      continue;
    }
    if (!cur.empty()) {
      const char p = name[k - 1];
      const bool split = (IsLower(p) && IsUpper(c)) ||
                         (IsDigit(p) != IsDigit(c)) ||
                         (IsUpper(p) && IsUpper(c) && k + 1 < name.size() &&
                          IsLower(name[k + 1]));
      if (split) {
        words.push_back(std::move(cur));
        cur.clear();
      }
    }
    cur.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
  }
  if (!cur.empty()) words.push_back(std::move(cur));
  return words;
}

// The kind of secret a key or variable name holds, "" when it holds none.
absl::string_view SecretNameKind(absl::string_view name) {
  if (name == "PWD") return {};  // the shell's working directory
  const std::vector<std::string> words = SplitWords(name);
  int last = -1;
  absl::string_view kind;
  bool aws = false, saw_secret = false, saw_access_key = false;
  auto note = [&](absl::string_view k, int at) {
    kind = k;
    last = at;
    saw_secret |= k == "secret";
    saw_access_key |= k == "access_key";
  };
  for (int w = 0; w < static_cast<int>(words.size()); ++w) {
    const std::string& word = words[w];
    aws |= word == "aws";
    if (w + 1 < static_cast<int>(words.size())) {
      for (const SecretPair& p : kSecretPairs) {
        if (word == p.first && words[w + 1] == p.second) note(p.kind, w + 1);
      }
    }
    bool exact = false;
    for (const SecretWord& s : kSecretWords) {
      if (word == s.word) {
        note(s.kind, std::max(last, w));
        exact = true;
        break;
      }
    }
    if (exact) continue;
    for (const SecretWord& s : kSecretSuffixes) {
      if (word.size() > s.word.size() && absl::EndsWith(word, s.word)) {
        note(s.kind, std::max(last, w));
        break;
      }
    }
  }
  if (last < 0) return {};
  for (size_t k = last + 1; k < words.size(); ++k) {
    for (absl::string_view meta : kMetaWords) {
      if (words[k] == meta) return {};
    }
  }
  if (aws && saw_secret) return "aws_secret_access_key";
  if (aws && saw_access_key) return "aws_access_key_id";
  return kind;
}

// ------------------------------------------------------------------ values

// Values kept after a secret key: they hide nothing and tell the model what
// is wrong ("token: expired", "password: <set to the key ...>").
constexpr absl::string_view kStatusWords[] = {
    "null",         "nil",       "none",      "true",
    "false",        "yes",       "no",        "empty",
    "invalid",      "expired",   "missing",   "required",
    "revoked",      "denied",    "rejected",  "failed",
    "unauthorized", "forbidden", "malformed", "undefined",
    "unset",        "redacted",  "hidden",    "masked",
    "not",          "n/a",       "-",
};

bool IsPlaceholder(absl::string_view v) {
  if (v.find_first_not_of('*') == absl::string_view::npos) return true;
  if (v[0] == '<' || absl::StartsWith(v, "${") || absl::StartsWith(v, "$(") ||
      absl::StartsWith(v, "{{")) {
    return true;
  }
  const absl::string_view first = v.substr(0, v.find_first_of(" \t"));
  for (absl::string_view w : kStatusWords) {
    if (absl::EqualsIgnoreCase(first, w)) return true;
  }
  return false;
}

// HTTP authorization schemes: the scheme is kept, the credential redacted.
absl::string_view SchemeKind(absl::string_view word, bool* single_token) {
  *single_token = true;
  if (absl::EqualsIgnoreCase(word, "bearer") ||
      absl::EqualsIgnoreCase(word, "token") ||
      absl::EqualsIgnoreCase(word, "bot")) {
    return "bearer_token";
  }
  if (absl::EqualsIgnoreCase(word, "basic")) return "basic_auth";
  *single_token = false;  // parameters: the rest of the value
  if (absl::EqualsIgnoreCase(word, "digest") ||
      absl::EqualsIgnoreCase(word, "negotiate") ||
      absl::EqualsIgnoreCase(word, "ntlm") ||
      absl::EqualsIgnoreCase(word, "aws4-hmac-sha256")) {
    return "auth";
  }
  return {};
}

// Whether `b64` decodes to printable "user:password" (a Basic credential).
bool IsBasicCredential(absl::string_view b64) {
  std::string decoded;
  if (!absl::Base64Unescape(b64, &decoded) || decoded.size() < 3) return false;
  for (char c : decoded) {
    if (c < 0x20 || c > 0x7E) return false;
  }
  return decoded.find(':') != std::string::npos;
}

enum class Quote { kNone, kDouble, kSingle, kEscaped };
size_t QuoteLength(Quote q) {
  return q == Quote::kNone ? 0 : q == Quote::kEscaped ? 2 : 1;
}

// ---------------------------------------------------------------- redactor

class Redactor {
 public:
  Redactor(absl::string_view in, Redaction* found) : in_(in), found_(found) {}

  std::string Run() {
    out_.reserve(in_.size() + in_.size() / 8);
    while (pos_ < n()) {
      const char c = in_[pos_];
      if (c == '[') {
        if (const size_t m = MarkerLength(in_, pos_); m > 0) {
          Copy(pos_ + m);
          boundary_ = pos_;
          pending_kind_ = {};
          continue;
        }
      } else if (IsRunChar(c)) {
        if (TryPem() || TryUrl() || TryKeyValue() || TryToolFlag() ||
            TryAuthScheme() || TryKnownToken() || TryBlob()) {
          continue;
        }
      }
      CountLine(c);
      out_.push_back(c);
      ++pos_;
    }
    return std::move(out_);
  }

 private:
  size_t n() const { return in_.size(); }

  // Whether a detector may start at i: not inside a run. The end of a
  // redaction counts as a boundary, as the marker's ']' does on a second
  // pass.
  bool AtBoundary(size_t i) const {
    return i == 0 || i == boundary_ || !IsRunChar(in_[i - 1]);
  }
  bool AtWordBoundary(size_t i) const {  // and not after '.' (a.b.bearer)
    return AtBoundary(i) && (i == 0 || i == boundary_ || in_[i - 1] != '.');
  }
  // After an escaped "\n", "\t" or "\r" in JSON-in-a-string.
  bool AfterEscape(size_t i) const {
    return i >= 2 && boundary_ + 2 <= i && in_[i - 2] == '\\' &&
           (in_[i - 1] == 'n' || in_[i - 1] == 't' || in_[i - 1] == 'r');
  }

  // Whether a plain word (small letters, or a number of at most 3 digits
  // such as an HTTP status) and a space start at v: prose, not a secret.
  // Nothing after the space is looked at: it may be redacted by a first
  // pass, and a second pass must judge the same.
  bool IsErrorChainWord(size_t v) const {
    const size_t e = RunEnd(in_, v, IsLower);
    const size_t d = RunEnd(in_, v, IsDigit);
    const size_t end = e > v ? e : d;
    if (end == v || (d > v && d - v > 3)) return false;
    return end < n() && in_[end] == ' ';
  }

  void CountLine(char c) {
    if (c == '\n' && !pending_kind_.empty() &&
        ++pending_lines_ >= kPendingNameLines) {
      pending_kind_ = {};
    }
  }

  void Copy(size_t to) {
    if (!pending_kind_.empty()) {
      for (size_t k = pos_; k < to; ++k) CountLine(in_[k]);
    }
    out_.append(in_.data() + pos_, to - pos_);
    pos_ = to;
  }

  void Redact(size_t from, size_t to, absl::string_view kind) {
    Copy(from);
    absl::StrAppend(&out_, kMarkerPrefix, kind, "]");
    pos_ = to;
    boundary_ = to;
    pending_kind_ = {};
    if (found_ == nullptr) return;
    ++found_->count;
    if (std::find(found_->kinds.begin(), found_->kinds.end(), kind) ==
        found_->kinds.end()) {
      found_->kinds.emplace_back(kind);
    }
  }

  // Copies through `to`, the end of a marker a detector found where it
  // would have written one: as after a redaction, so that a second pass
  // copies (and does not scan) exactly what the first pass did.
  void Keep(size_t to) {
    Copy(to);
    boundary_ = to;
    pending_kind_ = {};
  }

  size_t SkipSpaces(size_t i) const { return RunEnd(in_, i, IsSpace); }
  size_t LineEnd(size_t i) const {
    while (i < n() && !IsLineEnd(in_[i])) ++i;
    return i;
  }
  size_t TrimRight(size_t from, size_t e) const {
    while (e > from && IsSpace(in_[e - 1])) --e;
    return e;
  }

  Quote QuoteAt(size_t i) const {
    if (i >= n()) return Quote::kNone;
    if (in_[i] == '"') return Quote::kDouble;
    if (in_[i] == '\'') return Quote::kSingle;
    if (in_[i] == '\\' && i + 1 < n() && in_[i + 1] == '"') {
      return Quote::kEscaped;
    }
    return Quote::kNone;
  }
  Quote QuoteBefore(size_t i) const {
    if (i == 0 || i == boundary_) return Quote::kNone;
    if (in_[i - 1] == '"') {
      return i >= 2 && boundary_ + 2 <= i && in_[i - 2] == '\\'
                 ? Quote::kEscaped
                 : Quote::kDouble;
    }
    return in_[i - 1] == '\'' ? Quote::kSingle : Quote::kNone;
  }

  // Position of the closing quote of a value opened by `q` whose content
  // starts at i; the line end when unterminated.
  size_t QuotedEnd(size_t i, Quote q) const {
    while (i < n() && !IsLineEnd(in_[i])) {
      const char c = in_[i];
      if (q == Quote::kSingle) {
        if (c == '\'') return i;
      } else if (q == Quote::kDouble) {
        if (c == '"') return i;
        if (c == '\\' && i + 1 < n() && !IsLineEnd(in_[i + 1])) ++i;
      } else {
        if (c == '"' || (c == '\\' && i + 1 < n() && in_[i + 1] == '"')) {
          return i;
        }
      }
      ++i;
    }
    return i;
  }

  // End of an unquoted value starting at i. Markers are read whole, so a
  // value holding one ends where the original value ended.
  size_t WordEnd(size_t i) const {
    while (i < n()) {
      const char c = in_[i];
      if (c == '[') {
        if (const size_t m = MarkerLength(in_, i); m > 0) {
          i += m;
          continue;
        }
      }
      if (IsWhite(c) || c == '"' || c == '\'' || c == '`' || c == ',' ||
          c == ';' || c == '&' || c == '<' || c == '>' || c == ')' ||
          c == ']' || c == '}') {
        break;
      }
      if (c == '\\' && i + 1 < n() && in_[i + 1] == '"') break;
      ++i;
    }
    return i;
  }

  // Whether only spaces, tabs and YAML list dashes precede i on its line.
  bool FirstOnLine(size_t i) const {
    while (i > 0) {
      if (i == boundary_) return false;
      const char c = in_[i - 1];
      if (IsLineEnd(c)) return true;
      if (!IsSpace(c) && c != '-') return false;
      --i;
    }
    return true;
  }
  size_t Indentation(size_t i) const {  // of the line holding i
    size_t b = i;
    while (b > 0 && !IsLineEnd(in_[b - 1])) --b;
    return RunEnd(in_, b, IsSpace) - b;
  }

  // Redacts the value [v, e) of a secret key (or flag) unless it is empty, a
  // marker or a placeholder. An HTTP scheme at its start is kept; its
  // credential ends at `limit` at most (the closing quote or the line end;
  // kToLineEnd: the line end, found only when needed, since a line end
  // searched for every rejected value would make a long line quadratic).
  static constexpr size_t kToLineEnd = absl::string_view::npos;
  bool RedactValue(size_t v, size_t e, size_t limit, absl::string_view kind) {
    const absl::string_view value = in_.substr(v, e - v);
    if (value.empty()) return false;
    if (const size_t m = MarkerLength(in_, v); m > 0) {
      // Redacted by an earlier pass: kept. A marker with more after it was
      // put there by another detector after this one had rejected the
      // value (`--token -x…`: -x… was a blob), so rejected again.
      if (m != value.size()) return false;
      Keep(e);
      return true;
    }
    if (IsPlaceholder(value)) return false;
    const size_t w =
        RunEnd(in_, v, [](char c) { return IsAlnum(c) || c == '-'; });
    bool single_token = false;
    const absl::string_view scheme_kind =
        SchemeKind(in_.substr(v, std::min(w, limit) - v), &single_token);
    if (!scheme_kind.empty() && w <= limit) {
      // "Authorization: Bearer x": the scheme stays, the credential goes.
      const size_t cs = std::min(SkipSpaces(w), limit);
      if (cs == w && w == e) return false;  // the scheme alone
      if (cs > w) {
        size_t ce;
        if (single_token) {
          ce = std::min(limit, WordEnd(cs));
        } else {
          ce = limit == kToLineEnd ? TrimRight(cs, LineEnd(cs)) : limit;
        }
        if (ce <= cs) return false;
        const absl::string_view credential = in_.substr(cs, ce - cs);
        if (const size_t m = MarkerLength(in_, cs); m > 0) {
          if (m != credential.size()) return false;
          Keep(ce);
          return true;
        }
        const absl::string_view refined = ClassifyValue(credential);
        Redact(cs, ce, refined.empty() ? scheme_kind : refined);
        return true;
      }
    }
    const absl::string_view refined = ClassifyValue(value);
    Redact(v, e, refined.empty() ? kind : refined);
    return true;
  }

  // ---------------------------------------------------------- detectors

  bool TryPem() {
    const size_t i = pos_;
    if (in_[i] != '-' || !(AtBoundary(i) || AfterEscape(i))) return false;
    if (PemLineEnd(in_, i, "BEGIN") == 0) return false;
    size_t end = n();  // truncated: the rest of the text
    for (size_t k = i + 1;;) {
      const size_t f = in_.find("-----END ", k);
      if (f == absl::string_view::npos) break;
      if (const size_t e = PemLineEnd(in_, f, "END"); e > 0) {
        end = e;
        break;
      }
      k = f + 1;
    }
    Redact(i, end, "private_key");
    return true;
  }

  // scheme://user:password@host: the password, and a user that is a token.
  bool TryUrl() {
    const size_t i = pos_;
    if (!IsAlpha(in_[i]) || !AtWordBoundary(i)) return false;
    size_t j = i;
    while (
        j < n() && j - i < 32 &&
        (IsAlnum(in_[j]) || in_[j] == '+' || in_[j] == '.' || in_[j] == '-')) {
      ++j;
    }
    if (!StartsAt(in_, j, "://")) return false;
    const size_t a = j + 3;
    size_t e = a, at = absl::string_view::npos;
    for (; e < n(); ++e) {
      const char c = in_[e];
      if (c == '/' || c == '?' || c == '#' || IsWhite(c) || c == '"' ||
          c == '\'' || c == '<' || c == '>' || c == '\\' || c == '`') {
        break;
      }
      if (c == '@') at = e;
    }
    // The authority (and a '/' ending it) is copied as it is whatever the
    // verdict: a detector starting inside could swallow the '/' and so
    // change the authority, and where its '@' is, on a second pass.
    const size_t claim = e < n() && in_[e] == '/' ? e + 1 : e;
    if (at == absl::string_view::npos) {
      Copy(claim);
      return true;
    }
    const size_t user_marker = MarkerLength(in_, a);
    // Only the userinfo is searched: a find to the end of the text would
    // make a line of many URLs quadratic.
    size_t colon = absl::string_view::npos;
    for (size_t k = a + user_marker; k < at; ++k) {
      if (in_[k] == ':') {
        colon = k;
        break;
      }
    }
    const size_t user_end = colon == absl::string_view::npos ? at : colon;
    const absl::string_view user_kind =
        user_marker > 0 ? absl::string_view()
                        : ClassifyValue(in_.substr(a, user_end - a));
    const bool has_password =
        colon != absl::string_view::npos && colon + 1 < at;
    const bool password_marker =
        has_password && IsExactMarker(in_.substr(colon + 1, at - colon - 1));
    if (!user_kind.empty()) Redact(a, user_end, user_kind);
    if (has_password && !password_marker) {
      Redact(colon + 1, at, "url_password");
    } else if (user_marker > 0 || password_marker) {
      Keep(at);  // redacted by an earlier pass
    }
    Copy(claim);
    return true;
  }

  bool TryKeyValue() {
    const size_t i = pos_;
    const char c0 = in_[i];
    if (!IsAlnum(c0) && c0 != '-' && c0 != '_') return false;
    const bool start = i == 0 || i == boundary_ ||
                       (!IsKeyChar(in_[i - 1]) && !IsRunChar(in_[i - 1])) ||
                       AfterEscape(i);
    if (!start) return false;
    size_t k = i;
    while (k < n() && IsKeyChar(in_[k]) && k - i <= kMaxKeyLength) ++k;
    if (k - i > kMaxKeyLength) return false;
    const size_t body = RunEnd(in_, i, [](char c) { return c == '-'; });
    const size_t dashes = body - i;
    if (body == k || dashes > 2) return false;
    const absl::string_view key = in_.substr(body, k - body);

    const Quote open = QuoteBefore(i);
    size_t j = k;
    bool key_quoted = false;
    if (open != Quote::kNone && QuoteAt(j) == open) {
      j += QuoteLength(open);
      key_quoted = true;
    }
    const size_t after_key = j;
    j = SkipSpaces(j);
    enum class Sep { kColon, kEquals, kFlagSpace } sep;
    const char s0 = j < n() ? in_[j] : '\0';
    const char s1 = j + 1 < n() ? in_[j + 1] : '\0';
    if (s0 == '=' && s1 == '>') {
      sep = Sep::kEquals;
      j += 2;
    } else if (s0 == ':' && s1 == '=') {
      sep = Sep::kEquals;
      j += 2;
    } else if (s0 == '=' && s1 != '=') {
      sep = Sep::kEquals;
      j += 1;
    } else if (StartsAt(in_, j, "://")) {
      // Not a URL (the scheme has other characters) and not a key. Copied
      // as it is: a blob starting at the '/' would make it `key:[…]`, a
      // key and its value, on a second pass.
      Copy(j + 3);
      return true;
    } else if (s0 == ':' && s1 != ':') {
      sep = Sep::kColon;
      j += 1;
    } else if (dashes == 2 && !key_quoted && j > after_key && j < n() &&
               !IsLineEnd(s0)) {
      sep = Sep::kFlagSpace;  // --password hunter2
    } else {
      return false;
    }

    // A key-value pair: it ends any pending env `name:`.
    absl::string_view kind =
        LooksLikeBlob(key) ? absl::string_view() : SecretNameKind(key);
    const absl::string_view pending = pending_kind_;
    pending_kind_ = {};
    if (kind.empty() && !pending.empty() &&
        absl::EqualsIgnoreCase(key, "value")) {
      kind = pending;
    }
    const size_t v = SkipSpaces(j);
    if (!kind.empty() && sep == Sep::kColon && v > j && !key_quoted &&
        dashes == 0 && !FirstOnLine(i) && IsErrorChainWord(v)) {
      // "fetch oauth token: unexpected status: 401", "list *v1.Secret:
      // secrets is forbidden": a Go error chain, not a key and its value.
      kind = {};
    }
    if (kind.empty()) {
      if (absl::EqualsIgnoreCase(key, "name")) NotePendingName(v);
      return false;
    }
    if (v >= n() || IsLineEnd(in_[v])) return false;

    if (const Quote q = QuoteAt(v); q != Quote::kNone) {
      const size_t cb = v + QuoteLength(q);
      const size_t ce = QuotedEnd(cb, q);
      return RedactValue(cb, ce, ce, kind);
    }
    if (key_quoted) {
      // "key": 1234 (JSON number). Anything else unquoted after a quoted
      // key is prose: volume "secret-vol" : secret "db" not found.
      const size_t e = WordEnd(v);
      const absl::string_view word = in_.substr(v, e - v);
      const size_t digits = RunEnd(in_, v, [](char c) {
        return IsDigit(c) || c == '.' || c == '-' || c == '+';
      });
      if (digits != e || !HasDigit(word)) return false;
      return RedactValue(v, e, e, kind);
    }
    if (sep == Sep::kColon && dashes == 0 && FirstOnLine(i)) {
      // YAML, env listings, kubectl describe: the rest of the line.
      const size_t line_end = TrimRight(v, LineEnd(v));
      if (in_[v] == '|' || in_[v] == '>') {
        const size_t ind = RunEnd(in_, v + 1, [](char c) {
          return c == '-' || c == '+' || IsDigit(c);
        });
        if (ind == line_end) return TryBlockScalar(i, line_end, kind);
      }
      return RedactValue(v, line_end, line_end, kind);
    }
    if (sep == Sep::kFlagSpace && in_[v] == '-') return false;
    // Go prints an http.Header as map[Authorization:[Bearer x]].
    const size_t w = in_[v] == '[' && MarkerLength(in_, v) == 0 ? v + 1 : v;
    return RedactValue(w, WordEnd(w), kToLineEnd, kind);
  }

  // `key: |` then lines indented deeper than the key's line.
  bool TryBlockScalar(size_t key, size_t header_end, absl::string_view kind) {
    const size_t indent = Indentation(key);
    size_t line = header_end;
    if (line < n() && in_[line] == '\r') ++line;
    if (line < n() && in_[line] == '\n') ++line;
    size_t first = absl::string_view::npos, last = 0;
    while (line < n()) {
      const size_t content = SkipSpaces(line);
      const size_t le = LineEnd(line);
      const bool blank = content == le;
      if (!blank && content - line <= indent) break;
      if (!blank) {
        if (first == absl::string_view::npos) first = content;
        last = TrimRight(content, le);
      }
      line = le;
      if (line < n() && in_[line] == '\r') ++line;
      if (line < n() && in_[line] == '\n') ++line;
    }
    if (first == absl::string_view::npos) return false;
    const absl::string_view value = in_.substr(first, last - first);
    if (IsExactMarker(value)) {
      Keep(last);
      return true;
    }
    const absl::string_view refined = ClassifyValue(value);
    Redact(first, last, refined.empty() ? kind : refined);
    return true;
  }

  // `name: DB_PASSWORD` in an env list: the next `value:` is secret.
  void NotePendingName(size_t v) {
    const Quote q = QuoteAt(v);
    const size_t b = v + QuoteLength(q);
    const size_t e = RunEnd(in_, b, IsB64Url);
    if (e == b || e - b > kMaxNameValueLength) return;
    if (q != Quote::kNone ? QuoteAt(e) != q : (e < n() && IsKeyChar(in_[e]))) {
      return;
    }
    pending_kind_ = SecretNameKind(in_.substr(b, e - b));
    pending_lines_ = 0;
  }

  // mysql -pSECRET, sshpass -p SECRET, redis-cli -a SECRET: short flags
  // mean a password only for these tools (-p is a port or mkdir's parents
  // elsewhere), so the tool must be named earlier on the line.
  bool TryToolFlag() {
    const size_t i = pos_;
    if (in_[i] != '-' || i == 0 || i == boundary_ || !IsSpace(in_[i - 1]) ||
        i + 1 >= n()) {
      return false;
    }
    const char flag = in_[i + 1];
    if (flag != 'p' && flag != 'a') return false;
    size_t lo = std::max(boundary_, i > kToolLookback ? i - kToolLookback : 0);
    for (size_t k = i; k > lo; --k) {
      if (IsLineEnd(in_[k - 1])) {
        lo = k;
        break;
      }
    }
    const absl::string_view before = in_.substr(lo, i - lo);
    const size_t j = i + 2;
    size_t v;
    if (j < n() && !IsWhite(in_[j])) {  // attached: -pSECRET
      if (flag != 'p' || !(ContainsIgnoreCase(before, "mysql") ||
                           ContainsIgnoreCase(before, "mariadb"))) {
        return false;
      }
      v = j;
    } else {
      const bool tool = flag == 'p' ? ContainsIgnoreCase(before, "sshpass")
                                    : ContainsIgnoreCase(before, "redis-cli");
      if (!tool) return false;
      v = SkipSpaces(j);
      if (v >= n() || IsLineEnd(in_[v]) || in_[v] == '-') return false;
    }
    if (const Quote q = QuoteAt(v); q != Quote::kNone) {
      const size_t cb = v + QuoteLength(q);
      const size_t ce = QuotedEnd(cb, q);
      return RedactValue(cb, ce, ce, "password");
    }
    const size_t e = WordEnd(v);
    return RedactValue(v, e, e, "password");
  }

  // Free text: "Bearer <token>", "Basic <base64 of user:password>".
  bool TryAuthScheme() {
    const size_t i = pos_;
    if ((in_[i] != 'b' && in_[i] != 'B') || !AtWordBoundary(i)) return false;
    const bool bearer = StartsAtIgnoreCase(in_, i, "bearer");
    const bool basic = !bearer && StartsAtIgnoreCase(in_, i, "basic");
    if (!bearer && !basic) return false;
    const size_t w = i + (bearer ? 6 : 5);
    if (w >= n() || !IsSpace(in_[w])) return false;
    const size_t t = SkipSpaces(w);
    if (bearer) {
      const size_t run = RunEnd(in_, t, IsBearerChar);
      const size_t pad = RunEnd(in_, run, [](char c) { return c == '='; });
      // realm="x" is a parameter. '[': what follows was redacted; a second
      // pass must reject as the first did (see the file comment).
      if (pad < n() && (in_[pad] == '"' || in_[pad] == '[')) return false;
      size_t e = run;
      if (pad == run) {
        while (e > t && in_[e - 1] == '.') --e;  // a sentence's full stop
      }
      const absl::string_view token = in_.substr(t, e - t);
      if (token.size() < 8 || !HasDigit(token) ||
          !std::any_of(token.begin(), token.end(), IsAlpha)) {
        return false;
      }
      Redact(t, pad == run ? e : pad, "bearer_token");
      return true;
    }
    const size_t e = RunEnd(in_, t, IsB64Std);
    const size_t pad =
        std::min(RunEnd(in_, e, [](char c) { return c == '='; }), e + 2);
    if (pad < n() && (IsRunChar(in_[pad]) || in_[pad] == '[')) return false;
    if (!IsBasicCredential(in_.substr(t, pad - t))) return false;
    Redact(t, pad, "basic_auth");
    return true;
  }

  bool TryKnownToken() {
    if (!AtBoundary(pos_)) return false;
    const std::optional<TokenMatch> m = MatchKnownToken(in_, pos_);
    if (!m.has_value()) return false;
    Redact(pos_, m->end, m->kind);
    return true;
  }

  static bool LooksLikeBlob(absl::string_view run) {
    if (run.size() < kMinBlobLength) return false;
    bool upper = false, lower = false, digit = false;
    int changes = 0;
    auto cls = [](char c) {
      return IsUpper(c) ? 1 : IsLower(c) ? 2 : IsDigit(c) ? 3 : 0;
    };
    for (size_t k = 0; k < run.size(); ++k) {
      const int c = cls(run[k]);
      upper |= c == 1;
      lower |= c == 2;
      digit |= c == 3;
      if (k > 0 && c != 0) {
        const int p = cls(run[k - 1]);
        changes += p != 0 && p != c;
      }
    }
    return upper && lower && digit && changes >= kMinBlobClassChanges;
  }

  // sha512-<base64>: a subresource integrity hash (npm, yarn), public.
  static bool IsIntegrityHash(absl::string_view run) {
    return absl::StartsWith(run, "sha256-") ||
           absl::StartsWith(run, "sha384-") || absl::StartsWith(run, "sha512-");
  }

  // Long base64/base64url runs with the look of random bytes.
  bool TryBlob() {
    const size_t i = pos_;
    if (!AtBoundary(i)) return false;
    const size_t e = RunEnd(in_, i, IsRunChar);
    if (e - i < kMinBlobLength) return false;
    const absl::string_view run = in_.substr(i, e - i);
    size_t end = e;
    const size_t pad =
        std::min(RunEnd(in_, e, [](char c) { return c == '='; }), e + 2);
    if (pad > e && (pad == n() || !IsRunChar(in_[pad]))) end = pad;
    if (run.size() == kAwsSecretLength &&
        std::all_of(run.begin(), run.end(), IsB64Std) && HasUpper(run) &&
        std::any_of(run.begin(), run.end(), IsLower) && AwsBefore(i)) {
      Redact(i, end, "aws_secret_access_key");
      return true;
    }
    if (!LooksLikeBlob(run) || IsIntegrityHash(run)) return false;
    Redact(i, end, "base64_blob");
    return true;
  }

  // "aws" shortly before i, not looking past the last redaction (the text
  // there differs on a second pass).
  bool AwsBefore(size_t i) const {
    const size_t lo =
        std::max(boundary_, i > kAwsLookback ? i - kAwsLookback : 0);
    return ContainsIgnoreCase(in_.substr(lo, i - lo), "aws");
  }

  const absl::string_view in_;
  Redaction* const found_;
  std::string out_;
  size_t pos_ = 0;
  size_t boundary_ = 0;             // end of the last redaction or marker
  absl::string_view pending_kind_;  // of an env `name:` awaiting its value
  int pending_lines_ = 0;
};

}  // namespace

std::string RedactSecrets(absl::string_view text, Redaction* found) {
  if (IsValidUtf8(text)) return Redactor(text, found).Run();
  const std::string valid = ToValidUtf8(text);
  return Redactor(valid, found).Run();
}

std::string RedactNamedValue(absl::string_view name, absl::string_view value,
                             Redaction* found) {
  const absl::string_view kind = SecretNameKind(name);
  if (kind.empty()) return RedactSecrets(value, found);
  std::string valid = ToValidUtf8(value);
  if (valid.empty() || IsExactMarker(valid)) return valid;
  const absl::string_view refined = ClassifyValue(valid);
  const absl::string_view k = refined.empty() ? kind : refined;
  if (found != nullptr) {
    ++found->count;
    if (std::find(found->kinds.begin(), found->kinds.end(), k) ==
        found->kinds.end()) {
      found->kinds.emplace_back(k);
    }
  }
  return absl::StrCat(kMarkerPrefix, k, "]");
}

}  // namespace reflexion::core

namespace reflexion::core {
namespace {

// Redacts a string field of a Struct in place.
void RedactStringField(google::protobuf::Struct* object, const char* key,
                       Redaction* found) {
  auto it = object->mutable_fields()->find(key);
  if (it == object->mutable_fields()->end() || !it->second.has_string_value()) {
    return;
  }
  it->second.set_string_value(RedactSecrets(it->second.string_value(), found));
}

// env entries {name, value} of the containers in `list`.
void RedactContainerEnv(google::protobuf::Value* list, Redaction* found) {
  if (list == nullptr || !list->has_list_value()) return;
  for (google::protobuf::Value& c :
       *list->mutable_list_value()->mutable_values()) {
    if (!c.has_struct_value()) continue;
    auto env = c.mutable_struct_value()->mutable_fields()->find("env");
    if (env == c.mutable_struct_value()->mutable_fields()->end() ||
        !env->second.has_list_value()) {
      continue;
    }
    for (google::protobuf::Value& e :
         *env->second.mutable_list_value()->mutable_values()) {
      if (!e.has_struct_value()) continue;
      auto& fields = *e.mutable_struct_value()->mutable_fields();
      auto name = fields.find("name");
      auto value = fields.find("value");
      if (value == fields.end() || !value->second.has_string_value()) continue;
      const std::string n =
          name != fields.end() && name->second.has_string_value()
              ? name->second.string_value()
              : std::string();
      value->second.set_string_value(
          RedactNamedValue(n, value->second.string_value(), found));
    }
  }
}

// Every "message" and "note" string anywhere in `v` (status messages,
// container termination messages), at most `depth` levels deep.
void RedactMessages(google::protobuf::Value* v, Redaction* found, int depth) {
  if (depth <= 0) return;
  if (v->has_list_value()) {
    for (auto& e : *v->mutable_list_value()->mutable_values()) {
      RedactMessages(&e, found, depth - 1);
    }
  } else if (v->has_struct_value()) {
    for (auto& [key, value] : *v->mutable_struct_value()->mutable_fields()) {
      if ((key == "message" || key == "note") && value.has_string_value()) {
        value.set_string_value(RedactSecrets(value.string_value(), found));
      } else {
        RedactMessages(&value, found, depth - 1);
      }
    }
  }
}

google::protobuf::Value* FieldOf(google::protobuf::Struct* object,
                                 const char* key) {
  auto it = object->mutable_fields()->find(key);
  return it == object->mutable_fields()->end() ? nullptr : &it->second;
}

}  // namespace

int RedactIncident(reflexion::v1::Incident* in) {
  Redaction found;
  in->set_error_message(RedactSecrets(in->error_message(), &found));
  in->set_logs(RedactSecrets(in->logs(), &found));
  for (auto& c : *in->mutable_container_statuses()) {
    c.set_waiting_message(RedactSecrets(c.waiting_message(), &found));
  }
  for (auto& e : *in->mutable_events()) {
    e.set_message(RedactSecrets(e.message(), &found));
  }
  for (auto& e : *in->mutable_pod_events()) {
    RedactStringField(&e, "message", &found);
    RedactStringField(&e, "note", &found);
  }
  if (in->has_pod()) {
    google::protobuf::Struct* pod = in->mutable_pod();
    if (google::protobuf::Value* spec = FieldOf(pod, "spec");
        spec != nullptr && spec->has_struct_value()) {
      for (const char* list :
           {"containers", "initContainers", "ephemeralContainers"}) {
        RedactContainerEnv(FieldOf(spec->mutable_struct_value(), list), &found);
      }
    }
    if (google::protobuf::Value* meta = FieldOf(pod, "metadata");
        meta != nullptr && meta->has_struct_value()) {
      if (google::protobuf::Value* ann =
              FieldOf(meta->mutable_struct_value(), "annotations");
          ann != nullptr && ann->has_struct_value()) {
        for (auto& [key, value] :
             *ann->mutable_struct_value()->mutable_fields()) {
          if (!value.has_string_value()) continue;
          value.set_string_value(
              RedactNamedValue(key, value.string_value(), &found));
        }
      }
    }
    if (google::protobuf::Value* status = FieldOf(pod, "status")) {
      RedactMessages(status, &found, 8);
    }
  }
  return found.count;
}

}  // namespace reflexion::core

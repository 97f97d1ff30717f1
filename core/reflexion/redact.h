#pragma once

// Secret redaction: pod data (env values, logs, events, messages) is sent to
// an LLM, logged and stored in episodes; every secret in it is replaced by
// "[REDACTED:<kind>]" first.
//
// What is redacted (the kind in brackets):
//   - PEM private key blocks, BEGIN to END, or to the end of the text when
//     the END line is missing [private_key];
//   - JWTs [jwt]; AWS access key ids AKIA/ASIA… [aws_access_key_id]; GCP API
//     keys AIza… [gcp_api_key]; GitHub ghp_/gho_/ghu_/ghs_/ghr_/github_pat_
//     [github_token]; GitLab glpat- [gitlab_token]; Slack xox[abprs]-
//     [slack_token]; sk-… (>= 20 chars, digits and capitals) [openai_api_key];
//     Stripe sk_/rk_ live/test [stripe_key]; Google OAuth ya29.
//     [google_oauth_token];
//   - "Bearer <token>" (a token with digits and letters, >= 8 chars)
//     [bearer_token] and "Basic <base64 of user:password>" [basic_auth];
//   - the value (never the key) of `key=value`, `key: value`, `"key": "value"`,
//     `key => value`, `--key=value`, `--key value` when the key name looks
//     secret (see RedactNamedValue). An `Authorization: Bearer x` value keeps
//     its scheme. `key: value` alone on its line takes the rest of the line;
//     a YAML block scalar (`key: |`) takes its indented lines; otherwise the
//     value ends at a space, quote or one of , ; & < > ) ] }. A value that
//     is a placeholder or starts with a status word is kept, as it helps the
//     diagnosis: null, none, true, false, yes, no, empty, invalid, expired,
//     missing, required, revoked, denied, …, "****", "<…>", "${…}", "$(…)",
//     "{{…". After a quoted key only a quoted value or a number counts
//     (`volume "secret-vol" : secret "x" not found` is prose). Mid-line
//     `key: word more` with a word of small letters or a number of at most 3
//     digits is a Go error chain, not a secret ("oauth token: unexpected
//     status: 401", "*v1.Secret: secrets is forbidden"); `password: hunter2
//     now` is still redacted, `password: hunter now` is not.
//     In a k8s env list, `name: DB_PASSWORD` followed by `value: x` (YAML or
//     JSON, within 2 lines) redacts x;
//   - the password of a URL's userinfo, scheme, user and host kept
//     (`postgres://user:[REDACTED:url_password]@host`), and a user name
//     that is a known token;
//   - `mysql -pSECRET` / `mariadb -pSECRET`, `sshpass -p SECRET`,
//     `redis-cli -a SECRET` [password];
//   - base64/base64url runs of >= 40 characters with capitals, small letters
//     and digits that change character class often (>= 12 times)
//     [base64_blob]; a 40-character one within 64 bytes after "aws" is
//     [aws_secret_access_key].
// What is kept (the model needs it): image references and hex digests,
// UUIDs, pod names, IPs and ports, durations, error reasons, stack traces,
// file paths, the word "password" without a value, k8s event messages.
// Known limits: a URL password holding a raw '/' (RFC 3986 wants it
// percent-encoded) is not found; nor is a provider token right after a
// base64 character (`path/ghp_…`: it is judged with its run). Certificates
// and SSH public keys are base64 runs too: not secret, but redacted.
// A secret-looking key decides alone: its value is redacted even when it is
// numeric (`token=5` -> `token=[REDACTED:token]`), and `token_count=5` is
// kept because its name is not secret (the last words describe the secret:
// count, file, path, name, url, ttl, …).
//
// Redaction is idempotent: RedactSecrets(RedactSecrets(x)) ==
// RedactSecrets(x); a "[REDACTED:kind]" marker in the input is kept as is.
//
// All functions are pure (thread-safe, no state), never fail, run in time
// linear in the input, and use memory linear in it (the output; a marker is
// at most ~35 bytes for each redacted value of at least 1 byte).

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace reflexion::core {

// What was redacted.
struct Redaction {
  int count = 0;                   // markers written
  std::vector<std::string> kinds;  // distinct kinds, in order first found
};

// Returns `text` with every secret replaced by "[REDACTED:<kind>]". Input
// may be any bytes: invalid UTF-8 is first made valid (ToValidUtf8 of
// core/reflexion/utf8.h); the output is valid UTF-8. When `found` is not
// null, adds to it: count is incremented, new kinds are appended (so one
// Redaction can gather the redactions of many fields).
std::string RedactSecrets(absl::string_view text, Redaction* found = nullptr);

// For an env var or config entry `name`=`value`: the whole value becomes
// "[REDACTED:<kind>]" when the name looks secret, otherwise
// RedactSecrets(value). A name looks secret when one of its words (split at
// non-alphanumerics and camelCase: DB_PASSWORD, githubToken, X-Api-Key) is
// password, passwd, pwd, pass, passphrase, secret, token, auth,
// authorization, credential(s), creds, cookie, dsn, or a pair api+key,
// access+key, private+key, signing+key, encryption+key, master+key,
// account+key, connection+string (also run together: apikey, dbpassword,
// authtoken), and no later word describes the secret rather than holding it
// (file, path, dir, name, ref, url, uri, host, type, method, mode, count,
// length, size, limit, ttl, timeout, expiry, enabled, version, header,
// format, …: PASSWORD_FILE, TOKEN_TTL and SECRET_NAME are not secret). The
// shell's `PWD` (exactly, upper case) is the working directory, not secret.
// An empty value stays empty; a value that already is a marker is kept.
// `found` as for RedactSecrets.
std::string RedactNamedValue(absl::string_view name, absl::string_view value,
                             Redaction* found = nullptr);

}  // namespace reflexion::core

namespace reflexion::v1 {
class Incident;
}  // namespace reflexion::v1

namespace reflexion::core {

// Redacts an incident in place before anything of it is stored, logged or
// sent: its free text (error_message, logs, container waiting messages,
// event messages, the v1.Event objects' message and note), and in its pod
// object every container's env values (RedactNamedValue by the variable's
// name) and annotation values (RedactSecrets; kubectl's
// last-applied-configuration quotes the env). Names, reasons, images and
// the rest of the object are kept, so analysis reads the same facts.
// Returns how many values were redacted.
int RedactIncident(reflexion::v1::Incident* incident);

}  // namespace reflexion::core

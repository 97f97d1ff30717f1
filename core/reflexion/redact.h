#pragma once

// Secrets out of everything that leaves the process: text sent to an LLM,
// log lines, stored reflections. Pod env values, logs and events routinely
// quote passwords, tokens and keys; the model needs the shape of the
// failure, never the credential.

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace reflexion::core {

struct Redaction {
  int count = 0;
  // Distinct kinds found, in the order first seen, e.g. "bearer_token".
  std::vector<std::string> kinds;
};

// Returns `text` with every secret replaced by "[REDACTED:<kind>]". Input
// may be any bytes (invalid UTF-8 is made valid first); the output is valid
// UTF-8. Linear time (RE2 and single passes), bounded memory, never throws;
// idempotent (redacting twice changes nothing more).
//
// Kinds: private_key (PEM blocks, also without their END line),
// url_password (scheme://user:PASSWORD@host), jwt, aws_access_key,
// gcp_api_key, github_token, slack_token, api_key (sk-..., Stripe sk_/rk_
// live/test keys), oauth_token (ya29.), bearer_token ("Bearer X", "Basic
// X", "Authorization: X" for a 16+ character X), secret_value (the value after
// a key whose name ends in password, passwd, pwd, secret, token,
// api_key/apikey, access_key, private_key, credential(s) or auth, in key=value,
// key: value and JSON forms; the key is kept so the line still reads),
// base64_secret (runs of 40+ base64 characters mixing upper case, lower case
// and digits — a .dockerconfigjson or Secret data value). Not redacted: hex
// digests (sha256:...), UUIDs, image references, pod names, numbers after keys
// that merely contain a secret word (token_count=5, author=x), the words
// "password" or "token" alone.
std::string RedactSecrets(absl::string_view text, Redaction* found = nullptr);

// For one env var / config entry: the whole value when the name looks
// secret (contains PASSWORD, PASSWD, SECRET, TOKEN, API_KEY/APIKEY,
// ACCESS_KEY, PRIVATE_KEY, CREDENTIAL, AUTH (not AUTHOR), DSN,
// CONNECTION_STRING, case-insensitive: DB_PASSWORD, githubToken), else
// RedactSecrets(value).
std::string RedactNamedValue(absl::string_view name, absl::string_view value,
                             Redaction* found = nullptr);

}  // namespace reflexion::core

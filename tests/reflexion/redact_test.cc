#include "core/reflexion/redact.h"

#include <string>

#include "core/reflexion/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reflexion::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

struct Case {
  const char* text;
  const char* secret;  // must be gone
  const char* kind;    // the marker that replaces it
  const char* kept;    // must still be there ("" = nothing to check)
};

class RedactsTest : public ::testing::TestWithParam<Case> {};

TEST_P(RedactsTest, TheSecretIsReplacedAndTheRestKept) {
  const Case& c = GetParam();
  Redaction found;
  std::string out = RedactSecrets(c.text, &found);
  EXPECT_THAT(out, Not(HasSubstr(c.secret))) << out;
  EXPECT_THAT(out, HasSubstr(std::string("[REDACTED:") + c.kind + "]")) << out;
  if (*c.kept) {
    EXPECT_THAT(out, HasSubstr(c.kept)) << out;
  }
  EXPECT_GE(found.count, 1);
  // Idempotent: nothing more to find.
  Redaction again;
  EXPECT_EQ(RedactSecrets(out, &again), out);
  EXPECT_EQ(again.count, 0) << out;
}

INSTANTIATE_TEST_SUITE_P(
    Positives, RedactsTest,
    ::testing::Values(
        Case{"Authorization: Bearer abc.def-ghi_jkl~mno+pqr/stu=", "abc.def",
             "bearer_token", "Authorization: Bearer "},
        Case{"curl -H 'authorization: bearer s3cr3tT0kenValue'",
             "s3cr3tT0kenValue", "bearer_token", "curl -H"},
        Case{"authorization: 0123456789abcdefXYZ0123", "0123456789abcdef",
             "bearer_token", "authorization: "},
        Case{"Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA", "bearer_token",
             "Basic "},
        Case{"DB_PASSWORD=hunter2", "hunter2", "secret_value", "DB_PASSWORD="},
        Case{"password: correct-horse-battery", "correct-horse", "secret_value",
             "password: "},
        Case{R"({"password": "pa55w0rd", "user": "bob"})", "pa55w0rd",
             "secret_value", R"("user": "bob")"},
        Case{"--client-secret=abc123xyz", "abc123xyz", "secret_value",
             "--client-secret="},
        Case{"api_key = 'k-1234567'", "k-1234567", "secret_value", "api_key"},
        Case{"githubToken: zzz999", "zzz999", "secret_value", "githubToken"},
        Case{"AUTH=letmein", "letmein", "secret_value", "AUTH="},
        Case{"jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
             "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
             "eyJzdWIiOiIxMjM0NTY3ODkwIn0", "jwt", "jwt "},
        Case{"aws AKIAIOSFODNN7EXAMPLE in env", "AKIAIOSFODNN7EXAMPLE",
             "aws_access_key", "in env"},
        Case{"key AIzaSyA-1234567890abcdefghijklmnopqrstu ok",
             "AIzaSyA-1234567890", "gcp_api_key", " ok"},
        Case{"ghp_1234567890abcdefghijklmnopqrstuvwxyzAB used",
             "ghp_1234567890", "github_token", " used"},
        Case{"xoxb-123456789012-abcdefghijkl", "xoxb-123456789012",
             "slack_token", ""},
        Case{"OPENAI sk-proj-abcdefghijklmnopqrstuvwxyz012345", "sk-proj-abc",
             "api_key", "OPENAI "},
        Case{"stripe sk_live_abcdefghijklmnop1234", "sk_live_abc", "api_key",
             ""},
        Case{"ya29.a0AfH6SMBxxxxxxxxxxxxxxxxxxxxxxx", "ya29.a0AfH6",
             "oauth_token", ""},
        Case{"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA "
             "PRIVATE KEY-----\nnext line",
             "MIIEowIBAAKCAQEA", "private_key", "next line"},
        Case{"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B (cut)",
             "MIIEvQIBADAN", "private_key", ""},
        Case{"connecting to postgres://app:s3cret@db.prod:5432/app", "s3cret",
             "url_password", "postgres://app:"},
        Case{".dockerconfigjson: "
             "eyJhdXRocyI6eyJyZWdpc3RyeS5leGFtcGxlLmNvbSI6eyJhdXRoIjoiZFhObGNqc"
             "HdZWE56In19fQ==",
             "eyJhdXRocyI6eyJyZWdpc3RyeS5leGFt", "base64_secret",
             ".dockerconfigjson: "}));

class KeepsTest : public ::testing::TestWithParam<const char*> {};

TEST_P(KeepsTest, NothingIsRedacted) {
  Redaction found;
  EXPECT_EQ(RedactSecrets(GetParam(), &found), GetParam());
  EXPECT_EQ(found.count, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Negatives, KeepsTest,
    ::testing::Values(
        "Back-off pulling image \"nginx:1.25\"",
        "registry.example.com/team/app@sha256:"
        "3b1c5d7e9f0a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c",
        "pod web-7d9f8b6c5-x2x9q uid 123e4567-e89b-12d3-a456-426614174000",
        "Failed to pull image \"x\": 401 Unauthorized",
        "OOMKilled: container app exceeded memory limit 512Mi, exit code 137",
        "password reset email sent to the user", "token_count=5 tokens used",
        "author=alice committed",
        "readiness probe failed: Get http://10.0.0.7:8080/healthz: timeout",
        "goroutine 1 [running]:\nmain.main()\n\t/go/src/app/main.go:42 "
        "+0x1d",
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30",
        "CrashLoopBackOff: back-off 5m0s restarting failed container",
        "the token is missing", ""));

TEST(RedactTest, InvalidUtf8BecomesValidAndSecretsStillGo) {
  std::string in = "bad \xff\xfe bytes DB_PASSWORD=hunter2 \xc3";
  std::string out = RedactSecrets(in);
  EXPECT_TRUE(IsValidUtf8(out));
  EXPECT_THAT(out, Not(HasSubstr("hunter2")));
}

TEST(RedactTest, ReportsTheKindsFound) {
  Redaction found;
  RedactSecrets("password=x1 and Bearer abcdefghijkl and password=y2", &found);
  EXPECT_EQ(found.count, 3);
  EXPECT_THAT(found.kinds, ElementsAre("bearer_token", "secret_value"));
}

TEST(RedactTest, ALargeInputWithoutSecretsComesBackUnchanged) {
  std::string big;
  while (big.size() < (1 << 20)) {
    big += "INFO 2026-12-01 worker=7 processed batch of 512 items in 12ms\n";
  }
  EXPECT_EQ(RedactSecrets(big), big);
  // And a pathological run of one character (no backtracking blow-up).
  std::string run(1 << 20, 'a');
  EXPECT_EQ(RedactSecrets(run), run);
}

TEST(RedactNamedValueTest, SecretNamesHideTheWholeValue) {
  EXPECT_EQ(RedactNamedValue("DB_PASSWORD", "hunter2 with spaces"),
            "[REDACTED:secret_value]");
  EXPECT_EQ(RedactNamedValue("githubToken", "abc"), "[REDACTED:secret_value]");
  EXPECT_EQ(RedactNamedValue("DATABASE_DSN", "host=db user=x"),
            "[REDACTED:secret_value]");
  EXPECT_EQ(RedactNamedValue("AUTHORIZATION", "x"), "[REDACTED:secret_value]");
  // Other names: the value is scanned like any text.
  EXPECT_EQ(RedactNamedValue("AUTHOR", "alice"), "alice");
  EXPECT_EQ(RedactNamedValue("LOG_LEVEL", "debug"), "debug");
  EXPECT_EQ(RedactNamedValue("DATABASE_URL", "postgres://u:pw@db/app"),
            "postgres://u:[REDACTED:url_password]@db/app");
  EXPECT_EQ(RedactNamedValue("EMPTY_SECRET", ""), "");
}

}  // namespace
}  // namespace reflexion::core

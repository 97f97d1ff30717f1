// Unit tests of core/reflexion/redact: what is redacted (each kind), what is
// kept (what the model needs to diagnose), markers, idempotence, invalid
// UTF-8, large inputs and RedactNamedValue.

#include "core/reflexion/redact.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Fake secrets with the shape of real ones.
const std::string kJwt = absl::StrCat("eyJhbGciOiJIUzI1NiJ9", ".",
                                      "eyJzdWIiOiJ3ZWIiLCJpYXQiOjE3MDB9", ".",
                                      "c2lnbmF0dXJlX2J5dGVzXzEyMzQ1Ng");
const std::string kAwsId = absl::StrCat("AKIA", "IOSFODNN7EXAMPLE");
const std::string kAwsSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const std::string kGcp =
    absl::StrCat("AIza", "SyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe");
const std::string kGhp =
    absl::StrCat("ghp_", "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8");
const std::string kGithubPat =
    absl::StrCat("github_pat_", "11ABCDEFG0123456789_abcdefghijKLMNOP");
const std::string kSlack = absl::StrCat("xoxb-", "123456789012-abcdefABCDEF");
const std::string kOpenAi =
    absl::StrCat("sk-", "proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z");
const std::string kStripe =
    absl::StrCat("sk_live_", "4eC39HqLyjWDarjtT1zdp7dc");
const std::string kStripeRestricted =
    absl::StrCat("rk_live_", "51Hk2bX7QpLmN0vR8sT3wYz");
const std::string kGoogleOauth =
    absl::StrCat("ya29.", "a0AfH6SMBx7kQ-Zr9_Tq2LmNoPqRsTuVw");
const std::string kDockerConfig =
    "eyJhdXRocyI6eyJyZWdpc3RyeS5leGFtcGxlLmNvbSI6eyJhdXRoIjoiZFhObGNqcHdZWE56"
    "In19fQ==";
const std::string kSha256 =
    "3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a";

struct Case {
  std::string input;
  std::string expected;
};

std::string Redacted(absl::string_view text) { return RedactSecrets(text); }

class RedactPositiveTest : public ::testing::TestWithParam<Case> {};

TEST_P(RedactPositiveTest, ReplacesTheSecretAndKeepsItsContext) {
  Redaction found;
  EXPECT_EQ(RedactSecrets(GetParam().input, &found), GetParam().expected);
  EXPECT_GE(found.count, 1);
}

std::vector<Case> PositiveCases() {
  return {
      // Bearer and Basic credentials.
      Case{"Authorization: Bearer abc.def",
           "Authorization: Bearer [REDACTED:bearer_token]"},
      Case{"curl -H 'Authorization: Bearer abc.def' https://api/x",
           "curl -H 'Authorization: Bearer [REDACTED:bearer_token]' "
           "https://api/x"},
      Case{
          R"({"headers": {"Authorization": "Bearer t0k3n"}})",
          R"({"headers": {"Authorization": "Bearer [REDACTED:bearer_token]"}})"},
      Case{"upstream sent bearer 9f8e7d6c5b4a1234 and failed",
           "upstream sent bearer [REDACTED:bearer_token] and failed"},
      Case{"Authorization: Basic dXNlcjpwYXNz",
           "Authorization: Basic [REDACTED:basic_auth]"},
      Case{"proxy sent Basic dXNlcjpwYXNz upstream",
           "proxy sent Basic [REDACTED:basic_auth] upstream"},
      Case{"Authorization: token " + kGhp,
           "Authorization: token [REDACTED:github_token]"},
      Case{"map[Authorization:[Bearer t0k3n] Accept:[json]]",
           "map[Authorization:[Bearer [REDACTED:bearer_token]] "
           "Accept:[json]]"},
      Case{"Authorization: Digest username=\"bob\", response=\"6629fae4\"",
           "Authorization: Digest [REDACTED:auth]"},
      // Secret-looking keys: the value only.
      Case{"password=hunter2 user=bob",
           "password=[REDACTED:password] user=bob"},
      Case{"db_password: s3cr3t", "db_password: [REDACTED:password]"},
      Case{"  DB_PASSWORD:  correct horse battery",
           "  DB_PASSWORD:  [REDACTED:password]"},
      Case{R"({"password": "hunter2", "user": "bob"})",
           R"({"password": "[REDACTED:password]", "user": "bob"})"},
      Case{R"({'passwd': 'x y z'})", R"({'passwd': '[REDACTED:password]'})"},
      Case{R"(msg="{\"password\":\"hunter2\"}")",
           R"(msg="{\"password\":\"[REDACTED:password]\"}")"},
      Case{R"({"pin_password": 1234})",
           R"({"pin_password": [REDACTED:password]})"},
      Case{"--password=hunter2 --user bob",
           "--password=[REDACTED:password] --user bob"},
      Case{"--token abc123 --verbose", "--token [REDACTED:token] --verbose"},
      Case{"pwd=x", "pwd=[REDACTED:password]"},
      Case{"secret = 'abc'", "secret = '[REDACTED:secret]'"},
      Case{"config token=5", "config token=[REDACTED:token]"},
      Case{"api_key=k1 apikey=k2 api-key=k3",
           "api_key=[REDACTED:api_key] apikey=[REDACTED:api_key] "
           "api-key=[REDACTED:api_key]"},
      Case{"X-Api-Key: abc123", "X-Api-Key: [REDACTED:api_key]"},
      Case{"access_key=a secret_key=b private_key=c client_secret=d",
           "access_key=[REDACTED:access_key] secret_key=[REDACTED:secret] "
           "private_key=[REDACTED:private_key] "
           "client_secret=[REDACTED:secret]"},
      Case{"auth=abc credentials=def creds=ghi",
           "auth=[REDACTED:auth] credentials=[REDACTED:credentials] "
           "creds=[REDACTED:credentials]"},
      Case{"githubToken=abc dbPassword=def",
           "githubToken=[REDACTED:token] dbPassword=[REDACTED:password]"},
      Case{"java -Djavax.net.ssl.keyStorePassword=changeit -jar app.jar",
           "java -Djavax.net.ssl.keyStorePassword=[REDACTED:password] -jar "
           "app.jar"},
      Case{"spring.datasource.password => 'pw'",
           "spring.datasource.password => '[REDACTED:password]'"},
      Case{"GET /cb?code=1&access_token=abc123&state=y",
           "GET /cb?code=1&access_token=[REDACTED:token]&state=y"},
      Case{"Cookie: session=abc123", "Cookie: [REDACTED:cookie]"},
      Case{"connecting with password: hunter2 now",
           "connecting with password: [REDACTED:password] now"},
      Case{"(using Password: s3cret)", "(using Password: [REDACTED:password])"},
      Case{"aws_secret_access_key = " + kAwsSecret,
           "aws_secret_access_key = [REDACTED:aws_secret_access_key]"},
      Case{"GITHUB_TOKEN=" + kGhp, "GITHUB_TOKEN=[REDACTED:github_token]"},
      Case{"mysql -uroot -phunter2 mydb",
           "mysql -uroot -p[REDACTED:password] mydb"},
      Case{"sshpass -p hunter2 ssh host",
           "sshpass -p [REDACTED:password] ssh host"},
      Case{"redis-cli -a hunter2 ping",
           "redis-cli -a [REDACTED:password] ping"},
      // k8s env lists and YAML block scalars.
      Case{"env:\n- name: DB_PASSWORD\n  value: hunter2\n- name: LOG\n  value: "
           "debug",
           "env:\n- name: DB_PASSWORD\n  value: [REDACTED:password]\n- name: "
           "LOG\n  value: debug"},
      Case{R"([{"name":"API_TOKEN","value":"abc"}])",
           R"([{"name":"API_TOKEN","value":"[REDACTED:token]"}])"},
      Case{"stringData:\n  password: |\n    line one\n\n    line two\nnext: 1",
           "stringData:\n  password: |\n    [REDACTED:password]\nnext: 1"},
      // Provider tokens.
      Case{"token is " + kJwt + ".", "token is [REDACTED:jwt]."},
      Case{"using " + kAwsId + " for s3",
           "using [REDACTED:aws_access_key_id] for s3"},
      Case{"aws configure set aws_secret_access_key " + kAwsSecret,
           "aws configure set aws_secret_access_key "
           "[REDACTED:aws_secret_access_key]"},
      Case{"maps key " + kGcp, "maps key [REDACTED:gcp_api_key]"},
      Case{"push with " + kGhp + " failed",
           "push with [REDACTED:github_token] failed"},
      Case{"pat " + kGithubPat, "pat [REDACTED:github_token]"},
      Case{"slack " + kSlack, "slack [REDACTED:slack_token]"},
      Case{"OPENAI " + kOpenAi, "OPENAI [REDACTED:openai_api_key]"},
      Case{"charge with " + kStripe + " / " + kStripeRestricted,
           "charge with [REDACTED:stripe_key] / [REDACTED:stripe_key]"},
      Case{"oauth " + kGoogleOauth, "oauth [REDACTED:google_oauth_token]"},
      // PEM private keys.
      Case{"key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n"
           "-----END RSA PRIVATE KEY-----\ndone",
           "key:\n[REDACTED:private_key]\ndone"},
      Case{"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
           "[REDACTED:private_key]"},
      Case{
          R"({"private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"})",
          R"({"private_key": "[REDACTED:private_key]"})"},
      // Credentials in URLs.
      Case{"dsn postgres://app:hunter2@db.svc:5432/app?sslmode=disable",
           "dsn postgres://app:[REDACTED:url_password]@db.svc:5432/app?sslmode="
           "disable"},
      Case{"redis://:p@ss@cache:6379/0",
           "redis://:[REDACTED:url_password]@cache:6379/0"},
      Case{"git clone https://" + kGhp + "@github.com/org/repo.git",
           "git clone https://[REDACTED:github_token]@github.com/org/repo.git"},
      // Credential-looking base64.
      Case{".dockerconfigjson: " + kDockerConfig,
           ".dockerconfigjson: [REDACTED:base64_blob]"},
      Case{"data:\n  tls.key: "
           "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tCk1JSUV2UUlCQURB"
           "TkJna3Foa2lHOXcwQkFRRUZBQVNDQktjd2dnU2pBZ0VBQW9JQkFRQzc=",
           "data:\n  tls.key: [REDACTED:base64_blob]"},
      Case{"data:\n  password: cGFzc3dvcmQxMjM=",
           "data:\n  password: [REDACTED:password]"}};
}

INSTANTIATE_TEST_SUITE_P(Kinds, RedactPositiveTest,
                         ::testing::ValuesIn(PositiveCases()));

class RedactNegativeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RedactNegativeTest, KeepsWhatTheModelNeedsToDiagnose) {
  Redaction found;
  EXPECT_EQ(RedactSecrets(GetParam(), &found), GetParam());
  EXPECT_EQ(found.count, 0);
  EXPECT_THAT(found.kinds, IsEmpty());
}

std::vector<std::string> NegativeCases() {
  return {
      "Successfully pulled image nginx:1.25 in 2.1s",
      "image registry.example.com/team/app@sha256:" + kSha256,
      "uid 123e4567-e89b-12d3-a456-426614174000",
      "pod web-7d9f8b6c5-x2x9q in namespace shop",
      "dial tcp 10.0.0.12:5432: connect: connection refused",
      "listening on [::1]:8080 and 0.0.0.0:9090",
      "Back-off 5m0s restarting failed container=web pod=web-7d9f8b6c5-x2x9q",
      "Last State: Terminated\n  Reason: OOMKilled\n  Exit Code: 137",
      "Warning BackOff pod/web-7d9f8b6c5-x2x9q CrashLoopBackOff",
      "panic: runtime error: invalid memory address or nil pointer "
      "dereference\n[signal SIGSEGV: segmentation violation code=0x1 "
      "addr=0x0 pc=0x4a5f3c]\n\ngoroutine 1 [running]:\nmain.(*Server)."
      "handle(0xc000010000)\n\t/go/src/app/main.go:42 +0x1d\n",
      "at org.springframework.beans.factory.support."
      "AbstractAutowireCapableBeanFactory.doCreateBean("
      "AbstractAutowireCapableBeanFactory.java:542)",
      "password reset email sent to user 42",
      "Invalid bearer token. Basic auth failed for user bob",
      "token_count=5 max_tokens=100 prompt_tokens=7",
      "auth_enabled=true password_min_length=12 TOKEN_TTL=3600",
      "PASSWORD_FILE=/run/secrets/db SECRET_NAME=db-creds PWD=/app",
      "mounted /var/run/secrets/kubernetes.io/serviceaccount/token",
      "/usr/lib/x86_64-linux-gnu/libQt5CoreWidgets/plugins/platforms/libqxcb",
      R"(Back-off pulling image "registry.example.com/app:v1")",
      R"(Failed to pull image "x": rpc error: code = Unknown desc = failed )"
      R"(to authorize: 401 Unauthorized)",
      R"(MountVolume.SetUp failed for volume "default-token-abcde" : secret )"
      R"("default-token-abcde" not found)",
      R"(Error: secret "db-password" not found)",
      "Error: couldn't find key password in Secret default/db",
      R"(WWW-Authenticate: Bearer realm="kubernetes", error="invalid_token")",
      "token: expired",
      R"({"token": "invalid signature", "password": null, "secret": ""})",
      "password: <set to the key 'password' in secret 'db'>  Optional: false",
      "password: ${DB_PASSWORD} token: ****",
      "docker run -p 8080:80 nginx && mkdir -p /var/lib/app",
      "node disk-pressure sk-learn sk-my-long-kubernetes-deployment-name",
      "valueFrom:\n  secretKeyRef:\n    name: db\n    key: password",
      "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 sha1",
      "user=bob retries=3 duration=1m30s ratio=0.5",
      "-----BEGIN CERTIFICATE----- is not a private key",
      "http://example.com/path?email=a@b.com",
      "user@example.com wrote: token",
      "failed to fetch oauth token: unexpected status: 401 Unauthorized",
      "Error: failed to refresh token: 401 Unauthorized",
      "failed to list *v1.Secret: secrets is forbidden: User "
      R"("system:serviceaccount:shop:web" cannot list resource "secrets")",
      "Access denied for user 'app'@'10.0.0.5' (using password: YES)",
      R"(npm ERR! Unable to authenticate, need: Basic realm="GitHub")",
      "integrity sha512-3PqHTVDxQW9Fv4I3RMaNIW6JtPzM3hD2w5qWn8ZK1l3+Zfq8AQJ+"
      "YSKk6b2mvLbFO0Qmfnup2mhYdPKnGkrMtQ==",
      "helm install x --set auth.username=bob"};
}

INSTANTIATE_TEST_SUITE_P(Diagnostics, RedactNegativeTest,
                         ::testing::ValuesIn(NegativeCases()));

// ------------------------------------------------------------ properties

TEST(RedactSecretsTest, RedactingTwiceIsRedactingOnce) {
  std::vector<std::string> inputs = {
      "Authorization: Bearer abc.def",
      "password=hunter2 user=bob token=" + kJwt,
      "env:\n- name: DB_PASSWORD\n  value: hunter2",
      "stringData:\n  password: |\n    a\n    b\n",
      "postgres://app:hunter2@db/app https://" + kGhp + ":x@github.com",
      "abc/" + kAwsId + "/def " + kDockerConfig + "+/" + kAwsSecret,
      "-----BEGIN PRIVATE KEY-----\nMIIE",
      R"({"password": "a]b", "auth": "Bearer [REDACTED:x] y"})",
      "mysql -p[x -phunter2",
      "password=[REDACTED:password]]] secret: [REDACTED:x]abc",
  };
  for (const Case& c : PositiveCases()) inputs.push_back(c.input);
  for (const std::string& n : NegativeCases()) inputs.push_back(n);
  for (const std::string& in : inputs) {
    const std::string once = RedactSecrets(in);
    Redaction second;
    EXPECT_EQ(RedactSecrets(once, &second), once) << in;
    EXPECT_EQ(second.count, 0) << once;
  }
}

TEST(RedactSecretsTest, KeepsMarkersAsTheyAre) {
  for (const char* text :
       {"[REDACTED:jwt]", "password=[REDACTED:password]",
        R"("secret": "[REDACTED:secret]")",
        "Authorization: Bearer [REDACTED:bearer_token]",
        "postgres://u:[REDACTED:url_password]@h/db",
        "https://[REDACTED:github_token]:[REDACTED:url_password]@github.com"}) {
    Redaction found;
    EXPECT_EQ(RedactSecrets(text, &found), text);
    EXPECT_EQ(found.count, 0) << text;
  }
}

TEST(RedactSecretsTest, TreatsAMalformedMarkerAsText) {
  // A leading '[' is kept as in Go's map[Authorization:[Bearer x]].
  EXPECT_EQ(Redacted("password=[REDACTED:Not A Kind]"),
            "password=[[REDACTED:password] A Kind]");
  EXPECT_EQ(Redacted("[REDACTED:x"), "[REDACTED:x");
}

TEST(RedactSecretsTest, ReportsEachRedactionAndDistinctKindsInOrder) {
  Redaction found;
  RedactSecrets("password=a " + kJwt + " password=b " + kGhp, &found);
  EXPECT_EQ(found.count, 4);
  EXPECT_THAT(found.kinds, ElementsAre("password", "jwt", "github_token"));
  RedactSecrets("token=c", &found);  // adds up across calls
  EXPECT_EQ(found.count, 5);
  EXPECT_THAT(found.kinds,
              ElementsAre("password", "jwt", "github_token", "token"));
}

TEST(RedactSecretsTest, MakesInvalidUtf8ValidAndStillRedacts) {
  const std::string in = "pass\xC3 password=\xFF\xFEsecret \xE2\x82 end\xF0";
  const std::string out = Redacted(in);
  EXPECT_TRUE(IsValidUtf8(out));
  EXPECT_EQ(out,
            "pass\xEF\xBF\xBD password=[REDACTED:password] \xEF\xBF\xBD "
            "end\xEF\xBF\xBD");
}

TEST(RedactSecretsTest, RedactsMultiByteValuesWhole) {
  EXPECT_EQ(Redacted("password=p\xC3\xA4sswörd next"),
            "password=[REDACTED:password] next");
  EXPECT_EQ(Redacted("caf\xC3\xA9 \xE2\x82\xAC 5"),
            "caf\xC3\xA9 \xE2\x82\xAC 5");
}

TEST(RedactSecretsTest, LeavesAMegabyteOfOrdinaryLogsUnchanged) {
  const std::string line = absl::StrCat(
      "2024-05-01T10:00:00Z INFO pod=web-7d9f8b6c5-x2x9q image=nginx:1.25 "
      "digest=sha256:",
      kSha256, " latency=12ms path=/api/v1/items?id=42 token_count=5\n");
  std::string big;
  while (big.size() < (1 << 20)) big += line;
  Redaction found;
  EXPECT_EQ(RedactSecrets(big, &found), big);
  EXPECT_EQ(found.count, 0);
}

TEST(RedactSecretsTest, HandlesAdversarialMegabyteInputs) {
  // Each would be quadratic if a detector re-read its run from every
  // position; the test only checks the results (timing lives in bench/).
  const size_t kSize = 1 << 20;
  std::vector<std::string> inputs;
  inputs.push_back(std::string(kSize, 'a'));
  inputs.push_back(std::string(kSize, '-'));
  inputs.push_back(std::string(kSize, ' ') + "password: x");
  std::string s;
  while (s.size() < kSize) s += "a://b:c";
  inputs.push_back(s);
  s.clear();
  while (s.size() < kSize) s += "-----BEGIN X-----END ";
  inputs.push_back(s);
  s.clear();
  while (s.size() < kSize) s += "\"token\": a ";
  inputs.push_back(s);
  s.clear();
  while (s.size() < kSize) s += "[REDACTED:";
  inputs.push_back(s);
  s.clear();
  while (s.size() < kSize) s += " mysql -p";
  inputs.push_back(s);
  s.clear();
  while (s.size() < kSize) s += "eyJabcdefgh.";
  inputs.push_back(s);
  for (const std::string& in : inputs) {
    const std::string out = Redacted(in);
    EXPECT_TRUE(IsValidUtf8(out));
    EXPECT_LE(out.size(), in.size() * 4 + 64);
    EXPECT_EQ(Redacted(out), out) << in.substr(0, 40);
  }
  EXPECT_EQ(Redacted("password=" + std::string(kSize, 'x')),
            "password=[REDACTED:password]");
  EXPECT_EQ(Redacted("-----BEGIN PRIVATE KEY-----" + std::string(kSize, 'A')),
            "[REDACTED:private_key]");
}

// -------------------------------------------------------- RedactNamedValue

struct NamedCase {
  std::string name;
  std::string value;
  std::string expected;
};

class RedactNamedValueTest : public ::testing::TestWithParam<NamedCase> {};

TEST_P(RedactNamedValueTest, RedactsTheWholeValueOfASecretName) {
  const NamedCase& c = GetParam();
  const std::string once = RedactNamedValue(c.name, c.value);
  EXPECT_EQ(once, c.expected);
  EXPECT_EQ(RedactNamedValue(c.name, once), once);
}

INSTANTIATE_TEST_SUITE_P(
    Names, RedactNamedValueTest,
    ::testing::Values(
        NamedCase{"DB_PASSWORD", "hunter2", "[REDACTED:password]"},
        NamedCase{"db_password", "true", "[REDACTED:password]"},
        NamedCase{"PGPASSWORD", "x", "[REDACTED:password]"},
        NamedCase{"SMTP_PASS", "x y", "[REDACTED:password]"},
        NamedCase{"githubToken", "abc", "[REDACTED:token]"},
        NamedCase{"GITHUB_TOKEN", kGhp, "[REDACTED:github_token]"},
        NamedCase{"JWT_SECRET", "s", "[REDACTED:secret]"},
        NamedCase{"AWS_SECRET_ACCESS_KEY", kAwsSecret,
                  "[REDACTED:aws_secret_access_key]"},
        NamedCase{"AWS_ACCESS_KEY_ID", kAwsId, "[REDACTED:aws_access_key_id]"},
        NamedCase{"X-Api-Key", "k", "[REDACTED:api_key]"},
        NamedCase{"STRIPE_APIKEY", "k", "[REDACTED:api_key]"},
        NamedCase{"SSH_PRIVATE_KEY", "-----BEGIN OPENSSH PRIVATE KEY-----",
                  "[REDACTED:private_key]"},
        NamedCase{"AZURE_STORAGE_ACCOUNT_KEY", "k", "[REDACTED:access_key]"},
        NamedCase{"SENTRY_DSN", "https://k@sentry.io/1",
                  "[REDACTED:connection_string]"},
        NamedCase{"DATABASE_CONNECTION_STRING", "Server=db;Password=x",
                  "[REDACTED:connection_string]"},
        NamedCase{"CREDENTIALS", "x", "[REDACTED:credentials]"},
        NamedCase{"Authorization", "Bearer x", "[REDACTED:auth]"},
        NamedCase{"GOOGLE_APPLICATION_CREDENTIALS", "/var/secrets/key.json",
                  "[REDACTED:credentials]"},
        NamedCase{"DB_PASSWORD", "", ""},
        NamedCase{"DB_PASSWORD", "[REDACTED:password]", "[REDACTED:password]"},
        // Not secret names: the value is scanned.
        NamedCase{"PASSWORD_FILE", "/run/secrets/db", "/run/secrets/db"},
        NamedCase{"TOKEN_TTL_SECONDS", "3600", "3600"},
        NamedCase{"token_count", "5", "5"},
        NamedCase{"SECRET_NAME", "db-creds", "db-creds"},
        NamedCase{"AUTH_TYPE", "oidc", "oidc"},
        NamedCase{"PWD", "/app", "/app"}, NamedCase{"OLDPWD", "/", "/"},
        NamedCase{"AUTHOR", "bob", "bob"},
        NamedCase{"OAUTH_CLIENT_ID", "abc", "abc"},
        NamedCase{"TOKENIZER", "bert", "bert"},
        NamedCase{"BYPASS_CACHE", "true", "true"},
        NamedCase{"LOG_LEVEL", "debug", "debug"},
        NamedCase{"DATABASE_URL", "postgres://u:p@h/db",
                  "postgres://u:[REDACTED:url_password]@h/db"},
        NamedCase{"EXTRA", kJwt, "[REDACTED:jwt]"}));

TEST(RedactNamedValueTest, ReportsTheRedaction) {
  Redaction found;
  RedactNamedValue("DB_PASSWORD", "x", &found);
  RedactNamedValue("LOG_LEVEL", "debug", &found);
  RedactNamedValue("DB_PASSWORD", "", &found);
  EXPECT_EQ(found.count, 1);
  EXPECT_THAT(found.kinds, ElementsAre("password"));
}

TEST(RedactNamedValueTest, MakesAnInvalidValueValid) {
  EXPECT_TRUE(IsValidUtf8(RedactNamedValue("LOG", "a\xFF")));
  EXPECT_EQ(RedactNamedValue("LOG", "a\xFF"), "a\xEF\xBF\xBD");
  EXPECT_EQ(RedactNamedValue("TOKEN\xFF", "a\xFF"), "[REDACTED:token]");
}

TEST(RedactIncidentTest, RedactsTheFreeTextEnvAndAnnotationsAndKeepsTheFacts) {
  reflexion::v1::Incident in;
  in.set_pod_name("api-1");
  in.set_error_type("CrashLoopBackOff");
  in.set_error_message("login failed: password=hunter2-pw");
  in.set_logs("connecting to postgres://app:s3cr3t-db-pw@db:5432/app\nok\n");
  in.add_events()->set_message("token=abcdef0123456789abcdef0123");
  in.add_container_statuses()->set_waiting_message(
      "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig-value-123");
  ASSERT_TRUE(
      google::protobuf::util::JsonStringToMessage(
          R"({"metadata":{"name":"api-1","annotations":{)"
          R"("kubectl.kubernetes.io/last-applied-configuration":)"
          R"("{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"pa55-w0rd-xyz\"}]}"}},)"
          R"("spec":{"containers":[{"name":"app","image":"shop/app:1.4",)"
          R"("env":[{"name":"DB_PASSWORD","value":"pa55-w0rd-xyz"},)"
          R"({"name":"LOG_LEVEL","value":"debug"}]}]},)"
          R"("status":{"containerStatuses":[{"name":"app","lastState":)"
          R"({"terminated":{"reason":"Error","message":"api_key=AKIAABCDEFGHIJKLMNOP"}}}]}})",
          in.mutable_pod())
          .ok());
  EXPECT_GT(RedactIncident(&in), 0);
  const std::string all = in.DebugString();
  for (const char* secret :
       {"hunter2-pw", "s3cr3t-db-pw", "abcdef0123456789abcdef0123",
        "sig-value-123", "pa55-w0rd-xyz", "AKIAABCDEFGHIJKLMNOP"}) {
    EXPECT_EQ(all.find(secret), std::string::npos) << secret;
  }
  // What analysis reads is kept.
  EXPECT_THAT(all, HasSubstr("shop/app:1.4"));
  EXPECT_THAT(all, HasSubstr("LOG_LEVEL"));
  EXPECT_THAT(all, HasSubstr("debug"));
  EXPECT_THAT(all, HasSubstr("DB_PASSWORD"));
  EXPECT_EQ(in.error_type(), "CrashLoopBackOff");
  EXPECT_THAT(in.logs(), HasSubstr("ok"));
}

}  // namespace
}  // namespace reflexion::core

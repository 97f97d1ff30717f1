// Authentication, roles, scopes and TLS: the Authenticator on its own, and
// the real server (App on 127.0.0.1:0, RocksDB in a temp dir) called with no
// token, a wrong token and each role, over plaintext, TLS and mTLS.

#include "server/auth.h"

#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "client/client.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "server/app.h"
#include "server/config.h"
#include "tests/server/server_process.h"
#include "tests/storage/temp_dir.h"
#include "tests/testing/status_matchers.h"

namespace reflexion::server {
namespace {

using ::reflexion::testing::IsOk;
using ::reflexion::testing::StatusIs;
using ::reflexion::testing::TempDir;
using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

// The tokens every test uses (secrets: they must never be logged).
constexpr char kAgentToken[] = "agent-secret-7f3a9c";
constexpr char kViewerToken[] = "viewer-secret-51d2e8";
constexpr char kOperatorToken[] = "operator-secret-c0ffee";
constexpr char kAdminToken[] = "admin-secret-9b8a77";
constexpr char kViewerAToken[] = "viewer-a-secret-aa11";
constexpr char kAgentStagingToken[] = "agent-staging-secret-5150";
constexpr char kOperatorAToken[] = "ops-a-secret-a0a0";
constexpr char kWrongToken[] = "wrong-secret-deadbeef";

std::string TokensYaml(const std::string& extra = "") {
  return absl::StrCat(
      "tokens:\n"
      "  - sha256: ",
      Sha256Hex(kAgentToken),
      "\n"
      "    principal: agent-prod\n"
      "    role: agent\n"
      "    clusters: [prod]\n"
      "  - sha256: ",
      Sha256Hex(kViewerToken),
      "\n"
      "    principal: viewer-bob\n"
      "    role: viewer\n"
      "  - sha256: ",
      Sha256Hex(kOperatorToken),
      "\n"
      "    principal: ops-carol\n"
      "    role: operator\n"
      "  - sha256: ",
      Sha256Hex(kAdminToken),
      "\n"
      "    principal: root-dave\n"
      "    role: admin\n"
      "  - sha256: ",
      Sha256Hex(kViewerAToken),
      "\n"
      "    principal: viewer-a\n"
      "    role: viewer\n"
      "    namespaces: [team-a]\n"
      "  - sha256: ",
      Sha256Hex(kAgentStagingToken),
      "\n"
      "    principal: agent-staging\n"
      "    role: agent\n"
      "    clusters: [staging]\n"
      "  - sha256: ",
      Sha256Hex(kOperatorAToken),
      "\n"
      "    principal: ops-a\n"
      "    role: operator\n"
      "    namespaces: [team-a]\n",
      extra);
}

// ---------------------------------------------------------------------------
// Unit tests: roles, the table, the tokens file.
// ---------------------------------------------------------------------------

TEST(RoleTest, ViewerOperatorAdminIsAHierarchyAndAgentIsSeparate) {
  Principal p;
  p.role = Role::kOperator;
  EXPECT_TRUE(p.Has(Role::kViewer));
  EXPECT_TRUE(p.Has(Role::kOperator));
  EXPECT_FALSE(p.Has(Role::kAdmin));
  EXPECT_FALSE(p.Has(Role::kAgent));
  p.role = Role::kAgent;
  EXPECT_TRUE(p.Has(Role::kAgent));
  EXPECT_FALSE(p.Has(Role::kViewer));
  p.role = Role::kAdmin;
  for (Role r : {Role::kAgent, Role::kViewer, Role::kOperator, Role::kAdmin}) {
    EXPECT_TRUE(p.Has(r));
  }
}

TEST(RoleTest, EmptyScopeListsMeanAll) {
  Principal p;
  EXPECT_TRUE(p.AllowsCluster("anything"));
  EXPECT_TRUE(p.AllowsNamespace("anything"));
  p.namespaces = {"a"};
  p.clusters = {"prod"};
  EXPECT_TRUE(p.AllowsNamespace("a"));
  EXPECT_FALSE(p.AllowsNamespace("b"));
  EXPECT_FALSE(p.AllowsCluster("staging"));
}

TEST(RoleTest, AuthorizeNamesTheMissingRole) {
  Principal p;
  p.name = "viewer-bob";
  p.role = Role::kViewer;
  EXPECT_THAT(Authorize(p, RequiredRole("ResumeWorkflow"), "ResumeWorkflow"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("ResumeWorkflow needs role operator; "
                                 "principal viewer-bob has viewer")));
}

// The expected access of every method of the service: a new RPC without an
// entry here fails the test below (and the table-driven server test).
struct Access {
  Role role;
  bool agent;
};
const std::map<std::string, Access>& ExpectedAccess() {
  static const auto* table = new std::map<std::string, Access>{
      {"Resolve", {Role::kOperator, true}},
      {"ProcessIncident", {Role::kOperator, true}},
      {"DiagnoseIncident", {Role::kViewer, true}},
      {"StartWorkflow", {Role::kOperator, true}},
      {"GetWorkflow", {Role::kViewer, true}},
      {"WatchWorkflow", {Role::kViewer, true}},
      {"ResumeWorkflow", {Role::kOperator, false}},
      {"CancelWorkflow", {Role::kOperator, false}},
      {"ListCheckpoints", {Role::kViewer, false}},
      {"ForkWorkflow", {Role::kOperator, false}},
      {"ListStrategies", {Role::kViewer, false}},
      {"ListEpisodes", {Role::kViewer, false}},
      {"GetMetrics", {Role::kViewer, false}},
      {"SimulateReflection", {Role::kOperator, false}},
      {"ListAudit", {Role::kViewer, false}},
      {"UndoAction", {Role::kOperator, false}},
      {"ListBreakers", {Role::kViewer, false}},
      {"ClearBreaker", {Role::kOperator, false}},
      {"GetStrategyHistory", {Role::kViewer, false}},
      {"RollbackStrategy", {Role::kOperator, false}},
      {"ClearMemory", {Role::kAdmin, false}},
      {"ListPatterns", {Role::kViewer, false}},
  };
  return *table;
}

TEST(RoleTest, EveryServiceMethodHasItsRoleInTheTable) {
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::ReflexionService::service_full_name());
  ASSERT_NE(service, nullptr);
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string name = service->method(i)->name();
    auto it = ExpectedAccess().find(name);
    ASSERT_NE(it, ExpectedAccess().end())
        << name << " has no entry: add its role to RequiredRole and here";
    EXPECT_EQ(RequiredRole(name), it->second.role) << name;
    EXPECT_EQ(RequiredRole("/reflexion.v1.ReflexionService/" + name),
              it->second.role)
        << name;
    EXPECT_EQ(AgentMayCall(name), it->second.agent) << name;
  }
  EXPECT_EQ(RequiredRole("NoSuchMethod"), Role::kAdmin);  // fail closed
}

TEST(AuthTableTest, ParsesTokensAndIdentities) {
  absl::StatusOr<AuthTable> t =
      ParseAuthTable(TokensYaml("identities:\n"
                                "  - subject: \"CN=ops-alice\"\n"
                                "    principal: alice\n"
                                "    role: operator\n"
                                "  - uri: spiffe://test/bob\n"
                                "    principal: bob\n"
                                "    role: viewer\n"
                                "    namespaces: [a, b]\n"));
  ASSERT_THAT(t.status(), IsOk());
  EXPECT_EQ(t->tokens.size(), 7u);
  ASSERT_EQ(t->identities.size(), 2u);
  EXPECT_EQ(t->identities[0].scheme, "subject");
  EXPECT_EQ(t->identities[1].principal.namespaces,
            (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(t->tokens[0].principal.clusters, std::vector<std::string>{"prod"});
  EXPECT_TRUE(t->tokens[0].principal.authenticated);
}

TEST(AuthTableTest, RejectsBadEntriesNamingThem) {
  const std::string hash = Sha256Hex("x");
  struct Case {
    std::string yaml;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"tokenz: []\n", "is not a known key"},
      {absl::StrCat("tokens:\n  - sha256: ", hash,
                    "\n    principal: a\n    role: root\n"),
       "tokens[0].role: 'root' is not a role"},
      {"tokens:\n  - sha256: ABC\n    principal: a\n    role: admin\n",
       "tokens[0].sha256: must be 64 lowercase hex"},
      {absl::StrCat("tokens:\n  - sha256: ", absl::AsciiStrToUpper(hash),
                    "\n    principal: a\n    role: admin\n"),
       "tokens[0].sha256: must be 64 lowercase hex"},
      {absl::StrCat("tokens:\n  - sha256: ", hash,
                    "\n    principal: a\n    role: admin\n    color: red\n"),
       "tokens[0].color: is not a known key"},
      {absl::StrCat("tokens:\n  - sha256: ", hash,
                    "\n    principal: a\n    role: admin\n  - sha256: ", hash,
                    "\n    principal: b\n    role: viewer\n"),
       "tokens[1].sha256: the same token as tokens[0]"},
      {absl::StrCat("tokens:\n  - sha256: ", hash, "\n    role: admin\n"),
       "tokens[0]: principal: is required"},
      {absl::StrCat("tokens:\n  - sha256: ", hash,
                    "\n    principal: a b\n    role: admin\n"),
       "tokens[0].principal: must be"},
      {absl::StrCat("tokens:\n  - sha256: ", hash,
                    "\n    principal: a\n    role: admin\n    clusters: "
                    "[Prod_1]\n"),
       "tokens[0].clusters[0]: 'Prod_1' is not a DNS-1123 label"},
      {"identities:\n  - principal: a\n    role: admin\n",
       "identities[0]: give one of subject"},
      {"identities:\n  - dns: a.example\n    uri: x:y\n    principal: a\n"
       "    role: admin\n",
       "identities[0]: give exactly one"},
      {"identities:\n  - dns: a.example\n    principal: a\n    role: admin\n"
       "  - dns: a.example\n    principal: b\n    role: viewer\n",
       "identities[1]: the same dns as identities[0]"},
      {"tokens: [", "not valid YAML"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(
        ParseAuthTable(c.yaml).status(),
        StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(c.error)))
        << c.yaml;
  }
}

TEST(AuthenticatorTest, AuthenticatesBearerTokensAndNeverEchoesThem) {
  TempDir dir;
  const std::string path = dir.path() + "/tokens.yaml";
  WriteFile(path, TokensYaml());
  AuthenticatorOptions o;
  o.tokens_file = path;
  absl::StatusOr<std::unique_ptr<Authenticator>> a = Authenticator::Create(o);
  ASSERT_THAT(a.status(), IsOk());
  absl::StatusOr<Principal> p =
      (*a)->Authenticate(absl::StrCat("Bearer ", kOperatorToken), nullptr);
  ASSERT_THAT(p.status(), IsOk());
  EXPECT_EQ(p->name, "ops-carol");
  EXPECT_EQ(p->role, Role::kOperator);
  EXPECT_TRUE(p->authenticated);
  // The scheme is case-insensitive.
  EXPECT_THAT(
      (*a)->Authenticate(absl::StrCat("bearer ", kViewerToken), nullptr),
      IsOk());
  absl::Status wrong =
      (*a)->Authenticate(absl::StrCat("Bearer ", kWrongToken), nullptr)
          .status();
  EXPECT_THAT(wrong,
              StatusIs(absl::StatusCode::kUnauthenticated, "unknown token"));
  EXPECT_THAT((*a)->Authenticate("", nullptr).status(),
              StatusIs(absl::StatusCode::kUnauthenticated,
                       "missing bearer token (metadata authorization: Bearer "
                       "...)"));
  absl::Status basic =
      (*a)->Authenticate(absl::StrCat("Basic ", kWrongToken), nullptr).status();
  EXPECT_THAT(basic, StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(std::string(basic.message()), Not(HasSubstr(kWrongToken)));
}

TEST(AuthenticatorTest,
     WithoutTokensOrCertificatesEveryCallerIsAnonymousAdmin) {
  absl::StatusOr<std::unique_ptr<Authenticator>> a =
      Authenticator::Create(AuthenticatorOptions{});
  ASSERT_THAT(a.status(), IsOk());
  EXPECT_FALSE((*a)->enabled());
  absl::StatusOr<Principal> p = (*a)->Authenticate("", nullptr);
  ASSERT_THAT(p.status(), IsOk());
  EXPECT_EQ(p->name, "anonymous");
  EXPECT_EQ(p->role, Role::kAdmin);
  EXPECT_FALSE(p->authenticated);
}

TEST(AuthenticatorTest, ABadFileRefusesToStartNamingTheEntry) {
  TempDir dir;
  const std::string path = dir.path() + "/tokens.yaml";
  WriteFile(path, "tokens:\n  - sha256: 00\n    principal: a\n    role: x\n");
  AuthenticatorOptions o;
  o.tokens_file = path;
  EXPECT_THAT(Authenticator::Create(o).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("auth.tokens_file")));
  o.tokens_file = dir.path() + "/missing.yaml";
  EXPECT_THAT(
      Authenticator::Create(o).status(),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("auth.tokens_file")));
}

TEST(AuthenticatorTest, ReloadsAChangedFileAndKeepsTheOldOneWhenTheNewIsBad) {
  TempDir dir;
  const std::string path = dir.path() + "/tokens.yaml";
  WriteFile(path, TokensYaml());
  AuthenticatorOptions o;
  o.tokens_file = path;
  absl::StatusOr<std::unique_ptr<Authenticator>> created =
      Authenticator::Create(o);
  ASSERT_THAT(created.status(), IsOk());
  Authenticator& a = **created;
  EXPECT_EQ(a.loads(), 1);
  EXPECT_THAT(a.CheckNow(), IsOk());  // unchanged: not reloaded
  EXPECT_EQ(a.loads(), 1);

  // A new token replaces the file (another size: seen without waiting for
  // the mtime's granularity).
  const std::string fresh = "fresh-secret-0001";
  WriteFile(path, absl::StrCat("tokens:\n  - sha256: ", Sha256Hex(fresh),
                               "\n    principal: fresh\n    role: viewer\n"));
  EXPECT_THAT(a.CheckNow(), IsOk());
  EXPECT_EQ(a.loads(), 2);
  EXPECT_THAT(a.Authenticate(absl::StrCat("Bearer ", fresh), nullptr), IsOk());
  EXPECT_THAT(
      a.Authenticate(absl::StrCat("Bearer ", kOperatorToken), nullptr).status(),
      StatusIs(absl::StatusCode::kUnauthenticated, "unknown token"));

  // A bad file: the error names the entry, the previous tokens stay.
  WriteFile(path, "tokens:\n  - principal: broken\n");
  EXPECT_THAT(a.CheckNow(), StatusIs(absl::StatusCode::kInvalidArgument,
                                     HasSubstr("tokens[0]")));
  EXPECT_EQ(a.loads(), 2);
  EXPECT_THAT(a.Authenticate(absl::StrCat("Bearer ", fresh), nullptr), IsOk());
}

TEST(ListenSecurityTest, NonLoopbackWithoutAuthNeedsTheFlag) {
  ServerConfig c;
  EXPECT_EQ(c.host, "127.0.0.1");
  EXPECT_THAT(CheckListenSecurity(c), IsOk());
  c.host = "0.0.0.0";
  EXPECT_THAT(CheckListenSecurity(c),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("service.host 0.0.0.0"),
                             HasSubstr("--insecure_listen"))));
  c.auth_tokens_file = "/some/tokens.yaml";
  EXPECT_THAT(CheckListenSecurity(c),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("tls.cert_file")));
  c.insecure_listen = true;
  EXPECT_THAT(CheckListenSecurity(c), IsOk());
  c.tls_cert_file = "/x.pem";
  EXPECT_THAT(CheckListenSecurity(c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("tls.cert_file and tls.key_file")));
  EXPECT_TRUE(IsLoopbackHost("127.0.0.1"));
  EXPECT_TRUE(IsLoopbackHost("127.1.2.3"));
  EXPECT_TRUE(IsLoopbackHost("localhost"));
  EXPECT_TRUE(IsLoopbackHost("[::1]"));
  EXPECT_FALSE(IsLoopbackHost("0.0.0.0"));
  EXPECT_FALSE(IsLoopbackHost("::"));
  EXPECT_FALSE(IsLoopbackHost("127.0.0.1.evil"));
}

TEST(ListenSecurityTest, ConfigKeysAreRead) {
  ServerConfig c;
  ASSERT_THAT(ApplyYaml("service:\n  insecure_listen: true\n"
                        "auth:\n  tokens_file: /t.yaml\n  reload_interval: 2\n"
                        "tls:\n  cert_file: /c.pem\n  key_file: /k.pem\n"
                        "  client_ca_file: /ca.pem\n  reload_interval: 30\n",
                        c),
              IsOk());
  EXPECT_TRUE(c.insecure_listen);
  EXPECT_EQ(c.auth_tokens_file, "/t.yaml");
  EXPECT_EQ(c.auth_reload_interval, absl::Seconds(2));
  EXPECT_EQ(c.tls_cert_file, "/c.pem");
  EXPECT_EQ(c.tls_key_file, "/k.pem");
  EXPECT_EQ(c.tls_client_ca_file, "/ca.pem");
  EXPECT_EQ(c.tls_reload_interval, absl::Seconds(30));
  EXPECT_THAT(ApplyYaml("auth:\n  token_file: x\n", c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is not a known key")));
}

TEST(ListenSecurityTest, TheAppRefusesNonLoopbackWithoutAuthUnlessInsecure) {
  TempDir dir;
  ServerConfig c;
  c.host = "0.0.0.0";
  c.port = 0;
  c.data_dir = dir.path();
  c.worker_threads = 2;
  {
    App app(c);
    EXPECT_THAT(app.Start(), StatusIs(absl::StatusCode::kFailedPrecondition,
                                      HasSubstr("--insecure_listen")));
  }
  c.insecure_listen = true;
  App app(c);
  ASSERT_THAT(app.Start(), IsOk());
  EXPECT_GT(app.port(), 0);
}

// ---------------------------------------------------------------------------
// The real server with tokens (plaintext on loopback).
// ---------------------------------------------------------------------------

// Opens a Resolve stream with `token`, sends `requests`, closes its side
// and returns what came back.
std::vector<v1::ResolveResponse> RunStream(
    v1::ReflexionService::Stub& stub,
    const std::vector<v1::ResolveRequest>& requests, grpc::Status* status) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub.Resolve(&ctx);
  for (const auto& r : requests) stream->Write(r);
  stream->WritesDone();
  std::vector<v1::ResolveResponse> out;
  v1::ResolveResponse m;
  while (stream->Read(&m)) out.push_back(m);
  *status = stream->Finish();
  return out;
}

v1::ResolveRequest Hello(const std::string& cluster) {
  v1::ResolveRequest r;
  r.mutable_hello()->set_cluster(cluster);
  r.mutable_hello()->set_agent_id("agent-1");
  r.mutable_hello()->set_agent_version("test");
  return r;
}

class AuthServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_ = dir_.path() + "/tokens.yaml";
    WriteFile(tokens_, TokensYaml());
    ServerConfig c;
    c.host = "127.0.0.1";
    c.port = 0;
    c.data_dir = dir_.path() + "/data";
    c.worker_threads = 2;
    c.workflow.seed = 5;
    c.simulator_seed = 3;
    c.auth_tokens_file = tokens_;
    // Reloads happen when a test calls CheckNow (the timer never fires).
    c.auth_reload_interval = absl::Hours(1);
    c.workflow.keep_last_checkpoints = 0;  // all: the tests read them back
    app_ = std::make_unique<App>(c);
    ASSERT_THAT(app_->Start(), IsOk());
    target_ = absl::StrCat("127.0.0.1:", app_->port());
  }
  void TearDown() override { app_.reset(); }

  std::shared_ptr<grpc::Channel> Channel(const std::string& token) {
    client::ConnectOptions o;
    o.token = token;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> ch =
        client::Connect(target_, o);
    CHECK(ch.ok()) << ch.status();
    return *ch;
  }
  std::unique_ptr<v1::ReflexionService::Stub> Stub(const std::string& token) {
    return v1::ReflexionService::NewStub(Channel(token));
  }

  // A workflow of namespace `ns` started by the operator and waiting for a
  // human in human_escalation (a missing ConfigMap or Secret: only a human
  // may create it), with its WAITING result.
  std::pair<std::string, v1::IncidentResult> Waiting(const std::string& ns) {
    for (int i = 0; i < 100; ++i) {
      v1::ProcessIncidentRequest req;
      req.set_pod_name(absl::StrCat("web-", i));
      req.set_namespace_(ns);
      req.set_error_type("CreateContainerConfigError");
      v1::ProcessIncidentResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
      grpc::Status s = Stub(kOperatorToken)->ProcessIncident(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      if (!s.ok()) break;
      if (resp.result().status() == v1::WORKFLOW_STATUS_WAITING &&
          !resp.result().etag().empty()) {
        return {resp.result().workflow_id(), resp.result()};
      }
    }
    ADD_FAILURE() << "no incident waited for a human";
    return {};
  }
  std::string StartWaiting(const std::string& ns) { return Waiting(ns).first; }

  // Watches `id` from event `from` to its end (its result).
  v1::IncidentResult WaitForResult(const std::string& id, uint64_t from = 0) {
    v1::WatchWorkflowRequest req;
    req.set_workflow_id(id);
    req.set_from_sequence(from);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(60));
    auto reader = Stub(kAdminToken)->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse m;
    v1::IncidentResult result;
    while (reader->Read(&m)) {
      if (m.has_result()) result = m.result();
    }
    grpc::Status s = reader->Finish();
    EXPECT_TRUE(s.ok()) << s.error_message();
    return result;
  }

  v1::WorkflowState LatestState(const std::string& id) {
    v1::ListCheckpointsRequest req;
    req.set_workflow_id(id);
    req.set_limit(1);
    req.set_include_state(true);
    v1::ListCheckpointsResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = Stub(kAdminToken)->ListCheckpoints(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (resp.checkpoints_size() == 0) return {};
    return resp.checkpoints(0).state();
  }

  TempDir dir_;
  std::string tokens_;
  std::unique_ptr<App> app_;
  std::string target_;
};

// Calls `method` with an empty request; the status.
grpc::Status CallEmpty(grpc::Channel* channel, const std::string& method) {
  const std::string path = "/reflexion.v1.ReflexionService/" + method;
  if (method == "Resolve") {
    auto stub = v1::ReflexionService::NewStub(
        std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    auto stream = stub->Resolve(&ctx);
    stream->WritesDone();
    v1::ResolveResponse r;
    while (stream->Read(&r)) {
    }
    return stream->Finish();
  }
  if (method == "WatchWorkflow") {
    auto stub = v1::ReflexionService::NewStub(
        std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    v1::WatchWorkflowRequest req;
    auto reader = stub->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse r;
    while (reader->Read(&r)) {
    }
    return reader->Finish();
  }
  grpc::GenericStub stub(
      std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  grpc::ByteBuffer request;  // an empty message of any type
  grpc::Slice empty;
  request = grpc::ByteBuffer(&empty, 1);
  grpc::ByteBuffer response;
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&ctx, path, grpc::StubOptions(), &request, &response,
                 [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  return status;
}

TEST_F(AuthServerTest, EveryRpcAnswersEachCallerAsItsRoleAllows) {
  struct Caller {
    std::string token;
    std::string principal;
    Role role;
  };
  const std::vector<Caller> callers = {
      {kAgentToken, "agent-prod", Role::kAgent},
      {kViewerToken, "viewer-bob", Role::kViewer},
      {kOperatorToken, "ops-carol", Role::kOperator},
      {kAdminToken, "root-dave", Role::kAdmin},
  };
  auto none = Channel("");
  auto wrong = Channel(kWrongToken);
  auto admin = Channel(kAdminToken);
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          v1::ReflexionService::service_full_name());
  ASSERT_NE(service, nullptr);
  int checked = 0;
  for (int i = 0; i < service->method_count(); ++i) {
    const std::string method = service->method(i)->name();
    SCOPED_TRACE(method);
    auto expected = ExpectedAccess().find(method);
    ASSERT_NE(expected, ExpectedAccess().end());
    if (CallEmpty(admin.get(), method).error_code() ==
        grpc::StatusCode::UNIMPLEMENTED) {
      // Not served in this build (another change adds its handler, which
      // must call the same check: then this test covers it).
      continue;
    }
    ++checked;
    grpc::Status s = CallEmpty(none.get(), method);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(s.error_message(), HasSubstr("missing bearer token"));
    s = CallEmpty(wrong.get(), method);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(s.error_message(), "unknown token");
    for (const Caller& c : callers) {
      SCOPED_TRACE(c.principal);
      auto ch = Channel(c.token);
      s = CallEmpty(ch.get(), method);
      Principal p;
      p.role = c.role;
      const bool allowed = p.Has(expected->second.role) ||
                           (c.role == Role::kAgent && expected->second.agent);
      if (allowed) {
        EXPECT_NE(s.error_code(), grpc::StatusCode::UNAUTHENTICATED)
            << s.error_message();
        EXPECT_NE(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
            << s.error_message();
      } else {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
        EXPECT_THAT(s.error_message(),
                    HasSubstr(absl::StrCat(method, " needs role ",
                                           RoleName(expected->second.role))));
        EXPECT_THAT(s.error_message(),
                    HasSubstr(absl::StrCat("principal ", c.principal, " has ",
                                           RoleName(c.role))));
      }
    }
  }
  EXPECT_GE(checked, 14);  // every RPC this build serves
}

TEST_F(AuthServerTest, HealthStaysAnonymous) {
  auto none = Channel("");
  absl::StatusOr<int> s = client::CheckHealth(*none, "");
  ASSERT_THAT(s.status(), IsOk());
  EXPECT_EQ(*s, 1);
}

TEST_F(AuthServerTest, AViewerOfNamespaceACannotReadAWorkflowOfB) {
  const std::string in_a = StartWaiting("team-a");
  const std::string in_b = StartWaiting("team-b");
  auto viewer_a = Stub(kViewerAToken);
  {
    v1::GetWorkflowRequest req;
    req.set_workflow_id(in_a);
    v1::GetWorkflowResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = viewer_a->GetWorkflow(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.incident().namespace_(), "team-a");
  }
  {
    v1::GetWorkflowRequest req;
    req.set_workflow_id(in_b);
    v1::GetWorkflowResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = viewer_a->GetWorkflow(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("namespace team-b"));
    EXPECT_FALSE(resp.has_incident());
  }
  {
    v1::ListCheckpointsRequest req;
    req.set_workflow_id(in_b);
    req.set_include_state(true);
    v1::ListCheckpointsResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = viewer_a->ListCheckpoints(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("incident.namespace"));
    EXPECT_EQ(resp.checkpoints_size(), 0);
  }
  {
    v1::WatchWorkflowRequest req;
    req.set_workflow_id(in_b);
    grpc::ClientContext ctx;
    auto reader = viewer_a->WatchWorkflow(&ctx, req);
    v1::WatchWorkflowResponse m;
    int messages = 0;
    while (reader->Read(&m)) ++messages;
    grpc::Status s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_EQ(messages, 0);
  }
  {
    // Episodes: only with its namespace as the filter.
    v1::ListEpisodesRequest req;
    v1::ListEpisodesResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(viewer_a->ListEpisodes(&ctx, req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    req.set_namespace_("team-a");
    grpc::ClientContext ctx2;
    EXPECT_TRUE(viewer_a->ListEpisodes(&ctx2, req, &resp).ok());
  }
}

TEST_F(AuthServerTest, AnOperatorOfNamespaceAActsOnNothingOfB) {
  auto [in_b, waiting] = Waiting("team-b");
  auto ops_a = Stub(kOperatorAToken);
  {
    v1::ResumeWorkflowRequest req;
    req.set_workflow_id(in_b);
    req.set_etag(waiting.etag());
    req.mutable_decision()->set_kind(v1::HumanDecision::KIND_GIVE_UP);
    v1::ResumeWorkflowResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = ops_a->ResumeWorkflow(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(), HasSubstr("namespace team-b"));
  }
  {
    v1::CancelWorkflowRequest req;
    req.set_workflow_id(in_b);
    v1::CancelWorkflowResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(ops_a->CancelWorkflow(&ctx, req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    v1::ForkWorkflowRequest req;
    req.set_workflow_id(in_b);
    req.set_step(0);
    v1::ForkWorkflowResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(ops_a->ForkWorkflow(&ctx, req, &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    v1::StartWorkflowRequest req;
    req.set_pod_name("web-1");
    req.set_namespace_("team-b");
    req.set_error_type("OOMKilled");
    v1::StartWorkflowResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = ops_a->StartWorkflow(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_THAT(s.error_message(),
                HasSubstr("namespace: principal ops-a may not access "
                          "namespace team-b"));
    EXPECT_TRUE(resp.workflow_id().empty());
  }
  {
    // On a stream: rejected naming incident.namespace; the stream goes on.
    v1::ResolveRequest bad;
    *bad.mutable_incident() = v1::Incident();
    bad.mutable_incident()->set_pod_name("web-2");
    bad.mutable_incident()->set_namespace_("team-b");
    bad.mutable_incident()->set_error_type("OOMKilled");
    bad.mutable_incident()->set_request_id("r-b");
    v1::ResolveRequest good = bad;
    good.mutable_incident()->set_namespace_("team-a");
    good.mutable_incident()->set_request_id("r-a");
    grpc::Status s;
    std::vector<v1::ResolveResponse> out = RunStream(*ops_a, {bad, good}, &s);
    ASSERT_TRUE(s.ok()) << s.error_message();
    bool rejected = false, resolved = false;
    for (const auto& m : out) {
      if (m.has_rejected() && m.rejected().request_id() == "r-b") {
        rejected = true;
        EXPECT_EQ(m.rejected().code(),
                  static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
        EXPECT_EQ(m.rejected().field(), "incident.namespace");
      }
      if (m.has_result()) resolved = m.result().namespace_() == "team-a";
    }
    EXPECT_TRUE(rejected);
    EXPECT_TRUE(resolved);
  }
  // The workflow of team-b is untouched: still waiting.
  v1::GetWorkflowRequest req;
  req.set_workflow_id(in_b);
  v1::GetWorkflowResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(Stub(kAdminToken)->GetWorkflow(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.phase(), v1::WORKFLOW_PHASE_WAITING);
}

TEST_F(AuthServerTest, IncidentsOutsideTheNamespacesAreDeniedNamingTheField) {
  v1::DiagnoseIncidentRequest req;
  req.set_pod_name("web-1");
  req.set_namespace_("team-b");
  req.set_error_type("OOMKilled");
  v1::DiagnoseIncidentResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = Stub(kViewerAToken)->DiagnoseIncident(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("namespace team-b"));
}

TEST_F(AuthServerTest, AnAgentForProdCannotOpenASessionAsStaging) {
  auto agent = Stub(kAgentToken);
  grpc::Status s;
  std::vector<v1::ResolveResponse> out =
      RunStream(*agent, {Hello("staging")}, &s);
  EXPECT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_rejected());
  EXPECT_EQ(out[0].rejected().code(),
            static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
  EXPECT_THAT(out[0].rejected().message(),
              HasSubstr("hello.cluster: principal agent-prod may not access "
                        "cluster staging"));
  // Its own cluster is welcome.
  out = RunStream(*agent, {Hello("prod")}, &s);
  ASSERT_GE(out.size(), 1u);
  EXPECT_TRUE(out[0].has_welcome()) << out[0].DebugString();
  // An operator runs no sessions.
  out = RunStream(*Stub(kOperatorToken), {Hello("prod")}, &s);
  ASSERT_GE(out.size(), 1u);
  ASSERT_TRUE(out[0].has_rejected());
  EXPECT_THAT(out[0].rejected().message(),
              HasSubstr("Resolve hello needs role agent"));
}

TEST_F(AuthServerTest, AnAgentsStreamCannotDecideOrApprove) {
  auto [id, waiting] = Waiting("default");
  ASSERT_EQ(waiting.status(), v1::WORKFLOW_STATUS_WAITING);
  for (v1::HumanDecision::Kind kind :
       {v1::HumanDecision::KIND_APPROVE, v1::HumanDecision::KIND_RETRY}) {
    v1::ResolveRequest r;
    r.mutable_decision()->set_workflow_id(id);
    r.mutable_decision()->set_etag(waiting.etag());
    r.mutable_decision()->mutable_decision()->set_kind(kind);
    r.mutable_decision()->mutable_decision()->set_strategy(
        "create_missing_config");
    grpc::Status s;
    std::vector<v1::ResolveResponse> out =
        RunStream(*Stub(kAgentToken), {Hello("prod"), r}, &s);
    bool denied = false;
    for (const auto& m : out) {
      if (m.has_rejected() && m.rejected().workflow_id() == id) {
        denied = true;
        EXPECT_EQ(m.rejected().code(),
                  static_cast<int>(grpc::StatusCode::PERMISSION_DENIED));
        EXPECT_THAT(m.rejected().message(),
                    HasSubstr("Resolve decision needs role operator"));
      }
    }
    EXPECT_TRUE(denied);
  }
  // Still waiting: nothing was applied.
  v1::GetWorkflowRequest req;
  req.set_workflow_id(id);
  v1::GetWorkflowResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(Stub(kAdminToken)->GetWorkflow(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.phase(), v1::WORKFLOW_PHASE_WAITING);
}

TEST_F(AuthServerTest, DecidedByIsThePrincipalWhateverTheClientSends) {
  auto [id, waiting] = Waiting("default");
  ASSERT_EQ(waiting.status(), v1::WORKFLOW_STATUS_WAITING);
  v1::ResumeWorkflowRequest req;
  req.set_workflow_id(id);
  req.set_etag(waiting.etag());
  req.mutable_decision()->set_kind(v1::HumanDecision::KIND_RETRY);
  req.mutable_decision()->set_strategy("create_missing_config");
  req.mutable_decision()->set_decided_by("somebody-else");
  v1::ResumeWorkflowResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = Stub(kOperatorToken)->ResumeWorkflow(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  WaitForResult(id, waiting.sequence() + 1);
  v1::WorkflowState state = LatestState(id);
  EXPECT_EQ(state.principal(), "ops-carol");  // who started it
  EXPECT_EQ(state.approved_by(), "ops-carol");
  EXPECT_EQ(state.final_strategy().type(), "create_missing_config");
}

TEST_F(AuthServerTest, DecisionsOnAResolveStreamAreTheCallers) {
  auto [id, waiting] = Waiting("default");
  ASSERT_EQ(waiting.status(), v1::WORKFLOW_STATUS_WAITING);
  v1::ResolveRequest r;
  r.mutable_decision()->set_workflow_id(id);
  r.mutable_decision()->set_etag(waiting.etag());
  r.mutable_decision()->mutable_decision()->set_kind(
      v1::HumanDecision::KIND_RETRY);
  r.mutable_decision()->mutable_decision()->set_strategy(
      "create_missing_config");
  r.mutable_decision()->mutable_decision()->set_decided_by("mallory");
  grpc::Status s;
  std::vector<v1::ResolveResponse> out = RunStream(*Stub(kAdminToken), {r}, &s);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_FALSE(out.empty());
  EXPECT_TRUE(out.back().has_result()) << out.back().DebugString();
  EXPECT_EQ(LatestState(id).approved_by(), "root-dave");
}

TEST_F(AuthServerTest, AForkNamingAStrategyIsApprovedByTheForker) {
  const std::string id = StartWaiting("default");
  v1::ForkWorkflowRequest req;
  req.set_workflow_id(id);
  req.set_step(0);
  req.set_strategy("create_missing_config");
  v1::ForkWorkflowResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s = Stub(kOperatorToken)->ForkWorkflow(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  WaitForResult(resp.workflow_id());
  // Its first strategy selection ran the operator's pick.
  v1::ListCheckpointsRequest lr;
  lr.set_workflow_id(resp.workflow_id());
  lr.set_include_state(true);
  v1::ListCheckpointsResponse lresp;
  grpc::ClientContext lctx;
  ASSERT_TRUE(Stub(kAdminToken)->ListCheckpoints(&lctx, lr, &lresp).ok());
  bool approved = false;
  for (const auto& cp : lresp.checkpoints()) {
    if (cp.node() == "select_strategy" &&
        cp.state().selection().strategy().name() == "create_missing_config") {
      approved = cp.state().approved_by() == "ops-carol";
    }
  }
  EXPECT_TRUE(approved);
}

TEST_F(AuthServerTest, IncidentsRecordWhoSubmittedThem) {
  v1::ProcessIncidentRequest req;
  req.set_pod_name("api-1");
  req.set_namespace_("default");
  req.set_error_type("OOMKilled");
  v1::ProcessIncidentResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  grpc::Status s = Stub(kAgentToken)->ProcessIncident(&ctx, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  v1::WorkflowState state = LatestState(resp.result().workflow_id());
  EXPECT_EQ(state.principal(), "agent-prod");
  // Not a session: the policy's default cluster.
  EXPECT_EQ(state.cluster(), "local");
  // Its submitter reads it back; another cluster's agent may not.
  v1::GetWorkflowRequest g;
  g.set_workflow_id(resp.result().workflow_id());
  v1::GetWorkflowResponse gr;
  grpc::ClientContext c1;
  EXPECT_TRUE(Stub(kAgentToken)->GetWorkflow(&c1, g, &gr).ok());
  grpc::ClientContext c2;
  grpc::Status other = Stub(kAgentStagingToken)->GetWorkflow(&c2, g, &gr);
  EXPECT_EQ(other.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(other.error_message(), HasSubstr("cluster local"));
}

TEST_F(AuthServerTest, ARevokedTokenIsRefusedOnAStreamOpenedWithIt) {
  auto stub = Stub(kOperatorToken);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  auto stream = stub->Resolve(&ctx);
  v1::ResolveRequest r;
  r.mutable_incident()->set_pod_name("api-1");
  r.mutable_incident()->set_namespace_("default");
  r.mutable_incident()->set_error_type("OOMKilled");
  r.mutable_incident()->set_request_id("before");
  ASSERT_TRUE(stream->Write(r));
  v1::ResolveResponse m;
  bool result = false;
  while (!result && stream->Read(&m)) result = m.has_result();
  ASSERT_TRUE(result);
  // The operator's token leaves the file.
  std::string yaml = TokensYaml();
  const std::string hash = Sha256Hex(kOperatorToken);
  size_t at = yaml.find("  - sha256: " + hash);
  ASSERT_NE(at, std::string::npos);
  size_t next = yaml.find("  - sha256: ", at + 1);
  yaml.erase(at, next - at);
  WriteFile(tokens_, yaml);
  ASSERT_THAT(app_->auth()->CheckNow(), IsOk());
  r.mutable_incident()->set_request_id("after");
  ASSERT_TRUE(stream->Write(r));
  ASSERT_TRUE(stream->Read(&m));
  ASSERT_TRUE(m.has_rejected()) << m.DebugString();
  EXPECT_EQ(m.rejected().request_id(), "after");
  EXPECT_EQ(m.rejected().code(),
            static_cast<int>(grpc::StatusCode::UNAUTHENTICATED));
  EXPECT_EQ(m.rejected().message(), "unknown token");
  stream->WritesDone();
  while (stream->Read(&m)) {
    EXPECT_FALSE(m.has_accepted()) << "the revoked stream started a workflow";
  }
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(AuthServerTest, ATokenAddedToTheFileWorksAfterTheReload) {
  const std::string fresh = "fresh-secret-0002";
  WriteFile(tokens_, TokensYaml(absl::StrCat(
                         "  - sha256: ", Sha256Hex(fresh),
                         "\n    principal: fresh\n    role: viewer\n")));
  v1::GetMetricsRequest req;
  v1::GetMetricsResponse resp;
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(Stub(fresh)->GetMetrics(&ctx, req, &resp).error_message(),
              "unknown token");  // not reloaded yet
  }
  // What the reload timer does every auth.reload_interval, now (the timer
  // itself runs in AuthProcessTest, in the real binary).
  ASSERT_THAT(app_->auth()->CheckNow(), IsOk());
  grpc::ClientContext ctx;
  grpc::Status s = Stub(fresh)->GetMetrics(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
}

// ---------------------------------------------------------------------------
// TLS and mTLS with certificates made by Debian's openssl.
// ---------------------------------------------------------------------------

// Runs a shell command in `dir`; true on exit 0.
bool Run(const std::string& dir, const std::string& command) {
  std::string full =
      absl::StrCat("cd '", dir, "' && (", command, ") >>openssl.log 2>&1");
  return std::system(full.c_str()) == 0;
}

// A CA `name` (name.pem, name.key) and certificates it signs.
bool MakeCa(const std::string& dir, const std::string& name) {
  return Run(dir,
             absl::StrCat("openssl req -x509 -newkey ec -pkeyopt "
                          "ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "
                          "/CN=",
                          name, " -keyout ", name, ".key -out ", name, ".pem"));
}
bool MakeCert(const std::string& dir, const std::string& ca,
              const std::string& name, const std::string& cn,
              const std::string& san) {
  return Run(
      dir, absl::StrCat(
               "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
               "-nodes -subj /CN=",
               cn, " -keyout ", name, ".key -out ", name,
               ".csr && printf 'subjectAltName=", san, "' > ", name,
               ".ext && openssl x509 -req -days 2 -in ", name, ".csr -CA ", ca,
               ".pem -CAkey ", ca, ".key -CAcreateserial -extfile ", name,
               ".ext -out ", name, ".pem"));
}

class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    d_ = dir_.path();
    ASSERT_TRUE(MakeCa(d_, "ca")) << ReadFile(d_ + "/openssl.log");
    ASSERT_TRUE(
        MakeCert(d_, "ca", "server", "localhost", "DNS:localhost,IP:127.0.0.1"))
        << ReadFile(d_ + "/openssl.log");
    ASSERT_TRUE(
        MakeCert(d_, "ca", "alice", "ops-alice", "URI:spiffe://test/alice"));
    ASSERT_TRUE(MakeCert(d_, "ca", "eve", "eve", "DNS:eve.example"));
    WriteFile(d_ + "/tokens.yaml", TokensYaml("identities:\n"
                                              "  - subject: \"CN=ops-alice\"\n"
                                              "    principal: alice\n"
                                              "    role: viewer\n"));
  }
  void TearDown() override { app_.reset(); }

  void StartServer(bool mtls, int reload_seconds = 60,
                   bool anonymous_health = true) {
    ServerConfig c;
    c.auth_anonymous_health = anonymous_health;
    c.host = "127.0.0.1";
    c.port = 0;
    c.data_dir = d_ + "/data";
    c.worker_threads = 2;
    c.tls_cert_file = d_ + "/server.pem";
    c.tls_key_file = d_ + "/server.key";
    if (mtls) c.tls_client_ca_file = d_ + "/ca.pem";
    c.tls_reload_interval = absl::Seconds(reload_seconds);
    c.auth_tokens_file = d_ + "/tokens.yaml";
    app_ = std::make_unique<App>(c);
    ASSERT_THAT(app_->Start(), IsOk());
    target_ = absl::StrCat("127.0.0.1:", app_->port());
  }

  std::shared_ptr<grpc::Channel> Tls(const std::string& ca,
                                     const std::string& cert = "",
                                     const std::string& token = "") {
    client::ConnectOptions o;
    o.tls_ca_file = d_ + "/" + ca + ".pem";
    if (!cert.empty()) {
      o.tls_cert_file = d_ + "/" + cert + ".pem";
      o.tls_key_file = d_ + "/" + cert + ".key";
    }
    o.tls_server_name = "localhost";
    o.token = token;
    absl::StatusOr<std::shared_ptr<grpc::Channel>> ch =
        client::Connect(target_, o);
    CHECK(ch.ok()) << ch.status();
    return *ch;
  }

  static grpc::Status Metrics(const std::shared_ptr<grpc::Channel>& ch) {
    v1::GetMetricsRequest req;
    v1::GetMetricsResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(10));
    return v1::ReflexionService::NewStub(ch)->GetMetrics(&ctx, req, &resp);
  }

  TempDir dir_;
  std::string d_;
  std::unique_ptr<App> app_;
  std::string target_;
};

TEST_F(TlsServerTest, TlsServesTokensAndRefusesPlaintext) {
  StartServer(/*mtls=*/false);
  EXPECT_TRUE(Metrics(Tls("ca", "", kViewerToken)).ok());
  EXPECT_EQ(Metrics(Tls("ca")).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status plain = Metrics(client::Connect(target_));
  EXPECT_EQ(plain.error_code(), grpc::StatusCode::UNAVAILABLE)
      << plain.error_message();
}

TEST_F(TlsServerTest, MtlsMapsTheCertificateToItsPrincipalAndNeedsOne) {
  StartServer(/*mtls=*/true);
  auto alice = Tls("ca", "alice");
  EXPECT_TRUE(Metrics(alice).ok());
  v1::ResumeWorkflowRequest req;
  req.set_workflow_id("wf-1");
  v1::ResumeWorkflowResponse resp;
  grpc::ClientContext ctx;
  grpc::Status s =
      v1::ReflexionService::NewStub(alice)->ResumeWorkflow(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("principal alice has viewer"));
  // A certificate the CA signed but no identity names.
  grpc::Status eve = Metrics(Tls("ca", "eve"));
  EXPECT_EQ(eve.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(eve.error_message(), HasSubstr("unknown client certificate"));
  // No certificate at all: the handshake fails.
  EXPECT_EQ(Metrics(Tls("ca")).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A token still decides when one is sent.
  EXPECT_EQ(Metrics(Tls("ca", "eve", kViewerToken)).error_code(),
            grpc::StatusCode::OK);
}

TEST_F(TlsServerTest, ReplacedCertificatesServeNewConnections) {
  StartServer(/*mtls=*/false, /*reload_seconds=*/1);
  ASSERT_TRUE(MakeCa(d_, "ca2"));
  ASSERT_TRUE(MakeCert(d_, "ca2", "server2", "localhost",
                       "DNS:localhost,IP:127.0.0.1"));
  EXPECT_EQ(Metrics(Tls("ca2", "", kViewerToken)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // Replace both files (each by rename: never half written).
  std::filesystem::copy_file(d_ + "/server2.key", d_ + "/server.key.new");
  std::filesystem::copy_file(d_ + "/server2.pem", d_ + "/server.pem.new");
  std::filesystem::rename(d_ + "/server.key.new", d_ + "/server.key");
  std::filesystem::rename(d_ + "/server.pem.new", d_ + "/server.pem");
  // gRPC's provider re-reads them every tls.reload_interval (1 s here) on
  // its own thread, with no hook to wait on: one channel trusting only the
  // new CA reconnects (with gRPC's backoff) until a handshake succeeds,
  // bounded by the deadline.
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(d_ + "/ca2.pem");
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  auto ch = grpc::CreateCustomChannel(target_, grpc::SslCredentials(ssl), args);
  ASSERT_TRUE(ch->WaitForConnected(std::chrono::system_clock::now() +
                                   std::chrono::seconds(30)));
  absl::StatusOr<int> health = client::CheckHealth(*ch, "");
  ASSERT_THAT(health.status(), IsOk());
  EXPECT_EQ(*health, 1);
  // The old CA no longer verifies new connections.
  EXPECT_EQ(Metrics(Tls("ca", "", kViewerToken)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST_F(TlsServerTest, HealthAndReflectionNeedAPrincipalWhenNotAnonymous) {
  StartServer(/*mtls=*/false, 60, /*anonymous_health=*/false);
  absl::StatusOr<int> none = client::CheckHealth(*Tls("ca"), "");
  EXPECT_THAT(none.status(), StatusIs(absl::StatusCode::kUnauthenticated,
                                      HasSubstr("missing bearer token")));
  absl::StatusOr<int> wrong =
      client::CheckHealth(*Tls("ca", "", kWrongToken), "");
  EXPECT_THAT(wrong.status(),
              StatusIs(absl::StatusCode::kUnauthenticated, "unknown token"));
  absl::StatusOr<int> ok =
      client::CheckHealth(*Tls("ca", "", kViewerToken), "");
  ASSERT_THAT(ok.status(), IsOk());
  EXPECT_EQ(*ok, 1);
  // Reflection too (its bidi stream ends before any answer).
  grpc::GenericStub stub(Tls("ca"));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::CompletionQueue cq;
  auto call = stub.PrepareCall(
      &ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  void* tag;
  bool ok_flag;
  ASSERT_TRUE(cq.Next(&tag, &ok_flag));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(2));
  while (cq.Next(&tag, &ok_flag) && tag != reinterpret_cast<void*>(2)) {
  }
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok_flag)) {
  }
  // The service's own RPCs are unchanged.
  EXPECT_TRUE(Metrics(Tls("ca", "", kViewerToken)).ok());
  // Without TLS the key is refused at start.
  ServerConfig c;
  c.auth_anonymous_health = false;
  c.auth_tokens_file = d_ + "/tokens.yaml";
  EXPECT_THAT(CheckListenSecurity(c),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("auth.anonymous_health")));
}

// ---------------------------------------------------------------------------
// Secrets are never logged: the real binary, its whole log.
// ---------------------------------------------------------------------------

// Every value of every column family of the RocksDB at `dir`, concatenated
// (opened read-only after the server stopped).
std::string EveryStoredValue(const std::string& dir) {
  std::vector<std::string> names;
  rocksdb::Status s =
      rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir, &names);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& n : names) {
    families.emplace_back(n, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  s = rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir, families,
                                   &handles, &raw);
  EXPECT_TRUE(s.ok()) << s.ToString();
  std::string all;
  if (!s.ok()) return all;
  std::unique_ptr<rocksdb::DB> db(raw);
  for (rocksdb::ColumnFamilyHandle* h : handles) {
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), h));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      absl::StrAppend(&all, it->key().ToString(), "\n", it->value().ToString(),
                      "\n");
    }
  }
  for (rocksdb::ColumnFamilyHandle* h : handles) {
    (void)db->DestroyColumnFamilyHandle(h);
  }
  return all;
}

TEST(AuthProcessTest, NoTokenOrPodSecretIsInTheServerLogOrItsDatabase) {
  const std::string dir = MakeTempDir();
  const std::string tokens = dir + "/tokens.yaml";
  WriteFile(tokens, TokensYaml());
  const std::string config = dir + "/config.yaml";
  WriteFile(config, absl::StrCat("service:\n  shutdown_drain: 0\nauth:\n"
                                 "  tokens_file: ",
                                 tokens, "\n  reload_interval: 0.1\n"));
  {
    ServerProcess server(dir, config);
    ASSERT_GT(server.port(), 0) << ReadFile(dir + "/server.log");
    const std::string target = absl::StrCat("127.0.0.1:", server.port());
    for (const char* token : {kViewerToken, kOperatorToken, kWrongToken}) {
      client::ConnectOptions o;
      o.token = token;
      auto stub = v1::ReflexionService::NewStub(*client::Connect(target, o));
      v1::ProcessIncidentRequest req;
      req.set_pod_name("api-1");
      req.set_namespace_("default");
      req.set_error_type("OOMKilled");
      req.set_error_message(absl::StrCat("token=", kWrongToken));
      // Secrets in the pod's words: redacted before anything is stored.
      req.set_logs(
          "connecting with password=hunter2-s3cret-pw\n"
          "Authorization: Bearer tok-abcdef0123456789abcdef\n"
          "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY\n");
      v1::ProcessIncidentResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
      grpc::Status s = stub->ProcessIncident(&ctx, req, &resp);
      EXPECT_THAT(s.error_message(), Not(HasSubstr(token)));
    }
    EXPECT_EQ(server.Terminate(), 0);
  }
  // Neither the log nor anything stored (checkpoints, events, episodes, the
  // audit log) holds a token or a secret of the pod's.
  const std::string log = ReadFile(dir + "/server.log");
  EXPECT_THAT(log, HasSubstr("authentication on"));
  const std::string stored = EveryStoredValue(dir + "/data");
  EXPECT_THAT(stored, HasSubstr("api-1"));  // the incidents are there
  for (const char* secret :
       {kAgentToken, kViewerToken, kOperatorToken, kAdminToken, kViewerAToken,
        kAgentStagingToken, kOperatorAToken, kWrongToken, "hunter2-s3cret-pw",
        "tok-abcdef0123456789abcdef",
        "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << secret << " in the log";
    EXPECT_EQ(stored.find(secret), std::string::npos)
        << secret << " in the database";
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace reflexion::server

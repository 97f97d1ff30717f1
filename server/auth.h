#pragma once

// Authentication and authorization of reflexion.v1 callers: bearer tokens
// (their SHA-256 in a YAML file, reloaded when it changes) and verified
// client certificate identities (mTLS), mapped to principals with a role
// and an optional cluster/namespace scope.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/graph/task_runner.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/server_context.h"

namespace reflexion::server {

// What a principal may do. viewer < operator < admin is a hierarchy (each
// may do everything the one before may). agent is separate: it runs agent
// sessions and submits incidents, and reads workflows of its clusters.
enum class Role { kAgent, kViewer, kOperator, kAdmin };

// "agent", "viewer", "operator", "admin".
absl::string_view RoleName(Role role);
// The inverse of RoleName; false for anything else.
bool ParseRole(absl::string_view name, Role* role);

// Who is calling.
struct Principal {
  std::string name;
  Role role = Role::kViewer;
  // Clusters / namespaces it may act on; empty means all.
  std::vector<std::string> clusters;
  std::vector<std::string> namespaces;
  // False for the anonymous principal of a server without authentication.
  bool authenticated = false;

  bool AllowsCluster(absl::string_view cluster) const;
  bool AllowsNamespace(absl::string_view ns) const;
  // Whether the role includes `needed`: admin includes every role; operator
  // includes viewer; agent only itself.
  bool Has(Role needed) const;

  // Principal{name="anonymous", role=kAdmin, authenticated=false}: every
  // caller of a server without authentication.
  static Principal Anonymous();
};

// The role a reflexion.v1.ReflexionService method needs ("GetWorkflow" or
// the full "/reflexion.v1.ReflexionService/GetWorkflow"), for principals of
// the viewer < operator < admin hierarchy. An unknown method needs admin
// (fail closed: ClearMemory, Backup and any method added without an entry).
// Table (also in reflexion.proto and README):
//   viewer:   GetWorkflow WatchWorkflow ListCheckpoints ListStrategies
//             ListEpisodes GetMetrics ListBreakers ListAudit DiagnoseIncident
//             GetStrategyHistory ListPatterns
//   operator: Resolve ProcessIncident StartWorkflow ResumeWorkflow
//             CancelWorkflow ForkWorkflow UndoAction ClearBreaker
//             SimulateReflection
Role RequiredRole(absl::string_view rpc_method);

// Whether an agent principal may call `rpc_method` at all: Resolve,
// ProcessIncident, StartWorkflow, DiagnoseIncident, GetWorkflow,
// WatchWorkflow (scoped to its clusters and namespaces).
bool AgentMayCall(absl::string_view rpc_method);

// OK when `principal` has `needed` (Principal::Has), or is an agent and
// AgentMayCall(rpc) with `needed` no higher than operator. Otherwise
// kPermissionDenied naming both roles, e.g. "ResumeWorkflow needs role
// operator; principal viewer-bob has viewer". `rpc` names the operation
// in the message ("Resolve decision" for a decision on a stream).
absl::Status Authorize(const Principal& principal, Role needed,
                       absl::string_view rpc);

// Scope checks: kPermissionDenied naming the field and value when the
// principal's lists exclude it, e.g. "incident.namespace: principal
// viewer-a may not access namespace b".
absl::Status AuthorizeNamespace(const Principal& principal,
                                absl::string_view ns, absl::string_view field);
absl::Status AuthorizeCluster(const Principal& principal,
                              absl::string_view cluster,
                              absl::string_view field);

// The lowercase hex SHA-256 of `data` (OpenSSL libcrypto EVP).
std::string Sha256Hex(absl::string_view data);

// The principals a tokens file defines (see Authenticator).
struct AuthTable {
  struct Token {
    uint8_t sha256[32];
    Principal principal;
  };
  // How a client certificate identity is matched: `subject` against the
  // x509_subject auth property (RFC 2253, as gRPC prints it, e.g.
  // "CN=ops-alice,O=Example"), `common_name` against x509_common_name,
  // `dns` / `uri` against one of the certificate's DNS / URI SANs.
  struct Identity {
    std::string scheme;  // subject | common_name | dns | uri
    std::string value;
    Principal principal;
  };
  std::vector<Token> tokens;
  std::vector<Identity> identities;
};

// Parses a tokens file (YAML):
//   tokens:
//     - sha256: <64 lowercase hex of the token>   # never the token itself
//       principal: agent-prod       # [A-Za-z0-9._@-], 1..128 characters
//       role: agent                 # agent | viewer | operator | admin
//       clusters: [prod]            # optional, empty = all (DNS-1123 labels)
//       namespaces: [payments]      # optional, empty = all (DNS-1123 labels)
//   identities:
//     - subject: "CN=ops-alice"     # or common_name: / dns: / uri:
//       principal: alice
//       role: operator
// Strict: unknown keys, a missing or malformed field, a bad role, a hash
// or an identity given twice are kInvalidArgument naming the entry
// ("tokens[2].role: ..."). Both sections are optional. Several tokens may
// name one principal (rotation). Never throws.
absl::StatusOr<AuthTable> ParseAuthTable(const std::string& yaml_text);

struct AuthenticatorOptions {
  // auth.tokens_file: the YAML above ("" = no tokens, no identities).
  std::string tokens_file;
  // tls.client_ca_file is set: the transport verifies client certificates,
  // whose identities then authenticate (by the file's identities).
  bool client_certificates = false;
  // How often the tokens file is checked for changes (auth.reload_interval;
  // needs a timer).
  absl::Duration reload_interval = absl::Seconds(5);
};

// Authenticates callers from their metadata and transport. Enabled when a
// tokens file or client certificates are configured; disabled, every caller
// is Principal::Anonymous(). Thread-safe.
class Authenticator {
 public:
  // Loads the tokens file (kInvalidArgument / kNotFound naming the file and
  // entry: the server refuses to start). With a `timer` (may be null; must
  // outlive this object) the file is re-checked every reload_interval: a
  // change of its mtime or size reloads it; a bad new file keeps the old
  // table and logs why.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(
      AuthenticatorOptions options, graph::Timer* timer = nullptr);
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  // Whether authentication is on (tokens file or client certificates).
  bool enabled() const { return enabled_; }

  // The caller of `ctx`: a bearer token from metadata `authorization:
  // Bearer <token>` when one is sent, else the verified client certificate
  // identity from ctx.auth_context(). kUnauthenticated "missing bearer
  // token (metadata authorization: Bearer ...)" without credentials,
  // "unknown token" for a token that is not configured (never echoed),
  // "unknown client certificate identity ..." for a certificate that maps
  // to no principal. Disabled: Principal::Anonymous().
  absl::StatusOr<Principal> Authenticate(
      const grpc::ServerContextBase& ctx) const;
  // The same from the parts (for tests and other transports): the
  // `authorization` metadata value ("" = none) and the auth context (may be
  // null).
  absl::StatusOr<Principal> Authenticate(absl::string_view authorization,
                                         const grpc::AuthContext* auth) const;

  // Checks the tokens file now (what the timer does): reloads it when its
  // mtime or size changed. Returns the load's error (the old table stays)
  // or OK (reloaded or unchanged).
  absl::Status CheckNow();
  // Successful loads since Create (1 after Create with a tokens file).
  int64_t loads() const;

 private:
  struct Guard;
  Authenticator(AuthenticatorOptions options, graph::Timer* timer);
  absl::Status Load();
  void Schedule();

  const AuthenticatorOptions options_;
  const bool enabled_;
  graph::Timer* const timer_;
  std::shared_ptr<Guard> guard_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const AuthTable> table_ ABSL_GUARDED_BY(mu_);
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t size_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t loads_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t timer_id_ ABSL_GUARDED_BY(mu_) = 0;
};

// auth.anonymous_health: false. Runs for every call on a TLS connection
// (gRPC 1.51 applies AuthMetadataProcessors to secure credentials only) and
// refuses calls of grpc.health.v1.Health and server reflection whose caller
// does not authenticate (UNAUTHENTICATED as Authenticator::Authenticate);
// every other call passes (its handler checks it). `auth` must outlive it.
class ProtectedServicesProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit ProtectedServicesProcessor(const Authenticator* auth)
      : auth_(auth) {}
  // Authentication is a hash and a table lookup: run inline.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata,
                       grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const Authenticator* auth_;
};

// TLS files: readable PEM, the key matching the certificate, the CA (may
// be "") holding at least one certificate. kInvalidArgument naming the key
// (tls.cert_file, tls.key_file, tls.client_ca_file) and file.
absl::Status CheckTlsFiles(const std::string& cert_file,
                           const std::string& key_file,
                           const std::string& ca_file);

// Whether `host` (service.host) is a loopback address: localhost,
// 127.0.0.0/8, ::1.
bool IsLoopbackHost(absl::string_view host);

}  // namespace reflexion::server

#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/reflexion/validation.h"
#include "glog/logging.h"
#include "yaml-cpp/yaml.h"

namespace reflexion::server {

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kAgent:
      return "agent";
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

bool ParseRole(absl::string_view name, Role* role) {
  for (Role r : {Role::kAgent, Role::kViewer, Role::kOperator, Role::kAdmin}) {
    if (name == RoleName(r)) {
      *role = r;
      return true;
    }
  }
  return false;
}

namespace {
bool ListAllows(const std::vector<std::string>& list, absl::string_view v) {
  return list.empty() || std::find(list.begin(), list.end(), v) != list.end();
}

// The method name of "/reflexion.v1.ReflexionService/GetWorkflow".
absl::string_view MethodName(absl::string_view rpc) {
  size_t slash = rpc.rfind('/');
  return slash == absl::string_view::npos ? rpc : rpc.substr(slash + 1);
}
}  // namespace

bool Principal::AllowsCluster(absl::string_view cluster) const {
  return ListAllows(clusters, cluster);
}

bool Principal::AllowsNamespace(absl::string_view ns) const {
  return ListAllows(namespaces, ns);
}

bool Principal::Has(Role needed) const {
  if (role == Role::kAdmin) return true;
  if (role == Role::kAgent || needed == Role::kAgent) return role == needed;
  return static_cast<int>(role) >= static_cast<int>(needed);
}

Principal Principal::Anonymous() {
  Principal p;
  p.name = "anonymous";
  p.role = Role::kAdmin;
  p.authenticated = false;
  return p;
}

Role RequiredRole(absl::string_view rpc_method) {
  const absl::string_view m = MethodName(rpc_method);
  for (absl::string_view viewer :
       {"GetWorkflow", "WatchWorkflow", "ListCheckpoints", "ListStrategies",
        "ListEpisodes", "GetMetrics", "ListBreakers", "ListAudit",
        "DiagnoseIncident", "GetStrategyHistory", "ListPatterns"}) {
    if (m == viewer) return Role::kViewer;
  }
  for (absl::string_view op :
       {"Resolve", "ProcessIncident", "StartWorkflow", "ResumeWorkflow",
        "CancelWorkflow", "ForkWorkflow", "UndoAction", "ClearBreaker",
        "SimulateReflection", "RollbackStrategy"}) {
    if (m == op) return Role::kOperator;
  }
  return Role::kAdmin;
}

bool AgentMayCall(absl::string_view rpc_method) {
  const absl::string_view m = MethodName(rpc_method);
  for (absl::string_view a :
       {"Resolve", "ProcessIncident", "StartWorkflow", "DiagnoseIncident",
        "GetWorkflow", "WatchWorkflow"}) {
    if (m == a) return true;
  }
  return false;
}

absl::Status Authorize(const Principal& principal, Role needed,
                       absl::string_view rpc) {
  if (principal.Has(needed)) return absl::OkStatus();
  if (principal.role == Role::kAgent && needed != Role::kAdmin &&
      AgentMayCall(rpc)) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(absl::StrCat(
      rpc, " needs role ", RoleName(needed),
      principal.role == Role::kAgent && needed != Role::kAgent
          ? " (agents may not)"
          : "",
      "; principal ", principal.name, " has ", RoleName(principal.role)));
}

absl::Status AuthorizeNamespace(const Principal& principal,
                                absl::string_view ns, absl::string_view field) {
  if (principal.AllowsNamespace(ns)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      field, ": principal ", principal.name, " may not access namespace ",
      core::IsDns1123Label(ns) ? std::string(ns) : absl::CHexEscape(ns)));
}

absl::Status AuthorizeCluster(const Principal& principal,
                              absl::string_view cluster,
                              absl::string_view field) {
  if (principal.AllowsCluster(cluster)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      field, ": principal ", principal.name, " may not access cluster ",
      core::IsDns1123Label(cluster) ? std::string(cluster)
                                    : absl::CHexEscape(cluster)));
}

namespace {
// SHA-256 of `data` into `out`.
void Sha256(absl::string_view data, uint8_t out[32]) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  CHECK(ctx != nullptr);
  unsigned int len = 0;
  CHECK(EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1);
  CHECK(EVP_DigestUpdate(ctx, data.data(), data.size()) == 1);
  CHECK(EVP_DigestFinal_ex(ctx, out, &len) == 1);
  CHECK_EQ(len, 32u);
  EVP_MD_CTX_free(ctx);
}
}  // namespace

std::string Sha256Hex(absl::string_view data) {
  uint8_t digest[32];
  Sha256(data, digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

namespace {

std::string Quote(absl::string_view s) { return absl::CHexEscape(s); }

absl::Status Bad(absl::string_view where, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", why));
}

bool IsPrincipalName(absl::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '@' && c != '-') {
      return false;
    }
  }
  return true;
}

// A scalar string field of an entry.
absl::Status ReadString(const YAML::Node& n, absl::string_view where,
                        std::string& out) {
  if (!n.IsScalar()) return Bad(where, "must be a string");
  out = n.Scalar();
  return absl::OkStatus();
}

// A list of DNS-1123 labels (a sequence of scalars, no duplicates).
absl::Status ReadLabels(const YAML::Node& n, absl::string_view where,
                        std::vector<std::string>& out) {
  if (n.IsNull()) return absl::OkStatus();
  if (!n.IsSequence()) return Bad(where, "must be a list of names");
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string at = absl::StrCat(where, "[", i, "]");
    std::string v;
    if (absl::Status s = ReadString(n[i], at, v); !s.ok()) return s;
    if (!core::IsDns1123Label(v)) {
      return Bad(at, absl::StrCat("'", Quote(v), "' is not a DNS-1123 label"));
    }
    if (!seen.insert(v).second) return Bad(at, "is given twice");
    out.push_back(std::move(v));
  }
  return absl::OkStatus();
}

// The entry's principal, role, clusters and namespaces; `extra` lists the
// entry's other allowed keys (its credential), read by the caller.
absl::Status ReadEntry(const YAML::Node& entry, absl::string_view where,
                       const std::vector<absl::string_view>& extra,
                       Principal& p) {
  if (!entry.IsMap()) return Bad(where, "must be a mapping");
  absl::flat_hash_set<std::string> keys;
  bool has_principal = false, has_role = false;
  for (const auto& kv : entry) {
    if (!kv.first.IsScalar()) return Bad(where, "keys must be strings");
    const std::string key = kv.first.Scalar();
    const std::string at = absl::StrCat(where, ".", Quote(key));
    if (!keys.insert(key).second) return Bad(at, "is given twice");
    if (key == "principal") {
      if (absl::Status s = ReadString(kv.second, at, p.name); !s.ok()) return s;
      if (!IsPrincipalName(p.name)) {
        return Bad(at,
                   "must be 1 to 128 characters of letters, digits, . _ @ -");
      }
      has_principal = true;
    } else if (key == "role") {
      std::string role;
      if (absl::Status s = ReadString(kv.second, at, role); !s.ok()) return s;
      if (!ParseRole(role, &p.role)) {
        return Bad(at, absl::StrCat("'", Quote(role),
                                    "' is not a role: agent, viewer, "
                                    "operator or admin"));
      }
      has_role = true;
    } else if (key == "clusters") {
      if (absl::Status s = ReadLabels(kv.second, at, p.clusters); !s.ok()) {
        return s;
      }
    } else if (key == "namespaces") {
      if (absl::Status s = ReadLabels(kv.second, at, p.namespaces); !s.ok()) {
        return s;
      }
    } else if (std::find(extra.begin(), extra.end(), key) == extra.end()) {
      return Bad(at, "is not a known key");
    }
  }
  if (!has_principal) return Bad(where, "principal: is required");
  if (!has_role) return Bad(where, "role: is required");
  p.authenticated = true;
  return absl::OkStatus();
}

bool ParseHexDigest(absl::string_view hex, uint8_t out[32]) {
  if (hex.size() != 64) return false;
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  std::string bytes = absl::HexStringToBytes(hex);
  std::memcpy(out, bytes.data(), 32);
  return true;
}

absl::Status ParseDocument(const YAML::Node& root, AuthTable& table) {
  if (root.IsNull()) return absl::OkStatus();
  if (!root.IsMap()) {
    return Bad("tokens file", "must be a mapping with tokens and identities");
  }
  absl::flat_hash_set<std::string> sections;
  for (const auto& section : root) {
    if (!section.first.IsScalar()) {
      return Bad("tokens file", "keys must be strings");
    }
    const std::string name = section.first.Scalar();
    if (!sections.insert(name).second) return Bad(Quote(name), "given twice");
    const YAML::Node& list = section.second;
    if (name != "tokens" && name != "identities") {
      return Bad(Quote(name), "is not a known key (tokens, identities)");
    }
    if (list.IsNull()) continue;
    if (!list.IsSequence()) return Bad(name, "must be a list");
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string where = absl::StrCat(name, "[", i, "]");
      const YAML::Node& entry = list[i];
      if (name == "tokens") {
        AuthTable::Token t;
        if (absl::Status s = ReadEntry(entry, where, {"sha256"}, t.principal);
            !s.ok()) {
          return s;
        }
        const YAML::Node hash = entry["sha256"];
        std::string hex;
        if (!hash.IsDefined()) return Bad(where, "sha256: is required");
        if (absl::Status s = ReadString(hash, where + ".sha256", hex);
            !s.ok()) {
          return s;
        }
        if (!ParseHexDigest(hex, t.sha256)) {
          return Bad(where + ".sha256",
                     "must be 64 lowercase hex digits (the SHA-256 of the "
                     "token, e.g. from `printf %s TOKEN | sha256sum`)");
        }
        for (size_t j = 0; j < table.tokens.size(); ++j) {
          if (std::memcmp(table.tokens[j].sha256, t.sha256, 32) == 0) {
            return Bad(where + ".sha256",
                       absl::StrCat("the same token as tokens[", j, "]"));
          }
        }
        table.tokens.push_back(std::move(t));
      } else {
        AuthTable::Identity id;
        const std::vector<absl::string_view> schemes = {
            "subject", "common_name", "dns", "uri"};
        if (absl::Status s = ReadEntry(entry, where, schemes, id.principal);
            !s.ok()) {
          return s;
        }
        for (absl::string_view scheme : schemes) {
          const YAML::Node v = entry[std::string(scheme)];
          if (!v.IsDefined()) continue;
          if (!id.scheme.empty()) {
            return Bad(where,
                       "give exactly one of subject, common_name, dns, uri");
          }
          id.scheme = std::string(scheme);
          const std::string at = absl::StrCat(where, ".", scheme);
          if (absl::Status s = ReadString(v, at, id.value); !s.ok()) return s;
          if (id.value.empty() || id.value.size() > 1024) {
            return Bad(at, "must be 1 to 1024 characters");
          }
        }
        if (id.scheme.empty()) {
          return Bad(where, "give one of subject, common_name, dns, uri");
        }
        for (size_t j = 0; j < table.identities.size(); ++j) {
          if (table.identities[j].scheme == id.scheme &&
              table.identities[j].value == id.value) {
            return Bad(where, absl::StrCat("the same ", id.scheme,
                                           " as identities[", j, "]"));
          }
        }
        table.identities.push_back(std::move(id));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AuthTable> ParseAuthTable(const std::string& yaml_text) {
  AuthTable table;
  try {
    if (absl::Status s = ParseDocument(YAML::Load(yaml_text), table); !s.ok()) {
      return s;
    }
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid YAML: ", Quote(e.what())));
  }
  return table;
}

struct Authenticator::Guard {
  absl::Mutex mu;
  Authenticator* self ABSL_GUARDED_BY(mu) = nullptr;
};

Authenticator::Authenticator(AuthenticatorOptions options, graph::Timer* timer)
    : options_(std::move(options)),
      enabled_(!options_.tokens_file.empty() || options_.client_certificates),
      timer_(timer),
      guard_(std::make_shared<Guard>()),
      table_(std::make_shared<AuthTable>()) {}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(
    AuthenticatorOptions options, graph::Timer* timer) {
  std::unique_ptr<Authenticator> a(
      new Authenticator(std::move(options), timer));
  if (!a->options_.tokens_file.empty()) {
    if (absl::Status s = a->Load(); !s.ok()) return s;
    if (a->timer_ != nullptr &&
        a->options_.reload_interval > absl::ZeroDuration()) {
      {
        absl::MutexLock lock(&a->guard_->mu);
        a->guard_->self = a.get();
      }
      a->Schedule();
    }
  }
  return a;
}

Authenticator::~Authenticator() {
  {
    // After this no timer callback touches us (one running has finished).
    absl::MutexLock lock(&guard_->mu);
    guard_->self = nullptr;
  }
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    id = timer_id_;
  }
  if (timer_ != nullptr && id != 0) timer_->Cancel(id);
}

void Authenticator::Schedule() {
  // Runs on the timer thread: a stat, and a read of a small file when it
  // changed.
  uint64_t id = timer_->After(options_.reload_interval, [guard = guard_] {
    absl::MutexLock lock(&guard->mu);
    if (guard->self == nullptr) return;
    if (absl::Status s = guard->self->CheckNow(); !s.ok()) {
      LOG(ERROR) << "auth.tokens_file: keeping the previous tokens: " << s;
    }
    guard->self->Schedule();
  });
  absl::MutexLock lock(&mu_);
  timer_id_ = id;
}

absl::Status Authenticator::Load() {
  const std::string& path = options_.tokens_file;
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("auth.tokens_file: cannot read ", path));
  }
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("auth.tokens_file: cannot read ", path));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  absl::StatusOr<AuthTable> table = ParseAuthTable(buf.str());
  const int64_t mtime =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 +
      st.st_mtim.tv_nsec;
  absl::MutexLock lock(&mu_);
  // Remembered also for a bad file: it is reported once, not every poll.
  mtime_ns_ = mtime;
  size_ = static_cast<int64_t>(st.st_size);
  if (!table.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "auth.tokens_file ", path, ": ", table.status().message()));
  }
  table_ = std::make_shared<const AuthTable>(*std::move(table));
  ++loads_;
  LOG(INFO) << "auth.tokens_file " << path << ": " << table_->tokens.size()
            << " token(s), " << table_->identities.size() << " identit"
            << (table_->identities.size() == 1 ? "y" : "ies");
  return absl::OkStatus();
}

absl::Status Authenticator::CheckNow() {
  if (options_.tokens_file.empty()) return absl::OkStatus();
  struct stat st;
  if (stat(options_.tokens_file.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("auth.tokens_file: cannot read ", options_.tokens_file));
  }
  const int64_t mtime =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 +
      st.st_mtim.tv_nsec;
  {
    absl::MutexLock lock(&mu_);
    if (mtime == mtime_ns_ && static_cast<int64_t>(st.st_size) == size_) {
      return absl::OkStatus();
    }
  }
  return Load();
}

int64_t Authenticator::loads() const {
  absl::MutexLock lock(&mu_);
  return loads_;
}

absl::StatusOr<Principal> Authenticator::Authenticate(
    const grpc::ServerContextBase& ctx) const {
  if (!enabled_) return Principal::Anonymous();
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  absl::string_view authorization;
  if (it != md.end()) {
    authorization = absl::string_view(it->second.data(), it->second.size());
  }
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  return Authenticate(authorization, auth.get());
}

absl::StatusOr<Principal> Authenticator::Authenticate(
    absl::string_view authorization, const grpc::AuthContext* auth) const {
  if (!enabled_) return Principal::Anonymous();
  std::shared_ptr<const AuthTable> table;
  {
    absl::MutexLock lock(&mu_);
    table = table_;
  }
  if (!authorization.empty()) {
    // Case-insensitive scheme (RFC 6750); the token is never echoed.
    constexpr absl::string_view kBearer = "bearer ";
    if (authorization.size() <= kBearer.size() ||
        !absl::EqualsIgnoreCase(authorization.substr(0, kBearer.size()),
                                kBearer)) {
      return absl::UnauthenticatedError(
          "metadata authorization: expected 'Bearer <token>'");
    }
    absl::string_view token =
        absl::StripAsciiWhitespace(authorization.substr(kBearer.size()));
    uint8_t digest[32];
    Sha256(token, digest);
    // Constant time: every entry is compared in full, whatever matches.
    const Principal* found = nullptr;
    for (const AuthTable::Token& t : table->tokens) {
      if (CRYPTO_memcmp(t.sha256, digest, sizeof(digest)) == 0) {
        found = &t.principal;
      }
    }
    if (found == nullptr) return absl::UnauthenticatedError("unknown token");
    return *found;
  }
  if (options_.client_certificates && auth != nullptr &&
      auth->IsPeerAuthenticated()) {
    auto values = [auth](const char* property) {
      std::vector<std::string> out;
      for (const grpc::string_ref& v : auth->FindPropertyValues(property)) {
        out.emplace_back(v.data(), v.size());
      }
      return out;
    };
    const std::vector<std::string> subject = values("x509_subject");
    const std::vector<std::string> cn = values("x509_common_name");
    // SANs: gRPC's peer_dns / peer_uri and the generic SAN list.
    std::vector<std::string> dns = values("peer_dns");
    std::vector<std::string> uri = values("peer_uri");
    for (std::string& san : values("x509_subject_alternative_name")) {
      dns.push_back(san);
      uri.push_back(std::move(san));
    }
    auto has = [](const std::vector<std::string>& list, const std::string& v) {
      return std::find(list.begin(), list.end(), v) != list.end();
    };
    for (const char* scheme : {"subject", "common_name", "uri", "dns"}) {
      const std::vector<std::string>& list =
          std::string(scheme) == "subject"       ? subject
          : std::string(scheme) == "common_name" ? cn
          : std::string(scheme) == "uri"         ? uri
                                                 : dns;
      for (const AuthTable::Identity& id : table->identities) {
        if (id.scheme == scheme && has(list, id.value)) return id.principal;
      }
    }
    return absl::UnauthenticatedError(absl::StrCat(
        "unknown client certificate identity (subject ",
        subject.empty() ? std::string("none") : Quote(subject.front()),
        "): add it to the tokens file's identities"));
  }
  return absl::UnauthenticatedError(
      "missing bearer token (metadata authorization: Bearer ...)");
}

namespace {
// The file's bytes, or kInvalidArgument naming `key`.
absl::StatusOr<std::string> ReadPem(absl::string_view key,
                                    const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, ": cannot read ", path));
  }
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioDeleter>;

Bio MemBio(const std::string& data) {
  return Bio(BIO_new_mem_buf(data.data(), static_cast<int>(data.size())));
}
}  // namespace

absl::Status CheckTlsFiles(const std::string& cert_file,
                           const std::string& key_file,
                           const std::string& ca_file) {
  absl::StatusOr<std::string> cert = ReadPem("tls.cert_file", cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem("tls.key_file", key_file);
  if (!key.ok()) return key.status();
  Bio cb = MemBio(*cert);
  std::unique_ptr<X509, X509Deleter> x509(
      PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
  if (x509 == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls.cert_file: ", cert_file, " holds no PEM certificate"));
  }
  Bio kb = MemBio(*key);
  std::unique_ptr<EVP_PKEY, KeyDeleter> pkey(
      PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr));
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tls.key_file: ", key_file,
        " holds no PEM private key (an encrypted key is not supported)"));
  }
  if (X509_check_private_key(x509.get(), pkey.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls.key_file: ", key_file,
                     " is not the key of the certificate in ", cert_file));
  }
  if (!ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("tls.client_ca_file", ca_file);
    if (!ca.ok()) return ca.status();
    Bio ab = MemBio(*ca);
    std::unique_ptr<X509, X509Deleter> root(
        PEM_read_bio_X509(ab.get(), nullptr, nullptr, nullptr));
    if (root == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tls.client_ca_file: ", ca_file, " holds no PEM certificate"));
    }
  }
  return absl::OkStatus();
}

grpc::Status ProtectedServicesProcessor::Process(
    const InputMetadata& auth_metadata, grpc::AuthContext* context,
    OutputMetadata*, OutputMetadata*) {
  absl::string_view path;
  absl::string_view authorization;
  for (const auto& [key, value] : auth_metadata) {
    const absl::string_view k(key.data(), key.size());
    if (k == ":path") path = absl::string_view(value.data(), value.size());
    if (k == "authorization") {
      authorization = absl::string_view(value.data(), value.size());
    }
  }
  if (!absl::StartsWith(path, "/grpc.health.v1.Health/") &&
      !absl::StartsWith(path, "/grpc.reflection.")) {
    return grpc::Status::OK;
  }
  absl::StatusOr<Principal> who = auth_->Authenticate(authorization, context);
  if (who.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      std::string(who.status().message()));
}

bool IsLoopbackHost(absl::string_view host) {
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost" || host == "::1") return true;
  std::vector<absl::string_view> parts = absl::StrSplit(host, '.');
  if (parts.size() != 4 || parts[0] != "127") return false;
  for (absl::string_view p : parts) {
    int v = 0;
    if (p.empty() || p.size() > 3 || !absl::SimpleAtoi(p, &v) || v < 0 ||
        v > 255) {
      return false;
    }
  }
  return true;
}

}  // namespace reflexion::server

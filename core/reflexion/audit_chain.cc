#include "core/reflexion/audit_chain.h"

#include <openssl/evp.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "core/reflexion/redact.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message.h"

namespace reflexion::core {
namespace {

namespace v1 = ::reflexion::v1;
namespace pb = ::google::protobuf;

// Timestamp range of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31.
constexpr int64_t kMinSeconds = -62'135'596'800;
constexpr int64_t kMaxSeconds = 253'402'300'799;

std::string Sanitize(absl::string_view value, size_t max_bytes) {
  // RedactSecrets makes its input valid UTF-8 first; clipping after it
  // never cuts a marker's character.
  return std::string(ClipUtf8(RedactSecrets(value), max_bytes));
}

// Every string field of `m`, recursively (singular, repeated, nested).
void SanitizeStrings(pb::Message* m, bool top_level) {
  const pb::Descriptor* d = m->GetDescriptor();
  const pb::Reflection* r = m->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->type() == pb::FieldDescriptor::TYPE_STRING) {
      const size_t max = top_level && f->name() == "detail"
                             ? kMaxAuditDetailBytes
                             : kMaxAuditFieldBytes;
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(*m, f); ++j) {
          r->SetRepeatedString(m, f, j,
                               Sanitize(r->GetRepeatedString(*m, f, j), max));
        }
      } else if (!r->GetString(*m, f).empty()) {
        r->SetString(m, f, Sanitize(r->GetString(*m, f), max));
      }
    } else if (f->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
      if (f->is_repeated()) {
        for (int j = 0; j < r->FieldSize(*m, f); ++j) {
          SanitizeStrings(r->MutableRepeatedMessage(m, f, j), false);
        }
      } else if (r->HasField(*m, f)) {
        SanitizeStrings(r->MutableMessage(m, f), false);
      }
    }
  }
}

std::string Hex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

// A hash shortened for a message ("ab12cd34…").
std::string Short(absl::string_view hash) {
  if (hash.empty()) return "(empty)";
  if (hash.size() <= 8) return std::string(hash);
  return absl::StrCat(ClipUtf8(hash, 8), "…");
}

// "entry 20 missing" or "entries 20..22 missing" for [from, to).
std::string Missing(uint64_t from, uint64_t to) {
  if (to == from + 1) return absl::StrCat("entry ", from, " missing");
  return absl::StrCat("entries ", from, "..", to - 1, " missing");
}

}  // namespace

std::string AuditHash(const v1::AuditEntry& entry) {
  v1::AuditEntry copy = entry;
  copy.clear_hash();
  std::string bytes;
  {
    pb::io::StringOutputStream raw(&bytes);
    pb::io::CodedOutputStream out(&raw);
    out.SetSerializationDeterministic(true);
    // Cannot fail: every field is valid (strings were made valid UTF-8).
    CHECK(copy.SerializeToCodedStream(&out));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  CHECK_EQ(EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(),
                      nullptr),
           1)
      << "SHA-256 failed";
  return Hex(digest, size);
}

absl::Status SanitizeAuditEntry(v1::AuditEntry* entry) {
  if (entry->kind() == v1::AuditEntry::KIND_UNSPECIFIED ||
      !v1::AuditEntry::Kind_IsValid(entry->kind())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "kind: must be a known AuditEntry.Kind, not ", entry->kind()));
  }
  if (!v1::AuditEntry::Decider_IsValid(entry->decider())) {
    return absl::InvalidArgumentError(
        absl::StrCat("decider: unknown value ", entry->decider()));
  }
  if (!v1::SafetyTier_IsValid(entry->tier())) {
    return absl::InvalidArgumentError(
        absl::StrCat("tier: unknown value ", entry->tier()));
  }
  if (!v1::PolicyMode_IsValid(entry->mode())) {
    return absl::InvalidArgumentError(
        absl::StrCat("mode: unknown value ", entry->mode()));
  }
  if (!entry->has_time()) {
    return absl::InvalidArgumentError("time: must be set (by the caller)");
  }
  if (entry->time().seconds() < kMinSeconds ||
      entry->time().seconds() > kMaxSeconds || entry->time().nanos() < 0 ||
      entry->time().nanos() > 999'999'999) {
    return absl::InvalidArgumentError(
        "time: not a valid timestamp (years 1 to 9999)");
  }
  if (entry->action().restore_size() > kMaxAuditRestoreValues) {
    return absl::InvalidArgumentError(
        absl::StrCat("action.restore: at most ", kMaxAuditRestoreValues,
                     " values, not ", entry->action().restore_size()));
  }
  entry->clear_seq();
  entry->clear_prev_hash();
  entry->clear_hash();
  SanitizeStrings(entry, true);
  return absl::OkStatus();
}

v1::AuditAnchor GenesisAnchor() {
  v1::AuditAnchor a;
  a.set_seq(0);
  a.set_hash(std::string(kAuditGenesisHash));
  return a;
}

AuditChainVerifier::AuditChainVerifier(const v1::AuditAnchor& anchor)
    : anchor_seq_(anchor.seq()), seq_(anchor.seq()), hash_(anchor.hash()) {}

bool AuditChainVerifier::Add(const v1::AuditEntry& entry) {
  if (!result_.ok) return false;
  const uint64_t seq = entry.seq();
  if (seq != seq_ + 1) {
    if (seq <= seq_) {
      Fail(seq,
           absl::StrCat("entry ", seq, ": out of order (after ", seq_, ")"));
    } else {
      Fail(seq_ + 1, absl::StrCat(Missing(seq_ + 1, seq), " (after ",
                                  seq_ == anchor_seq_ ? "the anchor " : "",
                                  seq_, " comes ", seq, ")"));
    }
    return false;
  }
  const std::string computed = AuditHash(entry);
  if (computed != entry.hash()) {
    Fail(seq, absl::StrCat("entry ", seq, ": hash mismatch (stored ",
                           Short(entry.hash()), ", computed ", Short(computed),
                           "): the entry was altered"));
    return false;
  }
  if (entry.prev_hash() != hash_) {
    Fail(seq,
         seq_ == anchor_seq_
             ? absl::StrCat("entry ", seq,
                            ": prev_hash does not match the anchor")
             : absl::StrCat("entry ", seq, ": prev_hash does not match entry ",
                            seq_, "'s hash"));
    return false;
  }
  seq_ = seq;
  hash_ = entry.hash();
  ++result_.checked;
  return true;
}

void AuditChainVerifier::Fail(uint64_t seq, std::string problem) {
  if (!result_.ok) return;
  result_.ok = false;
  result_.first_bad_seq = seq;
  result_.problem = std::move(problem);
}

AuditVerification AuditChainVerifier::Finish(uint64_t last_seq) {
  if (result_.ok && last_seq > seq_) {
    Fail(seq_ + 1,
         absl::StrCat(Missing(seq_ + 1, last_seq + 1), " (the log ends at ",
                      seq_, ", its last seq is ", last_seq, ")"));
  }
  return result_;
}

AuditVerification VerifyChain(const v1::AuditAnchor& anchor,
                              const std::vector<v1::AuditEntry>& entries) {
  AuditChainVerifier verifier(anchor);
  for (const v1::AuditEntry& e : entries) {
    if (!verifier.Add(e)) break;
  }
  return verifier.result();
}

}  // namespace reflexion::core

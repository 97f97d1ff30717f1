// The audit hash chain (core/reflexion/audit_chain.h): the hash is SHA-256
// of the deterministic bytes, and VerifyChain names the first broken link.

#include "core/reflexion/audit_chain.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reflexion::core {
namespace {

namespace v1 = ::reflexion::v1;
using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(AuditHashTest, IsTheSha256OfTheDeterministicBytesWithoutTheHash) {
  v1::AuditEntry e;
  e.set_kind(v1::AuditEntry::KIND_ACTION);  // serialises as 18 01
  e.set_hash("ignored");
  // python3 -c "import hashlib;print(hashlib.sha256(b'\x18\x01').hexdigest())"
  EXPECT_EQ(AuditHash(e),
            "d8ffb41f9785cc166ba6d923dd209402959c6dcdf797a4fd526a4cf77aec289d");
}

TEST(AuditHashTest, ChangesWithAnyField) {
  v1::AuditEntry e;
  e.set_kind(v1::AuditEntry::KIND_ACTION);
  const std::string before = AuditHash(e);
  e.set_namespace_("default");
  EXPECT_NE(AuditHash(e), before);
  EXPECT_EQ(AuditHash(e).size(), 64u);
}

// A chain of `n` entries after `anchor`, correctly linked.
std::vector<v1::AuditEntry> Chain(const v1::AuditAnchor& anchor, int n) {
  std::vector<v1::AuditEntry> out;
  std::string prev = anchor.hash();
  for (int i = 1; i <= n; ++i) {
    v1::AuditEntry e;
    e.set_seq(anchor.seq() + i);
    e.set_kind(v1::AuditEntry::KIND_OUTCOME);
    e.set_detail(absl::StrCat("entry ", i));
    e.set_prev_hash(prev);
    e.set_hash(AuditHash(e));
    prev = e.hash();
    out.push_back(e);
  }
  return out;
}

TEST(VerifyChainTest, AnIntactChainIsOkFromTheGenesisAndFromAnAnchor) {
  AuditVerification v = VerifyChain(GenesisAnchor(), Chain(GenesisAnchor(), 4));
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.checked, 4u);
  v1::AuditAnchor anchor;
  anchor.set_seq(41);
  anchor.set_hash(std::string(64, 'a'));
  v = VerifyChain(anchor, Chain(anchor, 3));
  EXPECT_TRUE(v.ok) << v.problem;
  EXPECT_EQ(v.checked, 3u);
  EXPECT_TRUE(VerifyChain(anchor, {}).ok);
}

TEST(VerifyChainTest, NamesAnAlteredEntryWithBothHashes) {
  std::vector<v1::AuditEntry> chain = Chain(GenesisAnchor(), 4);
  const std::string stored = chain[2].hash();
  chain[2].set_detail("rewritten");
  AuditVerification v = VerifyChain(GenesisAnchor(), chain);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 3u);
  EXPECT_EQ(v.checked, 2u);
  EXPECT_EQ(v.problem,
            absl::StrCat("entry 3: hash mismatch (stored ", stored.substr(0, 8),
                         "…, computed ", AuditHash(chain[2]).substr(0, 8),
                         "…): the entry was altered"));
}

TEST(VerifyChainTest, NamesAMissingEntryAndAMissingFirstEntry) {
  std::vector<v1::AuditEntry> chain = Chain(GenesisAnchor(), 5);
  std::vector<v1::AuditEntry> gap = chain;
  gap.erase(gap.begin() + 2);
  EXPECT_EQ(VerifyChain(GenesisAnchor(), gap).problem,
            "entry 3 missing (after 2 comes 4)");
  gap.erase(gap.begin() + 2);  // now 1, 2, 5
  EXPECT_EQ(VerifyChain(GenesisAnchor(), gap).problem,
            "entries 3..4 missing (after 2 comes 5)");
  std::vector<v1::AuditEntry> headless(chain.begin() + 1, chain.end());
  AuditVerification v = VerifyChain(GenesisAnchor(), headless);
  EXPECT_EQ(v.first_bad_seq, 1u);
  EXPECT_EQ(v.problem, "entry 1 missing (after the anchor 0 comes 2)");
}

TEST(VerifyChainTest, NamesTheLinkAfterARehashedEntryAndAForgedAnchorLink) {
  std::vector<v1::AuditEntry> chain = Chain(GenesisAnchor(), 4);
  chain[1].set_principal("mallory");
  chain[1].set_hash(AuditHash(chain[1]));
  EXPECT_EQ(VerifyChain(GenesisAnchor(), chain).problem,
            "entry 3: prev_hash does not match entry 2's hash");
  v1::AuditAnchor other;
  other.set_seq(0);
  other.set_hash(std::string(64, 'b'));
  EXPECT_EQ(VerifyChain(other, Chain(GenesisAnchor(), 2)).problem,
            "entry 1: prev_hash does not match the anchor");
}

TEST(VerifyChainTest, NamesEntriesOutOfOrder) {
  std::vector<v1::AuditEntry> chain = Chain(GenesisAnchor(), 3);
  std::swap(chain[1], chain[2]);
  EXPECT_THAT(VerifyChain(GenesisAnchor(), chain).problem,
              StartsWith("entry 2 missing (after 1 comes 3)"));
  chain = Chain(GenesisAnchor(), 3);
  chain.push_back(chain[0]);
  EXPECT_EQ(VerifyChain(GenesisAnchor(), chain).problem,
            "entry 1: out of order (after 3)");
}

TEST(AuditChainVerifierTest, FinishNamesACutTail) {
  AuditChainVerifier verifier(GenesisAnchor());
  for (const v1::AuditEntry& e : Chain(GenesisAnchor(), 3)) {
    ASSERT_TRUE(verifier.Add(e));
  }
  AuditVerification v = verifier.Finish(4);
  EXPECT_FALSE(v.ok);
  EXPECT_EQ(v.first_bad_seq, 4u);
  EXPECT_EQ(v.problem,
            "entry 4 missing (the log ends at 3, its last seq is 4)");
  AuditChainVerifier whole(GenesisAnchor());
  for (const v1::AuditEntry& e : Chain(GenesisAnchor(), 3)) whole.Add(e);
  EXPECT_TRUE(whole.Finish(3).ok);
}

TEST(SanitizeAuditEntryTest, RedactsEveryStringAndClearsTheChainFields) {
  v1::AuditEntry e;
  e.set_kind(v1::AuditEntry::KIND_DECISION);
  e.mutable_time()->set_seconds(1);
  e.set_seq(7);
  e.set_hash("x");
  e.set_outcome("token=abcd1234efgh");
  e.set_detail("Authorization: Bearer abc123def456ghi");
  ASSERT_TRUE(SanitizeAuditEntry(&e).ok());
  EXPECT_EQ(e.seq(), 0u);
  EXPECT_TRUE(e.hash().empty());
  EXPECT_THAT(e.outcome(), HasSubstr("[REDACTED:"));
  EXPECT_THAT(e.detail(), HasSubstr("Bearer [REDACTED:"));
}

}  // namespace
}  // namespace reflexion::core

#include "storage/rocksdb_policy_state_store.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "reflexion/v1/reflexion.pb.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"
#include "storage/rocksdb_status.h"

namespace reflexion::storage {
namespace {
constexpr char kKey[] = "meta/open_breakers";
}  // namespace

absl::Status RocksDbPolicyStateStore::SaveBreakers(
    const std::vector<reflexion::v1::BreakerState>& open) {
  reflexion::v1::ListBreakersResponse all;
  for (const auto& b : open) *all.add_breakers() = b;
  rocksdb::WriteBatch batch;
  rocksdb::Status s = batch.Put(kKey, all.SerializeAsString());
  if (s.ok()) {
    rocksdb::WriteOptions sync;
    sync.sync = true;
    s = db_->Write(sync, &batch);
  }
  return FromRocksDbStatus(
      s, absl::StrCat("write the open breakers in ", db_->dir()));
}

absl::StatusOr<std::vector<reflexion::v1::BreakerState>>
RocksDbPolicyStateStore::LoadBreakers() const {
  std::string value;
  rocksdb::Status s = db_->db()->Get(rocksdb::ReadOptions(), kKey, &value);
  if (s.IsNotFound()) return std::vector<reflexion::v1::BreakerState>();
  if (!s.ok()) {
    return FromRocksDbStatus(
        s, absl::StrCat("read the open breakers in ", db_->dir()));
  }
  reflexion::v1::ListBreakersResponse all;
  if (!all.ParseFromString(value)) {
    return absl::DataLossError(absl::StrCat("the open breakers stored in ",
                                            db_->dir(), " do not decode"));
  }
  return std::vector<reflexion::v1::BreakerState>(all.breakers().begin(),
                                                  all.breakers().end());
}

}  // namespace reflexion::storage

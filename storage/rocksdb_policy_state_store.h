#pragma once

#include <vector>

#include "core/ports/policy_state_store.h"
#include "storage/rocksdb_db.h"

namespace reflexion::storage {

// The open breakers as one ListBreakersResponse under "meta/open_breakers"
// in the default column family, written with sync. `db` must outlive it.
class RocksDbPolicyStateStore final : public core::PolicyStateStore {
 public:
  explicit RocksDbPolicyStateStore(RocksDb* db) : db_(db) {}
  absl::Status SaveBreakers(
      const std::vector<reflexion::v1::BreakerState>& open) override;
  absl::StatusOr<std::vector<reflexion::v1::BreakerState>> LoadBreakers()
      const override;

 private:
  RocksDb* db_;
};

}  // namespace reflexion::storage

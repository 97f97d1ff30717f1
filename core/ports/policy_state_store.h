#pragma once

#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "reflexion/v1/types.pb.h"

namespace reflexion::core {

// Where the policy's durable state lives: the open blast-radius breakers,
// so that a restart does not silently resume automation a human has not
// cleared. Adapter: RocksDbPolicyStateStore (storage/). Thread-safe.
class PolicyStateStore {
 public:
  virtual ~PolicyStateStore() = default;
  // Replaces the stored set of open breakers; durable when it returns OK.
  virtual absl::Status SaveBreakers(
      const std::vector<reflexion::v1::BreakerState>& open) = 0;
  // The stored set (empty when none was ever saved).
  virtual absl::StatusOr<std::vector<reflexion::v1::BreakerState>>
  LoadBreakers() const = 0;
};

}  // namespace reflexion::core

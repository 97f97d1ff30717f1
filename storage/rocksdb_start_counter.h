#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "storage/rocksdb_db.h"

namespace reflexion::storage {

// Counts the starts of the server on one data directory: returns 1 on a new
// database, then 2, 3, ... — durably (the new count is fsync'd before it is
// returned), so numbers are never reused, also after a crash. The server
// builds its workflow ids from it (unique across restarts without a clock
// or a random tag, so runs with fixed seeds replay). Storage errors are
// returned (a stored count that does not decode is kDataLoss). Not for
// concurrent use on one database (one server per directory).
absl::StatusOr<uint64_t> NextStartNumber(RocksDb& db);

}  // namespace reflexion::storage

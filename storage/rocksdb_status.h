#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "rocksdb/status.h"

namespace reflexion::storage {

// Converts a RocksDB status to an absl::Status: the one place the storage
// layer does so. `what` names the failed operation and its input (e.g.
// "open RocksDB at /var/lib/reflexion", "read stats key \"sig\\000s\"") and
// prefixes the message. OK stays OK.
//
// Mapping: NotFound -> kNotFound, Corruption -> kDataLoss, InvalidArgument ->
// kInvalidArgument, NotSupported -> kUnimplemented, IOError -> kUnavailable
// (kResourceExhausted when out of space), Busy / TryAgain / Incomplete /
// ShutdownInProgress -> kUnavailable, TimedOut / Expired ->
// kDeadlineExceeded, Aborted -> kAborted, CompactionTooLarge ->
// kResourceExhausted, anything else -> kInternal.
absl::Status FromRocksDbStatus(const rocksdb::Status& status,
                               absl::string_view what);

}  // namespace reflexion::storage

#include "storage/rocksdb_status.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace reflexion::storage {

absl::Status FromRocksDbStatus(const rocksdb::Status& status,
                               absl::string_view what) {
  if (status.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat(what, ": ", status.ToString());
  using Code = rocksdb::Status::Code;
  switch (status.code()) {
    case Code::kNotFound:
      return absl::NotFoundError(message);
    case Code::kCorruption:
      return absl::DataLossError(message);
    case Code::kInvalidArgument:
      return absl::InvalidArgumentError(message);
    case Code::kNotSupported:
      return absl::UnimplementedError(message);
    case Code::kIOError:
      if (status.IsNoSpace()) return absl::ResourceExhaustedError(message);
      // Includes a DB directory locked by another process or handle.
      return absl::UnavailableError(message);
    case Code::kBusy:
    case Code::kTryAgain:
    case Code::kIncomplete:
    case Code::kShutdownInProgress:
      return absl::UnavailableError(message);
    case Code::kTimedOut:
    case Code::kExpired:
      return absl::DeadlineExceededError(message);
    case Code::kAborted:
      return absl::AbortedError(message);
    case Code::kCompactionTooLarge:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace reflexion::storage

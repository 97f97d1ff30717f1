#include "storage/rocksdb_start_counter.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "rocksdb/db.h"
#include "storage/rocksdb_status.h"

namespace reflexion::storage {
namespace {
// In the default column family, as a decimal string.
constexpr char kKey[] = "meta/starts";
}  // namespace

absl::StatusOr<uint64_t> NextStartNumber(RocksDb& db) {
  std::string value;
  rocksdb::Status s = db.db()->Get(rocksdb::ReadOptions(), kKey, &value);
  uint64_t starts = 0;
  if (s.ok()) {
    if (!absl::SimpleAtoi(value, &starts)) {
      return absl::DataLossError(absl::StrCat("the start counter in ", db.dir(),
                                              " does not decode: \"",
                                              absl::CEscape(value), "\""));
    }
  } else if (!s.IsNotFound()) {
    return FromRocksDbStatus(
        s, absl::StrCat("read the start counter in ", db.dir()));
  }
  ++starts;
  rocksdb::WriteOptions sync;
  sync.sync = true;
  s = db.db()->Put(sync, kKey, absl::StrCat(starts));
  if (!s.ok()) {
    return FromRocksDbStatus(
        s, absl::StrCat("write the start counter in ", db.dir()));
  }
  return starts;
}

}  // namespace reflexion::storage

#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace reflexion::testing {

// A fresh, empty directory under the gtest temp dir, removed (with its
// contents) on destruction. Unique per process and object.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = absl::StrCat(::testing::TempDir(), "reflexion_storage_test_",
                         getpid(), "_", counter.fetch_add(1));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace reflexion::testing

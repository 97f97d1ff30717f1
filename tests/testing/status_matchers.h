#pragma once

#include "core/status_macros.h"

// gtest helpers for absl::Status (Debian's absl ships no status matchers).

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace reflexion::testing {

inline const absl::Status& GetStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& GetStatus(const absl::StatusOr<T>& s) {
  return s.status();
}

// EXPECT_THAT(status_or, IsOk());
MATCHER(IsOk, "is OK") {
  const absl::Status& s = GetStatus(arg);
  if (!s.ok()) *result_listener << "status is " << s;
  return s.ok();
}

// EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound));
MATCHER_P(StatusIs, code, "has status code " + ::testing::PrintToString(code)) {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code;
}

// EXPECT_THAT(status, StatusIs(code, HasSubstr("pod_name")));
MATCHER_P2(StatusIs, code, message_matcher, "has status code and message") {
  const absl::Status& s = GetStatus(arg);
  *result_listener << "status is " << s;
  return s.code() == code &&
         ::testing::Matches(message_matcher)(std::string(s.message()));
}

}  // namespace reflexion::testing

#define REFLEXION_ASSERT_OK(expr) \
  ASSERT_THAT((expr), ::reflexion::testing::IsOk())
#define REFLEXION_EXPECT_OK(expr) \
  EXPECT_THAT((expr), ::reflexion::testing::IsOk())
#define REFLEXION_ASSERT_OK_AND_ASSIGN(lhs, expr)             \
  auto REFLEXION_STATUS_CONCAT(statusor_, __LINE__) = (expr); \
  ASSERT_THAT(REFLEXION_STATUS_CONCAT(statusor_, __LINE__),   \
              ::reflexion::testing::IsOk());                  \
  lhs = std::move(*REFLEXION_STATUS_CONCAT(statusor_, __LINE__))

#pragma once

// Status propagation helpers. Debian's absl (20220623) has neither
// RETURN_IF_ERROR nor ASSIGN_OR_RETURN, so the project defines its own once.

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define REFLEXION_RETURN_IF_ERROR(expr)                    \
  do {                                                     \
    ::absl::Status reflexion_status_ = (expr);             \
    if (!reflexion_status_.ok()) return reflexion_status_; \
  } while (0)

#define REFLEXION_STATUS_CONCAT_INNER(a, b) a##b
#define REFLEXION_STATUS_CONCAT(a, b) REFLEXION_STATUS_CONCAT_INNER(a, b)

// REFLEXION_ASSIGN_OR_RETURN(auto x, StatusOrExpr());
#define REFLEXION_ASSIGN_OR_RETURN(lhs, expr) \
  REFLEXION_ASSIGN_OR_RETURN_IMPL(            \
      REFLEXION_STATUS_CONCAT(reflexion_statusor_, __LINE__), lhs, expr)

#define REFLEXION_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                    \
  if (!tmp.ok()) return tmp.status();                   \
  lhs = std::move(*tmp)

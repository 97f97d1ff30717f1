#pragma once

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"

namespace reflexion::core {

// Completion of an asynchronous port call. Called exactly once, on any
// thread (the caller must not assume its own thread); it must not block.
template <typename T>
using Callback = absl::AnyInvocable<void(absl::StatusOr<T>) &&>;

}  // namespace reflexion::core

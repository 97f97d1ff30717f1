#pragma once

// Runs the real reflexionctl from a test, as a user does.

#include <sys/wait.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"

namespace reflexion::server {

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs reflexionctl (REFLEXIONCTL_BINARY) with `args` (no shell
// metacharacters).
inline CommandResult RunCtl(const std::string& args) {
  const std::string command =
      absl::StrCat(REFLEXIONCTL_BINARY, " ", args, " 2>&1");
  CommandResult r;
  FILE* p = popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.output.append(buf, n);
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace reflexion::server

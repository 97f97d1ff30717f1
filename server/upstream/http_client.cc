#include "server/upstream/http_client.h"

namespace reflexion::upstream {

const char* StateName(UpstreamStats::State state) {
  switch (state) {
    case UpstreamStats::State::kClosed:
      return "closed";
    case UpstreamStats::State::kOpen:
      return "open";
    case UpstreamStats::State::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

}  // namespace reflexion::upstream

#include "core/ports/audit_log.h"

#include "core/reflexion/time_util.h"

namespace reflexion::core {

int ClampAuditPageSize(int page_size) {
  if (page_size <= 0) return 100;
  return page_size > 1000 ? 1000 : page_size;
}

bool MatchesAuditFilter(const reflexion::v1::AuditEntry& entry,
                        const AuditFilter& filter) {
  if (!filter.cluster.empty() && entry.cluster() != filter.cluster) {
    return false;
  }
  if (!filter.namespace_.empty() && entry.namespace_() != filter.namespace_) {
    return false;
  }
  if (!filter.workflow_id.empty() &&
      entry.workflow_id() != filter.workflow_id) {
    return false;
  }
  if (!filter.principal.empty() && entry.principal() != filter.principal) {
    return false;
  }
  if (filter.kind != reflexion::v1::AuditEntry::KIND_UNSPECIFIED &&
      entry.kind() != filter.kind) {
    return false;
  }
  if (filter.since.has_value() || filter.until.has_value()) {
    const absl::Time t = FromProto(entry.time());
    if (filter.since.has_value() && t < *filter.since) return false;
    if (filter.until.has_value() && t >= *filter.until) return false;
  }
  return true;
}

}  // namespace reflexion::core

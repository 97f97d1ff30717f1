// AuditLog::Append throughput on RocksDB: every append is synced to disk
// before it returns (the workflow sends an action only after its entry is
// durable), so concurrent callers are what group commit is for. Also times
// a full Verify and a List page.
//
//   ./build/bench/audit_bench [--threads 8] [--appends 500]

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/reflexion/time_util.h"
#include "glog/logging.h"
#include "storage/rocksdb_audit_log.h"
#include "storage/rocksdb_db.h"

ABSL_FLAG(int, threads, 8, "concurrent appenders");
ABSL_FLAG(int, appends, 500, "appends per thread");

namespace reflexion {
namespace {

reflexion::v1::AuditEntry MakeEntry(int t, int i) {
  reflexion::v1::AuditEntry e;
  *e.mutable_time() =
      core::ToProto(absl::FromUnixSeconds(1'700'000'000) + absl::Seconds(i));
  e.set_kind(reflexion::v1::AuditEntry::KIND_ACTION);
  e.set_principal("alice");
  e.set_cluster("prod");
  e.set_namespace_("payments");
  e.set_workload("Deployment/web");
  e.set_pod(absl::StrCat("web-", t, "-", i));
  e.set_workflow_id(absl::StrCat("wf-1-", t * 100000 + i));
  e.mutable_action()->set_type(
      reflexion::v1::ACTION_TYPE_INCREASE_MEMORY_LIMIT);
  e.mutable_action()->mutable_params()->set_memory_factor(1.5);
  e.set_tier(reflexion::v1::SAFETY_TIER_B);
  e.set_decider(reflexion::v1::AuditEntry::DECIDER_LEARNED);
  e.set_mode(reflexion::v1::POLICY_MODE_ENFORCE);
  e.set_detail("selected by Thompson sampling: mean 0.72 over 14 trials");
  return e;
}

int Run() {
  const int threads = absl::GetFlag(FLAGS_threads);
  const int appends = absl::GetFlag(FLAGS_appends);
  std::string dir =
      (std::filesystem::temp_directory_path() / "audit_bench_XXXXXX").string();
  CHECK(mkdtemp(dir.data()) != nullptr);
  {
    auto db = storage::RocksDb::Open(dir);
    CHECK(db.ok()) << db.status();
    auto log = storage::RocksDbAuditLog::Open(db->get());
    CHECK(log.ok()) << log.status();
    const absl::Time start = absl::Now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (int i = 0; i < appends; ++i) {
          auto e = (*log)->Append(MakeEntry(t, i));
          CHECK(e.ok()) << e.status();
        }
      });
    }
    for (auto& w : workers) w.join();
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    const int total = threads * appends;
    std::printf("%d synced appends from %d threads: %.2f s, %.0f appends/s\n",
                total, threads, seconds, total / seconds);
    absl::Time t0 = absl::Now();
    auto v = (*log)->Verify();
    CHECK(v.ok() && v->ok) << (v.ok() ? v->problem : v.status().ToString());
    std::printf("Verify of %llu entries: %.1f ms\n",
                static_cast<unsigned long long>(v->checked),
                absl::ToDoubleMilliseconds(absl::Now() - t0));
    t0 = absl::Now();
    core::AuditFilter f;
    f.page_size = 1000;
    auto page = (*log)->List(f);
    CHECK(page.ok()) << page.status();
    std::printf("List of a 1000-entry page: %.1f ms\n",
                absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace reflexion

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return reflexion::Run();
}

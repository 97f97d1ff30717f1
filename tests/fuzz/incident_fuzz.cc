// Fuzzes incident validation and analysis, the first things a client's
// bytes reach. The first input byte picks the mode:
//   even: protobuf wire format: a 2-byte big-endian length, that many bytes
//         of Incident, then the rest as a Diagnosis (what an executor
//         returns);
//   odd:  structured: every string field of the incident filled with
//         arbitrary bytes (as a non-C++ client or a buggy agent could send),
//         with an empty diagnosis.
// Checks: ValidateIncident returns OK or kInvalidArgument with a valid
// UTF-8 message; for a valid incident, Analyze (shallow and deep) returns an
// Analysis whose every string is valid UTF-8 (it is stored, sent and
// logged), and NeedsDeepAnalysis does not crash.

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/reflexion/analyzer.h"
#include "core/reflexion/validation.h"
#include "google/protobuf/stubs/logging.h"
#include "reflexion/v1/types.pb.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using reflexion::v1::Diagnosis;
using reflexion::v1::Incident;

// Strings up to a little past the limits of validation.h, so both sides of
// each limit are reachable.
std::string Bytes(FuzzedDataProvider& in, size_t max) {
  return in.ConsumeRandomLengthString(max);
}

void FillStructured(FuzzedDataProvider& in, Incident& incident) {
  incident.set_pod_name(Bytes(in, 300));
  incident.set_namespace_(Bytes(in, 80));
  incident.set_error_type(Bytes(in, 80));
  incident.set_error_message(Bytes(in, 5000));
  incident.set_request_id(Bytes(in, 160));
  const int containers = in.ConsumeIntegralInRange(0, 3);
  for (int i = 0; i < containers; ++i) {
    reflexion::v1::ContainerStatus* c = incident.add_container_statuses();
    c->set_name(Bytes(in, 300));
    c->set_image(Bytes(in, 600));
    c->set_restart_count(in.ConsumeIntegral<int32_t>());
    c->set_last_termination_reason(Bytes(in, 80));
    c->set_last_exit_code(in.ConsumeIntegral<int32_t>());
    c->set_waiting_reason(Bytes(in, 80));
    c->set_waiting_message(Bytes(in, 5000));
    c->set_ready(in.ConsumeBool());
  }
  const int events = in.ConsumeIntegralInRange(0, 3);
  for (int i = 0; i < events; ++i) {
    reflexion::v1::PodEvent* e = incident.add_events();
    e->set_type(in.ConsumeBool() ? "Warning" : Bytes(in, 16));
    e->set_reason(Bytes(in, 80));
    e->set_message(Bytes(in, 5000));
    e->set_count(in.ConsumeIntegral<int32_t>());
  }
  incident.set_logs(in.ConsumeRemainingBytesAsString());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Wire inputs with invalid UTF-8 strings fail to parse (proto3); the
  // parser would log an ERROR line for each, drowning the fuzzer's output.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Incident incident;
  Diagnosis diagnosis;
  if (data[0] % 2 == 0) {
    // [mode][incident length, 2 bytes big-endian][incident][diagnosis]
    if (size < 3) return 0;
    const size_t len = std::min<size_t>((data[1] << 8) | data[2], size - 3);
    if (!incident.ParseFromArray(data + 3, static_cast<int>(len))) return 0;
    if (!diagnosis.ParseFromArray(data + 3 + len,
                                  static_cast<int>(size - 3 - len))) {
      diagnosis.Clear();
    }
  } else {
    FuzzedDataProvider in(data + 1, size - 1);
    FillStructured(in, incident);
  }

  const absl::Status valid =
      reflexion::core::ValidateIncident(incident, "incident.");
  if (!valid.ok()) {
    if (valid.code() != absl::StatusCode::kInvalidArgument) __builtin_trap();
    reflexion::fuzz::CheckUtf8(valid.message(), "the validation error");
    return 0;
  }
  for (bool deep : {false, true}) {
    const reflexion::v1::Analysis analysis =
        reflexion::core::Analyze(incident, diagnosis, deep);
    reflexion::fuzz::CheckMessageUtf8(analysis,
                                      deep ? "analysis(deep)" : "analysis");
    (void)reflexion::core::NeedsDeepAnalysis(analysis);
  }
  return 0;
}

#include "server/wire.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"
#include "glog/logging.h"
#include "proto/request_traits.h"

namespace reflexion::server {

absl::Status DecodeMessage(const grpc::ByteBuffer& bytes,
                           google::protobuf::Message* message) {
  message->Clear();
  std::vector<grpc::Slice> slices;
  if (!bytes.Dump(&slices).ok()) {
    return absl::InvalidArgumentError("message: unreadable");
  }
  std::string wire;
  wire.reserve(bytes.Length());
  for (const grpc::Slice& s : slices) {
    wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
  }
  std::string error = wire::ParseOrExplain(wire, message);
  if (error.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(error);
}

grpc::ByteBuffer EncodeMessage(const google::protobuf::Message& message) {
  std::string wire = message.SerializeAsString();
  // The one check before a message is sent: a client's parser refuses
  // invalid UTF-8 (and would lose the rest of the stream).
  if (std::string bad =
          core::FindInvalidUtf8InWire(message.GetDescriptor(), wire);
      !bad.empty()) {
    std::unique_ptr<google::protobuf::Message> copy(message.New());
    copy->CopyFrom(message);
    core::RepairUtf8(copy.get());
    LOG(ERROR) << "invalid UTF-8 in " << bad << " of an outgoing "
               << message.GetDescriptor()->full_name() << " (a bug): repaired";
    wire = copy->SerializeAsString();
  }
  grpc::Slice slice(std::move(wire));
  return grpc::ByteBuffer(&slice, 1);
}

reflexion::v1::ResolveResponse AcknowledgeIncident(
    const std::string& request_id, const std::string& workflow_id,
    const absl::Status& recorded) {
  reflexion::v1::ResolveResponse r;
  if (recorded.ok()) {
    auto* a = r.mutable_accepted();
    a->set_request_id(request_id);
    a->set_workflow_id(workflow_id);
  } else {
    // Not recorded, so it will not run: no events, no result.
    auto* rej = r.mutable_rejected();
    rej->set_request_id(request_id);
    rej->set_workflow_id(workflow_id);
    rej->set_code(static_cast<int>(recorded.code()));
    rej->set_message(std::string(recorded.message()));
  }
  return r;
}

}  // namespace reflexion::server

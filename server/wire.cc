#include "server/wire.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
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
  grpc::Slice slice(std::move(wire));
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace reflexion::server

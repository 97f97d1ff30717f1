#include "server/wire.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"

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
  if (message->ParseFromString(wire)) return absl::OkStatus();
  message->Clear();
  std::string path =
      core::FindInvalidUtf8InWire(message->GetDescriptor(), wire);
  if (!path.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": must be valid UTF-8"));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "message: does not parse as ", message->GetDescriptor()->full_name(),
      " (", wire.size(), " bytes)"));
}

grpc::ByteBuffer EncodeMessage(const google::protobuf::Message& message) {
  std::string wire = message.SerializeAsString();
  grpc::Slice slice(std::move(wire));
  return grpc::ByteBuffer(&slice, 1);
}

}  // namespace reflexion::server

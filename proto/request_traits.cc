#include "proto/request_traits.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "core/reflexion/utf8.h"
#include "google/protobuf/unknown_field_set.h"

namespace reflexion::wire {
namespace {

// The marker's field number: the largest legal one, which the contract
// never uses (a client that sends it has it removed).
constexpr int kDecodeErrorField = 536870911;

}  // namespace

std::string ParseOrExplain(const std::string& wire,
                           google::protobuf::Message* message) {
  if (message->ParseFromString(wire)) return "";
  message->Clear();
  std::string path =
      core::FindInvalidUtf8InWire(message->GetDescriptor(), wire);
  if (!path.empty()) return absl::StrCat(path, ": must be valid UTF-8");
  return absl::StrCat("message: does not parse as ",
                      message->GetDescriptor()->full_name(), " (", wire.size(),
                      " bytes)");
}

grpc::Status DeserializeRequest(grpc::ByteBuffer* buffer,
                                google::protobuf::Message* message) {
  if (buffer == nullptr) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "no request payload");
  }
  std::vector<grpc::Slice> slices;
  std::string wire;
  if (buffer->Dump(&slices).ok()) {
    wire.reserve(buffer->Length());
    for (const grpc::Slice& s : slices) {
      wire.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  buffer->Clear();
  std::string error = ParseOrExplain(wire, message);
  google::protobuf::UnknownFieldSet* unknown =
      message->GetReflection()->MutableUnknownFields(message);
  if (error.empty()) {
    if (!unknown->empty()) unknown->DeleteByNumber(kDecodeErrorField);
  } else {
    unknown->AddLengthDelimited(kDecodeErrorField, error);
  }
  return grpc::Status::OK;
}

std::string DecodeError(const google::protobuf::Message& message) {
  const google::protobuf::UnknownFieldSet& unknown =
      message.GetReflection()->GetUnknownFields(message);
  for (int i = 0; i < unknown.field_count(); ++i) {
    const google::protobuf::UnknownField& f = unknown.field(i);
    if (f.number() == kDecodeErrorField &&
        f.type() == google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) {
      return f.length_delimited();
    }
  }
  return "";
}

}  // namespace reflexion::wire

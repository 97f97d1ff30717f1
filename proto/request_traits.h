#pragma once

// How the server deserializes the requests of reflexion.v1.ReflexionService.
// Included by the generated reflexion.grpc.pb.h (protoc's
// additional_header_includes, see proto/CMakeLists.txt), so every
// translation unit sees these specializations before gRPC instantiates its
// handlers.
//
// Why: for a request that does not parse (say, invalid UTF-8 in a proto3
// string), gRPC's callback handlers answer UNIMPLEMENTED with an empty
// message. Here such a request parses as an empty message carrying a marker
// (DecodeError), and the service answers INVALID_ARGUMENT naming the field.

#include <string>

#include "google/protobuf/message.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"
#include "reflexion/v1/reflexion.pb.h"

namespace reflexion::wire {

// Parses `buffer` into `message` (and clears the buffer). When it does not
// parse, `message` is left empty but for a marker holding why: DecodeError
// returns it. Always OK (a null buffer is INTERNAL).
grpc::Status DeserializeRequest(grpc::ByteBuffer* buffer,
                                google::protobuf::Message* message);

// Why `message` did not parse ("incident.pod_name: must be valid UTF-8",
// "message: does not parse as ..."), or "" when it did.
std::string DecodeError(const google::protobuf::Message& message);

// Parses `wire` into `message`; on failure returns why (as DecodeError) and
// leaves `message` cleared, else "".
std::string ParseOrExplain(const std::string& wire,
                           google::protobuf::Message* message);

}  // namespace reflexion::wire

#define REFLEXION_REQUEST_TRAITS(T)                                       \
  namespace grpc {                                                        \
  template <>                                                             \
  class SerializationTraits<T, void> {                                    \
   public:                                                                \
    static Status Serialize(const grpc::protobuf::MessageLite& msg,       \
                            ByteBuffer* bb, bool* own_buffer) {           \
      return GenericSerialize<ProtoBufferWriter, T>(msg, bb, own_buffer); \
    }                                                                     \
    static Status Deserialize(ByteBuffer* buffer, T* msg) {               \
      return ::reflexion::wire::DeserializeRequest(buffer, msg);          \
    }                                                                     \
  };                                                                      \
  }

REFLEXION_REQUEST_TRAITS(reflexion::v1::ProcessIncidentRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::DiagnoseIncidentRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::StartWorkflowRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::GetWorkflowRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::WatchWorkflowRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ResumeWorkflowRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::CancelWorkflowRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ListCheckpointsRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ForkWorkflowRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ListStrategiesRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ListEpisodesRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::GetMetricsRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ListAuditRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::UndoActionRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ListBreakersRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ClearBreakerRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::GetStrategyHistoryRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::RollbackStrategyRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ClearMemoryRequest)
REFLEXION_REQUEST_TRAITS(reflexion::v1::ListPatternsRequest)

#undef REFLEXION_REQUEST_TRAITS

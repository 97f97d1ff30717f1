#pragma once

// Protobuf messages <-> gRPC byte buffers for the methods the service reads
// as raw bytes (Resolve), so that a message that does not parse is answered
// instead of ending the call.

#include <string>

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/byte_buffer.h"
#include "reflexion/v1/reflexion.pb.h"

namespace reflexion::server {

// Parses `bytes` into `message` (cleared first). kInvalidArgument when it
// does not parse: "<field path>: must be valid UTF-8" when a string field
// holds invalid UTF-8 (the path as in validation messages, e.g.
// "incident.events[2].message"), else "message: does not parse as
// <full message name>". Thread-compatible.
absl::Status DecodeMessage(const grpc::ByteBuffer& bytes,
                           google::protobuf::Message* message);

// Serializes `message` into a byte buffer.
grpc::ByteBuffer EncodeMessage(const google::protobuf::Message& message);

// The answer to an incident on Resolve once its workflow is (or could not
// be) recorded: `accepted`, or `rejected` with the status.
reflexion::v1::ResolveResponse AcknowledgeIncident(
    const std::string& request_id, const std::string& workflow_id,
    const absl::Status& recorded);

}  // namespace reflexion::server

#pragma once

// Status helpers shared by the service's handlers (service.cc,
// safety_rpcs.cc, strategy_rpcs.cc); defined in service.cc.

#include "absl/status/status.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"

namespace reflexion::server {

// absl -> gRPC, code and message kept (the one place it is converted).
grpc::Status ToGrpcStatus(const absl::Status& status);

// Answers a request that did not parse (proto/request_traits.h) with
// INVALID_ARGUMENT naming the field; false when it parsed.
bool RefuseUndecodable(const google::protobuf::Message& request,
                       grpc::ServerUnaryReactor* reactor);

}  // namespace reflexion::server

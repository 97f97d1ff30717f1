#include "client/client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace reflexion::client {

std::shared_ptr<grpc::Channel> Connect(const std::string& target) {
  return grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

absl::Status ResolveAll(
    reflexion::v1::ReflexionService::Stub& stub,
    const std::vector<reflexion::v1::Incident>& incidents,
    const std::function<void(const reflexion::v1::ResolveResponse&)>&
        on_message,
    int timeout_seconds) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(timeout_seconds));
  auto stream = stub.Resolve(&ctx);
  for (const auto& incident : incidents) {
    reflexion::v1::ResolveRequest req;
    *req.mutable_incident() = incident;
    if (!stream->Write(req)) break;  // the server ended the stream
  }
  stream->WritesDone();
  reflexion::v1::ResolveResponse resp;
  while (stream->Read(&resp)) on_message(resp);
  return FromGrpc(stream->Finish());
}

absl::StatusOr<int> CheckHealth(grpc::Channel& channel,
                                const std::string& service,
                                int timeout_seconds) {
  auto stub = grpc::health::v1::Health::NewStub(
      std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::seconds(timeout_seconds));
  absl::Status s = FromGrpc(stub->Check(&ctx, request, &response));
  if (!s.ok()) return s;
  return static_cast<int>(response.status());
}

}  // namespace reflexion::client

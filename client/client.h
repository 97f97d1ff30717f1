#pragma once

// A small C++ client of reflexion.v1 (used by reflexionctl and the tests).

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "reflexion/v1/reflexion.grpc.pb.h"

namespace reflexion::client {

// Connects to `target` ("host:port") without TLS.
std::shared_ptr<grpc::Channel> Connect(const std::string& target);

// How to reach a server that authenticates (README "Authentication").
struct ConnectOptions {
  // Sent on every call as metadata `authorization: Bearer <token>` ("" =
  // none).
  std::string token;
  // TLS: the CA (PEM file) that the server's certificate chains to ("" =
  // plaintext).
  std::string tls_ca_file;
  // mTLS: this client's certificate and key (PEM files; both or neither).
  std::string tls_cert_file;
  std::string tls_key_file;
  // The name to check the server's certificate against, when it differs
  // from the target's host (e.g. "localhost" for 127.0.0.1).
  std::string tls_server_name;
};

// Connects to `target` with `options`. kInvalidArgument naming the option
// for a file that cannot be read, a certificate without its key, mTLS
// options without tls_ca_file, or a token that is not printable ASCII. The
// token is never logged.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(
    const std::string& target, const ConnectOptions& options);

// grpc::Status -> absl::Status (numerically equal codes).
absl::Status FromGrpc(const grpc::Status& status);

// Sends `incidents` on one Resolve stream and calls `on_message` for every
// server message as it arrives (events, results, rejections), until the
// server has answered every incident and closed the stream. Returns the
// stream's final status. Blocking; not thread-safe per call.
absl::Status ResolveAll(
    reflexion::v1::ReflexionService::Stub& stub,
    const std::vector<reflexion::v1::Incident>& incidents,
    const std::function<void(const reflexion::v1::ResolveResponse&)>&
        on_message,
    int timeout_seconds = 600);

// Calls grpc.health.v1.Health/Check for `service` ("" = the server) and
// returns the serving status (1 = SERVING, 2 = NOT_SERVING).
absl::StatusOr<int> CheckHealth(grpc::Channel& channel,
                                const std::string& service,
                                int timeout_seconds = 5);

}  // namespace reflexion::client

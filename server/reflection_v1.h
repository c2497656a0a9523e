// gRPC server reflection v1 (grpc.reflection.v1.ServerReflection) over the
// generated descriptor pool. Debian's gRPC 1.51 serves only v1alpha; tools
// that speak v1 first (grpcurl, Postman, recent grpc_cli) use this one.
//
// Every file descriptor response carries the file asked for first and then
// every file it depends on, transitively, each once. The pool holds every
// proto linked into the process, including grpc.health.v1 (linked here on
// purpose, so the health service can be described).
#ifndef MPT_SERVER_REFLECTION_V1_H_
#define MPT_SERVER_REFLECTION_V1_H_

#include <grpcpp/grpcpp.h>

#include <string>
#include <vector>

#include "proto/grpc/reflection/v1/reflection.grpc.pb.h"

namespace mpt {

// Thread-safe: holds only the service list, fixed at construction.
class ServerReflectionV1 final : public grpc::reflection::v1::ServerReflection::Service {
 public:
  // `services`: the fully qualified names list_services answers with.
  explicit ServerReflectionV1(std::vector<std::string> services);

  // Answers each request on the stream in order until the client half-closes
  // (OK) or the call is cancelled (CANCELLED).
  grpc::Status ServerReflectionInfo(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<grpc::reflection::v1::ServerReflectionResponse,
                               grpc::reflection::v1::ServerReflectionRequest>* stream) override;

  // The response to one request. Unknown files, symbols, types and
  // extensions give an error_response with NOT_FOUND; a request with no
  // message_request set, UNIMPLEMENTED.
  grpc::reflection::v1::ServerReflectionResponse Answer(
      const grpc::reflection::v1::ServerReflectionRequest& request) const;

 private:
  const std::vector<std::string> services_;
};

}  // namespace mpt

#endif  // MPT_SERVER_REFLECTION_V1_H_

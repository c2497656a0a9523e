// A gRPC server interceptor that observes every call's duration, from the
// call's start to its status, in a histogram labelled {method, code}
// (method: the full name, "/mpt.v1.JobService/GetJob"; code: the status
// code's name, "OK", "NOT_FOUND", ...). Health checks and reflection are
// counted too.
#ifndef MPT_SERVER_RPC_METRICS_H_
#define MPT_SERVER_RPC_METRICS_H_

#include <grpcpp/support/server_interceptor.h>

#include <memory>

#include "common/metrics/metrics_registry.h"

namespace mpt {

// `histogram` is borrowed and must outlive the server; its labels must be
// {method, code}.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcMetricsInterceptorFactory(HistogramFamily* histogram);

// "OK", "CANCELLED", ... "UNAUTHENTICATED"; the number for an unknown code.
std::string StatusCodeName(int code);

}  // namespace mpt

#endif  // MPT_SERVER_RPC_METRICS_H_

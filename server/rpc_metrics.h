// A gRPC server interceptor that observes every call's duration, from the
// call's start to its status, in a histogram labelled {method, code}
// (method: the full name, "/mpt.v1.JobService/GetJob"; code: the status
// code's name, "OK", "NOT_FOUND", ...). Health checks and reflection are
// counted too. A method no service here defines (a client may send any
// path, and is answered UNIMPLEMENTED before any token check) is counted as
// "unknown", so that clients cannot add label values without bound.
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

// The method label of a call to `method` ("/package.Service/Method"): the
// name itself when the linked protos define that service and method,
// "unknown" otherwise (and for null).
std::string RpcMethodLabel(const char* method);

// "OK", "CANCELLED", ... "UNAUTHENTICATED"; the number for an unknown code.
std::string StatusCodeName(int code);

}  // namespace mpt

#endif  // MPT_SERVER_RPC_METRICS_H_

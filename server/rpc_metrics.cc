#include "server/rpc_metrics.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/descriptor.h"
#include "absl/time/clock.h"

namespace mpt {
namespace {

class RpcMetricsInterceptor final : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(HistogramFamily* histogram, const char* method)
      : histogram_(histogram), method_(RpcMethodLabel(method)),
        start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      histogram_->Labels({method_, StatusCodeName(status.error_code())})
          .Observe(absl::ToDoubleSeconds(absl::Now() - start_));
    }
    methods->Proceed();
  }

 private:
  HistogramFamily* const histogram_;
  const std::string method_;
  const absl::Time start_;
};

class RpcMetricsInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsInterceptorFactory(HistogramFamily* histogram) : histogram_(histogram) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(histogram_, info->method());
  }

 private:
  HistogramFamily* const histogram_;
};

}  // namespace

std::string RpcMethodLabel(const char* method) {
  constexpr char kUnknown[] = "unknown";
  if (method == nullptr) return kUnknown;
  absl::string_view path(method);
  if (!absl::ConsumePrefix(&path, "/")) return kUnknown;
  const size_t slash = path.find('/');
  if (slash == absl::string_view::npos) return kUnknown;
  const google::protobuf::ServiceDescriptor* service =
      google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
          std::string(path.substr(0, slash)));
  if (service == nullptr || service->FindMethodByName(std::string(path.substr(slash + 1))) ==
                                nullptr) {
    return kUnknown;
  }
  return std::string(method);
}

std::string StatusCodeName(int code) {
  static const char* const kNames[] = {
      "OK",        "CANCELLED",         "UNKNOWN",        "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  if (code >= 0 && code < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) {
    return kNames[code];
  }
  return absl::StrCat(code);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
MakeRpcMetricsInterceptorFactory(HistogramFamily* histogram) {
  return std::make_unique<RpcMetricsInterceptorFactory>(histogram);
}

}  // namespace mpt

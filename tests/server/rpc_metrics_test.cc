#include "server/rpc_metrics.h"

#include <initializer_list>
#include <string>

#include "gtest/gtest.h"
#include "proto/grpc/health/v1/health.pb.h"
#include "proto/mpt/v1/service.pb.h"

namespace mpt {
namespace {

TEST(RpcMetrics, KnownMethodsAreLabelledByNameAndAnyOtherAsUnknown) {
  // Linked here, as in the coordinator.
  ASSERT_NE(mpt::v1::GetJobRequest::descriptor(), nullptr);
  ASSERT_NE(grpc::health::v1::HealthCheckRequest::descriptor(), nullptr);
  for (const char* known : {"/mpt.v1.JobService/GetJob", "/mpt.v1.WorkerService/Heartbeat",
                            "/grpc.health.v1.Health/Check"}) {
    EXPECT_EQ(RpcMethodLabel(known), known);
  }
  const std::string long_name = "/" + std::string(4096, 'a') + "/b";
  for (const char* unknown : std::initializer_list<const char*>{
           "/mpt.v1.JobService/NoSuchMethod", "/no.such.Service/GetJob", "/mpt.v1.JobService",
        "mpt.v1.JobService/GetJob", "", "/", "//", long_name.c_str(), nullptr}) {
    EXPECT_EQ(RpcMethodLabel(unknown), "unknown") << (unknown ? unknown : "null");
  }
}

TEST(RpcMetrics, StatusCodesByName) {
  EXPECT_EQ(StatusCodeName(0), "OK");
  EXPECT_EQ(StatusCodeName(16), "UNAUTHENTICATED");
  EXPECT_EQ(StatusCodeName(99), "99");
}

}  // namespace
}  // namespace mpt

#include "worker/model/device_flags.h"

#include <ATen/ATen.h>

#include <string>

#include "gtest/gtest.h"

namespace mpt {
namespace {

TEST(ParseDeviceFlag, AcceptsTheCpu) {
  auto device = ParseDeviceFlag("cpu");
  ASSERT_TRUE(device.ok()) << device.status();
  EXPECT_TRUE(device->is_cpu());
}

// One line naming the flag, without libtorch's backtrace.
TEST(ParseDeviceFlag, UnknownDeviceNamesTheFlagWithoutABacktrace) {
  auto device = ParseDeviceFlag("tpu", "--device");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(device.status().message());
  EXPECT_EQ(message.rfind("--device: tpu: ", 0), 0u) << message;
  EXPECT_EQ(message.find("Exception raised from"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(ParseDeviceFlag, RefusesACudaDeviceThatIsNotThere) {
  auto device = ParseDeviceFlag("cuda:99", "--device");
  ASSERT_FALSE(device.ok());
  EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(device.status().message());
  EXPECT_EQ(message.rfind("--device: cuda:99: ", 0), 0u) << message;
  if (!at::hasCUDA()) {
    EXPECT_NE(message.find("no CUDA"), std::string::npos) << message;
  }
}

TEST(ParseDeviceFlag, RefusesDevicesThePipelineDoesNotRunOn) {
  auto device = ParseDeviceFlag("meta", "--device");
  ASSERT_FALSE(device.ok());
  EXPECT_NE(device.status().message().find("cpu or cuda"), std::string::npos) << device.status();
}

TEST(CheckDtypeOnDevice, Float32RunsEverywhere) {
  EXPECT_TRUE(CheckDtypeOnDevice(c10::ScalarType::Float, c10::Device("cpu")).ok());
}

// float16 on the CPU: refused naming the flag exactly when this libtorch
// cannot multiply in it there (1.13 cannot; 2.x can).
TEST(CheckDtypeOnDevice, Float16OnTheCpuOnlyWhereItMultiplies) {
  bool multiplies = true;
  try {
    const at::Tensor a = at::ones({2, 2}, at::TensorOptions().dtype(at::kHalf));
    at::mm(a, a);
  } catch (const c10::Error&) {
    multiplies = false;
  }
  const absl::Status status = CheckDtypeOnDevice(c10::ScalarType::Half, c10::Device("cpu"));
  EXPECT_EQ(status.ok(), multiplies) << status;
  if (!multiplies) {
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message().rfind("--dtype: float16: ", 0), 0u) << status;
  }
}

}  // namespace
}  // namespace mpt

// The GPU metrics without a GPU: this machine has no NVIDIA driver, so NVML
// does not load and no GPU series appear. (Reading a real GPU through NVML
// is not exercised here.)
#include "common/metrics/gpu_metrics.h"

#include <string>

#include "gtest/gtest.h"

namespace mpt {
namespace {

TEST(GpuMetricsTest, WithoutNvmlOnlyTheAvailabilityGaugeShows) {
  MetricsRegistry registry;
  std::string why;
  ASSERT_TRUE(AddGpuMetrics(&registry, "/nonexistent/libnvidia-ml.so.1", &why).ok());
  EXPECT_NE(why.find("/nonexistent/libnvidia-ml.so.1"), std::string::npos) << why;
  const std::string text = registry.Render();
  EXPECT_NE(text.find("mpt_gpu_nvml_available 0\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("mpt_gpu_memory_used_bytes{"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE mpt_gpu_utilization_ratio gauge\n"), std::string::npos) << text;
}

TEST(GpuMetricsTest, ALibraryThatIsNotNvmlIsRefusedByName) {
  MetricsRegistry registry;
  std::string why;
  ASSERT_TRUE(AddGpuMetrics(&registry, "libm.so.6", &why).ok());
  EXPECT_NE(why.find("libm.so.6 lacks an NVML function"), std::string::npos) << why;
  EXPECT_NE(registry.Render().find("mpt_gpu_nvml_available 0\n"), std::string::npos);
}

TEST(GpuMetricsTest, RegisteringTwiceIsTheRegistrysError) {
  MetricsRegistry registry;
  ASSERT_TRUE(AddGpuMetrics(&registry, "/nonexistent.so").ok());
  EXPECT_EQ(AddGpuMetrics(&registry, "/nonexistent.so").code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace mpt

#include "worker/model/matmul_peak.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <exception>

#include "absl/strings/str_cat.h"

namespace mpt {

absl::StatusOr<double> MeasureMatmulPeak(const std::vector<std::array<int64_t, 3>>& shapes,
                                         c10::Device device, c10::ScalarType dtype,
                                         int min_reps) {
  if (shapes.empty()) return absl::InvalidArgumentError("matmul peak: no shapes");
  for (const auto& [m, n, k] : shapes) {
    if (m <= 0 || n <= 0 || k <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("matmul peak: shape ", m, " x ", n, " x ", k, " is not positive"));
    }
  }
  using Clock = std::chrono::steady_clock;
  try {
    at::NoGradGuard no_grad;
    const auto options = at::TensorOptions().device(device).dtype(dtype);
    const bool cuda = device.is_cuda();
    auto sync = [&] {
      if (cuda) torch::cuda::synchronize(device.has_index() ? device.index() : 0);
    };
    double best = 0;
    for (const auto& [m, n, k] : shapes) {
      at::Tensor a = at::randn({m, k}, options), b = at::randn({k, n}, options),
                 out = at::empty({m, n}, options);
      const double flops = 2.0 * m * n * k;
      // A GPU product is timed over a run of them (launches are asynchronous).
      const int inner = cuda ? std::max<int>(1, static_cast<int>(2e11 / flops)) : 1;
      const int reps =
          cuda ? std::max(min_reps, 5) : std::max<int>(min_reps, static_cast<int>(2e10 / flops));
      for (int w = 0; w < (cuda ? 3 : 1); ++w) at::mm_out(out, a, b);  // warm-up
      sync();
      for (int r = 0; r < reps; ++r) {
        const auto t0 = Clock::now();
        for (int i = 0; i < inner; ++i) at::mm_out(out, a, b);
        sync();
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (s > 0) best = std::max(best, inner * flops / s);
      }
    }
    return best;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("matmul peak: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("matmul peak: ", e.what()));
  }
}

}  // namespace mpt

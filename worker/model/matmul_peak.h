// The matrix-multiply peak of this machine as libtorch reaches it: the best
// rate of a few timed at::mm calls, the denominator of model FLOPs
// utilisation (model_flops.h). Runs with the calling process's compute
// threads (compute_threads.h), so measure after setting them.
#ifndef MPT_WORKER_MODEL_MATMUL_PEAK_H_
#define MPT_WORKER_MODEL_MATMUL_PEAK_H_

#include <array>
#include <cstdint>
#include <vector>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"

namespace mpt {

// The best FLOP/s of `[m, k] x [k, n]` products for each {m, n, k} of
// `shapes` on `device` in `dtype` (random operands; a GPU product is timed
// over a run of them after a synchronisation). `min_reps` timed repetitions
// per shape at least (a CPU shape of under 1e10 FLOPs gets more, up to
// 2e10 FLOPs' worth). INVALID_ARGUMENT for an empty or non-positive shape;
// INTERNAL with libtorch's message when a product fails (out of memory, a
// dtype the device cannot multiply). Nothing throws.
absl::StatusOr<double> MeasureMatmulPeak(const std::vector<std::array<int64_t, 3>>& shapes,
                                         c10::Device device, c10::ScalarType dtype,
                                         int min_reps = 3);

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_MATMUL_PEAK_H_

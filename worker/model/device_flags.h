// Checks of the --device and --dtype flags shared by the worker, mpt_train
// and the dump tools, so that a device or dtype this build cannot use is
// refused in one clear line instead of a libtorch dispatcher dump on the
// first tensor.
//
// Thread-safe; nothing throws.
#ifndef MPT_WORKER_MODEL_DEVICE_FLAGS_H_
#define MPT_WORKER_MODEL_DEVICE_FLAGS_H_

#include <string>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// The device a flag names ("cpu", "cuda", "cuda:1"). INVALID_ARGUMENT
// "<flag>: <value>: ..." for text libtorch does not parse (its message
// without the backtrace), for CUDA in a build or on a host without it, and
// for a CUDA index beyond the devices present.
absl::StatusOr<c10::Device> ParseDeviceFlag(const std::string& value,
                                            absl::string_view flag = "--device");

// OK when `device` can run the matrix products of a model held in `dtype`.
// On the CPU this is probed once per dtype with a 1x1 product, since
// libtorch 1.13 has no float16 products there while 2.x has; INVALID_ARGUMENT
// "<flag>: float16 ..." naming the alternatives otherwise.
absl::Status CheckDtypeOnDevice(c10::ScalarType dtype, const c10::Device& device,
                                absl::string_view flag = "--dtype");

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_DEVICE_FLAGS_H_

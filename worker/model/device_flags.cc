#include "worker/model/device_flags.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include "absl/strings/str_cat.h"
#include "worker/model/autocast.h"

namespace mpt {
namespace {

bool CpuMultipliesIn(c10::ScalarType dtype) {
  try {
    const at::Tensor a = at::ones({1, 1}, at::TensorOptions().dtype(dtype));
    at::mm(a, a);
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

}  // namespace

absl::StatusOr<c10::Device> ParseDeviceFlag(const std::string& value, absl::string_view flag) {
  try {
    const c10::Device device(value);
    if (device.is_cuda()) {
      if (!at::hasCUDA()) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, ": ", value, ": this build or host has no CUDA"));
      }
      const int64_t count = static_cast<int64_t>(at::getNumGPUs());
      if (device.has_index() && device.index() >= count) {
        return absl::InvalidArgumentError(absl::StrCat(flag, ": ", value, ": this host has ",
                                                       count, " CUDA device(s)"));
      }
    } else if (!device.is_cpu()) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, ": ", value, ": not a device this program runs on (cpu or cuda[:N])"));
    }
    return device;
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": ", value.substr(0, 64), ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", value.substr(0, 64), ": ", e.what()));
  }
}

absl::Status CheckDtypeOnDevice(c10::ScalarType dtype, const c10::Device& device,
                                absl::string_view flag) {
  if (!device.is_cpu() || dtype == c10::ScalarType::Float || dtype == c10::ScalarType::Double) {
    return absl::OkStatus();
  }
  static const bool half = CpuMultipliesIn(c10::ScalarType::Half);
  static const bool bf16 = CpuMultipliesIn(c10::ScalarType::BFloat16);
  const bool ok = dtype == c10::ScalarType::Half ? half
                  : dtype == c10::ScalarType::BFloat16 ? bf16
                                                        : true;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      flag, ": ", ProductDtypeName(dtype), ": this libtorch has no ", ProductDtypeName(dtype),
      " matrix products on the CPU; use float32", bf16 ? " or bfloat16" : "",
      " there (or a CUDA device)"));
}

}  // namespace mpt

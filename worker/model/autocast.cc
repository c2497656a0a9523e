#include "worker/model/autocast.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/grad_mode.h>
#include <torch/version.h>

#include <exception>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

namespace mpt {
namespace {

// libtorch 2.4 replaced the per-device functions by ones that take the
// device type; 1.13 (Debian's) has only the old ones.
#if TORCH_VERSION_MAJOR >= 2
bool Enabled(bool cuda) { return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU); }
void SetEnabled(bool cuda, bool on) {
  at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, on);
}
at::ScalarType Dtype(bool cuda) {
  return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU);
}
void SetDtype(bool cuda, at::ScalarType t) {
  at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, t);
}
#else
bool Enabled(bool cuda) {
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
void SetEnabled(bool cuda, bool on) {
  if (cuda) {
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_cpu_enabled(on);
  }
}
at::ScalarType Dtype(bool cuda) {
  return cuda ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void SetDtype(bool cuda, at::ScalarType t) {
  if (cuda) {
    at::autocast::set_autocast_gpu_dtype(t);
  } else {
    at::autocast::set_autocast_cpu_dtype(t);
  }
}
#endif

}  // namespace

absl::StatusOr<AutocastMode> ParseAutocast(absl::string_view name) {
  const std::string n = absl::AsciiStrToLower(name);
  if (n.empty() || n == "off") return AutocastMode::kOff;
  if (n == "bf16" || n == "bfloat16") return AutocastMode::kBf16;
  return absl::InvalidArgumentError(
      absl::StrCat("--autocast: \"", name, "\" is not one of off, bf16"));
}

absl::StatusOr<AutocastMode> SpecAutocast(absl::string_view spec_autocast,
                                          AutocastMode fallback) {
  if (spec_autocast.empty()) return fallback;
  if (spec_autocast == "off") return AutocastMode::kOff;
  if (spec_autocast == "bf16") return AutocastMode::kBf16;
  return absl::InvalidArgumentError(absl::StrCat(
      "spec.autocast: \"", spec_autocast, "\" is not a precision: \"off\" or \"bf16\""));
}

c10::ScalarType ProductDtype(c10::ScalarType model_dtype, AutocastMode mode) {
  return mode == AutocastMode::kBf16 ? c10::ScalarType::BFloat16 : model_dtype;
}

std::string AutocastName(AutocastMode mode) { return mode == AutocastMode::kBf16 ? "bf16" : "off"; }

std::string ProductDtypeName(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Float:
      return "float32";
    case c10::ScalarType::BFloat16:
      return "bfloat16";
    case c10::ScalarType::Half:
      return "float16";
    default:
      return c10::toString(dtype);
  }
}

bool CpuInfoHasNativeBf16(absl::string_view cpuinfo) {
  for (absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
    if (!absl::StartsWith(line, "flags")) continue;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    for (absl::string_view flag :
         absl::StrSplit(line.substr(colon + 1), ' ', absl::SkipWhitespace())) {
      if (flag == "avx512_bf16" || flag == "amx_bf16") return true;
    }
  }
  return false;
}

bool CpuHasNativeBf16() {
  std::ifstream in("/proc/cpuinfo");
  if (!in) return false;
  std::stringstream text;
  text << in.rdbuf();
  return CpuInfoHasNativeBf16(text.str());
}

std::string NativeBf16Hint(c10::Device device, AutocastMode mode) {
  if (!device.is_cpu() || mode != AutocastMode::kOff || !CpuHasNativeBf16()) return "";
  return "this CPU multiplies bfloat16 in hardware: --autocast=bf16 (or a job spec's "
         "autocast: \"bf16\") trains T5-sized models about twice as fast (the prompts stay "
         "fp32; docs/MEASUREMENTS.md, \"bf16 on a CPU\")";
}

double CpuBf16ProductError() {
  static const double error = [] {
    try {
      at::NoGradGuard no_grad;
      // Fixed operands (no random generator touched), rounded to bf16 once.
      const at::Tensor a =
          at::sin(at::arange(64 * 512, at::kDouble).reshape({64, 512}) * 0.7311).to(at::kBFloat16);
      const at::Tensor b =
          at::cos(at::arange(512 * 64, at::kDouble).reshape({512, 64}) * 0.5173).to(at::kBFloat16);
      const at::Tensor exact = at::mm(a.to(at::kDouble), b.to(at::kDouble));
      const at::Tensor product = at::mm(a, b).to(at::kDouble);
      return ((product - exact).norm() / exact.norm()).item<double>();
    } catch (const std::exception&) {
      return -1.0;
    }
  }();
  return error;
}

bool CpuBf16ProductsSumInFp32() {
  const double error = CpuBf16ProductError();
  return error >= 0 && error <= 0.01;
}

std::string Bf16PrecisionWarning(c10::Device device, c10::ScalarType product_dtype) {
  if (!device.is_cpu() || product_dtype != c10::ScalarType::BFloat16) return "";
  if (CpuBf16ProductsSumInFp32()) return "";
  const double error = CpuBf16ProductError();
  const std::string measured =
      error < 0 ? std::string("could not be measured")
                : absl::StrFormat(
                      "have a relative error of %.1f %% on a 512-long test product, against "
                      "about 0.2 %% with fp32 sums",
                      100 * error);
  return absl::StrCat(
      "matrix products in bfloat16 (bf16 autocast or a bf16 model) on a CPU whose bf16 products "
      "(libtorch ", TORCH_VERSION, ") keep their sums in bfloat16: they ", measured,
      ", and the error grows with the model's width; on a CPU without bf16 instructions they also "
      "run slower than fp32. Train in fp32 here (autocast off, --dtype=float32), or build against "
      "a libtorch whose bf16 products sum in fp32 (README, \"Building against another "
      "libtorch\")");
}

AutocastMode CurrentAutocast(c10::Device device) {
  if (!(device.is_cpu() || device.is_cuda())) return AutocastMode::kOff;
  const bool cuda = device.is_cuda();
  return Enabled(cuda) && Dtype(cuda) == at::kBFloat16 ? AutocastMode::kBf16 : AutocastMode::kOff;
}

AutocastScope::AutocastScope(c10::Device device, AutocastMode mode) {
  if (mode == AutocastMode::kOff || !(device.is_cpu() || device.is_cuda())) return;
  active_ = true;
  cuda_ = device.is_cuda();
  was_enabled_ = Enabled(cuda_);
  previous_dtype_ = static_cast<int>(Dtype(cuda_));
  SetDtype(cuda_, at::kBFloat16);
  SetEnabled(cuda_, true);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // The cache of casts made under autocast goes with the outermost scope.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  SetEnabled(cuda_, was_enabled_);
  SetDtype(cuda_, static_cast<at::ScalarType>(previous_dtype_));
}

}  // namespace mpt

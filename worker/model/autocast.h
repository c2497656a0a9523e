// Mixed precision for the frozen model: libtorch's autocast.
//
// `--autocast=bf16` (worker, mpt_train, stage_bench) runs the frozen T5 in
// bfloat16 where autocast allows it (matrix products, linear layers) and in
// fp32 elsewhere (softmax, the losses, the fp32 layer norms). The weights stay
// fp32 in memory; the soft prompts, their gradients and the AdamW state stay
// fp32 too, so only the model's arithmetic changes precision. `off` (the
// default) leaves everything in the model's dtype.
//
//   ASSIGN_OR_RETURN(AutocastMode mode, ParseAutocast(flag));
//   AutocastScope scope(device, mode);  // on the thread that trains
//
// Autocast is thread-local state: a scope applies to the tensor work of the
// thread that made it (the backward pass follows what the forward recorded,
// so it needs no scope of its own). bf16 autocast needs a CUDA device or the
// CPU. On a CPU the bf16 products run in libtorch's own kernels (oneDNN),
// not in BLAS: about twice as fast as fp32 where the CPU multiplies bf16 in
// hardware (CpuHasNativeBf16(); docs/MEASUREMENTS.md, "bf16 on a CPU"), usually slower
// where it does not.
#ifndef MPT_WORKER_MODEL_AUTOCAST_H_
#define MPT_WORKER_MODEL_AUTOCAST_H_

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

enum class AutocastMode { kOff, kBf16 };

// "off" (or empty) -> kOff, "bf16" (or "bfloat16") -> kBf16; anything else:
// INVALID_ARGUMENT naming the value and the choices.
absl::StatusOr<AutocastMode> ParseAutocast(absl::string_view name);

// "off" or "bf16".
std::string AutocastName(AutocastMode mode);

// A job's precision: the spec's `autocast` field when it names one, else
// `fallback` (the process's --autocast). A value ParseAutocast refuses is
// INVALID_ARGUMENT naming spec.autocast.
absl::StatusOr<AutocastMode> SpecAutocast(absl::string_view spec_autocast,
                                          AutocastMode fallback);

// The dtype a model of `model_dtype` runs its matrix products in under
// `mode`: BFloat16 under kBf16, else the model's own.
c10::ScalarType ProductDtype(c10::ScalarType model_dtype, AutocastMode mode);

// "float32", "bfloat16" or "float16" (c10's name for other types): the
// names ProgressEvent::product_dtype and the worker's peak metrics use.
std::string ProductDtypeName(c10::ScalarType dtype);

// Whether this CPU multiplies bfloat16 in hardware: /proc/cpuinfo lists
// avx512_bf16 or amx_bf16. False when that cannot be read.
bool CpuHasNativeBf16();
// The same test on the text of a /proc/cpuinfo (its "flags" lines).
bool CpuInfoHasNativeBf16(absl::string_view cpuinfo);

// A line for a program's start-up log: with autocast off on a CPU that
// multiplies bf16 in hardware, that --autocast=bf16 would train faster;
// empty otherwise.
std::string NativeBf16Hint(c10::Device device, AutocastMode mode);

// The relative error (Frobenius norm) of libtorch's bfloat16 matrix product
// on the CPU, for a fixed 64 x 512 by 512 x 64 product, against the exact
// product of the same bf16-rounded operands. About 0.002 where the
// products sum in fp32 (only the result's rounding); several percent
// where they keep their running sums in bfloat16, as Debian's libtorch 1.13
// does on a CPU without AVX-512 (docs/MEASUREMENTS.md, "bf16 products on a
// CPU without AVX-512"). Measured once per process (a few milliseconds);
// negative if the product fails.
double CpuBf16ProductError();

// Whether the CPU's bf16 products sum in fp32: CpuBf16ProductError() was
// measured and is at most 1 %.
bool CpuBf16ProductsSumInFp32();

// A warning for a program's or a stage's log when matrix products in
// `product_dtype` (ProductDtype(): bf16 under bf16 autocast or for a bf16
// model) run on a CPU whose bf16 products do not sum in fp32
// (CpuBf16ProductsSumInFp32() false): what that costs and what to do
// instead. Empty otherwise (other dtypes, CUDA, or sums in fp32).
std::string Bf16PrecisionWarning(c10::Device device, c10::ScalarType product_dtype);

// The mode this thread runs `device`'s type under now: kBf16 when autocast
// is on for it in bfloat16, kOff otherwise. A thread that starts others to
// share its work passes this on to an AutocastScope in each.
AutocastMode CurrentAutocast(c10::Device device);

// Turns autocast on for `device`'s type on this thread for its lifetime
// (nothing for kOff) and restores the previous state afterwards. Devices
// other than the CPU and CUDA: no effect. Not copyable.
class AutocastScope {
 public:
  AutocastScope(c10::Device device, AutocastMode mode);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  bool cuda_ = false;
  bool was_enabled_ = false;
  int previous_dtype_ = 0;  // c10::ScalarType
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_AUTOCAST_H_

// GPU utilisation and memory for Prometheus, read through NVML (the
// driver's libnvidia-ml.so.1, opened with dlopen at start-up, so nothing
// is needed to build and a machine without NVIDIA's driver simply has no
// GPU series):
//   mpt_gpu_nvml_available                    1 when NVML answered, else 0
//   mpt_gpu_utilization_ratio{gpu,uuid}       busy fraction of the last sample period
//   mpt_gpu_memory_used_bytes{gpu,uuid}, mpt_gpu_memory_total_bytes{gpu,uuid}
// `gpu` is NVML's index (PCI bus order, which CUDA_VISIBLE_DEVICES does not
// change) and `uuid` the device's UUID: every GPU NVML sees is exported,
// so workers sharing a host export the same GPUs; select by uuid.
#ifndef MPT_COMMON_METRICS_GPU_METRICS_H_
#define MPT_COMMON_METRICS_GPU_METRICS_H_

#include <string>

#include "absl/status/status.h"
#include "common/metrics/metrics_registry.h"

namespace mpt {

// Registers the families and, when `library` (default the driver's
// libnvidia-ml.so.1) loads and initialises, a hook that samples every GPU
// on each scrape. The NVML handle stays open for the process's life. OK
// without NVML (mpt_gpu_nvml_available is then 0; `why` says why when
// given); the registry's error otherwise.
absl::Status AddGpuMetrics(MetricsRegistry* registry,
                           const std::string& library = "libnvidia-ml.so.1",
                           std::string* why = nullptr);

}  // namespace mpt

#endif  // MPT_COMMON_METRICS_GPU_METRICS_H_

#include "common/metrics/gpu_metrics.h"

#include <dlfcn.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

// The few NVML declarations used (NVML's documented C API; its header is
// not needed to build).
using NvmlReturn = int;  // nvmlReturn_t; NVML_SUCCESS is 0
using NvmlDevice = void*;  // nvmlDevice_t
struct NvmlUtilization {  // nvmlUtilization_t
  unsigned int gpu;
  unsigned int memory;
};
struct NvmlMemory {  // nvmlMemory_t
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};
constexpr unsigned int kUuidBufferSize = 96;  // NVML_DEVICE_UUID_V2_BUFFER_SIZE

struct Nvml {
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*device_count)(unsigned int*) = nullptr;
  NvmlReturn (*device_by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*memory)(NvmlDevice, NvmlMemory*) = nullptr;
  NvmlReturn (*uuid)(NvmlDevice, char*, unsigned int) = nullptr;
};

template <class F>
bool Bind(void* handle, const char* symbol, F* out) {
  *out = reinterpret_cast<F>(dlsym(handle, symbol));
  return *out != nullptr;
}

// Loads and initialises NVML; an error saying why not.
absl::StatusOr<Nvml> OpenNvml(const std::string& library) {
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* error = dlerror();
    return absl::NotFoundError(absl::StrCat("cannot load ", library, ": ",
                                            error != nullptr ? error : "unknown error"));
  }
  Nvml n;
  if (!Bind(handle, "nvmlInit_v2", &n.init) ||
      !Bind(handle, "nvmlDeviceGetCount_v2", &n.device_count) ||
      !Bind(handle, "nvmlDeviceGetHandleByIndex_v2", &n.device_by_index) ||
      !Bind(handle, "nvmlDeviceGetUtilizationRates", &n.utilization) ||
      !Bind(handle, "nvmlDeviceGetMemoryInfo", &n.memory) ||
      !Bind(handle, "nvmlDeviceGetUUID", &n.uuid)) {
    dlclose(handle);
    return absl::NotFoundError(absl::StrCat(library, " lacks an NVML function it should have"));
  }
  const NvmlReturn r = n.init();
  if (r != 0) {
    dlclose(handle);
    return absl::UnavailableError(absl::StrCat("nvmlInit_v2 failed with NVML error ", r));
  }
  return n;  // the handle stays open for the process's life
}

}  // namespace

absl::Status AddGpuMetrics(MetricsRegistry* registry, const std::string& library,
                           std::string* why) {
  ASSIGN_OR_RETURN(GaugeFamily * available,
                   registry->AddGauge("mpt_gpu_nvml_available",
                                      "1 when NVML (NVIDIA's driver) answers, else 0."));
  ASSIGN_OR_RETURN(GaugeFamily * utilization,
                   registry->AddGauge("mpt_gpu_utilization_ratio",
                                      "Fraction of the last sample period in which a kernel ran "
                                      "on the GPU (NVML).",
                                      {"gpu", "uuid"}));
  ASSIGN_OR_RETURN(GaugeFamily * used, registry->AddGauge("mpt_gpu_memory_used_bytes",
                                                          "GPU memory in use (NVML).",
                                                          {"gpu", "uuid"}));
  ASSIGN_OR_RETURN(GaugeFamily * total, registry->AddGauge("mpt_gpu_memory_total_bytes",
                                                           "GPU memory in all (NVML).",
                                                           {"gpu", "uuid"}));
  absl::StatusOr<Nvml> nvml = OpenNvml(library);
  if (!nvml.ok()) {
    available->Labels({}).Set(0);
    if (why != nullptr) *why = std::string(nvml.status().message());
    return absl::OkStatus();
  }
  available->Labels({}).Set(1);
  const Nvml n = *nvml;
  registry->AddCollectHook([n, available, utilization, used, total] {
    unsigned int count = 0;
    if (n.device_count(&count) != 0) {
      available->Labels({}).Set(0);
      return;
    }
    available->Labels({}).Set(1);
    for (unsigned int i = 0; i < count; ++i) {
      NvmlDevice device = nullptr;
      if (n.device_by_index(i, &device) != 0) continue;
      char uuid[kUuidBufferSize] = {0};
      if (n.uuid(device, uuid, kUuidBufferSize) != 0) uuid[0] = 0;
      const std::vector<std::string> labels = {absl::StrCat(i), uuid};
      NvmlUtilization u{};
      if (n.utilization(device, &u) == 0) utilization->Labels(labels).Set(u.gpu / 100.0);
      NvmlMemory m{};
      if (n.memory(device, &m) == 0) {
        used->Labels(labels).Set(static_cast<double>(m.used));
        total->Labels(labels).Set(static_cast<double>(m.total));
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace mpt

#include "worker/model/compute_threads.h"

#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/heap_memory.h"

namespace mpt {
namespace {

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return "";
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int CgroupQuota() {
  const std::string v2 = ReadSmallFile("/sys/fs/cgroup/cpu.max");
  if (!v2.empty()) return ParseCgroupCpuMax(v2);
  int64_t quota = 0, period = 0;
  if (absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadSmallFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")), &quota) &&
      absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadSmallFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us")), &period) &&
      quota > 0 && period > 0) {
    return static_cast<int>((quota + period - 1) / period);
  }
  return 0;
}

// OpenBLAS's run-time interface, looked up in the loaded libraries.
struct OpenBlasApi {
  void (*set_num_threads)(int) = nullptr;
  int (*get_num_threads)() = nullptr;
  int (*get_parallel)() = nullptr;
  char* (*get_config)() = nullptr;
  char* (*get_corename)() = nullptr;
  // DYNAMIC_ARCH builds: the kernel selection that runs when the library
  // loads (it reads OPENBLAS_CORETYPE), and its undoing.
  void (*dynamic_init)() = nullptr;
  void (*dynamic_quit)() = nullptr;
  bool found() const { return set_num_threads != nullptr && get_num_threads != nullptr; }
};

template <typename F>
void Lookup(void* handle, const char* name, F* out) {
  if (*out == nullptr) *out = reinterpret_cast<F>(dlsym(handle, name));
}

OpenBlasApi FindOpenBlas() {
  OpenBlasApi api;
  std::vector<void*> handles = {RTLD_DEFAULT};
  // Already loaded by libtorch; RTLD_NOLOAD never loads another library.
  for (const char* name : {"libblas.so.3", "libopenblas.so.0", "libopenblas.so"}) {
    if (void* h = dlopen(name, RTLD_LAZY | RTLD_NOLOAD)) handles.push_back(h);
  }
  for (void* h : handles) {
    Lookup(h, "openblas_set_num_threads", &api.set_num_threads);
    Lookup(h, "openblas_get_num_threads", &api.get_num_threads);
    Lookup(h, "openblas_get_parallel", &api.get_parallel);
    Lookup(h, "openblas_get_config", &api.get_config);
    Lookup(h, "openblas_get_corename", &api.get_corename);
    Lookup(h, "gotoblas_dynamic_init", &api.dynamic_init);
    Lookup(h, "gotoblas_dynamic_quit", &api.dynamic_quit);
  }
  return api;
}

// Switches a DYNAMIC_ARCH OpenBLAS to its Haswell kernels where
// PreferHaswellKernels says so; returns what was done for the start-up
// line ("" when nothing).
std::string UseMeasuredBlasKernels(const OpenBlasApi& api) {
  if (api.get_corename == nullptr || api.dynamic_init == nullptr || api.dynamic_quit == nullptr) {
    return "";
  }
  // What an earlier call switched (OPENBLAS_CORETYPE is then this
  // process's own setting, not the user's).
  static std::string* const switched = new std::string;
  if (!switched->empty()) return *switched;
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  if (coretype != nullptr && *coretype != '\0') {
    // The user's choice, kept; said, since an environment that sets it
    // (for reproducible rounding, say) can halve the matrix peak.
    return absl::StrCat("kernels set by OPENBLAS_CORETYPE=", coretype);
  }
  const std::string picked = api.get_corename();
  if (!PreferHaswellKernels(ReadSmallFile("/proc/cpuinfo"), picked)) return "";
  setenv("OPENBLAS_CORETYPE", "Haswell", /*overwrite=*/1);  // unset or empty
  api.dynamic_quit();
  api.dynamic_init();
  *switched = absl::StrCat(api.get_corename(), " kernels instead of ", picked,
                           " (faster on AMD Zen 4; OPENBLAS_CORETYPE=", picked, " keeps them)");
  return *switched;
}

BlasThreading ThreadingOf(const OpenBlasApi& api) {
  if (!api.found() || api.get_parallel == nullptr) return BlasThreading::kUnknown;
  switch (api.get_parallel()) {
    case 0: return BlasThreading::kSequential;
    case 1: return BlasThreading::kOwnThreads;
    case 2: return BlasThreading::kOpenMp;
    default: return BlasThreading::kUnknown;
  }
}

// The value after "<key> : " in at::get_parallel_info()'s text (0: absent).
int ParallelInfoNumber(const std::string& info, absl::string_view key) {
  for (absl::string_view line : absl::StrSplit(info, '\n')) {
    const size_t at = line.find(key);
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = line.substr(at + key.size());
    const size_t colon = rest.find(':');
    if (colon == absl::string_view::npos) continue;
    int n = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(rest.substr(colon + 1)), &n)) return n;
  }
  return 0;
}

}  // namespace

bool PreferHaswellKernels(absl::string_view cpuinfo, absl::string_view corename) {
  if (corename != "Cooperlake" && corename != "SkylakeX") return false;
  // The first processor's block says it for all.
  bool amd = false, avx512 = false;
  int family = 0;
  for (absl::string_view line : absl::StrSplit(cpuinfo, '\n')) {
    if (line.empty()) break;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    const absl::string_view key = absl::StripAsciiWhitespace(line.substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (key == "vendor_id") {
      amd = value == "AuthenticAMD";
    } else if (key == "cpu family") {
      if (!absl::SimpleAtoi(value, &family)) family = 0;
    } else if (key == "flags") {
      for (absl::string_view flag : absl::StrSplit(value, ' ')) avx512 |= flag == "avx512f";
    }
  }
  return amd && family == 25 && avx512;
}

int64_t HostMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

const char* BlasThreadingName(BlasThreading t) {
  switch (t) {
    case BlasThreading::kSequential: return "sequential";
    case BlasThreading::kOwnThreads: return "pthreads";
    case BlasThreading::kOpenMp: return "OpenMP";
    case BlasThreading::kInLibtorch: return "inside libtorch, OpenMP";
    default: return "unknown threading";
  }
}

int CpuBudget::usable() const {
  int n = INT_MAX;
  for (int v : {hardware, affinity, quota}) {
    if (v > 0) n = std::min(n, v);
  }
  return n == INT_MAX ? 1 : n;
}

int ParseCgroupCpuMax(absl::string_view text) {
  std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(text), ' ', absl::SkipEmpty());
  if (parts.size() != 2 || parts[0] == "max") return 0;
  int64_t quota = 0, period = 0;
  if (!absl::SimpleAtoi(parts[0], &quota) || !absl::SimpleAtoi(parts[1], &period) ||
      quota <= 0 || period <= 0) {
    return 0;
  }
  return static_cast<int>((quota + period - 1) / period);
}

CpuBudget DetectCpuBudget() {
  CpuBudget b;
  b.hardware = static_cast<int>(std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) b.affinity = CPU_COUNT(&set);
  b.quota = CgroupQuota();
  return b;
}

ThreadPlan PlanComputeThreads(int total, BlasThreading blas) {
  ThreadPlan p;
  p.total = std::max(1, total);
  switch (blas) {
    case BlasThreading::kOwnThreads:
      p.intra_op = 1;
      p.blas = p.total;
      break;
    case BlasThreading::kOpenMp:
      p.intra_op = p.total;
      p.blas = p.total;
      break;
    case BlasThreading::kInLibtorch:
      p.intra_op = p.total;
      p.blas = 0;  // at::set_num_threads sets MKL's count too
      break;
    default:
      p.intra_op = p.total;
      p.blas = 0;
      break;
  }
  return p;
}

std::string BlasLibraryFromMaps(absl::string_view maps) {
  for (absl::string_view line : absl::StrSplit(maps, '\n')) {
    const size_t slash = line.find('/');
    if (slash == absl::string_view::npos) continue;
    absl::string_view path = line.substr(slash);
    const size_t base = path.rfind('/');
    absl::string_view file = path.substr(base + 1);
    for (absl::string_view prefix : {"libblas", "libopenblas", "libmkl_rt", "libmkl_core", "libblis"}) {
      if (absl::StartsWith(file, prefix)) return std::string(path);
    }
  }
  return "";
}

void UseThreadsForProducts(ComputeThreads* threads, c10::ScalarType product_dtype) {
  const bool reduced_precision =
      product_dtype == c10::ScalarType::BFloat16 || product_dtype == c10::ScalarType::Half;
  if (threads->overridden || threads->blas_threading != BlasThreading::kOwnThreads ||
      threads->plan.total <= 1) {
    return;
  }
  const OpenBlasApi api = FindOpenBlas();
  const int intra_op = reduced_precision ? threads->plan.total : threads->plan.intra_op;
  const int blas = reduced_precision ? 1 : threads->plan.blas;
  try {
    if (at::get_num_threads() != intra_op) at::set_num_threads(intra_op);
    threads->intra_op_threads = at::get_num_threads();
  } catch (const c10::Error&) {
    return;
  }
  if (api.found() && blas > 0) {
    api.set_num_threads(blas);
    threads->blas_threads = api.get_num_threads();
  }
}

absl::StatusOr<int> PlanLanes(int requested, const ComputeThreads& threads, bool cpu) {
  if (requested < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--lanes: must be 0 (one per compute thread on a CPU) or positive, got ",
                     requested));
  }
  if (!cpu) return 1;
  const int total = std::max(1, threads.plan.total);
  return requested == 0 ? total : std::min(requested, total);
}

OneComputeThreadScope::OneComputeThreadScope() {
  try {
    const int before = at::get_num_threads();
    if (before != 1) {
      at::set_num_threads(1);
      intra_op_ = before;
    }
  } catch (const c10::Error&) {
  }
  const OpenBlasApi api = FindOpenBlas();
  if (api.found()) {
    const int before = api.get_num_threads();
    if (before != 1) {
      api.set_num_threads(1);
      blas_ = before;
    }
  }
}

OneComputeThreadScope::~OneComputeThreadScope() {
  try {
    if (intra_op_ > 0) at::set_num_threads(intra_op_);
  } catch (const c10::Error&) {
  }
  if (blas_ > 0) {
    const OpenBlasApi api = FindOpenBlas();
    if (api.found()) api.set_num_threads(blas_);
  }
}

absl::StatusOr<ComputeThreads> ApplyComputeThreads(const ComputeThreadOptions& options) {
  if (options.total < 0 || options.intra_op_override < 0 || options.blas_override < 0) {
    return absl::InvalidArgumentError("--threads: must be 0 (every usable core) or positive");
  }
  ComputeThreads t;
  t.budget = DetectCpuBudget();
  t.requested = options.total;
  const int usable = t.budget.usable();
  const int total = options.total == 0 ? usable : std::min(options.total, usable);
  t.libtorch_version = TORCH_VERSION;
  t.heap_allocator = HeapAllocatorName();
  if (const char* policy = std::getenv("OMP_WAIT_POLICY")) t.omp_wait_policy = policy;
#if TORCH_VERSION_MAJOR >= 2
  try {
    t.cpu_capability = at::get_cpu_capability();
  } catch (const c10::Error&) {
  }
#endif
  const OpenBlasApi api = FindOpenBlas();
  if (api.found() && !options.keep_blas_kernels) t.blas_kernels_note = UseMeasuredBlasKernels(api);
  t.blas_threading = ThreadingOf(api);
  bool mkl = false;
  if (!api.found()) {
    try {
      mkl = at::hasMKL();
    } catch (const c10::Error&) {
    }
    if (mkl) t.blas_threading = BlasThreading::kInLibtorch;
  }
  t.plan = PlanComputeThreads(total, t.blas_threading);
  if (options.intra_op_override > 0) t.plan.intra_op = options.intra_op_override;
  if (options.blas_override > 0) t.plan.blas = options.blas_override;
  t.overridden = options.intra_op_override > 0 || options.blas_override > 0 || options.leave_blas;
  try {
    at::set_num_threads(t.plan.intra_op);
    t.intra_op_threads = at::get_num_threads();
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("libtorch threads: ", e.what_without_backtrace()));
  }
  if (api.found()) {
    if (t.plan.blas > 0 && !options.leave_blas) api.set_num_threads(t.plan.blas);
    t.blas_threads = api.get_num_threads();
    if (api.get_config != nullptr) t.blas_config = api.get_config();
  } else if (mkl) {
    // MKL's symbols are not exported from libtorch; its own report says
    // what it runs with.
    try {
      t.blas_config = std::string(absl::StripAsciiWhitespace(at::get_mkl_version()));
      t.blas_threads = ParallelInfoNumber(at::get_parallel_info(), "mkl_get_max_threads()");
    } catch (const c10::Error& e) {
      return absl::InternalError(absl::StrCat("libtorch's MKL: ", e.what_without_backtrace()));
    }
  }
  std::string path = BlasLibraryFromMaps(ReadSmallFile("/proc/self/maps"));
  std::error_code ec;
  if (!path.empty()) {
    std::filesystem::path resolved = std::filesystem::canonical(path, ec);
    t.blas_library = ec ? path : resolved.string();
  }
  return t;
}

std::string Describe(const ComputeThreads& t) {
  const int usable = t.budget.usable();
  std::string out = absl::StrCat("libtorch ", t.libtorch_version);
  if (!t.cpu_capability.empty()) absl::StrAppend(&out, " (CPU kernels ", t.cpu_capability, ")");
  absl::StrAppend(&out, ", compute threads ", t.plan.total, " (", usable, " usable cores");
  if (t.requested > usable) absl::StrAppend(&out, "; --threads=", t.requested, " cut to them");
  absl::StrAppend(&out, "): libtorch intra-op ", t.intra_op_threads, ", BLAS ");
  if (t.blas_threads > 0) {
    absl::StrAppend(&out, t.blas_threads, " (", t.blas_config, ", ",
                    BlasThreadingName(t.blas_threading));
    if (!t.blas_kernels_note.empty()) absl::StrAppend(&out, ", ", t.blas_kernels_note);
  } else {
    absl::StrAppend(&out, "threads not settable (", BlasThreadingName(t.blas_threading));
  }
  if (t.blas_threading != BlasThreading::kInLibtorch) {
    absl::StrAppend(&out, ", ",
                    t.blas_library.empty() ? "no BLAS library mapped" : t.blas_library);
  }
  if (t.intra_op_threads > 1) {
    absl::StrAppend(&out, "; OMP_WAIT_POLICY ",
                    t.omp_wait_policy.empty() ? "unset" : t.omp_wait_policy);
  }
  absl::StrAppend(&out, "); heap allocator ", t.heap_allocator);
  return out;
}

}  // namespace mpt

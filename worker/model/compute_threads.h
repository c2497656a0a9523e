// How many threads the CPU compute of a process uses, decided in one place
// for the worker, mpt_train and stage_bench.
//
// Debian's libtorch runs its own intra-op threads *and*, through
// libblas.so.3, OpenBLAS's own thread pool. Both at full width oversubscribe
// the cores (a T5-small prompt-tuning step on 2 cores took 2.3x longer with
// libtorch at 2 threads and OpenBLAS at 2 than with libtorch at 1), so
// `--threads=N` means N compute threads in total, split between the two
// pools by PlanComputeThreads below, and never more than the cores this
// process may use (CPU count, affinity mask and cgroup quota, whichever is
// smallest).
//
//   absl::StatusOr<ComputeThreads> t = ApplyComputeThreads({.total = flag});
//   MPT_LOG(INFO) << Describe(*t);
//
// The BLAS library is found at run time (dlsym of openblas_set_num_threads
// and friends in whatever libblas.so.3 or libopenblas is loaded), so the
// build does not depend on OpenBLAS; with another BLAS only libtorch's
// threads are set. Call ApplyComputeThreads once, early in main(), before
// any tensor work and before other threads start. Not thread-safe.
#ifndef MPT_WORKER_MODEL_COMPUTE_THREADS_H_
#define MPT_WORKER_MODEL_COMPUTE_THREADS_H_

#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mpt {

// The cores this process may use.
struct CpuBudget {
  int hardware = 0;  // std::thread::hardware_concurrency() (0: unknown)
  int affinity = 0;  // CPUs in the sched_getaffinity mask (0: unknown)
  int quota = 0;     // cgroup CPU quota rounded up (0: none or unknown)
  // The smallest known of the three, at least 1.
  int usable() const;
};

// Reads the three from this process and /sys/fs/cgroup (v2 cpu.max, or v1
// cpu.cfs_quota_us / cpu.cfs_period_us). Never fails: what cannot be read
// stays 0.
CpuBudget DetectCpuBudget();

// The host's physical memory in bytes (sysconf); 0 when unknown.
int64_t HostMemoryBytes();

// Parses a cgroup v2 cpu.max ("max 100000" or "150000 100000"): the quota
// in whole cores, rounded up; 0 for no limit or unparsable text.
int ParseCgroupCpuMax(absl::string_view text);

// How the loaded BLAS runs its matrix products.
enum class BlasThreading {
  kUnknown,     // not OpenBLAS (or its functions are not exported)
  kSequential,  // OpenBLAS built without threads
  kOwnThreads,  // OpenBLAS with its own pthreads pool (libopenblas0-pthread)
  kOpenMp,      // OpenBLAS on OpenMP (libopenblas0-openmp): libtorch's pool
  kInLibtorch,  // MKL linked into libtorch (the PyPI wheels): it runs on
                // libtorch's OpenMP pool and at::set_num_threads sets it
};

// "sequential", "pthreads", "OpenMP", "inside libtorch, OpenMP" or
// "unknown threading".
const char* BlasThreadingName(BlasThreading t);

// The split of a total between libtorch's intra-op pool and BLAS's pool.
struct ThreadPlan {
  int total = 0;     // compute threads the process runs at once
  int intra_op = 0;  // at::set_num_threads
  int blas = 0;      // openblas_set_num_threads; 0: left alone
};

// The split for `total` threads (already within the budget, >= 1):
//   kOwnThreads  libtorch 1, OpenBLAS `total`: the matrix products, most of
//                a step, use every core, and the element-wise kernels run
//                on the calling thread while OpenBLAS's threads are idle.
//                Both at `total` oversubscribe (measured: docs/MEASUREMENTS.md, "Threads and the teacher cache").
//   kOpenMp      libtorch `total` and OpenBLAS `total`: one OpenMP pool.
//   kInLibtorch  libtorch `total`; MKL follows it (one OpenMP pool).
//   otherwise    libtorch `total`; BLAS left alone.
ThreadPlan PlanComputeThreads(int total, BlasThreading blas);

struct ComputeThreadOptions {
  // Total compute threads; 0: every usable core. More than the usable cores
  // is cut to them (with a warning in the description).
  int total = 0;
  // Explicit per-pool counts for measurements (stage_bench): when > 0 they
  // replace the plan's value, unchecked against the budget.
  int intra_op_override = 0;
  int blas_override = 0;
  // Leave BLAS's thread count as the library set it (OPENBLAS_NUM_THREADS or
  // its default): measurements only.
  bool leave_blas = false;
  // Keep the OpenBLAS kernels the library picked for this CPU instead of the
  // ones measured faster on it (UseMeasuredBlasKernels): measurements only.
  bool keep_blas_kernels = false;
};

// What was decided and what the libraries report afterwards.
struct ComputeThreads {
  CpuBudget budget;
  ThreadPlan plan;
  int requested = 0;          // options.total
  int intra_op_threads = 0;   // at::get_num_threads() after applying
  int blas_threads = 0;       // openblas_get_num_threads() after (0: unknown)
  BlasThreading blas_threading = BlasThreading::kUnknown;
  std::string blas_library;   // the BLAS file mapped in this process, resolved
  std::string blas_config;    // openblas_get_config(), or MKL's version string
  std::string blas_kernels_note;  // why OpenBLAS runs other kernels than it
                                  // picked, or the user's OPENBLAS_CORETYPE
                                  // ("": it runs its own choice)
  std::string omp_wait_policy;    // $OMP_WAIT_POLICY ("": unset, libgomp spins
                                 // a while at each barrier before sleeping)
  std::string libtorch_version;  // TORCH_VERSION of the headers built against
  std::string cpu_capability;    // the kernels ATen dispatches to (AVX2, AVX512;
                                 // empty before libtorch 2.0)
  std::string heap_allocator;    // common/heap_memory.h: "tcmalloc" or "glibc"
  bool overridden = false;       // a pool's count was set by an override
};

// Whether OpenBLAS's AVX2 (Haswell) kernels should replace the AVX-512 ones
// it picks (`corename`: "Cooperlake" or "SkylakeX") on the CPU that
// `cpuinfo` (the text of /proc/cpuinfo) describes. True on AMD Zen 4
// (family 25 with AVX-512), which runs 512-bit instructions as two 256-bit
// halves: there OpenBLAS 0.3.21's Haswell sgemm was 4 to 5 % faster per
// training step and 5 % faster on the matrix peak than its Cooperlake one
// (docs/MEASUREMENTS.md, "OpenBLAS's kernels on Zen 4"). False on Zen 5
// (family 26), which runs AVX-512 at full width: there OpenBLAS 0.3.21
// picks its Cooperlake kernels, whose training step took 0.61 times as long
// as with its Haswell ones ("... and on Zen 5").
bool PreferHaswellKernels(absl::string_view cpuinfo, absl::string_view corename);

// Decides and applies the thread counts, and the OpenBLAS kernels: where
// PreferHaswellKernels says so and the user did not set OPENBLAS_CORETYPE,
// OpenBLAS is set to its Haswell kernels (OPENBLAS_CORETYPE=Haswell and its
// dynamic kernel selection run again: no BLAS call may have run before).
// A user's OPENBLAS_CORETYPE is kept and named in blas_kernels_note.
// INVALID_ARGUMENT for a negative count. libtorch errors are returned as
// INTERNAL; nothing throws.
absl::StatusOr<ComputeThreads> ApplyComputeThreads(const ComputeThreadOptions& options);

// Sets the pools for the dtype a frozen model's matrix products run in on
// the CPU (ProductDtype, autocast.h). Products in BFloat16 or Half run in
// libtorch's own kernels, not in BLAS, so the kOwnThreads plan (libtorch 1,
// OpenBLAS all) would run them on one core: for them libtorch gets the
// plan's total and OpenBLAS 1 (the total is kept; measured in README, "Decoder-only
// models"); otherwise the plan's own split is restored. A no-op for other
// plans and when a count was overridden. Updates threads->intra_op_threads
// and blas_threads to what the libraries report afterwards (the plan stays
// as decided). Nothing throws.
void UseThreadsForProducts(ComputeThreads* threads, c10::ScalarType product_dtype);

// How many lanes (worker/training/lanes.h: independent training runs side
// by side, one compute thread each) a process gives its runs: `requested`,
// or with 0 one per compute thread on a CPU and 1 on another device; never
// more than threads.plan.total, so lanes never add threads beyond the
// budget. INVALID_ARGUMENT for a negative count.
absl::StatusOr<int> PlanLanes(int requested, const ComputeThreads& threads, bool cpu);

// For its lifetime libtorch's intra-op pool and BLAS's pool run one thread
// each, so that several threads of the process can each run their own
// tensor work side by side (worker/training/lanes.h), one core each; the
// previous counts come back afterwards. Threads started inside the scope
// take libtorch's count of 1 at their first parallel region. Like
// ApplyComputeThreads it changes process-wide settings: make it on the
// thread that starts the others, before they start. Nothing throws.
class OneComputeThreadScope {
 public:
  OneComputeThreadScope();
  ~OneComputeThreadScope();
  OneComputeThreadScope(const OneComputeThreadScope&) = delete;
  OneComputeThreadScope& operator=(const OneComputeThreadScope&) = delete;

 private:
  int intra_op_ = 0;  // libtorch's count before (0: not changed)
  int blas_ = 0;      // OpenBLAS's count before (0: not changed)
};

// One line for a startup message, e.g. "libtorch 1.13.0, compute threads 2
// (2 usable cores): libtorch intra-op 1, BLAS 2 (OpenBLAS 0.3.21 ...,
// pthreads, /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3)" or
// "libtorch 2.11.0 (CPU kernels AVX2), compute threads 2 (2 usable cores):
// libtorch intra-op 2, BLAS 2 (Intel(R) oneAPI Math Kernel Library Version
// ..., inside libtorch, OpenMP; OMP_WAIT_POLICY unset)". The wait policy is
// named when libtorch runs more than one thread: libgomp reads it when it
// loads, so only the environment that starts the process can change it.
std::string Describe(const ComputeThreads& threads);

// The first BLAS-looking file (libblas, libopenblas, libmkl, libblis) in a
// /proc/self/maps text, or "" if none.
std::string BlasLibraryFromMaps(absl::string_view maps);

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_COMPUTE_THREADS_H_

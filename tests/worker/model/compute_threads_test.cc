#include "worker/model/compute_threads.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"

namespace mpt {
namespace {

TEST(CpuBudgetTest, UsableIsTheSmallestKnownLimit) {
  CpuBudget b;
  EXPECT_EQ(b.usable(), 1);  // nothing known
  b.hardware = 16;
  EXPECT_EQ(b.usable(), 16);
  b.affinity = 4;
  EXPECT_EQ(b.usable(), 4);
  b.quota = 2;
  EXPECT_EQ(b.usable(), 2);
  b.quota = 0;  // no quota: the others decide
  EXPECT_EQ(b.usable(), 4);
}

TEST(CpuBudgetTest, ParsesCgroupV2CpuMax) {
  EXPECT_EQ(ParseCgroupCpuMax("max 100000\n"), 0);
  EXPECT_EQ(ParseCgroupCpuMax("200000 100000\n"), 2);
  EXPECT_EQ(ParseCgroupCpuMax("150000 100000"), 2);  // 1.5 cores round up
  EXPECT_EQ(ParseCgroupCpuMax("50000 100000"), 1);
  EXPECT_EQ(ParseCgroupCpuMax(""), 0);
  EXPECT_EQ(ParseCgroupCpuMax("garbage"), 0);
  EXPECT_EQ(ParseCgroupCpuMax("-1 100000"), 0);
}

TEST(CpuBudgetTest, DetectsAtLeastOneCore) {
  CpuBudget b = DetectCpuBudget();
  EXPECT_GE(b.usable(), 1);
  if (b.hardware > 0) {
    EXPECT_LE(b.usable(), b.hardware);
  }
}

TEST(PlanComputeThreadsTest, OpenBlasWithItsOwnPoolGetsTheCoresAndLibtorchOne) {
  ThreadPlan p = PlanComputeThreads(2, BlasThreading::kOwnThreads);
  EXPECT_EQ(p.total, 2);
  EXPECT_EQ(p.intra_op, 1);
  EXPECT_EQ(p.blas, 2);
  p = PlanComputeThreads(1, BlasThreading::kOwnThreads);
  EXPECT_EQ(p.intra_op, 1);
  EXPECT_EQ(p.blas, 1);
}

TEST(PlanComputeThreadsTest, SharedOrUnknownPoolsGoToLibtorch) {
  ThreadPlan p = PlanComputeThreads(8, BlasThreading::kOpenMp);
  EXPECT_EQ(p.intra_op, 8);
  EXPECT_EQ(p.blas, 8);
  p = PlanComputeThreads(8, BlasThreading::kSequential);
  EXPECT_EQ(p.intra_op, 8);
  EXPECT_EQ(p.blas, 0);
  p = PlanComputeThreads(8, BlasThreading::kUnknown);
  EXPECT_EQ(p.intra_op, 8);
  EXPECT_EQ(p.blas, 0);
  EXPECT_EQ(PlanComputeThreads(0, BlasThreading::kUnknown).total, 1);
}

TEST(BlasLibraryTest, FindsTheMappedBlas) {
  const char* maps =
      "7f00-7f01 r--p 00000000 fd:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
      "7f02-7f03 r-xp 00000000 fd:01 2 "
      "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3\n"
      "7f04-7f05 rw-p 00000000 00:00 0 [heap]\n";
  EXPECT_EQ(BlasLibraryFromMaps(maps), "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3");
  EXPECT_EQ(BlasLibraryFromMaps("7f00-7f01 r--p 0 fd:01 1 /lib/libmkl_rt.so.2\n"),
            "/lib/libmkl_rt.so.2");
  EXPECT_EQ(BlasLibraryFromMaps("7f00-7f01 r--p 0 fd:01 1 /lib/libc.so.6\n"), "");
}

TEST(ApplyComputeThreadsTest, NeverMoreThanTheUsableCores) {
  auto t = ApplyComputeThreads({/*total=*/100000});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->plan.total, t->budget.usable());
  EXPECT_LE(t->intra_op_threads, t->budget.usable());
  if (t->blas_threads > 0) {
    EXPECT_LE(t->blas_threads, t->budget.usable());
  }
  EXPECT_EQ(t->intra_op_threads, at::get_num_threads());
  EXPECT_NE(Describe(*t).find("cut to them"), std::string::npos) << Describe(*t);
}

TEST(ApplyComputeThreadsTest, NamesTheLibtorchAndTheBlas) {
  auto t = ApplyComputeThreads({/*total=*/1});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->libtorch_version, TORCH_VERSION);
  const std::string line = Describe(*t);
  EXPECT_EQ(line.rfind(absl::StrCat("libtorch ", TORCH_VERSION), 0), 0u) << line;
  if (t->blas_threading == BlasThreading::kInLibtorch) {
    // MKL inside libtorch (the PyPI wheels) follows libtorch's pool.
    EXPECT_FALSE(t->blas_config.empty()) << line;
    EXPECT_EQ(t->blas_threads, t->intra_op_threads) << line;
    EXPECT_NE(line.find("inside libtorch"), std::string::npos) << line;
  } else if (t->blas_threading == BlasThreading::kOwnThreads) {
    // OpenBLAS with its own pool (Debian's libopenblas0-pthread).
    EXPECT_EQ(t->intra_op_threads, 1) << line;
    EXPECT_EQ(t->blas_threads, 1) << line;
    EXPECT_NE(line.find("OpenBLAS"), std::string::npos) << line;
  }
}

constexpr char kZen4[] =
    "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
    "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n";

TEST(BlasKernelsTest, HaswellKernelsOnlyWhereTheyWereMeasuredFaster) {
  EXPECT_TRUE(PreferHaswellKernels(kZen4, "Cooperlake"));
  EXPECT_TRUE(PreferHaswellKernels(kZen4, "SkylakeX"));
  // Already AVX2 kernels, or another library's name.
  for (const char* name : {"Haswell", "Zen", "", "MKL"}) {
    EXPECT_FALSE(PreferHaswellKernels(kZen4, name)) << name;
  }
  std::string zen3 = kZen4;  // family 25 without AVX-512
  zen3.replace(zen3.find(" avx512f avx512_bf16"), 20, "");
  EXPECT_FALSE(PreferHaswellKernels(zen3, "Cooperlake"));
  std::string zen5 = kZen4;  // full-width AVX-512: not measured
  zen5.replace(zen5.find(": 25"), 4, ": 26");
  EXPECT_FALSE(PreferHaswellKernels(zen5, "Cooperlake"));
  std::string intel = kZen4;
  intel.replace(intel.find("AuthenticAMD"), 12, "GenuineIntel");
  EXPECT_FALSE(PreferHaswellKernels(intel, "Cooperlake"));
  EXPECT_FALSE(PreferHaswellKernels("", "Cooperlake"));
  EXPECT_FALSE(PreferHaswellKernels("garbage without colons\n", "Cooperlake"));
}

TEST(BlasKernelsTest, ProductsAreRightAfterTheKernelsAreChosen) {
  auto t = ApplyComputeThreads({/*total=*/0});
  ASSERT_TRUE(t.ok()) << t.status();
  if (!t->blas_kernels_note.empty()) {
    // Switched here, by this call or an earlier one, or the user's choice.
    EXPECT_TRUE(Describe(*t).find("Haswell kernels instead of") != std::string::npos ||
                Describe(*t).find("kernels set by OPENBLAS_CORETYPE=") != std::string::npos)
        << Describe(*t);
  }
  // A second call says the same.
  auto again = ApplyComputeThreads({/*total=*/0});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->blas_kernels_note, t->blas_kernels_note);
  // On a Zen 4 with Debian's OpenBLAS (DYNAMIC_ARCH) the Haswell kernels
  // run, whichever call of ApplyComputeThreads switched them.
  std::ifstream cpuinfo_file("/proc/cpuinfo");
  std::stringstream cpuinfo;
  cpuinfo << cpuinfo_file.rdbuf();
  if (PreferHaswellKernels(cpuinfo.str(), "Cooperlake") &&
      t->blas_config.find("DYNAMIC_ARCH") != std::string::npos) {
    EXPECT_NE(t->blas_config.find(" Haswell "), std::string::npos) << Describe(*t);
  }
  // Odd shapes, both transpositions: whichever kernels run, products agree
  // with a double-precision reference.
  at::manual_seed(0);
  const at::Tensor a = at::randn({257, 129});
  const at::Tensor b = at::randn({129, 65});
  const at::Tensor want = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  EXPECT_TRUE(at::allclose(at::mm(a, b).to(at::kDouble), want, 1e-4, 1e-4));
  const at::Tensor a_transposed = a.t().contiguous().t();  // same values, other layout
  const at::Tensor b_transposed = b.t().contiguous().t();
  EXPECT_TRUE(at::allclose(at::mm(a_transposed, b).to(at::kDouble), want, 1e-4, 1e-4));
  EXPECT_TRUE(at::allclose(at::mm(a, b_transposed).to(at::kDouble), want, 1e-4, 1e-4));
}

TEST(ApplyComputeThreadsTest, RejectsNegativeCounts) {
  EXPECT_FALSE(ApplyComputeThreads({/*total=*/-1}).ok());
}

TEST(UseThreadsForProductsTest, ReducedPrecisionGivesLibtorchEveryThreadAndBack) {
  auto t = ApplyComputeThreads({/*total=*/0});
  ASSERT_TRUE(t.ok()) << t.status();
  if (t->blas_threading != BlasThreading::kOwnThreads || t->plan.total < 2) {
    GTEST_SKIP() << "needs OpenBLAS with its own threads and 2 usable cores: " << Describe(*t);
  }
  ASSERT_EQ(t->plan.intra_op, 1);
  ComputeThreads reduced = *t;
  UseThreadsForProducts(&reduced, c10::ScalarType::BFloat16);
  EXPECT_EQ(at::get_num_threads(), t->plan.total);
  EXPECT_EQ(reduced.intra_op_threads, t->plan.total);
  EXPECT_EQ(reduced.blas_threads, 1);  // the total is kept
  ComputeThreads full = *t;
  UseThreadsForProducts(&full, c10::ScalarType::Float);
  EXPECT_EQ(at::get_num_threads(), 1);
  EXPECT_EQ(full.blas_threads, t->plan.blas);

  // Counts a measurement set by hand are left alone.
  auto manual = ApplyComputeThreads({/*total=*/0, /*intra_op_override=*/1, /*blas_override=*/2});
  ASSERT_TRUE(manual.ok()) << manual.status();
  UseThreadsForProducts(&*manual, c10::ScalarType::BFloat16);
  EXPECT_EQ(at::get_num_threads(), 1);
}

TEST(PlanLanesTest, OnePerComputeThreadOnACpuAndNeverMore) {
  ComputeThreads t;
  t.plan.total = 4;
  EXPECT_EQ(*PlanLanes(0, t, /*cpu=*/true), 4);
  EXPECT_EQ(*PlanLanes(1, t, true), 1);
  EXPECT_EQ(*PlanLanes(3, t, true), 3);
  EXPECT_EQ(*PlanLanes(9, t, true), 4);  // cut to the threads
  EXPECT_EQ(*PlanLanes(0, t, /*cpu=*/false), 1);
  EXPECT_EQ(*PlanLanes(4, t, false), 1);
  t.plan.total = 0;  // not applied: one lane
  EXPECT_EQ(*PlanLanes(0, t, true), 1);
  absl::StatusOr<int> bad = PlanLanes(-1, t, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--lanes"), std::string::npos) << bad.status();
}

TEST(OneComputeThreadScopeTest, BothPoolsRunOneThreadInsideAndComeBack) {
  auto t = ApplyComputeThreads({/*total=*/0, /*intra_op_override=*/2, /*blas_override=*/2});
  ASSERT_TRUE(t.ok()) << t.status();
  const int intra_op = at::get_num_threads();
  const int blas = t->blas_threads;
  {
    OneComputeThreadScope scope;
    EXPECT_EQ(at::get_num_threads(), 1);
    auto inside = ApplyComputeThreads({0, 0, 0, /*leave_blas=*/true});
    ASSERT_TRUE(inside.ok()) << inside.status();
    if (blas > 0) {
      EXPECT_EQ(inside->blas_threads, 1);
    }
    // ApplyComputeThreads above set libtorch again; the scope still
    // restores what it found.
  }
  EXPECT_EQ(at::get_num_threads(), intra_op);
  auto after = ApplyComputeThreads({0, 0, 0, /*leave_blas=*/true});
  ASSERT_TRUE(after.ok()) << after.status();
  if (blas > 0) {
    EXPECT_EQ(after->blas_threads, blas);
  }
}

}  // namespace
}  // namespace mpt

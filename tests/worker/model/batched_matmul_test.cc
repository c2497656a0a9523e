// BatchedMatmul against at::matmul in float64: values and both operands'
// gradients, for the views attention passes (head-split slices of a fused
// projection, transposed keys, broadcast batches, strides BLAS cannot take,
// single rows and columns), and the cases that must stay at::matmul.
#include "worker/model/batched_matmul.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <torch/version.h>

#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "worker/model/autocast.h"

namespace mpt {
namespace {

// max |x - y| / (1 + max |y|)
double RelDiff(const at::Tensor& x, const at::Tensor& y) {
  const at::Tensor xd = x.to(at::kDouble), yd = y.to(at::kDouble);
  return (xd - yd).abs().max().item<double>() / (1.0 + yd.abs().max().item<double>());
}

// Runs out = f(a, b) forward and backward with a fixed upstream gradient
// through BatchedMatmul (fp32) and through at::matmul (float64) on leaves
// made by `make` from the same values; compares the product and both
// leaves' gradients.
template <class Make>
void ExpectMatchesMatmul(Make make, ProductLayout layout, const char* what) {
  SCOPED_TRACE(what);
  auto [a_leaf, b_leaf] = make();
  at::Tensor a64_leaf = a_leaf.detach().to(at::kDouble).requires_grad_();
  at::Tensor b64_leaf = b_leaf.detach().to(at::kDouble).requires_grad_();
  a_leaf.requires_grad_();
  b_leaf.requires_grad_();
  auto [a, b] = make.views(a_leaf, b_leaf);
  auto [a64, b64] = make.views(a64_leaf, b64_leaf);
  at::Tensor out = BatchedMatmul(a, b, layout);
  at::Tensor ref = at::matmul(a64, b64);
  ASSERT_EQ(out.sizes(), ref.sizes());
  EXPECT_EQ(out.scalar_type(), at::kFloat);
  EXPECT_LT(RelDiff(out, ref), 1e-5);
  at::Tensor upstream = at::randn(ref.sizes(), at::kDouble);
  out.backward(upstream.to(at::kFloat));
  ref.backward(upstream);
  ASSERT_TRUE(a_leaf.grad().defined());
  ASSERT_TRUE(b_leaf.grad().defined());
  EXPECT_LT(RelDiff(a_leaf.grad(), a64_leaf.grad()), 1e-5);
  EXPECT_LT(RelDiff(b_leaf.grad(), b64_leaf.grad()), 1e-5);
}

// Leaves a and b (random fp32) and the views the product takes.
struct HeadSplit {
  int64_t batch = 2, length = 7, heads = 3, d = 5;
  std::tuple<at::Tensor, at::Tensor> operator()() const {
    // A fused q/k/v projection output [B, T, 3 * H * d] stands for both.
    at::Tensor qkv = at::randn({batch, length, 3 * heads * d});
    return {qkv, qkv.clone()};
  }
  // q @ k^T of the head-split views of the first and second third.
  std::tuple<at::Tensor, at::Tensor> views(const at::Tensor& x, const at::Tensor& y) const {
    auto split = [&](const at::Tensor& t, int part) {
      return t.chunk(3, -1)[part].view({batch, length, heads, d}).transpose(1, 2);
    };
    return {split(x, 0), split(y, 1).transpose(-1, -2)};
  }
};

TEST(BatchedMatmulTest, DefaultBuildFindsBlas) {
#if TORCH_VERSION_MAJOR == 1
  // Debian's libtorch has no MKL and calls the system BLAS, whose sgemm_ the
  // fast path uses.
  EXPECT_TRUE(BatchedMatmulUsesBlas());
#else
  GTEST_SKIP() << "libtorch " << TORCH_VERSION << ": the wheels carry MKL (at::matmul then)";
#endif
}

TEST(BatchedMatmulTest, HeadSplitViewsOfAFusedProjection) {
  at::manual_seed(1);
  ExpectMatchesMatmul(HeadSplit{}, ProductLayout::kContiguous, "contiguous result");
  ExpectMatchesMatmul(HeadSplit{}, ProductLayout::kHeadsInner, "heads-inner result");
  ExpectMatchesMatmul(HeadSplit{1, 1, 1, 1}, ProductLayout::kContiguous, "1 x 1 x 1 x 1");
  ExpectMatchesMatmul(HeadSplit{3, 1, 4, 8}, ProductLayout::kHeadsInner, "one position");
}

// probs @ v: a contiguous [B, H, M, K] times a head-split [B, H, K, N].
struct ProbsTimesValues {
  int64_t batch = 2, heads = 4, m = 6, k = 9, n = 3;
  std::tuple<at::Tensor, at::Tensor> operator()() const {
    return {at::randn({batch, heads, m, k}), at::randn({batch, k, heads * n})};
  }
  std::tuple<at::Tensor, at::Tensor> views(const at::Tensor& p, const at::Tensor& v) const {
    return {p, v.view({batch, k, heads, n}).transpose(1, 2)};
  }
};

TEST(BatchedMatmulTest, ProbabilitiesTimesValues) {
  at::manual_seed(2);
  ExpectMatchesMatmul(ProbsTimesValues{}, ProductLayout::kHeadsInner, "heads inner");
  ExpectMatchesMatmul(ProbsTimesValues{}, ProductLayout::kContiguous, "contiguous");
  ExpectMatchesMatmul(ProbsTimesValues{1, 2, 1, 5, 1}, ProductLayout::kHeadsInner, "M = N = 1");
}

// Operands BLAS cannot read as they are (no unit stride), and a batch
// broadcast by a zero stride.
struct OddStrides {
  std::tuple<at::Tensor, at::Tensor> operator()() const {
    return {at::randn({2, 3, 4, 10}), at::randn({2, 1, 5, 6})};
  }
  std::tuple<at::Tensor, at::Tensor> views(const at::Tensor& a, const at::Tensor& b) const {
    // a: every other column ([2, 3, 4, 5], column stride 2); b: one head's
    // matrix shared by all three heads (head stride 0).
    return {a.slice(3, 0, 10, 2), b.expand({2, 3, 5, 6})};
  }
};

TEST(BatchedMatmulTest, StridesBlasCannotTakeAndBroadcastBatches) {
  at::manual_seed(3);
  ExpectMatchesMatmul(OddStrides{}, ProductLayout::kContiguous, "contiguous");
  ExpectMatchesMatmul(OddStrides{}, ProductLayout::kHeadsInner, "heads inner");
}

TEST(BatchedMatmulTest, HeadsInnerLayoutMakesMergingHeadsAView) {
  if (!BatchedMatmulUsesBlas()) GTEST_SKIP() << "no BLAS sgemm_ in this process";
  at::manual_seed(4);
  at::Tensor p = at::randn({2, 3, 4, 5});
  at::Tensor v = at::randn({2, 3, 5, 6});
  at::Tensor out = BatchedMatmul(p, v, ProductLayout::kHeadsInner);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 4, 6}));
  EXPECT_EQ(out.stride(1), 6);       // heads inner
  EXPECT_EQ(out.stride(2), 3 * 6);   // then positions
  at::Tensor merged = out.transpose(1, 2).reshape({2, 4, 18});
  EXPECT_EQ(merged.data_ptr(), out.data_ptr());
  EXPECT_LT(RelDiff(out, at::matmul(p, v)), 1e-6);
}

TEST(BatchedMatmulTest, EmptyInnerDimensionGivesZeros) {
  at::Tensor a = at::randn({2, 3, 4, 0});
  at::Tensor b = at::randn({2, 3, 0, 5});
  at::Tensor out = BatchedMatmul(a, b);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(out.abs().sum().item<double>(), 0.0);
}

TEST(BatchedMatmulTest, NoGradModeComputesTheSameProduct) {
  at::manual_seed(5);
  at::Tensor a = at::randn({2, 2, 3, 4}, at::requires_grad());
  at::Tensor b = at::randn({2, 2, 4, 5});
  at::Tensor with_grad = BatchedMatmul(a, b);
  at::NoGradGuard no_grad;
  at::Tensor without = BatchedMatmul(a, b);
  EXPECT_FALSE(without.requires_grad());
  EXPECT_TRUE(at::equal(with_grad.detach(), without));
}

TEST(BatchedMatmulTest, OtherShapesAndDtypesAreMatmul) {
  at::manual_seed(6);
  // Three dimensions, bf16 and float64 operands: exactly at::matmul.
  at::Tensor a3 = at::randn({3, 4, 5}), b3 = at::randn({3, 5, 2});
  EXPECT_TRUE(at::equal(BatchedMatmul(a3, b3), at::matmul(a3, b3)));
  at::Tensor a = at::randn({2, 3, 4, 5}), b = at::randn({2, 3, 5, 6});
  for (at::ScalarType t : {at::kBFloat16, at::kDouble}) {
    at::Tensor x = a.to(t), y = b.to(t);
    at::Tensor out = BatchedMatmul(x, y);
    EXPECT_EQ(out.scalar_type(), t);
    EXPECT_TRUE(at::equal(out, at::matmul(x, y)));
  }
  // Different batch shapes (broadcasting) are at::matmul's business too.
  at::Tensor b1 = at::randn({1, 3, 5, 6});
  EXPECT_TRUE(at::equal(BatchedMatmul(a, b1), at::matmul(a, b1)));
}

TEST(BatchedMatmulTest, AutocastKeepsMatmulsPrecision) {
  at::manual_seed(7);
  at::Tensor a = at::randn({2, 3, 4, 5}), b = at::randn({2, 3, 5, 6});
  AutocastScope scope(at::Device(at::kCPU), AutocastMode::kBf16);
  at::Tensor out = BatchedMatmul(a, b);
  at::Tensor ref = at::matmul(a, b);
  EXPECT_EQ(out.scalar_type(), ref.scalar_type());
  EXPECT_EQ(out.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(out, ref));
}

}  // namespace
}  // namespace mpt

// --autocast: the flag's values and the scope's effect on the CPU (Debian's
// libtorch runs CPU autocast too): the frozen model's products run in bf16
// inside the scope, fp32 after it, and the loss stays close to fp32's.
#include "worker/model/autocast.h"

#include <torch/torch.h>

#include <cmath>
#include <memory>
#include <thread>

#include "gtest/gtest.h"
#include "worker/model/t5_model.h"

namespace mpt {
namespace {

TEST(ParseAutocast, KnownValuesAndAClearError) {
  EXPECT_EQ(*ParseAutocast(""), AutocastMode::kOff);
  EXPECT_EQ(*ParseAutocast("off"), AutocastMode::kOff);
  EXPECT_EQ(*ParseAutocast("bf16"), AutocastMode::kBf16);
  EXPECT_EQ(*ParseAutocast("BFloat16"), AutocastMode::kBf16);
  absl::StatusOr<AutocastMode> bad = ParseAutocast("fp8");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("\"fp8\" is not one of off, bf16"), std::string::npos);
  EXPECT_EQ(AutocastName(AutocastMode::kBf16), "bf16");
  EXPECT_EQ(AutocastName(AutocastMode::kOff), "off");
}

TEST(SpecAutocast, TheSpecWinsWhenItNamesAPrecision) {
  EXPECT_EQ(*SpecAutocast("", AutocastMode::kBf16), AutocastMode::kBf16);
  EXPECT_EQ(*SpecAutocast("", AutocastMode::kOff), AutocastMode::kOff);
  EXPECT_EQ(*SpecAutocast("off", AutocastMode::kBf16), AutocastMode::kOff);
  EXPECT_EQ(*SpecAutocast("bf16", AutocastMode::kOff), AutocastMode::kBf16);
  absl::StatusOr<AutocastMode> bad = SpecAutocast("fp16", AutocastMode::kOff);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("spec.autocast: \"fp16\""), std::string::npos);
}

TEST(CpuInfoHasNativeBf16, ReadsTheFlagsLines) {
  // A Zen 4 core (avx512_bf16), a Sapphire Rapids core (amx_bf16, also
  // avx512_bf16), an AVX2-only core, and text without flags.
  EXPECT_TRUE(CpuInfoHasNativeBf16(
      "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 "
      "avx512_vnni\n\nprocessor\t: 1\n"));
  EXPECT_TRUE(CpuInfoHasNativeBf16("flags\t: fpu avx2 amx_tile amx_bf16\n"));
  EXPECT_FALSE(CpuInfoHasNativeBf16(
      "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_bf16x\n"
      "bugs\t\t: avx512_bf16\n"));
  EXPECT_FALSE(CpuInfoHasNativeBf16("model name: avx512_bf16\n"));
  EXPECT_FALSE(CpuInfoHasNativeBf16(""));
}

TEST(AutocastScope, ProductsRunInBf16OnlyInsideTheScope) {
  at::Tensor a = at::randn({8, 16}), b = at::randn({16, 4});
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
  {
    AutocastScope scope(c10::Device(c10::kCPU), AutocastMode::kBf16);
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
    {
      AutocastScope inner(c10::Device(c10::kCPU), AutocastMode::kBf16);
      EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
    }
    // The inner scope restored the outer one's state.
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
    AutocastScope off(c10::Device(c10::kCPU), AutocastMode::kOff);
    EXPECT_EQ(at::mm(a, b).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(at::mm(a, b).scalar_type(), at::kFloat);
}

TEST(CurrentAutocast, SaysWhatThisThreadRunsUnder) {
  const c10::Device cpu(c10::kCPU);
  EXPECT_EQ(CurrentAutocast(cpu), AutocastMode::kOff);
  {
    AutocastScope scope(cpu, AutocastMode::kBf16);
    EXPECT_EQ(CurrentAutocast(cpu), AutocastMode::kBf16);
    // Another thread has its own state.
    AutocastMode elsewhere = AutocastMode::kBf16;
    std::thread([&] { elsewhere = CurrentAutocast(cpu); }).join();
    EXPECT_EQ(elsewhere, AutocastMode::kOff);
  }
  EXPECT_EQ(CurrentAutocast(cpu), AutocastMode::kOff);
  EXPECT_EQ(CurrentAutocast(c10::Device(c10::kMeta)), AutocastMode::kOff);
}

TEST(AutocastScope, FrozenModelLossStaysCloseAndPromptGradientsStayFp32) {
  auto model = T5Model::Load("demo/model");
  ASSERT_TRUE(model.ok()) << model.status();
  torch::manual_seed(3);
  const int64_t d = (*model)->config().d_model;
  at::Tensor ids = at::randint(3, 400, {2, 12}, at::kLong);
  at::Tensor labels = at::randint(3, 400, {2, 5}, at::kLong);
  at::Tensor prompt = (at::randn({1, 4, d}) * 0.5).set_requires_grad(true);
  auto run = [&](AutocastMode mode, at::Tensor* grad) {
    AutocastScope scope(c10::Device(c10::kCPU), mode);
    T5ForwardInputs in;
    in.inputs_embeds = at::cat({prompt.expand({2, 4, d}), (*model)->Embed(ids)}, 1);
    in.decoder_inputs_embeds = (*model)->Embed((*model)->ShiftRight(labels));
    in.labels = labels;
    T5Output out = (*model)->Forward(in);
    if (prompt.grad().defined()) prompt.mutable_grad().zero_();
    out.loss.backward();
    *grad = prompt.grad().clone();
    return std::make_pair(out.loss.item<double>(), out.logits.scalar_type());
  };
  at::Tensor g32, g16;
  auto [loss32, dtype32] = run(AutocastMode::kOff, &g32);
  auto [loss16, dtype16] = run(AutocastMode::kBf16, &g16);
  EXPECT_EQ(dtype32, at::kFloat);
  EXPECT_EQ(dtype16, at::kBFloat16);  // the LM head ran in bf16
  EXPECT_NE(loss32, loss16);
  EXPECT_NEAR(loss16, loss32, 2e-2 * std::abs(loss32));
  EXPECT_EQ(g16.scalar_type(), at::kFloat);
  const double rel = (g16 - g32).norm().item<double>() / g32.norm().item<double>();
  // Where bf16 products keep their sums in bfloat16 the gradient is
  // further off (0.14 on an AVX2-only AMD EPYC with libtorch 1.13, where
  // the programs warn about it).
  EXPECT_LT(rel, CpuBf16ProductsSumInFp32() ? 0.1 : 0.25) << "bf16 prompt gradient too far from fp32's";
  EXPECT_GT(rel, 0.0);
}

// The probe against products measured here on other operands: sums in
// fp32 leave only the result's rounding (about 2^-9 relative per element);
// sums in bfloat16 lose more as the products get longer.
TEST(CpuBf16ProductError, AgreesWithProductsOfOtherSizes) {
  const double probe = CpuBf16ProductError();
  ASSERT_GE(probe, 0.0);
  EXPECT_EQ(CpuBf16ProductError(), probe);  // measured once
  torch::manual_seed(5);
  at::NoGradGuard no_grad;
  for (int64_t k : {256, 2048}) {
    SCOPED_TRACE(k);
    at::Tensor a = at::randn({32, k}).to(at::kBFloat16), b = at::randn({k, 48}).to(at::kBFloat16);
    at::Tensor exact = at::mm(a.to(at::kDouble), b.to(at::kDouble));
    const double rel =
        ((at::mm(a, b).to(at::kDouble) - exact).norm() / exact.norm()).item<double>();
    if (CpuBf16ProductsSumInFp32()) {
      EXPECT_LT(rel, 0.004);
    } else {
      EXPECT_GT(rel, 0.004);
    }
  }
}

TEST(Bf16PrecisionWarning, OnlyForBf16ProductsOnACpuWhoseSumsAreBf16) {
  const c10::Device cpu(c10::kCPU);
  EXPECT_EQ(Bf16PrecisionWarning(cpu, at::kFloat), "");
  EXPECT_EQ(Bf16PrecisionWarning(cpu, at::kHalf), "");
  EXPECT_EQ(Bf16PrecisionWarning(c10::Device(c10::kCUDA, 0), at::kBFloat16), "");
  const std::string warning = Bf16PrecisionWarning(cpu, at::kBFloat16);
  if (CpuBf16ProductsSumInFp32()) {
    EXPECT_EQ(warning, "");
  } else {
    EXPECT_NE(warning.find("keep their sums in bfloat16"), std::string::npos) << warning;
    EXPECT_NE(warning.find("Train in fp32"), std::string::npos) << warning;
  }
}

}  // namespace
}  // namespace mpt

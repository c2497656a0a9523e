#include "worker/model/batched_matmul.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include <ATen/record_function.h>
#include <torch/csrc/autograd/custom_function.h>

#include "worker/model/autocast.h"

namespace mpt {
namespace {

// The Fortran BLAS interface libtorch itself calls on a CPU.
using SgemmFn = void (*)(const char* transa, const char* transb, const int* m, const int* n,
                         const int* k, const float* alpha, const float* a, const int* lda,
                         const float* b, const int* ldb, const float* beta, float* c,
                         const int* ldc);

// Null where libtorch has MKL: its batched products are already one call
// there, and the sgemm_ such a libtorch exports is MKL's.
SgemmFn Sgemm() {
  static const SgemmFn fn =
      at::hasMKL() ? nullptr : reinterpret_cast<SgemmFn>(dlsym(RTLD_DEFAULT, "sgemm_"));
  return fn;
}

bool FitsInt(int64_t v) { return v >= 0 && v <= std::numeric_limits<int>::max(); }

// One [B, H, R, C] operand as BLAS reads each (b, h) slice: a row-major
// matrix (element (r, c) at r * ld + c) or a column-major one (c * ld + r).
struct Operand {
  const float* data = nullptr;
  int64_t stride_b = 0;
  int64_t stride_h = 0;
  bool row_major = true;
  int ld = 1;
};

// False when the slices have no unit stride (or a leading dimension BLAS
// refuses): the caller makes the tensor contiguous first.
bool Describe(const at::Tensor& t, Operand* op) {
  const int64_t rows = t.size(2), cols = t.size(3);
  const int64_t rs = t.stride(2), cs = t.stride(3);
  int64_t ld = -1;
  if ((cols == 1 || cs == 1) && (rows == 1 || rs >= cols)) {
    op->row_major = true;
    ld = rows == 1 ? cols : rs;
  } else if ((rows == 1 || rs == 1) && (cols == 1 || cs >= rows)) {
    op->row_major = false;
    ld = cols == 1 ? rows : cs;
  } else {
    return false;
  }
  if (!FitsInt(ld) || ld < 1) return false;
  op->ld = static_cast<int>(ld);
  op->data = t.data_ptr<float>();
  op->stride_b = t.stride(0);
  op->stride_h = t.stride(1);
  return true;
}

// a [B, H, M, K] @ b [B, H, K, N] by one sgemm_ per (b, h), into a new
// tensor whose memory is [B, H, M, N] or, for kHeadsInner, [B, M, H, N].
// Returns that tensor as allocated (not permuted).
at::Tensor Product(at::Tensor a, at::Tensor b, ProductLayout layout) {
  RECORD_FUNCTION("mpt::BatchedMatmul", std::vector<c10::IValue>());
  const int64_t batch = a.size(0), heads = a.size(1);
  const int64_t m = a.size(2), k = a.size(3), n = b.size(3);
  Operand oa, ob;
  if (!Describe(a, &oa)) {
    a = a.contiguous();
    Describe(a, &oa);
  }
  if (!Describe(b, &ob)) {
    b = b.contiguous();
    Describe(b, &ob);
  }
  const bool heads_inner = layout == ProductLayout::kHeadsInner;
  at::Tensor out = heads_inner ? at::empty({batch, m, heads, n}, a.options())
                               : at::empty({batch, heads, m, n}, a.options());
  if (k == 0) return out.zero_();
  float* c = out.data_ptr<float>();
  const int64_t out_stride_b = m * heads * n;
  const int64_t out_stride_h = heads_inner ? n : m * n;
  const int ldc = static_cast<int>(heads_inner ? heads * n : n);
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  const float one = 1.0f, zero = 0.0f;
  // Row-major C = A B is column-major C^T = B^T A^T: B comes first. A
  // row-major operand's memory, read column-major, is its transpose.
  const char ta = oa.row_major ? 'N' : 'T';
  const char tb = ob.row_major ? 'N' : 'T';
  const SgemmFn sgemm = Sgemm();
  for (int64_t i = 0; i < batch; ++i) {
    for (int64_t h = 0; h < heads; ++h) {
      sgemm(&tb, &ta, &ni, &mi, &ki, &one, ob.data + i * ob.stride_b + h * ob.stride_h, &ob.ld,
            oa.data + i * oa.stride_b + h * oa.stride_h, &oa.ld, &zero,
            c + i * out_stride_b + h * out_stride_h, &ldc);
    }
  }
  return out;
}

// The product as a [B, H, M, N] view of what Product allocated.
at::Tensor AsHeadsFirst(const at::Tensor& allocated, ProductLayout layout) {
  return layout == ProductLayout::kHeadsInner ? allocated.permute({0, 2, 1, 3}) : allocated;
}

// The gradient of an operand in the memory order the operand has: head-split
// views of a [B, T, H * d] projection (head stride below the row stride)
// get [B, T, H, d] memory, so the view's backward needs no copy.
ProductLayout GradLayout(const at::Tensor& operand) {
  return operand.stride(1) < operand.stride(2) ? ProductLayout::kHeadsInner
                                               : ProductLayout::kContiguous;
}

class BatchedMatmulFunction : public torch::autograd::Function<BatchedMatmulFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a,
                            const at::Tensor& b, int64_t layout) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["layout"] = layout;
    return Product(a, b, static_cast<ProductLayout>(layout));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& a = saved[0];
    const at::Tensor& b = saved[1];
    const auto layout = static_cast<ProductLayout>(ctx->saved_data["layout"].toInt());
    at::Tensor grad_a, grad_b;
    if (!grads[0].defined()) return {grad_a, grad_b, at::Tensor()};
    const at::Tensor grad = AsHeadsFirst(grads[0], layout);
    if (ctx->needs_input_grad(0)) {
      const ProductLayout l = GradLayout(a);
      grad_a = AsHeadsFirst(Product(grad, b.transpose(2, 3), l), l);
    }
    if (ctx->needs_input_grad(1)) {
      const ProductLayout l = GradLayout(b);
      grad_b = AsHeadsFirst(Product(a.transpose(2, 3), grad, l), l);
    }
    return {grad_a, grad_b, at::Tensor()};
  }
};

bool UsesBlasPath(const at::Tensor& a, const at::Tensor& b) {
  if (Sgemm() == nullptr) return false;
  if (a.dim() != 4 || b.dim() != 4) return false;
  if (!a.device().is_cpu() || !b.device().is_cpu()) return false;
  if (a.scalar_type() != at::kFloat || b.scalar_type() != at::kFloat) return false;
  if (a.size(0) != b.size(0) || a.size(1) != b.size(1) || a.size(3) != b.size(2)) return false;
  for (int64_t d : {a.size(0), a.size(1), a.size(2), b.size(3)}) {
    if (d == 0) return false;
  }
  // Dimensions and the leading dimensions of heads-inner results (forward
  // and gradients) are BLAS ints.
  for (int64_t d : {a.size(2), a.size(3), b.size(3), a.size(1) * b.size(3),
                    a.size(1) * a.size(3)}) {
    if (!FitsInt(d)) return false;
  }
  // Under autocast at::matmul runs in the autocast dtype; keep its choice.
  return CurrentAutocast(a.device()) == AutocastMode::kOff;
}

}  // namespace

bool BatchedMatmulUsesBlas() { return Sgemm() != nullptr; }

at::Tensor BatchedMatmul(const at::Tensor& a, const at::Tensor& b, ProductLayout layout) {
  if (!UsesBlasPath(a, b)) return at::matmul(a, b);
  return AsHeadsFirst(BatchedMatmulFunction::apply(a, b, static_cast<int64_t>(layout)), layout);
}

}  // namespace mpt

// Attention's per-head matrix products without per-head dispatch.
//
// at::matmul on [B, H, M, K] x [B, H, K, N] views (the head-split views of a
// fused projection) first copies both operands into contiguous [B*H, ...]
// tensors and then, on a CPU without MKL, runs one libtorch addmm (and its
// select, conj and stride checks) per (b, h). BatchedMatmul hands each
// (b, h) slice of the views straight to the BLAS that libtorch itself
// calls (`sgemm_`), with its strides as leading dimensions: no copies, one
// BLAS call per slice, and a backward pass made the same way. The products
// are the ones at::matmul computes (same BLAS, same shapes).
//
//   at::Tensor scores = BatchedMatmul(q, k.transpose(-1, -2));
//   at::Tensor context = BatchedMatmul(probs, v, ProductLayout::kHeadsInner);
//   // context's memory is [B, M, H, N]: merging the heads is a view.
//
// The fast path needs a CPU, fp32 operands of 4 dimensions with the same
// (B, H), autocast off on the calling thread, a libtorch without MKL and a
// BLAS `sgemm_` in the process (Debian's libtorch with OpenBLAS or
// reference BLAS). Anything else (CUDA, bf16, autocast, the PyPI wheels,
// whose MKL already runs a batch of products as one call) is at::matmul,
// so callers need no second path.
#ifndef MPT_WORKER_MODEL_BATCHED_MATMUL_H_
#define MPT_WORKER_MODEL_BATCHED_MATMUL_H_

#include <ATen/ATen.h>

namespace mpt {

// The memory order of BatchedMatmul's [B, H, M, N] result.
enum class ProductLayout {
  kContiguous,  // [B, H, M, N]
  kHeadsInner,  // [B, M, H, N], returned as a permuted view
};

// a @ b for a [B, H, M, K] and b [B, H, K, N] (any strides); differentiable
// in both. Other shapes, devices and dtypes: at::matmul(a, b).
at::Tensor BatchedMatmul(const at::Tensor& a, const at::Tensor& b,
                         ProductLayout layout = ProductLayout::kContiguous);

// Whether BatchedMatmul's BLAS path is available in this process (libtorch
// without MKL, a `sgemm_` found); the other conditions are per call.
bool BatchedMatmulUsesBlas();

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_BATCHED_MATMUL_H_

// Packing a list of tensors into one flat buffer per dtype, so that a
// collective moves each dtype in one call, and writing the results back.
#ifndef MPT_WORKER_COLLECTIVES_TENSOR_PACKING_H_
#define MPT_WORKER_COLLECTIVES_TENSOR_PACKING_H_

#include <cstddef>
#include <initializer_list>
#include <vector>

#include <ATen/ATen.h>

namespace mpt {

// The tensors of one dtype in one contiguous buffer on their device; for a
// single contiguous tensor, the tensor itself (`aliases`).
struct PackedTensors {
  at::ScalarType dtype;
  at::Tensor buffer;
  std::vector<size_t> members;  // indices into the packed vector
  bool aliases = false;
};

// One entry per dtype of `dtypes` that `tensors` holds, in that order.
// Tensors of other dtypes are left out (callers check dtypes first). Call
// without gradient recording: the copies are not part of any graph.
std::vector<PackedTensors> PackByDtype(const std::vector<at::Tensor>& tensors,
                                       std::initializer_list<at::ScalarType> dtypes);

// Copies a packed buffer back into its members (in place, views included).
void Unpack(const PackedTensors& packed, std::vector<at::Tensor>& tensors);

}  // namespace mpt

#endif  // MPT_WORKER_COLLECTIVES_TENSOR_PACKING_H_

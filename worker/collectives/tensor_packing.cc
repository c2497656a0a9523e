#include "worker/collectives/tensor_packing.h"

namespace mpt {

std::vector<PackedTensors> PackByDtype(const std::vector<at::Tensor>& tensors,
                                       std::initializer_list<at::ScalarType> dtypes) {
  std::vector<PackedTensors> out;
  for (at::ScalarType dtype : dtypes) {
    PackedTensors p;
    p.dtype = dtype;
    int64_t total = 0;
    for (size_t i = 0; i < tensors.size(); ++i) {
      if (tensors[i].scalar_type() != dtype) continue;
      p.members.push_back(i);
      total += tensors[i].numel();
    }
    if (total == 0) continue;
    const at::Tensor& first = tensors[p.members[0]];
    if (p.members.size() == 1 && first.is_contiguous()) {
      p.buffer = first;
      p.aliases = true;
    } else {
      p.buffer = at::empty({total}, first.options());
      int64_t offset = 0;
      for (size_t i : p.members) {
        const at::Tensor& t = tensors[i];
        p.buffer.narrow(0, offset, t.numel()).view(t.sizes()).copy_(t);
        offset += t.numel();
      }
    }
    out.push_back(std::move(p));
  }
  return out;
}

void Unpack(const PackedTensors& packed, std::vector<at::Tensor>& tensors) {
  if (packed.aliases) return;
  int64_t offset = 0;
  for (size_t i : packed.members) {
    at::Tensor& t = tensors[i];
    t.copy_(packed.buffer.narrow(0, offset, t.numel()).view(t.sizes()));
    offset += t.numel();
  }
}

}  // namespace mpt

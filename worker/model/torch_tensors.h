// Safetensors <-> libtorch: whole files, single tensors, and Hugging Face
// model folders (model.safetensors, or model.safetensors.index.json plus the
// shards it lists).
//
// Tensors handed out own their memory (CPU, contiguous): they stay valid
// after the file is closed. Every error message names the file and, where
// there is one, the tensor. No function here lets a c10::Error escape.
#ifndef MPT_WORKER_MODEL_TORCH_TENSORS_H_
#define MPT_WORKER_MODEL_TORCH_TENSORS_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/safetensors.h"

namespace mpt {

// dtype mapping: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
c10::ScalarType ToScalarType(DType dtype);
// INVALID_ARGUMENT for a scalar type safetensors has no name for here
// (complex, quantised, ...).
absl::StatusOr<DType> FromScalarType(c10::ScalarType type);

// A CPU tensor holding a copy of the tensor's bytes.
absl::StatusOr<at::Tensor> ReadTensor(const SafetensorsReader& reader, const TensorInfo& info);

// Every tensor of a file. Errors as SafetensorsReader::Open.
absl::StatusOr<std::map<std::string, at::Tensor>> LoadSafetensors(const std::string& path);

// Writes `tensors` (any device, any layout: each is copied to a contiguous
// CPU tensor first; gradients are not followed) in name order, atomically.
// INVALID_ARGUMENT naming the tensor for an unsupported dtype or an
// undefined tensor; otherwise errors as WriteSafetensors.
absl::Status SaveSafetensors(const std::string& path,
                             const std::map<std::string, at::Tensor>& tensors,
                             const std::map<std::string, std::string>& metadata = {});

// The weights of a Hugging Face model folder, opened without reading the
// data: either `folder/model.safetensors`, or the shards that
// `folder/model.safetensors.index.json` lists in its "weight_map".
//
// Open() validates the whole layout: NOT_FOUND naming the folder when it has
// neither file; for an index, INVALID_ARGUMENT naming the index when its JSON
// is malformed or has no weight_map of name -> file, NOT_FOUND naming the
// index and the shard when a listed shard does not exist, INVALID_ARGUMENT
// naming the index, the tensor and the shard when a tensor the weight_map
// places in a shard is not in it; shard files themselves are validated as
// SafetensorsReader::Open does. A tensor present in two shards is an error.
//
// Immutable after Open(); safe to share between threads.
class ModelTensors {
 public:
  static absl::StatusOr<std::unique_ptr<ModelTensors>> Open(const std::string& folder);

  ModelTensors(const ModelTensors&) = delete;
  ModelTensors& operator=(const ModelTensors&) = delete;

  const std::string& folder() const { return folder_; }
  // The files opened: one, or the shards in index order.
  std::vector<std::string> files() const;

  // nullptr when the folder has no tensor of that name.
  const TensorInfo* Find(absl::string_view name) const;
  // NOT_FOUND naming the folder and tensor when absent; else a CPU copy.
  absl::StatusOr<at::Tensor> Load(absl::string_view name) const;
  // The file a tensor lives in (empty when absent).
  std::string FileOf(absl::string_view name) const;
  // All tensor names, sorted.
  std::vector<std::string> names() const;

 private:
  ModelTensors() = default;

  struct Entry {
    const SafetensorsReader* reader;
    const TensorInfo* info;
  };

  std::string folder_;
  std::vector<std::unique_ptr<SafetensorsReader>> readers_;
  std::map<std::string, Entry, std::less<>> entries_;
};

// Every tensor of a model folder (single file or shards).
absl::StatusOr<std::map<std::string, at::Tensor>> LoadModelFolder(const std::string& folder);

// "[2, 3]": a shape as error messages write it.
std::string ShapeString(at::IntArrayRef shape);

// torch.finfo(dtype).min, the value transformers' attention masks use
// (float's for dtypes other than Double, Half and BFloat16).
double LowestValue(c10::ScalarType dtype);

// OK for the dtypes a model's weights may be loaded in (Float, Double,
// Half, BFloat16); INVALID_ARGUMENT "<option> <dtype> is not supported ..."
// otherwise.
absl::Status CheckWeightDtype(c10::ScalarType dtype, absl::string_view option);

// Reads a model's frozen weights out of `tensors` with the checks every
// model loader makes: Get() is INVALID_ARGUMENT naming the folder, the
// tensor and the expected shape for a missing tensor, adding the file for a
// misshapen or non-floating one; else the tensor converted to `device` and
// `dtype`, never requiring grad. num_parameters() counts the elements of
// every tensor got. Not thread-safe; `tensors` must outlive it.
class FrozenWeightLoader {
 public:
  FrozenWeightLoader(const ModelTensors& tensors, c10::Device device, c10::ScalarType dtype)
      : tensors_(tensors), device_(device), dtype_(dtype) {}

  bool Has(const std::string& name) const { return tensors_.Find(name) != nullptr; }
  absl::StatusOr<at::Tensor> Get(const std::string& name, std::vector<int64_t> shape);
  int64_t num_parameters() const { return num_parameters_; }

 private:
  const ModelTensors& tensors_;
  const c10::Device device_;
  const c10::ScalarType dtype_;
  int64_t num_parameters_ = 0;
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_TORCH_TENSORS_H_

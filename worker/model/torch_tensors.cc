#include "worker/model/torch_tensors.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "common/status_macros.h"

namespace mpt {
namespace {

bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string JoinPath(const std::string& folder, absl::string_view name) {
  if (folder.empty() || folder.back() == '/') return absl::StrCat(folder, name);
  return absl::StrCat(folder, "/", name);
}

}  // namespace

c10::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kF64: return c10::ScalarType::Double;
    case DType::kF32: return c10::ScalarType::Float;
    case DType::kF16: return c10::ScalarType::Half;
    case DType::kBF16: return c10::ScalarType::BFloat16;
    case DType::kI64: return c10::ScalarType::Long;
    case DType::kI32: return c10::ScalarType::Int;
    case DType::kI16: return c10::ScalarType::Short;
    case DType::kI8: return c10::ScalarType::Char;
    case DType::kU8: return c10::ScalarType::Byte;
    case DType::kBool: return c10::ScalarType::Bool;
  }
  return c10::ScalarType::Undefined;
}

absl::StatusOr<DType> FromScalarType(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Double: return DType::kF64;
    case c10::ScalarType::Float: return DType::kF32;
    case c10::ScalarType::Half: return DType::kF16;
    case c10::ScalarType::BFloat16: return DType::kBF16;
    case c10::ScalarType::Long: return DType::kI64;
    case c10::ScalarType::Int: return DType::kI32;
    case c10::ScalarType::Short: return DType::kI16;
    case c10::ScalarType::Char: return DType::kI8;
    case c10::ScalarType::Byte: return DType::kU8;
    case c10::ScalarType::Bool: return DType::kBool;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("scalar type ", c10::toString(type), " has no safetensors dtype here"));
  }
}

absl::StatusOr<at::Tensor> ReadTensor(const SafetensorsReader& reader, const TensorInfo& info) {
  absl::Span<const uint8_t> bytes = reader.Data(info);
  try {
    // A fresh allocation is suitably aligned whatever the offset in the file;
    // copying the bytes also detaches the tensor from the mapping.
    at::Tensor tensor = at::empty(info.shape, at::TensorOptions().dtype(ToScalarType(info.dtype)));
    if (static_cast<size_t>(tensor.nbytes()) != bytes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(reader.path(), ": tensor \"", info.name, "\" has ", bytes.size(),
                       " bytes, its shape needs ", tensor.nbytes()));
    }
    if (!bytes.empty()) std::memcpy(tensor.data_ptr(), bytes.data(), bytes.size());
    return tensor;
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(reader.path(), ": tensor \"", info.name,
                                            "\": ", e.what_without_backtrace()));
  }
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadSafetensors(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> reader, SafetensorsReader::Open(path));
  std::map<std::string, at::Tensor> out;
  for (const TensorInfo& info : reader->tensors()) {
    ASSIGN_OR_RETURN(out[info.name], ReadTensor(*reader, info));
  }
  return out;
}

absl::Status SaveSafetensors(const std::string& path,
                             const std::map<std::string, at::Tensor>& tensors,
                             const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // owns the contiguous CPU copies
  std::vector<TensorToWrite> to_write;
  keep.reserve(tensors.size());
  to_write.reserve(tensors.size());
  try {
    for (const auto& [name, tensor] : tensors) {
      if (!tensor.defined()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor \"", name, "\" is undefined"));
      }
      absl::StatusOr<DType> dtype = FromScalarType(tensor.scalar_type());
      if (!dtype.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor \"", name, "\": ", dtype.status().message()));
      }
      at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
      keep.push_back(cpu);
      TensorToWrite t;
      t.name = name;
      t.dtype = *dtype;
      t.shape.assign(cpu.sizes().begin(), cpu.sizes().end());
      t.bytes = absl::Span<const uint8_t>(static_cast<const uint8_t*>(cpu.data_ptr()),
                                          static_cast<size_t>(cpu.nbytes()));
      to_write.push_back(std::move(t));
    }
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(path, ": ", e.what_without_backtrace()));
  }
  return WriteSafetensors(path, to_write, metadata);
}

absl::StatusOr<std::unique_ptr<ModelTensors>> ModelTensors::Open(const std::string& folder) {
  std::unique_ptr<ModelTensors> out(new ModelTensors());
  out->folder_ = folder;
  const std::string single = JoinPath(folder, "model.safetensors");
  const std::string index_path = JoinPath(folder, "model.safetensors.index.json");

  auto add_reader = [&](std::unique_ptr<SafetensorsReader> reader) -> absl::Status {
    for (const TensorInfo& info : reader->tensors()) {
      auto [it, inserted] = out->entries_.emplace(info.name, Entry{reader.get(), &info});
      if (!inserted) {
        return absl::InvalidArgumentError(absl::StrCat(
            folder, ": tensor \"", info.name, "\" is in both ", it->second.reader->path(),
            " and ", reader->path()));
      }
    }
    out->readers_.push_back(std::move(reader));
    return absl::OkStatus();
  };

  if (FileExists(single)) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> reader, SafetensorsReader::Open(single));
    RETURN_IF_ERROR(add_reader(std::move(reader)));
    return out;
  }
  if (!FileExists(index_path)) {
    return absl::NotFoundError(absl::StrCat(
        folder, ": no model.safetensors or model.safetensors.index.json (other weight "
                "formats such as pytorch_model.bin are not supported; convert them to "
                "safetensors)"));
  }

  ASSIGN_OR_RETURN(std::string text, ReadFile(index_path));
  ASSIGN_OR_RETURN(nlohmann::json index, ParseJson(text, index_path));
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(index_path, ": no \"weight_map\" object of tensor name -> shard file"));
  }
  // tensor -> shard, in the index's order; shards in first-mention order.
  std::vector<std::pair<std::string, std::string>> weight_map;
  std::vector<std::string> shards;
  std::set<std::string> seen;
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || file.get<std::string>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": weight_map entry \"", name, "\" must name a shard file"));
    }
    const std::string shard = file.get<std::string>();
    if (shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": weight_map entry \"", name, "\" names \"", shard,
          "\", which is not a file name inside the folder"));
    }
    weight_map.emplace_back(name, shard);
    if (seen.insert(shard).second) shards.push_back(shard);
  }
  if (shards.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": the weight_map is empty"));
  }
  for (const std::string& shard : shards) {
    const std::string path = JoinPath(folder, shard);
    if (!FileExists(path)) {
      return absl::NotFoundError(
          absl::StrCat(index_path, ": shard \"", shard, "\" is listed but ", path,
                       " does not exist"));
    }
  }
  for (const std::string& shard : shards) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsReader> reader,
                     SafetensorsReader::Open(JoinPath(folder, shard)));
    RETURN_IF_ERROR(add_reader(std::move(reader)));
  }
  for (const auto& [name, shard] : weight_map) {
    const std::string path = JoinPath(folder, shard);
    auto it = out->entries_.find(name);
    if (it == out->entries_.end() || it->second.reader->path() != path) {
      return absl::InvalidArgumentError(absl::StrCat(
          index_path, ": tensor \"", name, "\" is listed in shard \"", shard,
          "\" but that shard does not hold it"));
    }
  }
  return out;
}

std::vector<std::string> ModelTensors::files() const {
  std::vector<std::string> out;
  for (const auto& reader : readers_) out.push_back(reader->path());
  return out;
}

const TensorInfo* ModelTensors::Find(absl::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.info;
}

std::string ModelTensors::FileOf(absl::string_view name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? std::string() : it->second.reader->path();
}

absl::StatusOr<at::Tensor> ModelTensors::Load(absl::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat(folder_, ": no tensor \"", name, "\""));
  }
  return ReadTensor(*it->second.reader, *it->second.info);
}

std::vector<std::string> ModelTensors::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

absl::StatusOr<std::map<std::string, at::Tensor>> LoadModelFolder(const std::string& folder) {
  ASSIGN_OR_RETURN(std::unique_ptr<ModelTensors> model, ModelTensors::Open(folder));
  std::map<std::string, at::Tensor> out;
  for (const std::string& name : model->names()) {
    ASSIGN_OR_RETURN(out[name], model->Load(name));
  }
  return out;
}

std::string ShapeString(at::IntArrayRef shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

double LowestValue(c10::ScalarType dtype) {
  switch (dtype) {
    case c10::ScalarType::Double: return std::numeric_limits<double>::lowest();
    case c10::ScalarType::Half: return -65504.0;
    case c10::ScalarType::BFloat16: return -3.3895313892515355e38;
    default: return std::numeric_limits<float>::lowest();
  }
}

absl::Status CheckWeightDtype(c10::ScalarType dtype, absl::string_view option) {
  switch (dtype) {
    case c10::ScalarType::Float:
    case c10::ScalarType::Double:
    case c10::ScalarType::Half:
    case c10::ScalarType::BFloat16:
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError(absl::StrCat(option, " ", c10::toString(dtype),
                                                     " is not supported (Float, Double, Half or "
                                                     "BFloat16)"));
  }
}

absl::StatusOr<at::Tensor> FrozenWeightLoader::Get(const std::string& name,
                                                   std::vector<int64_t> shape) {
  const TensorInfo* info = tensors_.Find(name);
  if (info == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(tensors_.folder(), ": missing tensor \"", name,
                                                   "\" (expected shape ", ShapeString(shape),
                                                   ")"));
  }
  if (info->shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        tensors_.folder(), ": tensor \"", name, "\" has shape ", ShapeString(info->shape),
        ", expected ", ShapeString(shape), " (in ", tensors_.FileOf(name), ")"));
  }
  switch (info->dtype) {
    case DType::kF64:
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16:
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          tensors_.folder(), ": tensor \"", name, "\" has dtype ", DTypeName(info->dtype),
          ", expected a floating dtype (in ", tensors_.FileOf(name), ")"));
  }
  ASSIGN_OR_RETURN(at::Tensor tensor, tensors_.Load(name));
  num_parameters_ += tensor.numel();
  return tensor.to(device_, dtype_).set_requires_grad(false);
}

}  // namespace mpt

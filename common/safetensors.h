// Reading and writing safetensors files, with no dependency on libtorch.
//
// The format: an 8-byte little-endian header length N, N bytes of JSON
// mapping each tensor name to {"dtype", "shape", "data_offsets": [begin,
// end]} (offsets relative to the end of the header) plus an optional
// "__metadata__" object of string -> string, then the raw little-endian data.
//
// SafetensorsReader memory-maps the file and validates the whole header
// before handing anything out: the header length against the file size, the
// JSON, every dtype, every shape, every offset pair (in range, begin <= end,
// end - begin == numel * element size, no two tensors overlapping, the data
// section fully covered). Every error message names the file and the problem.
//
// Thread-safety: a reader is immutable after Open() and may be shared.
#ifndef MPT_COMMON_SAFETENSORS_H_
#define MPT_COMMON_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace mpt {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32", "BF16", ... as written in the header.
absl::string_view DTypeName(DType dtype);
// Parses a header dtype string; INVALID_ARGUMENT for an unknown one.
absl::StatusOr<DType> ParseDType(absl::string_view name);
// Bytes per element.
size_t DTypeSize(DType dtype);

// Number of elements of a shape (1 for a scalar, shape {}).
int64_t NumElements(absl::Span<const int64_t> shape);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  // Byte range inside the data section.
  uint64_t begin = 0;
  uint64_t end = 0;
};

class SafetensorsReader {
 public:
  // Maps and validates `path`. NOT_FOUND when the file does not exist,
  // INVALID_ARGUMENT (message: "<path>: <problem>") when it is truncated or
  // its header is malformed or inconsistent, INTERNAL for I/O failures.
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> Open(
      const std::string& path);

  // The same checks over a file's bytes held in memory (an upload not yet
  // written anywhere); `name` stands for the path in messages. Errors as
  // for Open(), less NOT_FOUND and INTERNAL.
  static absl::StatusOr<std::unique_ptr<SafetensorsReader>> FromBytes(
      std::string bytes, const std::string& name);

  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  // Tensors in ascending order of their data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // nullptr when there is no tensor of that name.
  const TensorInfo* Find(absl::string_view name) const;
  // The tensor's raw little-endian bytes; valid while the reader lives.
  absl::Span<const uint8_t> Data(const TensorInfo& info) const;

 private:
  SafetensorsReader() = default;
  // Validates the header of map_[0, map_size_) (at least 8 bytes) and fills
  // tensors_, index_, metadata_ and data_.
  absl::Status Parse();

  std::string path_;
  std::string owned_;  // FromBytes(): the bytes map_ points into
  const uint8_t* map_ = nullptr;  // mmap()ed unless owned_ holds the bytes
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data section inside map_
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// One tensor to write. `bytes` must hold NumElements(shape) * DTypeSize(dtype)
// little-endian bytes and stay valid during the call.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  absl::Span<const uint8_t> bytes;
};

// Writes a safetensors file atomically: the data goes to a temporary file in
// the same folder, which is flushed and renamed over `path`, so a reader never
// sees a half-written file and an existing file is kept when writing fails.
// Tensors are laid out in the order given, after a header that lists
// "__metadata__" first and is padded with spaces to a multiple of 8 bytes.
// INVALID_ARGUMENT for duplicate or empty names, a negative dimension, a byte
// count that does not match the shape, or "__metadata__" used as a tensor
// name or metadata key; INTERNAL for I/O failures (the message says which
// step failed). Every message starts with "<path>: ".
absl::Status WriteSafetensors(
    const std::string& path, const std::vector<TensorToWrite>& tensors,
    const std::map<std::string, std::string>& metadata = {});

}  // namespace mpt

#endif  // MPT_COMMON_SAFETENSORS_H_

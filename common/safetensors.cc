#include "common/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/file_util.h"
#include "common/json_util.h"
#include "common/status_macros.h"
#include "nlohmann/json.hpp"

namespace mpt {
namespace {

// The reference implementation refuses headers above 100 MB; a real header
// of a few thousand tensors is a few hundred kilobytes.
constexpr uint64_t kMaxHeaderSize = 100'000'000;
constexpr char kMetadataKey[] = "__metadata__";

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8},  {DType::kF32, "F32", 4}, {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2}, {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},  {DType::kI8, "I8", 1},   {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
};

const DTypeEntry& Entry(DType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  return kDTypes[0];  // unreachable for a valid enum value
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string ErrnoText(int err) { return std::strerror(err); }

// Bytes of a tensor, or an error when a dimension is negative or the count
// does not fit in 64 bits.
absl::StatusOr<uint64_t> ByteSize(DType dtype, absl::Span<const int64_t> shape) {
  uint64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeString(shape), " has a negative dimension"));
    }
    uint64_t d = static_cast<uint64_t>(dim);
    if (d != 0 && count > std::numeric_limits<uint64_t>::max() / d) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeString(shape), " overflows 64 bits"));
    }
    count *= d;
  }
  uint64_t size = DTypeSize(dtype);
  if (count > std::numeric_limits<uint64_t>::max() / size) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeString(shape), " overflows 64 bits"));
  }
  return count * size;
}

uint64_t ReadLittleEndian64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses one header entry (everything but "__metadata__").
absl::StatusOr<TensorInfo> ParseTensorEntry(const std::string& name,
                                            const nlohmann::json& entry) {
  auto fail = [&name](const std::string& problem) {
    return absl::InvalidArgumentError(absl::StrCat("tensor \"", name, "\": ", problem));
  };
  if (name.empty()) return fail("empty tensor name");
  if (!entry.is_object()) return fail("entry is not a JSON object");
  for (const auto& item : entry.items()) {
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets") {
      return fail(absl::StrCat("unknown field \"", item.key(), "\""));
    }
  }
  TensorInfo info;
  info.name = name;

  auto dtype_it = entry.find("dtype");
  if (dtype_it == entry.end()) return fail("missing field \"dtype\"");
  if (!dtype_it->is_string()) return fail("field \"dtype\" is not a string");
  auto dtype = ParseDType(dtype_it->get_ref<const std::string&>());
  if (!dtype.ok()) return fail(absl::StrCat("field \"dtype\": ", dtype.status().message()));
  info.dtype = *dtype;

  auto shape_it = entry.find("shape");
  if (shape_it == entry.end()) return fail("missing field \"shape\"");
  if (!shape_it->is_array()) return fail("field \"shape\" is not an array");
  for (const nlohmann::json& dim : *shape_it) {
    if (dim.is_number_integer() && !dim.is_number_unsigned() && dim.get<int64_t>() < 0) {
      return fail(absl::StrCat("field \"shape\" has a negative dimension ", DescribeJson(dim)));
    }
    if (!dim.is_number_unsigned() ||
        dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return fail(absl::StrCat("field \"shape\" has an invalid dimension ", DescribeJson(dim)));
    }
    info.shape.push_back(dim.get<int64_t>());
  }

  auto offsets_it = entry.find("data_offsets");
  if (offsets_it == entry.end()) return fail("missing field \"data_offsets\"");
  if (!offsets_it->is_array() || offsets_it->size() != 2 ||
      !(*offsets_it)[0].is_number_unsigned() || !(*offsets_it)[1].is_number_unsigned()) {
    return fail(absl::StrCat("field \"data_offsets\" is not a pair of non-negative integers: ",
                             DescribeJson(*offsets_it)));
  }
  info.begin = (*offsets_it)[0].get<uint64_t>();
  info.end = (*offsets_it)[1].get<uint64_t>();
  if (info.begin > info.end) {
    return fail(absl::StrCat("field \"data_offsets\" [", info.begin, ", ", info.end,
                             "] ends before it begins"));
  }
  auto bytes = ByteSize(info.dtype, info.shape);
  if (!bytes.ok()) return fail(absl::StrCat("field \"shape\": ", bytes.status().message()));
  if (info.end - info.begin != *bytes) {
    return fail(absl::StrCat("field \"data_offsets\" [", info.begin, ", ", info.end, "] spans ",
                             info.end - info.begin, " bytes but shape ",
                             ShapeString(info.shape), " of ", DTypeName(info.dtype), " needs ",
                             *bytes));
  }
  return info;
}

// Writes all of `bytes` to `fd`, retrying short writes.
absl::Status WriteAll(int fd, const uint8_t* bytes, size_t size, const std::string& what) {
  while (size > 0) {
    ssize_t n = ::write(fd, bytes, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat(what, ": write failed: ", ErrnoText(errno)));
    }
    bytes += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

std::string DirectoryOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Creates a fresh temporary file next to `path`; the mode follows the umask
// like any newly created file.
absl::StatusOr<std::pair<int, std::string>> CreateTempFile(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string temp = absl::StrCat(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1));
    int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) return std::make_pair(fd, temp);
    if (errno != EEXIST) {
      return absl::InternalError(
          absl::StrCat(path, ": cannot create temporary file ", temp, ": ", ErrnoText(errno)));
    }
  }
  return absl::InternalError(absl::StrCat(path, ": cannot find a free temporary file name"));
}

}  // namespace

absl::string_view DTypeName(DType dtype) { return Entry(dtype).name; }

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (name == e.name) return e.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown or unsupported dtype \"", name, "\""));
}

size_t DTypeSize(DType dtype) { return Entry(dtype).size; }

int64_t NumElements(absl::Span<const int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::Open(
    const std::string& path) {
  auto invalid = [&path](const std::string& problem) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
  };

  ASSIGN_OR_RETURN(int fd, OpenRegularFile(path));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status error = FileErrnoStatus(path, "cannot stat", errno);
    ::close(fd);
    return error;
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return invalid(absl::StrCat("truncated: ", file_size,
                                " bytes is too short for the 8-byte header length"));
  }
  void* map = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", ErrnoText(map_errno)));
  }

  std::unique_ptr<SafetensorsReader> reader(new SafetensorsReader());
  reader->path_ = path;
  reader->map_ = static_cast<const uint8_t*>(map);
  reader->map_size_ = file_size;
  RETURN_IF_ERROR(reader->Parse());
  return reader;
}

absl::StatusOr<std::unique_ptr<SafetensorsReader>> SafetensorsReader::FromBytes(
    std::string bytes, const std::string& name) {
  if (bytes.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": truncated: ", bytes.size(),
                     " bytes is too short for the 8-byte header length"));
  }
  std::unique_ptr<SafetensorsReader> reader(new SafetensorsReader());
  reader->path_ = name;
  reader->owned_ = std::move(bytes);
  reader->map_ = reinterpret_cast<const uint8_t*>(reader->owned_.data());
  reader->map_size_ = reader->owned_.size();
  RETURN_IF_ERROR(reader->Parse());
  return reader;
}

absl::Status SafetensorsReader::Parse() {
  const std::string& path = path_;
  SafetensorsReader* reader = this;
  const uint64_t file_size = map_size_;
  auto invalid = [&path](const std::string& problem) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
  };

  const uint64_t header_size = ReadLittleEndian64(reader->map_);
  if (header_size == 0) return invalid("header length is 0");
  if (header_size > kMaxHeaderSize) {
    return invalid(absl::StrCat("header length ", header_size, " exceeds the limit of ",
                                kMaxHeaderSize, " bytes"));
  }
  if (header_size > file_size - 8) {
    return invalid(absl::StrCat("truncated: header length ", header_size, " but only ",
                                file_size - 8, " bytes follow the length field"));
  }
  const char* header_begin = reinterpret_cast<const char*>(reader->map_ + 8);
  const char* header_end = header_begin + header_size;
  const uint64_t data_size = file_size - 8 - header_size;
  reader->data_ = reader->map_ + 8 + header_size;

  // Top-level keys seen so far; a repeated one would silently replace the
  // earlier entry in the parsed object.
  std::set<std::string> top_level_keys;
  std::string duplicate_key;
  nlohmann::json::parser_callback_t on_event =
      [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (!top_level_keys.insert(key).second && duplicate_key.empty()) duplicate_key = key;
        }
        return true;
      };
  RETURN_IF_ERROR(CheckJsonText(absl::string_view(header_begin, header_size),
                                 absl::StrCat(path, ": header")));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_begin, header_end, on_event);
  } catch (const nlohmann::json::exception& e) {
    return invalid(absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!header.is_object()) return invalid("header is not a JSON object");
  if (!duplicate_key.empty()) {
    return invalid(absl::StrCat("header repeats the key \"", duplicate_key, "\""));
  }

  for (const auto& item : header.items()) {
    if (item.key() == kMetadataKey) {
      if (!item.value().is_object()) return invalid("\"__metadata__\" is not a JSON object");
      for (const auto& kv : item.value().items()) {
        if (!kv.value().is_string()) {
          return invalid(absl::StrCat("\"__metadata__\" value of key \"", kv.key(),
                                      "\" is not a string"));
        }
        reader->metadata_[kv.key()] = kv.value().get<std::string>();
      }
      continue;
    }
    auto info = ParseTensorEntry(item.key(), item.value());
    if (!info.ok()) return invalid(std::string(info.status().message()));
    reader->tensors_.push_back(*std::move(info));
  }

  std::sort(reader->tensors_.begin(), reader->tensors_.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
            });
  // The tensors must tile the data section exactly: each one starts where
  // the previous one ended, and the last one ends at the end of the file.
  uint64_t covered = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo& t : reader->tensors_) {
    if (t.end > data_size) {
      return invalid(absl::StrCat("tensor \"", t.name, "\": field \"data_offsets\" [", t.begin,
                                  ", ", t.end, "] runs past the data section of ", data_size,
                                  " bytes (file truncated?)"));
    }
    if (t.begin < covered) {
      return invalid(absl::StrCat("tensor \"", t.name, "\": field \"data_offsets\" [", t.begin,
                                  ", ", t.end, "] overlaps tensor \"", previous->name, "\" [",
                                  previous->begin, ", ", previous->end, "]"));
    }
    if (t.begin > covered) {
      return invalid(absl::StrCat("tensor \"", t.name, "\": field \"data_offsets\" [", t.begin,
                                  ", ", t.end, "] leaves a gap: bytes [", covered, ", ", t.begin,
                                  ") of the data section belong to no tensor"));
    }
    covered = t.end;
    previous = &t;
  }
  if (covered != data_size) {
    return invalid(absl::StrCat("the tensors cover ", covered, " bytes of the ", data_size,
                                "-byte data section; ", data_size - covered,
                                " trailing bytes belong to no tensor"));
  }
  for (size_t i = 0; i < reader->tensors_.size(); ++i) {
    reader->index_[reader->tensors_[i].name] = i;
  }
  return absl::OkStatus();
}

SafetensorsReader::~SafetensorsReader() {
  if (map_ != nullptr && owned_.empty()) ::munmap(const_cast<uint8_t*>(map_), map_size_);
}

const TensorInfo* SafetensorsReader::Find(absl::string_view name) const {
  auto it = index_.find(std::string(name));
  if (it == index_.end()) return nullptr;
  return &tensors_[it->second];
}

absl::Span<const uint8_t> SafetensorsReader::Data(const TensorInfo& info) const {
  return absl::Span<const uint8_t>(data_ + info.begin, info.end - info.begin);
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  auto invalid = [&path](const std::string& problem) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", problem));
  };

  // The header keeps "__metadata__" first and the tensors in the order given,
  // like the reference writer.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [key, value] : metadata) {
      if (key == kMetadataKey) return invalid("metadata may not use the key \"__metadata__\"");
      meta[key] = value;
    }
    header[kMetadataKey] = std::move(meta);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    if (t.name.empty()) return invalid("a tensor has an empty name");
    if (t.name == kMetadataKey) return invalid("a tensor may not be named \"__metadata__\"");
    if (!names.insert(t.name).second) {
      return invalid(absl::StrCat("tensor \"", t.name, "\" appears twice"));
    }
    auto bytes = ByteSize(t.dtype, t.shape);
    if (!bytes.ok()) {
      return invalid(absl::StrCat("tensor \"", t.name, "\": ", bytes.status().message()));
    }
    if (*bytes != t.bytes.size()) {
      return invalid(absl::StrCat("tensor \"", t.name, "\": shape ", ShapeString(t.shape), " of ",
                                  DTypeName(t.dtype), " needs ", *bytes, " bytes but ",
                                  t.bytes.size(), " were given"));
    }
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = std::string(DTypeName(t.dtype));
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + *bytes};
    header[t.name] = std::move(entry);
    offset += *bytes;
  }
  std::string header_text = header.dump();
  // Pad with spaces so that the data section starts 8-byte aligned.
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  uint8_t length[8];
  uint64_t n = header_text.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(n >> (8 * i));

  ASSIGN_OR_RETURN(auto temp, CreateTempFile(path));
  const int fd = temp.first;
  const std::string& temp_path = temp.second;
  auto write_all = [&]() -> absl::Status {
    RETURN_IF_ERROR(WriteAll(fd, length, sizeof(length), temp_path));
    RETURN_IF_ERROR(WriteAll(fd, reinterpret_cast<const uint8_t*>(header_text.data()),
                             header_text.size(), temp_path));
    for (const TensorToWrite& t : tensors) {
      RETURN_IF_ERROR(WriteAll(fd, t.bytes.data(), t.bytes.size(), temp_path));
    }
    if (::fsync(fd) != 0) {
      return absl::InternalError(absl::StrCat(temp_path, ": fsync failed: ", ErrnoText(errno)));
    }
    return absl::OkStatus();
  };
  absl::Status status = write_all();
  if (::close(fd) != 0 && status.ok()) {
    status = absl::InternalError(absl::StrCat(temp_path, ": close failed: ", ErrnoText(errno)));
  }
  if (status.ok() && ::rename(temp_path.c_str(), path.c_str()) != 0) {
    status = absl::InternalError(
        absl::StrCat(path, ": cannot rename ", temp_path, " over it: ", ErrnoText(errno)));
  }
  if (!status.ok()) {
    ::unlink(temp_path.c_str());
    return absl::InternalError(absl::StrCat(path, ": not written: ", status.message()));
  }
  // Make the rename itself durable. The new file is complete either way, so
  // a failure here is not reported.
  int dir_fd = ::open(DirectoryOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return absl::OkStatus();
}

}  // namespace mpt

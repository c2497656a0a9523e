// Content digests of inputs, for telling whether a checkpoint or a finished
// adapter was made from the same model and data as the run that finds it.
//
//   absl::StatusOr<std::string> d = FileDigest("data/train.jsonl");
//   absl::StatusOr<std::string> m = ModelFolderDigest("models/t5-base");
//
// A file of up to 8 MiB is hashed whole (SHA-256). A larger one (model
// weights) is hashed by its size, its first MiB, its last 64 KiB and 64
// blocks of 4 KiB spread evenly in between: reading under 2 MiB of a
// multi-GiB file, yet any change to a tensor's shapes (the safetensors
// header) or to a sizeable part of its values is seen. Torch-free;
// thread-safe.
#ifndef MPT_COMMON_FILE_DIGEST_H_
#define MPT_COMMON_FILE_DIGEST_H_

#include <string>

#include "absl/status/statusor.h"

namespace mpt {

// 64 hexadecimal characters. NOT_FOUND or another error naming the file
// when it cannot be read.
absl::StatusOr<std::string> FileDigest(const std::string& path);

// The digest of what defines a model folder: config.json, every
// *.safetensors file (and its index) and the tokenizer files
// (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
// spiece.model), each by name and FileDigest, in name order. Other files
// (a README, outputs kept in the folder) do not count. Errors name the
// file that cannot be read.
absl::StatusOr<std::string> ModelFolderDigest(const std::string& folder);

}  // namespace mpt

#endif  // MPT_COMMON_FILE_DIGEST_H_

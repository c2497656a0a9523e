// SHA-256 (FIPS 180-4), for naming and checking artefacts.
//
//   Sha256 hash;
//   hash.Update(chunk1);
//   hash.Update(chunk2);
//   std::string hex = hash.HexDigest();
//
// or, for bytes held in memory, Sha256Hex(data). No dependencies beyond the
// standard library; not thread-safe (use one object per thread).
#ifndef MPT_COMMON_SHA256_H_
#define MPT_COMMON_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace mpt {

class Sha256 {
 public:
  static constexpr size_t kDigestBytes = 32;

  Sha256();

  // Appends bytes to the message.
  void Update(absl::string_view data);

  // The 32-byte digest of everything passed to Update(). The object is then
  // reset, ready for a new message.
  std::array<uint8_t, kDigestBytes> Digest();

  // Digest() as 64 lowercase hexadecimal characters.
  std::string HexDigest();

 private:
  void Reset();
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// The SHA-256 of `data` as 64 lowercase hexadecimal characters.
std::string Sha256Hex(absl::string_view data);

// True when `hex` is 64 hexadecimal characters (either case).
bool IsSha256Hex(absl::string_view hex);

}  // namespace mpt

#endif  // MPT_COMMON_SHA256_H_

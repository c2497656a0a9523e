// libFuzzer target: SafetensorsReader::Open on arbitrary bytes, then every
// byte of every tensor it hands out is read (ASan catches a range that
// leaves the mapping).
#include <cstddef>
#include <cstdint>

#include "common/safetensors.h"
#include "tools/fuzz/fuzz_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static mpt::FuzzFile* file = new mpt::FuzzFile();
  auto reader = mpt::SafetensorsReader::Open(file->Write(data, size));
  if (!reader.ok()) return 0;
  uint64_t sum = 0;
  for (const mpt::TensorInfo& t : (*reader)->tensors()) {
    if ((*reader)->Find(t.name) != &t) __builtin_trap();
    for (uint8_t b : (*reader)->Data(t)) sum += b;
    (void)mpt::NumElements(t.shape);
  }
  for (const auto& [k, v] : (*reader)->metadata()) sum += k.size() + v.size();
  volatile uint64_t sink = sum;
  (void)sink;
  return 0;
}

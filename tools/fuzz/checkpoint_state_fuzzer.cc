// libFuzzer target: a checkpoint's state.json. The expected fingerprint is
// "fuzz" (the seeds carry it), so inputs get past the fingerprint check.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "worker/training/checkpoint_state.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::string_view text(reinterpret_cast<const char*>(data), size);
  mpt::CheckpointStateExpectations expected;
  expected.fingerprint = "fuzz";
  expected.total_steps = 100;
  expected.num_parameters = 2;
  auto s = mpt::ParseCheckpointState(text, "state.json", expected);
  if (!s.ok()) return 0;
  // The documented ranges hold for everything accepted.
  if (s->step < 0 || s->step > expected.total_steps || s->best_step < -1 ||
      s->best_step > s->step || s->adamw_steps.size() != expected.num_parameters) {
    __builtin_trap();
  }
  for (int64_t v : s->adamw_steps) {
    if (v < 0 || v > s->step) __builtin_trap();
  }
  return 0;
}

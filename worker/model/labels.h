// The label value that losses and metrics skip: padding of target rows and
// the prompt's positions in a causal layout. Hugging Face's convention
// (-100), so that labels built here and there mean the same.
#ifndef MPT_WORKER_MODEL_LABELS_H_
#define MPT_WORKER_MODEL_LABELS_H_

#include <cstdint>

namespace mpt {

inline constexpr int64_t kIgnoreIndex = -100;

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_LABELS_H_

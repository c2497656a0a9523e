// Subnormal floats flushed to zero on the training thread.
//
// Prompt tuning's backward pass through a frozen model produces many
// subnormal values (far below 1e-38: softmax tails, vanishing gradients),
// and x86 cores take a slow path for each arithmetic operation on one. A
// T5-small-shaped source step measured 13 to 17 % faster with them flushed
// (docs/MEASUREMENTS.md, "Adapters per hour"). Values that small change no loss, gradient
// or prompt at any tolerance a test or a user can see.
//
//   FlushDenormalsScope flush;  // on the thread that trains
//
// PromptTrainer::Run and PackedPromptTrainer::Run hold one for the whole
// loop, so every caller's steps and evaluations run flushed.
//
// The mode (MXCSR's flush-to-zero and denormals-are-zero bits) belongs to
// the calling thread: threads that already exist, such as OpenBLAS's, keep
// theirs. Restores the thread's previous mode at the end of the scope. No
// effect where the CPU is not x86. Not copyable.
#ifndef MPT_WORKER_MODEL_DENORMALS_H_
#define MPT_WORKER_MODEL_DENORMALS_H_

namespace mpt {

class FlushDenormalsScope {
 public:
  FlushDenormalsScope();
  ~FlushDenormalsScope();
  FlushDenormalsScope(const FlushDenormalsScope&) = delete;
  FlushDenormalsScope& operator=(const FlushDenormalsScope&) = delete;

  // Whether this thread flushes subnormals now.
  static bool Active();

 private:
  unsigned previous_ = 0;
};

}  // namespace mpt

#endif  // MPT_WORKER_MODEL_DENORMALS_H_

#include "worker/model/denormals.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define MPT_HAS_MXCSR 1
#endif

namespace mpt {
namespace {
#ifdef MPT_HAS_MXCSR
constexpr unsigned kFlushToZero = 0x8000;       // FTZ: subnormal results become 0
constexpr unsigned kDenormalsAreZero = 0x0040;  // DAZ: subnormal inputs read as 0
constexpr unsigned kBoth = kFlushToZero | kDenormalsAreZero;
#endif
}  // namespace

FlushDenormalsScope::FlushDenormalsScope() {
#ifdef MPT_HAS_MXCSR
  previous_ = _mm_getcsr();
  _mm_setcsr(previous_ | kBoth);
#endif
}

FlushDenormalsScope::~FlushDenormalsScope() {
#ifdef MPT_HAS_MXCSR
  _mm_setcsr((_mm_getcsr() & ~kBoth) | (previous_ & kBoth));
#endif
}

bool FlushDenormalsScope::Active() {
#ifdef MPT_HAS_MXCSR
  return (_mm_getcsr() & kBoth) == kBoth;
#else
  return false;
#endif
}

}  // namespace mpt

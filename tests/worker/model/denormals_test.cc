#include "worker/model/denormals.h"

#include <cfloat>

#include "gtest/gtest.h"

namespace mpt {
namespace {

// Keeps the compiler from folding the arithmetic at build time.
float Opaque(float x) {
  volatile float v = x;
  return v;
}

TEST(FlushDenormalsScope, FlushesOnThisThreadAndRestoresAfter) {
#if defined(__x86_64__) || defined(__i386__)
  const float smallest_normal = FLT_MIN;  // 1.18e-38
  ASSERT_FALSE(FlushDenormalsScope::Active());
  EXPECT_GT(Opaque(smallest_normal) / Opaque(4.0f), 0.0f);  // a subnormal result
  {
    FlushDenormalsScope flush;
    EXPECT_TRUE(FlushDenormalsScope::Active());
    EXPECT_EQ(Opaque(smallest_normal) / Opaque(4.0f), 0.0f);
    {
      FlushDenormalsScope nested;
      EXPECT_TRUE(FlushDenormalsScope::Active());
    }
    EXPECT_TRUE(FlushDenormalsScope::Active());  // the outer scope still holds
    EXPECT_EQ(Opaque(1.5f) * Opaque(2.0f), 3.0f);  // normal values are untouched
  }
  EXPECT_FALSE(FlushDenormalsScope::Active());
  EXPECT_GT(Opaque(smallest_normal) / Opaque(4.0f), 0.0f);
#else
  GTEST_SKIP() << "no MXCSR on this CPU";
#endif
}

}  // namespace
}  // namespace mpt

#include <gtest/gtest.h>

#include "ops/cuda_runtime.h"

namespace {

TEST(CudaRuntime, StatusAlwaysExplainsItself) {
  const auto& s = shoestring::ops::cuda_status();
  EXPECT_FALSE(s.reason.empty());
  if (!shoestring::ops::built_with_cuda()) {
    EXPECT_FALSE(s.available);
  }
}

}  // namespace

#pragma once
// Tests labelled gpu call this first (in the body or in SetUp): without a usable GPU the test is
// skipped with the reason, so the CPU suite stays green. A macro because GTEST_SKIP returns from
// the calling function.
#include <gtest/gtest.h>

#include "ops/cuda_runtime.h"

#define SHOESTRING_SKIP_WITHOUT_GPU()                                                          \
  do {                                                                                         \
    if (!::shoestring::ops::cuda_status().available)                                           \
      GTEST_SKIP() << "no GPU: " << ::shoestring::ops::cuda_status().reason;                   \
  } while (0)

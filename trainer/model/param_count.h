#pragma once
// Parameter counts from the config alone, without building the model: the planner and
// `shoestring config --params` need them for models far too large to instantiate here.
// tests/trainer/test_param_count.cpp holds them equal to the built modules' counts.
#include <cstdint>

#include "trainer/config.h"

namespace shoestring::model {

struct ParamCount {
  int64_t total = 0;      // every parameter, MTP modules included
  int64_t activated = 0;  // what one token passes through: unselected routed experts and MTP excluded
  int64_t embedding = 0;  // token embedding + output head (one matrix when tied)
};

ParamCount count_parameters(const ModelConfig& m);

}  // namespace shoestring::model

#pragma once
// Parameter counts from the config alone, without building the model: the planner and
// `shoestring config --params` need them for models far too large to instantiate here.
// tests/trainer/test_param_count.cpp holds them equal to the built modules' counts.
#include <cstdint>
#include <utility>

#include "trainer/config.h"

namespace shoestring::model {

struct ParamCount {
  int64_t total = 0;      // every parameter, MTP modules included
  int64_t activated = 0;  // what one token passes through: unselected routed experts and MTP excluded
  int64_t embedding = 0;  // token embedding + output head (one matrix when tied)
};

ParamCount count_parameters(const ModelConfig& m);

int64_t attention_params(const ModelConfig& m);  // one block's attention, norms excluded
// (total, activated) of one block's feed-forward: dense SwiGLU, or MoE (router + experts).
std::pair<int64_t, int64_t> ffn_params(const ModelConfig& m, bool moe);

}  // namespace shoestring::model

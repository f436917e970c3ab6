#pragma once
// The MoE layer the expert-parallel tests shard (test_expert_parallel, test_ep_overlap): 8 routed
// experts, so ep 2 and 4 both divide them, and an init large enough that outputs and gradients are
// O(0.1-1), so an absolute tolerance means something.
#include "trainer/config.h"

namespace shoestring::testing {

inline ModelConfig ep_test_layer(double capacity_factor = 0.0, int64_t d_model = 16) {
  ModelConfig c;
  c.d_model = d_model;
  c.n_layers = 2;
  c.n_routed_experts = 8;
  c.n_activated_experts = 2;
  c.n_shared_experts = 1;
  c.moe_intermediate_size = 8;
  c.capacity_factor = capacity_factor;
  c.init_std = 0.5;
  return c;
}

}  // namespace shoestring::testing

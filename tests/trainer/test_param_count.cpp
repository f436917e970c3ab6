#include <gtest/gtest.h>

#include "trainer/config_loader.h"
#include "trainer/model/param_count.h"
#include "trainer/model/transformer.h"

using namespace shoestring;

namespace {

void expect_counts_match(const ModelConfig& m) {
  model::Transformer net(m);
  const model::ParamCount c = model::count_parameters(m);
  EXPECT_EQ(c.total, net->parameter_count());
  EXPECT_EQ(c.activated, net->activated_parameter_count());
}

TEST(ParamCount, MatchesBuiltModels) {
  ModelConfig m;  // dense GQA default
  expect_counts_match(m);
  m.tie_embeddings = true;
  m.n_kv_heads = 2;
  expect_counts_match(m);
  m.attention = "mla";
  m.n_routed_experts = 8;
  m.n_activated_experts = 2;
  m.n_shared_experts = 2;
  m.mtp_depth = 2;
  expect_counts_match(m);
  m.q_lora_rank = 24;
  m.n_shared_experts = 0;
  m.n_dense_layers = 0;
  expect_counts_match(m);
}

TEST(ParamCount, ShippedSmallConfigsMatchTheirModels) {
  for (const char* name : {"tiny", "tiny-moe"})
    expect_counts_match(load_config({std::string(SHOESTRING_SOURCE_DIR "/configs/") + name + ".yaml"}, {}).model);
}

}  // namespace

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ops/calc_diff.h"
#include "trainer/config_loader.h"
#include "trainer/model/convert_fp8.h"
#include "trainer/model/transformer.h"

using namespace shoestring;

namespace {

TEST(ConvertFp8, SwapsExactlyTheEligibleLinears) {
  const Config c = load_config({SHOESTRING_SOURCE_DIR "/configs/tiny-moe.yaml"}, {});
  at::manual_seed(0);
  model::Transformer net(c.model);
  const at::Tensor tokens = at::randint(c.model.vocab_size, {2, 16}, at::kLong);
  const at::Tensor before = net->forward(tokens);
  // tiny-moe: 3 trunk blocks + 1 MTP block, each with an MLA; block 0 dense SwiGLU; blocks 1-2 and
  // the MTP block MoE, each with a shared-expert SwiGLU: 4 MLA + 1 SwiGLU + 3 MoE + 3 shared = 11.
  EXPECT_EQ(model::convert_to_fp8(*net), 11);
  for (const auto& item : net->named_modules()) {
    const bool eligible = dynamic_cast<model::LinearUser*>(item.value().get()) != nullptr;
    if (eligible) {
      EXPECT_NE(dynamic_cast<model::LinearUser*>(item.value().get())->linear_fn(), nullptr) << item.key();
    }
    if (item.key().find("router") != std::string::npos) {
      EXPECT_FALSE(eligible) << "the gate stays high precision";
    }
  }
  const at::Tensor after = net->forward(tokens);
  const double d = ops::calc_diff(after, before);
  EXPECT_GT(d, 0.0);   // the linears now run in FP8
  EXPECT_LT(d, 1e-3);  // and the logits stay close
}

}  // namespace

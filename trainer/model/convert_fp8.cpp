#include "trainer/model/convert_fp8.h"

#include "ops/fp8_linear.h"
#include "trainer/model/linear.h"

namespace shoestring::model {

int64_t convert_to_fp8(torch::nn::Module& model) {
  int64_t converted = 0;
  for (const auto& m : model.modules(/*include_self=*/true)) {
    if (auto* user = dynamic_cast<LinearUser*>(m.get())) {
      user->set_linear_fn(&ops::fp8_linear);
      ++converted;
    }
  }
  return converted;
}

}  // namespace shoestring::model

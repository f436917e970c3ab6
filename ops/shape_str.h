#pragma once
// "[4, 128]": a tensor's shape for error messages.
#include <ATen/core/Tensor.h>

#include <sstream>
#include <string>

namespace shoestring::ops {

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

}  // namespace shoestring::ops

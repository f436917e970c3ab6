#pragma once
// The local backend: a group of one process. Collectives are copies or no-ops; send/recv to self
// pair up by tag in call order. Tensors may be on any device.
#include "parallel/process_group.h"

namespace shoestring::parallel {

GroupPtr make_local_group(const std::string& name = "world");

}  // namespace shoestring::parallel

#pragma once
// The one exception data/ throws for bad input: a missing or malformed file, a tokenizer that does
// not match, a dataset too short for a batch, a corrupt chunk found while training. The message is
// one line that names the file (and the position, when there is one) and the problem; main() maps
// it to exit code 2, like a config error, because the fix is in the user's input, not the code.
#include <stdexcept>
#include <string>

namespace shoestring::data {

struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// "FILE: PROBLEM" -- the shape of every DataError message.
inline DataError data_error(const std::string& file, const std::string& problem) {
  return DataError(file + ": " + problem);
}

}  // namespace shoestring::data

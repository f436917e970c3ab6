#pragma once
// `shoestring data prepare`: text in, HDF5 token dataset(s) out. Documents are read in order,
// tokenized on all cores in batches, and written in input order, so the output is a pure
// function of the inputs, the tokenizer and the options (not of the thread count).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/text_input.h"
#include "data/token_dataset.h"

namespace shoestring::data {

struct PrepareOptions {
  std::vector<std::string> inputs;  // files, directories, "-"
  std::string output;               // OUT.h5; with shard_tokens, OUT-00000.h5, OUT-00001.h5, ...
  std::string tokenizer = "byte";   // "byte" or a SentencePiece .model path
  InputOptions input;
  WriterOptions writer;
  uint64_t shard_tokens = 0;  // 0: one file; else start a new shard after this many tokens
  int threads = 0;            // 0: all cores
};

struct PrepareStats {
  uint64_t documents = 0, tokens = 0, bytes_in = 0, bytes_out = 0;
  double seconds = 0;
  std::vector<std::string> outputs;
};

// Called after each batch: input bytes done and in total (0 when unknown: stdin), tokens so far,
// seconds since the start.
using PrepareProgress = std::function<void(uint64_t bytes_done, uint64_t bytes_total, uint64_t tokens, double seconds)>;

PrepareStats prepare_dataset(const PrepareOptions& opts, const PrepareProgress& progress = {});

// Shard file name i of `output` ("corpus.h5" -> "corpus-00003.h5").
std::string shard_path(const std::string& output, uint64_t index);

}  // namespace shoestring::data

#pragma once
// From the data.* settings to the training and validation sample streams: opens the files, checks
// the tokenizer and vocabulary against the model, splits off the validation set. data/ does not
// know the trainer's Config; the trainer fills this plain struct.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/samples.h"

namespace shoestring::data {

struct DatasetOptions {
  std::string source = "synthetic";  // synthetic | hdf5 | llmc
  std::vector<std::string> paths;    // files or shard patterns
  std::string tokenizer = "byte";    // "byte" or a SentencePiece model path (checked against hdf5 files)
  std::vector<std::string> val_paths;
  double val_fraction = 0;           // used when val_paths is empty: the stream's last fraction
  int64_t seq_len = 64;
  uint64_t seed = 0;
  int64_t model_vocab = 256;
  int64_t global_batch = 1;          // the training stream must hold at least one batch
  int64_t synthetic_branching = 4;
};

struct Datasets {
  std::shared_ptr<const SampleSource> train, val;  // val is null when there is no validation data
  std::string description;                         // one line for the run's banner
};

Datasets open_datasets(const DatasetOptions& opts);

}  // namespace shoestring::data

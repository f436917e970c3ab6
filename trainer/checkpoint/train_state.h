#pragma once
// What of the training state goes into a checkpoint, and where each rank's part of it lies in the
// global tensors: the bridge between the model/optimizer/mesh and the layout-free format.
//   param/<name>   parameters; a routed-expert parameter under EP is this ep rank's block of
//                  the global [n_routed_experts, ...] tensor
//   adam_m/<name>, adam_v/<name>   AdamW moments, with the parameter's global shape; under ZeRO-1
//                  each rank holds the flat slices it owns (GradReducer::owned())
//   buffer/<name>  module buffers (router biases), the same on every rank
// One copy of everything is written: replicated tensors by the first rank of their replica group.
#include <functional>
#include <string>
#include <vector>

#include "parallel/grad_reducer.h"
#include "parallel/mesh.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/checkpoint/writer.h"
#include "trainer/model/transformer.h"
#include "trainer/optim/adamw.h"

namespace shoestring::ckpt {

struct TrainStateRefs {
  const parallel::Mesh& mesh;
  model::Transformer& net;
  const parallel::GradReducer& reducer;
  optim::AdamW& opt;
  // Pipeline parallelism: whether this pipeline rank writes a tensor (by model name) that several
  // pipeline ranks hold; unset = it writes everything it holds.
  std::function<bool(const std::string&)> pp_writes = nullptr;
};

std::vector<LocalPiece> collect_pieces(const TrainStateRefs& s);
// Restores parameters, moments, AdamW's step and buffers from `r` into this rank's layout, and
// checks that the checkpoint holds nothing this model lacks (naming the first such tensor).
void load_state(CheckpointReader& r, const TrainStateRefs& s);

}  // namespace shoestring::ckpt

#include "trainer/checkpoint/train_state.h"

#include <ATen/ATen.h>

#include <set>

namespace shoestring::ckpt {

namespace {

// Where this rank's copy of parameter i sits in the global tensor, and whether it writes it.
struct Placement {
  std::vector<int64_t> shape;  // global
  int64_t base = 0;            // offset of this rank's local parameter in the flattened global one
  bool expert = false;
};

Placement place(const TrainStateRefs& s, size_t i) {
  const auto& p = s.reducer.params()[i];
  Placement pl;
  pl.shape = p.param.sizes().vec();
  pl.expert = model::is_routed_expert(p.name);
  // shard_experts gives ep rank r experts [r E/ep, (r+1) E/ep): a contiguous block of dim 0.
  if (pl.expert && s.mesh.ep->size() > 1) {
    pl.shape[0] *= s.mesh.ep->size();
    pl.base = int64_t(s.mesh.ep->rank()) * p.param.numel();
  }
  return pl;
}

// The first rank of the group a tensor is replicated over writes it (and, under pipeline
// parallelism, only on the pipeline rank chosen to write it).
bool writes_replica(const TrainStateRefs& s, bool expert, const std::string& name) {
  return (expert ? s.mesh.ep_replica : s.mesh.dp)->rank() == 0 && (!s.pp_writes || s.pp_writes(name));
}

}  // namespace

std::vector<LocalPiece> collect_pieces(const TrainStateRefs& s) {
  std::vector<LocalPiece> out;
  const auto& params = s.reducer.params();
  for (size_t i = 0; i < params.size(); ++i) {
    const Placement pl = place(s, i);
    if (writes_replica(s, pl.expert, params[i].name))
      out.push_back({"param/" + params[i].name, pl.shape, pl.base, params[i].param.detach().reshape({-1})});
  }
  // Under ZeRO-1 the owned slices of a replica group are disjoint: every rank writes its own.
  const auto& owned = s.reducer.owned();
  for (size_t k = 0; k < owned.size(); ++k) {
    const Placement pl = place(s, owned[k].param);
    const std::string& name = params[owned[k].param].name;
    if (s.pp_writes && !s.pp_writes(name)) continue;
    if (!s.reducer.zero1() && !writes_replica(s, pl.expert, name)) continue;
    const int64_t at = pl.base + owned[k].offset;
    out.push_back({"adam_m/" + name, pl.shape, at, s.opt.first_moments()[k].reshape({-1})});
    out.push_back({"adam_v/" + name, pl.shape, at, s.opt.second_moments()[k].reshape({-1})});
  }
  for (const auto& b : s.net->named_buffers())
    if (writes_replica(s, false, b.key())) out.push_back({"buffer/" + b.key(), b.value().sizes().vec(), 0, b.value().reshape({-1})});
  return out;
}

void load_state(CheckpointReader& r, const TrainStateRefs& s) {
  at::NoGradGuard no_grad;
  std::set<std::string> used;
  // Every parameter of the model (this rank's or, under pipeline parallelism, another stage's) has
  // moments somewhere, though under ZeRO-1 not necessarily on this rank.
  for (const auto& p : s.net->named_parameters())
    for (const char* kind : {"param/", "adam_m/", "adam_v/"}) used.insert(kind + p.key());
  const auto& params = s.reducer.params();
  for (size_t i = 0; i < params.size(); ++i) {
    const Placement pl = place(s, i);
    r.read("param/" + params[i].name, pl.shape, pl.base, params[i].param.view({-1}));
  }
  const auto& owned = s.reducer.owned();
  for (size_t k = 0; k < owned.size(); ++k) {
    const Placement pl = place(s, owned[k].param);
    const std::string& name = params[owned[k].param].name;
    const int64_t at = pl.base + owned[k].offset;
    r.read("adam_m/" + name, pl.shape, at, s.opt.first_moments()[k].view({-1}));
    r.read("adam_v/" + name, pl.shape, at, s.opt.second_moments()[k].view({-1}));
  }
  for (const auto& b : s.net->named_buffers()) {
    used.insert("buffer/" + b.key());
    r.read("buffer/" + b.key(), b.value().sizes().vec(), 0, b.value().view({-1}));
  }
  for (const auto& t : r.manifest().tensors)
    if (!used.count(t.name))
      throw CheckpointError(r.dir() + ": holds tensor " + t.name + ", which this model does not have (another model config?)");
  s.opt.set_steps_taken(r.manifest().adam_steps);
}

}  // namespace shoestring::ckpt

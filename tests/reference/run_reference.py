"""Losses and gradients of the PyTorch reference for the cases test_reference.cpp wrote.

    python3 tests/reference/run_reference.py DIR

Every DIR/CASE/ holding config.yaml (the resolved config: model.*, and train.mtp_lambda,
train.balance_alpha, train.threads) and index.txt (tensor_io.py format: param.NAME, buffer.NAME,
input.tokens, input.targets) gets DIR/CASE/out/ with
    loss.total loss.main [loss.mtp] [loss.balance]   fp32 scalars, as the C++ LossBreakdown
    grad.NAME                                        fp32, one per parameter (zeros when unused)
    load.I                                           int64 [E], tokens per expert of MoE layer I
    stat.min_route_margin                            smallest gap at a top-k/top-group boundary
    stat.fp32_vs_fp64                                max over gradients and losses of the fp32
                                                     reference's relative error against fp64
    stat.eager_vs_reference                          the same for the "eager" variant against
                                                     the "reference" variant, both fp32
Exit status 0 on success, 3 when torch cannot be imported (the test skips), 1 on any other error,
printed as one line.
"""
from __future__ import annotations

import copy
import math
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # numpy is not needed
try:
    import torch
except ImportError as e:
    print(f"python3 cannot import torch: {e}", file=sys.stderr)
    sys.exit(3)

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_ref import ModelArgs, Transformer, read_resolved_config  # noqa: E402
from tensor_io import read_folder, write_folder  # noqa: E402


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (the tensor's scale); 0 when both are zero."""
    a, b = a.double(), b.double()
    scale = b.abs().max().item() if b.numel() else 0.0
    diff = (a - b).abs().max().item() if b.numel() else 0.0
    return diff / scale if scale > 0 else diff


def run(model: Transformer, tensors, opts, dtype):
    model = copy.deepcopy(model).to(dtype)
    out = model.losses(tensors["input.tokens"], tensors["input.targets"], opts["mtp_lambda"], opts["balance_alpha"])
    out["total"].backward()
    result = {f"loss.{k}": out[k].detach() for k in ("total", "main", "mtp", "balance") if k in out}
    for name, p in model.named_parameters():
        result[f"grad.{name}"] = p.grad if p.grad is not None else torch.zeros_like(p)
    for i, load in enumerate(out["loads"]):
        result[f"load.{i}"] = load
    margin = min((r.min_margin for r in model.routers()), default=math.inf)
    return result, margin


def max_rel(a: dict, b: dict) -> float:
    return max(rel_err(a[k], b[k]) for k in b if k.startswith(("loss.", "grad.")))


def run_case(folder: str) -> str:
    with open(os.path.join(folder, "config.yaml")) as f:
        config = read_resolved_config(f.read())
    args = ModelArgs.from_section(config["model"])
    train = config["train"]
    opts = {"mtp_lambda": float(train["mtp_lambda"]), "balance_alpha": float(train["balance_alpha"])}
    torch.set_num_threads(max(1, int(train["threads"])))
    tensors = read_folder(folder)

    model = Transformer(args, variant="reference")
    for router in model.routers():
        router.track_margin = True
    given = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(("param.", "buffer."))}
    ours = dict(model.named_parameters()) | dict(model.named_buffers())
    if set(given) != set(ours):
        raise ValueError(f"{folder}: names differ; only in C++: {sorted(set(given) - set(ours))}, "
                         f"only in the reference: {sorted(set(ours) - set(given))}")
    with torch.no_grad():
        for name, t in ours.items():
            if t.shape != given[name].shape:
                raise ValueError(f"{name}: C++ shape {list(given[name].shape)}, reference {list(t.shape)}")
            t.copy_(given[name])

    result, margin = run(model, tensors, opts, torch.float32)
    truth, _ = run(model, tensors, opts, torch.float64)
    eager = copy.deepcopy(model)
    eager.variant = "eager"
    eager_result, _ = run(eager, tensors, opts, torch.float32)
    for k in result:
        if k.startswith("load.") and not torch.equal(result[k], eager_result[k]):
            raise ValueError(f"{folder}: the eager variant routes differently ({k})")

    result["stat.min_route_margin"] = torch.tensor(margin if math.isfinite(margin) else 1e30, dtype=torch.float64)
    result["stat.fp32_vs_fp64"] = torch.tensor(max_rel(result, truth), dtype=torch.float64)
    result["stat.eager_vs_reference"] = torch.tensor(max_rel(eager_result, result), dtype=torch.float64)
    write_folder(os.path.join(folder, "out"), result)
    return (f"{os.path.basename(folder)}: loss {result['loss.total'].item():.6f}, fp32 vs fp64 "
            f"{result['stat.fp32_vs_fp64'].item():.1e}, eager vs reference {result['stat.eager_vs_reference'].item():.1e}, "
            f"min routing margin {result['stat.min_route_margin'].item():.1e}")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    root = sys.argv[1]
    cases = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "config.yaml")))
    if not cases:
        print(f"run_reference.py: no case folders (with config.yaml) in {root}", file=sys.stderr)
        return 1
    for case in cases:
        try:
            print(run_case(os.path.join(root, case)), flush=True)
        except Exception as e:  # one line for the C++ test to show
            print(f"run_reference.py: {case}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

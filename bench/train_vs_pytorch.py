"""Training throughput of Shoestring against PyTorch eager on the same machine, model and data.

    bench/train_vs_pytorch.sh --config configs/tiny-moe.yaml [--threads 1,2] [--steps 20]
                              [--warmup 5] [--repeats 3] [--device cpu|cuda] [--json FILE]
                              [--set key=value ...]

(the .sh sources the env.sh that launch/setup wrote beside the torch our build uses, then runs
this file with that Python). For each thread count, `repeats` rounds alternate the two sides so
that a busy neighbour on a shared machine hurts both alike; each side reports the median round.

  ours:     `shoestring bench train` (the real training loop: data, forward, backward, clipping,
            AdamW, router-bias update, metrics), train.threads = T.
  PyTorch:  tests/reference/model_ref.py in its "eager" variant (SDPA attention, DeepSeek-V3's
            per-expert gather loop) and the same step: torch.optim.AdamW with our decay groups,
            clip_grad_norm_, the same LR schedule and router-bias update, the same synthetic
            batches (data/synthetic.cpp, re-implemented below and generated before the clock
            starts), torch.set_num_threads(T). Both sides train on the synthetic chain
            (data.source=synthetic is set last): the data source changes what is read, not the
            compute, and the Python side cannot read our datasets. Both draw the initial weights from the same
            seed in the same order through the same ATen generator, so the two loss streams agree
            closely; the final losses are printed as a check that the same job was timed.

Precision (train.precision): fp32 runs both sides in fp32. bf16 is, on our side, fp32 master
weights (parameters, gradients and AdamW state fp32) with every activation and matmul in bf16
(each weight cast to bf16 at its matmul; norms, softmax and the loss computed in fp32). The
PyTorch side mirrors it with what an eager user writes: fp32 parameters and torch.autocast(bf16)
around the forward, so matmuls (and SDPA) run in bf16 on bf16 casts of the weights and the
optimizer is the same fp32 AdamW. The difference: autocast casts per op, so the residual stream,
norm outputs and elementwise ops between matmuls stay fp32 in PyTorch where ours keeps them bf16
(less memory traffic on our side; the matmul work is the same). fp8 has no PyTorch-eager peer.

--device cuda (train.device=cuda on both sides): the model and the pre-generated batches live on
the GPU, and each PyTorch step ends with torch.cuda.synchronize() before the clock is read (our
steps end on host reads of the loss and gradient norm). Peak memory: torch.cuda's
max_memory_allocated on the GPU (the caching allocator statistic our bench train reports), peak
RSS on the CPU.

Tokens/s = micro_batch_size * seq_len * grad_accum * timed steps / the summed time of those steps,
on both sides. One JSON object goes to stdout (and to --json FILE).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # numpy is not needed
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))


def resolved_config(binary: str, config: str, sets: list[str]) -> dict[str, dict[str, str]]:
    from model_ref import read_resolved_config
    cmd = [binary, "config", "--print", "--config", config] + [a for s in sets for a in ("--set", s)]
    return read_resolved_config(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


# --- the synthetic data of data/synthetic.cpp: a random sparse Markov chain, sample i a pure
# function of (seed, i).
MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


class SyntheticMarkov:
    def __init__(self, vocab: int, branching: int, seed: int):
        self.vocab, self.branching, self.seed = vocab, branching, seed & MASK
        self.successors = []
        for t in range(vocab):
            # The first `branching` swaps of a Fisher-Yates shuffle of 0..vocab-1, kept sparse (only
            # the moved entries) so that a 32k vocabulary costs 32k x branching steps, not 32k^2.
            perm: dict[int, int] = {}
            h = splitmix64(self.seed ^ splitmix64(t + 1))
            for j in range(branching):
                h = splitmix64(h)
                k = j + h % (vocab - j)
                perm[j], perm[k] = perm.get(k, k), perm.get(j, j)
            self.successors.append([perm.get(j, j) for j in range(branching)])

    def sequence(self, index: int, length: int) -> list[int]:
        h = splitmix64(((self.seed * 0x100000001B3) & MASK) ^ splitmix64(index))
        tok, out = h % self.vocab, []
        for _ in range(length):
            out.append(tok)
            h = splitmix64(h)
            tok = self.successors[tok][h % self.branching]
        return out


# --- trainer/optim/lr_schedule.cpp and the MoE/MTP schedules of trainer/train.cpp
def lr_at(o: dict[str, str], step: int, total: int) -> float:
    lr, min_lr, warmup = float(o["lr"]), float(o["min_lr"]), int(o["warmup_steps"])
    if step < warmup:
        return lr * (step + 1) / warmup
    if o["schedule"] == "constant":
        return lr
    if o["schedule"] == "wsd":
        decay = round(float(o["decay_fraction"]) * total)
        start = max(warmup, total - decay)
        if step < start or decay == 0:
            return lr
        return lr + (min_lr - lr) * min(1.0, (step - start + 1) / (total - start))
    span = max(1, total - warmup - 1)
    return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def parameter_kind(name: str) -> str:  # trainer/model/transformer.cpp
    if "norm" in name:
        return "norm"
    if name.endswith("bias"):
        return "bias"
    return {"tok_embed": "embedding", "head": "head"}.get(name, "weight")


def pytorch_worker(cfg: dict[str, dict[str, str]], threads: int, steps: int, warmup: int) -> dict:
    """The PyTorch side in this process: returns {tokens_per_s, final_loss, ...}."""
    import contextlib
    import resource
    import torch
    from model_ref import ModelArgs, Transformer

    torch.set_num_threads(threads)
    t, o, d = cfg["train"], cfg["optim"], cfg["data"]
    if t["precision"] not in ("fp32", "bf16"):
        raise SystemExit(f"the PyTorch side runs fp32 and bf16 (autocast), not {t['precision']}")
    device = torch.device("cuda" if t["device"] == "cuda" or (t["device"] == "auto" and torch.cuda.is_available())
                          else "cpu")
    cuda = device.type == "cuda"

    def autocast():
        if t["precision"] == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync():
        if cuda:
            torch.cuda.synchronize()
    args = ModelArgs.from_section(cfg["model"])
    seed, batch, seq, accum = int(t["seed"]), int(t["micro_batch_size"]), int(t["seq_len"]), int(t["grad_accum"])
    total = warmup + steps

    torch.manual_seed(seed)
    model = Transformer(args, variant="eager")  # drawn on the CPU generator, as ours is, then moved
    model.to(device)
    model.angles = model.angles.to(device)  # not a buffer, so .to() leaves it
    no_decay = [s.strip() for s in o["no_decay"].strip("[]").split(",") if s.strip()]
    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if parameter_kind(n) not in no_decay], "weight_decay": float(o["weight_decay"])},
              {"params": [p for n, p in named if parameter_kind(n) in no_decay], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=float(o["lr"]), betas=(float(o["beta1"]), float(o["beta2"])), eps=float(o["eps"]))
    params = [p for _, p in named]
    routers = model.routers()

    source = SyntheticMarkov(args.vocab_size, int(d["synthetic_branching"]), seed)
    batches = []
    for i in range(total * accum):
        seqs = torch.tensor([source.sequence(i * batch + b, seq + 1) for b in range(batch)], dtype=torch.int64)
        batches.append((seqs[:, :-1].contiguous().to(device), seqs[:, 1:].contiguous().to(device)))
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    sync()

    gamma, stop = float(t["router_bias_gamma"]), int(t["router_bias_stop_step"])
    lam, lam_late, switch = float(t["mtp_lambda"]), float(t["mtp_lambda_late"]), int(t["mtp_lambda_switch_step"])
    alpha, clip = float(t["balance_alpha"]), float(o["grad_clip"])
    seconds, losses = [], []
    for step in range(total):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        mtp_lambda = lam_late if 0 < switch <= step + 1 else lam
        loads, loss_sum = None, 0.0
        for micro in range(accum):
            inputs, targets = batches[step * accum + micro]
            with autocast():
                out = model.losses(inputs, targets, mtp_lambda, alpha)
            (out["total"] / accum).backward()
            loss_sum += out["main"].item()
            loads = out["loads"] if loads is None else [a + b for a, b in zip(loads, out["loads"])]
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        for g in opt.param_groups:
            g["lr"] = lr_at(o, step, total)
        opt.step()
        g_now = 0.0 if 0 < stop <= step + 1 else gamma
        if g_now:
            with torch.no_grad():  # auxiliary-loss-free balancing (DeepSeek-V3 §2.1.2)
                for router, load in zip(routers, loads):
                    load = load.float()
                    router.bias.add_(torch.sign(load.mean() - load), alpha=g_now)
        sync()
        seconds.append(time.perf_counter() - t0)
        losses.append(loss_sum / accum)
    timed = sum(seconds[warmup:])
    peak = torch.cuda.max_memory_allocated(device) if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"tokens_per_s": batch * seq * accum * steps / timed, "seconds": timed, "final_loss": losses[-1],
            "first_loss": losses[0], "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": str(device), "precision": t["precision"], "peak_memory_bytes": peak,
            "gpu": torch.cuda.get_device_name(device) if cuda else None}


def run_ours(binary, config, sets, threads, steps, warmup, extra=()) -> dict:
    cmd = [binary, "bench", "train", "--config", config, "--steps", str(steps), "--warmup", str(warmup),
           "--set", f"train.threads={threads}"] + [a for s in sets for a in ("--set", s)] + list(extra)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def run_pytorch(config, sets, binary, threads, steps, warmup) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--config", config, "--binary", binary,
           "--threads", str(threads), "--steps", str(steps), "--warmup", str(warmup)] + \
        [a for s in sets[:-1] for a in ("--set", s)]  # the worker adds data.source=synthetic itself
    # (train.device, when --device gave it, travels in sets like any other setting)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", choices=["cpu", "cuda"], help="train.device for both sides (default: the config's)")
    ap.add_argument("--json", help="also write the result here")
    ap.add_argument("--ours-args", default="", help="more options for `shoestring bench train` (e.g. '--gpu h100')")
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "bin", "shoestring"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.sets = a.sets + ([f"train.device={a.device}"] if a.device else []) + ["data.source=synthetic"]
    cfg = resolved_config(a.binary, a.config, a.sets)
    if a.worker:
        print(json.dumps(pytorch_worker(cfg, int(a.threads), a.steps, a.warmup)))
        return 0

    t = cfg["train"]
    result = {"bench": "train_vs_pytorch", "config": a.config, "sets": a.sets,
              "date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu": cpu_name(), "cores": os.cpu_count(),
              "steps": a.steps, "warmup": a.warmup, "repeats": a.repeats,
              "batch": f"{t['micro_batch_size']}x{t['seq_len']}x{t['grad_accum']}",
              "precision": t["precision"], "device": t["device"], "results": []}
    for threads in [int(x) for x in a.threads.split(",")]:
        ours, theirs, load = [], [], [os.getloadavg()[0]]
        for _ in range(a.repeats):
            ours.append(run_ours(a.binary, a.config, a.sets, threads, a.steps, a.warmup, a.ours_args.split()))
            theirs.append(run_pytorch(a.config, a.sets, a.binary, threads, a.steps, a.warmup))
            load.append(os.getloadavg()[0])
        o = statistics.median(r["tokens_per_s"] for r in ours)
        p = statistics.median(r["tokens_per_s"] for r in theirs)
        row = {"threads": threads, "shoestring_tokens_per_s": round(o, 1), "pytorch_tokens_per_s": round(p, 1),
               "ratio": round(o / p, 3),
               "shoestring_runs": [round(r["tokens_per_s"], 1) for r in ours],
               "pytorch_runs": [round(r["tokens_per_s"], 1) for r in theirs],
               "final_loss": {"shoestring": round(ours[-1]["final_loss"], 4), "pytorch": round(theirs[-1]["final_loss"], 4)},
               "torch": theirs[-1]["torch"],
               "shoestring_bench": ours[-1],  # the last `bench train` line (FLOPs/token, MFU, memory)
               "device": theirs[-1]["device"], "gpu": theirs[-1]["gpu"],
               "peak_memory_bytes": {"shoestring": ours[-1].get("peak_memory_bytes"),
                                     "pytorch": theirs[-1]["peak_memory_bytes"]},
               # 1-minute load averages before and after each round. Our own run adds about
               # `threads`; much more means other work shared the cores and the figures are
               # not to be trusted (OpenMP threads that wait for a descheduled peer stall).
               "loadavg": [round(x, 2) for x in load]}
        if max(load) > (os.cpu_count() or 1) + 0.5:
            row["warning"] = "the machine was busy with other work during the measurement"
        result["results"].append(row)
        print(f"threads {threads}: shoestring {o:,.0f} tokens/s, pytorch eager {p:,.0f} tokens/s, ratio {o / p:.2f} "
              f"(final loss {row['final_loss']['shoestring']} vs {row['final_loss']['pytorch']})"
              + (f"; WARNING: {row['warning']} (load {max(load):.1f})" if "warning" in row else ""), file=sys.stderr)
    text = json.dumps(result)
    print(text)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

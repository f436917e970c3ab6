"""The summary of bench/gpu/train_e2e.sh: one table from the files it left in --out.

  bench_bf16.json, bench_fp8.json   `shoestring bench train` lines (tokens/s, FLOPs/token, MFU, memory)
  peer_bf16.json                    bench/train_vs_pytorch.py --device cuda (ours and PyTorch eager)
  curve_bf16.jsonl, curve_fp8.jsonl metrics.jsonl of the same short run in each precision

Loss curves, over the steps both runs finished (a run its timeout stopped is compared where it
got to), against DeepSeek-V3's bar for FP8 against BF16: relative difference of the loss under
0.25%. Three figures:
  * the mean training loss of the last --window steps of each run, and their relative difference;
  * the same comparison paired step by step (both runs see the same batches): the mean of the
    per-step relative differences and its standard error. A step's loss spreads by ~3% from batch
    to batch (H100, 2026-11-27), so a 20-step window cannot resolve 0.25%: the verdict is "met"
    only when |mean| + 2 SE < 0.25%, "not met" when |mean| - 2 SE > 0.25%, else "undecided";
  * the validation loss (`val_loss`, a fixed set of sequences, the same for both runs) at the last
    step both runs evaluated, when the runs set data.eval_interval: no batch-to-batch noise.
Prints the table; writes e2e_summary.json beside the inputs. Exit 1 when an input is missing or
unreadable (the table still shows what was there).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

DEEPSEEK_BAR = 0.0025


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.loads(f.read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def read_losses(path: str, key: str = "loss") -> dict[int, float]:
    losses: dict[int, float] = {}
    try:
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:  # a line cut by the timeout
                    continue
                if "step" in r and isinstance(r.get(key), (int, float)):
                    losses[int(r["step"])] = float(r[key])
    except OSError:
        pass
    return losses


def paired_verdict(mean: float, se: float | None, bar: float = DEEPSEEK_BAR) -> str:
    """'met', 'not met' or 'undecided' for |mean| against bar, two standard errors either way."""
    if se is None:
        return "undecided"
    if abs(mean) + 2 * se < bar:
        return "met"
    if abs(mean) - 2 * se > bar:
        return "not met"
    return "undecided"


def compare_curves(bf16: dict[int, float], fp8: dict[int, float], window: int,
                   val_bf16: dict[int, float] | None = None, val_fp8: dict[int, float] | None = None) -> dict | None:
    common = sorted(set(bf16) & set(fp8))
    if not common:
        return None
    last = common[-window:]
    a = sum(bf16[s] for s in last) / len(last)
    b = sum(fp8[s] for s in last) / len(last)
    rel = abs(b - a) / abs(a)
    d = [(fp8[s] - bf16[s]) / abs(bf16[s]) for s in last]
    mean = sum(d) / len(d)
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (len(d) - 1) / len(d)) if len(d) > 1 else None
    out = {"steps_compared": len(common), "last_step": last[-1], "window": len(last), "bf16_loss": a,
           "fp8_loss": b, "relative_difference": rel, "first_loss": {"bf16": bf16[common[0]], "fp8": fp8[common[0]]},
           "max_step_relative_difference": max(abs(fp8[s] - bf16[s]) / abs(bf16[s]) for s in common),
           "paired": {"mean_relative_difference": mean, "standard_error": se, "verdict": paired_verdict(mean, se)},
           "val": None}
    val_common = sorted(set(val_bf16 or {}) & set(val_fp8 or {}))
    if val_common:
        s = val_common[-1]
        va, vb = val_bf16[s], val_fp8[s]
        out["val"] = {"step": s, "bf16": va, "fp8": vb, "relative_difference": (vb - va) / abs(va),
                      "within_deepseek_bar": abs(vb - va) / abs(va) < DEEPSEEK_BAR, "evaluations": len(val_common)}
    return out


def fmt(x, spec: str, missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--window", type=int, default=200)
    a = ap.parse_args()
    path = lambda name: os.path.join(a.out, name)  # noqa: E731
    benches = {p: read_json(path(f"bench_{p}.json")) for p in ("bf16", "fp8")}
    peer_file = read_json(path("peer_bf16.json"))
    peer = peer_file["results"][0] if peer_file and peer_file.get("results") else None
    curve = compare_curves(read_losses(path("curve_bf16.jsonl")), read_losses(path("curve_fp8.jsonl")), a.window,
                           read_losses(path("curve_bf16.jsonl"), "val_loss"), read_losses(path("curve_fp8.jsonl"), "val_loss"))

    rows = [("run", "tokens/s", "TFLOP/s", "MFU", "peak mem GiB", "final loss")]
    for p, b in benches.items():
        if b is None:
            rows.append((f"ours {p}", "missing", "", "", "", ""))
            continue
        mfu = f"{100 * b['mfu']:.2f}% of {b['peak_tflops']:.0f}" if "mfu" in b else "-"
        rows.append((f"ours {p} ({b.get('device', '?')})", f"{b['tokens_per_s']:,.0f}", fmt(b.get("achieved_tflops"), ".2f"),
                     mfu, fmt(b.get("peak_memory_bytes", 0) / 2**30, ".2f") + f" ({b.get('peak_memory_of', '?')})",
                     f"{b['final_loss']:.4f}"))
    ratio_line, fp8_line = "", ""
    if peer:
        mem = peer.get("peak_memory_bytes", {}).get("pytorch")
        flops = benches["bf16"]["model_flops_per_token"] if benches["bf16"] else None
        tflops = flops * peer["pytorch_tokens_per_s"] / 1e12 if flops else None
        peak = benches["bf16"].get("peak_tflops") if benches["bf16"] else None
        rows.append((f"PyTorch eager bf16 autocast ({peer.get('device', '?')}, torch {peer.get('torch', '?')})",
                     f"{peer['pytorch_tokens_per_s']:,.0f}", fmt(tflops, ".2f"),
                     f"{100 * tflops / peak:.2f}% of {peak:.0f}" if tflops and peak else "-",
                     fmt(mem / 2**30 if mem else None, ".2f"), f"{peer['final_loss']['pytorch']:.4f}"))
        ratio_line = (f"ours / PyTorch eager, bf16: {peer['ratio']:.3f}x ({peer['shoestring_tokens_per_s']:,.0f} vs "
                      f"{peer['pytorch_tokens_per_s']:,.0f} tokens/s in the same run; target >= 1.2x)")
    else:
        rows.append(("PyTorch eager bf16", "missing", "", "", "", ""))
    if benches["bf16"] and benches["fp8"]:
        fp8_line = f"ours fp8 / ours bf16: {benches['fp8']['tokens_per_s'] / benches['bf16']['tokens_per_s']:.3f}x"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for line in (ratio_line, fp8_line):
        if line:
            print(line)
    if curve:
        pr = curve["paired"]
        se = f"{100 * pr['standard_error']:.3f}%" if pr["standard_error"] is not None else "-"
        print(f"loss curves fp8 vs bf16 ({curve['steps_compared']} common steps, mean of the last {curve['window']} "
              f"up to step {curve['last_step']}): bf16 {curve['bf16_loss']:.5f}, fp8 {curve['fp8_loss']:.5f}, "
              f"relative difference {100 * curve['relative_difference']:.3f}%; paired per step "
              f"{100 * pr['mean_relative_difference']:+.3f}% (standard error {se}): DeepSeek-V3 bar < 0.25% "
              f"{pr['verdict'].upper()}; largest per-step difference {100 * curve['max_step_relative_difference']:.2f}%")
        v = curve["val"]
        if v:
            print(f"validation loss at step {v['step']} ({v['evaluations']} evaluations in both): bf16 {v['bf16']:.5f}, "
                  f"fp8 {v['fp8']:.5f}, relative difference {100 * v['relative_difference']:+.3f}% "
                  f"(bar < 0.25%: {'met' if v['within_deepseek_bar'] else 'NOT met'})")
        else:
            print("validation loss: none (the curves ran without data.eval_interval)")
    else:
        print("loss curves: missing (no step both runs finished)")
    summary = {"bench": benches, "peer": peer, "curves": curve}
    with open(path("e2e_summary.json"), "w") as f:
        f.write(json.dumps(summary) + "\n")
    return 0 if all(benches.values()) and peer and curve else 1


if __name__ == "__main__":
    sys.dont_write_bytecode = True
    sys.exit(main())

"""Loads a `shoestring ckpt export --format safetensors` folder into Hugging Face transformers and
compares its logits with ours.

    python3 tests/reference/check_hf_export.py EXPORT_DIR EXCHANGE_DIR [--tol T]

EXPORT_DIR holds model.safetensors and config.json; EXCHANGE_DIR (tensor_io.py format) holds
input.tokens (int64 [batch, seq]) and output.logits (float32 [batch, seq, vocab], our model's
forward on those tokens, from the same checkpoint). The export is loaded with
AutoModelForCausalLM.from_pretrained (the class config.json names), in float32 with eager
attention, and must load every weight it expects and no other (a missing weight would be
initialised at random). Passes when max |hf - ours| <= T * max(1, max |ours|); T defaults to 1e-4:
both sides compute in float32 in different orders (our fused attention and expert-sorted MoE
against HF's explicit softmax and per-expert loop), which moves logits by about 1e-6 of their
scale, while a wrong layout, scale or routing rule moves them by far more.

Exit status: 0 pass, 1 the logits differ or the export does not load, 2 bad arguments or input,
3 transformers (or torch) cannot be imported (the caller skips). One line on any failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
warnings.filterwarnings("ignore")
try:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    transformers.utils.logging.disable_progress_bar()
except ImportError as e:
    print(f"check_hf_export.py: cannot import transformers: {e}", file=sys.stderr)
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tensor_io import read_folder  # noqa: E402


def load(export_dir: str):
    """The export as HF builds it, with the loading report; raises when any weight is missing,
    unexpected or of another shape."""
    model, info = AutoModelForCausalLM.from_pretrained(
        export_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    problems = {k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if problems:
        raise RuntimeError(f"{export_dir}: transformers did not load the export cleanly: {problems}")
    return model.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("export_dir")
    ap.add_argument("exchange_dir")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    try:
        with open(os.path.join(a.export_dir, "config.json")) as f:
            arch = json.load(f).get("architectures") or ["?"]
        given = read_folder(a.exchange_dir)
        tokens, ours = given["input.tokens"], given["output.logits"]
        if tokens.dim() != 2 or ours.shape[:2] != tokens.shape:
            raise ValueError(f"input.tokens {list(tokens.shape)} and output.logits {list(ours.shape)} do not match")
    except (OSError, KeyError, ValueError) as e:
        print(f"check_hf_export.py: bad input: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        torch.manual_seed(0)  # weights HF initialises are replaced by the export's; this only pins the rest
        model = load(a.export_dir)
        with torch.no_grad():
            hf = model(input_ids=tokens, use_cache=False).logits.float()
    except Exception as e:  # one line for the C++ test to show
        print(f"check_hf_export.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    if hf.shape != ours.shape:
        print(f"check_hf_export.py: HF logits {list(hf.shape)}, ours {list(ours.shape)}", file=sys.stderr)
        return 1
    diff = (hf.double() - ours.double()).abs().max().item()
    scale = ours.abs().max().item()
    bound = a.tol * max(1.0, scale)
    print(f"transformers {transformers.__version__} {arch[0]}: {tokens.numel()} tokens, max |hf - ours| = {diff:.3e}, "
          f"max |ours| = {scale:.3e}, bound {bound:.1e}: {'pass' if diff <= bound else 'FAIL'}")
    return 0 if diff <= bound else 1


if __name__ == "__main__":
    sys.exit(main())

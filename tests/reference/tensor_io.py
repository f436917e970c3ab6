"""The plain tensor format the C++ reference test and the Python reference exchange.

A folder holds one raw little-endian file per tensor, NAME.bin (C order, no header), and
index.txt with one line per tensor:

    NAME DTYPE SHAPE        e.g.  param.tok_embed float32 256x96     loss.main float32 scalar

DTYPE is float32, float64 or int64; SHAPE is the sizes joined by "x", or "scalar". Lines
starting with "#" are comments. tests/reference/test_reference.cpp holds the C++ side.
"""
from __future__ import annotations

import os
import sys

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64}
NAMES = {v: k for k, v in DTYPES.items()}

assert sys.byteorder == "little", "the exchange format is little-endian"


def read_folder(folder: str) -> dict[str, torch.Tensor]:
    out = {}
    with open(os.path.join(folder, "index.txt")) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            name, dtype, shape = line.split()
            dims = [] if shape == "scalar" else [int(s) for s in shape.split("x")]
            numel = 1
            for s in dims:
                numel *= s
            path = os.path.join(folder, name + ".bin")
            if os.path.getsize(path) != numel * torch.empty(0, dtype=DTYPES[dtype]).element_size():
                raise ValueError(f"{path}: size does not match {dtype} {shape}")
            out[name] = torch.from_file(path, shared=False, size=numel, dtype=DTYPES[dtype]).reshape(dims)
    return out


def write_folder(folder: str, tensors: dict[str, torch.Tensor]) -> None:
    os.makedirs(folder, exist_ok=True)
    lines = ["# name dtype shape (shoestring tensor exchange, tests/reference/tensor_io.py)"]
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        shape = "scalar" if t.dim() == 0 else "x".join(str(s) for s in t.shape)
        lines.append(f"{name} {NAMES[t.dtype]} {shape}")
        path = os.path.join(folder, name + ".bin")
        if os.path.exists(path):
            os.remove(path)
        if t.numel() == 0:
            open(path, "wb").close()
            continue
        # shared=True maps the file (created with the tensor's size) and writes through to it.
        torch.from_file(path, shared=True, size=t.numel(), dtype=t.dtype).copy_(t.reshape(-1))
    with open(os.path.join(folder, "index.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


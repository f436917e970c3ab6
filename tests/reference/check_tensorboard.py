#!/usr/bin/env python3
"""A run's TensorBoard event files (<run_dir>/tb/) hold exactly what its metrics.jsonl holds.

Trains tiny runs with build/bin/shoestring (a dense one, a MoE + MTP one with validation steps, and
that one resumed from an earlier checkpoint so that steps are repeated), then reads every event
file with a reader written here from the format, independent of the C++ writer: TFRecord framing
with both masked CRC32Cs checked by this file's own CRC32C, and the protobuf wire format of
tensorboard.Event decoded by hand. Each step's scalars must equal metrics.jsonl's values rounded to
float32 (tokens_per_s, which metrics.jsonl prints with 6 digits, to 1e-5), and each step must
appear once over all files. Then TensorBoard's own EventAccumulator reads the directory and must
see the same tags, and per tag the same steps with the same values (one check per value).

TensorBoard's reader runs in CI: launch/setup installs tensorboard (tests/reference/
tb_requirements.txt) when it can, and ctest then runs this with that folder on PYTHONPATH and
--require-tensorboard, which makes a missing tensorboard a failure. Without --require-tensorboard
and without tensorboard, that part is skipped (and says so) and our own reader checks alone.

Usage: check_tensorboard.py --shoestring build/bin/shoestring --source-dir . [--require-tensorboard]
Our reader needs only the standard library; prints 'N passed, N failed', exits non-zero on a failure.
"""
import argparse
import glob
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

# --- CRC32C (Castagnoli): reflected polynomial 0x82F63B78, init and final xor 0xFFFFFFFF -------
_TABLE = []
for _b in range(256):
    _c = _b
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- protobuf wire format ----------------------------------------------------------------------
def varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def fields(buf):
    """(field number, wire type, value) of a message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 1:
            v, i = buf[i:i + 8], i + 8
        elif wire == 5:
            v, i = buf[i:i + 4], i + 4
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError("unknown wire type %d" % wire)
        if i > len(buf):
            raise ValueError("field runs past the message")
        yield num, wire, v


def parse_event(buf):
    """Event (tensorboard/compat/proto/event.proto): wall_time=1 double, step=2 int64,
    file_version=3 string, summary=5 Summary, session_log=7 SessionLog."""
    ev = {"step": 0, "values": {}}
    for num, wire, v in fields(buf):
        if (num, wire) == (1, 1):
            ev["wall_time"] = struct.unpack("<d", v)[0]
        elif (num, wire) == (2, 0):
            ev["step"] = v - (1 << 64) if v >= 1 << 63 else v
        elif (num, wire) == (3, 2):
            ev["file_version"] = v.decode()
        elif (num, wire) == (5, 2):  # Summary: repeated Value value = 1
            for snum, swire, value in fields(v):
                assert (snum, swire) == (1, 2), "Summary field %d" % snum
                tag, x = None, None
                for vnum, vwire, vv in fields(value):  # Value: tag = 1, simple_value = 2 (float)
                    if (vnum, vwire) == (1, 2):
                        tag = vv.decode()
                    elif (vnum, vwire) == (2, 5):
                        x = struct.unpack("<f", vv)[0]
                    else:
                        raise ValueError("unexpected Summary.Value field %d" % vnum)
                assert tag is not None and x is not None, "Value without tag or simple_value"
                ev["values"][tag] = x
        elif (num, wire) == (7, 2):  # SessionLog: status = 1 (START = 1)
            ev["session_status"] = dict((n, x) for n, _, x in fields(v)).get(1, 0)
        else:
            raise ValueError("unexpected Event field %d (wire type %d)" % (num, wire))
    return ev


def read_records(path):
    """TFRecord: uint64 length, masked crc32c(length), data, masked crc32c(data)."""
    with open(path, "rb") as f:
        data = f.read()
    i, out = 0, []
    while i < len(data):
        assert len(data) - i >= 16, "%s: truncated record at %d" % (path, i)
        (n,) = struct.unpack_from("<Q", data, i)
        (len_crc,) = struct.unpack_from("<I", data, i + 8)
        assert len_crc == masked(crc32c(data[i:i + 8])), "%s: length CRC mismatch at %d" % (path, i)
        assert i + 16 + n <= len(data), "%s: truncated record at %d" % (path, i)
        payload = data[i + 12:i + 12 + n]
        (data_crc,) = struct.unpack_from("<I", data, i + 12 + n)
        assert data_crc == masked(crc32c(payload)), "%s: data CRC mismatch at %d" % (path, i)
        out.append(parse_event(payload))
        i += 16 + n
    return out


# --- what metrics.jsonl says -------------------------------------------------------------------
def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def expected_scalars(line):
    """tag -> value of one metrics.jsonl record, as docs/tensorboard.md lists them."""
    out = {}
    for key, v in line.items():
        if key in ("step", "elapsed_s", "skipped"):
            continue
        if key == "expert_imbalance_layers":
            for n, x in enumerate(v):
                out["expert_imbalance/layer_%d" % n] = x
        else:
            out[key] = math.nan if v is None else v
    return out


def same(tag, want, got):
    if math.isnan(want):
        return math.isnan(got)
    if tag == "tokens_per_s":  # %.6g in metrics.jsonl
        return abs(got - want) <= 1e-5 * abs(want)
    return got == f32(want)


class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL: " + what)


def compare_run(checks, name, run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(l) for l in f if l.strip()]
    files = sorted(glob.glob(os.path.join(run_dir, "tb", "events.out.tfevents.*")))
    checks.check(len(files) > 0, "%s: no event file in %s/tb" % (name, run_dir))
    by_step = {}
    for path in files:
        events = read_records(path)
        checks.check(events and events[0].get("file_version") == "brain.Event:2" and events[0]["step"] == 0,
                     "%s: %s does not start with file_version brain.Event:2 at step 0" % (name, path))
        for ev in events:
            if ev["values"]:
                checks.check(ev["step"] not in by_step, "%s: step %d written twice" % (name, ev["step"]))
                by_step[ev["step"]] = ev["values"]
    checks.check(sorted(by_step) == [l["step"] for l in lines],
                 "%s: event steps %s, metrics.jsonl steps %s" % (name, sorted(by_step), [l["step"] for l in lines]))
    for line in lines:
        got = by_step.get(line["step"], {})
        want = expected_scalars(line)
        checks.check(sorted(got) == sorted(want),
                     "%s step %d: tags %s, expected %s" % (name, line["step"], sorted(got), sorted(want)))
        for tag, x in want.items():
            if tag in got:
                checks.check(same(tag, x, got[tag]),
                             "%s step %d %s: %r in the event file, %r in metrics.jsonl" % (name, line["step"], tag, got[tag], x))
    return lines


def compare_with_tensorboard(checks, name, run_dir, lines, required):
    """TensorBoard's own reader (it reads every file of the directory in order, and drops steps a
    SessionLog START says were restarted): the same tags, and for each tag the same steps in the same
    order with the same values as metrics.jsonl. Without tensorboard this is skipped, or a failure
    when `required` (ctest passes --require-tensorboard where launch/setup installed it)."""
    try:
        import tensorboard
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as e:
        checks.check(not required, "%s: --require-tensorboard, but %s cannot import it: %s" % (name, sys.executable, e))
        if not required:
            print("%s: EventAccumulator check skipped: no tensorboard in %s (%s)" % (name, sys.executable, e))
        return
    before = checks.passed + checks.failed
    # 0: keep every scalar (the default keeps a sample once a tag has over 10000).
    acc = event_accumulator.EventAccumulator(os.path.join(run_dir, "tb"), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    got_tags = sorted(acc.Tags()["scalars"])
    want_tags = sorted(set(t for l in lines for t in expected_scalars(l)))
    checks.check(want_tags and got_tags == want_tags,
                 "%s: EventAccumulator tags %s, expected %s" % (name, got_tags, want_tags))
    for tag in want_tags:
        want = [(l["step"], expected_scalars(l)[tag]) for l in lines if tag in expected_scalars(l)]
        got = [(s.step, s.value) for s in acc.Scalars(tag)] if tag in got_tags else []
        checks.check([s for s, _ in got] == [s for s, _ in want],
                     "%s: EventAccumulator %s at steps %s, metrics.jsonl at %s" % (name, tag, [s for s, _ in got], [s for s, _ in want]))
        for (step, gv), (_, wv) in zip(got, want):
            checks.check(same(tag, wv, gv), "%s step %d %s: EventAccumulator %r, metrics.jsonl %r" % (name, step, tag, gv, wv))
    print("%s: EventAccumulator (tensorboard %s from %s) read %d tags: %d checks" %
          (name, tensorboard.__version__, os.path.dirname(os.path.dirname(tensorboard.__file__)), len(want_tags),
           checks.passed + checks.failed - before))


def train(binary, source_dir, run_dir, config, sets, resume=None):
    cmd = [binary, "train", "--config", os.path.join(source_dir, config), "--set", "log.run_dir=" + run_dir,
           "--set", "data.source=synthetic", "--set", "train.threads=1", "--set", "log.progress=off",
           "--set", "train.micro_batch_size=2", "--set", "train.seq_len=16"]
    for s in sets:
        cmd += ["--set", s]
    if resume:
        cmd += ["--resume", resume]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.exit("check_tensorboard: %s failed (exit %d):\n%s" % (" ".join(cmd), p.returncode, p.stdout))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shoestring", required=True, help="the shoestring binary")
    ap.add_argument("--source-dir", required=True, help="the source tree (for configs/)")
    ap.add_argument("--require-tensorboard", action="store_true",
                    help="fail when `tensorboard` cannot be imported (rather than skip its reader)")
    args = ap.parse_args()
    # The reader's CRC against the standard check values before it judges anything.
    assert crc32c(b"123456789") == 0xE3069283 and crc32c(bytes(32)) == 0x8A9136AA

    checks = Checks()
    with tempfile.TemporaryDirectory(prefix="shoestring_check_tensorboard_") as tmp:
        dense = os.path.join(tmp, "dense")
        train(args.shoestring, args.source_dir, dense, "configs/tiny.yaml", ["train.steps=3"])
        moe = os.path.join(tmp, "moe")
        # Validation at steps 2 and 3; checkpoints at 2 and 3. Then resumed from step 2 and run to 4:
        # steps 3 and 4 are written again, and must not show twice.
        moe_sets = ["train.steps=3", "data.eval_interval=2", "checkpoint.interval=2"]
        train(args.shoestring, args.source_dir, moe, "configs/tiny-moe.yaml", moe_sets)
        first = compare_run(checks, "moe (before resume)", moe)
        train(args.shoestring, args.source_dir, moe, "configs/tiny-moe.yaml",
              ["train.steps=4", "data.eval_interval=2", "checkpoint.interval=2"],
              resume=os.path.join(moe, "checkpoints", "step_0000002"))
        checks.check(len(glob.glob(os.path.join(moe, "tb", "events.out.tfevents.*"))) == 2,
                     "moe: the resumed run did not start a second event file")
        for name, run_dir in (("dense", dense), ("moe (resumed from step 2)", moe)):
            lines = compare_run(checks, name, run_dir)
            compare_with_tensorboard(checks, name, run_dir, lines, args.require_tensorboard)
        checks.check(any("expert_imbalance/layer_0" in expected_scalars(l) for l in first) and
                     any("val_loss" in l for l in first) and any("mtp_loss" in l for l in first),
                     "moe: the run wrote no MoE, MTP or validation values to compare")
    print("%d passed, %d failed" % (checks.passed, checks.failed))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Reads a directory of TensorBoard event files with TensorBoard's own
EventAccumulator and compares its scalars with an expectation (used by
tests/test_tb_interop.c).

    python tests/tb_read.py LOGDIR EXPECTED.json

EXPECTED.json: {"tag": [[step, value, wall_time], ...], ...} in the order
written (value may be NaN / Infinity, as Python's json module reads them).
The scalar tags must be exactly those of the file; each tag's events must
have these steps, these values (as float32: TensorBoard's simple_value) and
these wall times. Exit status 0: all agree; 1: a mismatch (printed);
2: usage error or TensorBoard missing.
"""
import json
import math
import struct
import sys


def f32(v):
    return struct.unpack("<f", struct.pack("<f", v))[0]


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    try:
        from tensorboard.backend.event_processing import event_accumulator as ea
    except ImportError as e:
        print("tensorboard is not importable: %s" % e)
        return 2
    logdir, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)

    acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    tags = sorted(acc.Tags()[ea.SCALARS])
    bad = 0
    if tags != sorted(expected):
        print("scalar tags %s, expected %s" % (tags, sorted(expected)))
        return 1
    for tag in tags:
        got = acc.Scalars(tag)
        want = expected[tag]
        if len(got) != len(want):
            print("%s: %d events, expected %d" % (tag, len(got), len(want)))
            bad += 1
            continue
        for g, (step, value, wall) in zip(got, want):
            if g.step != step or not same(g.value, f32(value)) or g.wall_time != wall:
                print("%s: (step %d, value %r, wall %r), expected (%d, %r, %r)"
                      % (tag, g.step, g.value, g.wall_time, step, f32(value), wall))
                bad += 1
    n = sum(len(v) for v in expected.values())
    print("tb_read.py: %d tags, %d scalar events, %d mismatches (tensorboard %s)"
          % (len(tags), n, bad, __import__("tensorboard").__version__))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

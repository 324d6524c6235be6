#!/usr/bin/env python3
"""PyTorch CPU timings of the conv3d shapes of experiments/bench_conv.c (issue 2).

    /root/torchvenv/bin/python experiments/bench_conv_torch.py
        [--ours bench.json | --bench build/experiments/bench_conv] [--rounds R] [--reps N]

Times forward, backward-data and backward-filter (aten.convolution_backward
with one output selected, so each pass is timed alone) of conv3d and, for the
"up T" shape, conv_transpose3d, on NCDHW float32 tensors with
torch.set_num_threads(2) (PyTorch runs these through its bundled oneDNN).
Each number is the best over R rounds of N repetitions, the rounds interleaved
over all cases (the machine is shared; as in bench_conv.c).
With --bench, runs our benchmark (library kernels only) once per round,
alternating with the PyTorch rounds, so that both see the same load; with
--ours, reads our numbers from `bench_conv --json` instead. Prints the ratio of
our time to PyTorch's (below 1: we are faster) per pass and per shape's
training step (forward + backward-data + backward-filter; backward-data of
the first layer, whose input needs no gradient, is left out of the step).
"""
import argparse
import json
import subprocess
import tempfile
import time

import torch
import torch.nn.functional as F

# name, transposed, N, Cin, Cout, (D, H, W) of the conv's x side, k, stride, pad
# (for the transposed shape: the adjoint conv, x = its output, y = its input),
# exactly as g_shapes in bench_conv.c.
SHAPES = [
    ("32->32 40x56x40 k3 p1", False, 2, 32, 32, (40, 56, 40), 3, 1, 1),
    ("64->64 20x28x20 k3 p1", False, 2, 64, 64, (20, 28, 20), 3, 1, 1),
    ("1->32 40x56x40 k3 p1", False, 2, 1, 32, (40, 56, 40), 3, 1, 1),
    ("down 32->64 k3 s2 p1", False, 2, 32, 64, (40, 56, 40), 3, 2, 1),
    ("down 32->64 k2 s2", False, 2, 32, 64, (40, 56, 40), 2, 2, 0),
    ("up T 64->32 k2 s2", True, 2, 32, 64, (40, 56, 40), 2, 2, 0),
    ("head 32->3 k1", False, 2, 32, 3, (40, 56, 40), 1, 1, 0),
]


def best_time(fn, reps):
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", help="JSON from bench_conv --json")
    ap.add_argument("--bench", help="path of the bench_conv executable: run it (lib only) once "
                    "per round, alternating with the PyTorch round, and compare with that")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds interleaved over all cases; each number is the best of all")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}, "
          f"best of {args.rounds} rounds x {args.reps} repetitions")
    ours = {}
    if args.ours:
        with open(args.ours) as f:
            for r in json.load(f)["results"]:
                if r["impl"] == "lib":
                    ours[(r["shape"], r["pass"])] = r["ms"]
    cases = []  # (name, pass, flops, fn, first layer)
    with torch.no_grad():
        for name, tr, n, cin, cout, sp, k, s, p in SHAPES:
            out = [(i + 2 * p - k) // s + 1 for i in sp]
            flops = 2.0 * n * cout * out[0] * out[1] * out[2] * cin * k ** 3
            xs = torch.randn(n, cin, *sp)        # conv x side
            ys = torch.randn(n, cout, *out)      # conv y side
            w = torch.randn(cout, cin, k, k, k)  # conv weight = conv_transpose3d weight
            if not tr:
                x, gy = xs, ys
                fwd = (lambda x, w, s, p: lambda: F.conv3d(x, w, None, s, p))(x, w, s, p)
            else:
                # conv_transpose3d input = conv y side, output = conv x side
                x, gy = ys, xs
                fwd = (lambda x, w, s, p: lambda: F.conv_transpose3d(x, w, None, s, p))(x, w, s, p)

            def bwd(mask, gy=gy, x=x, w=w, s=s, p=p, tr=tr):
                return lambda: torch.ops.aten.convolution_backward(
                    gy, x, w, None, [s] * 3, [p] * 3, [1] * 3, tr, [0] * 3, 1, mask)
            for pname, fn in [("fwd", fwd), ("bwd_data", bwd([True, False, False])),
                              ("bwd_filter", bwd([False, True, False]))]:
                cases.append((name, pname, flops, fn, cin == 1))
        best = [float("inf")] * len(cases)
        for _ in range(args.rounds):
            if args.bench:
                with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
                    subprocess.run([args.bench, "--rounds", "1", "--reps", str(args.reps),
                                    "--impls", "lib", "--no-sgemm", "--json", tmp.name],
                                   check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                    with open(tmp.name) as f:
                        for r in json.load(f)["results"]:
                            key = (r["shape"], r["pass"])
                            ours[key] = min(ours.get(key, float("inf")), r["ms"])
            for i, c in enumerate(cases):
                best[i] = min(best[i], best_time(c[3], args.reps))
    print(f"{'shape (N=2)':24s} {'pass':11s} {'torch ms':>9s} {'GFLOP/s':>8s} {'ours ms':>8s} "
          f"{'ours/torch':>10s}")
    step_t, step_o = 0.0, 0.0
    for (name, pname, flops, _, first_layer), t in zip(cases, best):
        o = ours.get((name, pname))
        ratio = f"{o / (t * 1e3):10.2f}" if o else f"{'-':>10s}"
        ostr = f"{o:8.2f}" if o else f"{'-':>8s}"
        print(f"{name:24s} {pname:11s} {t * 1e3:9.2f} {flops / t / 1e9:8.1f} {ostr} {ratio}")
        if o and not (first_layer and pname == "bwd_data"):
            step_t += t * 1e3
            step_o += o
    if ours:
        print(f"sum over shapes of fwd + bwd_data + bwd_filter (first layer without bwd_data): "
              f"torch {step_t:.1f} ms, ours {step_o:.1f} ms, ours/torch {step_o / step_t:.2f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch CPU timings of the conv3d shapes of experiments/bench_conv.c (issue 2).

    /root/torchvenv/bin/python experiments/bench_conv_torch.py [--ours bench.json] [--reps N]

Times forward, backward-data and backward-filter (aten.convolution_backward
with one output selected, so each pass is timed alone) of conv3d and, for the
"up T" shape, conv_transpose3d, on NCDHW float32 tensors with
torch.set_num_threads(2) (PyTorch runs these through its bundled oneDNN).
Each number is the best of several repetitions (the machine is shared).
With --ours (the JSON written by `bench_conv --json`), prints the ratio of
our time to PyTorch's (below 1: we are faster) per pass and per shape's
training step (forward + backward-data + backward-filter; backward-data of
the first layer, whose input needs no gradient, is left out of the step).
"""
import argparse
import json
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
]


def best_time(fn, reps, min_time=0.3):
    fn()
    best, start, r = float("inf"), time.perf_counter(), 0
    while r < reps or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        r += 1
        if r > 50:
            break
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", help="JSON from bench_conv --json")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}")
    ours = {}
    if args.ours:
        with open(args.ours) as f:
            for r in json.load(f)["results"]:
                if r["impl"] == "lib":
                    ours[(r["shape"], r["pass"])] = r["ms"]
    print(f"{'shape (N=2)':24s} {'pass':11s} {'torch ms':>9s} {'GFLOP/s':>8s} {'ours ms':>8s} "
          f"{'ours/torch':>10s}")
    step_t, step_o = 0.0, 0.0
    with torch.no_grad():
        for name, tr, n, cin, cout, sp, k, s, p in SHAPES:
            out = [(i + 2 * p - k) // s + 1 for i in sp]
            flops = 2.0 * n * cout * out[0] * out[1] * out[2] * cin * k ** 3
            xs = torch.randn(n, cin, *sp)        # conv x side
            ys = torch.randn(n, cout, *out)      # conv y side
            if not tr:
                w = torch.randn(cout, cin, k, k, k)
                x, gy = xs, ys
                fwd = lambda: F.conv3d(x, w, None, s, p)
                def bwd(mask):
                    return lambda: torch.ops.aten.convolution_backward(
                        gy, x, w, None, [s] * 3, [p] * 3, [1] * 3, False, [0] * 3, 1, mask)
            else:
                # conv_transpose3d input = conv y side, output = conv x side;
                # weight (Cin_t, Cout_t, k, k, k) = (cout, cin, ...)
                w = torch.randn(cout, cin, k, k, k)
                x, gy = ys, xs
                fwd = lambda: F.conv_transpose3d(x, w, None, s, p)
                def bwd(mask):
                    return lambda: torch.ops.aten.convolution_backward(
                        gy, x, w, None, [s] * 3, [p] * 3, [1] * 3, True, [0] * 3, 1, mask)
            passes = [("fwd", fwd), ("bwd_data", bwd([True, False, False])),
                      ("bwd_filter", bwd([False, True, False]))]
            for pname, fn in passes:
                t = best_time(fn, args.reps)
                o = ours.get((name, pname))
                ratio = f"{o / (t * 1e3):10.2f}" if o else f"{'-':>10s}"
                ostr = f"{o:8.2f}" if o else f"{'-':>8s}"
                print(f"{name:24s} {pname:11s} {t * 1e3:9.2f} {flops / t / 1e9:8.1f} {ostr} {ratio}")
                first_layer_dx = cin == 1 and pname == "bwd_data"
                if o and not first_layer_dx:
                    step_t += t * 1e3
                    step_o += o
    if ours:
        print(f"sum over shapes of fwd + bwd_data + bwd_filter (first layer without bwd_data): "
              f"torch {step_t:.1f} ms, ours {step_o:.1f} ms, ours/torch {step_o / step_t:.2f}")


if __name__ == "__main__":
    main()

"""PyTorch (CPU) twin of experiments/bench_train_step.c: one UNet3D training step.

    python experiments/bench_train_step_torch.py [--features 16,32,64,128] [--in 1] [--out 3]
        [--batch 2] [--patch 64 | 64,64,64] [--norm instance] [--no-affine] [--groups 8]
        [--act leaky_relu] [--upsample transposed] [--threads 0] [--warmup 3] [--steps 5]
        [--seed 0] [--json FILE] [--no-compile] [--compile-warmup 2]

Same model (experiments/unet3d_torch.py, same state_dict names), same loss
(MONAI DiceCE as losses/losses.c with the default config: softmax Dice over the
foreground channels per sample, smooth 1e-5 / 1e-5, plus mean cross-entropy),
torch.optim.AdamW(lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-4),
torch.set_num_threads(threads). A step is zero_grad(set_to_none) + forward +
loss + backward + optimizer step, timed in the same three parts as the C
benchmark; median of `steps` steps after `warmup` untimed ones.

Variants: eager with the default contiguous layout (NCDHW), eager with
torch.channels_last_3d (model and input), and torch.compile of model + loss
(inductor, default mode) in both layouts; the optimizer step stays eager.
The best eager and the best compiled variant are reported. A torch.compile
failure is reported, not fatal. (Inductor caches its kernels, by default
under /tmp/torchinductor_$USER, so only the first run pays the full compile.)
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet3d_torch import UNet3D  # noqa: E402


FORMATS = (("contiguous", torch.contiguous_format), ("channels_last_3d", torch.channels_last_3d))


def dice_ce(logits, lab, c, smooth_nr=1e-5, smooth_dr=1e-5):
    """losses/losses.c's dice_ce with include_background = false, batch = false; lab (N, D, H, W) long."""
    p = torch.softmax(logits, 1)
    t = F.one_hot(lab, c).movedim(-1, 1).to(logits.dtype)
    p, t = p[:, 1:], t[:, 1:]
    dims = list(range(2, logits.dim()))
    inter = (p * t).sum(dims)
    den = t.sum(dims) + p.sum(dims)
    dice = (1.0 - (2.0 * inter + smooth_nr) / (den + smooth_dr)).mean()
    return dice + F.cross_entropy(logits, lab)


def ints(s):
    v = [int(t) for t in s.replace("x", ",").split(",") if t]
    if not v or any(x <= 0 for x in v):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return v


def run_variant(name, a, fwd, model, x, lab, mem_format):
    """Times `warmup` + `steps` steps; returns a dict of medians (ms)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)
    tf, tb, to, tt, losses = [], [], [], [], []
    warm = a.warmup if name != "compile" else max(a.warmup, a.compile_warmup)
    t_first = None
    for it in range(warm + a.steps):
        t0 = time.perf_counter()
        loss = fwd(x, lab)
        lv = loss.item()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        del loss
        losses.append(lv)
        if it == 0:
            t_first = t3 - t0
        if it >= warm:
            tf.append(t1 - t0)
            tb.append(t2 - t1)
            to.append(t3 - t2)
            tt.append(t3 - t0)
    med = statistics.median
    r = dict(variant=name, layout=mem_format, fwd_ms=1e3 * med(tf), bwd_ms=1e3 * med(tb),
             opt_ms=1e3 * med(to), step_ms=1e3 * med(tt), best_step_ms=1e3 * min(tt),
             first_step_s=t_first, first_loss=losses[0], last_loss=losses[-1])
    print(f"  {name:<8} {mem_format:<17} fwd+loss {r['fwd_ms']:8.1f} ms  backward {r['bwd_ms']:8.1f} ms  "
          f"AdamW {r['opt_ms']:6.1f} ms  step {r['step_ms']:8.1f} ms (best {r['best_step_ms']:.1f})"
          + (f"  [first step incl. compile {t_first:.1f} s]" if name == "compile" else ""), flush=True)
    return r


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", type=ints, default=[16, 32, 64, 128])
    p.add_argument("--in", dest="cin", type=int, default=1)
    p.add_argument("--out", dest="cout", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--patch", type=ints, default=[64])
    p.add_argument("--norm", default="instance", choices=["instance", "batch", "group", "none"])
    p.add_argument("--no-affine", action="store_true")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--act", default="leaky_relu", choices=["leaky_relu", "relu", "gelu"])
    p.add_argument("--upsample", default="transposed", choices=["transposed", "trilinear"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compile-warmup", type=int, default=2,
                   help="untimed steps for the compiled variant (at least --warmup)")
    a = p.parse_args()
    patch = a.patch * 3 if len(a.patch) == 1 else a.patch
    if len(patch) != 3:
        p.error("--patch takes 1 or 3 sizes")
    threads = a.threads if a.threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)

    cfg = dict(in_channels=a.cin, out_channels=a.cout, features=a.features, norm=a.norm,
               norm_groups=a.groups, norm_affine=not a.no_affine, act=a.act, upsample=a.upsample)
    # FLOPs as mt_unet3d_flops: 2 x MACs of every conv / transposed conv (forward), x3 per step.
    fl = [0.0]

    def count(mod, inp, out):
        if isinstance(mod, torch.nn.Conv3d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1] * mod.kernel_size[2]
            fl[0] += 2.0 * out.numel() * k
        elif isinstance(mod, torch.nn.ConvTranspose3d):
            k = mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1] * mod.kernel_size[2]
            fl[0] += 2.0 * inp[0].numel() * k

    ref = UNet3D(**cfg)
    hooks = [m.register_forward_hook(count) for m in ref.modules()
             if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.no_grad():
        ref(torch.zeros(1, a.cin, *patch))
    for h in hooks:
        h.remove()
    gflop = 3.0 * fl[0] * a.batch * 1e-9
    init_state = {k: v.clone() for k, v in ref.state_dict().items()}

    g = torch.Generator().manual_seed(a.seed + 1)
    x0 = torch.randn(a.batch, a.cin, *patch, generator=g)
    lab = torch.randint(0, a.cout, (a.batch, *patch), generator=g)
    nparams = sum(t.numel() for t in ref.parameters())

    print(f"PyTorch {torch.__version__} UNet3D training step (CPU, {torch.get_num_threads()} threads)")
    print(f"  features {a.features}, {a.norm} norm, {a.act}, {a.upsample} upsampling, in {a.cin} / out "
          f"{a.cout}, batch {a.batch}, patch {'x'.join(map(str, patch))}")
    print(f"  {nparams} parameters, {gflop:.2f} GFLOP per step (3 x forward); {a.warmup} warm-up + "
          f"{a.steps} timed steps", flush=True)

    results = []
    for fmt_name, fmt in FORMATS:
        model = UNet3D(**cfg)
        model.load_state_dict(init_state)
        model.train()
        model = model.to(memory_format=fmt)
        x = x0.contiguous(memory_format=fmt)

        def fwd(xx, ll, model=model):
            return dice_ce(model(xx), ll, a.cout)

        results.append(run_variant("eager", a, fwd, model, x, lab, fmt_name))
        del model

    best_eager = min(results, key=lambda r: r["step_ms"])
    compiled = None
    compile_error = None
    if not a.no_compile:
        for fmt_name, fmt in FORMATS:
            try:
                torch._dynamo.reset()
                model = UNet3D(**cfg)
                model.load_state_dict(init_state)
                model.train()
                model = model.to(memory_format=fmt)
                x = x0.contiguous(memory_format=fmt)

                def fwd_loss(xx, ll, model=model):
                    return dice_ce(model(xx), ll, a.cout)

                r = run_variant("compile", a, torch.compile(fwd_loss), model, x, lab, fmt_name)
                results.append(r)
                if compiled is None or r["step_ms"] < compiled["step_ms"]:
                    compiled = r
                del model
            except Exception as e:  # noqa: BLE001 - report any compile failure
                compile_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                print(f"  torch.compile ({fmt_name}) failed: {compile_error}", flush=True)
                traceback.print_exc(limit=3, file=sys.stderr)

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"  best eager: {best_eager['layout']} {best_eager['step_ms']:.1f} ms/step "
          f"({gflop / best_eager['step_ms'] * 1e3:.1f} GFLOP/s); max RSS {maxrss:.1f} MiB (whole process)")
    if a.json:
        out = dict(impl="torch", torch_version=torch.__version__, threads=torch.get_num_threads(),
                   gflop=gflop, params=nparams, variants=results, best_eager=best_eager,
                   compiled=compiled, compile_error=compile_error, maxrss_mib=maxrss)
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

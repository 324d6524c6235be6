"""PyTorch twin of experiments/bench_train_step.c: one UNet3D training step.

    python experiments/bench_train_step_torch.py [--features 16,32,64,128] [--in 1] [--out 3]
        [--batch 2] [--patch 64 | 64,64,64] [--norm instance] [--no-affine] [--groups 8]
        [--act leaky_relu] [--upsample transposed] [--batch-dice] [--threads 0]
        [--device cpu | cuda | cuda:N] [--precision fp32 | tf32 | bf16-mixed] [--optim adamw | sgd]
        [--layout both | contiguous | channels_last_3d] [--channels-last]
        [--cudnn-benchmark | --no-cudnn-benchmark] [--peak-tflops X] [--profile-steps N]
        [--warmup 3] [--steps 5] [--seed 0] [--json FILE] [--no-eager] [--no-compile]
        [--compile-warmup 2]

Same model (experiments/unet3d_torch.py, same state_dict names), same loss
(MONAI DiceCE as losses/losses.c with the default config: softmax Dice over the
foreground channels per sample, or over the batch with --batch-dice, smooth
1e-5 / 1e-5, plus mean cross-entropy), same optimizer: --optim adamw (default):
torch.optim.AdamW(lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-4);
--optim sgd: torch.optim.SGD(lr 1e-2, momentum 0.99, nesterov, weight_decay
3e-5) (configs/unet3d.yaml); PyTorch's default optimizer implementation
(foreach on CUDA). torch.set_num_threads(threads). A step is
zero_grad(set_to_none) + forward + loss + backward + optimizer step, timed in
the same three parts as the C benchmark (forward includes loss.item()); on a
GPU torch.cuda.synchronize() is called before the clock is read at each
boundary. Median of `steps` steps after `warmup` untimed ones; samples/s =
batch / median step; TFLOP/s from the same model FLOPs as mt_unet3d_flops
(counted with forward hooks on the meta device); MFU = that / --peak-tflops.

Precision: fp32: TF32 off for matmuls and cuDNN convolutions; tf32: on;
bf16-mixed: torch.autocast(bfloat16) around model + loss (inside the function
that torch.compile compiles), TF32 off (no fp32 convolution remains). The
flags are set with the fp32_precision API where this torch has it, else with
allow_tf32. --cudnn-benchmark (default on for cuda): torch.backends.cudnn.
benchmark, the counterpart of medtrain's cudnnFind in the first step.

Variants: eager with the default contiguous layout (NCDHW) and/or with
torch.channels_last_3d (model and input) (--layout; --channels-last means
--layout channels_last_3d), then torch.compile of model + loss (inductor,
default mode) in the same layouts, unless --no-compile; --no-eager runs only
the compiled variants; the optimizer step stays eager. The best eager and the
best compiled variant are reported. A torch.compile failure is reported, not
fatal. (Inductor caches its kernels, by default under
/tmp/torchinductor_$USER, so only the first run pays the full compile.)

Memory (CUDA), per variant: the previous variant's model is freed and the
caching allocator emptied, then torch.cuda.max_memory_allocated() is measured
over the variant's whole run (model, inputs, optimizer state, cudnn.benchmark
search, compile and every step: peak_run_mib, the counterpart of medtrain's
peak_run_mib) and over the timed steps only (peak reset after warm-up:
peak_mib); reserved_mib is torch.cuda.max_memory_reserved() over the whole
run. On the CPU only the process's max RSS is reported.

--profile-steps N: after the timed steps of each variant, N more steps under
torch.profiler; the ops and kernels with the most self device time (self CPU
time on the CPU) are printed (top 25) and stored in the JSON (profile_table).
"""
import argparse
import gc
import json
import math
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


def dice_ce(logits, lab, c, batch_dice=False, smooth_nr=1e-5, smooth_dr=1e-5):
    """losses/losses.c's dice_ce with include_background = false; lab (N, D, H, W) long.

    batch_dice: sums over the batch too (one Dice per class), else one per sample and class."""
    p = torch.softmax(logits, 1)
    t = F.one_hot(lab, c).movedim(-1, 1).to(logits.dtype)
    p, t = p[:, 1:], t[:, 1:]
    dims = list(range(2, logits.dim()))
    if batch_dice:
        dims = [0] + dims
    inter = (p * t).sum(dims)
    den = t.sum(dims) + p.sum(dims)
    dice = (1.0 - (2.0 * inter + smooth_nr) / (den + smooth_dr)).mean()
    return dice + F.cross_entropy(logits, lab)


def ints(s):
    v = [int(t) for t in s.replace("x", ",").split(",") if t]
    if not v or any(x <= 0 for x in v):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {s!r}")
    return v


def set_precision(precision):
    """TF32 flags for fp32 / tf32 / bf16-mixed; returns a description of what was set."""
    tf32 = precision == "tf32"
    cudnn = torch.backends.cudnn
    if hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(cudnn, "conv"):
        v = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = v
        cudnn.conv.fp32_precision = v
        return f"matmul/cudnn.conv fp32_precision={v}"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    cudnn.allow_tf32 = tf32
    return f"matmul/cudnn allow_tf32={tf32}"


def make_optim(a, params):
    if a.optim == "sgd":
        return torch.optim.SGD(params, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    return torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)


def profile_table(a, dev, fwd, model, opt, x, lab, sync):
    """Runs a.profile_steps steps under torch.profiler; the top ops by self device (CPU) time."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(a.profile_steps):
            loss = fwd(x, lab)
            loss.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            del loss
        sync()
    ka = prof.key_averages()
    keys = ["self_device_time_total", "self_cuda_time_total"] if dev.type == "cuda" else ["self_cpu_time_total"]
    for k in keys:
        try:
            return ka.table(sort_by=k, row_limit=25)
        except Exception:  # noqa: BLE001 - the key's name depends on the torch version
            continue
    return ka.table(row_limit=25)


def run_variant(name, a, dev, fwd, model, x, lab, mem_format, gflop):
    """Times `warmup` + `steps` steps; returns a dict of medians (ms) and memory."""
    cuda = dev.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    opt = make_optim(a, model.parameters())
    tf, tb, to, tt, losses = [], [], [], [], []
    warm = a.warmup if name != "compile" else max(a.warmup, a.compile_warmup)
    t_first = None
    peak_warm = 0
    for it in range(warm + a.steps):
        if it == warm and cuda:
            sync()
            peak_warm = torch.cuda.max_memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        sync()
        t0 = time.perf_counter()
        loss = fwd(x, lab)
        lv = loss.item()
        sync()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync()
        t2 = time.perf_counter()
        opt.step()
        sync()
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
    step_s = med(tt)
    tflops = gflop / step_s * 1e-3
    r = dict(variant=name, layout=mem_format, fwd_ms=1e3 * med(tf), bwd_ms=1e3 * med(tb),
             opt_ms=1e3 * med(to), step_ms=1e3 * step_s, best_step_ms=1e3 * min(tt),
             samples_per_s=a.batch / step_s, tflops=tflops,
             mfu=tflops / a.peak_tflops if a.peak_tflops > 0 else None,
             first_step_s=t_first,
             first_loss=losses[0] if math.isfinite(losses[0]) else None,
             last_loss=losses[-1] if math.isfinite(losses[-1]) else None)
    mem = ""
    if cuda:
        peak = torch.cuda.max_memory_allocated(dev)
        r["peak_mib"] = peak / 2**20
        r["peak_run_mib"] = max(peak, peak_warm) / 2**20
        r["reserved_mib"] = torch.cuda.max_memory_reserved(dev) / 2**20
        mem = f"  peak {r['peak_mib']:.0f} MiB (run {r['peak_run_mib']:.0f}, reserved {r['reserved_mib']:.0f})"
    print(f"  {name:<8} {mem_format:<17} fwd+loss {r['fwd_ms']:8.1f} ms  backward {r['bwd_ms']:8.1f} ms  "
          f"{a.optim_label} {r['opt_ms']:6.1f} ms  step {r['step_ms']:8.1f} ms (best {r['best_step_ms']:.1f})  "
          f"{r['samples_per_s']:.2f} samples/s" + mem
          + (f"  [first step incl. compile {t_first:.1f} s]" if name == "compile" else ""), flush=True)
    if a.profile_steps > 0:
        try:
            tab = profile_table(a, dev, fwd, model, opt, x, lab, sync)
        except Exception as e:  # noqa: BLE001 - a profiler failure (e.g. CUPTI) must not lose the timings
            tab = f"torch.profiler failed: {type(e).__name__}: {e}"
        r["profile_table"] = tab
        print(f"  torch.profiler, {a.profile_steps} steps after the timed ones ({name}, {mem_format}):")
        print(tab, flush=True)
    return r


def count_gflop(cfg, cin, patch, batch):
    """3 x forward FLOPs as mt_unet3d_flops: 2 x MACs of every conv / transposed conv."""
    fl = [0.0]

    def count(mod, inp, out):
        if isinstance(mod, torch.nn.Conv3d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1] * mod.kernel_size[2]
            fl[0] += 2.0 * out.numel() * k
        elif isinstance(mod, torch.nn.ConvTranspose3d):
            k = mod.out_channels * mod.kernel_size[0] * mod.kernel_size[1] * mod.kernel_size[2]
            fl[0] += 2.0 * inp[0].numel() * k

    def run(device):
        fl[0] = 0.0
        with torch.device(device):
            m = UNet3D(**cfg)
        hooks = [mm.register_forward_hook(count) for mm in m.modules()
                 if isinstance(mm, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
        with torch.no_grad():
            m(torch.zeros(1, cin, *patch, device=device))
        for h in hooks:
            h.remove()
        return 3.0 * fl[0] * batch * 1e-9

    try:
        return run("meta")  # shapes only: no compute at 128^3
    except Exception:  # noqa: BLE001 - an op without a meta kernel: count on the CPU
        return run("cpu")


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
    p.add_argument("--batch-dice", action="store_true")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16-mixed"])
    p.add_argument("--optim", default="adamw", choices=["adamw", "sgd"])
    p.add_argument("--layout", default="both", choices=["both", "contiguous", "channels_last_3d"])
    p.add_argument("--channels-last", action="store_true", help="same as --layout channels_last_3d")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.backends.cudnn.benchmark (default: on for cuda)")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="the device's peak TFLOP/s for MFU (e.g. 989: H100/H200 SXM dense bf16)")
    p.add_argument("--profile-steps", type=int, default=0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--no-eager", action="store_true", help="only the torch.compile variants")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--compile-warmup", type=int, default=2,
                   help="untimed steps for the compiled variant (at least --warmup)")
    a = p.parse_args()
    patch = a.patch * 3 if len(a.patch) == 1 else a.patch
    if len(patch) != 3:
        p.error("--patch takes 1 or 3 sizes")
    if a.steps < 1 or a.warmup < 0 or a.profile_steps < 0:
        p.error("--steps must be >= 1, --warmup and --profile-steps >= 0")
    if a.no_eager and a.no_compile:
        p.error("--no-eager and --no-compile leave nothing to run")
    try:
        dev = torch.device(a.device)
    except RuntimeError as e:
        print(f"bench_train_step_torch.py: --device {a.device}: {e}", file=sys.stderr)
        sys.exit(2)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            print(f"bench_train_step_torch.py: --device {a.device}: no usable GPU "
                  f"(torch {torch.__version__}, CUDA build {torch.version.cuda})", file=sys.stderr)
            sys.exit(2)
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            print(f"bench_train_step_torch.py: --device {a.device}: only {torch.cuda.device_count()} GPU(s)",
                  file=sys.stderr)
            sys.exit(2)
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        print(f"bench_train_step_torch.py: --device {a.device}: expected cpu, cuda or cuda:N", file=sys.stderr)
        sys.exit(2)
    cuda = dev.type == "cuda"
    layout = "channels_last_3d" if a.channels_last else a.layout
    formats = [f for f in FORMATS if layout in ("both", f[0])]
    threads = a.threads if a.threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.manual_seed(a.seed)
    prec_note = set_precision(a.precision)
    bench = a.cudnn_benchmark if a.cudnn_benchmark is not None else cuda
    torch.backends.cudnn.benchmark = bool(bench)
    a.optim_label = "SGD  " if a.optim == "sgd" else "AdamW"
    bf16 = a.precision == "bf16-mixed"

    cfg = dict(in_channels=a.cin, out_channels=a.cout, features=a.features, norm=a.norm,
               norm_groups=a.groups, norm_affine=not a.no_affine, act=a.act, upsample=a.upsample)
    gflop = count_gflop(cfg, a.cin, patch, a.batch)
    ref = UNet3D(**cfg)
    init_state = {k: v.clone() for k, v in ref.state_dict().items()}
    nparams = sum(t.numel() for t in ref.parameters())
    del ref

    g = torch.Generator().manual_seed(a.seed + 1)
    x0 = torch.randn(a.batch, a.cin, *patch, generator=g)
    lab0 = torch.randint(0, a.cout, (a.batch, *patch), generator=g)

    if cuda:
        dev_name = torch.cuda.get_device_name(dev)
        where = f"{dev} {dev_name}, cudnn {torch.backends.cudnn.version()}, cudnn.benchmark {bool(bench)}"
    else:
        dev_name = "cpu"
        where = f"CPU, {torch.get_num_threads()} threads"
    print(f"PyTorch {torch.__version__} UNet3D training step ({where}, {a.precision}, "
          f"{'SGD' if a.optim == 'sgd' else 'AdamW'})")
    print(f"  features {a.features}, {a.norm} norm, {a.act}, {a.upsample} upsampling, in {a.cin} / out "
          f"{a.cout}, batch {a.batch}, patch {'x'.join(map(str, patch))}{', batch Dice' if a.batch_dice else ''}")
    print(f"  {nparams} parameters, {gflop:.2f} GFLOP per step (3 x forward); {a.warmup} warm-up + "
          f"{a.steps} timed steps; {prec_note}", flush=True)

    def build(fmt):
        """A fresh model with the initial weights, and the inputs, on dev in layout fmt."""
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        model = UNet3D(**cfg)
        model.load_state_dict(init_state)
        model.train()
        model = model.to(device=dev, memory_format=fmt)
        x = x0.to(dev).contiguous(memory_format=fmt)
        lab = lab0.to(dev)

        def fwd_loss(xx, ll, model=model):
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
                return dice_ce(model(xx), ll, a.cout, a.batch_dice)

        return model, x, lab, fwd_loss

    results = []
    if not a.no_eager:
        for fmt_name, fmt in formats:
            model, x, lab, fwd = build(fmt)
            results.append(run_variant("eager", a, dev, fwd, model, x, lab, fmt_name, gflop))
            del model, x, lab, fwd

    eager = [r for r in results if r["variant"] == "eager"]
    best_eager = min(eager, key=lambda r: r["step_ms"]) if eager else None
    compiled = None
    compile_error = None
    if not a.no_compile:
        for fmt_name, fmt in formats:
            try:
                torch._dynamo.reset()
                model, x, lab, fwd = build(fmt)
                r = run_variant("compile", a, dev, torch.compile(fwd), model, x, lab, fmt_name, gflop)
                results.append(r)
                if compiled is None or r["step_ms"] < compiled["step_ms"]:
                    compiled = r
                del model, x, lab, fwd
            except Exception as e:  # noqa: BLE001 - report any compile failure
                compile_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                print(f"  torch.compile ({fmt_name}) failed: {compile_error}", flush=True)
                traceback.print_exc(limit=3, file=sys.stderr)

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if best_eager:
        print(f"  best eager: {best_eager['layout']} {best_eager['step_ms']:.1f} ms/step "
              f"({gflop / best_eager['step_ms'] * 1e3:.1f} GFLOP/s); max RSS {maxrss:.1f} MiB (whole process)")
    if a.json:
        out = dict(impl="torch", torch_version=torch.__version__, device=str(dev), device_name=dev_name,
                   precision=a.precision, optim=a.optim, cudnn_benchmark=bool(bench),
                   cudnn_version=torch.backends.cudnn.version() if cuda else None, batch=a.batch,
                   threads=torch.get_num_threads(), gflop=gflop, params=nparams, peak_tflops=a.peak_tflops,
                   variants=results, best_eager=best_eager, compiled=compiled, compile_error=compile_error,
                   maxrss_mib=maxrss)
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

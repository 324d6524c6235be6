#!/usr/bin/env bash
# The flagship GPU benchmark: configs/unet3d.yaml's UNet3D (1 input channel,
# 3 classes, features 32-64-128-256-320, instance norm, leaky ReLU,
# transposed-conv upsampling, batch Dice + CE, SGD Nesterov momentum 0.99),
# patch 128^3, batch 2, one training step, medtrain vs PyTorch on one GPU.
#
#   bash experiments/bench_unet3d_gpu.sh        # from anywhere; runs from the repo root
#
# Run on the GPU machine by scripts/gpu_run.sh (section 6, every
# experiments/bench_*gpu*.sh, after the build, with its LD_LIBRARY_PATH), under
# `timeout $MT_BENCH_TIMEOUT` (default 300 s): docs/gpu.md, "UNet3D benchmark".
#
# Rows, each its own process with its own timeout, in this order (the most
# important first, so that a short budget loses the least):
#   ours bf16-mixed; torch eager bf16 contiguous (+ torch.profiler table);
#   torch eager bf16 channels_last_3d; torch.compile bf16 (the faster eager
#   layout); profile of ours bf16 (nsys, else ncu, else none); ours tf32;
#   ours fp32; torch eager tf32 and fp32 (the faster bf16 eager layout).
# A row that fails or times out is marked in the table; the others still run.
# The whole script keeps to a budget: MT_UNET3D_BUDGET seconds (default
# MT_BENCH_TIMEOUT - 20, i.e. 280 s): a row gets min(its cap, what is left);
# rows that no longer fit (< 25 s left) are skipped and listed.
#
# Output: per-row logs on stdout, then a Markdown report (GPU, table of
# samples/s, step time, ratios to PyTorch eager and compiled, peak memory and
# ratios, TFLOP/s and MFU, per-part times, the targets, the profile, the raw
# JSON), printed and written to $OUT/bench_unet3d_gpu.md when OUT is set
# (rewritten after every row, so a killed run still leaves the rows so far).
#
# Environment: BUILD_DIR (default build-gpu, relative to the repo root: where
# scripts/gpu_run.sh builds; the binary is $BUILD_DIR/experiments/bench_train_step),
# MT_TORCH_PYTHON (else /root/torchvenv/bin/python, else python3: the first
# that imports torch), MT_PEAK_TFLOPS (the GPU's dense bf16 peak for MFU;
# default: 989 for an H100/H200 SXM, 756 for an H100 PCIe, else no MFU),
# MT_UNET3D_WARMUP (3), MT_UNET3D_STEPS (10), MT_UNET3D_BUDGET (see above),
# MT_UNET3D_PATCH (128), MT_UNET3D_BATCH (2); for testing this script without
# a GPU: MT_UNET3D_DEVICE=cpu MT_UNET3D_FEATURES=4,8 MT_UNET3D_PATCH=16 (it
# still wants an nvidia-smi on PATH; a stub that prints a name will do).
# Exit status: 0 when our bf16-mixed row ran, 1 otherwise, 77 when no GPU is
# visible.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1

build_dir=${BUILD_DIR:-build-gpu}
bench=$build_dir/experiments/bench_train_step
warmup=${MT_UNET3D_WARMUP:-3}
steps=${MT_UNET3D_STEPS:-10}
patch=${MT_UNET3D_PATCH:-128}
batch=${MT_UNET3D_BATCH:-2}
features=${MT_UNET3D_FEATURES:-32,64,128,256,320}
device=${MT_UNET3D_DEVICE:-cuda}
outer=${MT_BENCH_TIMEOUT:-300}
budget=${MT_UNET3D_BUDGET:-$((outer - 20))}
t_start=$SECONDS
say() { echo "bench_unet3d_gpu.sh: $*"; }

# ---- the GPU ----
gpu_line=""
if command -v nvidia-smi >/dev/null 2>&1; then
    gpu_line=$(nvidia-smi -i 0 --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null) ||
        gpu_line=$(nvidia-smi -L 2>/dev/null | head -1 | sed 's/^GPU 0: //; s/ (UUID.*//') || gpu_line=""
fi
if [[ -z $gpu_line ]]; then
    say "no GPU visible (nvidia-smi missing or failing): nothing to run"
    exit 77
fi
gpu_name=${gpu_line%%,*}
if [[ -n ${MT_PEAK_TFLOPS:-} ]]; then
    peak=$MT_PEAK_TFLOPS
    peak_note="MT_PEAK_TFLOPS=$peak"
elif [[ $gpu_name == *H100*PCIe* ]]; then
    peak=756
    peak_note="756 TFLOP/s: H100 PCIe dense bf16 (NVIDIA datasheet)"
elif [[ $gpu_name == *H100* || $gpu_name == *H200* ]]; then
    peak=989
    peak_note="989 TFLOP/s: H100/H200 SXM dense bf16 (NVIDIA datasheet; set MT_PEAK_TFLOPS for other variants)"
else
    peak=""
    peak_note="unknown for '$gpu_name': set MT_PEAK_TFLOPS for MFU"
fi
peak_arg=()
[[ -n $peak ]] && peak_arg=(--peak-tflops "$peak")

# ---- PyTorch: its python runs without the dependency prefix gpu_run.sh puts on LD_LIBRARY_PATH ----
py_ld=$(echo "${LD_LIBRARY_PATH:-}" | tr ':' '\n' | grep -v "^${MT_DEPS_PREFIX:-/tmp/mtdeps}" | paste -sd: -)
py=""
for cand in "${MT_TORCH_PYTHON:-}" /root/torchvenv/bin/python python3; do
    if [[ -n $cand ]] && LD_LIBRARY_PATH=$py_ld "$cand" -c "import torch" >/dev/null 2>&1; then
        py=$cand
        break
    fi
done
torch_note=""
if [[ -z $py ]]; then
    torch_note="no python with torch found (set MT_TORCH_PYTHON): PyTorch rows skipped"
elif [[ $device == cuda* ]] &&
    ! LD_LIBRARY_PATH=$py_ld "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    torch_note="$py: torch $(LD_LIBRARY_PATH=$py_ld "$py" -c 'import torch; print(torch.__version__)' 2>/dev/null) sees no GPU: PyTorch rows skipped"
    py=""
fi
rpy=${py:-python3} # the report needs only the standard library

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/status.tsv"

model=(--features "$features" --in 1 --out 3 --batch "$batch" --patch "$patch" --norm instance
    --act leaky_relu --upsample transposed --batch-dice --optim sgd --warmup "$warmup" --steps "$steps")

say "GPU: $gpu_line"
say "peak for MFU: $peak_note"
say "medtrain: $bench; torch: ${py:-none}${torch_note:+ ($torch_note)}"
say "budget ${budget}s; UNet3D $features on $device, patch ${patch}^3, batch $batch, warm-up $warmup + $steps timed steps"

# row NAME CAP_S CMD...: runs CMD with timeout min(CAP_S, budget left); its
# output goes to $tmp/NAME.log and stdout; status to status.tsv.
row() {
    local name=$1 cap=$2
    shift 2
    local left=$((budget - (SECONDS - t_start)))
    if ((left < 25)); then
        say "$name: skipped (${left}s of the ${budget}s budget left)"
        printf '%s\tskipped\t0\t0\n' "$name" >>"$tmp/status.tsv"
        return 1
    fi
    local t=$((cap < left ? cap : left))
    echo
    echo "== $name (timeout ${t}s): $*"
    local t0=$SECONDS rc
    timeout -k 10 "$t" "$@" >"$tmp/$name.log" 2>&1
    rc=$?
    cat "$tmp/$name.log"
    local st=ok
    if ((rc == 124 || rc == 137)); then
        st=timeout
    elif ((rc != 0)); then
        st="exit_$rc"
    fi
    say "$name: $st after $((SECONDS - t0))s"
    printf '%s\t%s\t%d\t%d\n' "$name" "$st" "$((SECONDS - t0))" "$t" >>"$tmp/status.tsv"
    report >/dev/null
    [[ $st == ok ]]
}

ours() { # NAME PRECISION CAP [extra args]
    local name=$1 prec=$2 cap=$3
    shift 3
    if [[ ! -x $bench ]]; then
        say "$name: $bench not built (cmake --build $build_dir --target bench_train_step)"
        printf '%s\tnot_built\t0\t0\n' "$name" >>"$tmp/status.tsv"
        return 1
    fi
    row "$name" "$cap" "$bench" "${model[@]}" --device "$device" --precision "$prec" ${peak_arg[@]+"${peak_arg[@]}"} \
        --json "$tmp/$name.json" "$@"
}

torch_row() { # NAME PRECISION CAP [extra args]
    local name=$1 prec=$2 cap=$3
    shift 3
    if [[ -z $py ]]; then
        printf '%s\tno_torch\t0\t0\n' "$name" >>"$tmp/status.tsv"
        return 1
    fi
    row "$name" "$cap" env LD_LIBRARY_PATH="$py_ld" "$py" experiments/bench_train_step_torch.py "${model[@]}" \
        --device "$device" --precision "$prec" ${peak_arg[@]+"${peak_arg[@]}"} --json "$tmp/$name.json" "$@"
}

# The faster bf16 eager layout so far (contiguous when unknown).
best_layout() {
    "$rpy" - "$tmp" <<'EOF'
import json, os, sys
best = None
for n in ("torch_bf16_contiguous", "torch_bf16_channels_last"):
    try:
        v = json.load(open(os.path.join(sys.argv[1], n + ".json")))["best_eager"]
    except Exception:
        continue
    if v and (best is None or v["step_ms"] < best["step_ms"]):
        best = v
print(best["layout"] if best else "contiguous")
EOF
}

cat >"$tmp/report.py" <<'EOF'
import json, os, sys
tmp, gpu_line, peak_note, out_md, budget, elapsed, torch_note, nsys_note = sys.argv[1:9]
status = {}
for line in open(os.path.join(tmp, "status.tsv")):
    f = line.rstrip("\n").split("\t")
    if len(f) == 4:
        status[f[0]] = (f[1], int(f[2]), int(f[3]))


def load(name):
    try:
        return json.load(open(os.path.join(tmp, name + ".json")))
    except Exception:
        return None


def st(name):
    s = status.get(name)
    if not s:
        return "not run"
    if s[0] == "ok":
        return "ok"
    return {"timeout": f"timed out ({s[2]} s)", "skipped": "skipped (budget)", "not_built": "not built",
            "no_torch": "no torch"}.get(s[0], f"failed ({s[0].replace('_', ' ')})")


def tv(name, variant):
    """A torch variant dict: variant 'eager' (best eager of that run) or 'compile'."""
    d = load(name)
    if not d:
        return None
    return d.get("best_eager") if variant == "eager" else d.get("compiled")


def f(v, fmt="{:.2f}"):
    return fmt.format(v) if isinstance(v, (int, float)) else "n/a"


def ratio(a, b):
    return a / b if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def g(d, k):
    return d.get(k) if d else None


L = []
L.append("# UNet3D training step on one GPU: medtrain vs PyTorch")
L.append("")
L.append(f"- GPU: {gpu_line}")
o = load("ours_bf16") or load("ours_tf32") or load("ours_fp32")
tj = next((d for d in (load(n) for n in ("torch_bf16_contiguous", "torch_bf16_channels_last", "torch_bf16_compile",
                                          "torch_tf32", "torch_fp32")) if d), None)
if o:
    L.append(f"- model: configs/unet3d.yaml's UNet3D, {o['params']} parameters, batch {o['batch']}, "
             f"{o['gflop']:.1f} GFLOP per step (3 x forward convolution FLOPs); SGD Nesterov; "
             f"{o['warmup']} warm-up + {o['steps']} timed steps, medians")
if tj:
    L.append(f"- PyTorch {tj['torch_version']}, cuDNN {tj.get('cudnn_version')}, cudnn.benchmark "
             f"{tj.get('cudnn_benchmark')}")
if torch_note:
    L.append(f"- {torch_note}")
L.append(f"- MFU peak: {peak_note} (the bf16 peak for every row, fp32 and tf32 included)")
L.append(f"- elapsed {elapsed} s of a {budget} s budget")
L.append("")
L.append("samples/s = batch / median step; ratios ours / torch (samples/s: > 1 is medtrain faster; memory: < 1 is "
         "medtrain smaller). Torch eager = the faster of contiguous and channels_last_3d; its memory is that "
         "variant's. Peak = max allocated bytes over the whole run (model, optimizer state, cuDNN algorithm "
         "search, warm-up and timed steps); in brackets over the timed steps only.")
L.append("")
L.append("| precision | ours samples/s | ours step ms | torch eager samples/s | ours / eager | torch compile "
         "samples/s | ours / compile | ours peak MiB | torch peak MiB | peak ours / torch | ours TFLOP/s | "
         "MFU ours | MFU torch eager |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
rows = [("bf16-mixed", "ours_bf16", ["torch_bf16_contiguous", "torch_bf16_channels_last"], "torch_bf16_compile"),
        ("tf32", "ours_tf32", ["torch_tf32"], None), ("fp32", "ours_fp32", ["torch_fp32"], None)]
targets = []
for prec, on, tns, cn in rows:
    od = load(on)
    eagers = [v for v in (tv(n, "eager") for n in tns) if v]
    te = min(eagers, key=lambda v: v["step_ms"]) if eagers else None
    tc = tv(cn, "compile") if cn else None
    o_sps = g(od, "samples_per_s")
    e_sps, c_sps = g(te, "samples_per_s"), g(tc, "samples_per_s")
    re_, rc_ = ratio(o_sps, e_sps), ratio(o_sps, c_sps)
    rm = ratio(g(od, "peak_run_mib"), g(te, "peak_run_mib"))
    rmt = ratio(g(od, "peak_mib"), g(te, "peak_mib"))
    ours_s = f(o_sps) if od else st(on)
    eager_s = f"{e_sps:.2f} [{te['layout']}]" if te else "; ".join(f"{n}: {st(n)}" for n in tns)
    comp_s = "-" if not cn else (f"{c_sps:.2f} [{tc['layout']}]" if tc else
                                 (st(cn) if st(cn) != "ok" else
                                  f"failed: {(load(cn) or {}).get('compile_error')}"))
    L.append(f"| {prec} | {ours_s} | {f(g(od, 'step_ms'), '{:.1f}')} | {eager_s} | {f(re_)} | {comp_s} | "
             f"{f(rc_) if cn else '-'} | {f(g(od, 'peak_run_mib'), '{:.0f}')} ({f(g(od, 'peak_mib'), '{:.0f}')}) | "
             f"{f(g(te, 'peak_run_mib'), '{:.0f}')} ({f(g(te, 'peak_mib'), '{:.0f}')}) | {f(rm)} ({f(rmt)}) | "
             f"{f(g(od, 'tflops'), '{:.1f}')} | {f(g(od, 'mfu'), '{:.1%}')} | {f(g(te, 'mfu'), '{:.1%}')} |")
    if prec == "bf16-mixed":
        ok = lambda v, t, ge: "n/a" if v is None else ("PASS" if (v >= t if ge else v <= t) else "FAIL")  # noqa: E731
        targets.append(f"- bf16-mixed samples/s ours / torch eager = {f(re_)} (target >= 1.3): {ok(re_, 1.3, True)}")
        targets.append(f"- bf16-mixed samples/s ours / torch.compile = {f(rc_)} (target >= 1.0): {ok(rc_, 1.0, True)}")
        targets.append(f"- bf16-mixed peak memory ours / torch eager = {f(rm)} over the whole run, {f(rmt)} over the "
                       f"timed steps (target <= 1.0): {ok(rm, 1.0, False)} / {ok(rmt, 1.0, False)}")
        if od:
            targets.append(f"- medtrain device allocations reaching cudaMalloc during the timed steps: "
                           f"{od['sys_allocs_timed']} (must be 0)")
L.append("")
L.append("Targets (issue):")
L.extend(targets)
L.append("")
L.append("Per part (median ms; forward includes the loss and reading it to the host), memory in MiB, losses "
         "(different initialisations on each side: similar magnitudes expected, both finite):")
L.append("")
L.append("| run | status | layout | fwd+loss | backward | optimizer | step | best step | samples/s | peak run "
         "(timed) | reserved | loss first -> last |")
L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
names = ["ours_bf16", "torch_bf16_contiguous", "torch_bf16_channels_last", "torch_bf16_compile", "ours_tf32",
         "ours_fp32", "torch_tf32", "torch_fp32"]
for n in names:
    d = load(n)
    vs = ([dict(d, layout="NCDHW", variant="")] if n.startswith("ours") else d["variants"]) if d else []
    vs = vs or [None]
    for v in vs:
        if not v:
            L.append(f"| {n} | {st(n)} | | | | | | | | | | |")
            continue
        lab = n + (f" ({v['variant']})" if v.get("variant") else "")
        L.append(f"| {lab} | {st(n)} | {v['layout']} | {f(v['fwd_ms'], '{:.1f}')} | {f(v['bwd_ms'], '{:.1f}')} | "
                 f"{f(v['opt_ms'], '{:.1f}')} | {f(v['step_ms'], '{:.1f}')} | {f(v['best_step_ms'], '{:.1f}')} | "
                 f"{f(v['samples_per_s'])} | {f(v.get('peak_run_mib'), '{:.0f}')} ({f(v.get('peak_mib'), '{:.0f}')}) | "
                 f"{f(v.get('reserved_mib'), '{:.0f}')} | {f(v.get('first_loss'), '{:.4f}')} -> "
                 f"{f(v.get('last_loss'), '{:.4f}')} |")
skipped = [n for n, s in status.items() if s[0] != "ok"]
if skipped:
    L.append("")
    L.append("Not completed: " + ", ".join(f"{n} ({st(n)})" for n in skipped) + "; their logs are in the "
             "benchmark's stdout (bench_gpu.log).")
L.append("")
L.append("## Where the time goes")
L.append("")
prof = os.path.join(tmp, "profile.md")
if os.path.exists(prof):
    L.append(open(prof).read().rstrip())
else:
    L.append(f"medtrain: {nsys_note or 'profile not run'}")
pt = tv("torch_bf16_contiguous", "eager")
if pt and pt.get("profile_table"):
    L.append("")
    L.append("PyTorch eager bf16 (contiguous), torch.profiler over the steps after the timed ones, by self device time:")
    L.append("")
    L.append("```")
    L.append(pt["profile_table"].rstrip())
    L.append("```")
L.append("")
L.append("<details><summary>raw JSON</summary>")
L.append("")
for n in names:
    d = load(n)
    if d:
        for v in d.get("variants", []):
            v.pop("profile_table", None)
        if d.get("best_eager"):
            d["best_eager"].pop("profile_table", None)
        L.append(f"{n}: `{json.dumps(d)}`")
        L.append("")
L.append("</details>")
text = "\n".join(L) + "\n"
if out_md:
    with open(out_md, "w") as fp:
        fp.write(text)
print(text)
EOF

nsys_note=""
report() {
    local md=""
    if [[ -n ${OUT:-} ]]; then
        mkdir -p "$OUT" && md=$OUT/bench_unet3d_gpu.md
    fi
    "$rpy" "$tmp/report.py" "$tmp" "$gpu_line" "$peak_note" "$md" "$budget" "$((SECONDS - t_start))" \
        "$torch_note" "$nsys_note"
}

# ---- profile of ours bf16: nsys (kernel summary), else ncu (per-kernel time), else none ----
find_tool() { # NAME: on PATH, in CUDA's bin, or in an Nsight install folder
    local c
    c=$(command -v "$1" 2>/dev/null) && { echo "$c"; return 0; }
    for c in "${CUDA_HOME:-/usr/local/cuda}/bin/$1" /usr/local/cuda/bin/"$1" /opt/nvidia/nsight-*/*/bin/"$1" \
        /opt/nvidia/nsight-*/bin/"$1" /usr/local/cuda/nsight-*/bin/"$1" /usr/local/cuda/nsight-*/"$1"; do
        [[ -x $c ]] && { echo "$c"; return 0; }
    done
    return 1
}

cat >"$tmp/prof.py" <<'EOF'
"""Kernel table from nsys (cuda_gpu_kern_sum CSV) or ncu (--csv --page raw) output -> profile.md."""
import csv, io, re, sys
kind, path, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
text = open(path, errors="replace").read()
kern = {}  # name -> [total ns, count]
lines = text.splitlines()
if kind == "nsys":
    start = next((i for i, l in enumerate(lines) if "Total Time" in l and "Name" in l), None)
    if start is not None:
        rd = csv.DictReader(io.StringIO("\n".join(lines[start:])))
        tkey = next((k for k in rd.fieldnames if k.startswith("Total Time")), "Total Time (ns)")
        ikey = next((k for k in rd.fieldnames if k in ("Instances", "Count", "Calls")), "Instances")
        scale = 1e3 if "(us)" in tkey else 1e6 if "(ms)" in tkey else 1.0
        for r in rd:
            try:
                t, n = float(r[tkey].replace(",", "")) * scale, int(float(r[ikey].replace(",", "")))
            except (KeyError, ValueError, TypeError, AttributeError):
                continue
            k = kern.setdefault(r.get("Name", "?"), [0.0, 0])
            k[0] += t
            k[1] += n
else:
    start = next((i for i, l in enumerate(lines) if '"Kernel Name"' in l), None)
    if start is not None:
        unit = 1.0
        for r in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
            v = r.get("gpu__time_duration.sum") or ""
            if not (r.get("ID") or "").strip().isdigit():  # the units row
                unit = {"nsecond": 1.0, "ns": 1.0, "usecond": 1e3, "us": 1e3, "msecond": 1e6, "ms": 1e6,
                        "second": 1e9}.get(v.strip(), unit)
                continue
            try:
                t = float(v.replace(",", "")) * unit
            except ValueError:
                continue
            k = kern.setdefault(r.get("Kernel Name", "?"), [0.0, 0])
            k[0] += t
            k[1] += 1
if not kern:
    print("no kernel rows found in the profiler output; its head:")
    print("\n".join(lines[:40]))
    sys.exit(1)


def base(n):
    n = re.sub(r"^void ", "", n.strip()).replace("(anonymous namespace)::", "")
    n = re.split(r"[<(]", n, maxsplit=1)[0]
    return n.split("::")[-1]


def category(n):
    b, low = base(n), n.lower()
    if any(s in low for s in ("nchwtonhwc", "nhwctonchw", "transpose", "nchw2nhwc", "nhwc2nchw")):
        return "cuDNN / cuBLAS layout transforms"
    if any(s in low for s in ("xmma", "cutlass", "cudnn", "implicit_convolve", "sm90_", "sm80_", "wgrad", "dgrad",
                              "fprop", "convolve", "winograd", "fft", "gemv", "gemmk", "cublas", "scal_kernel")):
        return "cuDNN / cuBLAS convolution and GEMM"
    if re.search(r"(_k|_kernel)$", b):
        if re.match(r"(gn_|bn_|ln_|stats_|affine|dx_|grad_partial)", b):
            return "medtrain: normalisation"
        if re.match(r"(db_|fill_bias|gemm_scale|box_copy)", b):
            return "medtrain: conv bias / conv and GEMM helpers"
        if re.match(r"(binary|unary|cast|copy|fill|f32_to_bf16)", b):
            return "medtrain: elementwise / casts / copies"
        if re.match(r"(red_|softmax|one_hot|argmax)", b):
            return "medtrain: reductions / softmax / loss"
        if re.match(r"(sgd|adam|single)", b):
            return "medtrain: optimizer"
        return "medtrain: other (pool, upsample, rng)"
    return "other"


tot = sum(v[0] for v in kern.values())
cats = {}
for n, (t, c) in kern.items():
    k = cats.setdefault(category(n), [0.0, 0])
    k[0] += t
    k[1] += c
L = []
src = "Nsight Systems (cuda_gpu_kern_sum)" if kind == "nsys" else "Nsight Compute (gpu__time_duration.sum, clocks unlocked)"
L.append(f"medtrain bf16-mixed, {steps} timed step(s) inside cudaProfilerStart/Stop, {src}: GPU kernel time "
         f"{tot / 1e6 / steps:.1f} ms per step in {sum(v[1] for v in kern.values()) / steps:.0f} launches "
         "(compare with the step time above: the difference is launch gaps and host work).")
L.append("")
L.append("| category (by kernel name, heuristic) | ms per step | share | launches per step |")
L.append("|---|---:|---:|---:|")
for c, (t, n) in sorted(cats.items(), key=lambda kv: -kv[1][0]):
    L.append(f"| {c} | {t / 1e6 / steps:.2f} | {t / tot:.1%} | {n / steps:.0f} |")
L.append("")
L.append("| kernel (top 25 by total time) | ms per step | share | launches per step | avg us |")
L.append("|---|---:|---:|---:|---:|")
for n, (t, c) in sorted(kern.items(), key=lambda kv: -kv[1][0])[:25]:
    nm = n if len(n) <= 110 else n[:107] + "..."
    nm = nm.replace("|", "\\|")
    L.append(f"| `{nm}` | {t / 1e6 / steps:.2f} | {t / tot:.1%} | {c / steps:.0f} | {t / c / 1e3:.1f} |")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
EOF

profile_ours() {
    local psteps=3 cap=120 tool
    if [[ ! -x $bench ]]; then
        nsys_note="profile not run: $bench not built"
        return
    fi
    if tool=$(find_tool nsys); then
        row prof_nsys "$cap" "$tool" profile --capture-range=cudaProfilerApi --capture-range-end=stop \
            --trace=cuda --sample=none --cpuctxsw=none --force-overwrite=true -o "$tmp/ours_prof" \
            "$bench" "${model[@]}" --device "$device" --precision bf16-mixed --warmup 2 --steps "$psteps" --profile-range
        local rep
        rep=$(ls "$tmp"/ours_prof.nsys-rep "$tmp"/ours_prof.qdrep 2>/dev/null | head -1)
        if [[ -z $rep ]]; then
            nsys_note="nsys ($tool) wrote no report (see the prof_nsys log)"
            return
        fi
        # the report's name changed: cuda_gpu_kern_sum (2023+), gpukernsum before
        if ! timeout 90 "$tool" stats --report cuda_gpu_kern_sum --format csv "$rep" >"$tmp/kern.csv" 2>"$tmp/kern.err" ||
            ! grep -q "Total Time" "$tmp/kern.csv"; then
            timeout 90 "$tool" stats --report gpukernsum --format csv "$rep" >"$tmp/kern.csv" 2>>"$tmp/kern.err"
        fi
        if ! "$rpy" "$tmp/prof.py" nsys "$tmp/kern.csv" "$tmp/profile.md" "$psteps"; then
            nsys_note="nsys stats gave no kernel table: $(head -c 300 "$tmp/kern.err")"
        fi
    elif tool=$(find_tool ncu); then
        psteps=1
        row prof_ncu "$cap" "$tool" --profile-from-start off --metrics gpu__time_duration.sum --clock-control none \
            --cache-control none --csv --page raw --log-file "$tmp/ncu.csv" \
            "$bench" "${model[@]}" --device "$device" --precision bf16-mixed --warmup 2 --steps "$psteps" --profile-range
        if ! "$rpy" "$tmp/prof.py" ncu "$tmp/ncu.csv" "$tmp/profile.md" "$psteps"; then
            nsys_note="ncu ($tool) gave no kernel table (see the prof_ncu log)"
        fi
    else
        nsys_note="per-kernel timing not available: neither nsys nor ncu found (PATH, \$CUDA_HOME/bin, /opt/nvidia)"
    fi
    report >/dev/null
}

# ---- the rows, most important first ----
ours ours_bf16 bf16-mixed 120
ours_ok=$?
torch_row torch_bf16_contiguous bf16-mixed 120 --layout contiguous --no-compile --profile-steps 2
torch_row torch_bf16_channels_last bf16-mixed 120 --layout channels_last_3d --no-compile
lay=$(best_layout)
torch_row torch_bf16_compile bf16-mixed 180 --layout "$lay" --no-eager
profile_ours
ours ours_tf32 tf32 90
ours ours_fp32 fp32 90
torch_row torch_tf32 tf32 90 --layout "$lay" --no-compile
torch_row torch_fp32 fp32 90 --layout "$lay" --no-compile

echo
if report && [[ -n ${OUT:-} ]]; then say "report written to $OUT/bench_unet3d_gpu.md"; fi
exit $((ours_ok == 0 ? 0 : 1))

#!/usr/bin/env bash
# CPU training step, medtrain vs PyTorch (issue 2).
#
#   bash experiments/bench_train_step.sh [ARGS...]
#
# Builds bench_train_step (Release, in $BUILD_DIR, default build/) if needed,
# then runs experiments/bench_train_step (C) and
# experiments/bench_train_step_torch.py with the same ARGS (see either file:
# --features 16,32,64,128 --in 1 --out 3 --batch 2 --patch 64 --norm instance
# --act leaky_relu --upsample transposed --threads 0 --warmup 3 --steps 5 ...),
# and prints a table: our step time, torch eager (best of the contiguous and
# channels_last_3d layouts), torch.compile (best of both layouts, if it works), and the ratios
# ours / torch (target <= 1.0), followed by a Markdown block (date, machine,
# commit, command, numbers) for experiments/RESULTS.md.
# Torch-only arguments: --no-compile, --compile-warmup N; C-only: --dump DIR.
# The Python with torch: $MT_TORCH_PYTHON, else /root/torchvenv/bin/python, else python3.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${BUILD_DIR:-$root/build}

py=""
for cand in "${MT_TORCH_PYTHON:-}" /root/torchvenv/bin/python python3; do
    if [ -n "$cand" ] && "$cand" -c "import torch" >/dev/null 2>&1; then py=$cand; break; fi
done
if [ -z "$py" ]; then
    echo "bench_train_step.sh: no python with torch found (set MT_TORCH_PYTHON)" >&2
    exit 1
fi

cmdline="bash experiments/bench_train_step.sh${*:+ $*}"
c_args=()
t_args=()
while [ $# -gt 0 ]; do
    case "$1" in
    --no-compile) t_args+=("$1"); shift ;;
    --compile-warmup) t_args+=("$1" "$2"); shift 2 ;;
    --dump) c_args+=("$1" "$2"); shift 2 ;;
    --no-affine) c_args+=("$1"); t_args+=("$1"); shift ;;
    *)
        if [ $# -lt 2 ]; then echo "bench_train_step.sh: $1 needs a value" >&2; exit 2; fi
        c_args+=("$1" "$2"); t_args+=("$1" "$2"); shift 2 ;;
    esac
done

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
    cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build_dir" --target bench_train_step -j"$(nproc)" >/dev/null
bench="$build_dir/experiments/bench_train_step"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$bench" ${c_args[@]+"${c_args[@]}"} --json "$tmp/ours.json"
echo
"$py" "$root/experiments/bench_train_step_torch.py" ${t_args[@]+"${t_args[@]}"} --json "$tmp/torch.json"
echo

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain 2>/dev/null | head -1)" ]; then commit="$commit (+ uncommitted changes)"; fi
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
cores=$(nproc)

"$py" - "$tmp/ours.json" "$tmp/torch.json" "$commit" "$cpu" "$cores" "$cmdline" <<'EOF'
import json, sys, datetime
ours = json.load(open(sys.argv[1])); th = json.load(open(sys.argv[2]))
commit, cpu, cores, cmd = sys.argv[3:7]
be, co = th["best_eager"], th.get("compiled")
g = ours["gflop"]
rows = [("medtrain", "NCDHW", ours)]
for v in th["variants"]:
    rows.append((f"torch {v['variant']}", v["layout"], v))
lines = []
lines.append(f"| implementation | layout | fwd+loss ms | backward ms | AdamW ms | step ms (median) | best ms | GFLOP/s |")
lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
for name, lay, r in rows:
    lines.append(f"| {name} | {lay} | {r['fwd_ms']:.1f} | {r['bwd_ms']:.1f} | {r['opt_ms']:.1f} | "
                 f"{r['step_ms']:.1f} | {r['best_step_ms']:.1f} | {g / r['step_ms'] * 1e3:.1f} |")
ratios = [f"ours / torch eager ({be['layout']}) = {ours['step_ms'] / be['step_ms']:.2f} "
          f"(best steps: {ours['best_step_ms'] / be['best_step_ms']:.2f})"]
if co:
    ratios.append(f"ours / torch.compile ({co['layout']}) = {ours['step_ms'] / co['step_ms']:.2f} "
                  f"(best steps: {ours['best_step_ms'] / co['best_step_ms']:.2f})")
else:
    ratios.append(f"torch.compile: not available ({th.get('compile_error') or 'skipped'})")
print("Summary (median step; target ours / torch <= 1.0):")
print(f"  medtrain            {ours['step_ms']:9.1f} ms")
print(f"  torch eager (best)  {be['step_ms']:9.1f} ms  [{be['layout']}]")
if co:
    print(f"  torch.compile       {co['step_ms']:9.1f} ms  [{co['layout']}]")
for r in ratios:
    print("  " + r)
print()
print("---- Markdown for experiments/RESULTS.md ----")
print(f"- date: {datetime.date.today().isoformat()}; machine: {cpu}, {cores} cores; commit {commit}; "
      f"torch {th['torch_version']}, {th['threads']} threads")
print(f"- command: `{cmd}`")
print(f"- model GFLOP per step: {g:.2f}; parameters: {ours['params']}; host peak (medtrain allocator) "
      f"{ours['peak_mib']:.0f} MiB, max RSS medtrain {ours['maxrss_mib']:.0f} MiB, torch process "
      f"{th['maxrss_mib']:.0f} MiB (all variants); medtrain allocations reaching the system during "
      f"the timed steps: {ours['sys_allocs_timed']}")
print()
for l in lines:
    print(l)
print()
print("- " + "; ".join(ratios))
EOF

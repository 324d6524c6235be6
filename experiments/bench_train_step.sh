#!/usr/bin/env bash
# CPU training step, medtrain vs PyTorch (issue 2).
#
#   bash experiments/bench_train_step.sh [--rounds R] [ARGS...]
#
# Builds bench_train_step (Release, in $BUILD_DIR, default build/) if needed,
# then runs experiments/bench_train_step (C) and
# experiments/bench_train_step_torch.py with the same ARGS (see either file:
# --features 16,32,64,128 --in 1 --out 3 --batch 2 --patch 64 --norm instance
# --act leaky_relu --upsample transposed --threads 0 --warmup 3 --steps 5 ...),
# alternating them R times (default 1), C first in each round, so that both
# see the same stretch of load on a shared machine; the load average
# (/proc/loadavg) is recorded before each run. It prints per round: our step
# time, torch eager (best of the contiguous and channels_last_3d layouts),
# torch.compile (best of both layouts, if it works) and the ratios ours / torch
# (target <= 1.0), of the median steps and of the best steps (the best step
# is the one least disturbed by other load); then the median over rounds of
# each time and of each per-round ratio, and a Markdown block for
# experiments/RESULTS.md (date, machine, commit, command, load, the last
# round's per-part table, the ratios).
# Torch-only arguments: --no-compile, --compile-warmup N; C-only: --dump DIR
# (first round only).
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
dump_args=()
rounds=1
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds)
        if [ $# -lt 2 ] || ! [ "$2" -ge 1 ] 2>/dev/null; then
            echo "bench_train_step.sh: --rounds needs a positive integer" >&2; exit 2
        fi
        rounds=$2; shift 2 ;;
    --no-compile) t_args+=("$1"); shift ;;
    --compile-warmup) t_args+=("$1" "$2"); shift 2 ;;
    --dump) dump_args+=("$1" "$2"); shift 2 ;;
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

for r in $(seq 1 "$rounds"); do
    echo "==== round $r / $rounds"
    read -r l1 l5 l15 _ </proc/loadavg
    echo "load average before medtrain: $l1 $l5 $l15"
    echo "$l1" >"$tmp/load_ours.$r"
    extra=()
    if [ "$r" = 1 ]; then extra=(${dump_args[@]+"${dump_args[@]}"}); fi
    "$bench" ${c_args[@]+"${c_args[@]}"} ${extra[@]+"${extra[@]}"} --json "$tmp/ours.$r.json"
    echo
    read -r l1 l5 l15 _ </proc/loadavg
    echo "load average before torch: $l1 $l5 $l15"
    echo "$l1" >"$tmp/load_torch.$r"
    "$py" "$root/experiments/bench_train_step_torch.py" ${t_args[@]+"${t_args[@]}"} --json "$tmp/torch.$r.json"
    echo
done

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain 2>/dev/null | head -1)" ]; then commit="$commit (+ uncommitted changes)"; fi
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
cores=$(nproc)

"$py" - "$tmp" "$rounds" "$commit" "$cpu" "$cores" "$cmdline" <<'EOF'
import json, os, statistics, sys, datetime
tmp, R = sys.argv[1], int(sys.argv[2])
commit, cpu, cores, cmd = sys.argv[3:7]
med = statistics.median
rounds = []
for r in range(1, R + 1):
    o = json.load(open(os.path.join(tmp, f"ours.{r}.json")))
    t = json.load(open(os.path.join(tmp, f"torch.{r}.json")))
    lo = float(open(os.path.join(tmp, f"load_ours.{r}")).read())
    lt = float(open(os.path.join(tmp, f"load_torch.{r}")).read())
    rounds.append((o, t, lo, lt))
print("Per round: median step ms (best step ms); ratios ours / torch of the medians (of the best steps),")
print("< 1: medtrain faster. Torch eager / compile: the faster of its two layouts by median (best: by best step).")
print("| round | load 1 min (ours / torch) | medtrain | torch eager | ours / eager | torch.compile | ours / compile |")
print("|---|---|---:|---:|---:|---:|---:|")
re_, rc_, reb, rcb = [], [], [], []
for i, (o, t, lo, lt) in enumerate(rounds, 1):
    be, co = t["best_eager"], t.get("compiled")
    eb = min(v["best_step_ms"] for v in t["variants"] if v["variant"] == "eager")
    re_.append(o["step_ms"] / be["step_ms"])
    reb.append(o["best_step_ms"] / eb)
    cs = "n/a"
    rcs = "n/a"
    if co:
        cb = min(v["best_step_ms"] for v in t["variants"] if v["variant"] == "compile")
        rc_.append(o["step_ms"] / co["step_ms"])
        rcb.append(o["best_step_ms"] / cb)
        cs = f"{co['step_ms']:.1f} ({cb:.1f}) [{co['layout']}]"
        rcs = f"{rc_[-1]:.2f} ({rcb[-1]:.2f})"
    print(f"| {i} | {lo:.2f} / {lt:.2f} | {o['step_ms']:.1f} ({o['best_step_ms']:.1f}) | "
          f"{be['step_ms']:.1f} ({eb:.1f}) [{be['layout']}] | {re_[-1]:.2f} ({reb[-1]:.2f}) | {cs} | {rcs} |")
print()
ours, th = rounds[-1][0], rounds[-1][1]
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
ratios = [f"ours / torch eager = {med(re_):.2f} (median over {R} rounds of the per-round ratio of median "
          f"steps, range {min(re_):.2f}-{max(re_):.2f}; of best steps {med(reb):.2f}, range "
          f"{min(reb):.2f}-{max(reb):.2f})"]
if rc_:
    ratios.append(f"ours / torch.compile = {med(rc_):.2f} (range {min(rc_):.2f}-{max(rc_):.2f}; of best "
                  f"steps {med(rcb):.2f}, range {min(rcb):.2f}-{max(rcb):.2f})")
else:
    ratios.append(f"torch.compile: not available ({th.get('compile_error') or 'skipped'})")
print(f"Summary over {R} round(s) (medians of the per-round median steps; target ours / torch <= 1.0):")
print(f"  medtrain            {med([o['step_ms'] for o, _, _, _ in rounds]):9.1f} ms")
print(f"  torch eager (best)  {med([t['best_eager']['step_ms'] for _, t, _, _ in rounds]):9.1f} ms")
if rc_:
    print(f"  torch.compile       {med([t['compiled']['step_ms'] for _, t, _, _ in rounds if t.get('compiled')]):9.1f} ms")
for r in ratios:
    print("  " + r)
print()
print("---- Markdown for experiments/RESULTS.md ----")
print(f"- date: {datetime.date.today().isoformat()}; machine: {cpu}, {cores} cores; commit {commit}; "
      f"torch {th['torch_version']}, {th['threads']} threads")
print(f"- command: `{cmd}`; load average (1 min) before the runs: "
      f"{min(min(lo, lt) for _, _, lo, lt in rounds):.2f}-{max(max(lo, lt) for _, _, lo, lt in rounds):.2f}")
print(f"- model GFLOP per step: {g:.2f}; parameters: {ours['params']}; host peak (medtrain allocator) "
      f"{ours['peak_mib']:.0f} MiB, max RSS medtrain {ours['maxrss_mib']:.0f} MiB, torch process "
      f"{th['maxrss_mib']:.0f} MiB (all variants); medtrain allocations reaching the system during "
      f"the timed steps: {ours['sys_allocs_timed']}")
print()
print("per-round table above; last round:")
print()
for l in lines:
    print(l)
print()
print("- " + "; ".join(ratios))
EOF

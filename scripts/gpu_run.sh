#!/usr/bin/env bash
# Builds medtrain on a GPU machine that lacks our Debian libraries and has no
# network, then runs the gpu-labelled tests and the GPU benchmarks. Runs THERE
# (the device tool: command 'bash scripts/gpu_run.sh', carry [".device"]), as
# root, in the repository root; see docs/gpu.md.
#
#   bash scripts/gpu_run.sh [--tests-only | --bench-only] [--sanitize]
#
#   --tests-only  build and run the gpu tests, not the benchmarks
#   --bench-only  build and run the GPU benchmarks, not the tests
#   --sanitize    run the gpu tests under `compute-sanitizer --tool memcheck`
#
# Steps: unpack every .device/debs/*.deb (made here by scripts/gpu_pack.sh) with
# `dpkg -x` into a private prefix (never into /); configure CMake into build-gpu/
# with explicit hints into that prefix and CUDA architecture 90; find cuDNN and
# NCCL (the machine's CUDA install, else PyTorch's nvidia-* wheels) and export
# MT_CUDNN_ROOT / MT_NCCL_ROOT; build; check with ldd that every library
# resolves; then, if nvidia-smi sees a GPU, `ctest -L gpu` and the benchmarks.
# Logs go to $OUT when set (the device tool's output folder), else build-gpu/.
#
# Environment: MT_DEPS_PREFIX (default /tmp/mtdeps), BUILD_DIR (default
# build-gpu), MT_JOBS (default nproc), MT_CUDA_ARCH (default 90),
# MT_BUILD_TARGETS (space-separated; default: all), MT_DEPS_LD=all (put every
# unpacked library on LD_LIBRARY_PATH, not only those the machine lacks),
# MT_REQUIRE_GPU=1 (fail when no GPU is visible), MT_BENCH_TIMEOUT (s, 300).
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

run_tests=1
run_bench=1
sanitize=0
for arg in "$@"; do
    case "$arg" in
        --tests-only) run_bench=0 ;;
        --bench-only) run_tests=0 ;;
        --sanitize) sanitize=1 ;;
        -h | --help)
            sed -n '2,27p' "$self" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "gpu_run.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done
if ((!run_tests && !run_bench)); then
    echo "gpu_run.sh: --tests-only and --bench-only exclude each other" >&2
    exit 2
fi

debs_dir=.device/debs
prefix=${MT_DEPS_PREFIX:-/tmp/mtdeps}
build_dir=${BUILD_DIR:-build-gpu}
jobs=${MT_JOBS:-$(nproc)}
cuda_arch=${MT_CUDA_ARCH:-90}
multiarch=x86_64-linux-gnu

shopt -s nullglob
debs=("$debs_dir"/*.deb)
shopt -u nullglob
if ((${#debs[@]} == 0)); then
    echo "gpu_run.sh: no .deb files in $debs_dir: run scripts/gpu_pack.sh first and carry .device" >&2
    echo "gpu_run.sh: (device tool: command 'bash scripts/gpu_run.sh', carry [\".device\"])" >&2
    exit 1
fi

# Logs: at most a few files, since the device tool brings back 8 at most.
if [[ -n ${OUT:-} ]]; then
    logdir=$OUT
else
    logdir=$build_dir
fi
mkdir -p "$logdir" "$build_dir"
logdir=$(cd "$logdir" && pwd)
main_log=$logdir/gpu_run.log
: >"$main_log"
exec > >(tee -a "$main_log") 2>&1
say() { echo "gpu_run.sh: $*"; }
section() { echo "== $* =="; }
status=0

section "machine"
say "$(uname -srm); $(ldd --version 2>/dev/null | head -n 1)"
glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
if [[ -n $glibc ]] && [[ $(printf '%s\n' 2.36 "$glibc" | sort -V | head -n 1) != 2.36 ]]; then
    say "warning: glibc $glibc is older than Debian 12's 2.36; the unpacked libraries may not load"
fi
gpu_visible=0
if command -v nvidia-smi >/dev/null 2>&1 &&
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>/dev/null; then
    gpu_visible=1
else
    say "no GPU visible (nvidia-smi missing or failing): building only"
fi

# ---- 1. unpack the .deb files into the private prefix ----
section "dependencies: ${#debs[@]} packages from $debs_dir into $prefix"
stamp=$prefix/.mt_debs
want_stamp=$(for f in "${debs[@]}"; do printf '%s %s\n' "$(basename "$f")" "$(stat -c %s "$f")"; done)
if [[ -f $stamp && $(cat "$stamp") == "$want_stamp" ]]; then
    say "already unpacked (same .deb files)"
else
    rm -rf "$prefix"
    mkdir -p "$prefix"
    for f in "${debs[@]}"; do
        if command -v dpkg-deb >/dev/null 2>&1; then
            dpkg-deb -x "$f" "$prefix"
        else # dpkg -x without dpkg: the data member of the ar archive
            member=$(ar t "$f" | grep '^data\.tar')
            ar p "$f" "$member" | tar -x -a -f - -C "$prefix" 2>/dev/null ||
                ar p "$f" "$member" | tar -x --use-compress-program="${member##*.} -d" -C "$prefix"
        fi
    done
    # -dev packages hold absolute symlinks (zlib1g-dev: libz.so -> /lib/...so.1.2.13):
    # point them into the prefix, or they would name the machine's own files.
    n_abs=0
    while IFS= read -r -d '' link; do
        target=$(readlink "$link")
        if [[ $target == /* ]]; then
            ln -sfn "$prefix$target" "$link"
            n_abs=$((n_abs + 1))
        fi
    done < <(find "$prefix" -type l -print0)
    say "unpacked; $n_abs absolute symlinks redirected into the prefix"
    printf '%s\n' "$want_stamp" >"$stamp"
fi
# Debian 12 keeps libraries in both /usr/lib/<triplet> and /lib/<triplet> (merged /usr
# on an installed system, two folders after dpkg -x).
libdirs=()
for d in usr/lib/$multiarch lib/$multiarch usr/lib/$multiarch/openblas-pthread; do
    [[ -d $prefix/$d ]] && libdirs+=("$prefix/$d")
done
# Every link-time symlink must resolve inside the prefix.
dangling=()
for d in "${libdirs[@]}" "$prefix/usr/lib/$multiarch/hdf5/serial"; do
    for l in "$d"/*.so; do
        [[ -L $l ]] || continue
        real=$(readlink -f "$l" || true)
        if [[ ! -e $real || $real != "$prefix"/* ]]; then
            dangling+=("${l#"$prefix"/}")
        fi
    done
done
for need in libyaml.so libdnnl.so libz.so openblas-pthread/libopenblas.so hdf5/serial/libhdf5.so; do
    found=0
    for l in "${dangling[@]+"${dangling[@]}"}"; do
        [[ $l == */$need ]] && found=1
    done
    if ((found)); then
        say "error: $need in the prefix points outside it or at nothing" >&2
        status=1
    fi
done
if ((${#dangling[@]})); then
    say "unresolved .so links (packages not carried: fine unless named above): ${dangling[*]##*/}"
fi
((status == 0)) || exit 1

# ---- 2. cuDNN and NCCL: the machine's CUDA install, else PyTorch's wheels ----
section "cuDNN / NCCL"
py=""
for p in python3 python; do
    if command -v "$p" >/dev/null 2>&1; then
        py=$p
        break
    fi
done
# wheel_dir MODULE: the folder of an installed nvidia.* package (namespace packages
# have no __file__), or nothing.
wheel_dir() {
    [[ -n $py ]] || return 0
    "$py" - "$1" 2>/dev/null <<'EOF' || true
import importlib, sys
try:
    m = importlib.import_module(sys.argv[1])
    print(list(m.__path__)[0])
except Exception:
    pass
EOF
}
cuda_home=""
if command -v nvcc >/dev/null 2>&1; then
    cuda_home=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
    cuda_home=/usr/local/cuda
fi
# find_lib NAME HEADER LIBSTEM MODULES...: sets found_root/found_inc/found_lib.
find_lib() {
    local name=$1 header=$2 stem=$3
    shift 3
    local cands=() r inc lib m d
    local envroot_var="${name^^}_ROOT"
    [[ -n ${!envroot_var:-} ]] && cands+=("${!envroot_var}")
    [[ -n $cuda_home ]] && cands+=("$cuda_home" "$cuda_home/targets/x86_64-linux")
    cands+=(/usr /usr/local)
    for m in "$@"; do
        d=$(wheel_dir "$m")
        [[ -n $d ]] && cands+=("$d")
    done
    found_root="" found_inc="" found_lib=""
    for r in "${cands[@]}"; do
        for inc in "$r/include" "$r/include/$multiarch"; do
            [[ -f $inc/$header ]] || continue
            for lib in "$r"/lib{64,,/$multiarch}/"$stem".so "$r"/lib{64,,/$multiarch}/"$stem".so.[0-9]*; do
                if [[ -e $lib ]]; then
                    found_root=$r found_inc=$inc found_lib=$lib
                    return 0
                fi
            done
        done
    done
    return 1
}
if find_lib cudnn cudnn_version.h libcudnn nvidia.cudnn nvidia.cu13.cudnn ||
    find_lib cudnn cudnn.h libcudnn nvidia.cudnn; then
    v=$(awk '/#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) /{printf "%s%s", sep, $3; sep="."}' \
        "$found_inc/cudnn_version.h" 2>/dev/null || true)
    export MT_CUDNN_ROOT=$found_root MT_CUDNN_INCLUDE=$found_inc MT_CUDNN_LIB=$found_lib
    say "cuDNN ${v:-?}: MT_CUDNN_ROOT=$MT_CUDNN_ROOT (lib $MT_CUDNN_LIB)"
else
    export MT_CUDNN_ROOT="" MT_CUDNN_INCLUDE="" MT_CUDNN_LIB=""
    say "cuDNN not found (CUDNN_ROOT, $cuda_home, /usr, python's nvidia.cudnn)"
fi
if find_lib nccl nccl.h libnccl nvidia.nccl nvidia.cu13.nccl; then
    v=$(awk '/#define NCCL_(MAJOR|MINOR|PATCH) /{printf "%s%s", sep, $3; sep="."}' "$found_inc/nccl.h" || true)
    export MT_NCCL_ROOT=$found_root MT_NCCL_INCLUDE=$found_inc MT_NCCL_LIB=$found_lib
    say "NCCL ${v:-?}: MT_NCCL_ROOT=$MT_NCCL_ROOT (lib $MT_NCCL_LIB)"
else
    export MT_NCCL_ROOT="" MT_NCCL_INCLUDE="" MT_NCCL_LIB=""
    say "NCCL not found (NCCL_ROOT, $cuda_home, /usr, python's nvidia.nccl)"
fi

# ---- 3. configure and build ----
section "configure ($build_dir, CUDA architecture $cuda_arch)"
P=$prefix
cuda_args=()
if [[ -n $cuda_home && -x $cuda_home/bin/nvcc ]]; then
    say "nvcc: $("$cuda_home/bin/nvcc" --version | tail -n 1)"
    cuda_args=(-DCMAKE_CUDA_COMPILER="$cuda_home/bin/nvcc")
else
    say "no nvcc found: the CUDA language stays off"
fi
cmake_args=(
    -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_CUDA_ARCHITECTURES="$cuda_arch" "${cuda_args[@]+"${cuda_args[@]}"}"
    -DCMAKE_PREFIX_PATH="$P/usr"
    -DMT_CBLAS_INCLUDE="$P/usr/include/$multiarch/openblas-pthread"
    -DMT_OPENBLAS_LIB="$P/usr/lib/$multiarch/openblas-pthread/libopenblas.so"
    -DMT_DNNL_INCLUDE="$P/usr/include"
    -DMT_DNNL_LIB="$P/usr/lib/$multiarch/libdnnl.so"
    -DMT_YAML_INCLUDE="$P/usr/include"
    -DMT_YAML_LIB="$P/usr/lib/$multiarch/libyaml.so"
    -DZLIB_INCLUDE_DIR="$P/usr/include"
    -DZLIB_LIBRARY="$P/usr/lib/$multiarch/libz.so"
    # FindHDF5: HDF5_ROOT makes every search NO_DEFAULT_PATH and rooted there (the
    # h5cc wrapper is not carried; a machine's own would name /usr).
    -DHDF5_ROOT="$P/usr/lib/$multiarch/hdf5/serial"
    -DHDF5_NO_FIND_PACKAGE_CONFIG_FILE=ON
    -DHDF5_PREFER_PARALLEL=OFF
    # For the CUDA backend (its own issue): unused until then.
    -DMT_CUDNN_ROOT="$MT_CUDNN_ROOT" -DMT_NCCL_ROOT="$MT_NCCL_ROOT"
    --no-warn-unused-cli
)
cmake "${cmake_args[@]}" >"$logdir/build.log" 2>&1 || {
    tail -n 40 "$logdir/build.log"
    say "configure failed (whole log: $logdir/build.log)" >&2
    exit 1
}
grep -E 'medtrain:|CUDA|Found (HDF5|ZLIB|OpenMP)' "$logdir/build.log" || true
# Every dependency must come from the prefix, none from the machine's /usr.
cache=$build_dir/CMakeCache.txt
bad=0
for v in MT_CBLAS_INCLUDE MT_OPENBLAS_LIB MT_DNNL_INCLUDE MT_DNNL_LIB MT_YAML_INCLUDE MT_YAML_LIB \
    ZLIB_INCLUDE_DIR ZLIB_LIBRARY HDF5_C_INCLUDE_DIR; do
    val=$(awk -F= -v v="$v" 'index($1, v ":") == 1 {print substr($0, length($1) + 2); exit}' "$cache")
    if [[ $val != "$P"/* ]]; then
        say "error: $v='$val' is not in $P" >&2
        bad=1
    fi
done
# The link line of medtrain: each library given by path is the prefix's, except
# the compiler's and libc's own (libgomp, libpthread, ...) and CUDA's.
link_txt=$build_dir/CMakeFiles/medtrain.dir/link.txt
# With the CUDA language on, CMake moves the libraries into response files
# (linkLibs.rsp, objects*.rsp) next to link.txt: read those too.
link_items=$(cat "$link_txt" "$build_dir"/CMakeFiles/medtrain.dir/*.rsp 2>/dev/null | tr ' ' '\n')
for lib in $(grep -E '^/.*\.(so|a)(\.[0-9.]+)?$' <<<"$link_items" || true); do
    case $lib in
        "$P"/*) ;;
        */libgomp.* | */libpthread.* | */libdl.* | */librt.* | */libm.* | */libc.* | "${cuda_home:-/nonexistent}"/*) ;;
        # cuDNN / NCCL found above (the machine's CUDA install or PyTorch's wheels)
        "${MT_CUDNN_ROOT:-/nonexistent}"/* | "${MT_NCCL_ROOT:-/nonexistent}"/*) ;;
        *)
            say "error: medtrain links $lib, which is not in $P" >&2
            bad=1
            ;;
    esac
done
if ! grep -q "$P/.*hdf5.*\.so" <<<"$link_items"; then
    say "error: medtrain does not link the prefix's libhdf5 ($link_txt)" >&2
    bad=1
fi
((bad == 0)) || exit 1
say "all include dirs and libraries resolve into $P"

section "build (-j$jobs)"
targets=()
for t in ${MT_BUILD_TARGETS:-}; do targets+=(--target "$t"); done
if ! cmake --build "$build_dir" -j"$jobs" "${targets[@]+"${targets[@]}"}" >>"$logdir/build.log" 2>&1; then
    grep -E 'error|Error' "$logdir/build.log" | head -n 30
    say "build failed (whole log: $logdir/build.log)" >&2
    exit 1
fi
say "built"

# ---- 4. run-time libraries ----
section "run-time libraries"
# The binaries carry a RUNPATH to the prefix folders of the libraries they link
# (CMake does this for full library paths); what those libraries need in turn
# (libsz, libcurl, libgfortran, libOpenCL, ...) is searched on LD_LIBRARY_PATH.
# Only sonames this machine lacks go there (its own, newer ones win), unless
# MT_DEPS_LD=all.
rtlib=$prefix/rtlib
rm -rf "$rtlib"
mkdir -p "$rtlib"
system_has() { # SONAME: the dynamic loader's cache names an existing file
    local path
    for path in $(ldconfig -p 2>/dev/null | awk -v s="$1" '$1 == s && /x86-64/ {print $NF}'); do
        [[ -e $path ]] && return 0
    done
    return 1
}
if [[ ${MT_DEPS_LD:-} == all ]]; then
    ld_dirs=$(
        IFS=:
        echo "${libdirs[*]}"
    )
    say "MT_DEPS_LD=all: every unpacked library on LD_LIBRARY_PATH"
else
    n_fill=0
    for d in "${libdirs[@]}"; do
        for f in "$d"/lib*.so.[0-9]*; do
            s=$(basename "$f")
            [[ $s =~ \.so\.[0-9]+$ ]] || continue # sonames, not libX.so.1.2.3
            [[ -e $rtlib/$s ]] && continue
            if ! system_has "$s"; then
                ln -s "$f" "$rtlib/$s"
                n_fill=$((n_fill + 1))
            fi
        done
    done
    ld_dirs=$rtlib
    say "$n_fill unpacked libraries the machine lacks linked into $rtlib"
fi
export LD_LIBRARY_PATH=$ld_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
check_bin=""
for b in "$build_dir/medtrain" "$build_dir"/tests/test_* "$build_dir"/experiments/bench_*; do
    if [[ -f $b && -x $b ]]; then
        check_bin=$b
        break
    fi
done
if [[ -n $check_bin ]]; then
    ldd "$check_bin" >"$logdir/ldd.txt" 2>&1 || true
    awk -v p="$prefix" '/=>/ { where = (index($3, p) == 1) ? "prefix" : "machine"; n[where]++ }
        END { printf "gpu_run.sh: %s: %d libraries from the prefix, %d from the machine\n", "'"$check_bin"'", n["prefix"], n["machine"] }' \
        "$logdir/ldd.txt"
    if grep -q 'not found' "$logdir/ldd.txt"; then
        grep 'not found' "$logdir/ldd.txt"
        say "error: libraries not found at run time (see $logdir/ldd.txt); gpu_pack.sh must carry them" >&2
        exit 1
    fi
    if [[ $check_bin == */medtrain ]]; then
        if ! "$check_bin" --version; then
            say "error: $check_bin --version failed; try MT_DEPS_LD=all" >&2
            exit 1
        fi
    fi
fi

if ((!gpu_visible)); then
    say "no GPU visible: skipping the gpu tests and the GPU benchmarks"
    if [[ ${MT_REQUIRE_GPU:-0} == 1 ]]; then
        exit 1
    fi
    exit 0
fi

# ---- 5. gpu tests ----
if ((run_tests)); then
    section "gpu tests (ctest -L gpu)"
    n_gpu=$(ctest --test-dir "$build_dir" -N -L gpu 2>/dev/null | awk '/^Total Tests:/ {print $3}')
    if [[ ${n_gpu:-0} == 0 ]]; then
        say "no gpu tests yet (no tests/test_*.c is labelled gpu): nothing to run"
    elif ((sanitize)) && ! command -v compute-sanitizer >/dev/null 2>&1 &&
        [[ ! -x ${cuda_home:-/nonexistent}/bin/compute-sanitizer ]]; then
        say "error: --sanitize, but compute-sanitizer is not on this machine" >&2
        status=1
    elif ((sanitize)); then
        cs=$(command -v compute-sanitizer || echo "$cuda_home/bin/compute-sanitizer")
        say "$n_gpu gpu tests under $cs --tool memcheck"
        # ctest's own test list (command, environment, skip code), each test run
        # under the sanitizer.
        ctest --test-dir "$build_dir" -L gpu --show-only=json-v1 >"$build_dir/gpu_tests.json"
        if ! "$py" - "$build_dir/gpu_tests.json" "$cs" 2>&1 <<'EOF' | tee "$logdir/ctest_gpu.log"; then
import json, os, subprocess, sys
tests = json.load(open(sys.argv[1]))["tests"]
passed = failed = skipped = 0
for t in tests:
    props = {p["name"]: p["value"] for p in t.get("properties", [])}
    env = dict(os.environ)
    for kv in props.get("ENVIRONMENT", []):
        k, _, v = kv.partition("=")
        env[k] = v
    cmd = [sys.argv[2], "--tool", "memcheck", "--leak-check", "full", "--error-exitcode", "86"] + t["command"]
    print("==", t["name"], flush=True)
    rc = subprocess.call(cmd, env=env, cwd=props.get("WORKING_DIRECTORY"), timeout=1800)
    if rc == 0:
        passed += 1
    elif str(rc) == str(props.get("SKIP_RETURN_CODE")):
        skipped += 1
        print("  skipped", flush=True)
    else:
        failed += 1
        print("  FAILED (exit %d%s)" % (rc, ": memcheck errors" if rc == 86 else ""), flush=True)
print("sanitize: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(1 if failed else 0)
EOF
            status=1
        fi
    else
        if ! ctest --test-dir "$build_dir" -L gpu --output-on-failure 2>&1 | tee "$logdir/ctest_gpu.log"; then
            status=1
        fi
    fi
fi

# ---- 6. GPU benchmarks ----
if ((run_bench)); then
    section "GPU benchmarks"
    # Listed here, or any experiments/bench_*gpu*.{c,sh}.
    gpu_benches=()
    shopt -s nullglob
    for src in experiments/bench_*gpu*.c experiments/bench_*gpu*.sh; do
        gpu_benches+=("$src")
    done
    shopt -u nullglob
    if ((${#gpu_benches[@]} == 0)); then
        say "no GPU benchmarks yet (experiments/bench_*gpu*.c or .sh): nothing to run"
    else
        : >"$logdir/bench_gpu.log"
        for src in "${gpu_benches[@]}"; do
            name=$(basename "$src")
            if [[ $src == *.sh ]]; then
                cmd=(bash "$src")
            else
                cmd=("$build_dir/experiments/${name%.c}")
            fi
            echo "== $name" | tee -a "$logdir/bench_gpu.log"
            if ! timeout "${MT_BENCH_TIMEOUT:-300}" "${cmd[@]}" 2>&1 | tee -a "$logdir/bench_gpu.log"; then
                say "benchmark $name failed" >&2
                status=1
            fi
        done
    fi
fi

section "done"
say "logs in $logdir"
exit "$status"

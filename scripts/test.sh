#!/usr/bin/env bash
# Installs the dependencies, builds medtrain into build/ and runs the test
# suite with CTest (without tests labelled `slow` unless --all is given).
# Then builds the bad-input tests (test_config, test_safetensors, test_cli,
# test_checkpoint, test_json, test_nifti, test_msd, test_prepare, test_predict, test_train_store: those
# present) with AddressSanitizer + UBSan into
# build-asan/ and runs them again. Last, builds the CUDA backend against the
# CPU emulator (tests/cuda_emu, -DMT_CUDA_EMU=ON) into build-emu/ and runs
# the gpu-labelled tests there: without a GPU they exit 77 in build/, so this
# is where the CUDA kernels' logic is tested. Exits non-zero if anything fails.
#
#   bash scripts/test.sh [--all] [--no-asan] [--no-emu]
#
# MT_TEST_JOBS: tests run in parallel by CTest (default 1).
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

all=0
asan=1
emu=1
for arg in "$@"; do
    case "$arg" in
        --all) all=1 ;;
        --no-asan) asan=0 ;;
        --no-emu) emu=0 ;;
        -h | --help)
            sed -n '2,14p' "$self" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "test.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

bash scripts/install_deps.sh
bash scripts/build.sh

jobs=${MT_TEST_JOBS:-1}
status=0
summary_main="(not run)"
summary_asan="(not run)"
summary_emu="(not run)"

# Last "N% tests passed, ..." line of a ctest log.
ctest_summary() {
    grep -E '^[0-9]+% tests passed' "$1" | tail -n 1 || true
}

# Adds a ctest log's counts to the totals (skipped tests count as neither).
n_pass=0
n_fail=0
n_skip=0
add_counts() {
    local line total failed skipped
    line=$(ctest_summary "$1")
    [[ -n $line ]] || return 0
    total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
    failed=$(sed -E 's/.*, ([0-9]+) tests? failed.*/\1/' <<<"$line")
    skipped=$(grep -cE 'Test +#[0-9]+: .*\*\*\*Skipped' "$1" || true)
    n_fail=$((n_fail + failed))
    n_skip=$((n_skip + skipped))
    n_pass=$((n_pass + total - failed - skipped))
}

select=(-LE slow)
what="all tests except those labelled slow"
if ((all)); then
    select=()
    what="all tests"
fi
echo "== ctest, build/: ${what} =="
if ! ctest --test-dir build --output-on-failure --no-tests=error -j "$jobs" "${select[@]}" 2>&1 |
    tee build/ctest.log; then
    status=1
fi
summary_main=$(ctest_summary build/ctest.log)
add_counts build/ctest.log

# One extra build + ctest run: stage TITLE DIR CMAKE_ARGS TARGETS CTEST_ARGS (the
# last three name arrays). Sets stage_summary to the ctest summary line (or why
# there is none), adds the counts, and sets status=1 on a failure.
stage() {
    local title=$1 dir=$2
    local -n cm=$3 tg=$4 ct=$5
    echo "== ${title} (${dir}/) =="
    if ! { cmake -S . -B "$dir" "${cm[@]}" >/dev/null && cmake --build "$dir" -j"$(nproc)" --target "${tg[@]}"; }; then
        echo "test.sh: the ${title} build failed" >&2
        status=1
        stage_summary="(build failed)"
        return
    fi
    if ! ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$jobs" "${ct[@]}" 2>&1 | tee "$dir/ctest.log"; then
        status=1
    fi
    add_counts "$dir/ctest.log"
    stage_summary=$(ctest_summary "$dir/ctest.log")
}

if ((asan)); then
    asan_tests=()
    for t in test_config test_safetensors test_cli test_checkpoint test_json test_nifti test_msd test_prepare test_predict test_train_store; do
        if [[ -f tests/$t.c ]]; then
            asan_tests+=("$t")
        fi
    done
    if ((${#asan_tests[@]} == 0)); then
        summary_asan="(no bad-input tests present)"
    else
        regex="^($(
            IFS='|'
            echo "${asan_tests[*]}"
        ))\$"
        export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
        export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
        asan_cmake=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMT_ASAN=ON -DMT_CUDA=OFF)
        asan_targets=(medtrain "${asan_tests[@]}")
        asan_ctest=(-R "$regex" -L 'unit|integration')
        stage "AddressSanitizer + UBSan: ${asan_tests[*]}" build-asan asan_cmake asan_targets asan_ctest
        summary_asan=$stage_summary
    fi
fi

if ((emu)); then
    emu_targets=(medtrain test_emu_runtime test_emu_libs)
    for f in tests/test_*.c; do
        if grep -qE 'LABELS:.*\bgpu\b' "$f"; then
            emu_targets+=("$(basename "$f" .c)")
        fi
    done
    emu_cmake=(-DCMAKE_BUILD_TYPE=Release -DMT_CUDA_EMU=ON)
    emu_ctest=(-L gpu)
    stage "CUDA emulator: gpu-labelled tests" build-emu emu_cmake emu_targets emu_ctest
    summary_emu=$stage_summary
fi

echo "== summary =="
if ((asan)); then
    echo "asan (bad-input tests): ${summary_asan}"
fi
if ((emu)); then
    echo "cuda emulator (gpu tests): ${summary_emu}"
fi
echo "${summary_main:-(no ctest summary: see build/ctest.log)}"
if [[ -z $summary_main ]]; then
    status=1
fi
echo "tests: ${n_pass} passed, ${n_fail} failed, ${n_skip} skipped"
exit "$status"

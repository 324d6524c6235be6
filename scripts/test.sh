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
        echo "== AddressSanitizer + UBSan: ${asan_tests[*]} (build-asan/) =="
        regex="^($(
            IFS='|'
            echo "${asan_tests[*]}"
        ))\$"
        if cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMT_ASAN=ON -DMT_CUDA=OFF >/dev/null &&
            cmake --build build-asan -j"$(nproc)" --target medtrain "${asan_tests[@]}"; then
            export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
            export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
            if ! ctest --test-dir build-asan --output-on-failure --no-tests=error -j "$jobs" -R "$regex" -L 'unit|integration' \
                2>&1 | tee build-asan/ctest.log; then
                status=1
            fi
            summary_asan=$(ctest_summary build-asan/ctest.log)
            add_counts build-asan/ctest.log
        else
            echo "test.sh: the AddressSanitizer build failed" >&2
            summary_asan="(build failed)"
            status=1
        fi
    fi
fi

if ((emu)); then
    echo "== CUDA emulator: gpu-labelled tests (build-emu/) =="
    emu_targets=(medtrain test_emu_runtime test_emu_libs)
    for f in tests/test_*.c; do
        if grep -qE 'LABELS:.*\bgpu\b' "$f"; then
            emu_targets+=("$(basename "$f" .c)")
        fi
    done
    if cmake -S . -B build-emu -DCMAKE_BUILD_TYPE=Release -DMT_CUDA_EMU=ON >/dev/null &&
        cmake --build build-emu -j"$(nproc)" --target "${emu_targets[@]}"; then
        if ! ctest --test-dir build-emu --output-on-failure --no-tests=error -j "$jobs" -L gpu \
            2>&1 | tee build-emu/ctest.log; then
            status=1
        fi
        summary_emu=$(ctest_summary build-emu/ctest.log)
        add_counts build-emu/ctest.log
    else
        echo "test.sh: the CUDA emulator build failed" >&2
        summary_emu="(build failed)"
        status=1
    fi
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

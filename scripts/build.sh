#!/usr/bin/env bash
# Configures and builds medtrain (Release) into build/, using every core.
# Extra arguments go to the CMake configure step, e.g.
#   bash scripts/build.sh -DMT_MARCH=x86-64-v3
# BUILD_DIR overrides the build directory (default: build).
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$build_dir" -j"$(nproc)"

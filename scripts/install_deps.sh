#!/usr/bin/env bash
# Installs the Debian packages medtrain needs to build and test: compiler and
# CMake (>= 3.24), OpenBLAS, oneDNN, libyaml, HDF5, zlib, OpenMPI, Python 3.
# Non-interactive and idempotent: when every package is already installed it
# prints one line and touches nothing; otherwise it runs `apt-get update`
# first and installs only what is missing. Runs as root, or through sudo.
set -euo pipefail

packages=(
    build-essential   # gcc, make, libc headers (OpenMP comes with gcc)
    cmake
    pkg-config
    libopenblas-dev   # cblas.h + OpenBLAS (CPU matmul)
    libdnnl-dev       # oneDNN (CPU convolutions)
    libyaml-dev       # config files
    libhdf5-dev       # HDF5 data store
    zlib1g-dev        # NIfTI .nii.gz
    libopenmpi-dev    # distributed training (MPI)
    openmpi-bin       # mpirun
    python3           # comparison scripts in experiments/
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install_deps: all ${#packages[@]} packages already installed"
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install_deps: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
fi

echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_deps: done"

#!/usr/bin/env bash
# The first command on a fresh Debian machine (as root): installs the
# dependencies, builds medtrain and trains the built-in default config (a
# small UNet3D on synthetic phantom data, on the CPU). The run is written to
# runs/<name>/ under the repository. Extra arguments go to medtrain, e.g.
#   bash scripts/quickstart.sh --set train.steps=50
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
bash scripts/build.sh
exec build/medtrain "$@"

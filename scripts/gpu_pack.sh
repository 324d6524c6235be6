#!/usr/bin/env bash
# Downloads (apt-get download: nothing is installed) the Debian 12 packages that
# building and running medtrain needs and that a bare GPU machine lacks, into
# .device/debs/ (ignored by git). scripts/gpu_run.sh unpacks them there with
# `dpkg -x` into a private prefix. Run it HERE, where Debian's archive is reached;
# then name ".device" in the device tool's `carry` (see docs/gpu.md).
#
#   bash scripts/gpu_pack.sh [--no-mpi] [--list]
#
#   --no-mpi  leave out OpenMPI (libopenmpi-dev, openmpi-bin and their libraries)
#   --list    print the package list and exit (downloads nothing)
#
# The list: the -dev packages whose headers and link symlinks the build uses,
# plus the runtime library packages they point at, followed recursively through
# their Depends (first alternative) and stopping at packages every Linux machine
# with a C/C++ compiler has (libc6, libgcc-s1, libstdc++6, libgomp1, ...).
# Documentation, Fortran/C++ bindings and other -dev packages that those -dev
# packages depend on are not followed: medtrain neither includes nor links them.
# Idempotent: a .deb of the candidate version already present is kept; an older
# version of the same package is replaced. Prints the total size and checks it
# against the device tool's 64 MiB carry limit (working tree included).
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

mpi=1
list_only=0
for arg in "$@"; do
    case "$arg" in
        --no-mpi) mpi=0 ;;
        --list) list_only=1 ;;
        -h | --help)
            sed -n '2,21p' "$self" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "gpu_pack.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

dest=.device/debs
limit_mib=64

# Headers, link-time symlinks, CMake/pkg-config files.
dev_pkgs=(
    libyaml-dev             # yaml.h, libyaml.so
    libhdf5-dev             # hdf5/serial/include, libhdf5_serial.so (FindHDF5)
    libopenblas-dev         # libopenblas.so alternative link
    libopenblas-pthread-dev # openblas-pthread/cblas.h, libopenblas.so
    libdnnl-dev             # dnnl.h, libdnnl.so
    zlib1g-dev              # zlib.h, libz.so (FindZLIB)
)
# Runtime libraries: the roots of the recursive Depends walk.
runtime_roots=(
    libyaml-0-2
    libhdf5-103-1
    libopenblas0
    libopenblas0-pthread
    libdnnl2
    zlib1g
)
if ((mpi)); then
    dev_pkgs+=(libopenmpi-dev) # mpi.h, libmpi.so, mpicc (issue 5)
    runtime_roots+=(libopenmpi3 openmpi-bin openmpi-common)
fi

# Not followed: present wherever a compiler and a shell are (the GPU image has
# gcc for nvcc), or never loaded by medtrain: debconf, ssh for mpirun, jQuery
# for OpenMPI's docs, hwloc's optional plugins (dlopen'ed; they pull X11 and
# ICU, about 12 MiB).
base_pkgs=(
    libc6 libc-bin libgcc-s1 libstdc++6 libgomp1 gcc-12-base libcrypt1 libatomic1
    debconf perl-base dpkg tar coreutils sensible-utils lsb-base init-system-helpers
    openssh-client ssh-client libjs-jquery libjs-jquery-ui adduser passwd
    libselinux1 libpcre2-8-0 libaudit1 libcap-ng0 libcap2 libsystemd0 libudev1
    liblzma5 libbz2-1.0 libtinfo6 libncurses6 libreadline8 readline-common
    gcc-12 gfortran-12 gfortran-mod-15 libgfortran-12-dev libhwloc-plugins
)

if [[ $(dpkg --print-architecture) != amd64 ]]; then
    echo "gpu_pack.sh: this machine is $(dpkg --print-architecture); the GPU machine is amd64" >&2
    exit 1
fi

# apt's lists: refresh once if the candidates are unknown.
policy=$(apt-cache policy libyaml-dev 2>/dev/null || true)
if [[ $policy != *"Candidate: "[0-9]* ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "gpu_pack.sh: apt has no package lists; run 'apt-get update' as root first" >&2
        exit 1
    fi
    echo "gpu_pack.sh: apt-get update" >&2
    apt-get update -qq
fi

# Depends and Pre-Depends of the given packages (one apt-cache call), first
# alternative of each, a virtual package replaced by its first provider.
deps_of() {
    apt-cache depends --important --no-recommends --no-suggests "$@" 2>/dev/null | awk '
        /^[^ ]/ { skip = 0; want = 0; next }                 # a package block
        /^ *\|?(Pre)?Depends: / {
            alt = ($1 ~ /^\|/); name = $2
            if (skip) { skip = alt; next }                     # not the first alternative
            skip = alt
            if (name ~ /^</) { want = 1; next }                # virtual: take its provider
            print name; next
        }
        /^    [^ ]/ { if (want) { print $1; want = 0 } next }
    ' | sed 's/:any$//' | sort -u
}

declare -A seen=()
for p in "${base_pkgs[@]}"; do seen[$p]=1; done
order=()
for p in "${dev_pkgs[@]}"; do
    seen[$p]=1 # the -dev packages themselves, not their Depends
    order+=("$p")
done
# Breadth-first over the runtime packages' Depends, one apt-cache call a level.
level=()
for p in "${runtime_roots[@]}"; do
    seen[$p]=1
    order+=("$p")
    level+=("$p")
done
while ((${#level[@]})); do
    next=()
    for d in $(deps_of "${level[@]}"); do
        [[ -n ${seen[$d]:-} ]] && continue
        seen[$d]=1
        order+=("$d")
        next+=("$d")
    done
    level=(${next[@]+"${next[@]}"})
done
# libopenmpi-dev's other Depends (libhwloc-dev, libevent-dev, libpmix-dev,
# libibverbs-dev) only serve static links: mpicc links the shared libmpi.

if ((list_only)); then
    printf '%s\n' "${order[@]}"
    exit 0
fi

# Candidate versions, one apt-cache call.
declare -A cand=()
while read -r p v; do
    cand[$p]=$v
done < <(apt-cache policy "${order[@]}" | awk '/^[^ ].*:$/ {p = substr($1, 1, length($1) - 1)}
                                             /^  Candidate:/ {print p, $2}')

mkdir -p "$dest"
fetched=0
kept=0
for p in "${order[@]}"; do
    version=${cand[$p]:-}
    if [[ -z $version || $version == "(none)" ]]; then
        echo "gpu_pack.sh: no candidate version for '$p'" >&2
        exit 1
    fi
    have=""
    for f in "$dest/${p}"_*.deb; do
        [[ -e $f ]] || continue
        if [[ $(dpkg-deb -f "$f" Package) == "$p" ]]; then
            if [[ $(dpkg-deb -f "$f" Version) == "$version" ]]; then
                have=$f
            else
                echo "gpu_pack.sh: replacing $(basename "$f") (candidate is $version)"
                rm -f -- "$f"
            fi
        fi
    done
    if [[ -n $have ]]; then
        kept=$((kept + 1))
        continue
    fi
    (cd "$dest" && apt-get download -qq "$p=$version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    if ! compgen -G "$dest/${p}_*.deb" >/dev/null; then
        echo "gpu_pack.sh: apt-get download $p=$version failed" >&2
        exit 1
    fi
    fetched=$((fetched + 1))
done

# Anything in the folder that is not on the list (an earlier list, --no-mpi now)
# stays, but is named so it can be removed by hand.
declare -A wanted=()
for p in "${order[@]}"; do wanted[$p]=1; done
for f in "$dest"/*.deb; do
    p=$(dpkg-deb -f "$f" Package)
    if [[ -z ${wanted[$p]:-} ]]; then
        echo "gpu_pack.sh: note: $(basename "$f") is not on the current list (rm it to drop it from the carry)"
    fi
done

debs_bytes=$(du -cb "$dest"/*.deb | tail -n 1 | cut -f1)
# What the device tool sends besides: tracked + untracked-not-ignored files.
tree_bytes=$(git ls-files -z --cached --others --exclude-standard |
    xargs -0 -r du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
if [[ -d shared ]]; then
    tree_bytes=$((tree_bytes + $(du -sb shared | cut -f1)))
fi
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
total=$((debs_bytes + tree_bytes))
echo "gpu_pack.sh: ${#order[@]} packages in $dest ($fetched downloaded, $kept already present)"
echo "gpu_pack.sh: debs $(mib "$debs_bytes") + working tree $(mib "$tree_bytes") = $(mib "$total") of the ${limit_mib} MiB carry limit"
if ((total > limit_mib * 1048576 * 9 / 10)); then
    echo "gpu_pack.sh: too close to the ${limit_mib} MiB limit; try --no-mpi" >&2
    exit 1
fi
echo "gpu_pack.sh: next: the device tool with command 'bash scripts/gpu_run.sh' and carry [\".device\"]"

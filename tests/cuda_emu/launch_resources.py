#!/usr/bin/env python3
"""Checks that no CUDA kernel launch can fail for lack of registers.

    launch_resources.py --census FILE --nvcc NVCC --src ROOT [-I DIR]... [--arch 80 --arch 90]

The emulator cannot see registers, and a real GPU refuses a launch whose block
needs more than the 65,536 registers an SM gives one block ("too many
resources requested for launch"). This compiles every ROOT/core/cuda/*.cu with
ptxas' resource report for each architecture, takes each kernel's register
count (the largest over its template instances; allocated in units of 8 per
thread, 256 per warp), and checks it against the largest block that kernel was
launched with in the emulator's census (MT_EMU_STATS=FILE, written by the gpu
tests of the emulator build). Kernels that the tests never launched are
listed, since nothing checks their launches. Prints "N passed, M failed".
"""
import argparse
import concurrent.futures
import glob
import os
import re
import subprocess
import sys

REGS_PER_BLOCK = 65536


def base_name(demangled):
    s = demangled.replace("(anonymous namespace)::", "")
    s = re.sub(r"^void ", "", s)
    m = re.match(r"([A-Za-z_][\w:]*)", s)
    return m.group(1).split("::")[-1] if m else s


def ptxas_registers(nvcc, src, arch, includes):
    cmd = [nvcc, "-std=c++17", "-O3", f"-arch=sm_{arch}", "--resource-usage", "-I", ROOT]
    for d in includes:
        cmd += ["-I", d]
    cmd += ["-c", src, "-o", os.devnull]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"launch_resources.py: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    out, fn = [], None
    for line in (r.stdout + r.stderr).splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            fn = m.group(1)
        m = re.search(r"Used (\d+) registers", line)
        if m and fn:
            out.append((fn, int(m.group(1))))
            fn = None
    return out


def main():
    global ROOT
    ap = argparse.ArgumentParser()
    ap.add_argument("--census", required=True)
    ap.add_argument("--nvcc", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("-I", dest="includes", action="append", default=[])
    ap.add_argument("--arch", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    ROOT = a.src
    archs = a.arch or ["80", "90"]

    launched = {}  # kernel -> largest block
    if not os.path.exists(a.census):
        sys.exit(f"launch_resources.py: no census at {a.census} (run the emulator's gpu tests first)")
    with open(a.census) as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 3)
            if len(parts) == 4 and int(parts[2]) > 0:
                launched[parts[3]] = max(launched.get(parts[3], 0), int(parts[2]))

    sources = sorted(glob.glob(os.path.join(a.src, "core", "cuda", "*.cu")))
    jobs = [(s, arch) for s in sources for arch in archs]
    with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as ex:
        results = list(ex.map(lambda j: (j[1], ptxas_registers(a.nvcc, j[0], j[1], a.includes)), jobs))
    mangled = sorted({fn for _, rows in results for fn, _ in rows})
    dem = subprocess.run(["c++filt"], input="\n".join(mangled), capture_output=True, text=True).stdout.split("\n")
    name_of = dict(zip(mangled, (base_name(d) for d in dem)))
    regs = {}  # (kernel, arch) -> most registers over instances
    for arch, rows in results:
        for fn, r in rows:
            k = (name_of[fn], arch)
            regs[k] = max(regs.get(k, 0), r)

    passed = failed = 0
    kernels = sorted({k for k, _ in regs})
    for k in kernels:
        if k not in launched:
            continue
        block = launched[k]
        for arch in archs:
            r = regs.get((k, arch))
            if r is None:
                continue
            need = ((r + 7) // 8) * 8 * ((block + 31) // 32) * 32
            if need > REGS_PER_BLOCK:
                failed += 1
                print(f"FAIL {k}: {r} registers per thread on sm_{arch}; launched with blocks of {block} "
                      f"threads it needs {need} > {REGS_PER_BLOCK}: the launch fails with 'too many "
                      f"resources requested' (add __launch_bounds__({block}) or launch smaller blocks)")
            else:
                passed += 1
    never = [k for k in kernels if k not in launched]
    worst = max(((r, k, arch) for (k, arch), r in regs.items()), default=(0, "-", "-"))
    print(f"{len(kernels)} kernels in {len(sources)} files; {len(kernels) - len(never)} launched by the gpu tests "
          f"(largest block {max(launched.values(), default=0)}); most registers: {worst[0]} ({worst[1]}, sm_{worst[2]})")
    if never:
        print(f"never launched by the gpu tests, so unchecked: {', '.join(never)}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

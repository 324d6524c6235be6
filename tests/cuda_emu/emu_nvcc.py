#!/usr/bin/env python3
"""medtrain CUDA emulator: turns a .cu file into C++ that g++ compiles.

    emu_nvcc.py IN.cu OUT.cpp

Every launch  kernel<tmpl>(...)<<<grid, block[, smem[, stream]]>>>(args)
becomes       mt_emu_launch("kernel", __FILE__, __LINE__,
                            mt_emu_make_cfg(grid, block, ...), kernel<tmpl>, args)
and the file starts with the emulator's device header. Line numbers are kept
(#line), so compiler errors and the emulator's reports name the .cu line.
"""
import os
import sys


def fail(path, text, pos, msg):
    line = text.count("\n", 0, pos) + 1
    sys.exit(f"{path}:{line}: emu_nvcc: {msg}")


def match_back(text, end, open_c, close_c):
    """Index of the open_c matching the close_c at text[end]."""
    depth = 0
    i = end
    while i >= 0:
        c = text[i]
        if c == close_c:
            depth += 1
        elif c == open_c:
            depth -= 1
            if depth == 0:
                return i
        i -= 1
    return -1


def match_fwd(text, start, open_c, close_c):
    """Index of the close_c matching the open_c at text[start]."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == open_c:
            depth += 1
        elif c == close_c:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def convert(path, text):
    out = []
    pos = 0
    while True:
        k = text.find("<<<", pos)
        if k < 0:
            out.append(text[pos:])
            break
        # the callee: identifier, optionally with a template argument list
        i = k - 1
        while i >= 0 and text[i].isspace():
            i -= 1
        if text[i] == ">":
            i = match_back(text, i, "<", ">")
            if i < 0:
                fail(path, text, k, "unbalanced template arguments before <<<")
            i -= 1
            while i >= 0 and text[i].isspace():
                i -= 1
        j = i
        while j >= 0 and (text[j].isalnum() or text[j] in "_:"):
            j -= 1
        start = j + 1
        if start > i:
            fail(path, text, k, "no kernel name before <<<")
        callee_full = text[start:k]
        name = text[start : i + 1]
        # the configuration up to the matching >>>
        depth = 0
        m = k + 3
        while m < len(text):
            if text.startswith(">>>", m) and depth == 0:
                break
            if text[m] in "([{":
                depth += 1
            elif text[m] in ")]}":
                depth -= 1
            m += 1
        else:
            fail(path, text, k, "no >>> after <<<")
        cfg = text[k + 3 : m]
        a = m + 3
        while a < len(text) and text[a].isspace():
            a += 1
        if a >= len(text) or text[a] != "(":
            fail(path, text, k, "no argument list after >>>")
        b = match_fwd(text, a, "(", ")")
        if b < 0:
            fail(path, text, a, "unbalanced argument list")
        args = text[a + 1 : b]
        callee = " ".join(callee_full.split())
        lost_lines = callee_full.count("\n") + text.count("\n", m, a)
        out.append(text[pos:start])
        out.append(f'mt_emu_launch("{name}", __FILE__, __LINE__, mt_emu_make_cfg({cfg}), {callee}')
        if args.strip():
            out.append(", " + args)
        out.append(")" + "\n" * lost_lines)
        pos = b + 1
    return "".join(out)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: emu_nvcc.py IN.cu OUT.cpp")
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        text = f.read()
    body = convert(src, text)
    tmp = dst + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write('#include "mt_cuda_emu_device.h"\n')
        f.write(f'#line 1 "{os.path.abspath(src)}"\n')
        f.write(body)
    os.replace(tmp, dst)


if __name__ == "__main__":
    main()

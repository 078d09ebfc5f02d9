#!/usr/bin/env python3
"""Read the valgrind logs of a test/sanitize run (one vg.<pid>.log per process) and sort
the error records that valgrind.supp left into those with a frame in Plank anywhere
(where the error happened, what called it, where the memory was allocated or freed, or
where an uninitialised value came from: plank.so, a src/*.c file of Plank, a plank_*
function) and the rest (PostgreSQL, libc, libraries, not reached through Plank). Prints
each Plank record in full, with the suppression valgrind generated for it, and the rest
as one line per distinct stack; ends with a one-line count. Exit status 1 when a record
has a Plank frame.

usage: vgcheck.py LOGDIR
"""

import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLANK_FILES = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "src", "*.c"))}
FRAME = re.compile(r"^\s+(?:at|by) 0x[0-9A-Fa-f]+: (.*)$")
NOT_ERRORS = ("Memcheck,", "Copyright", "Using Valgrind", "Command:", "Parent PID:",
              "HEAP SUMMARY", "LEAK SUMMARY", "ERROR SUMMARY", "For lists of", "For counts of",
              "All heap blocks", "in use at exit", "total heap usage", "definitely lost:",
              "indirectly lost:", "possibly lost:", "still reachable:", "suppressed:",
              "Reachable blocks", "To see them", "Rerun with", "Use --track-origins",
              "(see section", "Warning: set address range perms",
              "Warning: noted but unhandled ioctl")


def in_plank(frame):
    if "plank.so" in frame or re.search(r"\bplank_\w+", frame):
        return True
    m = re.search(r"\(([\w.-]+\.c):\d+\)", frame)
    return bool(m and m.group(1) in PLANK_FILES)


def records(path):
    """The error records of one log: a list of [lines, suppression]."""
    prefix = re.compile(r"^==(\d+)== ?(.*)$")
    out, block, supp = [], [], None
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for line in lines + ["==0== "]:
        if supp is not None:
            supp.append(line)
            if line.startswith("}"):
                if out:
                    out[-1][1] = supp  # valgrind prints it after the record it is for
                supp = None
            continue
        if line.startswith("{"):
            supp = [line]
            continue
        m = prefix.match(line)
        if not m:
            continue
        text = m.group(2)
        if text.strip() == "":
            if block:
                out.append([block, []])
            block = []
            continue
        block.append(text)
    return out


def main():
    logdir = sys.argv[1]
    plank, other, processes = [], [], 0
    for path in sorted(glob.glob(os.path.join(logdir, "vg.*.log"))):
        processes += 1
        for block, supp in records(path):
            head = block[0]
            if head.startswith(NOT_ERRORS) or head.startswith(" "):
                continue
            if not any(FRAME.match(l) for l in block):
                continue  # a note without a stack
            if "lost in loss record" in head and "definitely" not in head:
                continue
            entry = (os.path.basename(path), block, supp)
            (plank if any(in_plank(l) for l in block if FRAME.match(l)) else other).append(entry)

    print(f"--- valgrind records with a frame in Plank: {len(plank)}")
    for name, block, supp in plank:
        print(f"[{name}]")
        print("\n".join("  " + l for l in block))
        if supp:
            print("\n".join("  " + l for l in supp))
    # the rest, one line per distinct stack (the logs have them in full)
    counts = {}
    for name, block, supp in other:
        frames = [FRAME.match(l).group(1).split(" (")[0] for l in block if FRAME.match(l)]
        key = re.sub(r"[0-9,]+", "N", block[0]) + " | " + " < ".join(frames[:6])
        counts[key] = counts.get(key, 0) + 1
    print(f"--- valgrind records elsewhere (not counted): {len(other)}")
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {n:4d}x {key}")
    print(f"valgrind: {len(plank)} records in Plank code, {len(other)} elsewhere, "
          f"{processes} process logs")
    return 1 if plank else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# callgraph.sh: the graph between Plank's source files, from the compiled objects.
#
#   bash scripts/callgraph.sh            # builds src/*.o with make if needed, then prints
#   PG_CONFIG=/path/to/pg_config bash scripts/callgraph.sh
#   bash scripts/callgraph.sh --check    # only the cycles, and exits 1 when there is one
#
# Prints three sections:
#   includes  for each src/*.c and src/*.h, the project headers (src/*.h) it includes;
#   uses      for each src/X.o, the other src/*.o whose global functions or variables it
#             refers to (nm: X's undefined symbols that another object defines), with the
#             number of symbols;
#   cycles    the strongly connected components of the "uses" graph that hold more than
#             one file (Tarjan's algorithm), and in each the pairs of files that use each
#             other directly, with the symbols each way.
# Needs make, a C compiler and PostgreSQL's server headers (the extension's own build),
# nm (binutils) and python3: nothing beyond what scripts/setup.sh installs.
# docs/ARCHITECTURE.md ("Source graph") holds this script's output.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CHECK=${1:-}

# Build the objects (make rebuilds only what is stale); the output stays on stderr.
make -s ${PG_CONFIG:+PG_CONFIG="$PG_CONFIG"} >&2

exec python3 - "$ROOT" "$CHECK" <<'PY'
import os
import re
import subprocess
import sys

root = sys.argv[1]
check = len(sys.argv) > 2 and sys.argv[2] == "--check"


def say(*args):
    """Print a line of the includes and uses sections (left out with --check)."""
    if not check:
        print(*args)

src = os.path.join(root, "src")
units = sorted(f[:-2] for f in os.listdir(src) if f.endswith(".c"))
headers = sorted(f for f in os.listdir(src) if f.endswith(".h"))

# --- includes
say("## includes (src/*.c and src/*.h -> the src/*.h they include)")
say()
inc_re = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
for name in [u + ".c" for u in units] + headers:
    with open(os.path.join(src, name), encoding="utf-8") as f:
        incs = [m.group(1) for m in map(inc_re.match, f) if m and m.group(1) in headers]
    say(f"{name}: {' '.join(incs) if incs else '(none)'}")
say()

# --- symbols
defined = {}        # symbol -> unit
undefined = {}      # unit -> set of symbols
for u in units:
    obj = os.path.join(src, u + ".o")
    if not os.path.exists(obj):
        sys.exit(f"callgraph: {obj} is missing (make did not build it)")
    out = subprocess.run(["nm", "-g", obj], check=True, capture_output=True,
                         text=True).stdout
    undefined[u] = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            undefined[u].add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBRCGSV":
            defined[parts[2]] = u

uses = {u: {} for u in units}       # unit -> {unit it uses: sorted symbols}
for u in units:
    for sym in sorted(undefined[u]):
        d = defined.get(sym)
        if d is not None and d != u:
            uses[u].setdefault(d, []).append(sym)

say("## uses (X.o -> the objects defining the symbols X.o refers to)")
say()
for u in units:
    if not uses[u]:
        say(f"{u}: (none)")
        continue
    say(f"{u}: " + ", ".join(f"{d} ({len(s)})" for d, s in sorted(uses[u].items())))
say()

# --- cycles: Tarjan's strongly connected components
index = {}
low = {}
stack = []
on_stack = set()
sccs = []
counter = [0]


def strongconnect(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(uses[v]):
        if w not in index:
            strongconnect(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(sorted(comp))


sys.setrecursionlimit(10000)
for u in units:
    if u not in index:
        strongconnect(u)

cyclic = sorted((c for c in sccs if len(c) > 1), key=lambda c: (-len(c), c))
print("## cycles (strongly connected components of \"uses\" with more than one file)")
print()
if not cyclic:
    print("(none)")
for n, comp in enumerate(cyclic, 1):
    print(f"{n}. {len(comp)} files: {' '.join(comp)}")
    members = set(comp)
    for a in comp:
        for b in sorted(uses[a]):
            if b in members and a < b and a in uses[b]:
                print(f"   {a} <-> {b}: {a} uses {' '.join(uses[a][b])}; "
                      f"{b} uses {' '.join(uses[b][a])}")
if cyclic and check:
    sys.exit("callgraph: source files call each other in a cycle (docs/ARCHITECTURE.md, "
             "\"Layers and files\")")
PY

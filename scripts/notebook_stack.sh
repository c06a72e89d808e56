#!/usr/bin/env bash
# `make test-notebook-stack`: the second tested stack, the one Colab and Kaggle ship.
#  1. a fresh venv holding ONLY the platform's packages (requirements/notebook-platform.txt,
#     their own dependencies pinned by the stack's lock; OVERRIDES, if given, replaces pins of
#     both, e.g. a cp313 numpy for Python 3.13);
#  2. the notebook's REAL install cell (tagged "install"), run by that venv's Python with
#     INSTALL = True: it clones this repository (its committed HEAD, through file://) and
#     pip-installs the clone exactly as a user's notebook does (no constraints), and a pip
#     freeze before/after shows that nothing that was there is replaced or removed
#     (TensorFlow, tf-keras, protobuf, numpy, ... included);
#  3. train -> export (every precision, QAT too) -> evaluate -> predict (scripts/stack_flow.sh).
# Usage: scripts/notebook_stack.sh PYTHON VENV LOCK WORKDIR [OVERRIDES]
set -euo pipefail
PY=$1; VENV=$2; LOCK=$3; WORK=$4; OVERRIDES=${5:-}
PLATFORM=requirements/notebook-platform.txt
NOTEBOOK=examples/skinscan_edge_notebook.ipynb
START=$SECONDS
rm -rf "$VENV" "$WORK"; mkdir -p "$WORK"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
echo "== 1. the platform's packages alone ($("$VENV/bin/python" -V)${OVERRIDES:+, overrides from $OVERRIDES})"
# An override replaces the pin of the same name in the platform list and in the lock.
with_overrides() {
  if [ -z "$OVERRIDES" ]; then cat "$1"; return; fi
  names=$(sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' "$OVERRIDES" | paste -sd'|')
  grep -viE "^($names)==" "$1"; grep '==' "$OVERRIDES"
}
with_overrides "$PLATFORM" > "$WORK/platform.txt"
with_overrides "$LOCK" > "$WORK/lock.txt"
"$VENV/bin/pip" install --quiet -c "$WORK/lock.txt" -r "$WORK/platform.txt"
"$VENV/bin/pip" freeze > "$WORK/before.txt"
echo "== 2. the notebook's install cell, INSTALL = True"
[ -z "$(git status --porcelain 2>/dev/null)" ] || echo "note: the cell clones the committed HEAD; uncommitted changes are not in it"
mkdir -p "$WORK/notebook"
"$VENV/bin/python" - "$NOTEBOOK" "file://$PWD" > "$WORK/notebook/cell.py" <<'PY'
import json, sys
cells = json.load(open(sys.argv[1], encoding="utf-8"))["cells"]
tagged = lambda tag: ["".join(c["source"]) for c in cells if tag in c.get("metadata", {}).get("tags", [])]
(params,), (install,) = tagged("parameters"), tagged("install")
print(params + f"\nREPO_URL = {sys.argv[2]!r}\nINSTALL = True\n\n" + install)
PY
VENV_PY=$(cd "$VENV" && pwd)/bin/python
if ! (cd "$WORK/notebook" && "$VENV_PY" cell.py) > "$WORK/notebook/cell.log" 2>&1; then
  cat "$WORK/notebook/cell.log"; echo "error: the notebook's install cell failed" >&2; exit 1
fi
grep -v "^WARNING: Location 'file:" "$WORK/notebook/cell.log" || true  # this host's pip.conf find-links
"$VENV/bin/pip" freeze > "$WORK/after.txt"
"$VENV/bin/python" - "$WORK" <<'PY'
import re, sys
from pathlib import Path

work = Path(sys.argv[1])
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pins = lambda path: dict(tuple(map(str.strip, line.split("==", 1))) for line in path.read_text().splitlines()
                         if "==" in line and not line.startswith("#"))
before = {norm(k): v for k, v in pins(work / "before.txt").items()}
after = {norm(k): v for k, v in pins(work / "after.txt").items()}
wanted = {norm(k): v for k, v in pins(work / "platform.txt").items()}
assert all(before.get(k) == v for k, v in wanted.items()), "the platform stack did not install as listed"
assert "skinscan-edge" in (work / "after.txt").read_text(), "the install cell did not install skinscan-edge"
changed = {k: f"{v} -> {after.get(k, 'removed')}" for k, v in before.items() if after.get(k) != v}
assert not changed, f"the notebook's install cell replaced: {changed}"
print(f"ok: {len(before)} platform packages untouched (" + ", ".join(f"{k} {before[k]}" for k in
      ("tensorflow", "tf-keras", "protobuf", "numpy")) + f"); {len(after) - len(before)} added")
PY
echo "== 3. train -> export -> evaluate -> predict"
FLOW=$SECONDS
scripts/stack_flow.sh "$VENV" "$WORK/flow"
echo "notebook stack on $("$VENV/bin/python" -V): $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s" \
     "(the flow: $(( (SECONDS - FLOW) / 60 )) min $(( (SECONDS - FLOW) % 60 )) s; load: $(cut -d' ' -f1-3 /proc/loadavg))"

#!/usr/bin/env bash
# `make test-notebook-stack`: the second tested stack, the one Colab and Kaggle ship.
#  1. a fresh venv holding ONLY the platform's packages (requirements/notebook-platform.txt,
#     their own dependencies pinned by the stack's lock);
#  2. a dry run of the plain `pip install -e .` a notebook user runs (no constraints): it must
#     replace none of the platform's packages;
#  3. the real install, pinned by the lock, and a pip freeze before/after: nothing that was
#     there is replaced or removed (TensorFlow, tf-keras, protobuf, numpy, ... included);
#  4. train -> export (every precision, QAT too) -> evaluate -> predict (scripts/stack_flow.sh).
# Usage: scripts/notebook_stack.sh PYTHON VENV LOCK WORKDIR
set -euo pipefail
PY=$1; VENV=$2; LOCK=$3; WORK=$4
PLATFORM=requirements/notebook-platform.txt
rm -rf "$VENV" "$WORK"; mkdir -p "$WORK"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
echo "== 1. the platform's packages alone"
"$VENV/bin/pip" install --quiet -c "$LOCK" -r "$PLATFORM"
"$VENV/bin/pip" freeze --exclude-editable > "$WORK/before.txt"
echo "== 2. what a plain 'pip install -e .' would do there (dry run, no constraints)"
"$VENV/bin/pip" install --quiet --dry-run --report "$WORK/dry-run.json" -e .
echo "== 3. the install (pinned by $LOCK)"
"$VENV/bin/pip" install --quiet -c "$LOCK" -e .
"$VENV/bin/pip" freeze --exclude-editable > "$WORK/after.txt"
"$VENV/bin/python" - "$WORK" "$PLATFORM" <<'PY'
import json, re, sys
from pathlib import Path

work, platform = Path(sys.argv[1]), Path(sys.argv[2])
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pins = lambda path: dict(tuple(map(str.strip, line.split("==", 1))) for line in path.read_text().splitlines()
                         if "==" in line and not line.startswith("#"))
before = {norm(k): v for k, v in pins(work / "before.txt").items()}
after = {norm(k): v for k, v in pins(work / "after.txt").items()}
wanted = {norm(k): v for k, v in pins(platform).items()}
report = json.loads((work / "dry-run.json").read_text())
would = {norm(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
bad = {k: f"{before[k]} -> {v}" for k, v in would.items() if k in before}
assert not bad, f"an unconstrained pip install would replace platform packages: {bad}"
assert all(before.get(k) == v for k, v in wanted.items()), "the platform stack did not install as listed"
changed = {k: f"{v} -> {after.get(k, 'removed')}" for k, v in before.items() if after.get(k) != v}
assert not changed, f"installing skinscan-edge replaced: {changed}"
print(f"ok: {len(before)} platform packages untouched (" + ", ".join(f"{k} {before[k]}" for k in
      ("tensorflow", "tf-keras", "protobuf", "numpy")) + f"); {len(after) - len(before)} added")
PY
echo "== 4. train -> export -> evaluate -> predict"
scripts/stack_flow.sh "$VENV" "$WORK/flow"

"""The kill sweep: ``train``, ``export`` and ``pipeline`` are SIGKILLed at a seeded sample of moments,
then resumed (or simply run again), and must end as an uninterrupted run ends.

Run by ``make test-kills`` (tests/test_kill_sweep.py) and by CI, never by plain ``make test``: each
point costs a tiny command and its recovery (a minute or two on 2 cores). For each command it first
runs the command uninterrupted, with every ``os.replace`` traced: that is where each file the later
commands trust becomes visible (core/files.py's atomic writes, the checkpoints, the image cache, the
model), so the worst instants are known by number. Then, for each sampled point, it runs the command
again on a fresh copy of its input and kills it, with every process of its group (the conversion
and QAT workers too, as the OOM killer or a power cut would):

* at a write: the k-th ``os.replace`` of the command, before it happens (the temporary file is
  whole, the file it replaces is not yet swapped), through ``sitecustomize`` in every process;
* at a time: t seconds after the start, t drawn over the uninterrupted run's duration (mid-epoch,
  mid-conversion: the moments no write marks).

After the kill, every JSON file of the run must parse, the recovery (``train --resume`` once the
run has its config.json, else the same ``train`` again; the same ``export`` or ``pipeline`` again)
must exit 0, and the run must end as the uninterrupted one did: training's history holds each
epoch once and its test accuracy is within 0.1 of the uninterrupted run's (the tolerance of the
resume test, tests/test_reliability.py); every export of the uninterrupted run is in the manifest
with a file whose SHA-256 matches; the pipeline's gate verdict is the uninterrupted one's.

    python tests/kill_points.py /tmp/kills --points 4 --seed 7
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

IMG = 75
HOOK = '''
import fcntl, os, signal
_k = int(os.environ.get("SKINSCAN_KILL_AT_REPLACE") or 0)
_trace = os.environ.get("SKINSCAN_REPLACE_TRACE")
if _trace:
    _real = os.replace

    def _replace(src, dst, *args, **kwargs):
        with open(_trace, "a+") as f:  # one counter for every process of the command
            fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            n = len(f.read().splitlines()) + 1
            f.write(f"{n}\\t{os.getpid()}\\t{dst}\\n")
            f.flush()
        if n == _k:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return _real(src, dst, *args, **kwargs)

    os.replace = _replace
'''


def _env(hook_dir: Path, trace: Path, kill_at: int = 0) -> dict:
    path = os.pathsep.join([str(hook_dir), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "SKINSCAN_REPLACE_TRACE": str(trace),
            "SKINSCAN_KILL_AT_REPLACE": str(kill_at), "TF_CPP_MIN_LOG_LEVEL": "2"}


def run(args: list, env: dict, kill_after_s: float | None = None, timeout_s: float = 3600) -> dict:
    """``skinscan-edge ARGS`` in a new process group; SIGKILL to the group after ``kill_after_s``."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "skinscan_edge", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=kill_after_s if kill_after_s is not None else timeout_s)
    except subprocess.TimeoutExpired:
        if kill_after_s is None:
            raise
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return {"rc": proc.returncode, "seconds": time.monotonic() - t0, "stdout": out, "stderr": err}


def torn_json(root: Path) -> list[str]:
    bad = []
    for p in root.rglob("*.json"):
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            bad.append(f"{p.relative_to(root)}: {e}")
    return bad


def outcome(name: str, run_dir: Path) -> dict:
    """What an uninterrupted run ends with, to compare a recovered one against."""
    out: dict = {}
    if (run_dir / "status.json").exists():
        out["test_accuracy"] = json.loads((run_dir / "status.json").read_text()).get("test_accuracy")
        if (run_dir / "history.csv").exists():
            with open(run_dir / "history.csv", newline="") as f:
                out["epochs"] = [(r.get("phase"), r.get("epoch")) for r in csv.DictReader(f)]
    manifest = run_dir / "exports" / "manifest.json"
    if name in ("export", "pipeline") and manifest.exists():
        from skinscan_edge.core.files import sha256_file

        entries = json.loads(manifest.read_text())["exports"]
        out["exports"] = sorted(e["name"] for e in entries)
        out["sha_ok"] = all(sha256_file(run_dir / "exports" / e["file"]) == e["sha256"] for e in entries)
    evaluated = run_dir / "reports" / "evaluate.json"
    if name == "pipeline" and evaluated.exists():
        out["gate_passed"] = json.loads(evaluated.read_text())["gate"]["passed"]
    return out


def same_end(name: str, got: dict, ref: dict) -> list[str]:
    why = []
    if got.get("test_accuracy") is None or got["test_accuracy"] < ref["test_accuracy"] - 0.1:
        why.append(f"test accuracy {got.get('test_accuracy')} against {ref['test_accuracy']}")
    if got.get("epochs") != ref.get("epochs"):
        why.append(f"history {got.get('epochs')} against {ref.get('epochs')}")
    if name in ("export", "pipeline"):
        if got.get("exports") != ref.get("exports") or not got.get("sha_ok"):
            why.append(f"exports {got.get('exports')} (SHA-256 ok: {got.get('sha_ok')}) against {ref.get('exports')}")
    if name == "pipeline" and got.get("gate_passed") != ref.get("gate_passed"):
        why.append(f"gate {got.get('gate_passed')} against {ref.get('gate_passed')}")
    return why


def recovery(name: str, args: list, run_dir: Path) -> list | None:
    """--resume once training wrote its config.json and has not finished; nothing when the kill came
    after training's last write (the run says it is complete: `train --resume` rightly answers
    "already complete", and the run must already end as the uninterrupted one); else the same command."""
    if name == "train" and (run_dir / "config.json").exists():
        status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
        if status.get("state") == "complete":
            return None
        return [*args, "--resume"]
    return args


def sweep(out: Path, points: int, seed: int, only: list[str] | None = None) -> dict:
    import numpy as np

    from skinscan_edge.data.demo import write_demo_dataset

    rng = np.random.default_rng(seed)
    hook = out / "hook"
    hook.mkdir(parents=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    data = out / "data"
    write_demo_dataset(data, per_class=10, size=80, seed=0)
    train = ["train", "--data", data, "--img-size", IMG, "--weights", "none", "--epochs", 2, "--fine-tune-epochs", 2,
             "--unfreeze-from", "mixed10", "--batch-size", 8, "--no-augment", "--seed", 1]
    export = ["--int8", "--jobs", 1, "--calib-samples", 8]
    states = out / "states"
    trained = states / "trained" / "run"
    first = run([*train, "--out", trained], _env(hook, out / "prep.trace"))
    if first["rc"] != 0:
        raise RuntimeError(f"preparing the trained run failed: {first['stderr'][-2000:]}")
    commands = {
        "train": (None, lambda r: [*train, "--out", r]),
        "export": (trained, lambda r: ["export", r, *export]),
        "pipeline": (None, lambda r: ["pipeline", "--out", r, *train[1:], "--no-qat", *export[1:], "--bench-threads", 1,
                                      "--bench-batch", 1, "--bench-min-time", 0.05, "--max-accuracy-drop", 100,
                                      "--max-recall-drop", 100]),
    }
    report: dict = {"seed": seed, "points_per_command": points, "commands": {}}
    for name, (source, make_args) in commands.items():
        if only and name not in only:
            continue
        t0 = time.time()

        def fresh(tag: str) -> Path:
            run_dir = out / name / tag / "run"
            if source is not None:
                shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns(".lock"))
            else:
                run_dir.parent.mkdir(parents=True)
            return run_dir

        ref_dir = fresh("uninterrupted")
        trace = out / name / "uninterrupted.trace"
        ref_run = run(make_args(ref_dir), _env(hook, trace))
        if ref_run["rc"] not in (0, 1):
            raise RuntimeError(f"uninterrupted {name} exited {ref_run['rc']}: {ref_run['stderr'][-2000:]}")
        ref = outcome(name, ref_dir)
        writes = trace.read_text().splitlines() if trace.exists() else []
        # Half the points at traced writes, half at times: both kinds, each sampled by the seed.
        at_writes = sorted(rng.choice(np.arange(1, len(writes) + 1), size=min(len(writes), (points + 1) // 2),
                                      replace=False).tolist()) if writes else []
        at_times = sorted(float(t) for t in rng.uniform(0.05, 0.95, size=points - len(at_writes)) * ref_run["seconds"])
        rows = []
        for i, (kind, where) in enumerate([("write", k) for k in at_writes] + [("time", t) for t in at_times]):
            run_dir = fresh(f"point{i}")
            tr = out / name / f"point{i}.trace"
            if kind == "write":
                killed = run(make_args(run_dir), _env(hook, tr, kill_at=int(where)))
                at = f"before write {where}/{len(writes)} ({writes[int(where) - 1].split(chr(9))[-1]})"
            else:
                killed = run(make_args(run_dir), _env(hook, tr), kill_after_s=where)
                at = f"at {where:.1f} s of {ref_run['seconds']:.1f} s"
            row = {"kind": kind, "at": at, "killed_rc": killed["rc"]}
            row["torn_json"] = torn_json(run_dir) if run_dir.exists() else []
            if killed["rc"] == -signal.SIGKILL:
                args = recovery(name, make_args(run_dir), run_dir)
                again = (run(args, _env(hook, out / name / f"point{i}.rec")) if args is not None
                         else {"rc": 0, "stderr": "complete before the kill: nothing to recover"})
                row["recovery_rc"] = again["rc"]
                row["recovery_tail"] = again["stderr"].strip().splitlines()[-3:]
                row["differs"] = same_end(name, outcome(name, run_dir), ref) if again["rc"] in (0, 1) else ["recovery failed"]
            else:
                row["differs"] = [] if killed["rc"] in (0, 1) else [f"exited {killed['rc']} before the kill"]
                row["not_killed"] = True
            row["survived"] = not row["torn_json"] and not row["differs"]
            rows.append(row)
            verdict = "survived" if row["survived"] else f"FAILED {row}"
            print(f"kill sweep: {name} point {i}: killed {at}: {verdict}", flush=True)
        report["commands"][name] = {"writes_traced": len(writes), "uninterrupted_s": round(ref_run["seconds"], 1),
                                    "reference": ref, "points": rows, "seconds": round(time.time() - t0, 1)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="An empty folder for the runs.")
    parser.add_argument("--points", type=int, default=4, help="Kill points per command.")
    parser.add_argument("--seed", type=int, default=None, help="Seed of the sample (default: from the clock, printed).")
    parser.add_argument("--only", default=None, help="Comma-separated commands (train,export,pipeline).")
    a = parser.parse_args()
    seed = a.seed if a.seed is not None else int(time.time()) % 100_000
    print(f"kill sweep: seed {seed}, {a.points} point(s) per command", flush=True)
    report = sweep(a.out, a.points, seed, a.only.split(",") if a.only else None)
    (a.out / "kill_sweep.json").write_text(json.dumps(report, indent=1))
    tried = sum(len(c["points"]) for c in report["commands"].values())
    survived = sum(r["survived"] for c in report["commands"].values() for r in c["points"])
    print(f"kill sweep: {survived} of {tried} kill points survived (seed {seed})")
    sys.exit(0 if survived == tried else 1)


if __name__ == "__main__":
    main()

"""The slow, real-process parts of the reliability tests, run as background jobs (conftest).

Each training here fine-tunes only the head on top of the session's trained InceptionV3 base
(saved as a no-top weights file and loaded through ``--weights PATH``), so it converges in a
few short epochs. The jobs record what they observed; tests/test_reliability.py asserts on it.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import ENV, IMG, Job, cli, scaled_timeout

HEAD_EPOCHS = 2

EXTRACT = """
import sys
import skinscan_edge
import tf_keras as k
from skinscan_edge.training.model import base_layers
from skinscan_edge.core.rundir import RunDir
model = RunDir.open(sys.argv[1]).load_model()
size = int(sys.argv[3])
base = k.applications.InceptionV3(include_top=False, weights=None, input_shape=(size, size, 3))
src = [layer for layer in base_layers(model) if layer.weights]
dst = [layer for layer in base.layers if layer.weights]
assert len(src) == len(dst), (len(src), len(dst))
for s, d in zip(src, dst):
    d.set_weights(s.get_weights())
base.save_weights(sys.argv[2])
"""


def start_reliability_jobs(demo_data: Path, run: Path, train: Job, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reliability")
    weights = Job(lambda: extract_base_weights(run, root / "inception_v3_notop.h5"), train)
    chain = Job(lambda: interrupt_kill_resume(demo_data, root / "chain", weights.result()), weights)
    multi = Job(lambda: multi_worker_runs(demo_data, root, weights.result()), weights)
    return {"base_weights": weights, "chain": chain, "multi_worker": multi}


def extract_base_weights(run: Path, out: Path) -> Path:
    """The trained model's InceptionV3 layers as a no-top weights file (what --weights takes)."""
    proc = subprocess.run([sys.executable, "-c", EXTRACT, str(run), str(out), str(IMG)], capture_output=True,
                          text=True, timeout=scaled_timeout(600), env=ENV)
    if proc.returncode != 0:
        raise RuntimeError(f"could not extract the base weights: {proc.stderr[-2000:]}")
    return out


#: ``python -m skinscan_edge`` with Ctrl-C's default meaning restored. A process started from a
#: non-interactive shell's background job (as CI may run us) inherits SIGINT *ignored*, and
#: Python keeps it ignored; a terminal's foreground process, which the Ctrl-C test stands for,
#: has the default handler.
AS_IN_A_TERMINAL = ("import signal, sys, runpy; signal.signal(signal.SIGINT, signal.default_int_handler); "
                    "sys.argv = ['skinscan-edge', *sys.argv[1:]]; runpy.run_module('skinscan_edge', run_name='__main__')")


def train_args(data: Path, out: Path, weights: Path, *extra) -> list[str]:
    return [sys.executable, "-c", AS_IN_A_TERMINAL, "train", "--data", str(data), "--out", str(out),
            "--img-size", str(IMG), "--weights", str(weights), "--epochs", str(HEAD_EPOCHS),
            "--fine-tune-epochs", "0", "--batch-size", "16", "--no-augment", "--seed", "3", *map(str, extra)]


def start(args: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**ENV, **env})


def epochs_logged(run: Path) -> list[int]:
    path = run / "history_head.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def interrupt_in_epoch(proc: subprocess.Popen, run: Path, epoch: int, sig: int) -> dict:
    """Send ``sig`` one second after train reports "head: epoch {epoch}/N" (its reporter, on stderr,
    as an epoch begins): in the middle of that epoch."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(rf"\bepoch {epoch}/\d+$", line.rstrip()):
            time.sleep(1.0)
            proc.send_signal(sig)
            break
    out, err = proc.communicate(timeout=scaled_timeout(300))
    return {"rc": proc.returncode, "stdout": out, "stderr": "".join(seen) + err,
            "status": json.loads((run / "status.json").read_text()),
            "model_exists": (run / "model.keras").exists(), "epochs_logged": epochs_logged(run)}


def interrupt_kill_resume(data: Path, run: Path, weights: Path) -> dict:
    """Under MirroredStrategy over two logical CPUs: Ctrl-C in epoch 2, the later commands on the
    incomplete run, --resume and SIGKILL in epoch 2, then --resume to the end."""
    mirrored = ("--strategy", "mirrored", "--cpu-replicas", 2)
    steps: dict = {"run": run}
    steps["sigint"] = interrupt_in_epoch(start(train_args(data, run, weights, *mirrored)), run, 2, signal.SIGINT)
    later = {"export": [run], "evaluate": [run], "benchmark": [run], "report": [run], "predict": [run, data / "Melanoma"]}
    steps["refused"] = {cmd: cli([cmd, *args], timeout=120) for cmd, args in later.items()}
    resume = start(train_args(data, run, weights, *mirrored, "--resume"))
    steps["sigkill"] = interrupt_in_epoch(resume, run, 2, signal.SIGKILL)
    steps["jsons_after_kill"] = {}
    for path in run.rglob("*.json"):
        try:
            json.loads(path.read_text())
            steps["jsons_after_kill"][str(path)] = "ok"
        except ValueError as e:
            steps["jsons_after_kill"][str(path)] = f"torn: {e}"
    final = subprocess.run(train_args(data, run, weights, *mirrored, "--resume"), capture_output=True, text=True,
                           timeout=scaled_timeout(900), env=ENV)
    steps["final"] = {"rc": final.returncode, "stdout": final.stdout, "stderr": final.stderr}
    return steps


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def multi_worker_runs(data: Path, root: Path, weights: Path) -> dict:
    """Two MultiWorkerMirroredStrategy workers on 127.0.0.1 (TF_CONFIG), same --out."""
    run = root / "multi"
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    procs = {f"worker{i}": start(train_args(data, run, weights, "--strategy", "multi-worker", "--worker-timeout", 600),
                                 TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
             for i in range(2)}
    out = {"run": run}
    try:
        for name, p in procs.items():
            stdout, stderr = p.communicate(timeout=scaled_timeout(1200))
            out[name] = {"rc": p.returncode, "stdout": stdout, "stderr": stderr}
    finally:
        for p in procs.values():
            p.kill()
    return out

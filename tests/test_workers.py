"""Worker processes (skinscan_edge/core/workers.py): results and errors come back, and no worker
outlives its parent, whether that parent is a small script or `export` killed during QAT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import ENV
from skinscan_edge.core.workers import Worker, WorkerDied, call


def test_result_error_and_death_come_back():
    assert call(pow, 2, 10) == 1024
    with pytest.raises(ValueError, match="invalid literal"):
        call(int, "x")
    worker = Worker(os._exit, 3)
    with pytest.raises(WorkerDied, match="exit code 3"):
        worker.result()
    assert not _gone_within([worker.pid], 0.1)


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids of ``pids`` still running (zombies count as gone) after up to ``seconds``."""
    deadline = time.time() + seconds
    while True:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive or time.time() >= deadline:
            return alive
        time.sleep(0.1)


def _rss_over_400_mib(proc: psutil.Process) -> bool:
    try:
        return proc.memory_info().rss > 400 * 2**20
    except psutil.NoSuchProcess:
        return False


PARENT = """
import sys, time
from skinscan_edge.core.workers import Worker
w = Worker(time.sleep, 600)
print(w.pid, flush=True)
w.result()
"""


def test_a_worker_dies_with_its_killed_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=ENV)
    worker = int(parent.stdout.readline())
    assert psutil.Process(worker).ppid() == parent.pid
    parent.kill()
    parent.wait()
    assert not _gone_within([worker], 5), "the worker outlived its SIGKILLed parent"


def test_no_worker_is_left_when_export_is_killed_during_qat(run_copy, tmp_path):
    """The issue's orphan: `export` SIGKILLed (as by the OOM killer) while QAT runs in its second
    process; every process it started must be gone within a few seconds."""
    run = run_copy.root
    log = tmp_path / "export.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "skinscan_edge", "export", str(run), "--precision", "qat",
                                 "--jobs", "2", "--calib-samples", "8", "--qat-epochs", "50"],
                                stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    said, deadline, workers, pids = "", time.time() + 600, [], []
    try:
        # QAT is under way once its worker has imported TensorFlow and loaded the model.
        while time.time() < deadline and proc.poll() is None:
            said = log.read_text()
            workers = psutil.Process(proc.pid).children(recursive=True)
            pids = [w.pid for w in workers]
            if "tflite-qat-int8 started in a second process" in said and any(map(_rss_over_400_mib, workers)):
                break
            time.sleep(0.2)
        assert workers and proc.poll() is None, f"QAT never got under way: {said[-2000:]}"
        proc.kill()
        proc.wait()
        left = _gone_within(pids, 5)
        assert not left, f"workers left 5 s after their parent's death: {left}"
        manifest = json.loads((Path(run) / "exports" / "manifest.json").read_text())
        assert manifest["state"] == "running"  # killed: nothing recorded it as finished
    finally:  # what this test started, should the check fail
        proc.kill()
        for pid in _gone_within(pids, 0):
            os.kill(pid, signal.SIGKILL)

"""A full disk at many points of train, export, evaluate, report and predict (tests/fault_points.py).

Minutes of work and a tmpfs mount (root): run by ``make test-faults`` (which .ci/run calls), skipped
with that reason in a plain ``make test``. The sample of injection points is chosen by a seed that
the test prints (``FAULT_SEED``, default 0); ``FAULT_POINTS`` sets how many per command,
``FAULT_<COMMAND>_POINTS`` one command's (``FAULT_BUNDLE_POINTS``), ``FAULT_JOBS`` how many commands
are swept at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_points import COMMANDS

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(os.environ.get("SKINSCAN_FAULTS") != "1",
                                reason="fault injection runs in `make test-faults` (minutes, needs root for a tmpfs)")


@pytest.mark.timeout(0)  # the sweep's cost is set by FAULT_POINTS; the make target's time is measured
def test_every_injection_point_exits_cleanly_keeps_run_files_readable_and_reruns_to_the_same_result(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs .ci/run as root)")
    seed = os.environ.get("FAULT_SEED", "0")
    points = ["--points", os.environ.get("FAULT_POINTS", "30")]
    # FAULT_TRAIN_POINTS, FAULT_EXPORT_POINTS, ...: one command's number (the slow ones want fewer).
    defaults = {"train": "8", "export": "6"}
    for name in COMMANDS:
        n = os.environ.get(f"FAULT_{name.upper()}_POINTS", defaults.get(name))
        if n:
            points += [f"--{name}-points", n]
    jobs = os.environ.get("FAULT_JOBS", "1")
    print(f"fault injection seed {seed}: {' '.join(points)}, {jobs} command(s) at once")
    # Not captured: each command's line reaches the log as it ends, so a run stopped by CI's time
    # budget still shows what it had proven (`make test-faults` runs pytest with -s).
    done = subprocess.run([sys.executable, str(HERE / "fault_points.py"), str(tmp_path), *points,
                           "--seed", seed, "--jobs", jobs])
    assert done.returncode == 0, "fault_points.py failed (its output is above)"
    report = json.loads((tmp_path / "fault_points.json").read_text())
    failed = {name: c["failures"] for name, c in report["commands"].items() if c["failures"]}
    assert not failed, json.dumps(failed, indent=1)[:6000]
    assert report["ran_out_of_disk"] >= report["tried"] // 3, "most sizes did not reach the disk limit"
    print(f"{report['survived']}/{report['tried']} injection points survived; "
          f"{report['ran_out_of_disk']} ran out of disk")

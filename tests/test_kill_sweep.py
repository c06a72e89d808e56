"""The kill sweep (tests/kill_points.py): train, export and pipeline SIGKILLed at a seeded sample of
moments, at traced writes and at times, then resumed to the uninterrupted result.

Minutes of work: run by ``make test-kills`` (which .ci/run calls), skipped with that reason in a
plain ``make test``. ``KILL_SEED`` (default 0) chooses the sample, ``KILL_POINTS`` how many points
per command, ``KILL_ONLY`` which commands (comma-separated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(os.environ.get("SKINSCAN_KILLS") != "1",
                                reason="the kill sweep runs in `make test-kills` (minutes)")


@pytest.mark.timeout(0)  # the sweep's cost is set by KILL_POINTS; the make target's time is measured
def test_every_kill_point_resumes_to_the_uninterrupted_result(tmp_path):
    seed, points = os.environ.get("KILL_SEED", "0"), os.environ.get("KILL_POINTS", "4")
    only = ["--only", os.environ["KILL_ONLY"]] if os.environ.get("KILL_ONLY") else []
    print(f"kill sweep seed {seed}, {points} points per command")
    # Not captured: each point's line reaches the log as it ends (`make test-kills` runs pytest with -s).
    done = subprocess.run([sys.executable, str(HERE / "kill_points.py"), str(tmp_path), "--points", points,
                           "--seed", seed, *only])
    report = json.loads((tmp_path / "kill_sweep.json").read_text())
    rows = [(name, r) for name, c in report["commands"].items() for r in c["points"]]
    assert rows and all(r["survived"] for _, r in rows), json.dumps([(n, r) for n, r in rows if not r["survived"]],
                                                                     indent=1)[:6000]
    assert sum(not r.get("not_killed") for _, r in rows) >= len(rows) // 2, "most points were not reached"
    assert done.returncode == 0, "kill_points.py failed (its output is above)"
    print(f"{len(rows)} kill points, all resumed to the uninterrupted result")

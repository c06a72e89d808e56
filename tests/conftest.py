"""Session fixtures: the synthetic data, one trained run, one export of it, and the slow
training jobs of the reliability tests.

The slow work runs as real ``skinscan-edge`` processes in the background, started when the
session starts (training) or as soon as what they need exists (export; the Ctrl-C/SIGKILL/
--resume chain and the distributed runs, which need the trained base). Tests are ordered so
that the ones that need none of it run first, while it trains: on 2 cores most of this work is
single-threaded (imports, graph tracing, the TFLite converter), so overlapping it roughly
halves the suite's wall time. A test that needs a job's result waits for it.

Everything runs at InceptionV3's minimum size (75 px).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import skinscan_edge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

IMG = 75
FINE_TUNE_EPOCHS = 8
#: The session model's training settings (the pipeline tests reuse them to find it finished).
TRAIN_ARGS = ["--img-size", IMG, "--epochs", 0, "--fine-tune-epochs", FINE_TUNE_EPOCHS, "--weights", "none",
              "--unfreeze-from", "input", "--batch-size", 8, "--fine-tune-lr", "1e-3", "--no-augment", "--seed", 7]
#: The session exports' settings, likewise.
EXPORT_ARGS = ["--calib-samples", 48, "--qat-epochs", 1]
#: The pipeline test's stage settings: a lenient gate and a short benchmark.
PIPELINE_ARGS = ["--bench-threads", 1, "--bench-batch", "1,2", "--bench-min-time", 0.05,
                 "--max-accuracy-drop", 100, "--max-recall-drop", 100]
#: Fixtures whose values come from the background jobs: tests using them run last.
SLOW_FIXTURES = {"train_result", "trained_run", "export_result", "exported_run", "run_copy", "base_weights",
                 "chain", "multi_worker", "piped", "interrupted_export", "toy_format", "wrecked"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def invoke(args: list):
    """The CLI in this process (typer's CliRunner)."""
    from typer.testing import CliRunner

    from skinscan_edge.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def scaled_timeout(base_s: float) -> float:
    """A wall-clock limit that grows with the host's load: ``base_s`` on an idle machine, k times
    it when the 1-minute load average is k times the CPU count (a shared CI host or dev box)."""
    return base_s * max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def cli(args: list, timeout: float = 900, env: dict | None = None, python: bool = False) -> SimpleNamespace:
    """The CLI as a separate ``skinscan-edge`` process (``python=True``: ``args`` is a whole
    command line instead): exit_code and output (stdout + stderr).

    ``timeout`` bounds the CPU seconds the command and its children use, not wall time: a busy
    host (CI shares its machine) slows a command down without making it use more CPU, so a fixed
    wall limit fails healthy commands there (the session export once ran past 900 s beside
    ``stress-ng --cpu 4``), while a command that really runs away is still stopped. A command
    that hangs without using CPU is stopped at four times ``timeout`` of wall time, scaled by
    the load. A stopped command returns exit code 124 and says why on stderr."""
    import psutil

    argv = list(map(str, args)) if python else [sys.executable, "-m", "skinscan_edge", *map(str, args)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, **(env or {})})
    ps, start, used, out = psutil.Process(proc.pid), time.monotonic(), {}, {}
    reader = threading.Thread(target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate())))
    reader.start()
    while reader.is_alive():
        reader.join(2)
        try:
            for p in [ps, *ps.children(recursive=True)]:
                t = p.cpu_times()
                used[p.pid] = t.user + t.system  # the last sample of each, exited ones included
        except psutil.Error:
            pass
        wall_cap = scaled_timeout(4 * timeout)
        if reader.is_alive() and (sum(used.values()) > timeout or time.monotonic() - start > wall_cap):
            for p in [ps, *ps.children(recursive=True)] if ps.is_running() else []:
                p.kill()
            reader.join()
            out["stderr"] = out.get("stderr", "") + (f"\nstopped by the test: used more than {timeout:.0f} CPU s "
                                                     f"(or {wall_cap:.0f} s of wall time)")
            return SimpleNamespace(exit_code=124, output=out.get("stdout", "") + out["stderr"],
                                   stdout=out.get("stdout", ""), stderr=out["stderr"])
    return SimpleNamespace(exit_code=proc.returncode, output=out["stdout"] + out["stderr"], stdout=out["stdout"],
                           stderr=out["stderr"])


class Job:
    """Work running in a background thread; ``result()`` waits for it (and re-raises its error)."""

    def __init__(self, fn, *after: "Job"):
        self._value, self._error = None, None
        self._thread = threading.Thread(target=self._run, args=(fn, after), daemon=True)
        self._thread.start()

    def _run(self, fn, after):
        try:
            for job in after:
                job.result()
            self._value = fn()
        except BaseException as e:  # noqa: BLE001  (handed to the waiting test)
            self._error = e

    def result(self):
        """The job's value. No wall limit of its own: each command a job runs is bounded by the
        CPU time it uses (``cli``), so waiting ends however busy the host is."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from skinscan_edge.data.demo import write_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(root, per_class=24, size=96, seed=0)
    return root


@pytest.fixture(scope="session", autouse=True)
def jobs(request, tmp_path_factory):
    """Start the background work (when a selected test needs it); see the module docstring.

    At the end of the session, whatever is still running is stopped."""
    import psutil

    if not any(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) for item in request.session.items):
        yield {}
        return
    yield _start_jobs(request.getfixturevalue("demo_data"), tmp_path_factory)
    for child in psutil.Process().children(recursive=True):
        child.kill()


def _start_jobs(demo_data: Path, tmp_path_factory) -> dict:
    from reliability_jobs import start_reliability_jobs

    run = tmp_path_factory.mktemp("runs") / "run"
    train = Job(lambda: cli(["train", "--data", demo_data, "--out", run, *TRAIN_ARGS]))
    export = Job(lambda: cli(["export", run, "--int8", "--fp16", "--dynamic", "--qat", *EXPORT_ARGS]), train)
    piped = Job(lambda: _pipeline_on_a_copy(run, demo_data, tmp_path_factory.mktemp("pipe") / "run"), export)
    from export_jobs import interrupted_export, toy_format

    image = next((demo_data / "Melanoma").iterdir())
    interrupted = Job(lambda: interrupted_export(run, tmp_path_factory.mktemp("interrupted"), image), train)
    toy = Job(lambda: toy_format(run, tmp_path_factory.mktemp("toy"), image), export)
    from test_explain import wrecked_run

    wreck = Job(lambda: wrecked_run(run, tmp_path_factory.mktemp("wrecked") / "run"), train)
    out = {"run": run, "train": train, "export": export, "piped": piped, "interrupted": interrupted, "toy": toy,
           "wreck": wreck}
    out.update(start_reliability_jobs(demo_data, run, train, tmp_path_factory))
    return out


def pipeline_args(data, out) -> list:
    return ["pipeline", "--data", data, "--out", out, *TRAIN_ARGS, *EXPORT_ARGS, *PIPELINE_ARGS]


def _pipeline_on_a_copy(run: Path, data: Path, dst: Path):
    """`pipeline` with the session's settings on a copy of its exported run: train and export
    must be found finished; evaluate, benchmark and report run."""
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("tensorboard", "backup", "checkpoints", "evaluate*",
                                                            "benchmark*"))
    return dst, cli(pipeline_args(data, dst))


@pytest.fixture(scope="session")
def train_result(jobs):
    return jobs["run"], jobs["train"].result()


@pytest.fixture(scope="session")
def trained_run(train_result):
    from skinscan_edge.core.rundir import RunDir

    out, result = train_result
    assert result.exit_code == 0, result.output
    return RunDir.open(out)


@pytest.fixture(scope="session")
def export_result(jobs, trained_run):
    return trained_run, jobs["export"].result()


@pytest.fixture(scope="session")
def exported_run(export_result):
    run, result = export_result
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="session")
def interrupted_export(jobs):
    return jobs["interrupted"].result()


@pytest.fixture(scope="session")
def toy_format(jobs):
    return jobs["toy"].result()


@pytest.fixture(scope="session")
def piped(jobs, exported_run):
    """(run, result) of the background job: `pipeline` on a copy of the session's run."""
    return jobs["piped"].result()


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run (for tests that damage it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run.root, dst, ignore=shutil.ignore_patterns("tensorboard", "backup", "checkpoints", "exports"))
    from skinscan_edge.core.rundir import RunDir

    return RunDir(dst)


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="Only the tests that need no trained model (a quick check while developing).")


def pytest_collection_modifyitems(config, items):
    """Tests that need no background result first, so they run while it is made."""
    slow = [item for item in items if SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if config.getoption("--fast"):
        for item in slow:
            items.remove(item)
        config.hook.pytest_deselected(items=slow)
        return
    items.sort(key=lambda item: item in slow)


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _not_verbose(monkeypatch):
    """`--verbose` (set in-process by a CLI test through CliRunner) lives in the environment; every
    test starts without it, so one test's --verbose never adds tracebacks to another's output."""
    from skinscan_edge.core.tf import VERBOSE_ENV

    monkeypatch.delenv(VERBOSE_ENV, raising=False)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item, settings):
    """pytest-timeout's wall limit (pyproject's ``--timeout``, or a test's mark) scaled by the
    host's load when the test starts (``scaled_timeout``): on a shared CI host a healthy test must
    not be cut off, and a hung one is still stopped. Handed to pytest-timeout's own timer."""
    import pytest_timeout

    return pytest_timeout.pytest_timeout_set_timer(item, settings._replace(timeout=scaled_timeout(settings.timeout)))

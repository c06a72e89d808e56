"""Issue 20: the run directory's guarantees.

1. A changed data folder makes training due: the scan's fingerprint (relative paths, sizes,
   modification times) is kept in config.json; ``pipeline`` says what changed and trains again,
   or keeps the model with ``--keep-model`` and says so; ``evaluate`` and the report warn.
2. One writer per run: RUN/.lock (``fcntl.flock``), refused with one line; released by the
   kernel when its holder dies, so a ``kill -9`` leaves nothing stale.

The lock is held by a real second process (a few lines of Python that take it and wait), not by
a whole training: the refusal happens before any work, so what holds the lock does not matter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ENV, cli, invoke, pipeline_args, scaled_timeout
from skinscan_edge.core.config import TrainConfig
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.data.fingerprint import FILES_NAME, data_change, data_fingerprint, diff, save_file_list
from skinscan_edge.stages import KEPT, PipelineConfig, stage_is_current
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.files import sha256_file, write_json
from skinscan_edge.core.runlock import LOCK_NAME, run_lock

REFUSAL = re.compile(r"^error: (?P<run>.+) is in use by pid (?P<pid>\d+) \(skinscan-edge (?P<cmd>[a-z]+), "
                     r"started \d\d:\d\d\); wait for it or pick another --out$")
TF_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")  # TensorFlow's C++ start-up lines


def _png(path: Path, value: int, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    for c, cls in enumerate(("a", "b")):
        for i in range(3):
            _png(root / cls / f"{i}.png", 40 * c + i)
    _png(root / "a" / ".hidden.png", 1)  # the scan never reads it, so it is not part of the data
    return root


# --- 1. the data fingerprint ------------------------------------------------------------------
CHANGES = {
    "added": (lambda d: _png(d / "b" / "new.png", 200), (1, 0, 0)),
    "removed": (lambda d: (d / "a" / "1.png").unlink(), (0, 1, 0)),
    "modified": (lambda d: _png(d / "a" / "2.png", 99, size=13), (0, 0, 1)),
    "touched": (lambda d: os.utime(d / "b" / "0.png", ns=(10**9, 10**9)), (0, 0, 1)),  # same bytes, new mtime
    "renamed": (lambda d: (d / "a" / "0.png").rename(d / "a" / "zero.png"), (1, 1, 0)),
    "every class removed": (lambda d: [shutil.rmtree(d / c) for c in ("a", "b")], (0, 6, 0)),
}
NOT_CHANGES = {
    "a hidden file": lambda d: (d / "b" / ".DS_Store").write_bytes(b"finder"),
    "a file beside the class folders": lambda d: (d / "README.txt").write_text("notes"),
}


@pytest.mark.parametrize("change", [c for c in CHANGES if c != "every class removed"])
def test_the_fingerprint_diff_counts_what_was_added_removed_and_modified(data, change):
    make, (added, removed, modified) = CHANGES[change]
    before = data_fingerprint(data)
    make(data)
    after = data_fingerprint(data)
    assert after.sha256 != before.sha256
    found = diff(before.files, after.files)
    assert (len(found.added), len(found.removed), len(found.modified)) == (added, removed, modified)
    assert found.describe() == f"{added} added, {removed} removed, {modified} modified"


@pytest.mark.parametrize("change", NOT_CHANGES)
def test_files_the_scan_does_not_read_are_not_part_of_the_fingerprint(data, change):
    before = data_fingerprint(data)
    NOT_CHANGES[change](data)
    assert data_fingerprint(data).sha256 == before.sha256


def test_the_listing_keeps_pathlib_order_the_split_depends_on(tmp_path):
    """list_files replaced sorted(rglob) for speed; the order decides the seeded split, so it must not move."""
    from skinscan_edge.data.folder import _class_dirs, list_files

    for rel in ("a/x.png", "a/a-b/y.png", "a/a/z.png", "a/a.b/w.png", "a/B.png", "a/.h/v.png", "b/sub/deep/u.png",
                "b/10.png", "b/9.png"):
        _png(tmp_path / rel, 3)
    expected = [f.relative_to(tmp_path).as_posix() for c in _class_dirs(tmp_path) for f in sorted(c.rglob("*"))
                if f.is_file() and not f.name.startswith(".")]
    assert [rel for _, rel, _ in list_files(tmp_path).files] == expected


def _finished_run(root: Path, data: Path) -> RunDir:
    """A finished run's files that decide whether training is due (no training needed for that)."""
    run = RunDir(root)
    fp = data_fingerprint(data)
    cfg = TrainConfig(data=str(data), out=str(root), weights="none", img_size=75)
    write_json(run.config_path, {"train": cfg.to_dict(), "data_root": str(data.resolve()),
                                 "data_fingerprint": fp.summary()})
    save_file_list(run, fp)
    run.set_status("complete", test_accuracy=0.5)
    run.model_path.write_bytes(b"a model")
    return run


@pytest.mark.parametrize("change", CHANGES)
def test_a_changed_data_folder_makes_training_due_or_is_kept_with_a_warning(tmp_path, data, change):
    run = _finished_run(tmp_path / "run", data)
    cfg = PipelineConfig(train=TrainConfig.from_dict(run.config()["train"]))
    assert stage_is_current("train", cfg, run) == "trained with the same settings"
    make, (added, removed, modified) = CHANGES[change]
    make(data)
    assert stage_is_current("train", cfg, run) is None  # due: the pipeline trains again
    line = f"{added} added, {removed} removed, {modified} modified"
    assert data_change(run).describe() == line  # what evaluate and the report compare (config's data_root)
    cfg.keep_model = True
    assert stage_is_current("train", cfg, run) == f"{KEPT}model trained on an older copy of the data: {line}"


def test_a_run_without_its_file_list_still_sees_the_change(tmp_path, data):
    run = _finished_run(tmp_path / "run", data)
    (run.root / FILES_NAME).unlink()
    assert data_change(run) is None
    _png(data / "a" / "new.png", 7)
    change = data_change(run)
    assert change is not None and not change.counted and "changed" in change.describe()


@pytest.fixture
def kept_run(piped, demo_data, tmp_path):
    """A copy of the session's piped run (its models hard-linked, to save the copy), trained, as far as it knows, on a copy of the session data (copy2 keeps the mtimes, so the
    fingerprint is the same) to which one image is then added."""
    run, _ = piped
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    dst = tmp_path / "run"
    big = (".keras", ".tflite", ".onnx")  # linked: nothing here writes them; the rest is copied
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(LOCK_NAME, "tensorboard", "backup"),
                    copy_function=lambda s, d: os.link(s, d) if s.endswith(big) else shutil.copy2(s, d))
    config = json.loads((dst / "config.json").read_text())
    assert data_fingerprint(data).sha256 == config["data_fingerprint"]["sha256"]
    config["train"]["data"], config["data_root"] = str(data), str(data.resolve())
    write_json(dst / "config.json", config)  # atomic: the session run's own file is untouched
    shutil.copy2(next((data / "Melanoma").iterdir()), data / "Melanoma" / "one_more.jpg")
    return dst, data


def test_keep_model_keeps_the_model_and_says_so_in_the_summary_the_report_and_evaluate(kept_run):
    run, data = kept_run
    model = sha256_file(run / "model.keras")
    warning = "model trained on an older copy of the data: 1 added, 0 removed, 0 modified"
    result = invoke(pipeline_args(data, run) + ["--keep-model"])
    assert result.exit_code == 0, result.output
    state = json.loads((run / "pipeline.json").read_text())["stages"]
    assert state["train"]["state"] == "skipped" and state["train"]["warning"] == warning
    assert f"warning: train: {warning}" in result.output
    assert sha256_file(run / "model.keras") == model
    assert warning in (run / "reports" / "index.html").read_text()
    evaluated = invoke(["evaluate", run, "--formats", "tflite-fp32", "--max-accuracy-drop", 100,
                        "--max-recall-drop", 100])
    assert f"warning: {warning}; evaluating the split saved at training" in evaluated.output, evaluated.output


# --- 2. one writer per run ------------------------------------------------------------------------
HOLDER = """
import json, sys
from pathlib import Path
from skinscan_edge.core.runlock import run_lock
run, data = Path(sys.argv[1]), sys.argv[2]
with run_lock(run, "train", create=True):  # what `train` holds; then a run in the middle of training
    (run / "config.json").write_text(json.dumps({"train": {"data": data, "out": str(run), "weights": "none",
                                                           "img_size": 75}}))
    (run / "status.json").write_text(json.dumps({"state": "incomplete", "phase": "fine_tune"}))
    (run / "first.txt").write_text("started")
    print("held", flush=True)
    sys.stdin.readline()  # hold until the test says so
    (run / "first.txt").write_text("finished")
"""


def _hold(run: Path, data: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run), str(data)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _ours(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.strip() and not TF_LOG.match(ln)]


def test_a_second_writer_is_refused_with_one_line_and_the_first_finishes_intact(tmp_path, data):
    run = tmp_path / "run"
    first = _hold(run, data)
    config = (run / "config.json").read_bytes()
    try:  # the case: a second terminal, or a scheduler's retry, resumes the run being trained
        second = cli(["train", "--data", data, "--out", run, "--resume"], timeout=300)
        assert second.exit_code == 2, second.output
        (line,) = _ours(second.output)
        m = REFUSAL.match(line)
        assert m and m["run"] == str(run) and int(m["pid"]) == first.pid and m["cmd"] == "train", line
        report = invoke(["report", run])  # a reader is told the run is being written, not "interrupted"
        assert report.exit_code == 2 and REFUSAL.match(report.output.strip()), report.output
    finally:
        first.communicate("go\n", timeout=scaled_timeout(60))
    assert first.returncode == 0
    assert (run / "first.txt").read_text() == "finished" and (run / "config.json").read_bytes() == config
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "config.json", "first.txt", "status.json"]


def test_every_writing_command_takes_the_lock(tmp_path, data):
    from skinscan_edge.benchmark.harness import BenchmarkConfig, run_benchmark
    from skinscan_edge.evaluation.evaluate import EvaluateConfig, evaluate_run
    from skinscan_edge.exporters.run import ExportConfig, export_run
    from skinscan_edge.stages import run_pipeline
    from skinscan_edge.report.page import build_report

    run = tmp_path / "run"
    calls = {
        "export": lambda: export_run(RunDir(run), ExportConfig(precisions=["fp32"])),
        "evaluate": lambda: evaluate_run(RunDir(run), EvaluateConfig()),
        "benchmark": lambda: run_benchmark(run, BenchmarkConfig()),
        "report": lambda: build_report(RunDir(run)),
        "pipeline": lambda: run_pipeline(PipelineConfig(train=TrainConfig(data=str(data), out=str(run), weights="none",
                                                                          img_size=75))),
    }
    first = _hold(run, data)
    try:
        for name, call in calls.items():
            with pytest.raises(SkinscanError) as e:
                call()
            assert REFUSAL.match(f"error: {e.value}") and f"pid {first.pid} " in str(e.value), (name, str(e.value))
    finally:
        first.communicate("go\n", timeout=scaled_timeout(60))


def test_kill_9_of_the_holder_lets_the_next_command_run_at_once(tmp_path, data):
    run = tmp_path / "run"
    first = _hold(run, data)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=scaled_timeout(30))
    for name in ("first.txt", "config.json", "status.json"):  # what it wrote; the lock file stays, as after a real kill
        (run / name).unlink()
    t0 = time.monotonic()
    with run_lock(run, "export"):  # no wait and no error: the kernel released the dead holder's lock
        pass
    assert time.monotonic() - t0 < 5
    (tmp_path / "map.json").write_text(json.dumps({"a": "A", "b": "A"}))
    after = invoke(["train", "--data", data, "--out", run, "--labels", tmp_path / "map.json", "--weights", "none",
                    "--img-size", 75])  # gets past the lock to its own check of the labels
    assert after.exit_code == 2 and after.output.strip().endswith("each class needs its own label"), after.output


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    probe = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
             "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")

    def seen_from_outside() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(tmp_path / LOCK_NAME)], capture_output=True,
                              text=True, timeout=scaled_timeout(60)).stdout.strip()

    with run_lock(tmp_path, "pipeline"):
        with run_lock(tmp_path, "train"):  # the pipeline's stages take it again
            assert seen_from_outside() == "held"
        assert seen_from_outside() == "held"  # the outer holder still has it
    assert seen_from_outside() == "free"


def test_a_failed_first_command_leaves_no_run_folder_behind(tmp_path):
    run = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError):
        with run_lock(run, "train", create=True):
            raise RuntimeError("bad data")
    assert not run.exists()


def test_what_a_killed_writer_left_half_written_goes_when_the_next_writer_takes_the_lock(tmp_path, data):
    """A SIGKILL runs no cleanup: the kill sweep (tests/kill_points.py, seed 11) killed `train` just
    before split.json's rename, and the same `train` again was refused ("already holds a run")
    because of the orphan `.split.json.*.tmp`. The next holder of the lock removes such leftovers."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").mkdir()
    dead = [run / ".split.json.4lvfrebw.tmp", run / "checkpoints" / ".phase1_end.77.tmp.weights.h5",
            run / ".model.tmp.keras", run / "model_int8.tmp.onnx"]
    for p in dead:
        p.write_bytes(b"half")
    (run / "skipped.json").write_text("[]")
    (run / "notes.tmp").write_text("a user's file: no leading dot, not ours")
    with run_lock(run, "train"):
        pass
    assert not [p for p in dead if p.exists()]
    assert (run / "skipped.json").exists() and (run / "notes.tmp").exists()
    # before the lock, train's own check reads the folder: a leftover is not "a run" either
    from skinscan_edge.training.fine_tune import _refuse_a_finished_out

    killed = tmp_path / "killed"  # what the kill before split.json's rename left
    killed.mkdir()
    for name in (LOCK_NAME, "skipped.json", "duplicates.json", ".split.json.x.tmp"):
        (killed / name).write_bytes(b"{}")
    _refuse_a_finished_out(TrainConfig(data=str(data), out=str(killed)), RunDir(killed), True, False)
    (killed / "model.keras").write_bytes(b"a model")
    with pytest.raises(SkinscanError, match="already holds a run"):
        _refuse_a_finished_out(TrainConfig(data=str(data), out=str(killed)), RunDir(killed), True, False)

"""Issue 6: crash safety (Ctrl-C, SIGKILL, --resume), atomic files, safe loading, distributed
training and streamed evaluation.

The real-process trainings run as background jobs (tests/reliability_jobs.py, started by
conftest as soon as the session's model is trained); these tests assert on what they observed.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import IMG, invoke
from reliability_jobs import HEAD_EPOCHS

CHANCE = 0.10


@pytest.fixture(scope="session")
def chain(jobs):
    return jobs["chain"].result()


@pytest.fixture(scope="session")
def multi_worker(jobs):
    return jobs["multi_worker"].result()


@pytest.fixture(scope="session")
def base_weights(jobs):
    return jobs["base_weights"].result()


def status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def accuracy(run: Path) -> float:
    return json.loads((run / "reports/keras_test_report.json").read_text())["accuracy"]


def test_ctrl_c_stops_cleanly_and_says_what_was_saved(chain):
    step = chain["sigint"]
    assert step["rc"] == 130, step["stdout"] + step["stderr"]
    last = step["stderr"].strip().splitlines()[-1]
    assert last.startswith("stopped: interrupted during head;"), step["stderr"]
    assert "completed epoch(s)" in last and "--resume" in last and "Traceback" not in step["stderr"]
    assert step["status"]["state"] == "incomplete" and not step["model_exists"]


def test_an_incomplete_run_is_refused_by_every_later_command(chain):
    for cmd, result in chain["refused"].items():
        assert result.exit_code == 2, (cmd, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "incomplete" in lines[0] and "--resume" in lines[0], (cmd, result.output)


def test_sigkill_mid_epoch_leaves_no_torn_file(chain):
    step = chain["sigkill"]
    assert step["rc"] == -9, step["stdout"] + step["stderr"]
    assert not re.search(r"\bepoch 1/", step["stderr"]), "the first resume restarted from the first epoch"
    assert step["status"]["state"] == "incomplete" and not step["model_exists"]
    assert chain["jsons_after_kill"] and set(chain["jsons_after_kill"].values()) == {"ok"}


def test_resume_continues_from_the_last_completed_epoch_and_ends_as_well_as_an_uninterrupted_run(chain, multi_worker):
    final, run = chain["final"], chain["run"]
    assert chain["sigint"]["epochs_logged"] == chain["sigkill"]["epochs_logged"] == [0]
    assert final["rc"] == 0, final["stdout"] + final["stderr"]
    assert f"epoch {HEAD_EPOCHS}/{HEAD_EPOCHS} done" in final["stderr"]
    assert not re.search(r"\bepoch 1/", final["stderr"]), "resume restarted from the first epoch"
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 1 + HEAD_EPOCHS  # each epoch once, though three processes trained
    # The uninterrupted reference: the same training (data, seed, settings, global batch over two
    # replicas), never stopped; it ran under multi-worker, the chain under mirrored.
    reference = accuracy(multi_worker["run"])
    assert accuracy(run) >= reference - 0.1, (accuracy(run), reference)


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    from skinscan_edge.core import rundir

    target = tmp_path / "report.json"
    rundir.write_json(target, {"version": 1})

    def crash(fd):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(rundir.os, "fsync", crash)
    with pytest.raises(OSError):
        rundir.write_json(target, {"version": 2, "big": "x" * 100_000})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_mirrored_over_two_cpu_devices_converges(chain):
    """The chain above trained under MirroredStrategy (two logical CPU devices) throughout."""
    run = chain["run"]
    config = json.loads((run / "config.json").read_text())
    assert config["distribution"] == {"strategy": "mirrored", "replicas": 2, "workers": 1, "written_by": "local"}
    assert "mirrored: 2 replica(s) on 1 worker(s)" in chain["final"]["stderr"]
    _assert_converged(run)


def test_multi_worker_on_localhost_converges_and_only_the_chief_writes(multi_worker):
    run = multi_worker["run"]
    for name in ("worker0", "worker1"):
        proc = multi_worker[name]
        assert proc["rc"] == 0, f"{name}:\n{proc['stdout']}\n{proc['stderr']}"
    assert "worker:1: done; the chief wrote the run" in multi_worker["worker1"]["stdout"]
    assert "run written to" in multi_worker["worker0"]["stdout"]
    assert "run written to" not in multi_worker["worker1"]["stdout"]
    config = json.loads((run / "config.json").read_text())
    assert config["distribution"] == {"strategy": "multi-worker", "replicas": 2, "workers": 2,
                                      "written_by": "worker:0"}
    assert not [p for p in run.rglob("*") if "workertemp" in p.name], "a worker's temporary files were left"
    _assert_converged(run)


def _assert_converged(run: Path) -> None:
    assert status(run)["state"] == "complete"
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == HEAD_EPOCHS and float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert accuracy(run) > 3 * CHANCE, accuracy(run)


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not a valid cluster spec"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "is not in the cluster"),
])
def test_bad_tf_config_is_one_line(tf_config, message):
    from skinscan_edge.training.distribute import parse_tf_config
    from skinscan_edge.core.errors import SkinscanError

    with pytest.raises(SkinscanError, match=message):
        parse_tf_config(tf_config)


@pytest.mark.parametrize("spec, chief", [
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
])
def test_the_chief_is_chosen_as_tensorflow_does(spec, chief):
    from skinscan_edge.training.distribute import parse_tf_config

    assert parse_tf_config(json.dumps(spec))["is_chief"] is chief


# --- safe loading -----------------------------------------------------------------------------
def test_a_model_file_carrying_code_is_refused_by_safe_mode(tmp_path):
    """A .keras file whose Lambda layer holds Python bytecode must not be deserialized."""
    import tf_keras as k

    from skinscan_edge.core.errors import SkinscanError
    from skinscan_edge.core.rundir import load_keras_model

    inp = k.Input((4,))
    model = k.Model(inp, k.layers.Lambda(lambda x: x * 2)(inp))
    path = tmp_path / "model.keras"
    model.save(str(path))
    with pytest.raises(SkinscanError, match="cannot be loaded safely"):
        load_keras_model(path)


def test_weights_of_another_architecture_are_a_one_line_error(tmp_path, demo_data):
    import tf_keras as k

    other = k.Sequential([k.Input((8,)), k.layers.Dense(3)])
    weights = tmp_path / "not_inception.h5"
    other.save_weights(str(weights))
    result = invoke(["train", "--data", demo_data, "--out", tmp_path / "run", "--img-size", IMG,
                     "--weights", weights])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is not a valid InceptionV3 no-top weights file" in lines[0]
    assert not (tmp_path / "run" / "model.keras").exists()


# --- streamed evaluation: memory stays flat as the split grows -----------------------------------
def _run_with_test_split_times(exported_run, dst: Path, times: int):
    import shutil

    from skinscan_edge.core.rundir import RunDir

    dst.mkdir()
    for name in ("model.keras", "labels.txt", "config.json", "status.json"):
        (dst / name).symlink_to(exported_run.root / name)
    (dst / "exports").mkdir()
    shutil.copy(exported_run.manifest_path, dst / "exports" / "manifest.json")
    (dst / "exports" / "model_int8.tflite").symlink_to(exported_run.exports / "model_int8.tflite")
    split = json.loads(exported_run.split_path.read_text())
    split["splits"]["test"] = split["splits"]["test"] * times
    (dst / "split.json").write_text(json.dumps(split))
    return RunDir(dst)


def test_evaluate_peak_memory_is_flat_when_the_split_grows_4x(exported_run, tmp_path, monkeypatch):
    """Peak of the memory Python and NumPy allocate (tracemalloc: exact, not noisy like RSS)
    while evaluate scores Keras and an export on a split, then on the split 4x over. The models
    are opened before tracing starts (their memory does not depend on the split size); the
    images, and any array built from all of them, would."""
    import tracemalloc

    from skinscan_edge.evaluation import evaluate as evaluate
    from skinscan_edge.runtimes.models import open_model

    opened = {name: open_model(exported_run, name) for name in ("keras", "tflite-int8")}
    for rt in opened.values():  # trace/allocate for both batch shapes before tracing memory
        for n in (16, 4):
            rt.predict(np.zeros((n, IMG, IMG, 3), np.uint8))
    monkeypatch.setattr(evaluate, "open_model", lambda run, e, **kw: opened[e["name"]])
    # One evaluate untraced first: the first call fills one-time caches (matplotlib's fonts and
    # renderer, lazy imports) that do not grow with the split and would land in one side only.
    evaluate.evaluate_run(_run_with_test_split_times(exported_run, tmp_path / "warm", 1),
                          evaluate.EvaluateConfig(formats=["tflite-int8"], n_bootstrap=20, batch_size=16))
    peaks, counts = [], []
    for times in (1, 4):  # the 36 test images, then 144
        run = _run_with_test_split_times(exported_run, tmp_path / f"x{times}", times)
        tracemalloc.start()
        try:
            results = evaluate.evaluate_run(run, evaluate.EvaluateConfig(formats=["tflite-int8"], n_bootstrap=20,
                                                                         batch_size=16))
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        finally:
            tracemalloc.stop()
        counts.append(results["num_images"])
    assert counts[1] == 4 * counts[0]
    # Holding the extra 108 images as decoded uint8 alone would add 1.7 MB (float32: 7 MB).
    held_uint8 = (counts[1] - counts[0]) * IMG * IMG * 3 / 2**20
    assert peaks[1] - peaks[0] < 0.25 * held_uint8, f"traced peak {peaks[0]:.2f} MB -> {peaks[1]:.2f} MB"

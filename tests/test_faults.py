"""Faults and hostile input (issue 28, D1-D13): each defect found on main, as a user meets it.

Every test here failed on main before its fix (checked one by one). They build only what
they need (a few tiny images, a fake run directory, a fake ``adb``), so none waits for the
session's trained model.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import scaled_timeout

from skinscan_edge.core.errors import SkinscanError

HERE = Path(__file__).resolve().parent
SIZE = 75


def _images(root: Path, n: int = 6, size=(90, 80)) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = root / ("a" if i % 2 else "b") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def _fake_run(tmp_path: Path, n: int = 6):
    """A run directory with what the cache readers need: config (image size) and a keyed split."""
    from skinscan_edge.core.rundir import RunDir
    from skinscan_edge.core.files import write_json

    data = tmp_path / "data"
    paths = _images(data, n)
    run = RunDir(tmp_path / "run")
    write_json(run.config_path, {"train": {"img_size": SIZE}})
    rels = [[p.relative_to(data).as_posix(), i % 2] for i, p in enumerate(paths)]
    write_json(run.split_path, {"root": str(data), "sha256": "ab" * 32, "splits": {"test": rels}})
    (run.root / "cache").mkdir()
    return run, paths


# --- D1: a corrupted image cache is never used ------------------------------------------------
def test_d1_a_cache_overwritten_in_place_is_rebuilt_with_one_warning_never_used(tmp_path, capfd):
    from skinscan_edge.data import imagecache
    from skinscan_edge.data.imageio import load_batch

    run, paths = _fake_run(tmp_path)
    imagecache.build_cache(run.root / "cache", "test", "ab" * 32, SIZE, [str(p) for p in paths])
    (cache_file,) = (run.root / "cache").glob("test-*.npy")
    getattr(imagecache, "_VERIFIED", set()).clear()  # a new process: nothing checked yet
    with open(cache_file, "r+b") as f:  # random bytes of the same size after the header
        f.seek(128)
        f.write(np.random.default_rng(1).integers(0, 255, cache_file.stat().st_size - 128, dtype=np.uint8).tobytes())
    capfd.readouterr()
    got = imagecache.load_split_images(run, "test", range(len(paths)))
    np.testing.assert_array_equal(got, load_batch([str(p) for p in paths], SIZE))
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not match their digests" in err[0] and "rebuilt" in err[0], err
    # Rebuilt: the next process reads it without a word.
    imagecache._VERIFIED.clear()
    imagecache.load_split_images(run, "test", [0])
    assert capfd.readouterr().err == ""


def test_d1_a_cache_without_digests_is_rebuilt_not_trusted(tmp_path):
    from skinscan_edge.data import imagecache

    run, paths = _fake_run(tmp_path)
    imagecache.build_cache(run.root / "cache", "test", "ab" * 32, SIZE, [str(p) for p in paths])
    (digests,) = (run.root / "cache").glob("test-*.xxh3")
    digests.unlink()
    assert imagecache.open_cache(run.root / "cache", "test", "ab" * 32, SIZE, len(paths)) is None


# --- D3: a --group-by CSV that is not UTF-8 --------------------------------------------------------
def test_d3_a_group_by_csv_in_cp1252_is_one_line_naming_the_encoding(tmp_path):
    from skinscan_edge.data.grouping import parse_group_by

    csv = tmp_path / "meta.csv"
    csv.write_bytes("image_id,lesion_id\ncafé,L1\n".encode("cp1252"))
    csv_bom = tmp_path / "bom.csv"
    csv_bom.write_bytes("image_id,lesion_id\ncafé,L1\n".encode("utf-8-sig"))
    assert parse_group_by(f"{csv_bom}:lesion_id")[1] == "lesion_id"
    with pytest.raises(SkinscanError) as e:
        parse_group_by(f"{csv}:lesion_id")
    assert "UTF-8" in str(e.value) and str(csv) in str(e.value) and "\n" not in str(e.value)


# --- D6: never delete what the project did not create -------------------------------------------
def test_d6_reader_venv_pointed_at_a_users_folder_leaves_it_intact(tmp_path, monkeypatch):
    from skinscan_edge.evaluation import client

    canary = tmp_path / "notes"
    canary.mkdir()
    (canary / "my-notes.txt").write_text("do not lose me")
    monkeypatch.setenv(client.READER_VENV_ENV, str(canary))
    with pytest.raises(SkinscanError) as e:
        client.reader_python()
    assert (canary / "my-notes.txt").read_text() == "do not lose me"
    assert str(canary) in str(e.value) and client.READER_VENV_ENV in str(e.value)


# --- D10: config objects check types and ranges when built, naming the field ------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"img_size": "abc"}, "img_size"), ({"data": 123}, "data"), ({"img_size": 75.5}, "img_size"),
    ({"dropout": 2.0}, "dropout"), ({"epochs": -1}, "epochs"), ({"augment": "yes"}, "augment"),
    ({"learning_rate": "fast"}, "learning_rate"), ({"val_fraction": 0.7}, "val_fraction"),
])
def test_d10_train_config_refuses_wrong_types_and_ranges_naming_the_field(kwargs, field):
    from skinscan_edge.core.config import TrainConfig

    with pytest.raises(SkinscanError) as e:
        TrainConfig(**kwargs)
    assert field in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("cls, kwargs, field", [
    ("ExportConfig", {"calib_samples": "many"}, "calib_samples"),
    ("ExportConfig", {"keep_float": "conv2d"}, "keep_float"),
    ("EvaluateConfig", {"batch_size": 0}, "batch_size"),
    ("EvaluateConfig", {"max_accuracy_drop_pp": "1"}, "max_accuracy_drop_pp"),
    ("BenchmarkConfig", {"images": "32"}, "images"),
    ("ExplainConfig", {"worst": 2.5}, "worst"),
])
def test_d10_every_config_checks_types_naming_the_field(cls, kwargs, field):
    import skinscan_edge  # the public face: every config

    with pytest.raises(SkinscanError) as e:
        getattr(skinscan_edge, cls)(**kwargs)
    assert field in str(e.value)


def test_d10_the_api_with_wrong_types_raises_skinscan_error_naming_the_field(tmp_path):
    import skinscan_edge

    for kwargs, field in (({"img_size": "abc"}, "img_size"), ({"data": 123}, "data"), ({"dropout": 2.0}, "dropout")):
        with pytest.raises(SkinscanError, match=field):
            skinscan_edge.train(skinscan_edge.TrainConfig(**{"data": str(tmp_path), "out": str(tmp_path / "run"),
                                                           **kwargs}))
    assert not (tmp_path / "run").exists()


def test_d10_defaults_and_saved_configs_still_build():
    from skinscan_edge.core.config import ExportConfig, TrainConfig
    from skinscan_edge.core.config_stages import BenchmarkConfig, EvaluateConfig, ExplainConfig

    TrainConfig(), ExportConfig(), EvaluateConfig(), BenchmarkConfig(), ExplainConfig()
    TrainConfig.from_dict(TrainConfig(img_size=96, labels=None, mixed_precision=True).to_dict())
    BenchmarkConfig(threads=[1, 2], batches=[1], models=["keras"])
    ExportConfig(gate={"max_accuracy_drop_pp": 2, "max_recall_drop_pp": 3.5, "critical_classes": [],
                       "min_agreement": None})


# --- D2: a write error while building the cache ---------------------------------------------------
TRACEBACK = "Traceback (most recent call last)"


def _limited(limit_bytes: int):
    import resource

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_d2_efbig_while_building_the_image_cache_is_one_line_and_leaves_no_temporary_file(tmp_path):
    data = tmp_path / "data"
    _images(data, 24)
    out = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", "skinscan_edge", "train", "--data", str(data), "--out", str(out),
                           "--img-size", str(SIZE), "--weights", "none", "--epochs", "1", "--fine-tune-epochs", "0",
                           "--image-cache", "disk", "--batch-size", "4"],
                          capture_output=True, text=True, timeout=scaled_timeout(900), env=env,
                          preexec_fn=_limited(100_000))
    assert done.returncode == 2, done.stderr
    assert TRACEBACK not in done.stderr, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "EFBIG" in line and "cache" in line and "ulimit -f" in line
    assert not [p for p in (out / "cache").iterdir() if p.name.endswith(".tmp")]


# --- D4: a hanging or failing adb ---------------------------------------------------------------------
def _fake_adb(folder: Path, body: str) -> None:
    folder.mkdir()
    adb = folder / "adb"
    adb.write_text(f"#!/bin/sh\n{body}\n")
    adb.chmod(0o755)


def test_d4_a_hanging_adb_is_one_line(tmp_path, monkeypatch):
    from skinscan_edge.benchmark import adb as adb_bench

    _fake_adb(tmp_path / "bin", "sleep 30")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(adb_bench, "ADB_STEP_TIMEOUT_S", 1, raising=False)
    t0 = __import__("time").time()
    with pytest.raises(SkinscanError) as e:
        adb_bench.pick_device("SERIAL1")
    assert "did not answer" in str(e.value) and "adb kill-server" in str(e.value)
    assert __import__("time").time() - t0 < 20


def test_d4_when_adb_fails_its_own_message_is_in_the_line(tmp_path, monkeypatch):
    from skinscan_edge.benchmark import adb as adb_bench

    _fake_adb(tmp_path / "bin", "echo 'error: device SERIAL1 is not attached (daemon not running)' >&2; exit 1")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SkinscanError) as e:
        adb_bench.pick_device("SERIAL1")
    assert "daemon not running" in str(e.value) and "exited 1" in str(e.value)


# --- D5: the reader venv cannot be created ------------------------------------------------------------
def test_d5_a_reader_venv_that_cannot_be_created_is_one_line_naming_the_variable(tmp_path, monkeypatch):
    from skinscan_edge.evaluation import client

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(client.READER_VENV_ENV, str(blocker / "venv"))  # a folder inside a file: never creatable
    with pytest.raises(SkinscanError) as e:
        client.reader_python()
    assert client.READER_VENV_ENV in str(e.value) and str(blocker / "venv") in str(e.value)


def test_item6_the_reader_venv_defaults_to_the_user_cache_folder(tmp_path, monkeypatch):
    from skinscan_edge.evaluation import client

    monkeypatch.delenv(client.READER_VENV_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert client.reader_venv() == tmp_path / "cache" / "skinscan-edge" / "reader-venv"


# --- the error boundary ---------------------------------------------------------------------------
@pytest.mark.parametrize("exc, words", [
    (OSError(errno.ENOSPC, "No space left on device", "/run/x.onnx"), ["ENOSPC", "/run/x.onnx", "free some space"]),
    (OSError(errno.EROFS, "Read-only file system", "/ro/y"), ["EROFS", "/ro/y", "writable disk"]),
    (OSError(errno.EIO, "Input/output error", "/d/z"), ["EIO", "/d/z", "check the disk"]),
    (OSError(errno.EACCES, "Permission denied", "/p"), ["EACCES", "/p", "permission"]),
    (subprocess.TimeoutExpired(["adb", "devices"], 60), ["adb devices", "60 s"]),
    (subprocess.CalledProcessError(1, ["python", "-m", "venv", "v"], stderr="Error: [Errno 30] read-only"),
     ["python -m venv v", "exited 1", "read-only"]),
])
def test_the_cli_boundary_turns_actionable_errors_into_one_line_and_exit_2(exc, words, capsys):
    import typer

    from skinscan_edge.commands import user_errors

    @user_errors
    def command():
        raise exc

    with pytest.raises(typer.Exit) as e:
        command()
    assert e.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and all(w in err for w in words), err


def test_the_cli_boundary_keeps_a_bugs_traceback():
    from skinscan_edge.commands import user_errors

    @user_errors
    def command():
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        command()


def test_verbose_adds_the_traceback(capsys, monkeypatch):
    import typer

    from skinscan_edge.core.tf import VERBOSE_ENV
    from skinscan_edge.commands import user_errors

    monkeypatch.setenv(VERBOSE_ENV, "1")

    @user_errors
    def command():
        raise OSError(errno.ENOSPC, "No space left on device", "/x")

    with pytest.raises(typer.Exit):
        command()
    assert TRACEBACK in capsys.readouterr().err


# --- D13: one grayscale photo must not kill the MediaPipe-client row ----------------------------------
@pytest.fixture(scope="module")
def reader_python():
    """The reader venv (once, in <repo>/.venv-reader, as tests/test_android.py builds it)."""
    from skinscan_edge.evaluation.client import reader_python as build

    try:
        return build(HERE.parent / ".venv-reader")
    except SkinscanError as e:
        if "cannot reach the package registry" in str(e):
            pytest.skip(f"{e}; the MediaPipe check did not run")
        raise


def test_d13_grayscale_and_other_modes_are_scored_as_rgb_and_named(reader_python, tmp_path):
    from skinscan_edge.evaluation.client import classify_files, probe_model

    size = 8
    model = probe_model(size, tmp_path)  # identity: the scores are the pixels MediaPipe fed
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
    files = {}
    for name, img, fmt in [("rgb.jpg", rgb, "JPEG"), ("gray.jpg", rgb.convert("L"), "JPEG"),
                           ("gray16.png", rgb.convert("L").convert("I;16"), "PNG"),
                           ("palette.png", rgb.convert("P"), "PNG"), ("rgba.png", rgb.convert("RGBA"), "PNG"),
                           ("cmyk.jpg", rgb.convert("CMYK"), "JPEG"), ("gray2.jpg", rgb.convert("L"), "JPEG")]:
        files[name] = tmp_path / name
        img.save(files[name], fmt)
    converted: list = []
    scores = classify_files(reader_python, model, [str(p) for p in files.values()], size * size * 3, converted)
    assert scores.shape == (len(files), size * size * 3)
    assert str(files["gray.jpg"]) in converted and str(files["gray2.jpg"]) in converted
    assert str(files["rgb.jpg"]) not in converted
    # Scored as RGB: the gray image's three channels are equal, and a file after it is still classified.
    gray = scores[list(files).index("gray.jpg")].reshape(size, size, 3)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() < 1e-3 and gray.std() > 1


# --- benchmark checks the labels as evaluate does ------------------------------------------------
@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_benchmark_refuses_a_run_whose_labels_are_gone_or_truncated(tmp_path, damage):
    from skinscan_edge.benchmark.harness import run_benchmark
    from skinscan_edge.core.config_stages import BenchmarkConfig
    from skinscan_edge.core.rundir import RunDir
    from skinscan_edge.core.files import write_json

    run = RunDir(tmp_path / "run")
    labels = ["a", "b", "c"]
    write_json(run.config_path, {"train": {"img_size": SIZE}, "labels": labels})
    write_json(run.status_path, {"state": "complete"})
    run.model_path.write_bytes(b"not read: the labels are checked first")
    run.labels_path.write_text("a\nb\n" if damage == "truncated" else "")
    if damage == "deleted":
        run.labels_path.unlink()
    with pytest.raises(SkinscanError, match="labels.txt"):
        run_benchmark(run.root, BenchmarkConfig(floor=False, device="cpu"))


# --- a kill before training began (found by the kill sweep's design): start over, not stuck --------------
def test_a_run_killed_before_config_json_can_be_started_again(tmp_path):
    from skinscan_edge.core.config import TrainConfig
    from skinscan_edge.core.rundir import RunDir
    from skinscan_edge.training.fine_tune import _refuse_a_finished_out

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    for name in ("split.json", "labels.txt", "duplicates.json", "skipped.json", "data_files.json", ".lock"):
        (run.root / name).write_text("{}")
    _refuse_a_finished_out(TrainConfig(out=str(run.root)), run, chief=True, replace=False)  # no refusal
    run.config_path.write_text("{}")
    with pytest.raises(SkinscanError, match="already holds a run"):
        _refuse_a_finished_out(TrainConfig(out=str(run.root)), run, chief=True, replace=False)


# --- --worker-timeout reaches TensorFlow's coordination service --------------------------------------
def test_worker_timeout_sets_the_coordination_heartbeat_and_barriers():
    """One worker on localhost (the two-worker run is tests/test_reliability.py's): the service
    TensorFlow starts carries our timeouts, not its 10 s heartbeat."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import skinscan_edge; from skinscan_edge.training.distribute import make_placement; "
            "from tensorflow.python.eager import context; make_placement('multi-worker', 1, 7.5); "
            "c = context.context().coordination_service; "
            "print(c.heartbeat_timeout_in_ms, c.cluster_register_timeout_in_ms, c.shutdown_barrier_timeout_in_ms)")
    tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]}, "task": {"type": "worker", "index": 0}})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=scaled_timeout(600),
                          env={**os.environ, "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["7500", "7500", "7500"], done.stdout

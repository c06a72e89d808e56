"""Training at scale: phase 1 on cached features, and the decoded-image cache on disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from conftest import ENV, IMG, invoke

SHA = "ab" * 32


@pytest.fixture
def jpegs(tmp_path) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        path = tmp_path / "img" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_cache_reads_back_the_decoded_pixels_and_is_rebuilt_for_another_split_or_size(tmp_path, jpegs):
    from skinscan_edge.imageio import load_batch
    from skinscan_edge.imagecache import build_cache, cache_path, open_cache

    d = tmp_path / "cache"
    cache = build_cache(d, "train", SHA, 24, jpegs)
    assert np.array_equal(cache.read(range(len(jpegs))), load_batch(jpegs, 24))
    assert np.array_equal(cache.read([5, 2]), load_batch([jpegs[5], jpegs[2]], 24))
    assert np.array_equal(np.load(cache.path), load_batch(jpegs, 24))  # a plain .npy
    assert open_cache(d, "train", SHA, 24, len(jpegs)) is not None
    assert open_cache(d, "train", "cd" * 32, 24, len(jpegs)) is None  # another split
    assert open_cache(d, "train", SHA, 32, len(jpegs)) is None  # another size
    assert open_cache(d, "train", SHA, 24, len(jpegs) - 1) is None  # another image count
    build_cache(d, "train", SHA, 32, jpegs)  # the size changed: rebuilt, the stale file removed
    assert sorted(p.name for p in d.iterdir()) == [cache_path(d, "train", SHA, 32).name]


def test_a_truncated_cache_is_not_trusted(tmp_path, jpegs):
    from skinscan_edge.imagecache import build_cache, open_cache

    cache = build_cache(tmp_path, "val", SHA, 24, jpegs)
    with open(cache.path, "r+b") as f:
        f.truncate(cache.path.stat().st_size - 1)
    assert open_cache(tmp_path, "val", SHA, 24, len(jpegs)) is None


KILLED_BUILD = """
import sys, time
from pathlib import Path
import skinscan_edge.imagecache as ic
real = ic._decode
ic._decode = lambda p, s: (time.sleep(0.05), real(p, s))[1]
ic._CHUNK = 2
ic.build_cache(Path(sys.argv[1]), "train", sys.argv[2], 24, sys.argv[3:] * 20)
"""


def test_a_killed_build_leaves_nothing_that_is_trusted(tmp_path, jpegs):
    from skinscan_edge.imagecache import build_cache, cache_path, open_cache

    d = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_BUILD, str(d), SHA, *jpegs], env=ENV)
    deadline = time.time() + 60
    while not any(p.stat().st_size > 10_000 for p in d.glob(".train-*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(d.glob(".train-*.tmp")), "the build was killed before it wrote anything"
    assert not cache_path(d, "train", SHA, 24).exists()
    assert open_cache(d, "train", SHA, 24, len(jpegs) * 20) is None
    build_cache(d, "train", SHA, 24, jpegs * 20)  # the next build starts over and clears the leftover
    assert [p.name for p in d.iterdir()] == [cache_path(d, "train", SHA, 24).name]


def test_an_interrupted_build_removes_its_temporary_file(tmp_path, jpegs, monkeypatch):
    import skinscan_edge.imagecache as ic

    monkeypatch.setattr(ic, "_decode", lambda p, s: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ic.build_cache(tmp_path / "cache", "train", SHA, 24, jpegs)
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_loader_reads_the_cache_when_the_run_has_one(tmp_path, jpegs):
    """evaluate, benchmark and export calibration read through these two functions."""
    from skinscan_edge.imagecache import CACHE_DIR, build_cache, load_split_images, split_image_loader
    from skinscan_edge.rundir import RunDir, write_json

    run = RunDir(tmp_path / "run")
    split = {"root": str(Path(jpegs[0]).parent), "sha256": SHA,
             "splits": {"test": [[Path(p).name, 0] for p in jpegs]}}
    write_json(run.split_path, split)
    write_json(run.config_path, {"train": {"img_size": 24}})
    decoded = load_split_images(run, "test", [3, 1])
    cache = build_cache(run.root / CACHE_DIR, "test", SHA, 24, jpegs)
    marked = np.load(cache.path).copy()
    marked[3] = 7  # proof that the rows come from the cache, not from the JPEGs
    np.save(cache.path, marked)
    assert np.array_equal(decoded[1], load_split_images(run, "test", [3, 1])[1])
    assert (load_split_images(run, "test", [3, 1])[0] == 7).all()
    assert (split_image_loader(run, "test")(Path(jpegs[3])) == 7).all()
    outside = Path(jpegs[3]).parent / "outside.jpg"  # not in the split: decoded
    Path(outside).write_bytes(Path(jpegs[3]).read_bytes())
    assert np.array_equal(split_image_loader(run, "test")(outside), decoded[0])


def test_train_refuses_in_one_line_when_the_disk_cannot_hold_the_cache(demo_data, tmp_path, monkeypatch):
    import skinscan_edge.imagecache as ic

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(ic.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5 * 10**6, 5 * 10**6))
    out = tmp_path / "run"
    result = invoke(["train", "--data", demo_data, "--out", out, "--img-size", IMG, "--weights", "none",
                     "--image-cache", "disk"])
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output  # one line, the last
    line = errors[0]
    assert "needs" in line and "5.0 MB free" in line and "--image-cache off" in line, line
    assert not out.exists()


def test_phase1_on_cached_features_trains_the_full_models_head(tmp_path):
    """The full Keras model, after phase 1 on features, predicts what its head predicts from the
    cached features: the head's weights are the model's, and the features are the base's output."""
    from skinscan_edge._tf import keras, tf
    from skinscan_edge.config import TrainConfig
    from skinscan_edge.features import extract_features, fit_head_on_features, head_model
    from skinscan_edge.model import build_model, freeze_base

    k = keras()
    k.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, IMG, IMG, 3), dtype=np.uint8)
    y = np.arange(20) % 3
    model = build_model(3, IMG, weights="none", dense_units=16)
    freeze_base(model)
    before = [w.copy() for w in head_model(model).get_weights()]
    batches = tf().data.Dataset.from_tensor_slices((x, y.astype(np.int32))).batch(8)
    cfg = TrainConfig(epochs=2, batch_size=8, learning_rate=0.05, augment=True, feature_views=2, seed=1)
    history = fit_head_on_features(model, cfg, batches, batches, {0: 1.0, 1: 2.0, 2: 1.0},
                                   [k.callbacks.CSVLogger(str(tmp_path / "h.csv"))])
    assert len(history.history["val_loss"]) == 2 and (tmp_path / "h.csv").read_text().count("\n") == 3
    head = head_model(model)
    assert any(not np.array_equal(a, b) for a, b in zip(before, head.get_weights())), "the head did not train"
    features, labels = extract_features(model, batches)
    assert np.array_equal(labels, y)
    via_head = head.predict(features, verbose=0)
    via_model = model.predict(x.astype(np.float32), verbose=0)
    np.testing.assert_allclose(via_model, via_head, atol=1e-5)

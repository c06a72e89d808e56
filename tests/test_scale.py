"""Training at scale: phase 1 on cached features, and the decoded-image cache on disk."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from conftest import ENV, IMG, invoke, scaled_timeout

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
    from skinscan_edge.data.imageio import load_batch
    from skinscan_edge.data.imagecache import build_cache, cache_path, digest_path, open_cache

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
    new = cache_path(d, "train", SHA, 32)
    assert sorted(p.name for p in d.iterdir()) == sorted([new.name, digest_path(new).name])  # + its row digests


def test_disk_cached_batches_hold_the_right_pixels_while_later_batches_are_read(tmp_path, jpegs):
    """Reads reuse buffers (imagecache._Buffers): never one that a batch, tensor or view still uses."""
    from skinscan_edge.data.folder import image_batches
    from skinscan_edge.data.imageio import load_batch
    from skinscan_edge.data.imagecache import build_cache

    cache = build_cache(tmp_path / "cache", "train", SHA, 24, jpegs)
    expected = load_batch(jpegs, 24)
    first = cache.read([0, 1])[1]  # only a view of the result is kept
    later = [cache.read([i, i + 1]) for i in range(2, 10, 2)]
    assert np.array_equal(first, expected[1])
    assert all(np.array_equal(r, expected[i:i + 2]) for r, i in zip(later, range(2, 10, 2)))
    ds = image_batches(jpegs, list(range(len(jpegs))), 24, 4, training=True, seed=0, cache=cache)
    for _ in range(2):
        held = list(ds)  # every batch of the epoch alive at once, as tensors
        labels = np.concatenate([y.numpy() for _, y in held])
        assert sorted(labels) == list(range(len(jpegs)))
        for x, y in held:
            assert np.array_equal(x.numpy(), expected[y.numpy()])


def test_a_truncated_cache_is_not_trusted(tmp_path, jpegs):
    from skinscan_edge.data.imagecache import build_cache, open_cache

    cache = build_cache(tmp_path, "val", SHA, 24, jpegs)
    with open(cache.path, "r+b") as f:
        f.truncate(cache.path.stat().st_size - 1)
    assert open_cache(tmp_path, "val", SHA, 24, len(jpegs)) is None


KILLED_BUILD = """
import sys, time
from pathlib import Path
import skinscan_edge.data.imagecache as ic
real = ic._decode
ic._decode = lambda p, s: (time.sleep(0.05), real(p, s))[1]
ic._CHUNK = 2
ic.build_cache(Path(sys.argv[1]), "train", sys.argv[2], 24, sys.argv[3:] * 20)
"""


def test_a_killed_build_leaves_nothing_that_is_trusted(tmp_path, jpegs):
    from skinscan_edge.data.imagecache import build_cache, cache_path, digest_path, open_cache

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
    from skinscan_edge.data.imagecache import digest_path

    built = cache_path(d, "train", SHA, 24)
    assert sorted(p.name for p in d.iterdir()) == sorted([built.name, digest_path(built).name])


def test_an_interrupted_build_removes_its_temporary_file(tmp_path, jpegs, monkeypatch):
    import skinscan_edge.data.imagecache as ic

    monkeypatch.setattr(ic, "_decode", lambda p, s: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        ic.build_cache(tmp_path / "cache", "train", SHA, 24, jpegs)
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_loader_reads_the_cache_when_the_run_has_one(tmp_path, jpegs):
    """evaluate, benchmark and export calibration read through these two functions."""
    from skinscan_edge.data.imagecache import CACHE_DIR, build_cache, load_split_images, split_image_loader
    from skinscan_edge.core.rundir import RunDir
    from skinscan_edge.core.files import write_json

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
    import xxhash

    from skinscan_edge.data.imagecache import digest_path  # the marked row with its own digest: a cache, not damage
    digests = np.fromfile(digest_path(cache.path), dtype="<u8")
    digests[3] = xxhash.xxh3_64_intdigest(marked[3])
    digests.tofile(digest_path(cache.path))
    assert np.array_equal(decoded[1], load_split_images(run, "test", [3, 1])[1])
    assert (load_split_images(run, "test", [3, 1])[0] == 7).all()
    assert (split_image_loader(run, "test")(Path(jpegs[3])) == 7).all()
    outside = Path(jpegs[3]).parent / "outside.jpg"  # not in the split: decoded
    Path(outside).write_bytes(Path(jpegs[3]).read_bytes())
    assert np.array_equal(split_image_loader(run, "test")(outside), decoded[0])


def test_train_refuses_in_one_line_when_the_disk_cannot_hold_the_cache(demo_data, tmp_path, monkeypatch):
    import skinscan_edge.data.imagecache as ic

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
    from skinscan_edge.core.tf import keras, tf
    from skinscan_edge.core.config import TrainConfig
    from skinscan_edge.training.features import extract_features, fit_head_on_features, head_model
    from skinscan_edge.training.model import build_model, freeze_base

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


#: ``train`` that SIGKILLs itself when phase 1 (on cached features) begins epoch ``KILL_AT``
#: (0-based): after epoch KILL_AT - 1 was saved and logged, as a crash or ``kill -9`` would.
KILLED_IN_PHASE1 = """
import os, runpy, signal, sys
import skinscan_edge.training.fine_tune as training
from skinscan_edge.core.tf import keras
real = training.callbacks_for
class Kill(keras().callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == int(os.environ["KILL_AT"]):
            os.kill(os.getpid(), signal.SIGKILL)
training.callbacks_for = lambda *args, **kwargs: real(*args, **kwargs) + [Kill()]
sys.argv = ["skinscan-edge", *sys.argv[1:]]
runpy.run_module("skinscan_edge", run_name="__main__")
"""


def test_resume_after_a_kill_in_phase1_on_cached_features_continues_at_the_next_epoch(demo_data, tmp_path):
    import csv

    out = tmp_path / "run"
    args = ["train", "--data", demo_data, "--out", out, "--img-size", IMG, "--weights", "none", "--epochs", 4,
            "--fine-tune-epochs", 0, "--batch-size", 16, "--seed", 3]
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_PHASE1, *map(str, args)], capture_output=True,
                            text=True, timeout=scaled_timeout(300), env={**ENV, "KILL_AT": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "on cached base features" in killed.stderr, killed.stderr  # the path under test
    with open(out / "history_head.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1"]
    resumed = subprocess.run([sys.executable, "-m", "skinscan_edge", *map(str, args), "--resume"],
                             capture_output=True, text=True, timeout=scaled_timeout(300), env=ENV)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "on cached base features" in resumed.stderr, resumed.stderr
    epochs_run = re.findall(r"\bepoch (\d+/\d+)$", resumed.stderr, re.M)  # as each epoch begins
    assert epochs_run == ["3/4", "4/4"], resumed.stderr  # from the epoch after the last saved one
    with open(out / "history_head.csv", newline="") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["0", "1", "2", "3"]
    with open(out / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["phase"]) for r in rows] == [(str(i), "head") for i in range(4)]
    assert (out / "model.keras").exists()


def test_phase2_on_the_cached_stem_trains_the_full_models_layers_above_it(tmp_path):
    """After phase 2 on the stem's cached output, the full model predicts what the layers above
    ``mixed7`` predict from the stem's output: they are the model's own layers; the stem stayed frozen."""
    from skinscan_edge.core.tf import keras, tf
    from skinscan_edge.core.config import TrainConfig
    from skinscan_edge.training.features import fit_top_on_stem, stem_function, top_model
    from skinscan_edge.training.model import build_model, unfreeze_from

    k = keras()
    k.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, IMG, IMG, 3), dtype=np.uint8)
    y = (np.arange(20) % 3).astype(np.int32)
    model = build_model(3, IMG, weights="none", dense_units=16)
    unfreeze_from(model, "mixed7", keep_bn_frozen=False)
    stem_layers = [l for l in model.layers if l not in top_model(model, "mixed7").layers]
    stem_before = [w.numpy().copy() for l in stem_layers for w in l.weights]
    top_before = [w.copy() for w in top_model(model, "mixed7").get_weights()]
    batches = tf().data.Dataset.from_tensor_slices((x, y)).batch(8)
    cfg = TrainConfig(fine_tune_epochs=2, batch_size=8, fine_tune_lr=0.01, augment=True, stem_views=2, seed=1)
    history = fit_top_on_stem(model, cfg, tmp_path / "stem", batches, y, batches, y, None,
                              [k.callbacks.CSVLogger(str(tmp_path / "h.csv"))])
    assert len(history.history["val_loss"]) == 2 and (tmp_path / "h.csv").read_text().count("\n") == 3
    assert sorted(p.name for p in (tmp_path / "stem").iterdir()) == ["train_view0.npy", "train_view1.npy", "val.npy"]
    view0, view1 = (np.load(tmp_path / "stem" / f"train_view{v}.npy") for v in (0, 1))
    assert view0.dtype == np.float16 and view0.shape == (20, 3, 3, 768) and not np.array_equal(view0, view1)
    top = top_model(model, "mixed7")
    assert any(not np.array_equal(a, b) for a, b in zip(top_before, top.get_weights())), "nothing above mixed7 trained"
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(stem_before, (w for l in stem_layers for w in l.weights)))
    stem = stem_function(model, "mixed7")(tf().constant(x), tf().constant(False))
    np.testing.assert_allclose(model.predict(x.astype(np.float32), verbose=0),
                               top.predict(tf().cast(stem, tf().float32), verbose=0), atol=2e-3)  # float16 cache


def test_train_fine_tunes_on_the_cached_stem_and_removes_it(demo_data, tmp_path):
    """The path a user takes by default (``--unfreeze-from mixed7``): the log names it, the run
    completes, and no stem cache is left in the run directory."""
    from conftest import invoke

    out = tmp_path / "run"
    result = invoke(["train", "--data", demo_data, "--out", out, "--img-size", IMG, "--weights", "none",
                     "--epochs", 1, "--fine-tune-epochs", 2, "--batch-size", 16, "--seed", 3])
    assert result.exit_code == 0, result.output
    assert "on the cached output of mixed7" in result.output and "1 view(s)" in result.output
    assert not (out / "stem_cache").exists()
    assert len((out / "history_fine_tune.csv").read_text().splitlines()) == 3

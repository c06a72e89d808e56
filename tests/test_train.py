"""`skinscan-edge train`: artifacts, honest accuracy, weights loading and bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import FINE_TUNE_EPOCHS, IMG, invoke

PNG = b"\x89PNG"


def test_train_writes_every_artifact(train_result):
    out, result = train_result
    assert result.exit_code == 0, result.output
    for name in ("model.keras", "labels.txt", "config.json", "split.json", "skipped.json", "status.json",
                 "history.csv", "training_curves.png", "reports/keras_test_report.txt",
                 "reports/keras_test_report.json", "reports/keras_confusion.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "training_curves.png").read_bytes()[:4] == PNG
    assert (out / "reports/keras_confusion.png").read_bytes()[:4] == PNG
    assert list((out / "tensorboard").rglob("events.out.tfevents*")), "TensorBoard logs missing"
    assert (out / "checkpoints" / "best_fine_tune.weights.h5").is_file()
    config = json.loads((out / "config.json").read_text())
    split = json.loads((out / "split.json").read_text())
    assert config["train"]["img_size"] == IMG and config["train"]["seed"] == 7
    assert config["split_sha256"] == split["sha256"]
    assert config["versions"]["tensorflow"] == "2.21.0" and config["versions"]["tf-keras"] == "2.21.0"
    assert (out / "labels.txt").read_text().splitlines() == config["labels"]
    assert len(config["labels"]) == 10
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + FINE_TUNE_EPOCHS  # header + fine-tune epochs (head phase skipped)
    assert json.loads((out / "status.json").read_text())["state"] == "complete"
    assert "synthetic" in (Path(config["data_root"]) / "README.txt").read_text().lower()


def test_reported_accuracy_equals_an_independent_computation(trained_run, train_result):
    """Recompute the test accuracy from the saved model and the persisted split."""
    from skinscan_edge.data.imageio import load_batch

    items = trained_run.split_items("test")
    model = trained_run.load_model()
    x = load_batch([p for p, _ in items], IMG).astype(np.float32)
    y = np.array([label for _, label in items])
    acc = float((model.predict(x, verbose=0).argmax(1) == y).mean())
    report = json.loads((trained_run.reports / "keras_test_report.json").read_text())
    assert report["n_images"] == len(items)
    assert report["accuracy"] == pytest.approx(acc, abs=1e-9)
    assert f"test accuracy {acc:.4f}" in train_result[1].output
    assert report["report"]["accuracy"] == pytest.approx(acc, abs=1e-9)


def test_same_seed_same_split(trained_run, demo_data):
    from skinscan_edge.data.folder import scan, split_items

    again = split_items(scan(demo_data), seed=7, val_fraction=0.15, test_fraction=0.15)
    assert again["sha256"] == trained_run.split()["sha256"]


def test_weights_path_loads_a_saved_weights_file(tmp_path):
    import tf_keras as k

    from skinscan_edge.training.model import build_model

    base = k.applications.InceptionV3(include_top=False, weights=None, input_shape=(IMG, IMG, 3))
    kernel = [l for l in base.layers if isinstance(l, k.layers.Conv2D)][0].kernel
    kernel.assign(np.full(kernel.shape, 0.0125, np.float32))
    path = tmp_path / "inception_v3_notop.h5"
    base.save_weights(str(path))
    model = build_model(10, IMG, weights=str(path))
    first_conv = [l for l in model.layers if isinstance(l, k.layers.Conv2D)][0]
    np.testing.assert_allclose(first_conv.kernel.numpy(), 0.0125)


def test_invalid_weights_file_is_a_one_line_error(tmp_path, demo_data):
    bad = tmp_path / "weights.h5"
    bad.write_text("not hdf5")
    result = invoke(["train", "--data", demo_data, "--out", tmp_path / "run", "--img-size", IMG,
                     "--weights", bad])
    assert result.exit_code == 2
    assert "is not a valid InceptionV3 no-top weights file" in result.output
    assert "Traceback" not in result.output


def test_offline_imagenet_names_both_alternatives(tmp_path, demo_data, monkeypatch):
    """The real Keras download path, pointed at a closed local port: a failed fetch, as offline."""
    from tf_keras.src.applications import inception_v3

    monkeypatch.setattr(inception_v3, "WEIGHTS_PATH_NO_TOP", "http://127.0.0.1:9/skinscan_offline_notop.h5")
    result = invoke(["train", "--data", demo_data, "--out", tmp_path / "run", "--img-size", IMG,
                     "--weights", "imagenet"])
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--weights PATH" in errors[0] and "--weights none" in errors[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("extra, message", [
    (["--img-size", "50"], "at least 75"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--unfreeze-from", "mixed77"], "did you mean 'mixed7'"),
    (["--labels", "/nonexistent/labels.json"], "--labels file not found"),
])
def test_bad_train_arguments(tmp_path, demo_data, extra, message):
    result = invoke(["train", "--data", demo_data, "--out", tmp_path / "run", "--img-size", IMG,
                     "--weights", "none", *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.strip().count("\n") == 0
    assert result.output.strip().startswith("error:")


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "--data folder not found"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "got a file"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no class folders"),
])
def test_bad_data_folders(tmp_path, make, message):
    data = make(tmp_path)
    result = invoke(["train", "--data", data, "--out", tmp_path / "run", "--img-size", IMG, "--weights", "none"])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_existing_run_is_not_overwritten(trained_run, demo_data):
    before = trained_run.model_path.stat().st_mtime
    result = invoke(["train", "--data", demo_data, "--out", trained_run.root, "--img-size", IMG])
    assert result.exit_code == 2 and "already holds a run" in result.output
    assert trained_run.model_path.stat().st_mtime == before


def test_planted_near_duplicates_stay_in_one_split_and_the_conflict_in_train(train_result, trained_run):
    split = trained_run.split()
    where = {rel: name for name, part in split["splits"].items() for rel, _ in part}
    assert len(split["groups"]) == 3  # the SYNTHETIC demo data's planted near-duplicates
    for members in split["groups"]:
        assert len({where[r] for r in members}) == 1, members
    duplicates = json.loads((trained_run.root / "duplicates.json").read_text())
    assert duplicates["num_conflicts"] == 1 and duplicates["conflicts"][0]["splits"] == ["train"]
    assert ("3 duplicate group(s), 1 label conflict(s) kept in train only, 0 test image(s) with a near-duplicate "
            "in train/val") in train_result[1].output

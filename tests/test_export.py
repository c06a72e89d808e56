"""`skinscan-edge export`: every file runs in its real runtime and agrees with Keras."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import IMG, invoke
from skinscan_edge.core.files import sha256_file

ALL = ["tflite-fp32", "onnx-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-int8", "tflite-qat-int8"]
#: Stated minimum top-1 agreement with Keras on the test split, per quantized export, counted on
#: the images Keras decides: where its top class leads the second by at least DECIDED. The 75 px
#: fixture model is weak, and which weak model depends on the host's kernels (bfloat16 training on
#: AVX512_BF16/AMX hosts): many of its answers are near-ties that any rounding flips. On a Xeon
#: with AMX it scored 0.39 on the test split and its median lead was 0.036; every image the int8
#: files flipped led by 0.038 or less, and the raw agreement (onnx-int8 0.778, tflite-int8 0.806
#: of 36) said more about the host than about the export. Among the 21 images leading by 0.02 or
#: more both int8 files agreed 0.952. QAT is further training, not a conversion; its defaults
#: (lr 1e-7, BatchNorm frozen: issue 12) keep it as close to Keras as the int8 file.
MIN_AGREEMENT = {"tflite-fp16": 0.97, "tflite-dynamic": 0.85, "tflite-int8": 0.80, "onnx-int8": 0.80,
                 "tflite-qat-int8": 0.80}
DECIDED = 0.02


@pytest.fixture(scope="module")
def predictions(exported_run):
    """Keras and every export on the same test-split images, through the real runtimes."""
    from skinscan_edge.data.imageio import load_batch
    from skinscan_edge.runtimes.models import model_entries, open_model

    items = exported_run.split_items("test")
    x = load_batch([p for p, _ in items], IMG)
    out = {"y": np.array([y for _, y in items])}
    for entry in model_entries(exported_run):
        out[entry["name"]] = open_model(exported_run, entry).predict(x)
    return out


def test_manifest_lists_every_export_with_matching_hashes(exported_run, export_result):
    manifest = json.loads(exported_run.manifest_path.read_text())
    assert manifest["failures"] == []
    assert sorted(e["name"] for e in manifest["exports"]) == sorted(ALL)
    for e in manifest["exports"]:
        path = exported_run.exports / e["file"]
        assert sha256_file(path) == e["sha256"] and path.stat().st_size == e["size_bytes"], e["name"]
        assert e["inputs"][0]["name"] == "image" and e["outputs"][0]["name"] == "probs"
        assert e["inputs"][0]["shape"][1:] == [IMG, IMG, 3]
        assert e["convert_seconds"] > 0
    assert manifest["calibration"]["count"] == 48 and len(manifest["calibration"]["files"]) == 48
    assert manifest["tool_versions"]["tf2onnx"] == "1.17.0"
    for name in ALL:
        assert name in export_result[1].output  # a progress line per format


def test_keras_model_is_trained_well_enough_for_agreement_to_mean_something(predictions):
    """The agreement thresholds below are only meaningful for a model that discriminates."""
    acc = (predictions["keras"].argmax(1) == predictions["y"]).mean()
    assert acc >= 0.3, f"fixture model accuracy {acc:.2f} is too close to chance (0.10)"
    assert len(set(predictions["keras"].argmax(1))) >= 5, "the model predicts too few classes"


@pytest.mark.parametrize("name", ["tflite-fp32", "onnx-fp32"])
def test_fp32_exports_match_keras(predictions, name):
    np.testing.assert_allclose(predictions[name], predictions["keras"], atol=1e-4)


@pytest.mark.parametrize("name", sorted(MIN_AGREEMENT))
def test_quantized_exports_agree_on_top1(predictions, name):
    probs = predictions[name]
    assert probs.shape == predictions["keras"].shape
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=0.05)
    keras = predictions["keras"]
    top2 = np.sort(keras, 1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] >= DECIDED
    assert decided.sum() >= 10, f"only {decided.sum()} test images where Keras leads by {DECIDED}: too weak a model"
    same = probs.argmax(1) == keras.argmax(1)
    agreement = same[decided].mean()
    assert agreement >= MIN_AGREEMENT[name], (f"{name}: top-1 agreement {agreement:.3f} on the {decided.sum()} images "
                                              f"Keras decides ({same.mean():.3f} on all {len(same)})")
    accuracy = (probs.argmax(1) == predictions["y"]).mean()
    keras_accuracy = (predictions["keras"].argmax(1) == predictions["y"]).mean()
    assert accuracy >= keras_accuracy - 0.10, f"{name}: accuracy {accuracy:.3f} vs Keras {keras_accuracy:.3f}"


@pytest.mark.parametrize("name", ["tflite-int8", "tflite-qat-int8"])
def test_int8_tflite_is_full_integer(exported_run, name):
    from ai_edge_litert.interpreter import Interpreter

    from skinscan_edge.core.manifest import entries

    entry = entries(exported_run, [name])[0]
    interp = Interpreter(model_path=str(exported_run.exports / entry["file"]))
    assert interp.get_input_details()[0]["dtype"] == np.uint8
    assert interp.get_output_details()[0]["dtype"] == np.uint8
    # The input range is pinned: raw pixels go straight in (scale 1, zero point 0).
    assert interp.get_input_details()[0]["quantization"] == pytest.approx((1.0, 0))
    dtypes = {np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    assert dtypes <= {"uint8", "int8", "int32"}, dtypes


@pytest.mark.parametrize("name", ["tflite-int8", "tflite-qat-int8"])
def test_int8_tflite_is_one_xnnpack_partition_in_the_manifest(exported_run, name):
    """InceptionV3's pools rewritten in both full-integer files (the QAT one through exporters/qat.py)."""
    from skinscan_edge.core.manifest import entries

    entry = entries(exported_run, [name])[0]
    assert entry["xnnpack_partitions"] == 1, entry.get("builtin_ops")
    assert "AVERAGE_POOL_2D" not in entry["builtin_ops"]


def test_dynamic_range_file_is_not_called_int8(exported_run):
    from skinscan_edge.core.manifest import entries

    entry = entries(exported_run, ["tflite-dynamic"])[0]
    assert entry["precision"] == "dynamic" and "int8" not in entry["file"]
    assert entry["inputs"][0]["dtype"] == "float32"


def test_qat_reports_layers_it_could_not_annotate(exported_run):
    from skinscan_edge.core.manifest import entries

    notes = entries(exported_run, ["tflite-qat-int8"])[0]["notes"]
    assert "normalize (Rescaling)" in notes
    # Concatenations tfmot would permute are kept float and named (see exporters/qat.py).
    assert "mixed3 (Concatenate)" in notes and "mixed9 (Concatenate)" in notes


def test_onnx_fp32_is_checked_and_has_dynamic_batch(exported_run):
    import onnx

    model = onnx.load(str(exported_run.exports / "model_fp32.onnx"))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


# --- errors ---------------------------------------------------------------------------------
def test_run_without_model_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    result = invoke(["export", tmp_path / "run"])
    assert result.exit_code == 2 and "no trained model" in result.output


def test_unknown_precision_lists_valid_names(trained_run):
    result = invoke(["export", trained_run.root, "--precision", "int4"])
    assert result.exit_code == 2
    assert "valid precisions: fp32, fp16, dynamic, int8, qat" in result.output


def test_int8_without_train_images_is_refused(run_copy):
    split = json.loads(run_copy.split_path.read_text())
    split["splits"]["train"] = []
    run_copy.split_path.write_text(json.dumps(split))
    result = invoke(["export", run_copy.root, "--int8"])
    assert result.exit_code == 2 and "need train images to calibrate on" in result.output


def test_a_failing_format_is_named_and_the_others_complete(run_copy, exported_run, monkeypatch, tmp_path):
    # Conversions run in worker processes (exporters/run.py), so the failure is injected there,
    # by a plugin module the workers load. The TFLite converter itself is tested by the session
    # export; here it hands back that export's real bytes, so the test is about the failure
    # handling, not 20 s of converting.
    (tmp_path / "broken_onnx_plugin.py").write_text(BROKEN_ONNX)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SKINSCAN_EDGE_PLUGINS", "broken_onnx_plugin")
    monkeypatch.setenv("REAL_TFLITE", str(exported_run.exports / "model_fp32.tflite"))
    result = invoke(["export", run_copy.root])
    assert result.exit_code == 1
    assert "export onnx-fp32 failed: RuntimeError: simulated tf2onnx failure" in result.output
    manifest = json.loads(run_copy.manifest_path.read_text())
    assert [e["name"] for e in manifest["exports"]] == ["tflite-fp32"]
    assert manifest["failures"][0]["name"] == "onnx-fp32"



BROKEN_ONNX = """
import multiprocessing, os
from pathlib import Path

if multiprocessing.parent_process() is not None:  # in export's worker processes only
    from skinscan_edge.exporters import onnx, tflite

    def broken(*a, **k):
        raise RuntimeError("simulated tf2onnx failure")

    onnx.export_fp32 = broken
    tflite.save_serving_model = lambda model, path, *a: path
    tflite.convert = lambda *a, **k: Path(os.environ["REAL_TFLITE"]).read_bytes()
"""


# --- the QAT float twin ---------------------------------------------------------------------
def _tiny_qat(lr: float, freeze_bn: bool = False):
    """A Conv+BN+ReLU+Dense model, annotated and fine-tuned a few steps (weights move at lr)."""
    from skinscan_edge.core.tf import keras, tf
    from skinscan_edge.exporters.qat import annotate, calibrate_ranges, fine_tune, freeze_batch_norm

    k = keras()
    inp = k.Input((12, 12, 3), name="image")
    x = k.layers.Rescaling(1 / 127.5, offset=-1.0, name="normalize")(inp)
    x = k.layers.Conv2D(6, 3, use_bias=False, name="conv")(x)
    x = k.layers.BatchNormalization(name="bn")(x)
    x = k.layers.ReLU(name="relu")(x)
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    model = k.Model(inp, k.layers.Dense(4, activation="softmax", name="probs")(x))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, 12, 12, 3)).astype(np.float32)
    qat_model, _ = annotate(model)
    if freeze_bn:
        assert freeze_batch_norm(qat_model) == 1
    calibrate_ranges(qat_model, images)
    fine_tune(qat_model, tf().data.Dataset.from_tensor_slices((images, rng.integers(0, 4, 32))).batch(8), 2, lr)
    return model, qat_model, images


def test_float_twin_is_the_qat_model_without_fake_quant_and_the_check_catches_a_wrong_one():
    from skinscan_edge.core.errors import SkinscanError
    from skinscan_edge.exporters.qat import TWIN_TOLERANCE, check_twin, float_twin

    model, qat_model, images = _tiny_qat(lr=0.05)
    twin = float_twin(model, qat_model)
    assert not any(l.name.startswith("quant_") for l in twin.layers) and len(twin.layers) == len(model.layers)
    check = check_twin(twin, qat_model, images[:8])
    assert check["check_prob_max_abs_diff_vs_qat_without_fake_quant"] <= TWIN_TOLERANCE
    assert check["check_prob_max_abs_diff_vs_qat_with_fake_quant"] > 0  # fake-quant was really switched off
    # The fine-tuning moved the weights, so the original model is not the twin: the check says so.
    with pytest.raises(SkinscanError, match="QAT float twin differs"):
        check_twin(model, qat_model, images[:8])
    twin.get_layer("bn").moving_mean.assign_add(np.full(6, 0.5, np.float32))  # one stale statistic
    with pytest.raises(SkinscanError, match="QAT float twin differs"):
        check_twin(twin, qat_model, images[:8])


def test_frozen_batch_norm_keeps_its_statistics_while_the_weights_train():
    from skinscan_edge.exporters.qat import float_twin

    model, qat_model, _ = _tiny_qat(lr=0.05, freeze_bn=True)
    twin = float_twin(model, qat_model)
    stats = lambda m: [w.numpy() for w in m.get_layer("bn").weights if "moving" in w.name]  # noqa: E731
    assert len(stats(twin)) == 2
    for a, b in zip(stats(twin), stats(model)):
        np.testing.assert_array_equal(a, b)  # moving mean and variance as trained; gamma, beta may train
    assert not np.allclose(twin.get_layer("conv").get_weights()[0], model.get_layer("conv").get_weights()[0])


def test_manifest_lists_the_qat_float_twin_and_it_loads(exported_run):
    from skinscan_edge.core.manifest import entries, verify_float_twin
    from skinscan_edge.runtimes.models import open_model

    by_name = {e["name"]: e for e in entries(exported_run)}
    assert [n for n, e in by_name.items() if e.get("float_twin")] == ["tflite-qat-int8"]
    twin = by_name["tflite-qat-int8"]["float_twin"]
    path = verify_float_twin(exported_run, by_name["tflite-qat-int8"])
    assert path == exported_run.exports / "model_qat_float_twin.keras"
    assert sha256_file(path) == twin["sha256"] and path.stat().st_size == twin["size_bytes"]
    assert twin["check_images"] > 0 and twin["check_prob_max_abs_diff_vs_qat_without_fake_quant"] <= 1e-4
    x = np.full((2, IMG, IMG, 3), 128, np.float32)
    probs = open_model(exported_run, {**twin, "name": "twin"}).predict(x)
    assert probs.shape == (2, len(exported_run.labels())) and np.allclose(probs.sum(1), 1, atol=1e-4)

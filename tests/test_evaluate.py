"""`evaluate` end to end on a tiny run whose model we wrote by hand.

The model is a nearest-colour classifier (Rescaling, an identity 1x1 conv, average pooling,
a Dense layer whose weights are the class colours), so its accuracy is high but not perfect
on noisy synthetic images, and an export with the wrong input scale really does lose accuracy.
Exports: a clean fp32 TFLite, a clean fp32 ONNX (built with onnx.helper), and a damaged TFLite.
"""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import skinscan_edge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from skinscan_edge.cli import app
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.evaluation.evaluate import EvaluateConfig, evaluate_run
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.files import sha256_file, write_json

LABELS = ["Acne", "Actinic keratosis", "Basal cell carcinoma", "Dermatofibroma", "Eczema",
          "Melanocytic nevus", "Melanoma", "Psoriasis", "Seborrheic keratosis", "Vascular lesion"]
SIZE, PER_CLASS, SOFTMAX_SCALE = 32, 4, 8.0


def _build_model(colors, scale=1 / 127.5, offset=-1.0):
    from skinscan_edge.core.tf import keras

    k = keras()
    inp = k.Input((SIZE, SIZE, 3), name="image")
    x = k.layers.Rescaling(scale, offset=offset)(inp)
    x = k.layers.Conv2D(3, 1, use_bias=False, name="conv")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    out = k.layers.Dense(len(LABELS), activation="softmax", name="probs")(x)
    model = k.Model(inp, out)
    mu = colors / 127.5 - 1.0  # class colours in the model's [-1, 1] input space
    model.get_layer("conv").set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    model.get_layer("probs").set_weights([(SOFTMAX_SCALE * 2 * mu.T).astype(np.float32),
                                          (-SOFTMAX_SCALE * (mu ** 2).sum(1)).astype(np.float32)])
    return model


def _to_tflite(model, path, tmp):
    """fp32 TFLite through a light SavedModel: input 'image', output {'probs': ...}."""
    from skinscan_edge.core.tf import tf

    t = tf()

    class Serve(t.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        @t.function(input_signature=[t.TensorSpec([None, SIZE, SIZE, 3], t.float32, name="image")])
        def serving_default(self, image):
            return {"probs": self.m(image, training=False)}

    serve = Serve(model)
    t.saved_model.save(serve, str(tmp), signatures={"serving_default": serve.serving_default})
    path.write_bytes(t.lite.TFLiteConverter.from_saved_model(str(tmp)).convert())


def _to_onnx(model, path):
    """The same graph by hand in ONNX: scale, NHWC->NCHW, conv, pool, dense, softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    kernel = model.get_layer("conv").get_weights()[0].transpose(3, 2, 0, 1)  # HWIO -> OIHW
    dense_w, dense_b = model.get_layer("probs").get_weights()
    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             [("scale", 1 / 127.5), ("offset", -1.0), ("kernel", kernel), ("w", dense_w), ("b", dense_b)]]
    nodes = [helper.make_node("Mul", ["image", "scale"], ["s"]), helper.make_node("Add", ["s", "offset"], ["x"]),
             helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "kernel"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", len(LABELS)])], inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx_model.ir_version = 9
    onnx.checker.check_model(onnx_model)
    path.write_bytes(onnx_model.SerializeToString())


def _write_images(data, rng, colors):
    from PIL import Image

    test = []
    for c, name in enumerate(LABELS):
        (data / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            # a per-image colour shift (what makes some images hard) plus pixel noise
            img = colors[c] + rng.normal(0, 28, 3) + rng.normal(0, 20, (36, 40, 3))
            rel = f"{name}/img{i}.png"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(data / rel)
            test.append([rel, c])
    good = (data / test[0][0]).read_bytes()
    (data / "Melanoma" / "broken.png").write_bytes(good[: len(good) // 3])  # truncated upload
    test.insert(7, ["Melanoma/broken.png", LABELS.index("Melanoma")])
    return test


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A complete run at 32 px with exports tflite-fp32, onnx-fp32 and tflite-damaged."""
    tmp = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    colors = rng.uniform(30, 225, size=(len(LABELS), 3))
    data, root = tmp / "data", tmp / "run"
    test = _write_images(data, rng, colors)
    run = RunDir(root)
    root.mkdir()
    run.labels_path.write_text("\n".join(LABELS) + "\n")
    write_json(run.config_path, {"train": {"img_size": SIZE}})
    write_json(run.split_path, {"root": str(data), "seed": 0,
                                "splits": {"train": test[:3], "val": test[3:6], "test": test}})
    run.set_status("complete")
    model = _build_model(colors)
    model.save(run.model_path)
    run.exports.mkdir()
    _to_tflite(model, run.exports / "model_fp32.tflite", tmp / "sm")
    _to_onnx(model, run.exports / "model_fp32.onnx")
    # the classic export bug: the file expects 0..1 pixels scaled differently from training
    _to_tflite(_build_model(colors, scale=1 / 255.0, offset=0.0), run.exports / "model_damaged.tflite",
               tmp / "sm_damaged")
    exports = [_entry(run, "tflite-fp32", "model_fp32.tflite", "tflite"),
               _entry(run, "onnx-fp32", "model_fp32.onnx", "onnx"),
               _entry(run, "tflite-damaged", "model_damaged.tflite", "tflite")]
    write_json(run.manifest_path, {"run": str(root), "exports": exports,
                                   "failures": [{"name": "onnx-int8", "error": "not built in this test"}]})
    return run


def _entry(run, name, file, fmt):
    path = run.exports / file
    return {"name": name, "file": file, "format": fmt, "precision": "fp32",
            "size_bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _copy(run, tmp_path) -> RunDir:
    shutil.copytree(run.root, tmp_path / "run")
    return RunDir(tmp_path / "run")


@pytest.fixture(scope="module")
def evaluated(tiny_run, tmp_path_factory):
    run = _copy(tiny_run, tmp_path_factory.mktemp("evaluated"))
    return run, evaluate_run(run, EvaluateConfig(batch_size=16, n_bootstrap=300, seed=5))


def _by_name(results):
    return {m["name"]: m for m in results["models"]}


def test_predictions_match_each_runtime_run_directly(evaluated):
    """The saved probabilities are what Keras, LiteRT and onnxruntime give, called by hand."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from skinscan_edge.data.imageio import load_rgb
    from skinscan_edge.core.rundir import load_keras_model

    run, results = evaluated
    saved = np.load(run.reports / "evaluate_predictions.npz")
    x = np.stack([load_rgb(p, SIZE) for p in saved["paths"]]).astype(np.float32)
    np.testing.assert_allclose(saved["probs_keras"], load_keras_model(run.model_path)(x).numpy(), atol=1e-6)
    interp = Interpreter(model_path=str(run.exports / "model_fp32.tflite"))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    tfl = []
    for img in x:
        interp.set_tensor(inp, img[None])
        interp.invoke()
        tfl.append(interp.get_tensor(out)[0])
    np.testing.assert_allclose(saved["probs_tflite-fp32"], np.array(tfl), atol=1e-6)
    sess = ort.InferenceSession(str(run.exports / "model_fp32.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(saved["probs_onnx-fp32"], sess.run(None, {"image": x})[0], atol=1e-6)
    assert list(saved["models"]) == ["keras", "tflite-fp32", "onnx-fp32", "tflite-damaged"]


def _ece(y, probs, bins):
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        m = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if m.any():
            total += m.sum() / len(y) * abs((pred[m] == y[m]).mean() - conf[m].mean())
    return total


@pytest.mark.parametrize("name", ["keras", "tflite-fp32", "onnx-fp32", "tflite-damaged"])
def test_json_numbers_equal_an_independent_recomputation(evaluated, name):
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, recall_score

    run, results = evaluated
    row = _by_name(json.loads((run.reports / "evaluate.json").read_text()))[name]
    saved = np.load(run.reports / "evaluate_predictions.npz")
    y, base, probs = saved["y_true"], saved["probs_keras"].astype(float), saved[f"probs_{name}"].astype(float)
    pred, pred_base = probs.argmax(1), base.argmax(1)
    assert row["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert row["delta_accuracy_pp"] == pytest.approx(100 * (accuracy_score(y, pred) - accuracy_score(y, pred_base)))
    assert row["top1_agreement"] == pytest.approx(np.mean(pred == pred_base))
    assert row["prob_mean_abs_diff"] == pytest.approx(np.abs(probs - base).mean(), abs=1e-9)
    assert row["prob_max_abs_diff"] == pytest.approx(np.abs(probs - base).max(), abs=1e-9)
    assert row["ece"] == pytest.approx(_ece(y, probs, 15))
    rec = recall_score(y, pred, labels=range(10), average=None, zero_division=0)
    rec_base = recall_score(y, pred_base, labels=range(10), average=None, zero_division=0)
    assert row["recall_delta_pp"] == pytest.approx(dict(zip(LABELS, 100 * (rec - rec_base))))
    worst = int(np.argmax(rec_base - rec))
    if rec_base[worst] > rec[worst]:
        assert (row["worst_recall_drop_class"], row["worst_recall_drop_pp"]) == \
            (LABELS[worst], pytest.approx(100 * (rec_base[worst] - rec[worst])))
    else:
        assert (row["worst_recall_drop_class"], row["worst_recall_drop_pp"]) == (None, 0.0)
    report = classification_report(y, pred, labels=range(10), target_names=LABELS, output_dict=True,
                                   zero_division=0)
    assert row["classification_report"] == json.loads(json.dumps(report))
    assert row["confusion_matrix"] == confusion_matrix(y, pred, labels=range(10)).tolist()
    assert (run.root / row["confusion_png"]).stat().st_size > 0
    flipped = [str(p) for p in saved["paths"][pred != pred_base]]
    assert [f["path"] for f in row["flips"]] == flipped and row["num_flips"] == len(flipped)
    # the paired bootstrap, as a plain loop with the same seed
    rng, d = np.random.default_rng(5), (pred == y).astype(float) - (pred_base == y).astype(float)
    means = [d[rng.integers(0, len(y), len(y))].mean() for _ in range(300)]
    lo, hi = 100 * np.quantile(means, [0.025, 0.975])
    assert (row["delta_accuracy_ci95_low_pp"], row["delta_accuracy_ci95_high_pp"]) == pytest.approx((lo, hi))


def test_clean_fp32_exports_agree_and_pass(evaluated):
    _, results = evaluated
    rows = _by_name(results)
    assert 0.6 <= rows["keras"]["accuracy"] < 1.0  # a real task: some images are hard
    for name in ("tflite-fp32", "onnx-fp32"):
        assert rows[name]["top1_agreement"] == 1.0 and rows[name]["num_flips"] == 0
        assert rows[name]["prob_max_abs_diff"] < 1e-4
        assert rows[name]["delta_accuracy_pp"] == 0.0
        assert not any(f["model"] == name for f in results["gate"]["failures"])


def test_damaged_export_fails_the_gate_with_its_name_metric_and_amount(evaluated):
    _, results = evaluated
    damaged = _by_name(results)["tflite-damaged"]
    drop = -damaged["delta_accuracy_pp"]
    assert drop > 10 and damaged["top1_agreement"] < 0.9
    assert results["gate"]["passed"] is False
    failures = results["gate"]["failures"]  # records: model, metric, limit, value
    assert {"model": "tflite-damaged", "metric": "accuracy_drop_pp", "limit": 1.0, "value": pytest.approx(drop)} \
        in failures
    cls, pp = damaged["worst_recall_drop_class"], damaged["worst_recall_drop_pp"]
    assert {"model": "tflite-damaged", "metric": "recall_drop_pp", "class": cls, "limit": 2.0,
            "value": pytest.approx(pp)} in failures
    assert all(f["model"] == "tflite-damaged" for f in failures)
    from skinscan_edge.core.metrics import failure_text  # worded in one place, for every reader

    assert failure_text(failures[0]) == (f"tflite-damaged: accuracy dropped {drop:.2f} pp vs Keras "
                                         f"(limit 1.00 pp, over by {drop - 1:.2f})")


def test_bad_image_is_skipped_with_its_reason_and_reports_are_written(evaluated):
    run, results = evaluated
    assert results["num_images"] == PER_CLASS * len(LABELS)
    assert [(s["path"].endswith("Melanoma/broken.png"), s["reason"]) for s in results["skipped"]] == \
        [(True, "truncated")]
    assert json.loads((run.reports / "evaluate.json").read_text()) == json.loads(json.dumps(results))
    md = (run.reports / "evaluate.md").read_text()
    assert "## Gate: FAILED" in md and "onnx-int8 was not produced" in md
    for name in ("keras", "tflite-fp32", "onnx-fp32", "tflite-damaged"):
        assert f"| {name} |" in md and (run.reports / f"evaluate_confusion_{name}.png").exists()


def _invoke(*args):
    result = CliRunner().invoke(app, ["evaluate", *map(str, args)])
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith(("error:", "gate failed:"))]
    return result, lines


def test_a_split_without_groups_has_no_leak_count_and_says_how_to_re_split(evaluated):
    run, results = evaluated
    assert results["num_leaked_images"] is None and "`skinscan-edge train --data" in results["leak_warning"]
    assert "predates near-duplicate detection" in (run.reports / "evaluate.md").read_text()


def test_leak_count_in_evaluate_json_on_a_split_made_by_hand_to_leak(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    split = json.loads(run.split_path.read_text())
    test = split["splits"]["test"]
    paths = [p for p, _ in test[:7]]
    split["splits"] = {"train": [test[0]], "val": [test[1]], "test": test[2:]}
    # leaked: paths[2] (grouped with a train image), paths[3] and [4] (with a val image); not [5], [6] (all test)
    split["groups"] = [[paths[0], paths[2]], [paths[1], paths[3], paths[4]], [paths[5], paths[6]]]
    write_json(run.split_path, split)
    evaluate_run(run, EvaluateConfig(formats=["onnx-fp32"], n_bootstrap=10))
    saved = json.loads((run.reports / "evaluate.json").read_text())
    assert saved["num_leaked_images"] == 3 and saved["leaked_images"] == sorted(paths[2:5])
    assert saved["leak_warning"] is None
    assert "Near-duplicates: 3 of the test images" in (run.reports / "evaluate.md").read_text()


def test_cli_passes_clean_exports_and_prints_the_table(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    result, lines = _invoke(run.root, "--formats", "tflite-fp32,onnx-fp32", "--bootstrap", "50",
                            "--min-agreement", "1.0", "--critical-class", "Melanoma")
    assert result.exit_code == 0, result.output
    assert lines == [] and "gate passed (2 of 3 requested exports checked; partial set)" in result.stdout
    assert "warning: split.json predates near-duplicate detection" in result.stderr  # tiny_run's split has no groups
    assert "tflite-fp32" in result.stdout and "onnx-fp32" in result.stdout


def test_cli_fails_the_gate_with_one_line_per_failure(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    result, lines = _invoke(run.root, "--formats", "tflite-damaged", "--bootstrap", "50",
                            "--critical-class", "Melanoma", "--max-recall-drop", "100", "--min-agreement", "0.95")
    assert result.exit_code == 1, result.output
    assert [ln.split(" dropped")[0].split(" with Keras")[0] for ln in lines] == \
        ["gate failed: tflite-damaged: accuracy", "gate failed: tflite-damaged: top-1 agreement"]


def test_tampered_export_is_refused_before_anything_runs(tiny_run, tmp_path):
    run = _copy(tiny_run, tmp_path)
    with open(run.exports / "model_fp32.tflite", "ab") as f:
        f.write(b"\0")
    result, lines = _invoke(run.root)
    assert result.exit_code == 2
    assert len(lines) == 1 and lines[0].startswith("error: export tflite-fp32 (model_fp32.tflite) does not "
                                                   "match its manifest SHA-256")
    assert not (run.reports / "evaluate.json").exists()
    with pytest.raises(SkinscanError, match="SHA-256"):
        evaluate_run(run, EvaluateConfig(formats=["tflite-fp32"]))


@pytest.mark.parametrize("labels, message", [
    (LABELS + ["Rosacea"], "keras outputs shape (31, 10) but labels.txt lists 11 classes; the run's labels don't match"),
    (LABELS[:9], "split.json uses label index 9 but labels.txt lists only 9 classes"),
])
def test_labels_that_do_not_match_the_model_are_refused(tiny_run, tmp_path, labels, message):
    run = _copy(tiny_run, tmp_path)
    run.labels_path.write_text("\n".join(labels) + "\n")
    result, lines = _invoke(run.root, "--formats", "tflite-fp32")
    assert result.exit_code == 2 and len(lines) == 1 and message in lines[0]


@pytest.mark.parametrize("args, message", [
    (["--critical-class", "melanoma"],
     "error: unknown class 'melanoma'; valid labels: " + ", ".join(LABELS) + " (did you mean 'Melanoma'?)"),
    (["--model", "tflite-fp16"], "error: unknown model 'tflite-fp16'; valid models: keras, tflite-fp32"),
    (["--min-agreement", "99"], "error: --min-agreement is a share between 0 and 1, got 99.0"),
])
def test_unknown_names_and_bad_values_are_one_line_errors(tiny_run, args, message):
    result, lines = _invoke(tiny_run.root, *args)
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(message)


# --- the QAT float twin (issue 12): a second, ungated row ------------------------------------
def test_qat_is_also_scored_against_its_float_twin_and_only_it(piped):
    run, _ = piped
    results = json.loads((run / "reports" / "evaluate.json").read_text())
    twins = {m["name"]: m["vs_float_twin"] for m in results["models"] if "vs_float_twin" in m}
    assert list(twins) == ["tflite-qat-int8"]
    t = twins["tflite-qat-int8"]
    assert t["file"] == "exports/model_qat_float_twin.keras"
    # Every number recomputed from the saved probabilities (the twin's are saved beside the models').
    npz = np.load(run / "reports" / "evaluate_predictions.npz")
    y, qat, twin, keras = (npz["y_true"], npz["probs_tflite-qat-int8"], npz["twin_probs_tflite-qat-int8"],
                           npz["probs_keras"])
    assert "tflite-qat-int8 float twin" not in list(npz["models"])
    assert t["top1_agreement"] == pytest.approx((qat.argmax(1) == twin.argmax(1)).mean())
    assert t["twin_accuracy"] == pytest.approx((twin.argmax(1) == y).mean())
    assert t["delta_accuracy_pp"] == pytest.approx(100 * ((qat.argmax(1) == y).mean() - (twin.argmax(1) == y).mean()))
    assert t["twin_top1_agreement_with_keras"] == pytest.approx((twin.argmax(1) == keras.argmax(1)).mean())
    assert t["delta_accuracy_ci95_low_pp"] <= t["delta_accuracy_pp"] <= t["delta_accuracy_ci95_high_pp"]
    # Rendered, labelled, in every report that shows the Keras comparison.
    title = "Against its float twin: what quantization alone costs (not gated)"
    assert title in (run / "reports" / "evaluate.md").read_text()
    assert title in (run / "reports" / "index.html").read_text()
    assert "`tflite-qat-int8` against its float twin (not gated)" in (run / "MODEL_CARD.md").read_text()


def test_the_gate_ignores_the_float_twin_row(piped):
    from skinscan_edge.core.config import GateConfig
    from skinscan_edge.core.metrics import check_gate

    run, _ = piped
    results = json.loads((run / "reports" / "evaluate.json").read_text())
    gate = GateConfig(**{k: results["gate"][k] for k in ("max_accuracy_drop_pp", "max_recall_drop_pp",
                                                         "critical_classes", "min_agreement")})
    assert check_gate(results, gate) == results["gate"]["failures"]
    qat = next(m for m in results["models"] if m["name"] == "tflite-qat-int8")
    ruinous = {"delta_accuracy_pp": -90.0, "top1_agreement": 0.0,
               "recall_delta_pp": {c: -90.0 for c in results["labels"]}}
    strict = GateConfig(min_agreement=0.0)
    before = check_gate(results, strict)
    qat["vs_float_twin"].update(ruinous)
    assert check_gate(results, strict) == before  # the twin row is never gated
    as_a_row = check_gate({**results, "models": [{**qat, **ruinous}]}, strict)  # those numbers would fail...
    from skinscan_edge.core.metrics import failure_text

    assert "tflite-qat-int8: accuracy dropped 90.00 pp vs Keras" in failure_text(as_a_row[0])  # ...where the gate reads

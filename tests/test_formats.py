"""The export set as one whole: an interrupted export is never taken for a finished one, and
a new format is one converter plus one runtime (the README's "Adding a format")."""

from __future__ import annotations

import json

import pytest


def _one_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


# --- an interrupted export ---------------------------------------------------------------------
def test_ctrl_c_marks_the_manifest_interrupted_with_what_was_asked_and_written(interrupted_export):
    steps = interrupted_export
    assert steps["rc"] == 130, steps["stderr"]
    manifest = steps["manifest"]
    assert manifest["state"] == "interrupted"
    assert manifest["requested"] == ["tflite-fp32", "onnx-fp32", "tflite-fp16"]
    assert [e["name"] for e in manifest["exports"]] == ["tflite-fp32"]


@pytest.mark.parametrize("command", ["evaluate", "benchmark", "report", "predict"])
def test_every_reader_refuses_an_interrupted_export_set_in_one_line(interrupted_export, command):
    result = interrupted_export["refused"][command] if command != "predict" else interrupted_export["predict"]
    assert result.exit_code == 2
    line = _one_line(result)
    assert line.startswith("error: export was interrupted: 1 of 3 requested exports written; run "
                           "`skinscan-edge export "), line
    assert "--precision fp16` again" in line


def test_a_named_subset_of_the_written_exports_may_still_be_evaluated_and_says_partial(interrupted_export):
    result = interrupted_export["subset"]
    assert result.exit_code == 0, result.output
    assert "gate passed (1 of 3 requested exports checked; partial set)" in result.stdout


def test_the_same_export_again_converts_only_what_is_missing(interrupted_export):
    steps = interrupted_export
    assert steps["again"].exit_code == 0, steps["again"].output
    assert "tflite-fp32      kept" in steps["again"].output
    assert steps["first_file_untouched"]
    after = steps["manifest_after"]
    assert after["state"] == "complete" and not after["failures"]
    assert sorted(e["name"] for e in after["exports"]) == ["onnx-fp32", "tflite-fp16", "tflite-fp32"]
    kept = {e["name"]: e for e in after["exports"]}["tflite-fp32"]
    assert kept == {e["name"]: e for e in steps["manifest"]["exports"]}["tflite-fp32"]  # same record, same hash


def test_evaluate_then_checks_the_whole_set_and_says_so(interrupted_export):
    result = interrupted_export["evaluate_after"]
    assert result.exit_code == 0, result.output
    assert "gate passed (3 of 3 requested exports checked)" in result.stdout


# --- adding a format ---------------------------------------------------------------------------
def test_a_toy_format_is_exported_through_the_table_keeping_the_other_files(toy_format):
    assert toy_format["export"].exit_code == 0, toy_format["export"].output
    manifest = json.loads((toy_format["run"] / "exports" / "manifest.json").read_text())
    toy = {e["name"]: e for e in manifest["exports"]}["keras-h5"]
    assert toy["format"] == "keras-h5" and toy["file"] == "model.h5" and toy["notes"].startswith("toy format")
    assert (toy_format["run"] / "exports" / "model.h5").stat().st_size == toy["size_bytes"]
    assert "tflite-fp32      kept" in toy_format["export"].output  # not converted again


def test_a_toy_format_is_evaluated_like_any_export(toy_format):
    assert toy_format["evaluate"].exit_code == 0, toy_format["evaluate"].output
    results = json.loads((toy_format["run"] / "reports" / "evaluate.json").read_text())
    toy = {m["name"]: m for m in results["models"]}["keras-h5"]
    # the same model in another file format: the same answers as Keras
    assert toy["top1_agreement"] == 1.0 and toy["prob_max_abs_diff"] < 1e-5
    assert toy["format"] == "keras-h5" and toy["file"] == "exports/model.h5"


def test_a_toy_format_is_benchmarked_in_its_own_worker_process(toy_format):
    assert toy_format["benchmark"].exit_code == 0, toy_format["benchmark"].output
    rows = json.loads((toy_format["run"] / "reports" / "benchmark.json").read_text())["rows"]
    toy = {r["model"]: r for r in rows}["keras-h5"]
    assert toy["latency_p50_ms"] > 0 and toy["peak_rss_mb"] > 0 and toy["accelerator"] == "TensorFlow /CPU:0"


def test_a_toy_format_predicts_what_keras_predicts(toy_format):
    assert toy_format["predict"].exit_code == 0, toy_format["predict"].output
    toy = json.loads(toy_format["predict"].stdout)["results"][0]["top_k"]
    keras = json.loads(toy_format["predict_keras"].stdout)["results"][0]["top_k"]
    assert [t["label"] for t in toy] == [t["label"] for t in keras]
    assert [t["score"] for t in toy] == pytest.approx([t["score"] for t in keras], abs=1e-5)


def test_without_the_plugin_the_format_is_a_one_line_error(toy_format):
    result = toy_format["without_plugin"]
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]  # (keras' progress bar came first)
    assert len(errors) == 1 and result.stderr.strip().endswith(errors[0]), result.stderr
    assert errors[0].startswith("error: unknown format 'keras-h5'; valid formats: keras, onnx, tflite")


def test_a_toy_format_appears_in_every_table_plot_and_check(toy_format):
    """Every table that lists formats derives from the one spec: none may leave the toy out."""
    run = toy_format["run"]
    assert toy_format["report"].exit_code == 0, toy_format["report"].output
    for name in ("reports/evaluate.md", "reports/benchmark.md", "reports/benchmark.csv", "reports/index.html",
                 "MODEL_CARD.md"):
        assert "keras-h5" in (run / name).read_text(), f"{name} leaves the toy format out"
    assert "| keras-h5 | keras-h5 | fp32 |" in (run / "reports/evaluate.md").read_text()
    assert toy_format["tables"].exit_code == 0, toy_format["tables"].output
    tables = json.loads(toy_format["tables"].stdout)
    assert "h5" in tables["precisions"] and tables["spec"] == ["fp32", "fp32", "keras-h5"]
    assert tables["floor_ms"] == pytest.approx(20.0)  # held against the fp32 peak, as its spec says
    assert tables["target"] and "keras-h5" in tables["plot"]
    assert "`keras-h5`" in tables["card_dtype"]
    # the quantization-order check compares a format's files with each other, the toy's too
    assert len(tables["order_checked"]) == 1 and "keras-h5-q" in tables["order_checked"][0]

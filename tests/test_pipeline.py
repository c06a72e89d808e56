"""Issue 7: `pipeline` (stages skipped when finished and valid), `predict`, and the HTML report.

The pipeline runs on a copy of the session's trained and exported run, with the same training
and export settings, so its train and export stages must be found finished (that is the
resumable-state check) while evaluate, benchmark and report really run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke, pipeline_args
from skinscan_edge.benchmark.quant_order import MARGIN
from skinscan_edge.core.formats import spec
from skinscan_edge.data.imageio import REASONS

def stages(run: Path) -> dict:
    return {k: v["state"] for k, v in json.loads((run / "pipeline.json").read_text())["stages"].items()}


def test_pipeline_reuses_finished_stages_and_runs_the_rest(piped):
    run, result = piped
    assert result.exit_code == 0, result.output
    assert stages(run) == {"train": "skipped", "export": "skipped", "evaluate": "ran", "benchmark": "ran",
                           "report": "ran", "bundle": "skipped"}  # no --android: nothing to bundle
    for name in ("evaluate.json", "benchmark.json", "index.html"):
        assert (run / "reports" / name).is_file()
    card = (run / "MODEL_CARD.md").read_text()  # written by the report stage, linked from the page
    assert "## Evaluation" in card and "**The gate: PASSED.**" in card
    assert '<a href="../MODEL_CARD.md">' in (run / "reports" / "index.html").read_text()
    assert result.stdout.strip().splitlines()[-1] == f"report: {run / 'reports' / 'index.html'}"
    for i, stage in enumerate(("train", "export", "evaluate", "benchmark", "report", "bundle"), 1):
        assert f"stage {i}/6: {stage}" in result.output
    ran = json.loads((run / "pipeline.json").read_text())["stages"]
    assert all(ran[s]["peak_rss_mib"] > 100 for s in ("evaluate", "benchmark", "report"))  # each stage's own peak
    assert "peak RSS MiB" in result.output


def test_evaluate_and_report_state_near_duplicates_and_conflicts(piped):
    run, _ = piped
    evaluation = json.loads((run / "reports" / "evaluate.json").read_text())
    assert evaluation["num_leaked_images"] == 0 and evaluation["leak_warning"] is None  # a group-aware split
    page = (run / "reports" / "index.html").read_text()
    assert f"0 of the {evaluation['num_images']} test images</span> have a near-duplicate" in page
    assert "Near-duplicates and label conflicts" in page and "melanoma_0002_planted-resize.jpg" in page


def test_rerun_skips_every_finished_stage(piped, demo_data):
    run, _ = piped
    again = invoke(pipeline_args(demo_data, run))
    assert again.exit_code == 0, again.output
    assert stages(run) == {"train": "skipped", "export": "skipped", "evaluate": "skipped",
                           "benchmark": "skipped", "report": "ran", "bundle": "skipped"}
    assert again.output.count("skipped (") == 5  # the bundle too: no --android


def _piped_config(run):
    """The PipelineConfig that `piped` ran with (conftest's TRAIN_ARGS, EXPORT_ARGS, PIPELINE_ARGS)."""
    from skinscan_edge.core.config import ExportConfig, TrainConfig
    from skinscan_edge.core.config_stages import BenchmarkConfig, EvaluateConfig
    from skinscan_edge.core.formats import EVERY_PRECISION
    from skinscan_edge.stages import PipelineConfig

    train = TrainConfig.from_dict(json.loads((run / "config.json").read_text())["train"])
    return PipelineConfig(train=train, export=ExportConfig(precisions=list(EVERY_PRECISION), calib_samples=48),
                          evaluate=EvaluateConfig(max_accuracy_drop_pp=100.0, max_recall_drop_pp=100.0),
                          benchmark=BenchmarkConfig(threads=(1,), batches=(1, 2), min_time_s=0.05))


def _damage_int8(cfg, run: Path, tmp: Path) -> Path:
    damaged = tmp / "run"
    shutil.copytree(run, damaged, ignore=shutil.ignore_patterns("*.onnx", "model_fp16.tflite", "model_dynamic*"))
    blob = damaged / "exports" / "model_int8.tflite"
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    return damaged


def _set(path: str, value):
    def change(cfg, run, tmp):
        section, name = path.split(".")
        setattr(getattr(cfg, section), name, value)
        return run
    return change


# (case, change to the settings or the files, stage, still current?)
STAGE_CASES = [
    ("same settings", _set("export.calib_samples", 48), "export", True),
    ("other calibration size", _set("export.calib_samples", 64), "export", False),
    ("more jobs: how, not what", _set("export.jobs", 1), "export", True),
    ("a damaged int8 file", _damage_int8, "export", False),
    ("same gate", _set("evaluate.max_recall_drop_pp", 100.0), "evaluate", True),
    ("stricter gate: evaluate again", _set("evaluate.max_recall_drop_pp", 0.0), "evaluate", False),
    ("stricter gate: benchmark stays", _set("evaluate.max_recall_drop_pp", 0.0), "benchmark", True),
    ("other benchmark threads", _set("benchmark.threads", (2,)), "benchmark", False),
]


@pytest.mark.parametrize("case", STAGE_CASES, ids=[c[0] for c in STAGE_CASES])
def test_a_stage_is_due_exactly_when_its_inputs_changed(piped, tmp_path, case):
    from skinscan_edge.stages import stage_is_current
    from skinscan_edge.core.rundir import RunDir

    _, change, stage, current = case
    run, _ = piped
    cfg = _piped_config(run)
    where = change(cfg, run, tmp_path)
    assert bool(stage_is_current(stage, cfg, RunDir(where))) is current


def test_a_finished_run_with_other_training_settings_is_refused(piped):
    from skinscan_edge.core.config import TrainConfig
    from skinscan_edge.core.errors import SkinscanError
    from skinscan_edge.stages import PipelineConfig, stage_is_current
    from skinscan_edge.core.rundir import RunDir

    run, _ = piped
    other = TrainConfig.from_dict({**_piped_config(run).train.to_dict(), "seed": 8})
    with pytest.raises(SkinscanError, match="trained with other settings"):
        stage_is_current("train", PipelineConfig(train=other), RunDir(run))


# --- report -----------------------------------------------------------------------------------
def test_report_recommends_the_fastest_export_that_passed_the_gate(piped):
    run, _ = piped
    evaluation = json.loads((run / "reports/evaluate.json").read_text())
    bench = json.loads((run / "reports/benchmark.json").read_text())
    failed = {f["model"] for f in evaluation["gate"]["failures"]}
    passed = [m["name"] for m in evaluation["models"]
              if m["name"] != "keras" and m["name"] not in failed and m["format"] == "tflite"]  # phones run TFLite
    # The stated rule (bundle --help): batch-1 p50 on the CPU at the most threads measured; files
    # within the benchmark's noise margin of the fastest are a tie, broken toward full integer.
    cpu = [r for r in bench["rows"] if r.get("latency_p50_ms") and r["device"] == "cpu"]
    most = max(r.get("threads") or 0 for r in cpu)
    p50 = {r["model"]: r["latency_p50_ms"] for r in cpu if (r.get("threads") or 0) == most}
    fastest = min(passed, key=lambda n: p50[n])
    tie = [n for n in passed if p50[n] <= p50[fastest] * (1 + MARGIN)]
    expected = min(tie, key=lambda n: (not spec(n).full_integer, p50[n]))
    html = (run / "reports/index.html").read_text()
    assert f"Ship <code>{expected}</code>" in html, (p50, passed)
    if expected != fastest:  # a tie broken toward the full-integer file says so
        assert "noise margin" in html
    assert "SYNTHETIC DEMO DATA" in html
    for m in evaluation["models"]:
        assert f"<code>{m['name']}</code>" in html
    assert "Per-class recall change" in html and "Training curves" in html and "Dataset" in html


def test_report_without_evaluate_or_benchmark_names_the_missing_commands(run_copy):
    from skinscan_edge.report.page import build_report

    for name in ("evaluate.json", "benchmark.json"):
        (run_copy.reports / name).unlink(missing_ok=True)
    html = build_report(run_copy).read_text()
    assert "No file to ship yet" in html and "skinscan-edge export" in html


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")
def test_report_renders_in_headless_chromium_with_every_image(piped, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    run, _ = piped
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get((run / "reports/index.html").resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.src.slice(0, 22)])")
        title = driver.title
        height = driver.execute_script("return document.body.scrollHeight")
    finally:
        driver.quit()
    n_models = len(json.loads((run / "reports/evaluate.json").read_text())["models"])
    assert len(images) == n_models + 3  # confusions + latency/accuracy + curves + Keras confusion
    broken = [alt for alt, complete, width, _ in images if not complete or width == 0]
    assert not broken, f"images that did not render: {broken}"
    assert all(src == "data:image/png;base64," for *_, src in images)  # self-contained
    assert title == f"skinscan-edge report: {run.name}" and height > 2000


# --- predict ----------------------------------------------------------------------------------
def test_predict_json_matches_the_runtime_and_is_sorted(exported_run):
    from skinscan_edge.data.imageio import load_rgb
    from skinscan_edge.runtimes.models import open_model

    paths = [p for p, _ in exported_run.split_items("test")[:3]]
    result = invoke(["predict", exported_run.root, *paths, "--model", "tflite-fp32", "--top-k", 3, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    labels = exported_run.labels()
    rt = open_model(exported_run, "tflite-fp32")
    probs = rt.predict(np.stack([load_rgb(p, exported_run.img_size()) for p in paths]))
    assert doc["model"] == "tflite-fp32" and [r["path"] for r in doc["results"]] == [str(p) for p in paths]
    for r, p in zip(doc["results"], probs):
        scores = [t["score"] for t in r["top_k"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert [t["label"] for t in r["top_k"]] == [labels[j] for j in np.argsort(-p)[:3]]
        assert scores == pytest.approx(np.sort(p)[::-1][:3], abs=1e-6)


def test_predict_text_reports_a_bad_image_and_still_predicts_the_rest(exported_run, tmp_path):
    good = exported_run.split_items("test")[0][0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = invoke(["predict", exported_run.root, good, bad])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(f"{good}: ") and lines[0].count(",") == 2  # top-3, keras by default
    assert lines[1].startswith(f"error: {bad}: ") and lines[1].split(": ")[2].split(" ")[0] in REASONS


def test_the_evaluate_stage_line_counts_each_kind_of_extra_row_by_its_name():
    """The demo's evaluate stage has 7 exports and 4 arm64 rows (2 files x 2 emulated CPUs); its line
    once called those "MediaPipe client row(s)" because both kinds carry a ``client`` field."""
    from skinscan_edge.stages import evaluate_summary

    def row(name, **extra):
        return {"name": name, **extra}

    exports = [row(n) for n in ("tflite-fp32", "tflite-int8", "onnx-int8")]
    arm64 = [row(f"tflite-int8 @arm64 {cpu}", client="arm64 kernels under QEMU", arm64={"cpu": cpu})
             for cpu in ("max", "cortex-a53")]
    mediapipe = [row("tflite-int8 (mediapipe)", client="mediapipe")]
    results = {"num_images": 120, "gate": {"passed": True, "failures": []},
               "models": [row("keras"), *exports, *arm64, *mediapipe]}
    assert evaluate_summary(results) == ("120 images, 3 exports + 1 MediaPipe client row(s) + 2 arm64 row(s); "
                                         "gate passed")
    results["models"] = [row("keras"), *exports, *arm64]
    assert evaluate_summary(results) == "120 images, 3 exports + 2 arm64 row(s); gate passed"

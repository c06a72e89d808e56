"""The model card: every figure it prints is read from the run's files.

The run here is built from the demo run's real files committed in docs/demo-run/ (config.json,
evaluate.json, benchmark.json; synthetic data), so no training is needed; the figures are
checked against those files and the intervals against an independent Wilson formula.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from skinscan_edge.release.model_card import per_class_intervals, render_model_card, wilson_interval, write_model_card
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.files import write_json

DEMO = Path(__file__).resolve().parents[1] / "docs" / "demo-run"


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval written out (Wilson 1927), to check scipy's."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.fixture
def demo_run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "run")
    (run.reports).mkdir(parents=True)
    config = json.loads((DEMO / "config.json").read_text())
    data = tmp_path / "data"
    data.mkdir()
    (data / "README.txt").write_text("SYNTHETIC demo data\n")
    config["data_root"] = str(data)
    write_json(run.config_path, config)
    run.labels_path.write_text("\n".join(config["labels"]) + "\n")
    write_json(run.skipped_path, [{"path": "Eksim/broken.jpg", "reason": "truncated", "detail": "x"}])
    for name in ("evaluate.json", "benchmark.json"):
        shutil.copy(DEMO / name, run.reports / name)
    return run


def test_wilson_interval_matches_the_formula():
    for k, n in [(10, 12), (0, 12), (12, 12), (57, 120)]:
        assert wilson_interval(k, n) == pytest.approx(_wilson(k, n), abs=1e-9)
    assert wilson_interval(0, 0) is None


def test_card_figures_come_from_the_run_files(demo_run):
    card = write_model_card(demo_run)
    assert card == demo_run.root / "MODEL_CARD.md"
    text = card.read_text()
    evaluation = json.loads((demo_run.reports / "evaluate.json").read_text())
    config = json.loads(demo_run.config_path.read_text())
    bench = json.loads((demo_run.reports / "benchmark.json").read_text())

    for heading in ("## Model details", "## Intended use", "## Out-of-scope use", "## Training data",
                    "## Training procedure", "## Evaluation", "## Quantization", "## Speed",
                    "## Bias, risks and limitations", "### Input contract"):
        assert f"\n{heading}\n" in text, heading
    assert "**Not a medical device.**" in text and "SYNTHETIC demo data" in text
    assert text.startswith("---\nlicense: apache-2.0\n") and "synthetic-data" in text

    # Per-class counts of the training data, and the skipped file
    counts = config["split_counts"]
    row = re.search(r"^\| Psoriasis \| (\d+) \| (\d+) \| (\d+) \|$", text, re.M)
    assert [int(v) for v in row.groups()] == [counts[s]["Psoriasis"] for s in ("train", "val", "test")]
    assert "**1 file(s) skipped** by the scanner (1 truncated)" in text and "`Eksim/broken.jpg`: truncated" in text

    # Keras per-class precision / recall: sklearn's classification report in evaluate.json, CI by formula
    keras = evaluation["models"][0]
    for label in evaluation["labels"]:
        rep = keras["classification_report"][label]
        got = re.search(rf"^\| {label} \| (\d+) \| ([0-9.]+)% \| \[([0-9.]+), ([0-9.]+)\] \| ([0-9.]+)% \| "
                        rf"\[([0-9.]+), ([0-9.]+)\] \|$", text, re.M)
        assert got, label
        support, prec, plo, phi, rec, rlo, rhi = (float(g) for g in got.groups())
        assert support == rep["support"]
        assert prec == pytest.approx(100 * rep["precision"], abs=0.05)
        assert rec == pytest.approx(100 * rep["recall"], abs=0.05)
        k = round(rep["recall"] * rep["support"])
        assert (rlo, rhi) == pytest.approx(tuple(100 * v for v in _wilson(k, int(rep["support"]))), abs=0.05)
        n_pred = round(k / rep["precision"]) if rep["precision"] else 0
        if n_pred:
            assert (plo, phi) == pytest.approx(tuple(100 * v for v in _wilson(k, n_pred)), abs=0.05)

    # Per-export deltas and the gate
    for m in evaluation["models"][1:]:
        line = next(l for l in text.splitlines() if l.startswith(f"| `{m['name']}` | {m['precision']} |"))
        assert f"{m['delta_accuracy_pp']:+.2f} [{m['delta_accuracy_ci95_low_pp']:+.2f}, " \
               f"{m['delta_accuracy_ci95_high_pp']:+.2f}]" in line
        assert f"| {m['top1_agreement']:.4f} |" in line
        assert line.endswith("| fail |") == any(f["model"] == m["name"] for f in evaluation["gate"]["failures"])
    assert "**The gate: FAILED.**" in text
    from skinscan_edge.core.metrics import failure_text

    for failure in evaluation["gate"]["failures"]:
        assert f"- {failure_text(failure)}" in text

    # Speed: benchmark rows, and the honest note that no phone was measured
    for r in bench["rows"]:
        if r.get("latency_p50_ms"):
            assert f"| `{r['model']}` | cpu | {r['threads']} | {r['latency_p50_ms']:,.2f} |" in text
    assert "No phone was measured for this run" in text
    assert "Nothing exported yet" in text  # this run has no manifest: the section names the command


def test_card_of_a_run_without_evaluation_names_the_commands(demo_run):
    for name in ("evaluate.json", "benchmark.json"):
        (demo_run.reports / name).unlink()
    text = render_model_card(demo_run)
    assert f"Not evaluated yet: run `skinscan-edge evaluate {demo_run.root}`." in text
    assert f"Not benchmarked yet: run `skinscan-edge benchmark {demo_run.root}`." in text


def test_per_class_intervals_from_a_confusion_matrix():
    rows = per_class_intervals([[3, 1], [0, 0]], ["a", "b"])
    assert (rows[0]["recall"], rows[0]["precision"]) == (0.75, 1.0)
    assert rows[1]["recall"] is None and rows[1]["recall_ci"] is None and rows[1]["predicted"] == 1
    assert rows[1]["precision"] == 0.0

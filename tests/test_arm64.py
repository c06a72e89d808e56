"""arm64 kernels under QEMU (skinscan_edge/evaluation/arm64.py): the Android bundle's golden vector on the
phone's kernels, and a small `evaluate --arm64` on the suite's run.

The emulated tests run in `make test-arm64` (run by .ci/run), which first sets up the arm64
environment from scratch (`make arm64-env`); `make test` skips them with that reason.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from skinscan_edge.evaluation import arm64
from skinscan_edge.core.config_stages import EvaluateConfig
from skinscan_edge.core.errors import SkinscanError

from conftest import cli
from test_android import bundle, tiny_int8, tiny_saved  # noqa: F401  (its tiny model and bundle fixtures)


def _env_missing() -> str | None:
    try:
        arm64.find_env()
    except SkinscanError as e:
        return str(e)
    return None


# Emulation is slow: `make test` leaves these to `make test-arm64` (which sets SKINSCAN_TEST_ARM64),
# so its time does not depend on whether this machine has the arm64 environment.
needs_arm64 = pytest.mark.skipif(not os.environ.get("SKINSCAN_TEST_ARM64") or bool(_env_missing()),
                                 reason=_env_missing() or "emulated arm64 tests run in `make test-arm64`")


def test_a_missing_arm64_environment_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINSCAN_ARM64_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("SKINSCAN_QEMU", "/bin/true")  # a 'qemu' that exists: the missing part is the Python
    with pytest.raises(SkinscanError, match=r"no arm64 Python in .*make arm64-env"):
        EvaluateConfig(arm64=True).validate()
    with pytest.raises(SkinscanError, match="did you mean 'cortex-a53'"):
        EvaluateConfig(arm64_cpus=["cortex-a35"]).validate()


def test_evaluate_arm64_without_the_environment_exits_2(tmp_path, tiny_int8):
    from test_android import _make_run

    run = _make_run(tmp_path, tiny_int8)
    run.model_path.write_bytes(b"")  # never read: the missing environment is reported before any model loads
    result = cli(["evaluate", run.root, "--arm64"], env={"SKINSCAN_ARM64_DIR": str(tmp_path / "none")})
    assert result.exit_code == 2, result.output
    assert "make arm64-env" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_compare_to_x86_counts_output_steps():
    x86 = np.array([[0.5, 0.25, 0.25], [0.75, 0.25, 0.0]], np.float32)
    arm = np.array([[0.25, 0.5, 0.25], [0.75, 0.25 - 3 / 256, 3 / 256]], np.float32)
    out = arm64.compare_to_x86(arm, x86, 1 / 256)
    assert out["x86_top1_agreement"] == 0.5 and out["x86_max_steps"] == 64
    assert out["x86_mean_steps"] == pytest.approx((64 + 3) / 2)


def check_golden(bundle: Path) -> dict:
    """The bundle's golden_image.png, decoded as an app would, through the arm64 LiteRT (XNNPACK, the
    default CPU path on Android) on each emulated CPU: every published top-3 score within the
    published tolerance. Returns the golden section."""
    from PIL import Image

    golden = json.loads((bundle / "metadata.json").read_text())["golden"]
    assert not golden["tolerance_basis"].count("not measured"), golden["tolerance_basis"]
    pixels = np.asarray(Image.open(bundle / golden["image"]).convert("RGB"))
    model = next(bundle.glob("skinscan_*.tflite"))
    families = {k["family"] for k in golden["kernel_scores"]}
    for cpu in arm64.DEFAULT_CPUS:
        assert f"arm64 XNNPACK ({cpu})" in families
        probs = arm64.run_models([{"name": "bundle", "path": model, "format": "tflite", "kernels": "xnnpack"}],
                                 pixels[None], cpu)["models"][0]["probs"][0]
        for top in golden["top3"]:
            off = abs(float(probs[top["index"]]) - top["score"])
            assert off <= golden["tolerance"] + 1e-6, (cpu, top, float(probs[top["index"]]), golden["tolerance"])
    return golden


@needs_arm64
def test_golden_vector_holds_on_arm64_kernels(bundle):
    """The tiny bundle of test_android.py (the real build_android_bundle path)."""
    _, out, _ = bundle
    check_golden(out)


@needs_arm64
@pytest.mark.timeout(2400)  # its own session waits for the suite's training and export first
def test_evaluate_arm64_on_the_suite_run(exported_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported_run.root, run, ignore=shutil.ignore_patterns(
        "tensorboard", "backup", "checkpoints", "reports", "cache"))
    # QEMU's emulation is all CPU, on both cores at once: a CPU-time bound of its own.
    result = cli(["evaluate", run, "--models", "tflite-int8", "--arm64", "--arm64-limit", 6,
                  "--max-accuracy-drop", 100, "--max-recall-drop", 100], timeout=2400)
    assert result.exit_code == 0, result.output
    results = json.loads((run / "reports" / "evaluate.json").read_text())
    rows = {m["name"]: m for m in results["models"]}
    x86 = rows["tflite-int8"]
    for cpu in arm64.DEFAULT_CPUS:
        row = rows[f"tflite-int8 @arm64 {cpu}"]
        a = row["arm64"]
        assert a["images"] == 6 == row["num_images"] and 0 <= a["x86_top1_agreement"] <= 1
        assert a["images_per_s"] > 0 and a["x86_max_steps"] >= 0
        assert row["recall_delta_pp"].keys() == x86["recall_delta_pp"].keys()
    # Which kernels ran: dot-product or i8mm instructions on max, none of them on the A53.
    assert rows["tflite-int8 @arm64 max"]["arm64"]["int8_kernels"].startswith(("i8mm", "dot-product"))
    assert rows["tflite-int8 @arm64 cortex-a53"]["arm64"]["int8_kernels"].startswith("NEON")
    # Gated like any row: a gate no file can pass names the arm64 rows too.
    from skinscan_edge.core.config import GateConfig
    from skinscan_edge.core.metrics import check_gate

    failures = check_gate(results, GateConfig(min_agreement=1.01))
    assert any(f["model"] == "tflite-int8 @arm64 cortex-a53" for f in failures), failures
    assert "## arm64 kernels under QEMU" in (run / "reports" / "evaluate.md").read_text()

    # The bundle of the suite's int8 file: its golden vector holds on arm64 within the published tolerance.
    made = cli(["bundle", run, "--model", "tflite-int8", "--out", tmp_path / "bundle"])
    assert made.exit_code == 0, made.output
    assert check_golden(tmp_path / "bundle")["tolerance_steps"] >= 1

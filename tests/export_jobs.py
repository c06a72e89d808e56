"""Slow, real-process parts of tests/test_formats.py, run as background jobs (conftest):
an export interrupted by Ctrl-C and then finished, and a toy format added as a plugin."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from conftest import EXPORT_ARGS, cli, scaled_timeout
from reliability_jobs import AS_IN_A_TERMINAL, start

TESTS = Path(__file__).resolve().parent
LENIENT = ["--bootstrap", 20, "--max-accuracy-drop", 100, "--max-recall-drop", 100]


def _copy(run: Path, dst: Path, *ignore: str) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("tensorboard", "backup", "checkpoints", "reports", *ignore))
    return dst


def interrupted_export(trained: Path, root: Path, image: Path) -> dict:
    """Ctrl-C after the first file of `export --fp16` (3 requested), the commands that must
    refuse the partial set, then the same export again and evaluate on the full set."""
    run = _copy(trained, root / "run", "exports")
    manifest = run / "exports" / "manifest.json"
    proc = start([sys.executable, "-c", AS_IN_A_TERMINAL, "export", str(run), "--fp16", "--jobs", "1"])
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        if manifest.exists() and json.loads(manifest.read_text())["exports"]:
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.1)
    _, err = proc.communicate(timeout=scaled_timeout(300))
    steps = {"rc": proc.returncode, "stderr": err, "manifest": json.loads(manifest.read_text())}
    steps["refused"] = {cmd: cli([cmd, run], timeout=300) for cmd in ("evaluate", "benchmark", "report")}
    steps["predict"] = cli(["predict", run, image, "--model", "tflite-fp32"], timeout=300)
    steps["subset"] = cli(["evaluate", run, "--model", "tflite-fp32", *LENIENT], timeout=300)
    first = run / "exports" / steps["manifest"]["exports"][0]["file"]
    before = first.stat().st_mtime_ns
    steps["again"] = cli(["export", run, "--fp16", "--jobs", "1"], timeout=600)
    steps["first_file_untouched"] = first.stat().st_mtime_ns == before
    steps["manifest_after"] = json.loads(manifest.read_text())
    steps["evaluate_after"] = cli(["evaluate", run, *LENIENT], timeout=300)
    return steps


def toy_format(exported: Path, root: Path, image: Path) -> dict:
    """docs/adding-a-format.md: tests/toy_format.py, named in SKINSCAN_EDGE_PLUGINS, is
    exported, evaluated, benchmarked and predicted through the unchanged commands."""
    run = _copy(exported, root / "run", "model_int8*", "model_qat*", "model_fp16*", "model_dynamic*")
    env = {"SKINSCAN_EDGE_PLUGINS": "toy_format",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    out = {"run": run}
    out["export"] = cli(["export", run, "--precision", "h5", *EXPORT_ARGS], env=env)
    out["evaluate"] = cli(["evaluate", run, "--model", "keras-h5", *LENIENT], env=env)
    out["benchmark"] = cli(["benchmark", run, "--model", "keras,keras-h5", "--threads", 1, "--batch", 1,
                            "--min-time", 0.05, "--warmup", 1, "--images", 4, "--no-floor"], env=env)
    out["predict"] = cli(["predict", run, image, "--model", "keras-h5", "--json"], env=env)
    out["predict_keras"] = cli(["predict", run, image, "--json"], env=env)
    out["report"] = cli(["report", run], env=env)
    out["tables"] = cli([sys.executable, "-c", TOY_TABLES, str(run)], env=env, python=True)
    out["without_plugin"] = cli(["evaluate", run, "--model", "keras-h5", *LENIENT])
    return out


#: What the tables derived from the format specs say of the toy format, in a process that loaded it.
TOY_TABLES = """
import json, sys
from skinscan_edge.benchmark import quant_order
from skinscan_edge.core import formats
from skinscan_edge.release import model_card
from skinscan_edge.core.host import floor_ms
from skinscan_edge.core.plots import latency_plot_rows
from skinscan_edge.core.rundir import RunDir
from pathlib import Path
run = RunDir(Path(sys.argv[1]))
bench = json.loads(run.benchmark_path.read_text())
spec = formats.spec("keras-h5")
print(json.dumps({
    "precisions": formats.precisions(), "spec": [spec.quant.precision, spec.quant.floor, spec.format],
    "floor_ms": floor_ms(1e9, spec.precision, {"fp32_gflops": 100.0, "int8_gops": 400.0}),
    "target": spec.precision in formats.target_precisions("fp32"),
    "plot": [r["model"] for r in latency_plot_rows(bench)[1]],
    "card_dtype": next(l for l in model_card.render_model_card(run).splitlines() if l.startswith("- dtype")),
    "order_checked": quant_order.slower_quantized([  # two files of the toy's format, the int8 one slower
        {"model": "keras-h5", "format": "keras-h5", "precision": "fp32", "device": "cpu", "threads": 1, "latency_p50_ms": 1.0},
        {"model": "keras-h5-q", "format": "keras-h5", "precision": "int8", "device": "cpu", "threads": 1,
         "latency_p50_ms": 2.0}], 1),
}))
"""

"""examples/skinscan_edge_notebook.ipynb runs end to end (nbclient), on SYNTHETIC data at 75 px.

The parameters cell gets tiny settings appended; the Kaggle download cell runs but does nothing
(``DATASET = "synthetic"``: no Kaggle credentials or internet on the build machines) and says so.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import scaled_timeout

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "skinscan_edge_notebook.ipynb"
API = ("train", "export", "evaluate", "benchmark", "predict", "report", "pipeline", "TrainConfig", "ExportConfig",
       "EvaluateConfig", "BenchmarkConfig", "SkinscanError")


def tiny_parameters(tmp_path: Path) -> str:
    """The parameters cell of the test run: synthetic data, 75 px, fp32 + int8, a lenient gate."""
    return "\n".join([
        "INSTALL = False",
        f"REPO_DIR = {str(NOTEBOOK.parents[1])!r}",
        'DATASET = "synthetic"',
        f"DATA_DIR = {str(tmp_path / 'data')!r}",
        f"RUN_DIR = {str(tmp_path / 'run')!r}",
        f"ANDROID_DIR = {str(tmp_path / 'android')!r}",
        "IMG_SIZE, EPOCHS, FINE_TUNE_EPOCHS, BATCH_SIZE, WEIGHTS = 75, 0, 1, 8, 'none'",
        "TRAIN_EXTRA = {'unfreeze_from': 'input', 'fine_tune_lr': 1e-3, 'augment': False, 'seed': 7}",
        "PRECISIONS = ['fp32', 'int8']",
        "EXPORT_EXTRA = {'calib_samples': 8}",
        "EVALUATE_EXTRA = {'max_accuracy_drop_pp': 100, 'max_recall_drop_pp': 100, 'n_bootstrap': 50}",
        "BENCHMARK_EXTRA = {'threads': (1,), 'batches': (1,), 'warmup': 0, 'min_time_s': 0.05, 'min_runs': 2, "
        "'images': 2, 'floor': False}",
        "SYNTHETIC_PER_CLASS, SYNTHETIC_SIZE = 8, 80",
    ])


def _tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def test_notebook_has_its_parameters_and_download_cells():
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the [test] extra")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert len(_tagged(nb, "parameters")) == 1 and len(_tagged(nb, "kaggle-download")) == 1
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed without outputs
    source = "\n".join(c.source for c in nb.cells)
    for name in ("kagglehub", 'device="auto"', "BundleConfig(out=ANDROID_DIR)", "zip_path", "report(RUN_DIR)"):
        assert name in source


def test_notebook_runs_end_to_end_on_synthetic_data(tmp_path):
    import skinscan_edge

    missing = [name for name in API if not hasattr(skinscan_edge, name)]
    if missing:
        pytest.skip(f"Python API not yet merged (skinscan_edge lacks {', '.join(missing)})")
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the [test] extra")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the [test] extra")
    pytest.importorskip("ipykernel", reason="ipykernel is in the [test] extra")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = _tagged(nb, "parameters")[0]
    params.source += "\n# the test's settings\n" + tiny_parameters(tmp_path)
    # The kernel's own peak memory over the whole flow (the conversions run in worker processes).
    nb.cells.append(nbformat.v4.new_code_cell("from skinscan_edge.core.workers import peak_rss_bytes\n"
                                              "print('kernel peak RSS MiB', peak_rss_bytes() // 2**20)"))
    client = nbclient.NotebookClient(nb, timeout=int(scaled_timeout(900)), kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    def text(cell) -> str:
        return "".join(o.get("text", "") + str(o.get("data", {}).get("text/html", ""))
                       + str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))

    # A quiet notebook: the project speaks on stdout (progress.PlainReporter without ipywidgets);
    # nothing on stderr (TensorFlow, onnxruntime's quantizer, absl, rich) and no warning anywhere.
    noise = [f"cell {i}: {o.get('text', '')[:300]}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
             for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not noise, "stderr in the notebook:\n" + "\n".join(noise)
    streams = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    warned = [line for line in streams.splitlines()  # printed lines, not the report's own HTML
              if re.search(r"warn|ipywidgets|Consider using", line, re.IGNORECASE)]
    assert not warned, warned
    peak = int(re.search(r"kernel peak RSS MiB (\d+)", text(nb.cells[-1])).group(1))
    assert peak < 3 * 1024, f"the kernel peaked at {peak} MiB"
    print(f"kernel peak RSS: {peak} MiB")

    download = _tagged(nb, "kaggle-download")[0]
    assert "skipped: DATASET is 'synthetic'" in text(download)
    outputs = "\n".join(text(c) for c in nb.cells if c.cell_type == "code")
    assert "SYNTHETIC demo data" in outputs and "gate passed" in outputs
    assert "<iframe srcdoc=" in outputs and "tflite-int8" in outputs
    assert (tmp_path / "run" / "reports" / "index.html").is_file()
    with zipfile.ZipFile(tmp_path / "android" / "skinscan_android_bundle.zip") as z:
        names = z.namelist()
    assert "labels.txt" in names and any(n.endswith(".tflite") for n in names), names


def test_install_cell_installs_the_cloned_folder_by_path(tmp_path, monkeypatch):
    """pip reads a bare name as a package on the index: the cell must hand it a path. (The cell
    itself runs for real, INSTALL = True, in `make test-notebook-stack`'s Colab-stack venv.)"""
    import subprocess

    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the [test] extra")
    cell = _tagged(nbformat.read(NOTEBOOK, as_version=4), "install")[0].source
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: calls.append(args))
    monkeypatch.chdir(tmp_path)
    exec(compile(cell, "install-cell", "exec"), {"INSTALL": True, "REPO_URL": "unused", "REPO_DIR": "skinscan-edge"})
    clone, pip = calls
    assert clone[:2] == ["git", "clone"] and pip[1:4] == ["-m", "pip", "install"]
    assert pip[-1] == str(tmp_path / "skinscan-edge"), pip


def test_help_shows_a_readable_default_reporter():
    import inspect
    import pydoc

    import skinscan_edge

    for name in ("train", "export", "evaluate", "benchmark", "explain", "pipeline"):
        shown = pydoc.render_doc(getattr(skinscan_edge, name), renderer=pydoc.plaintext)
        assert "object at 0x" not in shown and "object at 0x" not in str(inspect.signature(getattr(skinscan_edge, name)))
    assert "reporter: 'Reporter | None' = <progress for this terminal or notebook>" in str(inspect.signature(skinscan_edge.train))


def test_library_logging_is_captured_in_a_kernel(monkeypatch):
    """In Jupyter, logging handlers hold the kernel's stderr object, which the descriptor capture
    cannot reach: onnxruntime's quantizer showed 18-20 "WARNING:root:Axis 1 is out-of-range" lines."""
    import io
    import logging

    from skinscan_edge.core.tf import quiet_stderr

    kernel = io.StringIO()
    monkeypatch.setattr(sys, "stderr", kernel)
    root = logging.getLogger()
    handler = logging.StreamHandler()  # as logging.basicConfig() makes it: on the kernel's stderr
    root.addHandler(handler)
    try:
        with quiet_stderr():
            logging.getLogger("onnxruntime.quantization").warning("Axis 1 is out-of-range")
            root.warning("Axis 1 is out-of-range")
        assert kernel.getvalue() == ""
        root.warning("after the block")  # stderr again
        assert kernel.getvalue() == "after the block\n"
    finally:
        root.removeHandler(handler)


def test_plain_progress_in_a_notebook_without_ipywidgets(capsys):
    from skinscan_edge.core.progress import PlainReporter

    say = PlainReporter(every_s=3600)
    say.message("[bold]onnx-fp32[/] converting…")
    for i in range(1, 5):
        say.advance("evaluate", i, 4)
    assert capsys.readouterr().out == "onnx-fp32 converting…\nevaluate: 4/4\n"

"""examples/skinscan_edge_notebook.ipynb runs end to end (nbclient), on SYNTHETIC data at 75 px.

The parameters cell gets tiny settings appended; the Kaggle download cell runs but does nothing
(``DATASET = "synthetic"``: no Kaggle credentials or internet on the build machines) and says so.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

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
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error

    def text(cell) -> str:
        return "".join(o.get("text", "") + str(o.get("data", {}).get("text/html", ""))
                       + str(o.get("data", {}).get("text/plain", "")) for o in cell.get("outputs", []))

    download = _tagged(nb, "kaggle-download")[0]
    assert "skipped: DATASET is 'synthetic'" in text(download)
    outputs = "\n".join(text(c) for c in nb.cells if c.cell_type == "code")
    assert "SYNTHETIC demo data" in outputs and "gate passed" in outputs
    assert "<iframe srcdoc=" in outputs and "tflite-int8" in outputs
    assert (tmp_path / "run" / "reports" / "index.html").is_file()
    with zipfile.ZipFile(tmp_path / "android" / "skinscan_android_bundle.zip") as z:
        names = z.namelist()
    assert "labels.txt" in names and any(n.endswith(".tflite") for n in names), names

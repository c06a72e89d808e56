"""Peak memory of the notebook's flow, in the CLI's main process and in a notebook kernel (issue 29).

    .venv/bin/python benchmarks/memory.py --data DIR --img-size 299 --out runs/memory-299 [--what cli,notebook]

``cli``: ``skinscan-edge pipeline`` (train, export at every precision with QAT beside the other
conversions, evaluate, benchmark, report); each stage's peak RSS of the main process (VmHWM,
reset per stage) and of its largest conversion worker, from ``pipeline.json``, and the largest
process of the whole run (``wait4``).
``notebook``: examples/skinscan_edge_notebook.ipynb executed by nbclient with the same
settings; the kernel's VmHWM after the last cell. Writes ``OUT/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "skinscan_edge_notebook.ipynb"


def host() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {"cpu": model, "cores": os.cpu_count(), "load_1_5_15": open("/proc/loadavg").read().split()[:3]}


def run_cli(data: Path, out: Path, size: int, epochs: int, batch: int) -> dict:
    run = out / "cli-run"
    cmd = [str(Path(sys.executable).with_name("skinscan-edge")), "pipeline", "--data", str(data), "--out", str(run),
           "--img-size", str(size), "--weights", "none", "--epochs", str(epochs), "--fine-tune-epochs", str(epochs),
           "--batch-size", str(batch), "--calib-samples", "32", "--qat-epochs", "1",
           "--bench-threads", "1", "--bench-batch", "1", "--bench-min-time", "0.2",
           "--max-accuracy-drop", "100", "--max-recall-drop", "100"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    (out / "cli.log").write_text(log)
    stages = json.loads((run / "pipeline.json").read_text())["stages"]
    return {"exit_code": os.waitstatus_to_exitcode(status), "seconds": round(time.time() - t0),
            # wait4's ru_maxrss covers the child AND its reaped descendants (the conversion
            # workers): the largest process of the run, not the main one (that is per stage)
            "largest_process_peak_rss_mib": round(usage.ru_maxrss / 1024),
            "stages": {k: {f: v[f] for f in ("seconds", "peak_rss_mib", "worker_peak_rss_mib") if f in v}
                       for k, v in stages.items()}}


def run_notebook(data: Path, out: Path, size: int, epochs: int, batch: int) -> dict:
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "\n" + "\n".join([
        "INSTALL = False", f"REPO_DIR = {str(ROOT)!r}", 'DATASET = "local"', f"DATA_DIR = {str(data)!r}",
        f"RUN_DIR = {str((out / 'nb-run').resolve())!r}", f"ANDROID_DIR = {str((out / 'nb-android').resolve())!r}",
        f"IMG_SIZE, EPOCHS, FINE_TUNE_EPOCHS, BATCH_SIZE, WEIGHTS = {size}, {epochs}, {epochs}, {batch}, 'none'",
        "EXPORT_EXTRA = {'calib_samples': 32, 'qat_epochs': 1}",
        "EVALUATE_EXTRA = {'max_accuracy_drop_pp': 100, 'max_recall_drop_pp': 100}",
        "BENCHMARK_EXTRA = {'threads': (1,), 'batches': (1,), 'min_time_s': 0.2, 'floor': False}",
    ])
    # The real dataset's label map is not ours: the photos' own folder names are the labels.
    for c in nb.cells:
        c.source = (c.source.replace('LABELS = str(Path(REPO_DIR) / "convert" / "kaggle_labels.json")', "LABELS = None")
                    .replace('critical_classes=["Melanoma"]', 'critical_classes=["mel"]'))  # HAM10000's folder
    nb.cells.append(nbformat.v4.new_code_cell(
        "from skinscan_edge.core.workers import PEAKS, peak_rss_bytes\n"
        "print('MEMORY', peak_rss_bytes() // 2**20, max(PEAKS, default=0) // 2**20)"))
    t0 = time.time()
    nbclient.NotebookClient(nb, timeout=7200, kernel_name="python3", resources={"metadata": {"path": str(out)}}).execute()
    nbformat.write(nb, out / "executed.ipynb")
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    kernel, worker = map(int, text.split("MEMORY", 1)[1].split()[:2])
    return {"seconds": round(time.time() - t0), "kernel_peak_rss_mib": kernel, "largest_worker_peak_rss_mib": worker}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--img-size", type=int, default=299)
    ap.add_argument("--epochs", type=int, default=1, help="phase 1 and phase 2 epochs each")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--what", default="cli,notebook")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    result = {"img_size": a.img_size, "data": str(a.data), "host_before": host()}
    for what in a.what.split(","):
        result[what] = (run_cli if what == "cli" else run_notebook)(a.data, a.out, a.img_size, a.epochs, a.batch_size)
        result[f"host_after_{what}"] = host()
        (a.out / "memory.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

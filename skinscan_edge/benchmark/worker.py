"""One benchmark row, measured in its own process: ``python -m skinscan_edge.benchmark.worker SPEC_JSON``.

A fresh process per (model, device, threads) keeps peak memory the model's own and stops one
model's thread pools and caches from warming the next. The row is one JSON line on stdout;
everything else the libraries print goes to stderr. The model is opened through the runtime
table like everywhere else, so nothing here depends on its format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from skinscan_edge.benchmark.measure import measure_runtime
from skinscan_edge.core.config_stages import BenchmarkConfig
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.host import measure_floor
from skinscan_edge.core.plugins import load_plugins
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.data.imagecache import load_split_images
from skinscan_edge.runtimes.interface import GpuUnavailable, runtime_class
from skinscan_edge.runtimes.models import open_model, path_of


def sample_images(run: RunDir, count: int, seed: int) -> np.ndarray:
    """A fixed, seeded sample of the run's test split at the run's image size (uint8 NHWC)."""
    items = run.split_items("test")
    if not items:
        raise SkinscanError(f"the test split of {run.root} is empty; benchmark needs test images")
    idx = np.random.default_rng(seed).permutation(len(items))[:count]
    return load_split_images(run, "test", sorted(idx))


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's own high-water mark. On Linux, read VmHWM: ``ru_maxrss`` survives exec, so
    a worker started by a large parent (``pipeline`` after training) would report the parent's
    peak; psutil does not expose the high-water mark."""
    import resource

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def run_worker(spec: dict) -> dict:
    """Measure one row: load, first inference, latency, throughput, memory, kernels, MACs."""
    entry = spec["entry"]
    run = RunDir.open(spec["run"], require_model=entry["format"] == "keras")
    cfg = BenchmarkConfig(**spec["config"])
    images = sample_images(run, cfg.images, cfg.seed)
    runtime_class(entry["format"]).import_library()  # so base_rss_mb is the process before the model
    base = rss_mb()
    t0 = time.perf_counter()
    try:
        rt = open_model(run, entry, num_threads=spec["threads"], device=spec["device"])
    except GpuUnavailable as e:
        return {"skipped": str(e)}
    load_ms = (time.perf_counter() - t0) * 1e3
    row = {"size_mb": path_of(run, entry).stat().st_size / 1e6, "load_ms": load_ms, "base_rss_mb": base}
    row.update(measure_runtime(rt, images, cfg))
    row["peak_rss_mb"] = peak_rss_mb()  # before anything below allocates
    if spec["device"] == "cpu" and spec.get("floor_kinds"):
        # The floor again, in this process, right after the timed runs: on a shared host the
        # model and its floor then see the same contention, so x_floor compares like with like.
        f = measure_floor(spec["threads"], kinds=tuple(spec["floor_kinds"]), **spec["floor_args"])
        row["floor_fp32_gflops"] = f.get("fp32_gflops")
        row["floor_int8_gops"] = f.get("int8_gops")
    row["accelerator"] = rt.accelerator
    row.update(rt.acceleration())
    macs = rt.macs()
    if macs:
        row["gmacs"] = macs / 1e9
    return row


def main(spec_json: str) -> int:
    # Keep stdout for the one JSON line: libraries print to fd 1 too.
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        load_plugins()
        result = run_worker(json.loads(spec_json))
    except SkinscanError as e:
        result = {"error": str(e)}
    except Exception as e:  # the parent records it and the sweep goes on
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}
    with os.fdopen(real_stdout, "w") as out:
        out.write(json.dumps(result, default=float) + "\n")
    return 0


def spawn(spec: dict, timeout_s: float) -> dict:
    """Run one row in a fresh process; its JSON line, or ``{"error"}`` with the reason."""
    cmd = [sys.executable, "-m", "skinscan_edge.benchmark.worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s (raise worker_timeout_s or lower --min-time)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"worker exited with code {proc.returncode}: {tail[-500:]}"}
    return json.loads(lines[-1])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m skinscan_edge.benchmark.worker SPEC_JSON (internal)")
    sys.exit(main(sys.argv[1]))

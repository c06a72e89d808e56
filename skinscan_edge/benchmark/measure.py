"""Timing one runtime: warm-up, repeated calls until a minimum time, and the latency statistics
(p50, p90, p99, images per second). The harness and the worker process both use it."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from skinscan_edge.core.config_stages import BenchmarkConfig


#: Batch-1 latency and load metrics every measured row carries (throughput keys depend on --batch).
ROW_METRICS = ("size_mb", "load_ms", "first_inference_ms", "latency_p50_ms", "latency_p90_ms",
               "latency_p99_ms", "latency_mean_ms", "latency_std_ms", "peak_rss_mb")


# --- the harness -----------------------------------------------------------------------------
def latency_stats(times_ms) -> dict:
    """p50 / p90 / p99 (linear interpolation), mean and population std of per-call times in ms."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"latency_p50_ms": float(p50), "latency_p90_ms": float(p90), "latency_p99_ms": float(p99),
            "latency_mean_ms": float(t.mean()), "latency_std_ms": float(t.std()), "latency_runs": int(t.size)}


def time_calls(fn: Callable[[], object], min_time_s: float, min_runs: int,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Call ``fn`` until at least ``min_runs`` calls and ``min_time_s`` seconds; per-call seconds."""
    times: list[float] = []
    total = 0.0
    while len(times) < min_runs or total < min_time_s:
        t0 = clock()
        fn()
        dt = clock() - t0
        times.append(dt)
        total += dt
    return times


def batch_of(images: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` images of the sample, tiled when the sample is smaller."""
    return images[np.arange(n) % len(images)]


def measure_runtime(rt, images: np.ndarray, cfg: BenchmarkConfig,
                    clock: Callable[[], float] = time.perf_counter) -> dict:
    """First inference, warm-up, batch-1 latency statistics and throughput at each batch size."""
    x1 = batch_of(images, 1)
    t0 = clock()
    rt.predict(x1)
    out = {"first_inference_ms": (clock() - t0) * 1e3}
    for _ in range(cfg.warmup):
        rt.predict(x1)
    lat = time_calls(lambda: rt.predict(x1), cfg.min_time_s, cfg.min_runs, clock)
    out.update(latency_stats([t * 1e3 for t in lat]))
    for b in cfg.batches:
        if b == 1:
            times = lat
        else:
            xb = batch_of(images, b)
            rt.predict(xb)  # resize / re-plan for the new shape, untimed
            times = time_calls(lambda: rt.predict(xb), cfg.min_time_s, cfg.min_batch_runs, clock)
        out[f"throughput_b{b}_ips"] = b * len(times) / sum(times)
    return out

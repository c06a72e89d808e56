"""Batch-1 latency of several .tflite files in one process, one inference of each in turn.

On a shared host the load moves between a benchmark's rows; alternating single inferences
exposes every file to the same load, and the per-round ratio to the first file is reported.

    python benchmarks/interleaved_tflite.py RUN/exports/model_int8.tflite RUN/exports/model_qat_int8.tflite \
        --threads 1 --rounds 200
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from ai_edge_litert.interpreter import Interpreter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    runs = []
    for f in a.files:
        interp = Interpreter(model_path=str(f), num_threads=a.threads)
        interp.allocate_tensors()
        d = interp.get_input_details()[0]
        interp.set_tensor(d["index"], np.random.default_rng(0).integers(0, 256, d["shape"]).astype(d["dtype"]))
        runs.append(interp)
    times = np.zeros((a.rounds, len(runs)))
    for r in range(-a.warmup, a.rounds):
        for i, interp in enumerate(runs if r % 2 == 0 else runs[::-1]):  # alternate who goes first
            i = i if r % 2 == 0 else len(runs) - 1 - i
            t0 = time.perf_counter()
            interp.invoke()
            if r >= 0:
                times[r, i] = (time.perf_counter() - t0) * 1e3
    out = {"threads": a.threads, "rounds": a.rounds, "load_1min_end": os.getloadavg()[0]}
    for i, f in enumerate(a.files):
        out[f"{f.name}_p50_ms"] = float(np.median(times[:, i]))
        out[f"{f.name}_over_first_median_ratio"] = float(np.median(times[:, i] / times[:, 0]))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

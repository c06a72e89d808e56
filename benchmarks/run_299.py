"""Run the full benchmark matrix at 299 px and commit its Markdown next to this script.

Two ways in:

* ``python benchmarks/run_299.py --run RUN`` benchmarks an existing, exported 299 px run
  (`skinscan-edge train --img-size 299 ...` then `skinscan-edge export RUN --precision ...`).
* ``python benchmarks/run_299.py --scratch /tmp/bench299`` first builds a scratch run: an
  untrained InceptionV3 (``--weights none``: latency does not depend on the weights), 48
  synthetic 299 px images, and every export through ``export_run``. Accuracy and parity mean
  nothing for such a run; latency, throughput, memory and x-floor do.

Either way the result is ``RUN/reports/benchmark.*`` and a copy of the Markdown in
``benchmarks/results_299.md``. The full matrix (7 models x 2 thread counts x batch 1/8/32)
takes 10-20 minutes on a 2-core host.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import skinscan_edge  # noqa: F401  (before TensorFlow)

HERE = Path(__file__).resolve().parent
LABELS = [f"class_{i}" for i in range(10)]


def build_scratch_run(root: Path, precisions: list[str], n_images: int = 48, seed: int = 0) -> Path:
    """A complete 299 px run with an untrained model, synthetic images and the given exports."""
    from PIL import Image

    from skinscan_edge.exporters.run import ExportConfig, export_run
    from skinscan_edge.training.model import build_model
    from skinscan_edge.core.rundir import RunDir
    from skinscan_edge.core.files import write_json

    run = RunDir(root)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_images):
        # smooth blobs rather than white noise, so activations have realistic ranges
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((299, 299), Image.Resampling.BICUBIC).save(data / f"{i:03d}.png")
        items.append([f"{i:03d}.png", i % len(LABELS)])
    write_json(run.config_path, {"train": {"img_size": 299, "weights": "none"}, "note": "scratch run for benchmarks"})
    run.labels_path.write_text("\n".join(LABELS) + "\n")
    write_json(run.split_path, {"root": str(data), "splits": {"train": items[:32], "val": [], "test": items[32:]}})
    build_model(len(LABELS), 299, weights="none").save(run.model_path)
    run.set_status("complete")
    export_run(run, ExportConfig(precisions=precisions, calib_samples=32))
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="an exported 299 px run directory")
    src.add_argument("--scratch", type=Path, help="build a scratch 299 px run here first")
    p.add_argument("--precisions", default="fp32,fp16,dynamic,int8")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", default="1,8,32")
    p.add_argument("--min-time", type=float, default=2.0)
    p.add_argument("--device", default="all")
    p.add_argument("--out", type=Path, default=HERE / "results_299.md")
    args = p.parse_args(argv)

    from skinscan_edge.benchmark.harness import BenchmarkConfig, run_benchmark
    from skinscan_edge.core.rundir import RunDir

    if args.scratch and not RunDir(args.scratch).manifest_path.exists():
        build_scratch_run(args.scratch, args.precisions.split(","))
    root = args.run or args.scratch
    cfg = BenchmarkConfig(device=args.device, threads=tuple(int(t) for t in args.threads.split(",")),
                          batches=tuple(int(b) for b in args.batch.split(",")), min_time_s=args.min_time)
    results = run_benchmark(root, cfg, progress=lambda r: print(
        r["model"], r["device"], r["threads"], r.get("latency_p50_ms") or r.get("skipped") or r.get("error"),
        flush=True))
    md = (Path(root) / "reports" / "benchmark.md").read_text(encoding="utf-8")
    if args.scratch:
        md = ("> Scratch run from `benchmarks/run_299.py --scratch`: untrained InceptionV3 (weights none), "
              "synthetic images, exports from `export_run`. Latency, memory and x-floor are real; "
              "accuracy is meaningless here. The load average in the host line is other jobs "
              "sharing the cores. See NOTES.md.\n\n" + md)
    args.out.write_text(md, encoding="utf-8")
    print(f"wrote {args.out}")
    return 1 if any("error" in r for r in results["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())

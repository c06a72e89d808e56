"""arm64 against x86 on photos without Skinscan labels (docs/arm64.md): the same export on both ISAs.

    python benchmarks/arm64_photos.py RUN PHOTOS_DIR [--models tflite-int8,...] [--cpus max,cortex-a53]
        [--limit N] [--out FILE.json]

Every image under PHOTOS_DIR (recursively) is decoded at the run's input size by the project's
loader, run through each export on x86 (this host's kernels) and in the arm64 Python under QEMU
(skinscan_edge/evaluation/arm64.py), and compared: top-1 agreement and output steps, which need no labels.
The photos are out-of-distribution for a Skinscan model; this measures the kernels, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("photos", type=Path)
    p.add_argument("--models", default="tflite-int8")
    p.add_argument("--cpus", default="max,cortex-a53")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    from skinscan_edge.evaluation import arm64
    from skinscan_edge.core.errors import BadImage, SkinscanError
    from skinscan_edge.data.imageio import load_rgb
    from skinscan_edge.runtimes.models import model_entries, open_model, verified_path
    from skinscan_edge.core.rundir import RunDir

    try:
        run = RunDir.open(a.run)
        files = sorted(f for f in a.photos.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if not files:
            raise SkinscanError(f"no .jpg/.png under {a.photos}")
        files = [files[i] for i in arm64.subset(len(files), a.limit, 0)]
        images, used = [], []
        for f in files:
            try:
                images.append(load_rgb(f, run.img_size()))
                used.append(f)
            except BadImage:
                continue
        images = np.stack(images)
        report = {"run": str(a.run), "photos": str(a.photos), "images": len(used),
                  "host": platform.processor() or platform.machine(), "models": []}
        for entry in model_entries(run, a.models.split(",")):
            rt = open_model(run, entry)
            x86 = np.concatenate([rt.predict(images[i:i + 16]) for i in range(0, len(images), 16)])
            model = {"name": entry["name"], "path": verified_path(run, entry), "format": entry["format"],
                     "kernels": "xnnpack"}
            for cpu in a.cpus.split(","):
                start = time.perf_counter()
                r = arm64.run_models([model], images, cpu, trace=True)
                m = r["models"][0]
                row = {"model": entry["name"], "cpu": cpu, **arm64.compare_to_x86(m["probs"], x86, m["output_step"]),
                       "int8_kernels": arm64.int8_family(r["instructions"]), "images_per_s": len(images) / m["seconds"],
                       "wall_s": time.perf_counter() - start,
                       "x86_top1": x86.argmax(1).tolist(), "arm64_top1": m["probs"].argmax(1).tolist()}
                report["models"].append(row)
                print(f"{entry['name']:18} {cpu:11} agreement {row['x86_top1_agreement']:.4f}  max steps "
                      f"{row.get('x86_max_steps', '-')}  mean max steps {row.get('x86_mean_steps', float('nan')):.2f}  "
                      f"max |dp| {row['x86_max_abs_diff']:.4f}  {row['int8_kernels']}  {row['images_per_s']:.2f} img/s",
                      flush=True)
        report["qemu"] = r["qemu"]
        if a.out:
            a.out.write_text(json.dumps(report, indent=1))
    except SkinscanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

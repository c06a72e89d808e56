"""The preprocessing gap on real photos: MediaPipe's client path against the project's LiteRT path.

    python benchmarks/client_gap.py RUN BUNDLE_DIR PHOTOS_DIR [--out benchmarks/results_client_gap.json]

For every JPEG under PHOTOS_DIR (e.g. ../shared/real-photos/ham10000-sample, 600x450; never copied
into the repository): the bundle's .tflite (a) in LiteRT on the project's pixels
(``imageio.load_rgb``: Pillow, antialiased bilinear), (b) in MediaPipe's ImageClassifier on the
original file, and (c) in MediaPipe on the project's pixels saved as a lossless PNG at the input
size (what an app gets when it resizes with a filtered scaler before MediaPipe). Plus the probe:
which preprocessing MediaPipe's input tensor is. The photos are not Skinscan classes: the scores
measure agreement between the two paths, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skinscan_edge.core import metrics  # noqa: E402
from skinscan_edge.evaluation.client import classify_files, measure_preprocessing, reader_python  # noqa: E402
from skinscan_edge.core.host import host_line, host_info  # noqa: E402
from skinscan_edge.data.imageio import load_rgb  # noqa: E402
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.files import write_json  # noqa: E402
from skinscan_edge.runtimes.interface import TFLiteRuntime  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("bundle")
    ap.add_argument("photos")
    ap.add_argument("--out", default="benchmarks/results_client_gap.json")
    args = ap.parse_args()
    t0 = time.time()
    run = RunDir.open(args.run)
    model = Path(args.bundle) / json.loads((Path(args.bundle) / "metadata.json").read_text())["model_file"]
    size, n = run.img_size(), len(run.labels())
    files = sorted(str(p) for p in Path(args.photos).rglob("*.jpg"))
    python = reader_python()
    project = np.stack([load_rgb(f, size) for f in files])
    litert = TFLiteRuntime(model).predict(project)
    client = classify_files(python, model, files, n)
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        pre = []
        for i, pixels in enumerate(project):
            pre.append(str(Path(tmp) / f"{i:03d}.png"))
            Image.fromarray(pixels).save(pre[-1])
        client_pre = classify_files(python, model, pre, n)

    def compare(a, b) -> dict:
        mean, mx = metrics.prob_abs_diff(a, b)
        return {"top1_agreement": metrics.top1_agreement(a, b), "num_top1_differ": int((a.argmax(1) != b.argmax(1)).sum()),
                "prob_mean_abs_diff": mean, "prob_max_abs_diff": mx}

    result = {"run": str(run.root), "model": str(model), "photos": args.photos, "files": len(files),
              "img_size": size, "host": host_line(host_info()),
              "mediapipe_file_vs_litert_pillow": compare(litert, client),
              "mediapipe_preresized_png_vs_litert_pillow": compare(litert, client_pre),
              "tensor": measure_preprocessing(python, files, size), "seconds": round(time.time() - t0, 1)}
    write_json(Path(args.out), result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""Phase 2 (the fine-tune from ``mixed7``) on a CPU: float32 against bfloat16, whole model against
the layers above a cached stem. Ratios come from one process, the variants alternated.

    python benchmarks/phase2_cpu.py ../shared/real-photos/ham10000-sample --images 32 \
        --out benchmarks/phase2_cpu_results.json

Variants (each a train step on the same batch of ``--images`` photos, ``--batch`` per step):
  full_<p>   today's phase 2: uint8 pixels -> augmentation -> the whole model, the layers above
             ``mixed7`` trainable (``training_model`` + ``unfreeze_from``);
  top_<p>    the layers above ``mixed7`` alone, on the stem's cached activations
             (``features.top_model``): what each epoch costs once the stem's output is cached;
  stem_<p>   one augmented view through the frozen stem (``features.stem_function``): what
             caching costs, once per view;
with ``<p>`` float32 or mixed_bfloat16 (``precision.py``). Each round runs every variant in turn
(``--steps`` timed steps after one untimed), so a burst of load on a shared host hits all alike;
the medians over ``--rounds`` are reported, with the host and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import skinscan_edge  # noqa: F401  (sets TF_USE_LEGACY_KERAS)

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def _photos(folder: Path, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    from skinscan_edge.data import image_batches, scan

    found = scan(folder)
    pairs = [(str(found.root / p), y) for part in found.items.values() for p, y in part][:n]
    if not pairs:
        raise SystemExit(f"no images found under {folder}")
    ds = image_batches([p for p, _ in pairs], [y for _, y in pairs], img_size=size, batch_size=len(pairs),
                       training=False, seed=0)
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def _variants(size: int, classes: int, block: str) -> dict:
    from skinscan_edge._tf import keras
    from skinscan_edge.data import augmentation, training_model
    from skinscan_edge.model import build_model, unfreeze_from
    from skinscan_edge.features import stem_function, top_model

    k = keras()
    mp = k.mixed_precision
    out = {}
    for tag, policy in POLICIES.items():
        mp.set_global_policy(policy)
        k.utils.set_random_seed(0)
        model = build_model(classes, size, weights="none")
        unfreeze_from(model, block, keep_bn_frozen=True)
        full = training_model(model, 0, augment=True)
        full.compile(k.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        top = top_model(model, block)
        top.compile(k.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        out[tag] = {"full": full, "top": top, "stem": stem_function(model, block, augmentation(0))}
    mp.set_global_policy("float32")
    return out


def main() -> None:
    from skinscan_edge._tf import tf as _tf
    from skinscan_edge.hostinfo import host_info, host_line

    tf = _tf()

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", type=Path)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img-size", type=int, default=299)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--block", default="mixed7")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/phase2_cpu_results.json"))
    a = ap.parse_args()
    x, y = _photos(a.photos, a.images, a.img_size)
    y = y % 7
    xb, yb = x[:a.batch], y[:a.batch]
    res: dict = {"host": host_line(host_info()), "img_size": a.img_size, "batch": len(xb), "block": a.block,
                 "images": str(a.photos), "load_avg_1min_start": os.getloadavg()[0], "rounds": a.rounds,
                 "timed_steps_per_round": a.steps}
    models = _variants(a.img_size, 7, a.block)
    cached = {tag: m["stem"](tf.constant(xb), tf.constant(True)).numpy().astype(np.float16)
              for tag, m in models.items()}
    res["stem_activation_bytes_per_image_float16"] = int(cached["fp32"][0].nbytes)
    steps = {}
    for tag, m in models.items():
        c = tf.constant(cached[tag])
        steps[f"full_{tag}"] = lambda m=m: m["full"].train_on_batch(xb, yb)
        steps[f"top_{tag}"] = lambda m=m, c=c: m["top"].train_on_batch(c, yb)
        steps[f"stem_{tag}"] = lambda m=m: m["stem"](tf.constant(xb), tf.constant(True)).numpy()
    for fn in steps.values():
        fn()  # traces and warms up, untimed
    rates: dict = {name: [] for name in steps}
    for _ in range(a.rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(a.steps):
                fn()
            rates[name].append(a.steps * len(xb) / (time.perf_counter() - t0))
    for name, r in rates.items():
        res[f"{name}_ips"] = float(np.median(r))
        res[f"{name}_ips_all"] = [round(v, 2) for v in r]
    res["bf16_speedup_full"] = res["full_bf16_ips"] / res["full_fp32_ips"]
    res["bf16_speedup_top"] = res["top_bf16_ips"] / res["top_fp32_ips"]
    res["bf16_speedup_stem"] = res["stem_bf16_ips"] / res["stem_fp32_ips"]
    res["top_over_full_fp32"] = res["top_fp32_ips"] / res["full_fp32_ips"]
    res["load_avg_1min_end"] = os.getloadavg()[0]
    a.out.write_text(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()},
                                indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

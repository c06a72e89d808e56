"""Phase 2 (the fine-tune from ``mixed7``) on a CPU: float32 against bfloat16, whole model against
the layers above a cached stem. Ratios come from one process, the variants alternated.

    python benchmarks/phase2_cpu.py ../shared/real-photos/ham10000-sample --images 32 \
        --out benchmarks/phase2_cpu_results.json

Variants (each a call on the same batch of ``--images`` photos):
  full_<p>   today's phase 2: uint8 pixels -> augmentation -> the whole model, the layers above
             ``mixed7`` trainable (``training_model`` + ``unfreeze_from``);
  top_<p>    the layers above ``mixed7`` alone, on the stem's cached activations
             (``features.top_model``): what each epoch costs once the stem's output is cached;
  stem_<p>   one augmented view through the frozen stem (``features.stem_function``): what
             caching costs, once per view;
  fwd_<p>, topval_<p>  forward passes (inference) of the whole model and of the layers above the
             stem: validation, phase 1's feature pass;
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
    from skinscan_edge.data.folder import image_batches, scan

    found = scan(folder)
    pairs = [(str(found.root / p), y) for part in found.items.values() for p, y in part][:n]
    if not pairs:
        raise SystemExit(f"no images found under {folder}")
    ds = image_batches([p for p, _ in pairs], [y for _, y in pairs], img_size=size, batch_size=len(pairs),
                       training=False, seed=0)
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def _variants(size: int, classes: int, block: str) -> dict:
    from skinscan_edge.core.tf import keras
    from skinscan_edge.data.folder import augmentation, training_model
    from skinscan_edge.training.model import build_model, unfreeze_from
    from skinscan_edge.training.features import stem_function, top_model

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


def measure(x: np.ndarray, y: np.ndarray, rounds: int = 2, steps: int = 1, block: str = "mixed7") -> dict:
    """Rates (images/s, medians over ``rounds``) of every variant on the uint8 batch ``x``, alternated."""
    from skinscan_edge.core.tf import tf as _tf

    tf = _tf()
    res: dict = {"batch": len(x), "block": block, "rounds": rounds, "timed_steps_per_round": steps}
    models = _variants(x.shape[1], int(y.max()) + 1, block)
    cached = {tag: m["stem"](tf.constant(x), tf.constant(True)).numpy().astype(np.float16).astype(np.float32)
              for tag, m in models.items()}  # as feature_dataset feeds them
    res["stem_activation_bytes_per_image_float16"] = int(cached["fp32"][0].nbytes) // 2
    calls = {}
    for tag, m in models.items():
        c = tf.constant(cached[tag])
        calls[f"full_{tag}"] = lambda m=m: m["full"].train_on_batch(x, y)
        calls[f"top_{tag}"] = lambda m=m, c=c: m["top"].train_on_batch(c, y)
        calls[f"stem_{tag}"] = lambda m=m: m["stem"](tf.constant(x), tf.constant(True)).numpy()
        # validation and the feature passes: forward only, inference mode
        calls[f"fwd_{tag}"] = lambda m=m: m["full"].predict_on_batch(x)
        calls[f"topval_{tag}"] = lambda m=m, c=c: m["top"].predict_on_batch(c)
    for fn in calls.values():
        fn()  # traces and warms up, untimed
    rates: dict = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            rates[name].append(steps * len(x) / (time.perf_counter() - t0))
    for name, r in rates.items():
        res[f"{name}_ips"] = float(np.median(r))
        res[f"{name}_ips_all"] = [round(v, 2) for v in r]
    for what in ("full", "top", "stem", "fwd", "topval"):
        res[f"bf16_speedup_{what}"] = res[f"{what}_bf16_ips"] / res[f"{what}_fp32_ips"]
    res["top_over_full_fp32"] = res["top_fp32_ips"] / res["full_fp32_ips"]
    return res


def main() -> None:
    from skinscan_edge.core.host import host_info, host_line

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", type=Path)
    ap.add_argument("--images", type=int, default=32, help="one batch of this many images")
    ap.add_argument("--img-size", type=int, default=299)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--block", default="mixed7")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/phase2_cpu_results.json"))
    a = ap.parse_args()
    x, y = _photos(a.photos, a.images, a.img_size)
    res = {"host": host_line(host_info()), "img_size": a.img_size, "images": str(a.photos),
           "load_avg_1min_start": os.getloadavg()[0]}
    res.update(measure(x, y, a.rounds, a.steps, a.block))
    res["load_avg_1min_end"] = os.getloadavg()[0]
    a.out.write_text(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()},
                                indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

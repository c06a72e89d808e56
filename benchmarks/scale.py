"""Scale benchmark: the input pipeline and phase 1 on a SYNTHETIC data set of Kaggle size.

Make the data first (benchmarks/scale_data.py), then measure, each step in this one process
unless it says otherwise, and write one flat JSON (units in the keys):

    python benchmarks/scale_data.py /tmp/scale27k-full --workers 2
    python benchmarks/scale.py /tmp/scale27k-full --out benchmarks/scale_results.json

Steps (``--steps``, comma-separated):
  scan      skinscan_edge.data.folder.scan over every file (each is decoded once), and the split;
  pipeline  no model: uint8 299 px batches per second from JPEGs (uncached), then from the disk
            cache and from tf.data's in-memory cache (epochs of each in turn, medians; also CPU
            microseconds per image); the disk cache's build rate; augmentation's CPU rate;
  model     the model's forward and train-step rates (batch 32, 299 px), for comparison;
  phase1    phase 1 on ``--phase1-images`` train images: fitting the whole model every epoch (as
            before) against cached features (1 and 2 views), with one forward pass timed alone;
  rss       peak RSS of ``skinscan-edge train`` (a child process) over the whole set at 75 px with
            the disk cache, and over the phase-1 subset at 299 px;
  rss_full_299  (not in the default steps: a forward pass over every image, about 30 minutes on
            2 cores) the same over the whole set at 299 px;
  phase2    phase 2's variants on one batch of 32 train images (benchmarks/phase2_cpu.py: float32
            against mixed_bfloat16, the whole model against the layers above the cached ``mixed7``
            output), alternated in this process.
Every run ends with ``kaggle_cpu_only_*``: the CPU-only time of the default schedule on the
27,153-image Kaggle split (:func:`kaggle_cpu_only`), before and after issue 31, from the rates in
the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import skinscan_edge  # noqa: F401  (sets TF_USE_LEGACY_KERAS)

SIZE, BATCH = 299, 32
PIPELINE_ROUNDS = 5  # epochs of each cached path, alternated; the medians are reported


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _drain(ds, limit_batches=None) -> int:
    n = 0
    for i, (x, _) in enumerate(ds):
        n += int(x.shape[0])
        if limit_batches and i + 1 >= limit_batches:
            break
    return n


def step_scan(data: Path, res: dict) -> dict:
    from skinscan_edge.data.folder import scan, split_items

    result, res["scan_s"] = _timed(lambda: scan(data))
    res["scan_images"] = sum(len(v) for v in result.items.values())
    res["scan_ips"] = res["scan_images"] / res["scan_s"]
    split, res["split_s"] = _timed(lambda: split_items(result, 1337, 0.15, 0.15))
    res.update({f"split_{k}_images": len(v) for k, v in split["splits"].items()})
    return split


def step_pipeline(split: dict, n: int, tmp: Path, res: dict) -> None:
    from skinscan_edge.core.tf import tf
    from skinscan_edge.data.folder import augmentation, image_batches
    from skinscan_edge.data.imagecache import build_cache
    from skinscan_edge.core.rundir import split_pairs

    pairs = split_pairs(split, "train")[:n]
    paths, labels = [str(p) for p, _ in pairs], [y for _, y in pairs]
    res["pipeline_images"] = len(paths)
    kw = dict(img_size=SIZE, batch_size=BATCH, training=True, seed=0)
    memory = image_batches(paths, labels, **kw).prefetch(-1)  # decodes, then tf.data cache()
    got, s = _timed(lambda: _drain(memory))
    res["pipeline_uncached_ips"] = got / s  # the first pass decodes every JPEG
    cache, s = _timed(lambda: build_cache(tmp / "cache", "train", split["sha256"], SIZE, paths))
    res["disk_cache_build_ips"] = len(paths) / s
    disk = image_batches(paths, labels, cache=cache, **kw).prefetch(-1)
    _drain(disk)
    # The two paths deliver the same thing (shuffled uint8 batches of 32); they are timed in
    # turn, several epochs each, so that a burst of load on the shared host hits both alike.
    rates: dict = {"disk_cached": [], "in_memory": []}
    cpu: dict = {"disk_cached": [], "in_memory": []}
    for _ in range(PIPELINE_ROUNDS):
        for name, ds in (("disk_cached", disk), ("in_memory", memory)):
            c0 = time.process_time()
            got, s = _timed(lambda: _drain(ds))
            rates[name].append(got / s)
            cpu[name].append((time.process_time() - c0) / got * 1e6)
    for name in rates:
        res[f"pipeline_{name}_ips"] = float(np.median(rates[name]))
        res[f"pipeline_{name}_cpu_us_per_image"] = float(np.median(cpu[name]))
    res["pipeline_rounds"] = PIPELINE_ROUNDS
    res["disk_vs_memory_ratio"] = res["pipeline_disk_cached_ips"] / res["pipeline_in_memory_ips"]
    aug = augmentation(0)
    step = tf().function(lambda x: aug(tf().cast(x, tf().float32), training=True))
    x = tf().constant(cache.read(range(BATCH)))
    step(x)
    reps, s = 8, None
    _, s = _timed(lambda: [step(x).numpy() for _ in range(reps)])
    res["augment_cpu_ips"] = reps * BATCH / s


def step_model(res: dict) -> None:
    from skinscan_edge.core.tf import keras, tf
    from skinscan_edge.data.folder import training_model
    from skinscan_edge.training.model import build_model, freeze_base, unfreeze_from

    k = keras()
    model = build_model(10, SIZE, weights="none")
    x = np.random.default_rng(0).integers(0, 256, (BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    y = np.arange(BATCH) % 10
    fwd = tf().function(lambda a: model(tf().cast(a, tf().float32), training=False))
    fwd(x)
    reps = 3
    _, s = _timed(lambda: [fwd(x).numpy() for _ in range(reps)])
    res["model_forward_ips"] = reps * BATCH / s
    trainer = training_model(model, 0, augment=True)
    for name, prep in (("head", freeze_base), ("fine_tune_mixed7", lambda m: unfreeze_from(m, "mixed7"))):
        prep(model)
        trainer.compile(k.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
        trainer.train_on_batch(x, y)
        _, s = _timed(lambda: [trainer.train_on_batch(x, y) for _ in range(reps)])
        res[f"model_train_step_{name}_ips"] = reps * BATCH / s


def step_phase1(split: dict, n: int, res: dict) -> None:
    from skinscan_edge.core.tf import keras
    from skinscan_edge.core.config import TrainConfig
    from skinscan_edge.data.folder import augmentation, image_batches, training_model
    from skinscan_edge.core.tf import tf
    from skinscan_edge.training.features import extract_features, feature_function, fit_head_on_features
    from skinscan_edge.training.model import build_model, freeze_base
    from skinscan_edge.core.rundir import split_pairs

    k = keras()
    tr = split_pairs(split, "train")[:n]
    va = split_pairs(split, "val")[:max(1, n * 15 // 70)]
    res["phase1_train_images"], res["phase1_val_images"] = len(tr), len(va)

    def batches(pairs, training):
        ds = image_batches([str(p) for p, _ in pairs], [y for _, y in pairs], img_size=SIZE, batch_size=BATCH,
                           training=training, seed=0)
        return ds.prefetch(-1)

    train_ds, train_plain, val_ds = batches(tr, True), batches(tr, False), batches(va, False)
    _drain(train_plain), _drain(val_ds)  # decode once into tf.data's in-memory cache: model time only
    epochs = 5

    def fresh():
        k.utils.set_random_seed(0)
        model = build_model(10, SIZE, weights="none")
        freeze_base(model)
        return model

    model = fresh()
    fn = feature_function(model, augmentation(0))  # as fit_head_on_features makes it (augmentation on)
    _, res["phase1_trace_s"] = _timed(lambda: fn(next(iter(train_plain))[0], tf().constant(False)).numpy())
    _, res["phase1_one_forward_train_s"] = _timed(lambda: extract_features(model, train_plain, fn=fn))
    _, res["phase1_one_forward_val_s"] = _timed(lambda: extract_features(model, val_ds, fn=fn))
    trainer = training_model(model, 0, augment=True)
    trainer.compile(k.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    _, res["phase1_images_s"] = _timed(lambda: trainer.fit(train_ds, validation_data=val_ds, epochs=epochs,
                                                           verbose=0))
    for views in (1, 2):
        cfg = TrainConfig(epochs=epochs, batch_size=BATCH, augment=True, feature_views=views, seed=0)
        model = fresh()
        _, res[f"phase1_features_{views}view_s"] = _timed(
            lambda: fit_head_on_features(model, cfg, train_plain, val_ds, None, []))
    res["phase1_speedup_1view"] = res["phase1_images_s"] / res["phase1_features_1view_s"]
    res["phase1_speedup_2view"] = res["phase1_images_s"] / res["phase1_features_2view_s"]
    res["phase1_features_1view_over_one_forward"] = (res["phase1_features_1view_s"]
                                                     / res["phase1_one_forward_train_s"])
    # What the 1-view run spent beyond tracing and one plain forward pass over train and val:
    # augmenting the train images once, building and fitting the head (5 epochs).
    res["phase1_features_1view_rest_s"] = (res["phase1_features_1view_s"] - res["phase1_trace_s"]
                                           - res["phase1_one_forward_train_s"] - res["phase1_one_forward_val_s"])


def step_phase2(data: Path, split: dict | None, res: dict) -> None:
    """Alone (``--steps phase2``) it splits ``data`` without recording the scan, so it can run on
    other images (real photos) without touching the Kaggle-scale scan figures."""
    sys.path.insert(0, str(Path(__file__).parent))
    from phase2_cpu import measure

    from skinscan_edge.data.folder import scan, split_items
    from skinscan_edge.data.imageio import load_batch
    from skinscan_edge.core.rundir import split_pairs

    split = split or split_items(scan(data), 1337, 0.15, 0.15)
    res["phase2_data"] = str(data)
    pairs = split_pairs(split, "train")[:BATCH]
    x, y = load_batch([str(p) for p, _ in pairs], SIZE), np.asarray([y for _, y in pairs], np.int32)
    res.update({f"phase2_{k}": v for k, v in measure(x, y).items()})


#: The Kaggle split (README, "Your own data") and the default schedule.
#: Augmentation inside the traced feature function (benchmarks/NOTES.md, "Training at Kaggle scale").
AUGMENT_S_PER_IMAGE = 1e-3
KAGGLE = {"images": 27_153, "train": 19_007, "val": 4_073, "test": 4_073, "fine_tune_epochs": 5, "stem_views": 1}


def kaggle_cpu_only(res: dict) -> dict:
    """Seconds of a CPU-only ``train`` on the Kaggle split, by stage, before and after issue 31.

    The absolute rates are the ones measured here on 2026-11-27 (``model_*``, scan, cache; load
    3-6). Issue 31's variants were measured later under another load, so only their ratios, taken
    within one run (``phase2_*``), scale those rates: phase 2 on the cached ``mixed7`` output in
    mixed_bfloat16 (one stem pass per view and one over val, then the layers above the stem), and
    phase 1's feature pass in mixed_bfloat16. The test report predicts with the float32 model.
    """
    k, out = KAGGLE, {}
    fwd, step = res["model_forward_ips"], res["model_train_step_fine_tune_mixed7_ips"]
    common = {"scan": k["images"] / res["scan_ips"], "cache": k["images"] / res["disk_cache_build_ips"],
              "test_report": k["test"] / fwd}
    augment = k["train"] * AUGMENT_S_PER_IMAGE
    before = {**common, "phase1": (k["train"] + k["val"]) / fwd + augment,
              "phase2": k["fine_tune_epochs"] * (k["train"] / step + k["val"] / fwd)}
    out.update({f"kaggle_cpu_only_before_{n}_s": v for n, v in before.items()})
    out["kaggle_cpu_only_before_h"] = sum(before.values()) / 3600
    if "phase2_full_fp32_ips" in res:
        r = lambda name: res[f"phase2_{name}_ips"]  # noqa: E731
        fwd_bf16 = fwd * r("fwd_bf16") / r("fwd_fp32")
        stem_bf16 = fwd * r("stem_bf16") / r("fwd_fp32")
        top_bf16 = step * r("top_bf16") / r("full_fp32")
        topval_bf16 = fwd * r("topval_bf16") / r("fwd_fp32")
        now = {**common, "phase1": (k["train"] + k["val"]) / fwd_bf16 + augment,
               "phase2": (k["train"] * k["stem_views"] + k["val"]) / stem_bf16
               + k["fine_tune_epochs"] * (k["train"] / top_bf16 + k["val"] / topval_bf16)}
        out.update({f"kaggle_cpu_only_now_{n}_s": v for n, v in now.items()})
        out["kaggle_cpu_only_now_h"] = sum(now.values()) / 3600
        out["kaggle_cpu_only_phase2_speedup"] = before["phase2"] / now["phase2"]
    return out


def _train_rss(args: list[str]) -> tuple[float, float]:
    """Peak RSS (MiB) and wall seconds of a train child process (its own VmHWM)."""
    # VmHWM, not ru_maxrss: ru_maxrss survives fork + exec, so a child would report at least
    # this (large) process' RSS.
    code = ("import re, runpy, sys; sys.argv = ['skinscan-edge', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('skinscan_edge', run_name='__main__')\nfinally:\n"
            "    hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "    print('PEAK_RSS_KB', hwm, file=sys.stderr)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "train", *args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    wall = time.perf_counter() - start
    peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")]
    if proc.returncode not in (0, 1) or not peak:
        raise RuntimeError(proc.stderr[-3000:])
    return int(peak[-1].split()[1]) / 1024, wall


#: The ``train`` runs whose peak RSS is read: phase 1 (features of every train and val image),
#: the test report; no fine-tuning (its memory does not grow with the image count).
RSS_TRAIN = ["--epochs", "1", "--fine-tune-epochs", "0", "--weights", "none", "--batch-size", str(BATCH)]


def step_rss_full_299(data: Path, tmp: Path, res: dict) -> None:
    res["rss_full_299px_mib"], res["rss_full_299px_wall_s"] = _train_rss(
        ["--data", str(data), "--out", str(tmp / "full299"), "--img-size", "299", "--image-cache", "disk",
         *RSS_TRAIN])


def step_rss(data: Path, subset: Path, tmp: Path, res: dict) -> None:
    common = RSS_TRAIN
    res["rss_full_75px_mib"], res["rss_full_75px_wall_s"] = _train_rss(
        ["--data", str(data), "--out", str(tmp / "full75"), "--img-size", "75", "--image-cache", "disk", *common])
    res["rss_subset_299px_mib"], res["rss_subset_299px_wall_s"] = _train_rss(
        ["--data", str(subset), "--out", str(tmp / "sub299"), "--img-size", "299", "--image-cache", "disk", *common])
    res["rss_subset_75px_mib"], _ = _train_rss(
        ["--data", str(subset), "--out", str(tmp / "sub75"), "--img-size", "75", "--image-cache", "disk", *common])


def make_subset(data: Path, per_class_share: float, out: Path) -> Path:
    """Hard links to the first share of each class folder (same layout)."""
    from skinscan_edge.data.folder import detect_layout

    _, root = detect_layout(data)
    for folder in sorted(d for d in root.iterdir() if d.is_dir()):
        files = sorted(folder.iterdir())
        dst = out / folder.relative_to(data)
        dst.mkdir(parents=True, exist_ok=True)
        for f in files[:max(5, round(len(files) * per_class_share))]:
            (dst / f.name).hardlink_to(f)
    return out


def main() -> None:
    global SIZE
    from skinscan_edge.core.host import host_info, host_line

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/scale_results.json"))
    ap.add_argument("--steps", default="scan,pipeline,model,phase1,rss")
    ap.add_argument("--pipeline-images", type=int, default=2048)
    ap.add_argument("--phase1-images", type=int, default=224)
    ap.add_argument("--img-size", type=int, default=SIZE, help="299; smaller only to try the script out")
    a = ap.parse_args()
    SIZE = a.img_size
    steps = a.steps.split(",")
    res: dict = json.loads(a.out.read_text()) if a.out.exists() else {}
    if steps != ["phase2"]:  # these describe the Kaggle-scale run; phase 2 alone records its own
        res.update({"host": host_line(host_info()), "img_size": SIZE, "load_avg_1min_start": os.getloadavg()[0],
                    "synthetic": True})
    else:
        res["phase2_host"] = host_line(host_info())
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        tmp = Path(tmp)
        split = step_scan(a.data, res) if "scan" in steps or len(steps) > 1 else None
        for name, fn in (("pipeline", lambda: step_pipeline(split, a.pipeline_images, tmp, res)),
                         ("model", lambda: step_model(res)),
                         ("phase1", lambda: step_phase1(split, a.phase1_images, res)),
                         ("rss_full_299", lambda: step_rss_full_299(a.data, tmp, res)),
                         ("phase2", lambda: step_phase2(a.data, split, res)),
                         ("rss", lambda: step_rss(a.data, make_subset(a.data, a.phase1_images / 18_000, tmp / "sub"),
                                                  tmp, res))):
            if name in steps:
                res[f"step_{name}_started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                res[f"step_{name}_load_1min_start"] = os.getloadavg()[0]
                _, res[f"step_{name}_s"] = _timed(fn)
                a.out.write_text(json.dumps(res, indent=2) + "\n")
                print(name, "done", flush=True)
    if steps != ["phase2"]:
        res["load_avg_1min_end"] = os.getloadavg()[0]
        res["peak_rss_this_process_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        res["phase2_load_1min_end"] = os.getloadavg()[0]
    res.update(kaggle_cpu_only(res))
    a.out.write_text(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()},
                                indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

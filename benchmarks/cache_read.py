"""Where the disk cache's time goes: ways of reading rows into tf.data, against its in-memory cache.

Every variant hands the model the same thing, shuffled uint8 batches of 32 rows of one decoded
cache file (``--images`` of the data set's JPEGs at 299 px; the file stays in the page cache),
through ``tf.data`` with a ``tf.numpy_function`` read, as ``data.image_batches`` does:

  in_memory        ``image_batches`` without a cache file: tf.data's ``cache()`` (the target's reference);
  disk             ``image_batches`` with the cache file: ``ImageCache.read`` as it is now
                   (``os.preadv`` per row into reused, 64-byte-aligned buffers);
  disk_fresh       the same reads into a fresh, unaligned array per batch (the reader before);
  mmap_dontneed    a memory map of the file: copy the rows out, then ``MADV_DONTNEED`` their pages
                   (the page cache keeps them, the process' RSS does not);
  framework_only   no read at all (the same buffer every batch): tf.data and numpy_function alone;
  disk_verified    ``disk`` in a process that has not read the file yet: the check of every row
                   against its xxh3 digest (``imagecache.verify_cache``, issue 28) is timed with the
                   epoch. Later epochs of the same process read as ``disk`` (the check is once per
                   process), so ``verified_ratio_10_epochs`` is the cost over a 10-epoch training.

Each variant runs ``--rounds`` epochs, in turn with the others (load bursts on a shared host hit
all alike); the JSON holds the median images/s and CPU microseconds per image (all threads).

    python benchmarks/cache_read.py /tmp/scale27k-full --out benchmarks/cache_read_results.json
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import skinscan_edge  # noqa: F401  (sets TF_USE_LEGACY_KERAS)

SIZE, BATCH = 299, 32


def _drain(ds) -> int:
    return sum(int(x.shape[0]) for x, _ in ds)


def _reader_dataset(read, labels, count: int):
    """What ``image_batches`` builds around a cache, with ``read(indices) -> uint8 rows``."""
    from skinscan_edge.core.tf import tf

    tf_, y_all = tf(), np.asarray(labels, np.int32)

    def _rows(ix):
        x, y = tf_.numpy_function(lambda i: (read(i), y_all[i]), [ix], (tf_.uint8, tf_.int32))
        x.set_shape((None, SIZE, SIZE, 3))
        return x, y

    ds = tf_.data.Dataset.range(count).shuffle(count, seed=0, reshuffle_each_iteration=True)
    return ds.batch(BATCH).map(_rows, num_parallel_calls=tf_.data.AUTOTUNE, deterministic=True).prefetch(-1)


def variants(paths, labels, cache) -> dict:
    from skinscan_edge.data.folder import image_batches

    row = SIZE * SIZE * 3
    fd = os.open(cache.path, os.O_RDONLY)
    kw = dict(img_size=SIZE, batch_size=BATCH, training=True, seed=0)

    def fresh(ix):
        out = np.empty((len(ix), SIZE, SIZE, 3), np.uint8)
        for j, i in enumerate(ix):
            os.preadv(fd, [out[j]], cache.offset + int(i) * row)
        return out

    mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    rows = np.frombuffer(mm, np.uint8, count=len(paths) * row, offset=cache.offset).reshape(-1, SIZE, SIZE, 3)

    def mapped(ix):
        out = rows[ix]
        for i in ix.tolist():
            start = cache.offset + i * row
            lo = start // mmap.PAGESIZE * mmap.PAGESIZE
            mm.madvise(mmap.MADV_DONTNEED, lo, -(-(start + row) // mmap.PAGESIZE) * mmap.PAGESIZE - lo)
        return out

    same = cache.read(range(BATCH))
    return {"in_memory": image_batches(paths, labels, **kw).prefetch(-1),
            "disk": image_batches(paths, labels, cache=cache, **kw).prefetch(-1),
            "disk_fresh": _reader_dataset(fresh, labels, len(paths)),
            "mmap_dontneed": _reader_dataset(mapped, labels, len(paths)),
            "framework_only": _reader_dataset(lambda ix: same[:len(ix)], labels, len(paths)),
            "disk_verified": image_batches(paths, labels, cache=cache, **kw).prefetch(-1)}


def main() -> None:
    from skinscan_edge.data.folder import detect_layout
    from skinscan_edge.core.host import host_info, host_line
    from skinscan_edge.data import imagecache
    from skinscan_edge.data.imagecache import build_cache

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/cache_read_results.json"))
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    _, root = detect_layout(a.data)
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    items = [(f, y) for y, d in enumerate(folders) for f in sorted(d.iterdir())]
    pick = np.random.default_rng(0).permutation(len(items))[:a.images]
    paths, labels = [str(items[i][0]) for i in pick], [int(items[i][1]) for i in pick]
    res: dict = {"host": host_line(host_info()), "synthetic": True, "images": len(paths), "img_size": SIZE,
                 "batch": BATCH, "rounds": a.rounds, "load_avg_1min_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        cache = build_cache(Path(tmp), "train", "0" * 64, SIZE, paths)
        sets = variants(paths, labels, cache)
        for ds in sets.values():
            _drain(ds)  # the in-memory one decodes here; every one is warm afterwards
        ips: dict = {k: [] for k in sets}
        verify_s: list = []
        cpu: dict = {k: [] for k in sets}
        for _ in range(a.rounds):
            for name, ds in sets.items():
                c0, t0 = time.process_time(), time.perf_counter()
                if name == "disk_verified":
                    imagecache._VERIFIED.clear()  # as in a new process
                    v0 = time.perf_counter()
                    imagecache.verify_cache(cache)
                    verify_s.append(time.perf_counter() - v0)
                n = _drain(ds)
                ips[name].append(n / (time.perf_counter() - t0))
                cpu[name].append((time.process_time() - c0) / n * 1e6)
    for name in sets:
        res[f"{name}_ips"] = round(float(np.median(ips[name])))
        res[f"{name}_cpu_us_per_image"] = round(float(np.median(cpu[name])), 1)
    res["disk_vs_memory_ratio"] = round(res["disk_ips"] / res["in_memory_ips"], 3)
    res["verify_seconds"] = round(float(np.median(verify_s)), 3)
    res["verify_gb_per_s"] = round(len(paths) * SIZE * SIZE * 3 / 1e9 / res["verify_seconds"], 2)
    res["verified_ratio_1_epoch"] = round(res["disk_verified_ips"] / res["disk_ips"], 3)
    epoch_s = len(paths) / res["disk_ips"]
    res["verified_ratio_10_epochs"] = round(10 * epoch_s / (10 * epoch_s + res["verify_seconds"]), 3)
    res["load_avg_1min_end"] = os.getloadavg()[0]
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

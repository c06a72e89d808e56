"""Near-duplicate detection at 27,000 images: scan time with hashing against without, and the
grouping (multi-index search + confirmation) against a brute-force all-pairs reference.

Writes N SYNTHETIC demo images (10 classes, ``--size`` px JPEG, 1% of them planted
near-duplicates: re-encodes, crops, mirrors) under /tmp/skinscan-dedup-bench once, then:

* ``scan(hashing=False)`` and ``scan(hashing=True)`` on the same files (the page cache is
  warmed by a first scan that is not timed), with ``--workers`` threads;
* ``grouping.build_grouping`` on the hashed scan (search + confirmation + components), with the
  number of candidate pairs the search compared;
* the brute-force reference: every pair's Hamming distance (n²/2 XOR + popcount, numpy).

Synthetic images are small, so decoding is cheap and hashing's share is larger than it is on
real photos; benchmarks/NOTES.md also gives the per-image cost on the 600×450 real photos.
Results go to benchmarks/dedup_scale.json.

    PYTHONPATH=. python benchmarks/dedup_scale.py [--n 27000] [--size 64] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def write_images(root: Path, n: int, size: int) -> int:
    """n synthetic JPEGs (1% planted near-duplicates); reused when already written."""
    from skinscan_edge.data.demo import CLASS_NAMES, slugify
    from skinscan_edge.data.lesions import render_image

    stamp = root / f".complete-{n}-{size}"
    if stamp.exists():
        return n // 100
    planted = n // 100
    originals = n - planted
    for c in CLASS_NAMES:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(originals):
        c = CLASS_NAMES[i % 10]
        img = render_image(c, np.random.default_rng([11, i]), size)
        Image.fromarray(img).save(root / c / f"{slugify(c)}_{i:06d}.jpg", quality=90)
    for k in range(planted):
        i = k * (originals // planted)
        c = CLASS_NAMES[i % 10]
        src = np.asarray(Image.open(root / c / f"{slugify(c)}_{i:06d}.jpg").convert("RGB"))
        edit = k % 3
        if edit == 1:
            m = max(1, round(size * 0.05))
            src = src[m:-m, m:-m]
        elif edit == 2:
            src = src[:, ::-1]
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(src)).save(buf, "JPEG", quality=70)
        (root / c / f"{slugify(c)}_{i:06d}_dup{edit}.jpg").write_bytes(buf.getvalue())
    stamp.touch()
    return planted


def brute_force_seconds(hashes: np.ndarray, radius: int, block: int = 1024) -> tuple[float, int]:
    t0 = time.perf_counter()
    close = 0
    for s in range(0, len(hashes), block):
        d = np.bitwise_count(hashes[s:s + block, None] ^ hashes[None, :])
        close += int((d <= radius).sum())
    return time.perf_counter() - t0, (close - len(hashes)) // 2


def _planted_pair(a: str, b: str) -> bool:
    """An (original, its planted copy) pair: same file stem up to the _dup suffix."""
    stem = lambda p: Path(p).stem.split("_dup")[0]  # noqa: E731
    return ("_dup" in a) != ("_dup" in b) and stem(a) == stem(b)


def real_photos_scan(workers: int, repeats: int = 3) -> dict:
    """Scan CPU seconds per image, with and without hashing, on the real 600×450 photos."""
    from skinscan_edge.data.folder import scan

    photos = next((p / "shared" / "real-photos" / "ham10000-sample" for p in HERE.parents
                   if (p / "shared" / "real-photos" / "ham10000-sample").is_dir()), None)
    if photos is None:
        return {"real_photos": "not found"}
    out = {}
    for hashing in (False, True):
        cpu = []
        for _ in range(repeats):
            c0 = time.process_time()
            n = sum(len(v) for v in scan(photos, workers=workers, hashing=hashing).items.values())
            cpu.append(time.process_time() - c0)
        out[f"real_photos_scan_{'with' if hashing else 'without'}_hashing_cpu_ms_per_image"] = round(1000 * min(cpu) / n, 2)
    return out


def main() -> None:
    from skinscan_edge.data import dedup
    from skinscan_edge.data.folder import scan
    from skinscan_edge.data.grouping import build_grouping
    from skinscan_edge.core.host import host_info, host_line

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=27000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", type=Path, default=Path("/tmp/skinscan-dedup-bench"))
    ap.add_argument("--out", type=Path, default=HERE / "dedup_scale.json")
    args = ap.parse_args()
    data = args.root / f"data-{args.n}-{args.size}"
    t0 = time.perf_counter()
    planted = write_images(data, args.n, args.size)
    write_s = time.perf_counter() - t0

    scan(data, workers=args.workers, hashing=False)  # warm the page cache
    c0, t0 = time.process_time(), time.perf_counter()
    scan(data, workers=args.workers, hashing=False)
    plain_s, plain_cpu = time.perf_counter() - t0, time.process_time() - c0
    c0, t0 = time.process_time(), time.perf_counter()
    hashed = scan(data, workers=args.workers, hashing=True)
    hashed_s, hashed_cpu = time.perf_counter() - t0, time.process_time() - c0
    real = real_photos_scan(args.workers)

    n = len(hashed.fingerprints)
    hashes = np.stack([fp.hashes for fp in hashed.fingerprints.values()])
    t0 = time.perf_counter()
    qi, _, _ = dedup.candidate_pairs(hashes[:, 0], hashes.ravel())
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    grouping = build_grouping(hashed)
    grouping_s = time.perf_counter() - t0
    brute_s, brute_close = brute_force_seconds(hashes[:, 0], dedup.HASH_RADIUS)
    found_planted = sum(any("_dup" in r for r in g) for g in grouping.groups)
    true_pairs = [p for p in grouping.pairs if _planted_pair(p["a"], p["b"])]
    other = [p for p in grouping.pairs if not _planted_pair(p["a"], p["b"])]
    results = {
        "host": f"{host_line(host_info())}; Python {platform.python_version()}; {args.workers} scan threads",
        "num_images": n, "image_px": args.size, "planted_near_duplicates": planted,
        "write_images_s": round(write_s, 1),
        "scan_without_hashing_s": round(plain_s, 2), "scan_with_hashing_s": round(hashed_s, 2),
        "hashing_overhead_pct": round(100 * (hashed_s - plain_s) / plain_s, 1),
        "scan_without_hashing_cpu_s": round(plain_cpu, 2), "scan_with_hashing_cpu_s": round(hashed_cpu, 2),
        "hashing_cpu_ms_per_image": round(1000 * (hashed_cpu - plain_cpu) / n, 3),
        **real,
        "load_average_1min_at_end": round(os.getloadavg()[0], 1),
        "search_s": round(search_s, 3), "search_hits_within_radius_incl_own_variants": int(len(qi)),
        "index_entries": int(hashes.size),
        "build_grouping_s": round(grouping_s, 3), "confirmed_pairs": len(grouping.pairs),
        "groups": len(grouping.groups), "planted_groups_found": found_planted,
        "confirmed_pairs_planted": len(true_pairs), "confirmed_pairs_not_planted": len(other),
        "not_planted_pairs_by_class": dict(Counter(p["a"].split("/")[0] for p in other)),
        "not_planted_pairs_min_max_correlation": [min((p["correlation"] for p in other), default=None),
                                                  max((p["correlation"] for p in other), default=None)],
        "brute_force_all_pairs_s": round(brute_s, 2), "brute_force_plain_pairs_within_radius": brute_close,
        "brute_force_comparisons": n * (n - 1) // 2,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Time the data fingerprint (skinscan_edge.data.fingerprint) on 27,000 tiny files.

The pipeline recomputes it on every call (and evaluate and report once each), so it must stay
cheap: one listing and one stat per file, nothing opened. Usage:

    python benchmarks/fingerprint_27k.py [--scratch /tmp/fp27k] [--files 27000] [--repeats 5]

Prints one JSON line: files, seconds per call (each repeat, median), and the host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def make_files(root: Path, n: int, classes: int = 10) -> None:
    """n files of 64 bytes spread over ``classes`` class folders (the scan's layout)."""
    for i in range(n):
        d = root / f"class{i % classes}"
        if i < classes:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"img_{i:06d}.jpg").write_bytes(b"\xff\xd8\xff" + bytes(61))


def main() -> None:
    from skinscan_edge.data.fingerprint import data_fingerprint, diff
    from skinscan_edge.core.host import host_info, host_line

    ap = argparse.ArgumentParser()
    ap.add_argument("--scratch", type=Path, default=None)
    ap.add_argument("--files", type=int, default=27_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        root = Path(tmp) / "data"
        make_files(root, args.files)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fp = data_fingerprint(root)
            times.append(time.perf_counter() - t0)
        os.utime(next((root / "class0").iterdir()), ns=(1, 1))
        t0 = time.perf_counter()
        change = diff(fp.files, data_fingerprint(root).files)
        diff_s = time.perf_counter() - t0
    print(json.dumps({"files": len(fp.files), "fingerprint_s": [round(t, 3) for t in times],
                      "fingerprint_median_s": round(statistics.median(times), 3),
                      "fingerprint_and_diff_s": round(diff_s, 3), "diff": change.describe(),
                      "load_average_1min": round(os.getloadavg()[0], 1), "host": host_line(host_info())}))


if __name__ == "__main__":
    main()

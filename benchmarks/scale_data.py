"""Write a SYNTHETIC data set of Kaggle size and layout, for benchmarks/scale.py.

The ten folders carry the Kaggle skin-diseases-image-dataset's names and published per-folder
counts (27,153 images in all); each image is drawn by ``skinscan_edge.data.demo`` (synthetic,
not medical) at 640 px and cropped to 640x480, the size of a typical clinical photo, then saved
as a JPEG. Worker processes split the file list; the same seed gives the same bytes.

The set that benchmarks/NOTES.md ("Training at Kaggle scale") measures was drawn in full, every
file its own image (no ``--unique``, no hard links):

    python benchmarks/scale_data.py /tmp/scale27k-full --workers 2

Drawing costs about 50 ms per image per idle core (about 12 minutes on 2 idle cores; longer on a
shared host, ``generate.json`` records it). To try scale.py out more cheaply, ``--unique N``
draws only N images (spread over the folders in proportion) and fills each folder to its Kaggle
count with hard links to them: every file is still a real 640x480 JPEG that is opened and
decoded, but the content repeats, so the page cache holds far fewer distinct JPEG bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

#: Kaggle folder -> published image count (issue 15); the display labels come from convert/.
KAGGLE_COUNTS = {
    "1. Eczema 1677": 1677, "2. Melanoma 15.75k": 3140, "3. Atopic Dermatitis - 1.25k": 1257,
    "4. Basal Cell Carcinoma (BCC) 3323": 3323, "5. Melanocytic Nevi (NV) - 7970": 7970,
    "6. Benign Keratosis-like Lesions (BKL) 2624": 2079,
    "7. Psoriasis pictures Lichen Planus and related diseases - 2k": 2055,
    "8. Seborrheic Keratoses and other Benign Tumors - 1.8k": 1847,
    "9. Tinea Ringworm Candidiasis and other Fungal Infections - 1.7k": 1702,
    "10. Warts Molluscum and other Viral Infections - 2103": 2103,
}
WIDTH, HEIGHT = 640, 480


def _painter_names() -> dict[str, str]:
    labels = json.loads((Path(__file__).resolve().parents[1] / "convert" / "kaggle_labels.json").read_text())
    return labels["labels"]


def _write(job: tuple[str, str, int, int, int, str]) -> int:
    from PIL import Image

    from skinscan_edge.data.demo import CLASS_NAMES, IMAGE_NOTE
    from skinscan_edge.data.lesions import render_image

    folder, painter, index, seed, cls, out = job
    rng = np.random.default_rng([seed, cls, index])
    arr = render_image(painter, rng, WIDTH)[(WIDTH - HEIGHT) // 2:(WIDTH + HEIGHT) // 2]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=int(rng.integers(85, 96)), comment=IMAGE_NOTE.encode())
    path = Path(out) / "IMG_CLASSES" / folder / f"{CLASS_NAMES.index(painter)}_{index:05d}.jpg"
    path.write_bytes(buf.getvalue())
    return len(buf.getvalue())


def generate(out: Path, workers: int = 2, unique: int | None = None, seed: int = 0) -> dict:
    """Write the set: ``unique`` drawn images (all when None), the rest hard links to them."""
    from skinscan_edge.data.demo import CLASS_NAMES

    painters = _painter_names()
    total = sum(KAGGLE_COUNTS.values())
    share = 1.0 if unique is None else min(1.0, unique / total)
    jobs, drawn = [], {}
    for cls, (folder, n) in enumerate(KAGGLE_COUNTS.items()):
        (out / "IMG_CLASSES" / folder).mkdir(parents=True, exist_ok=True)
        drawn[folder] = max(5, round(n * share))
        jobs += [(folder, painters[folder], i, seed, cls, str(out)) for i in range(drawn[folder])]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        sizes = list(pool.map(_write, jobs, chunksize=16))
    seconds = time.perf_counter() - start
    for folder, n in KAGGLE_COUNTS.items():
        d = out / "IMG_CLASSES" / folder
        prefix = CLASS_NAMES.index(painters[folder])
        for i in range(drawn[folder], n):
            (d / f"{prefix}_{i:05d}.jpg").hardlink_to(d / f"{prefix}_{i % drawn[folder]:05d}.jpg")
    (out / "README.txt").write_text("SYNTHETIC images (skinscan_edge.data.demo), not medical; Kaggle layout.\n")
    return {"images": sum(KAGGLE_COUNTS.values()) if unique else len(jobs), "drawn": len(jobs), "generate_s": round(seconds, 1), "workers": workers,
            "mean_jpeg_kib": round(float(np.mean(sizes)) / 1024, 1), "width_px": WIDTH, "height_px": HEIGHT,
            "ms_per_image_per_worker": round(1000 * seconds * workers / len(jobs), 1)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--unique", type=int, default=None, help="draw this many; hard-link the rest")
    a = ap.parse_args()
    result = generate(a.out, a.workers, a.unique)
    (a.out / "generate.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))

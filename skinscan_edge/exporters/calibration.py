"""The int8 calibration sample: stratified by class, with a floor per class.

A plain random sample of the train split mirrors its class shares, so a rare class (Melanoma
in a skewed set) may put a handful of images, or none, into the ranges every activation is
quantized with. Here each class first gets ``floor`` images (all of them when it has fewer),
and the rest of the sample is drawn at random from what is left, so the shares stay close to
the split's. Seeded: the same split, size, floor and seed give the same files.
"""

from __future__ import annotations

import numpy as np


def stratified_pick(labels: list[int], n: int, seed: int, floor: int) -> list[int]:
    """Indices into ``labels`` (sorted): ``floor`` per class (capped so that ``n`` holds them
    all, and by the class' size), the rest uniformly from the remaining images."""
    y = np.asarray(labels)
    n = min(n, len(y))
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per_class = min(floor, n // max(len(classes), 1))
    chosen = []
    for c in classes:
        idx = np.flatnonzero(y == c)
        chosen += rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist()
    rest = np.setdiff1d(np.arange(len(y)), chosen)
    chosen += rng.choice(rest, size=n - len(chosen), replace=False).tolist()
    return sorted(chosen)


def per_class(run, files: list[str]) -> dict[str, int]:
    """Images per class (labels.txt names, 0 included) among calibration ``files`` (split-relative)."""
    from pathlib import Path

    root = Path(run.split()["root"])
    label_of = {p.relative_to(root).as_posix(): y for p, y in run.split_items("train")}
    names = run.labels()
    counts = np.bincount([label_of[f] for f in files], minlength=len(names)) if files else np.zeros(len(names), int)
    return {name: int(k) for name, k in zip(names, counts)}

"""Top-k labels for single images, through the Keras model or any export of a run.

The images go through the same loader as training and evaluate (``imageio.load_rgb``), so the
same files are refused for the same reasons, and through the same runtimes as evaluate.

>>> # from skinscan_edge.core.rundir import RunDir
>>> # predict_images(RunDir.open("runs/demo"), ["lesion.jpg"], model="tflite-int8", top_k=3)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skinscan_edge.core.errors import BadImage, SkinscanError
from skinscan_edge.core.manifest import check_complete, read_manifest
from skinscan_edge.core.names import file_name_problem, printable_path
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.data.imageio import load_rgb
from skinscan_edge.runtimes.models import model_entries, open_model

BATCH = 16


def expand_images(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the files directly inside it (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
            if not files:
                raise SkinscanError(f"folder {p} holds no files to predict")
            out.extend(files)
        else:
            out.append(p)
    if not out:
        raise SkinscanError("give at least one IMAGE (a file, or a folder of images)")
    return out


def predict_images(run: RunDir, paths: list[Path], model: str = "keras", top_k: int = 3,
                   num_threads: int | None = None) -> list[dict]:
    """One result per path, in order: ``{"path", "top_k": [{"label", "score"}]}`` or, for a file
    that cannot be used, ``{"path", "skipped": reason, "detail"}``."""
    labels = run.labels()
    if not 1 <= top_k <= len(labels):
        raise SkinscanError(f"--top-k must be between 1 and {len(labels)} (the number of classes), got {top_k}")
    (entry,) = model_entries(run, [model])
    if entry["name"] != "keras":
        check_complete(run, read_manifest(run))
    paths = expand_images(paths)
    rt = open_model(run, entry, num_threads=num_threads)
    size = run.img_size()
    results: list[dict] = []
    pending: list[tuple[int, np.ndarray]] = []

    def flush():
        if not pending:
            return
        probs = rt.predict(np.stack([x for _, x in pending]))
        if probs.ndim != 2 or probs.shape[1] != len(labels):
            raise SkinscanError(f"{model} outputs shape {tuple(probs.shape)} but labels.txt lists "
                                f"{len(labels)} classes; the run's labels don't match its model")
        for (i, _), p in zip(pending, probs):
            order = np.argsort(-p, kind="stable")[:top_k]
            results[i]["top_k"] = [{"label": labels[j], "score": float(p[j])} for j in order]
        pending.clear()

    for path in paths:
        # A name that is not UTF-8 or holds a line break is shown escaped: one line per image, valid JSON.
        results.append({"path": printable_path(str(path)) if file_name_problem(str(path)) else str(path)})
        try:
            pending.append((len(results) - 1, load_rgb(path, size)))
        except BadImage as e:
            results[-1].update(skipped=e.reason, detail=e.detail)
        if len(pending) == BATCH:
            flush()
    flush()
    return results

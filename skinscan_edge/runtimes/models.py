"""The models of a run, Keras included: one list that evaluate, benchmark and predict share.

Each model is a manifest-style entry (``name``, ``format``, ``precision``, ``file``...). The
Keras baseline is the entry named ``keras``; every export comes from ``exports/manifest.json``.
:func:`open_model` verifies an export's SHA-256 and opens it through the runtime table, so no
caller branches on which model is the baseline or on its format.

>>> # from skinscan_edge.core.rundir import RunDir
>>> # run = RunDir.open("runs/demo")
>>> # [m["name"] for m in model_entries(run)]  # ['keras', 'tflite-fp32', ...]
>>> # probs = open_model(run, "tflite-int8").predict(images)
"""

from __future__ import annotations

from pathlib import Path

from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.manifest import entries, read_manifest, verify_entry
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.runtimes.interface import open_runtime

KERAS = "keras"


def keras_entry(run: RunDir) -> dict:
    """The baseline as a model entry (its file is ``RUN/model.keras``)."""
    return {"name": KERAS, "format": "keras", "precision": "fp32", "file": run.model_path.name,
            "size_bytes": run.model_path.stat().st_size if run.model_path.exists() else None}


def model_entries(run: RunDir, names: list[str] | None = None, *, keras: bool = True) -> list[dict]:
    """Keras (first, unless ``keras=False``) and the exports, or only ``names`` in that order.

    With no names, an export set that did not finish is refused (its manifest says what was
    asked and what was written); naming a subset of the exports that exist is allowed.
    """
    if not names:
        exports = entries(run) if run.manifest_path.exists() or not keras else []
        return ([keras_entry(run)] if keras else []) + exports
    known = [KERAS, *(e["name"] for e in read_manifest(run)["exports"])] if run.manifest_path.exists() else [KERAS]
    for name in names:
        if name not in known:
            raise SkinscanError(did_you_mean(name, known, "model"))
    wanted = [n for n in names if n != KERAS]
    exports = {e["name"]: e for e in entries(run, wanted)} if wanted else {}
    return [keras_entry(run) if n == KERAS else exports[n] for n in names]


def path_of(run: RunDir, entry: dict) -> Path:
    return run.model_path if entry["name"] == KERAS else run.exports / entry["file"]


def describe(run: RunDir, entry: dict) -> dict:
    """What every report row says about its model: format, precision, file (relative to the run), size."""
    rel = path_of(run, entry).relative_to(run.root).as_posix()
    size = entry.get("size_bytes")
    if size is None:
        size = path_of(run, entry).stat().st_size
    return {"format": entry["format"], "precision": entry["precision"], "file": rel, "size_mb": size / 1e6}


def verified_path(run: RunDir, entry: dict) -> Path:
    """The model's file; an export must still match its manifest SHA-256."""
    if entry["name"] == KERAS:
        return run.model_path

    return verify_entry(run, entry)


def open_model(run: RunDir, entry: dict | str = KERAS, *, num_threads: int | None = None, device: str = "cpu"):
    """Verify one model of ``run`` and open it in its runtime (``runtimes.open_runtime``)."""
    if isinstance(entry, str):
        (entry,) = model_entries(run, [entry])
    return open_runtime(verified_path(run, entry), entry["format"], name=entry["name"],
                        num_threads=num_threads, device=device)

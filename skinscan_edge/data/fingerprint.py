"""The data folder's fingerprint: has the data changed since the model was trained?

The fingerprint is the SHA-256 of the sorted list of every file the scan reads
(``data.list_files``: relative path, size in bytes, modification time in nanoseconds). Nothing
is opened or decoded, so it costs one ``stat`` per file (27,000 files: see benchmarks/NOTES.md)
and is recomputed by every ``pipeline``, ``evaluate`` and ``report`` call.

``train`` stores the hash and the file count in ``config.json`` (``data_fingerprint``) and the
list itself in ``RUN/data_files.json``, so that a later call can say what changed: N added,
M removed, K modified. A copy of the data that does not keep modification times (``cp``
without ``-p``, some sync tools) reads as "every file modified".

>>> # change = data_change(RunDir("runs/demo"), "data/demo")
>>> # change.describe() if change else "unchanged"   # '4 added, 0 removed, 0 modified'
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import read_json_or_none, write_json
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.data.folder import list_files

FILES_NAME = "data_files.json"

#: Files the run's training state is made of; ``clear_training_state`` removes them before a
#: retraining, so that nothing of the old model is resumed or reused.
TRAINING_STATE = ("checkpoints", "backup", "tensorboard", "history_head.csv", "history_fine_tune.csv", "history.csv",
                  "training_curves.png", "model.keras", "reports/keras_test_report.txt",
                  "reports/keras_test_report.json", "reports/keras_confusion.png")


@dataclass
class Fingerprint:
    """``files``: relative path -> [size in bytes, mtime in ns]; ``sha256`` hashes them sorted."""

    sha256: str
    files: dict[str, list[int]]

    def summary(self) -> dict:
        """What config.json records."""
        return {"sha256": self.sha256, "files": len(self.files)}


@dataclass
class DataChange:
    """Relative paths added, removed and modified (size or mtime) since training."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    counted: bool = True  # False when the run has no file list to compare with (only the hash differs)

    def describe(self) -> str:
        if not self.counted:
            return "the data changed (the run has no file list to count the changes)"
        return f"{len(self.added)} added, {len(self.removed)} removed, {len(self.modified)} modified"

    def warning(self) -> str:
        return f"model trained on an older copy of the data: {self.describe()}"


def data_fingerprint(data: str | Path) -> Fingerprint:
    """Stat every file the scan would read; decode nothing."""
    listing = list_files(Path(data))
    files: dict[str, list[int]] = {}
    for _, rel, _ in listing.files:
        try:
            st = os.stat(os.path.join(listing.root, rel))
        except OSError:  # removed while we listed: it is not part of the data
            continue
        files[rel] = [st.st_size, st.st_mtime_ns]
    h = hashlib.sha256()
    for rel in sorted(files):
        size, mtime = files[rel]
        h.update(os.fsencode(rel) + b"\0" + f"{size} {mtime}\n".encode())  # fsencode: undecodable names too
    return Fingerprint(sha256=h.hexdigest(), files=files)


def diff(old: dict[str, list[int]], new: dict[str, list[int]]) -> DataChange:
    """What was added, removed and modified between two file lists."""
    return DataChange(added=sorted(new.keys() - old.keys()), removed=sorted(old.keys() - new.keys()),
                      modified=sorted(k for k in old.keys() & new.keys() if list(old[k]) != list(new[k])))


def save_file_list(run: RunDir, fp: Fingerprint) -> None:
    write_json(run.root / FILES_NAME, {"sha256": fp.sha256, "files": fp.files})


def data_change(run: RunDir, data: str | Path | None = None) -> DataChange | None:
    """What changed in ``data`` (default: the folder the run was scanned from) since it was trained;
    None when nothing did, or when it cannot be told: a run trained before fingerprints were
    recorded, or a data folder that is not here (a run copied to another machine)."""
    config = read_json_or_none(run.config_path) or {}
    saved = config.get("data_fingerprint")
    data = data if data is not None else config.get("data_root")  # absolute: the scan's class root
    if not saved or not data or not Path(data).is_dir():
        return None
    try:
        now = data_fingerprint(data)
    except SkinscanError:  # no class folders left: everything was removed
        now = Fingerprint(sha256="", files={})
    if now.sha256 == saved.get("sha256"):
        return None
    listed = read_json_or_none(run.root / FILES_NAME) or {}
    if listed.get("sha256") != saved.get("sha256"):
        return DataChange(counted=False)
    return diff(listed.get("files", {}), now.files)


def clear_training_state(run: RunDir) -> None:
    """Before training a run again: mark it incomplete first (an interruption then leaves a run
    every command refuses), then remove the old model and every file training would resume from.
    config.json stays until the new training rewrites it, so an interrupted retraining is
    detected, and redone, by the next ``pipeline``."""
    import shutil

    if not run.config_path.is_file():  # the run's ownership marker: these folders are ours only in a run we wrote
        raise SkinscanError(f"{run.root} has no config.json, so it is not a skinscan-edge run; nothing was removed")
    run.set_status("incomplete", phase="retrain")
    for name in TRAINING_STATE:
        path = run.root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

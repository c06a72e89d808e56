"""Files written whole or not at all (a temporary file renamed into place), JSON in and out, the
one timestamp format and the SHA-256 of a file. The lowest layer of the run directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from skinscan_edge.core.errors import RunFileError

_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file, fsync and rename, so a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give it ordinary file permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:  # a write's error names no file; the user needs it
            e.filename = str(path)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # RunFileError is a ValueError: read_json_or_none still copes
        raise RunFileError(f"{path} is damaged ({e}); re-run the command that wrote it, or restore the file") from None


def read_json_or_none(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or damaged (the caller redoes or omits
    what it would have said)."""
    try:
        return read_json(path) if Path(path).exists() else None
    except ValueError:
        return None


def timestamp() -> str:
    """Now, local time with its UTC offset, to the second: the one timestamp format of every file."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_temporary(name: str) -> bool:
    """A name that only this project's writers give a file (or the bundle's folder) before renaming
    it into place: ``atomic_write_bytes``, the checkpoints, the model, the image cache and the bundle
    (``.NAME...tmp...``), and the ONNX writer (``NAME.tmp.onnx``)."""
    return (name.startswith(".") and ".tmp" in name) or name.endswith(".tmp.onnx")


def remove_dead_temporaries(root: Path) -> int:
    """Remove what a killed writer left under ``root`` before its rename (a SIGKILL or a power cut
    runs no cleanup). Only for a caller that holds the run's lock: then no live writer owns them.
    Returns how many were removed."""
    found = [p for p in Path(root).rglob("*") if is_temporary(p.name)]
    for p in sorted(found, key=lambda p: len(p.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(found)

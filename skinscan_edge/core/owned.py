"""Folders the project may delete: only those it made itself, marked with a file it wrote.

Every ``shutil.rmtree`` of the project goes through :func:`remove_owned`. A path the user chose
(``SKINSCAN_READER_VENV``, ``--out``) may name a folder that already holds their own files; without
the marker, nothing is removed and the error says which folder and what to do.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from skinscan_edge.core.errors import SkinscanError

MARKER = ".skinscan-edge-owned"


def make_owned(folder: Path, what: str) -> Path:
    """Create ``folder`` (new, or empty) and mark it as the project's; refuses a folder with content."""
    folder = Path(folder)
    if folder.exists() and not is_owned(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise SkinscanError(f"{folder} already exists and was not made by skinscan-edge (no {MARKER} in it); "
                            f"nothing in it was changed. Choose a new or empty folder for {what}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(f"made by skinscan-edge: {what}\n", encoding="utf-8")
    return folder


def is_owned(folder: Path) -> bool:
    return (Path(folder) / MARKER).is_file()


def remove_owned(folder: Path, what: str) -> None:
    """Remove ``folder`` if the project made it (its marker is there); a missing one is fine."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not is_owned(folder):
        raise SkinscanError(f"{folder} was not made by skinscan-edge (no {MARKER} in it), so it is not removed; "
                            f"move it away, or choose another folder for {what}")
    shutil.rmtree(folder)

"""``RUN/exports/manifest.json``: the only way later commands find exports.

Shape::

    {"run": "...", "created": "...", "tool_versions": {...},
     "calibration": {"split": "train", "seed": 0, "count": 200, "files": [...]},
     "exports": [ {"name": "tflite-int8", "file": "model_int8.tflite", "format": "tflite",
                   "precision": "int8", "size_bytes": ..., "sha256": "...",
                   "inputs": [{"name", "shape", "dtype", "quantization"}], "outputs": [...],
                   "convert_seconds": ..., "notes": "..."}, ... ],
     "failures": [{"name": "...", "error": "..."}]}
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SkinscanError
from ..rundir import RunDir, read_json, sha256_file, write_json


def read_manifest(run: RunDir) -> dict:
    if not run.manifest_path.exists():
        raise SkinscanError(
            f"no exports in {run.root} (missing {run.manifest_path.relative_to(run.root)}); "
            f"run `skinscan-edge export {run.root}` first"
        )
    return read_json(run.manifest_path)


def entries(run: RunDir, names: list[str] | None = None) -> list[dict]:
    """Manifest entries, optionally filtered by name (unknown names fail with the valid list)."""
    items = read_manifest(run)["exports"]
    if not names:
        return items
    known = {e["name"]: e for e in items}
    missing = [n for n in names if n not in known]
    if missing:
        from ..errors import did_you_mean

        raise SkinscanError(did_you_mean(missing[0], sorted(known)).replace("unknown name", "unknown export"))
    return [known[n] for n in names]


def verify_entry(run: RunDir, entry: dict) -> Path:
    """Return the export's path after checking it exists and still matches its SHA-256."""
    path = run.exports / entry["file"]
    if not path.exists():
        raise SkinscanError(f"export {entry['name']} is listed in the manifest but {path} is missing")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise SkinscanError(
            f"export {entry['name']} ({path.name}) does not match its manifest SHA-256 "
            f"(expected {entry['sha256'][:12]}…, found {digest[:12]}…); re-run `skinscan-edge export`"
        )
    return path


def write_manifest(run: RunDir, manifest: dict) -> None:
    write_json(run.manifest_path, manifest)

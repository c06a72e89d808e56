"""``RUN/exports/manifest.json``: the only way later commands find exports.

Its typed definition is ``runfiles.Manifest``; in short::

    {"run": "...", "created": "...", "tool_versions": {...}, "state": "complete",
     "requested": ["tflite-fp32", ...], "calibration": {"split": "train", "seed": 0, ...},
     "exports": [ {"name": "tflite-int8", "file": "model_int8.tflite", "format": "tflite",
                   "precision": "int8", "size_bytes": ..., "sha256": "...",
                   "inputs": [{"name", "shape", "dtype", "quantization"}], "outputs": [...],
                   "convert_seconds": ..., "notes": "..."}, ... ],
     (tflite-qat-int8 adds "float_twin": {"file", "format", "precision", "size_bytes", "sha256",
      "check_...": ...}: its fine-tuned float weights without fake-quant, exporters/qat.py)
     "failures": [{"name": "...", "error": "..."}]}

``state`` is ``running`` while ``export`` writes, ``complete`` when every requested export was
tried (a failed conversion is listed in ``failures``), and ``interrupted`` when the export
stopped before that (Ctrl-C, a crash). A manifest still ``running`` with no export running is
one whose process was killed: it counts as interrupted. Manifests from before ``state``
existed count as complete.
"""

from __future__ import annotations

from pathlib import Path

from skinscan_edge.core import runfiles
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.files import sha256_file
from skinscan_edge.core.rundir import RunDir

COMPLETE = "complete"


def read_manifest(run: RunDir) -> dict:
    if not run.manifest_path.exists():
        raise SkinscanError(
            f"no exports in {run.root} (missing {run.manifest_path.relative_to(run.root)}); "
            f"run `skinscan-edge export {run.root}` first"
        )
    return runfiles.load(runfiles.Manifest, run.manifest_path).model_dump(mode="json", by_alias=True, exclude_unset=True)


def completeness(manifest: dict) -> tuple[int, int]:
    """(exports written, exports requested) by the export that wrote this manifest."""
    written = {e["name"] for e in manifest.get("exports", [])}
    requested = manifest.get("requested") or sorted(written)
    return len(written & set(requested)), len(requested)


def check_complete(run: RunDir, manifest: dict) -> None:
    """Refuse an export set whose export did not finish, with the command that finishes it."""
    if manifest.get("state", COMPLETE) == COMPLETE:
        return
    written, requested = completeness(manifest)
    raise SkinscanError(f"export was interrupted: {written} of {requested} requested exports written; run "
                        f"`skinscan-edge export {run.root} {manifest.get('command_flags', '')}`".rstrip() + " again")


def entries(run: RunDir, names: list[str] | None = None) -> list[dict]:
    """Manifest entries, optionally filtered by name (unknown names fail with the valid list).

    All of them only when the export finished; a named subset of the files that exist may be
    used from an interrupted set (the caller says the set is partial)."""
    manifest = read_manifest(run)
    items = manifest["exports"]
    if not names:
        check_complete(run, manifest)
        return items
    known = {e["name"]: e for e in items}
    missing = [n for n in names if n not in known]
    if missing:
        raise SkinscanError(did_you_mean(missing[0], sorted(known), "export"))
    return [known[n] for n in names]


def verify_entry(run: RunDir, entry: dict) -> Path:
    """Return the export's path after checking it exists and still matches its SHA-256."""
    return _verify(run, entry["name"], entry)


def float_twin_entry(entry: dict) -> dict | None:
    """The export's float twin as a model entry (named ``<export> float twin``), or None."""
    twin = entry.get("float_twin")
    return {**twin, "name": f"{entry['name']} float twin"} if twin else None


def verify_float_twin(run: RunDir, entry: dict) -> Path | None:
    """The path of the export's float twin, checked like the export itself; None when it has none."""
    twin = float_twin_entry(entry)
    return _verify(run, twin["name"], twin) if twin else None


def _verify(run: RunDir, name: str, entry: dict) -> Path:
    path = run.exports / entry["file"]
    if not path.exists():
        raise SkinscanError(f"export {name} is listed in the manifest but {path} is missing")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise SkinscanError(
            f"export {name} ({path.name}) does not match its manifest SHA-256 "
            f"(expected {entry['sha256'][:12]}…, found {digest[:12]}…); re-run `skinscan-edge export`"
        )
    return path


def write_manifest(run: RunDir, manifest: dict) -> None:
    runfiles.save(runfiles.Manifest, run.manifest_path, manifest)

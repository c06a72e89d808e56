"""``export_run``: one trained run -> every file a deployment needs, plus the manifest.

The exports come from the table in ``converters.py``. The manifest is rewritten after every
file, with ``state`` saying whether the export finished (see ``manifest.py``): an interrupted
export is never mistaken for a finished one, and running the same export again converts only
what is missing, keeping every file already made from the same model with the same recipe
whose SHA-256 still matches.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from skinscan_edge.core import runfiles
from skinscan_edge.core.config import ExportConfig
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import read_json, sha256_file, timestamp
from skinscan_edge.core.formats import int8_settings, spec
from skinscan_edge.core.host import resolve_target, tool_versions
from skinscan_edge.core.manifest import COMPLETE, verify_entry, verify_float_twin, write_manifest
from skinscan_edge.core.plugins import load_plugins
from skinscan_edge.core.progress import Reporter, reporter_or_silent
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.runlock import holds_run_lock
from skinscan_edge.core.tf import quiet_stderr
from skinscan_edge.core.workers import tell, Worker
from skinscan_edge.data.imagecache import load_split_images
from skinscan_edge.exporters.calibration import per_class, stratified_pick
from skinscan_edge.exporters.converters import Context

__all__ = ["ExportConfig", "export_run", "calibration_set", "reusable_entries"]


def calibration_set(run: RunDir, n: int, seed: int, class_floor: int = 0) -> tuple[list[str], np.ndarray]:
    """A seeded sample of the train split, decoded once and shared by every int8 export;
    stratified with ``class_floor`` images per class at least (exporters/calibration.py)."""
    items = run.split_items("train")
    if not items:
        raise SkinscanError(f"--int8/--qat need train images to calibrate on, and the split in {run.root} has none")
    pick = stratified_pick([y for _, y in items], n, seed, class_floor)
    root = Path(run.split()["root"])
    paths = [items[i][0] for i in pick]
    return [p.relative_to(root).as_posix() for p in paths], pin_input_range(load_split_images(run, "train", pick))


def pin_input_range(calib: np.ndarray) -> np.ndarray:
    """Make the calibrated input range exactly 0..255.

    The int8 files take raw uint8 pixels. Their input scale comes from the calibration
    images' min and max; a set whose brightest pixel is 237 would give scale 0.93 and clip
    every brighter pixel. Setting two pixels of the first image to 0 and 255 pins the range,
    so the input quantization is the identity (scale 1, zero point 0).
    """
    calib = calib.copy()
    if len(calib):
        calib[0, 0, 0, :] = 0
        calib[0, 0, 1, :] = 255
    return calib


def reusable_entries(run: RunDir, manifest: dict | None, cfg: ExportConfig) -> dict[str, dict]:
    """The exports of ``manifest`` that need no new conversion: made from the run's current model
    with the same recipe, and still matching their SHA-256."""
    if not manifest or cfg.force or manifest.get("model_sha256") != sha256_file(run.model_path):
        return {}
    made = manifest.get("config", {})
    if ExportConfig(**{k: v for k, v in made.items() if k in ExportConfig.__dataclass_fields__}).recipe() != cfg.recipe():
        return {}
    good = {}
    for entry in manifest.get("exports", []):
        try:
            twin = _converters()[entry["name"]].float_twin
        except SkinscanError:  # a plugin's format whose plugin is not loaded now: checked like any file
            twin = False
        if twin and not entry.get("float_twin"):
            continue  # made before exports had a float twin: convert again to add it
        try:
            verify_entry(run, entry)
            verify_float_twin(run, entry)
            good[entry["name"]] = entry
        except SkinscanError:
            pass
    return good


def _command_flags(cfg: ExportConfig) -> str:
    """The flags that repeat this export (for the message that says how to finish it)."""
    flags = [f"--precision {p}" for p in cfg.precisions if p != "fp32"]
    return " ".join(flags)


@holds_run_lock("export")
def export_run(run: RunDir, cfg: ExportConfig, reporter: Reporter | None = None) -> dict:
    """Export ``run`` at the requested precisions into ``RUN/exports`` and write the manifest.

    A failing conversion is recorded and the others still run; the returned manifest's
    ``failures`` list is non-empty then. Files already made from this model with the same
    recipe are kept (``cfg.force`` converts them again).

    >>> # export_run(RunDir.open("runs/demo"), ExportConfig(precisions=["fp32", "int8"]))
    """
    say = reporter_or_silent(reporter)
    cfg.validate()
    onnx_target = resolve_target(cfg.onnx_target)
    names = cfg.names()
    old = runfiles.read_or_none(runfiles.Manifest, run.manifest_path)
    reuse = reusable_entries(run, old, cfg)
    todo = [n for n in names if n not in reuse]
    needs_calib = any(_converters()[n].calibrated for n in todo)
    calib_files, calib = (calibration_set(run, cfg.calib_samples, cfg.seed, cfg.calib_class_floor)
                          if needs_calib else ([], None))
    if not needs_calib and old:  # every calibrated file is reused: so is the record of its calibration
        calibration = old.get("calibration")
    else:
        calibration = {"split": "train", "seed": cfg.seed, "count": len(calib_files), "class_floor": cfg.calib_class_floor,
                       "per_class": per_class(run, calib_files), "files": calib_files}
    run.exports.mkdir(parents=True, exist_ok=True)
    kept = [e for e in (old or {}).get("exports", []) if e["name"] not in names or e["name"] in reuse]
    manifest = {"run": str(run.root), "created": timestamp(), "tool_versions": tool_versions(),
                "input_contract": read_json(run.config_path).get("input_contract"), "config": asdict(cfg),
                "model_sha256": sha256_file(run.model_path), "calibration": calibration,
                "onnx_int8_settings": int8_settings(onnx_target),
                "state": "running", "requested": names, "command_flags": _command_flags(cfg),
                "exports": kept, "failures": []}
    for name in names:
        if name in reuse:
            say.message(f"[green]✓[/] {name:<16} kept (made from this model with the same recipe; SHA-256 verified)", "ok")
    if todo and cfg.keep_float and cfg.keep_float != ["auto"]:  # before any conversion: a typo costs seconds
        model = run.load_model()
        _check_keep_float(model, cfg.keep_float)
        del model  # the conversions load it in their workers; this process stays small
    write_manifest(run, manifest)
    background: dict[str, tuple[Worker, float]] = {}
    try:
        # Every conversion runs in a worker process of its own (workers.py): this process never
        # loads the model, and the gigabytes a converter keeps go back to the system per file.
        # The workers share the temp dir (the serving SavedModel is saved once, by the first).
        with tempfile.TemporaryDirectory(prefix="skinscan-export-") as tmp:
            job = (str(run.root), asdict(cfg), calib, tmp, onnx_target)
            if cfg.jobs > 1:
                for name in todo:
                    if _converters()[name].background:
                        background[name] = (Worker(_in_worker, name, *job, True, say=say.message), time.time())
                        say.message(f"[bold]{name}[/] started in a second process")
            for name in todo:
                _convert_one(run, name, background.get(name) or job, manifest, say)
                write_manifest(run, manifest)
    except BaseException:
        for worker, _ in background.values():
            worker.kill()
        manifest["state"] = "interrupted"
        write_manifest(run, manifest)
        raise
    manifest["state"] = COMPLETE
    write_manifest(run, manifest)
    return manifest


def _check_keep_float(model, names: list[str]) -> None:
    import difflib

    layers = [layer.name for layer in model.layers]
    for name in names:
        if name not in layers:
            close = difflib.get_close_matches(name, layers, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else f" (e.g. {', '.join(layers[1:4])})"
            raise SkinscanError(f"--keep-float: the model has no Keras layer '{name}'{hint}; "
                                f"name layers of the model (its {len(layers)} layers: model.summary()), or use auto")


def _convert_one(run: RunDir, name: str, job: tuple, manifest: dict, say: Reporter) -> None:
    """One export: convert in a worker (or collect the second process's result) and record it
    or its failure."""
    export = spec(name)
    path = run.exports / export.file
    started = isinstance(job[0], Worker)
    say.message(f"[bold]{name}[/] " + ("waiting for the second process…" if started else "converting…"))
    t0 = time.time()
    try:
        if started:
            info, notes = job[0].result()
            t0 = job[1]
        elif type(_converters()[name]).__module__ == "__main__":  # defined in a notebook: a worker cannot import it
            info, notes = _in_worker(name, *job)
        else:
            info, notes = Worker(_in_worker, name, *job, say=say.message).result()
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # record and go on with the other formats
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        manifest["failures"].append({"name": name, "error": f"{type(e).__name__}: {msg[:300]}"})
        say.message(f"[red]✗[/] {name:<16} failed: {msg[:200]}", "error")
        return
    seconds = time.time() - t0
    manifest["exports"].append({"name": name, "file": path.name, "format": export.format, "precision": export.precision,
                                "size_bytes": path.stat().st_size, "sha256": sha256_file(path),
                                "convert_seconds": round(seconds, 2), **info, "notes": notes})
    say.message(f"[green]✓[/] {name:<16} {path.stat().st_size / 1e6:7.1f} MB  {seconds:6.1f} s  {path.name}", "ok")


def _in_worker(name: str, run_root: str, cfg: dict, calib, tmp: str, onnx_target: str,
               beside_others: bool = False) -> tuple[dict, str]:
    """One converter in a worker process (it loads the model itself). One that runs beside the
    others gets a temp dir of its own."""
    load_plugins()
    run = RunDir(Path(run_root))
    with quiet_stderr():  # all of the converter's own output (shown if it fails); progress goes by tell()
        ctx = Context(run, run.load_model(), calib, Path(tmp) / (name if beside_others else "shared"),
                      ExportConfig(**cfg), tell, onnx_target)
        ctx.tmp.mkdir(parents=True, exist_ok=True)
        return _converters()[name].convert(ctx, run.exports / spec(name).file)


class _Converters(dict):
    """Each export's converter, built on first use (``formats.ExportSpec.make_converter``)."""

    def __missing__(self, name: str):
        self[name] = spec(name).make_converter()
        return self[name]


_converters_cache = _Converters()


def _converters() -> _Converters:
    return _converters_cache

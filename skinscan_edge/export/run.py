"""``export_run``: one trained run -> every file a deployment needs, plus the manifest."""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SkinscanError, did_you_mean
from ..rundir import RunDir, read_json, sha256_file
from ..runlock import holds_run_lock
from .manifest import write_manifest

#: Every export this command can make: name -> (format, precision, file name).
EXPORTS = {
    "tflite-fp32": ("tflite", "fp32", "model_fp32.tflite"),
    "tflite-fp16": ("tflite", "fp16", "model_fp16.tflite"),
    "tflite-dynamic": ("tflite", "dynamic", "model_dynamic_range.tflite"),
    "tflite-int8": ("tflite", "int8", "model_int8.tflite"),
    "tflite-qat-int8": ("tflite", "qat-int8", "model_qat_int8.tflite"),
    "onnx-fp32": ("onnx", "fp32", "model_fp32.onnx"),
    "onnx-int8": ("onnx", "int8", "model_int8.onnx"),
}
#: The precision names a user may ask for with --precision.
PRECISIONS = ["fp32", "fp16", "dynamic", "int8", "qat"]


@dataclass
class ExportConfig:
    """What to export.

    Attributes:
      precisions: subset of PRECISIONS; fp32 (TFLite and ONNX) is always exported.
      calib_samples: images drawn (seeded) from the train split to calibrate int8 files.
      qat_epochs: epochs of quantization-aware fine-tuning on the train split.
      qat_lr: learning rate of that fine-tuning.
      opset: ONNX opset (17 or later).
      seed: seeds the calibration sample and QAT.
      jobs: 2 runs the QAT export (the longest) in a second process beside the other
        conversions, which are mostly single-threaded; 1 converts one file at a time.
    """

    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    calib_samples: int = 256
    qat_epochs: int = 1
    qat_lr: float = 1e-5
    opset: int = 17
    seed: int = 0
    jobs: int = 2

    def validate(self) -> "ExportConfig":
        for p in self.precisions:
            if p not in PRECISIONS:
                raise SkinscanError("--precision: " + did_you_mean(p, PRECISIONS))
        if "fp32" not in self.precisions:
            self.precisions = ["fp32", *self.precisions]
        if self.calib_samples < 1:
            raise SkinscanError(f"--calib-samples must be at least 1, got {self.calib_samples}")
        if self.jobs not in (1, 2):
            raise SkinscanError(f"--jobs is 1 or 2, got {self.jobs}")
        if self.opset < 17:
            raise SkinscanError(f"--opset must be 17 or later, got {self.opset}")
        return self

    def names(self) -> list[str]:
        """Export names in conversion order (onnx-int8 after onnx-fp32, which it quantizes)."""
        wanted = {"fp32", *self.precisions}
        return [name for p in PRECISIONS if p in wanted for name in _BY_PRECISION[p]]


#: --precision name -> the exports it produces.
_BY_PRECISION = {"fp32": ["tflite-fp32", "onnx-fp32"], "fp16": ["tflite-fp16"], "dynamic": ["tflite-dynamic"],
                 "int8": ["tflite-int8", "onnx-int8"], "qat": ["tflite-qat-int8"]}


def calibration_set(run: RunDir, n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """A seeded sample of the train split, decoded once and shared by every int8 export."""
    from ..imageio import load_batch

    items = run.split_items("train")
    if not items:
        raise SkinscanError(f"--int8/--qat need train images to calibrate on, and the split in {run.root} has none")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(items), size=min(n, len(items)), replace=False).tolist())
    root = Path(run.split()["root"])
    paths = [items[i][0] for i in pick]
    return [p.relative_to(root).as_posix() for p in paths], pin_input_range(load_batch(paths, run.img_size()))


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


def _entry(run: RunDir, name: str, path: Path, seconds: float, info: dict, notes: str = "") -> dict:
    fmt, precision, _ = EXPORTS[name]
    return {"name": name, "file": path.name, "format": fmt, "precision": precision,
            "size_bytes": path.stat().st_size, "sha256": sha256_file(path),
            "convert_seconds": round(seconds, 2), **info, "notes": notes}


@holds_run_lock("export")
def export_run(run: RunDir, cfg: ExportConfig, console=None) -> dict:
    """Export ``run`` at the requested precisions into ``RUN/exports`` and write the manifest.

    A failing conversion is recorded and the others still run; the returned manifest's
    ``failures`` list is non-empty then.

    >>> # export_run(RunDir.open("runs/demo"), ExportConfig(precisions=["fp32", "int8"]))
    """
    from ..train import tool_versions
    from . import onnx as onnx_export
    from . import tflite

    cfg.validate()
    names = cfg.names()
    needs_calib = any(EXPORTS[n][1] in ("int8", "qat-int8") for n in names)
    calib_files, calib = calibration_set(run, cfg.calib_samples, cfg.seed) if needs_calib else ([], None)
    run.exports.mkdir(parents=True, exist_ok=True)
    old = read_json(run.manifest_path) if run.manifest_path.exists() else {"exports": []}
    kept = {e["name"]: e for e in old.get("exports", []) if e["name"] not in names}
    manifest = {"run": str(run.root), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "tool_versions": tool_versions(), "input_contract": read_json(run.config_path).get("input_contract"),
                "config": asdict(cfg), "model_sha256": sha256_file(run.model_path),
                "calibration": {"split": "train", "seed": cfg.seed, "count": len(calib_files), "files": calib_files},
                "onnx_int8_settings": onnx_export.INT8_SETTINGS, "exports": list(kept.values()), "failures": []}

    def say(msg):
        if console is not None:
            console.print(msg)

    model = run.load_model()
    with tempfile.TemporaryDirectory(prefix="skinscan-export-") as tmp, contextlib.ExitStack() as stack:
        serving, qat_job = None, None
        if "tflite-qat-int8" in names and cfg.jobs > 1:
            # Written by hand rather than a pool map: one long job beside a loop of short ones.
            pool = stack.enter_context(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
            qat_job = (pool.submit(_qat_in_worker, str(run.root), asdict(cfg), calib, tmp), time.time())
            say("[bold]tflite-qat-int8[/] started in a second process")
        for name in names:
            fmt, precision, filename = EXPORTS[name]
            path = run.exports / filename
            t0 = time.time()
            say(f"[bold]{name}[/] " + ("waiting for the second process…" if qat_job and precision == "qat-int8" else "converting…"))
            try:
                notes = ""
                if qat_job and precision == "qat-int8":
                    future, t0 = qat_job
                    data, notes = future.result()
                    _write(path, data)
                    info = tflite.describe(path)
                elif fmt == "tflite" and precision != "qat-int8":
                    if serving is None:
                        serving = tflite.save_serving_model(model, Path(tmp) / "serving")
                    data = tflite.convert(serving, precision, (lambda: iter(calib)) if precision == "int8" else None)
                    _write(path, data)
                    info = tflite.describe(path)
                elif precision == "qat-int8":
                    data, notes = _export_qat(run, model, cfg, calib, Path(tmp), say)
                    _write(path, data)
                    info = tflite.describe(path)
                elif precision == "fp32":
                    onnx_export.export_fp32(model, path, cfg.opset)
                    info = onnx_export.describe(path)
                else:
                    fp32 = run.exports / EXPORTS["onnx-fp32"][2]
                    if not fp32.exists():
                        raise SkinscanError("onnx-int8 needs onnx-fp32, which failed")
                    onnx_export.quantize_int8(fp32, path, list(calib))
                    info = onnx_export.describe(path)
                    notes = ("QDQ, U8S8 (uint8 activations, int8 weights), per-channel, reduce_range (7-bit weights, "
                             "no saturation on non-VNNI x86), MinMax calibration")
                seconds = time.time() - t0
                manifest["exports"].append(_entry(run, name, path, seconds, info, notes))
                say(f"[green]✓[/] {name:<16} {path.stat().st_size / 1e6:7.1f} MB  {seconds:6.1f} s  {path.name}")
            except Exception as e:  # record and go on with the other formats
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                manifest["failures"].append({"name": name, "error": f"{type(e).__name__}: {msg[:300]}"})
                say(f"[red]✗[/] {name:<16} failed: {msg[:200]}")
            write_manifest(run, manifest)
    return manifest


def _write(path: Path, data: bytes) -> None:
    from ..rundir import atomic_write_bytes

    atomic_write_bytes(path, data)


def _qat_in_worker(run_root: str, cfg: dict, calib, tmp: str) -> tuple[bytes, str]:
    """The QAT export in a spawned process (it loads the model itself)."""
    run = RunDir(Path(run_root))

    def say(msg):
        print(msg.replace("[bold]", "").replace("[/]", ""), file=sys.stderr, flush=True)

    return _export_qat(run, run.load_model(), ExportConfig(**cfg), calib, Path(tmp), say)


def _export_qat(run: RunDir, model, cfg: ExportConfig, calib, tmp: Path, say) -> tuple[bytes, str]:
    from ..data import make_dataset
    from . import qat, tflite

    qat_model, skipped = qat.annotate(model)
    if skipped:
        say(f"  QAT: {len(skipped)} layer(s) not annotated, kept float: {', '.join(skipped)}")
    items = run.split_items("train")
    ds = make_dataset([str(p) for p, _ in items], [y for _, y in items], run.img_size(),
                      batch_size=16, training=True, seed=cfg.seed)
    qat.calibrate_ranges(qat_model, calib[:32])
    qat.fine_tune(qat_model, ds, cfg.qat_epochs, cfg.qat_lr)
    serving = tflite.save_serving_model(qat_model, tmp / "serving_qat")
    data = tflite.convert(serving, "int8", lambda: iter(calib))
    notes = f"tfmot quantize_model, {cfg.qat_epochs} epoch(s) fine-tuning; not annotated: {', '.join(skipped) or 'none'}"
    return data, notes

"""The table of exports: one converter per file a run can be exported to.

Everything else is derived from :data:`EXPORTS`: the ``--precision`` names (``PRECISIONS``),
the conversion order, which exports need the calibration images, and the manifest's notes.
A new format is one converter class here (or in a plugin) plus one ``register_export`` call,
and one runtime in ``runtimes.py``; see the README's "Adding a format".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..errors import SkinscanError, did_you_mean


class Context:
    """What converters share within one export: the model, the calibration images, a temp dir.

    The TFLite serving SavedModel is made once, on first use, and shared by every TFLite preset.
    """

    def __init__(self, run, model, calib, tmp: Path, cfg, say, onnx_target: str = "x86-avx2"):
        self.run, self.model, self.calib, self.tmp, self.cfg, self.say = run, model, calib, Path(tmp), cfg, say
        self.onnx_target = onnx_target
        self.cache: dict = {}  # what several converters share (exporters/mixed.py: validation scores)
        self._serving: dict[bool, Path] = {}

    def serving(self, rewrite_pools: bool = False) -> Path:
        """The serving SavedModel of the model, or of its export graph (``graph.export_model``)."""
        from . import tflite

        path = self.tmp / f"serving{int(rewrite_pools)}"
        if rewrite_pools not in self._serving:  # or saved by an earlier worker process (saved_model.pb comes last)
            self._serving[rewrite_pools] = (path if (path / "saved_model.pb").is_file()
                                            else tflite.save_serving_model(self.model, path, rewrite_pools))
        return self._serving[rewrite_pools]

    def written(self, name: str) -> Path:
        """The file of an export made earlier in this run (onnx-int8 quantizes onnx-fp32)."""
        path = self.run.exports / EXPORTS[name].file
        if not path.exists():
            raise SkinscanError(f"needs {name}, which failed or was not exported")
        return path


class Converter:
    """Writes one file. ``convert`` returns (manifest info: inputs/outputs..., notes)."""

    format: ClassVar[str] = ""
    calibrated: ClassVar[bool] = False
    #: Runs in a second process beside the others (``ExportConfig.jobs == 2``).
    background: ClassVar[bool] = False
    #: Also writes a float twin, recorded as ``float_twin`` in its manifest entry (exporters/qat.py).
    float_twin: ClassVar[bool] = False

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        raise NotImplementedError


class TFLitePreset(Converter):
    """A TFLite converter preset (``tflite.convert``): fp32, fp16, dynamic range or full int8."""

    format = "tflite"

    def __init__(self, precision: str):
        self.precision = precision
        self.calibrated = precision == "int8"

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        from ..rundir import atomic_write_bytes
        from . import tflite

        calib = (lambda: iter(ctx.calib)) if self.calibrated else None
        serving = ctx.serving(self.precision in tflite.EXPORT_GRAPH_PRECISIONS)  # int8: pools rewritten
        atomic_write_bytes(path, tflite.convert(serving, self.precision, calib))
        return tflite.describe(path), ""


class QatTFLite(Converter):
    """tfmot quantization-aware fine-tuning, then full-integer TFLite (``exporters/qat.py``)."""

    format = "tflite"
    calibrated = True
    background = True
    float_twin = True

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        from ..rundir import atomic_write_bytes
        from . import tflite
        from .qat import TWIN_FILE, export_qat

        data, notes, twin = export_qat(ctx.run, ctx.model, ctx.cfg, ctx.calib, ctx.tmp, ctx.say,
                                       twin_path=path.with_name(TWIN_FILE))
        atomic_write_bytes(path, data)
        # The fine-tuned float weights without fake-quant: evaluate scores the file against them too.
        return {**tflite.describe(path), "float_twin": twin}, notes


class OnnxFp32(Converter):
    """tf2onnx at ``ExportConfig.opset``, dynamic batch, ``onnx.checker`` clean."""

    format = "onnx"

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        from . import onnx as onnx_export

        onnx_export.export_fp32(ctx.model, path, ctx.cfg.opset)
        return onnx_export.describe(path), ""


class OnnxInt8(Converter):
    """onnxruntime static quantization of onnx-fp32 for a target CPU (``onnx.INT8_TARGETS``)."""

    format = "onnx"
    calibrated = True

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        from . import onnx as onnx_export

        onnx_export.quantize_int8(ctx.written("onnx-fp32"), path, list(ctx.calib), ctx.onnx_target)
        return onnx_export.describe(path), onnx_export.int8_notes(ctx.onnx_target)


@dataclass(frozen=True)
class ExportSpec:
    """One row of the table: the export's name, what ``--precision`` asks for it, the manifest's
    precision, the file it writes and its converter."""

    name: str
    flag: str
    precision: str
    file: str
    converter: Converter

    @property
    def format(self) -> str:
        return self.converter.format


#: Every export, in conversion order (onnx-int8 after onnx-fp32, which it quantizes).
EXPORTS: dict[str, ExportSpec] = {}


def register_export(spec: ExportSpec) -> ExportSpec:
    """Add one export to the table (a plugin's format, or the built-ins below)."""
    EXPORTS[spec.name] = spec
    return spec


for _spec in (
    ExportSpec("tflite-fp32", "fp32", "fp32", "model_fp32.tflite", TFLitePreset("fp32")),
    ExportSpec("onnx-fp32", "fp32", "fp32", "model_fp32.onnx", OnnxFp32()),
    ExportSpec("tflite-fp16", "fp16", "fp16", "model_fp16.tflite", TFLitePreset("fp16")),
    ExportSpec("tflite-dynamic", "dynamic", "dynamic", "model_dynamic_range.tflite", TFLitePreset("dynamic")),
    ExportSpec("tflite-int8", "int8", "int8", "model_int8.tflite", TFLitePreset("int8")),
    ExportSpec("onnx-int8", "int8", "int8", "model_int8.onnx", OnnxInt8()),
    ExportSpec("tflite-qat-int8", "qat", "qat-int8", "model_qat_int8.tflite", QatTFLite()),
):
    register_export(_spec)

from .mixed import MixedOnnx, MixedTFLite  # noqa: E402  (they subclass Converter, above)

register_export(ExportSpec("tflite-int8-mixed", "mixed", "int8-mixed", "model_int8_mixed.tflite", MixedTFLite()))
register_export(ExportSpec("onnx-int8-mixed", "mixed", "int8-mixed", "model_int8_mixed.onnx", MixedOnnx()))


def precisions() -> list[str]:
    """The ``--precision`` names, in table order (plugins included)."""
    from ..plugins import load_plugins

    load_plugins()
    return list(dict.fromkeys(spec.flag for spec in EXPORTS.values()))


#: The built-in ``--precision`` names (``precisions()`` adds those of plugins).
PRECISIONS = list(dict.fromkeys(spec.flag for spec in EXPORTS.values()))
#: What "every precision" means for the pipeline: all but ``mixed``, which needs --keep-float.
EVERY_PRECISION = [p for p in PRECISIONS if p != "mixed"]


def specs_for(flags: list[str]) -> list[ExportSpec]:
    """The exports that ``--precision`` names ask for, in conversion order; fp32 always included."""
    valid = precisions()
    for flag in flags:
        if flag not in valid:
            raise SkinscanError("--precision: " + did_you_mean(flag, valid, "precision"))
    wanted = {"fp32", *flags}
    return [spec for spec in EXPORTS.values() if spec.flag in wanted]

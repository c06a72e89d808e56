"""The converters: one class per kind of file a run can be exported to.

Which export uses which converter, and everything else about a format, is declared once in
``skinscan_edge.core.formats`` (``ExportSpec``). A new format is one converter class here (or in a
plugin) plus one ``formats.register_export`` call, and one runtime in ``runtimes.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import atomic_write_bytes
from skinscan_edge.core.formats import spec
from skinscan_edge.exporters import onnx as onnx_export, tflite
from skinscan_edge.exporters.qat import export_qat, TWIN_FILE


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
        path = self.tmp / f"serving{int(rewrite_pools)}"
        if rewrite_pools not in self._serving:  # or saved by an earlier worker process (saved_model.pb comes last)
            self._serving[rewrite_pools] = (path if (path / "saved_model.pb").is_file()
                                            else tflite.save_serving_model(self.model, path, rewrite_pools))
        return self._serving[rewrite_pools]

    def written(self, name: str) -> Path:
        """The file of an export made earlier in this run (onnx-int8 quantizes onnx-fp32)."""
        path = self.run.exports / spec(name).file
        if not path.exists():
            raise SkinscanError(f"needs {name}, which failed or was not exported")
        return path


class Converter:
    """Writes one file. ``convert`` returns (manifest info: inputs/outputs..., notes)."""

    calibrated: ClassVar[bool] = False
    #: Runs in a second process beside the others (``ExportConfig.jobs == 2``).
    background: ClassVar[bool] = False
    #: Also writes a float twin, recorded as ``float_twin`` in its manifest entry (exporters/qat.py).
    float_twin: ClassVar[bool] = False

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        raise NotImplementedError


class TFLitePreset(Converter):
    """A TFLite converter preset (``tflite.convert``): fp32, fp16, dynamic range or full int8."""


    def __init__(self, precision: str):
        self.precision = precision
        self.calibrated = precision == "int8"

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        calib = (lambda: iter(ctx.calib)) if self.calibrated else None
        serving = ctx.serving(self.precision in tflite.EXPORT_GRAPH_PRECISIONS)  # int8: pools rewritten
        atomic_write_bytes(path, tflite.convert(serving, self.precision, calib))
        return tflite.describe(path), ""


class QatTFLite(Converter):
    """tfmot quantization-aware fine-tuning, then full-integer TFLite (``exporters/qat.py``)."""

    calibrated = True
    background = True
    float_twin = True

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        data, notes, twin = export_qat(ctx.run, ctx.model, ctx.cfg, ctx.calib, ctx.tmp, ctx.say,
                                       twin_path=path.with_name(TWIN_FILE))
        atomic_write_bytes(path, data)
        # The fine-tuned float weights without fake-quant: evaluate scores the file against them too.
        return {**tflite.describe(path), "float_twin": twin}, notes


class OnnxFp32(Converter):
    """tf2onnx at ``ExportConfig.opset``, dynamic batch, ``onnx.checker`` clean."""


    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        onnx_export.export_fp32(ctx.model, path, ctx.cfg.opset)
        return onnx_export.describe(path), ""


class OnnxInt8(Converter):
    """onnxruntime static quantization of onnx-fp32 for a target CPU (``core.formats.INT8_TARGETS``)."""

    calibrated = True

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        onnx_export.quantize_int8(ctx.written("onnx-fp32"), path, list(ctx.calib), ctx.onnx_target)
        return onnx_export.describe(path), onnx_export.int8_notes(ctx.onnx_target)

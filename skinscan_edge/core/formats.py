"""Every export format, declared once.

A format is one :class:`ExportSpec`: its name, the ``--precision`` flag that asks for it, the
file it writes, its converter, and everything the later stages need to know about it: its
quantization preset (:class:`Quantization`: how quantized it is, which GEMM floor bounds it,
its latency-target group, what its file takes and gives), whether its I/O is full-integer, and
whether ``explain`` can measure it. Every table elsewhere (the benchmark's quantization order and
floor, the report's targets, explain's formats, the model card's input text, the Android
bundle's choice) is derived from these specs, and an unknown name raises at once with the valid
ones: nothing skips a name it does not know.

Adding a format is one converter class plus one :func:`register_export` call (a plugin does it
on import: ``skinscan_edge.core.plugins``), and one runtime class (``runtimes.register_runtime``).

>>> spec("tflite-int8").quant.floor, spec("tflite-int8").full_integer
('int8', True)
>>> quantization("fp16").level
1
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.plugins import load_plugins


@dataclass(frozen=True)
class Quantization:
    """A named quantization preset (as Model Maker's ``QuantizationConfig.for_int8()``).

    Attributes:
      precision: the manifest's ``precision`` of the files made with it.
      level: how quantized: higher is more (the benchmark flags a more quantized file that is slower).
      floor: which measured GEMM peak bounds its latency: ``fp32`` or ``int8`` (``hostinfo.floor_ms``).
      target: its latency-target group in benchmark.md (``fp32``, ``int8``), or None for none.
      dtype: what its files take and give, in words (model card, Android guide).
    """

    precision: str
    level: float
    floor: str
    target: str | None
    dtype: str

    @classmethod
    def for_fp32(cls) -> "Quantization":
        return cls("fp32", 0, "fp32", "fp32", "float32 in and out")

    @classmethod
    def for_fp16(cls) -> "Quantization":
        return cls("fp16", 1, "fp32", None, "float32 in and out (float16 weights)")

    @classmethod
    def for_dynamic(cls) -> "Quantization":
        return cls("dynamic", 2, "int8", None, "float32 in and out (int8 weights, dynamic-range activations)")

    @classmethod
    def for_int8_mixed(cls) -> "Quantization":
        return cls("int8-mixed", 2.5, "int8", None, "float32 in and out (int8 body, named layers float)")

    @classmethod
    def for_int8(cls) -> "Quantization":
        return cls("int8", 3, "int8", "int8", "int8 body")

    @classmethod
    def for_qat_int8(cls) -> "Quantization":
        return cls("qat-int8", 3, "int8", "int8", "int8 body (quantization-aware training)")


@dataclass(frozen=True)
class Lazy:
    """A converter named by module and class, built on first use, so that this table imports
    nothing heavy (the converters import TensorFlow, onnxruntime and tfmot inside)."""

    module: str
    cls: str
    args: tuple = ()

    def build(self):
        return getattr(importlib.import_module(self.module), self.cls)(*self.args)


@dataclass(frozen=True)
class ExportSpec:
    """One export format.

    Attributes:
      name: the export's name (manifest, reports, ``--model``).
      flag: the ``--precision`` name that asks for it (several exports may share one).
      quant: its quantization preset.
      file: the file it writes in ``RUN/exports``.
      format: the runtime family that reads the file (``runtimes.register_runtime``).
      converter: a ``exporters.converters.Converter`` instance, or a :class:`Lazy` reference to one.
      full_integer: uint8 input and output (what NPU and Edge TPU delegates need).
      explain: ``skinscan-edge explain`` can measure its per-layer error.
    """

    name: str
    flag: str
    quant: Quantization
    file: str
    format: str
    converter: Any = field(compare=False)
    full_integer: bool = False
    explain: bool = False

    @property
    def precision(self) -> str:
        return self.quant.precision

    def make_converter(self):
        return self.converter.build() if isinstance(self.converter, Lazy) else self.converter


_C = "skinscan_edge.exporters.converters"
_M = "skinscan_edge.exporters.mixed"
#: Every export, in conversion order (onnx-int8 after onnx-fp32, which it quantizes).
EXPORTS: dict[str, ExportSpec] = {}


def register_export(spec: ExportSpec) -> ExportSpec:
    """Add one export to the table (a plugin's format, or the built-ins below)."""
    EXPORTS[spec.name] = spec
    return spec


for _spec in (
    ExportSpec("tflite-fp32", "fp32", Quantization.for_fp32(), "model_fp32.tflite", "tflite", Lazy(_C, "TFLitePreset", ("fp32",))),
    ExportSpec("onnx-fp32", "fp32", Quantization.for_fp32(), "model_fp32.onnx", "onnx", Lazy(_C, "OnnxFp32")),
    ExportSpec("tflite-fp16", "fp16", Quantization.for_fp16(), "model_fp16.tflite", "tflite", Lazy(_C, "TFLitePreset", ("fp16",))),
    ExportSpec("tflite-dynamic", "dynamic", Quantization.for_dynamic(), "model_dynamic_range.tflite", "tflite",
               Lazy(_C, "TFLitePreset", ("dynamic",))),
    ExportSpec("tflite-int8", "int8", Quantization.for_int8(), "model_int8.tflite", "tflite",
               Lazy(_C, "TFLitePreset", ("int8",)), full_integer=True, explain=True),
    ExportSpec("onnx-int8", "int8", Quantization.for_int8(), "model_int8.onnx", "onnx", Lazy(_C, "OnnxInt8"), explain=True),
    ExportSpec("tflite-qat-int8", "qat", Quantization.for_qat_int8(), "model_qat_int8.tflite", "tflite",
               Lazy(_C, "QatTFLite"), full_integer=True),
    ExportSpec("tflite-int8-mixed", "mixed", Quantization.for_int8_mixed(), "model_int8_mixed.tflite", "tflite",
               Lazy(_M, "MixedTFLite"), explain=True),
    ExportSpec("onnx-int8-mixed", "mixed", Quantization.for_int8_mixed(), "model_int8_mixed.onnx", "onnx",
               Lazy(_M, "MixedOnnx"), explain=True),
):
    register_export(_spec)

#: The Keras baseline's preset (it is no export, but every report row names a precision).
KERAS_QUANT = Quantization.for_fp32()


def _loaded() -> dict[str, ExportSpec]:
    load_plugins()
    return EXPORTS


def spec(name: str) -> ExportSpec:
    """The export named ``name``; an unknown name raises with the valid ones."""
    table = _loaded()
    if name not in table:
        raise SkinscanError(did_you_mean(name, list(table), "export"))
    return table[name]


def quantizations() -> dict[str, Quantization]:
    """Every precision a row can carry, by name (the Keras baseline's fp32 included)."""
    out = {KERAS_QUANT.precision: KERAS_QUANT}
    for s in _loaded().values():
        out.setdefault(s.precision, s.quant)
    return out


def quantization(precision: str) -> Quantization:
    """The preset of a row's ``precision``; an unknown one raises with the valid ones."""
    table = quantizations()
    if precision not in table:
        raise SkinscanError(did_you_mean(precision, list(table), "precision"))
    return table[precision]


def precisions() -> list[str]:
    """The ``--precision`` names, in table order (plugins included)."""
    return list(dict.fromkeys(s.flag for s in _loaded().values()))


#: What "every precision" means for the pipeline: all built-in flags but ``mixed``, which needs --keep-float.
EVERY_PRECISION = [p for p in dict.fromkeys(s.flag for s in EXPORTS.values()) if p != "mixed"]


def specs_for(flags: list[str]) -> list[ExportSpec]:
    """The exports that ``--precision`` names ask for, in conversion order; fp32 always included."""
    valid = precisions()
    for flag in flags:
        if flag not in valid:
            raise SkinscanError("--precision: " + did_you_mean(flag, valid, "precision"))
    wanted = {"fp32", *flags}
    return [s for s in _loaded().values() if s.flag in wanted]


def target_precisions(group: str) -> tuple[str, ...]:
    """The precisions held to the latency target ``group`` (``fp32`` or ``int8``)."""
    return tuple(q.precision for q in quantizations().values() if q.target == group)


def explainable() -> list[str]:
    """The exports ``explain`` can measure."""
    return [s.name for s in _loaded().values() if s.explain]


#: Settings every target shares: QDQ (portable; ORT fuses it into the same QLinearConv kernels
#: as QOperator), per-channel weights, MinMax calibration.
INT8_COMMON = {"quant_format": "QDQ", "per_channel": True, "calibrate_method": "MinMax"}


#: --onnx-target -> (activation type, weight type, reduce_range, why).
INT8_TARGETS = {
    "x86-avx2": ("QUInt8", "QInt8", True, "x86 without VNNI: U8S8 saturates in vpmaddubsw, 7-bit weights cannot"),
    "x86-vnni": ("QUInt8", "QInt8", False, "x86 with VNNI/AMX: U8S8 is the native int8 dot product, no saturation"),
    "arm": ("QInt8", "QInt8", False, "ARM64: S8S8, the onnxruntime default (signed dot product), no saturation"),
}


#: CPU flags (as /proc/cpuinfo spells them) that give x86 a non-saturating u8 x s8 dot product.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def choose_target(machine: str, flags) -> str:
    """The INT8_TARGETS name for a CPU: ``machine`` as platform.machine(), ``flags`` as in cpuinfo."""
    if machine.lower() in ("aarch64", "arm64") or machine.lower().startswith("arm"):
        return "arm"
    return "x86-vnni" if any(f in set(flags) for f in VNNI_FLAGS) else "x86-avx2"


def int8_settings(target: str) -> dict:
    """The quantize_static settings of one target, as names (what the manifest records)."""
    act, weight, reduce_range, why = INT8_TARGETS[target]
    return {"target": target, **INT8_COMMON, "activation_type": act, "weight_type": weight,
            "reduce_range": reduce_range, "why": why}


def check_onnx_target(name: str) -> str:
    """A --onnx-target name (``auto`` or an INT8_TARGETS key), or an error naming the valid ones."""
    if name != "auto" and name not in INT8_TARGETS:
        raise SkinscanError("--onnx-target: " + did_you_mean(name, ["auto", *INT8_TARGETS]))
    return name

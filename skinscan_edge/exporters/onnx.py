"""ONNX export through tf2onnx (fp32) and static int8 quantization through onnxruntime.

The int8 recipe is a choice of the CPU the file will run on (``--onnx-target``), not of the
build host; ``INT8_TARGETS`` below is the one table the quantize_static arguments, the
manifest's ``onnx_int8_settings`` and the export's notes all come from. onnxruntime's
quantization guide: S8S8 with QDQ is the default and first choice; on x86-64 with AVX2 or
AVX-512 but no VNNI, U8S8 runs through ``vpmaddubsw``, whose int16 pair sums can saturate,
and ``reduce_range`` (7-bit weights) or U8U8 avoid it; "there is no such issue on other CPU
architectures (x64 with VNNI and ARM)". Measured here (benchmarks/NOTES.md): plain U8S8 on an
AVX2 host agreed with fp32 on top-1 for 58% of the test images, with reduce_range 89%; S8S8
QDQ left 41 of 94 convs in float on x86 (onnxruntime 1.32) and QOperator S8S8 was 7.8x
slower, so x86 targets keep U8S8.

The pools are not rewritten for ONNX (unlike TFLite, exporters/graph.py): onnxruntime runs them
as QLinearAveragePool inside the int8 graph, so they split nothing.
"""

from __future__ import annotations

import os

from pathlib import Path
from typing import Iterable

import numpy as np

from skinscan_edge.core.contract import INPUT_NAME, OUTPUT_NAME
from skinscan_edge.core.formats import int8_settings
from skinscan_edge.core.tf import quiet_stderr, tf

ONNX_OPSET = 17








def int8_notes(target: str) -> str:
    """The manifest entry's one-line notes for the onnx-int8 file."""
    s = int8_settings(target)
    kind = {"QUInt8": "U8", "QInt8": "S8"}
    return (f"{s['quant_format']}, {kind[s['activation_type']]}{kind[s['weight_type']]} for {target}, "
            f"{'per-channel' if s['per_channel'] else 'per-tensor'}, "
            f"{'reduce_range (7-bit weights)' if s['reduce_range'] else '8-bit weights'}, "
            f"{s['calibrate_method']} calibration: {s['why']}")


def export_fp32(model, path: Path, opset: int = ONNX_OPSET) -> Path:
    """Convert the Keras model to ONNX with a dynamic batch and named input/output, then check it."""
    import onnx
    import tf2onnx

    tf_ = tf()
    spec = [tf_.TensorSpec([None, *model.input_shape[1:]], tf_.float32, name=INPUT_NAME)]

    @tf_.function(input_signature=spec)
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    with quiet_stderr():  # TF 2.20's grappler logs "Starting new session" lines here (--verbose shows them)
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(proto)
    tmp = Path(path).with_suffix(".tmp.onnx")
    try:
        onnx.save(proto, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # after a failed save (a full disk): no 30 MB file left behind
    return Path(path)


class _Calibration:
    """onnxruntime CalibrationDataReader over the shared calibration images (one per call)."""

    def __init__(self, images: Iterable[np.ndarray]):
        self._it = iter(images)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {INPUT_NAME: x[None].astype(np.float32)}

    def rewind(self):  # pragma: no cover - only used by some calibrators
        raise NotImplementedError


def quantize_int8(fp32_path: Path, out_path: Path, images: list[np.ndarray], target: str = "x86-avx2",
                  nodes_to_exclude: list[str] | None = None) -> Path:
    """quant_pre_process (shape inference + optimisation), then quantize_static with
    ``target``'s settings from INT8_TARGETS; ``nodes_to_exclude`` (names in the pre-processed
    graph) stay float (exporters/mixed.py)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    prep = out_path.with_suffix(".prep.onnx")
    tmp = out_path.with_suffix(".tmp.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=False)

        s = int8_settings(target)
        # Per channel, it logs "Axis 1 is out-of-range for weight ..." to the root logger for each
        # rank-1 BatchNorm constant (it quantizes those per tensor): dozens of lines, shown with --verbose.
        with quiet_stderr():
            quantize_static(
                str(prep), str(tmp), _Calibration(images),
                quant_format=QuantFormat[s["quant_format"]], activation_type=QuantType[s["activation_type"]],
                weight_type=QuantType[s["weight_type"]], per_channel=s["per_channel"],
                reduce_range=s["reduce_range"], calibrate_method=CalibrationMethod[s["calibrate_method"]],
                nodes_to_exclude=list(nodes_to_exclude or []),
            )
        tmp.replace(out_path)
    finally:
        prep.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out_path


def describe(path: Path) -> dict:
    """Input/output names, shapes (symbolic dims as names) and dtypes of an ONNX file."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)

    def one(v):
        t = v.type.tensor_type
        dims = [d.dim_param or int(d.dim_value) for d in t.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "quantization": None}

    return {"inputs": [one(v) for v in proto.graph.input], "outputs": [one(v) for v in proto.graph.output],
            "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))}

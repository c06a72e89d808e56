"""ONNX export through tf2onnx (fp32) and static int8 quantization through onnxruntime.

int8 choice (recorded in the manifest): QDQ format, uint8 activations and int8 per-channel
weights (U8S8) with ``reduce_range`` (7-bit weights). On x86 without VNNI (AVX2, AVX-512F)
onnxruntime multiplies u8 x s8 pairs with ``vpmaddubsw``, whose int16 sums saturate: measured
on this repository's test model, plain U8S8 agreed with fp32 on top-1 for only 58% of the
test images, U8S8 with reduce_range for 89%, the same as U8U8. 7-bit weights cannot
saturate, cost little precision on VNNI/AMX hosts, and keep the fast U8S8 kernels (S8S8 has
no fast kernel on this build and saturated as badly). QOperator was 7.8x slower than QDQ here
(benchmarks/NOTES.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from .. import INPUT_NAME, OUTPUT_NAME

ONNX_OPSET = 17
INT8_SETTINGS = {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                 "per_channel": True, "reduce_range": True, "calibrate_method": "MinMax"}


def export_fp32(model, path: Path, opset: int = ONNX_OPSET) -> Path:
    """Convert the Keras model to ONNX with a dynamic batch and named input/output, then check it."""
    import onnx
    import tf2onnx

    from .._tf import tf

    tf_ = tf()
    spec = [tf_.TensorSpec([None, *model.input_shape[1:]], tf_.float32, name=INPUT_NAME)]

    @tf_.function(input_signature=spec)
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    from .._tf import quiet_stderr

    with quiet_stderr():  # TF 2.20's grappler logs "Starting new session" lines here (--verbose shows them)
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(proto)
    tmp = Path(path).with_suffix(".tmp.onnx")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
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


def quantize_int8(fp32_path: Path, out_path: Path, images: list[np.ndarray]) -> Path:
    """quant_pre_process (shape inference + optimisation), then quantize_static (see INT8_SETTINGS)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    prep = out_path.with_suffix(".prep.onnx")
    tmp = out_path.with_suffix(".tmp.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prep), skip_symbolic_shape=False)
        from .._tf import quiet_stderr

        # Per channel, it logs "Axis 1 is out-of-range for weight ..." to the root logger for each
        # rank-1 BatchNorm constant (it quantizes those per tensor): dozens of lines, shown with --verbose.
        with quiet_stderr():
            quantize_static(
                str(prep), str(tmp), _Calibration(images),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=True, reduce_range=True, calibrate_method=CalibrationMethod.MinMax,
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

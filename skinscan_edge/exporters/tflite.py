"""TFLite conversion presets: fp32, fp16, dynamic-range and full-integer int8.

Each file is named by what it is. ``int8`` means every op int8 with uint8 input and output
(raw 0..255 pixels go straight in); ``dynamic`` is the weights-only int8 file, never
called "int8".

We convert from a light SavedModel holding only the model's variables and one serving
function. ``TFLiteConverter.from_keras_model`` first saves the whole Keras object graph,
tracing every one of InceptionV3's 300+ layers (about 100 s here); the light route costs
about 5 s once and is shared by every precision.

For the full-integer file that SavedModel holds the export graph (``exporters/graph.py``):
InceptionV3's stride-1 "same" average pools as depthwise conv + multiply, exactly equal in
float and taken by XNNPACK in int8, so the int8 file runs in one XNNPACK partition.
``describe`` records XNNPACK's share of each file (``xnnpack.py``) in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from skinscan_edge.core.contract import INPUT_NAME, OUTPUT_NAME
from skinscan_edge.core.tf import quiet_stderr, tf
from skinscan_edge.exporters.graph import export_model
from skinscan_edge.runtimes.xnnpack import describe_delegation

#: Precisions converted from the export graph (pools rewritten). Only full integer: XNNPACK
#: takes the float AVERAGE_POOL_2D as it is, and the dynamic-range converter turns the
#: rewrite's depthwise conv into a hybrid op XNNPACK refuses (measured: 1 -> 10 partitions).
EXPORT_GRAPH_PRECISIONS = ("int8",)


def save_serving_model(model, export_dir: Path, rewrite_pools: bool = False) -> Path:
    """A SavedModel with one ``serving_default`` signature: ``image`` (N,H,W,3) -> ``probs``.

    With ``rewrite_pools`` it serves :func:`graph.export_model` of ``model``.
    """
    tf_ = tf()
    if rewrite_pools:
        model = export_model(model)
    shape = [None, *model.input_shape[1:]]
    module = tf_.Module()
    module.model_variables = list(model.variables)

    @tf_.function(input_signature=[tf_.TensorSpec(shape, tf_.float32, name=INPUT_NAME)])
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    module.serve = serve
    tf_.saved_model.save(module, str(export_dir), signatures={"serving_default": serve})
    return Path(export_dir)


def convert(saved_model_dir: Path, precision: str,
            representative: Callable[[], Iterable[np.ndarray]] | None = None) -> bytes:
    """Convert the serving SavedModel at one precision preset; returns the .tflite bytes."""
    tf_ = tf()
    conv = tf_.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if precision == "fp16":
        conv.optimizations = [tf_.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf_.float16]
    elif precision == "dynamic":
        conv.optimizations = [tf_.lite.Optimize.DEFAULT]
    elif precision == "int8":
        if representative is None:
            raise ValueError("int8 needs a representative dataset")
        conv.optimizations = [tf_.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ({INPUT_NAME: x[None].astype(np.float32)} for x in representative())
        conv.target_spec.supported_ops = [tf_.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf_.uint8
        conv.inference_output_type = tf_.uint8
    elif precision != "fp32":
        raise ValueError(f"unknown TFLite precision {precision}")
    with quiet_stderr():  # the MLIR converter's absl lines and tf.lite deprecation warning (--verbose shows them)
        return conv.convert()


def describe(path: Path) -> dict:
    """Input/output names, shapes, dtypes and quantization, read back through LiteRT, and
    XNNPACK's share of the graph (``xnnpack_partitions``, ``builtin_ops``...)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))

    def one(d):
        scale, zero = d["quantization"]
        return {"name": d["name"], "shape": [int(v) for v in d["shape_signature"]],
                "dtype": np.dtype(d["dtype"]).name,
                "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None}

    sig = interp.get_signature_runner()
    return {"inputs": [dict(one(d), name=k) for k, d in sig.get_input_details().items()],
            "outputs": [dict(one(d), name=k) for k, d in sig.get_output_details().items()],
            **describe_delegation(path)}

"""One runtime interface for every format: the heart of evaluate, benchmark and predict.

Each runtime loads one file and maps a batch of NHWC RGB images in 0..255 (uint8 or float)
to class probabilities, float32 of shape (N, classes). A new format is one new class.

>>> # rt = open_runtime(run, entry); probs = rt.predict(load_batch(paths, 96))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import SkinscanError


class Runtime(Protocol):
    name: str
    """Short identifier, e.g. ``keras``, ``tflite-int8``, ``onnx-fp32``."""
    accelerator: str
    """What actually ran the kernels, as far as the runtime can tell (e.g. ``XNNPACK``)."""

    def predict(self, images: np.ndarray) -> np.ndarray: ...


class KerasRuntime:
    """The Keras baseline, run as a compiled ``tf.function`` (not eager)."""

    def __init__(self, model, name: str = "keras", device: str | None = None):
        from ._tf import tf

        self.name = name
        self.model = model
        self._tf = tf()
        self.device = device or "/CPU:0"
        self.accelerator = f"TensorFlow {self.device}"
        spec = self._tf.TensorSpec([None, *model.input_shape[1:]], self._tf.float32)
        self._fn = self._tf.function(lambda x: model(x, training=False), input_signature=[spec])

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self._tf.device(self.device):
            out = self._fn(self._tf.constant(np.asarray(images, dtype=np.float32)))
        return out.numpy().astype(np.float32)


class TFLiteRuntime:
    """A .tflite file in the LiteRT interpreter (``ai_edge_litert``), XNNPACK on CPU.

    Quantized inputs and outputs are handled here with the file's own scale and zero point,
    so callers always pass 0..255 pixels and get probabilities back.
    """

    def __init__(self, path: Path, num_threads: int | None = None, name: str | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(path)
        self.name = name or self.path.stem
        try:
            # Always pass a thread count: LiteRT's default is one thread, not the usable cores.
            threads = num_threads or len(os.sched_getaffinity(0))
            self.interp = Interpreter(model_path=str(self.path), num_threads=threads)
        except (ValueError, RuntimeError) as e:
            raise SkinscanError(f"LiteRT cannot load {self.path}: {str(e).splitlines()[0]}") from None
        self._in = self.interp.get_input_details()[0]
        self._out = self.interp.get_output_details()[0]
        self._batch = None
        # LiteRT applies the XNNPACK delegate by default for float and int8 models on CPU.
        self.accelerator = "XNNPACK (default delegate)"

    @property
    def input_dtype(self):
        return self._in["dtype"]

    def _ensure_batch(self, n: int) -> None:
        if self._batch != n:
            shape = list(self._in["shape"])
            shape[0] = n
            self.interp.resize_tensor_input(self._in["index"], shape)
            from ._tf import quiet_stderr

            with quiet_stderr():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
                self.interp.allocate_tensors()
            self._in = self.interp.get_input_details()[0]
            self._out = self.interp.get_output_details()[0]
            self._batch = n

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images)
        self._ensure_batch(len(x))
        dtype = self._in["dtype"]
        if dtype in (np.uint8, np.int8):
            scale, zero = self._in["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max).astype(dtype)
        else:
            x = x.astype(dtype)
        self.interp.set_tensor(self._in["index"], x)
        self.interp.invoke()
        y = self.interp.get_tensor(self._out["index"])
        if self._out["dtype"] in (np.uint8, np.int8):
            scale, zero = self._out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)


class OnnxRuntime:
    """An .onnx file in onnxruntime, on the first available of the requested providers."""

    def __init__(self, path: Path, num_threads: int | None = None, name: str | None = None,
                 providers: list[str] | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        self.name = name or self.path.stem
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise SkinscanError(f"onnxruntime cannot load {self.path}: {str(e).splitlines()[0]}") from None
        self._input = self.session.get_inputs()[0].name
        self.accelerator = self.session.get_providers()[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        return self.session.run(None, {self._input: x})[0].astype(np.float32)


def open_runtime(run, entry: dict | None = None, *, num_threads: int | None = None,
                 device: str = "cpu"):
    """Open the Keras model (``entry=None``) or one manifest entry of ``run`` as a Runtime.

    Exports are checked against their manifest SHA-256 before they are loaded.
    """
    if entry is None:
        tf_device = "/GPU:0" if device == "gpu" else "/CPU:0"
        return KerasRuntime(run.load_model(), name="keras", device=tf_device)
    from .export.manifest import verify_entry

    path = verify_entry(run, entry)
    if entry["format"] == "tflite":
        if device == "gpu":
            raise SkinscanError("TFLite's GPU delegate is for Android; there is no desktop GPU run")
        return TFLiteRuntime(path, num_threads=num_threads, name=entry["name"])
    if entry["format"] == "onnx":
        providers = ["CUDAExecutionProvider"] if device == "gpu" else ["CPUExecutionProvider"]
        return OnnxRuntime(path, num_threads=num_threads, name=entry["name"], providers=providers)
    raise SkinscanError(f"unknown export format '{entry['format']}' in the manifest")

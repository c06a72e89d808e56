"""One runtime interface for every format: the heart of evaluate, benchmark and predict.

Each runtime loads one file and maps a batch of NHWC RGB images in 0..255 (uint8 or float) to
class probabilities, float32 of shape (N, classes). It also knows what only it can know: which
kernels really ran (``acceleration``), the model's multiply-accumulates (``macs``) and why it
cannot run on a GPU here (``gpu_unavailable``). Keras is one runtime among the others.

A new format is one class here plus one entry in :data:`RUNTIMES` (``register_runtime``), and
one converter in ``exporters/converters.py``. Callers never branch on the format.

>>> # rt = open_runtime(Path("runs/demo/exports/model_int8.tflite"), "tflite", num_threads=2)
>>> # probs = rt.predict(load_batch(paths, 96))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.host import count_macs_keras, count_macs_onnx
from skinscan_edge.core.plugins import load_plugins
from skinscan_edge.core.rundir import load_keras_model
from skinscan_edge.core.tf import quiet_stderr, tf
from skinscan_edge.runtimes.xnnpack import delegation

ANDROID_GPU = ("TFLite's GPU delegate is for Android (OpenCL / OpenGL ES); it has no desktop "
               "CUDA path, so no desktop GPU number is reported")


class GpuUnavailable(SkinscanError):
    """This runtime cannot run on a GPU here; the message says why (a benchmark row's ``skipped``)."""


class Runtime:
    """One model file in its own runtime. Subclasses set the class attributes and implement
    ``__init__`` (load) and ``predict``; the rest has working defaults.

    Attributes:
      format: the manifest's ``format`` this runtime opens (its key in RUNTIMES).
      library: the module imported before loading, so a benchmark's base memory excludes the model.
      name: the model's name (``keras``, ``tflite-int8``...).
      accelerator: what ran the kernels, as far as the runtime can tell (e.g. ``XNNPACK``).
    """

    format: ClassVar[str] = ""
    library: ClassVar[str] = ""
    #: Why this format never runs on a desktop GPU (None: it may; ``gpu_unavailable`` checks).
    no_gpu_reason: ClassVar[str | None] = "no GPU path for this format"

    def __init__(self, path: Path, *, name: str, num_threads: int | None = None, device: str = "cpu"):
        raise NotImplementedError

    def predict(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def acceleration(self) -> dict:
        """``accelerated`` (bool or None: unknown) and ``accelerator_detail``, for benchmark rows."""
        return {"accelerated": None, "accelerator_detail": self.accelerator}

    def macs(self) -> int | None:
        """Multiply-accumulates per image, or None when this runtime cannot count them."""
        return None

    @classmethod
    def gpu_unavailable(cls) -> str | None:
        """Why this format cannot run on a GPU on this host, or None when it can try."""
        return cls.no_gpu_reason

    @classmethod
    def import_library(cls) -> None:
        if cls.library:
            __import__(cls.library)


class KerasRuntime(Runtime):
    """The Keras baseline (``model.keras``, loaded with safe_mode), run as a compiled ``tf.function``."""

    format = "keras"
    library = "tensorflow"
    no_gpu_reason = None

    def __init__(self, path: Path, *, name: str = "keras", num_threads: int | None = None, device: str = "cpu",
                 model=None):
        self._tf = tf()
        if num_threads:
            try:  # only possible before TensorFlow's first op; evaluate calls it later, and may not
                self._tf.config.threading.set_intra_op_parallelism_threads(num_threads)
                self._tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
        if device == "gpu" and (why := self.gpu_unavailable()):
            raise GpuUnavailable(why)
        self.name = name
        self.model = model if model is not None else load_keras_model(path)
        self.device = "/GPU:0" if device == "gpu" else "/CPU:0"
        self.accelerator = f"TensorFlow {self.device}"
        spec = self._tf.TensorSpec([None, *self.model.input_shape[1:]], self._tf.float32)
        self._fn = self._tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

    def predict(self, images: np.ndarray) -> np.ndarray:
        with self._tf.device(self.device):
            out = self._fn(self._tf.constant(np.asarray(images, dtype=np.float32)))
        return out.numpy().astype(np.float32)

    def acceleration(self) -> dict:
        return {"accelerated": self.device.startswith("/GPU") or None,
                "accelerator_detail": "TensorFlow does not report which kernels ran (oneDNN is on by default on x86)"}

    def macs(self) -> int | None:
        return count_macs_keras(self.model)["macs"]

    @classmethod
    def gpu_unavailable(cls) -> str | None:
        return None if tf().config.list_physical_devices("GPU") else "no CUDA device: TensorFlow sees no GPU"


class TFLiteRuntime(Runtime):
    """A .tflite file in the LiteRT interpreter (``ai_edge_litert``), XNNPACK on CPU.

    Quantized inputs and outputs are handled here with the file's own scale and zero point,
    so callers always pass 0..255 pixels and get probabilities back.
    """

    format = "tflite"
    library = "ai_edge_litert.interpreter"
    no_gpu_reason = ANDROID_GPU

    def __init__(self, path: Path, *, name: str | None = None, num_threads: int | None = None, device: str = "cpu"):
        from ai_edge_litert.interpreter import Interpreter

        if device == "gpu":
            raise GpuUnavailable(ANDROID_GPU)
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

    def acceleration(self) -> dict:
        """How much of the graph XNNPACK took (the export manifest records the same analysis)."""
        info = delegation(self.interp)
        return {**info, "builtin_ops": ", ".join(info["builtin_ops"])}  # rows stay flat (CSV)


_ORT_INT8 = {"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
             "DynamicQuantizeMatMul", "QGemm"}
_ORT_FLOAT = {"Conv", "FusedConv", "NhwcFusedConv", "MatMul", "FusedMatMul", "Gemm"}
_ORT_GPU = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class OnnxRuntime(Runtime):
    """An .onnx file in onnxruntime: the CPU provider, or CUDA (TensorRT first where present)."""

    format = "onnx"
    library = "onnxruntime"
    no_gpu_reason = None

    def __init__(self, path: Path, *, name: str | None = None, num_threads: int | None = None, device: str = "cpu"):
        import onnxruntime as ort

        if device == "gpu" and (why := self.gpu_unavailable()):
            raise GpuUnavailable(why)
        self.path = Path(path)
        self.name = name or self.path.stem
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        providers = [p for p in _ORT_GPU if p in ort.get_available_providers()] if device == "gpu" \
            else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise SkinscanError(f"onnxruntime cannot load {self.path}: {str(e).splitlines()[0]}") from None
        self._input = self.session.get_inputs()[0].name
        self.accelerator = self.session.get_providers()[0]
        if device == "gpu" and self.accelerator not in _ORT_GPU:
            raise GpuUnavailable(f"no CUDA device: the CUDA provider did not initialise (session runs on {self.accelerator})")

    def predict(self, images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32)
        return self.session.run(None, {self._input: x})[0].astype(np.float32)

    def acceleration(self) -> dict:
        providers = self.session.get_providers()
        if providers[0] in _ORT_GPU:
            return {"accelerated": True, "accelerator_detail": f"session providers: {', '.join(providers)}"}
        return self._cpu_kernels()

    def _cpu_kernels(self) -> dict:
        """Which conv/matmul kernels onnxruntime's optimized CPU graph really uses (int8 vs float)."""
        import tempfile

        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            opts = ort.SessionOptions()
            opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
            opts.log_severity_level = 3
            ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
            graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
        kinds = [n.op_type for n in graph.node]
        n_int8 = sum(k in _ORT_INT8 for k in kinds)
        n_float = sum(k in _ORT_FLOAT for k in kinds)
        source_ops = {n.op_type for n in onnx.load(str(self.path), load_external_data=False).graph.node}
        quantized = bool(source_ops & (_ORT_INT8 | {"QuantizeLinear", "DynamicQuantizeLinear"}))
        return {"accelerated": (n_float == 0 and n_int8 > 0) if quantized else n_float > 0,
                "accelerator_detail": f"CPUExecutionProvider (MLAS); optimized graph: {n_int8} int8 "
                                      f"conv/matmul, {n_float} float conv/matmul, "
                                      f"{kinds.count('Transpose')} Transpose, "
                                      f"{kinds.count('DequantizeLinear')} DequantizeLinear"}

    def macs(self) -> int | None:
        return count_macs_onnx(self.path)["macs"]

    @classmethod
    def gpu_unavailable(cls) -> str | None:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return ("no CUDA device: onnxruntime has no CUDAExecutionProvider "
                    "(install the [gpu] extra, onnxruntime-gpu, on a CUDA host)")
        return None


#: Manifest format -> runtime class. ``register_runtime`` adds one (see docs/adding-a-format.md).
RUNTIMES: dict[str, type[Runtime]] = {cls.format: cls for cls in (KerasRuntime, TFLiteRuntime, OnnxRuntime)}


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make ``cls`` the runtime of its ``format``."""
    RUNTIMES[cls.format] = cls
    return cls


def runtime_class(fmt: str) -> type[Runtime]:
    load_plugins()
    if fmt not in RUNTIMES:
        raise SkinscanError(did_you_mean(fmt, sorted(RUNTIMES), "format"))
    return RUNTIMES[fmt]


def open_runtime(path: Path, fmt: str, *, name: str, num_threads: int | None = None, device: str = "cpu") -> Runtime:
    """Open one model file, already verified against its manifest, in its format's runtime.

    ``device="gpu"`` raises :class:`GpuUnavailable`, with the reason, where that cannot run.
    Callers with a run directory use ``models.open_model`` (which verifies the file first).
    """
    return runtime_class(fmt)(Path(path), name=name, num_threads=num_threads, device=device)

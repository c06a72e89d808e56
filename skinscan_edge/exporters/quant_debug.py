"""Which layers cost the accuracy of an int8 export: per-layer quantization error (``explain``).

TFLite: LiteRT's ``QuantizationDebugger`` (``tf.lite.experimental``) calibrates the export graph
with the run's calibration images, exactly as the int8 export does, and adds a NumericVerify op
after every quantized op. Each op's float twin runs on the *same* (quantized) input, so the error
of a layer is its own, not what earlier layers passed on. ONNX: onnxruntime's
``qdq_loss_debug`` saves every activation of the float model and of the QDQ file;
``qdq_err`` compares each activation before and after its QuantizeLinear/DequantizeLinear pair
(the layer's own rounding and clipping), ``xmodel_err`` against the float model (accumulated).

Per layer and per image, from the float value ``f`` and the dequantized value ``q``:

* ``channel_error``: the mean over channels of ||q_c - f_c|| / ||f_c|| (dead channels skipped).
  The ranking metric: one per-tensor activation scale crushes the small channels when one
  channel is far larger, which the whole-tensor numbers below hide.
* ``sqnr_db``: onnxruntime's signal-to-quantization-noise ratio, 20 log10(||f|| / ||q - f||).
* ``rmse`` and ``rmse_per_scale`` (LiteRT's guide: about 0.29 is pure rounding).

The numbers are averaged over the images of a set (``calibration``, and ``flipped``: the test
images whose top-1 differed from Keras in evaluate.json). Rendering: ``render_markdown``,
``plots.plot_quant_debug``; the numbers are recomputed independently in tests/test_explain.py.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from skinscan_edge.core.contract import INPUT_NAME
from skinscan_edge.core.host import count_macs_keras
from skinscan_edge.core.tf import quiet_stderr, tf
from skinscan_edge.exporters.tflite import save_serving_model

#: A channel whose float norm is below this share of the tensor's largest channel is dead.
DEAD_CHANNEL = 1e-6
METRICS = ("channel_error", "sqnr_db", "rmse", "rmse_per_scale")
RANK_BY = "channel_error"
#: ONNX element-wise activations quantize_static folds into the op before them (QDQ).
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid")


def channel_error(f: np.ndarray, q: np.ndarray, axis: int = -1) -> float:
    """Mean over channels of ||q_c - f_c|| / ||f_c||, channels on ``axis``; dead channels skipped."""
    f = np.moveaxis(np.asarray(f, np.float64), axis, 0).reshape(np.shape(f)[axis], -1)
    e = np.moveaxis(np.asarray(q, np.float64), axis, 0).reshape(f.shape) - f
    norm = np.linalg.norm(f, axis=1)
    live = norm > DEAD_CHANNEL * max(norm.max(initial=0.0), np.finfo(np.float64).tiny)
    return float(np.mean(np.linalg.norm(e[live], axis=1) / norm[live])) if live.any() else float("nan")


def layer_metrics(f: np.ndarray, q: np.ndarray, scale: float, axis: int = -1) -> dict:
    """Every METRICS value of one layer on one image (``q`` already dequantized)."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio as sqnr

    # float64 throughout: an exact op (max pool) differs from its float twin by float32 rounding
    # only, and squeezing the dequantized values back into float32 would make that noise (and
    # the SQNR, ~150 dB instead of ~350 dB) depend on the cast, not on the layer.
    f, q = np.asarray(f, np.float64), np.asarray(q, np.float64)
    rmse = float(np.sqrt(np.mean((q - f) ** 2)))
    return {"channel_error": channel_error(f, q, axis), "sqnr_db": float(sqnr(f, q)), "rmse": rmse,
            "rmse_per_scale": rmse / scale if scale else float("nan")}


def _direct(name: str):
    """A LiteRT ``layer_direct_compare_metrics`` function: (float, quantized, scale, zero point)."""
    def metric(f, q, scale, zero_point):
        deq = (np.asarray(q, np.int64) - int(zero_point)) * np.float64(scale)
        return layer_metrics(f, deq, float(scale))[name]
    return metric


def int8_converter(saved_model_dir: Path, images: np.ndarray):
    """The TFLite converter of the int8 export (representative data, builtin int8 ops), float I/O."""
    tf_ = tf()
    conv = tf_.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    conv.optimizations = [tf_.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ({INPUT_NAME: x[None].astype(np.float32)} for x in images)
    conv.target_spec.supported_ops = [tf_.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv


class TFLiteDebug:
    """LiteRT's QuantizationDebugger on the export graph, calibrated once on ``calib``.

    ``layer_errors`` measures; ``quantized(nodes)`` is the int8 file with those op outputs kept
    float (the debugger's ``denylisted_nodes``), re-quantized from the same calibration.
    """

    def __init__(self, model, calib: np.ndarray, tmp: Path):
        self._tf = tf()
        serving = save_serving_model(model, Path(tmp) / "serving_debug", rewrite_pools=True)
        self._images = calib
        # quiet_stderr around every debugger call: the converter's "fully_quantize" lines, the
        # interpreter's deprecation warning and LiteRT's delegate line (--verbose shows them)
        with quiet_stderr():
            self.debugger = self._tf.lite.experimental.QuantizationDebugger(
                converter=int8_converter(serving, calib), debug_dataset=self._dataset)
        self._debug_model: bytes | None = None

    def _dataset(self):
        return ([x[None].astype(np.float32)] for x in self._images)

    def layer_errors(self, images: np.ndarray) -> list[dict]:
        """One row per quantized op, in graph order, the METRICS averaged over ``images``."""
        lite = self._tf.lite.experimental
        if self._debug_model is None:
            with quiet_stderr():
                self._debug_model = self.debugger.get_debug_quantized_model()
        # A second debugger over the instrumented model: only this route keeps every tensor
        # (experimental_preserve_all_tensors), which layer_direct_compare_metrics reads; the
        # converter route reuses buffers and hands the metrics overwritten values.
        self._images = images
        with quiet_stderr():
            dbg = lite.QuantizationDebugger(
                quant_debug_model_content=self._debug_model, debug_dataset=self._dataset,
                debug_options=lite.QuantizationDebugOptions(layer_direct_compare_metrics={m: _direct(m) for m in METRICS}))
            dbg.run()
        buf = io.StringIO()
        dbg.layer_statistics_dump(buf)
        rows = []
        for i, r in enumerate(csv.DictReader(io.StringIO(buf.getvalue()))):
            rows.append({"index": i, "layer": r["tensor_name"], "op": r["op_name"], "scale": float(r["scale"]),
                         "zero_point": int(float(r["zero_point"])), **{m: float(r[m]) for m in METRICS}})
        return rows

    def keep_float(self, nodes: list[str]) -> None:
        """From now on, ``nodes`` (op output names) stay float (LiteRT's ``denylisted_nodes``)."""
        lite = self._tf.lite.experimental
        with quiet_stderr():  # setting the options re-quantizes and opens a new interpreter
            self.debugger.options = lite.QuantizationDebugOptions(denylisted_nodes=list(nodes) or None)
        self._debug_model = None

    def quantized(self, nodes: list[str]) -> bytes:
        """The int8 model (float input and output) with ``nodes`` in float."""
        self.keep_float(nodes)
        with quiet_stderr():
            return self.debugger.get_nondebug_quantized_model()


class _Reader:
    """onnxruntime CalibrationDataReader over images (one per call)."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._it, self._name = iter(images), input_name

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self._name: x[None].astype(np.float32)}

    def __iter__(self):
        return iter(self.get_next, None)


def onnx_layer_errors(prep_path: Path, int8_path: Path, images: np.ndarray, tmp: Path, chunk: int = 8) -> list[dict]:
    """One row per QDQ'd activation of ``int8_path`` in graph order, against ``prep_path`` (the
    model quantize_static read), METRICS averaged over ``images``; channels are axis 1 (NCHW)."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as qd

    tmp = Path(tmp)
    aug_f, aug_q = tmp / "float_aug.onnx", tmp / "qdq_aug.onnx"
    qd.modify_model_output_intermediate_tensors(str(prep_path), str(aug_f))
    qd.modify_model_output_intermediate_tensors(str(int8_path), str(aug_q))
    graph = onnx.shape_inference.infer_shapes(onnx.load(str(prep_path))).graph
    producer = {out: (i, n) for i, n in enumerate(graph.node) for out in n.output}
    channels = {v.name: v.type.tensor_type.shape.dim[1].dim_value for v in graph.value_info
                if len(v.type.tensor_type.shape.dim) >= 2}
    sums: dict[str, dict[str, list[float]]] = {}
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]
        qdq = qd.collect_activations(str(aug_q), _Reader(part, INPUT_NAME))
        flt = qd.collect_activations(str(aug_f), _Reader(part, INPUT_NAME))
        for name, match in qd.create_activation_matching(qdq, flt).items():
            c = channels.get(name) or 1
            # quantize_static drops a Relu after a conv and lets the QDQ range clip instead, so
            # the QDQ pair's input is the conv's output: the Relu is applied to it here, else
            # the "error" would be the negative half the Relu removes anyway.
            relu = name in producer and producer[name][1].op_type == "Relu"
            for j in range(len(part)):
                pre = np.maximum(match["pre_qdq"][j], 0) if relu else match["pre_qdq"][j]
                one = {name: {"pre_qdq": [pre], "post_qdq": [match["post_qdq"][j]],
                              "float": [match["float"][j]] if "float" in match else []}}
                acc = sums.setdefault(name, {})
                for metric in ("channel_error", "sqnr_db", "rmse"):
                    fn = _flat_metric(metric, c)
                    for kind, value in qd.compute_activation_error(one, err_func=fn)[name].items():
                        acc.setdefault(f"{kind}_{metric}", []).append(value)
    rows = []
    for name, acc in sums.items():
        index, node = producer.get(name, (len(graph.node), None))
        nodes = [node.name] if node is not None else []
        if node is not None and node.op_type in ACTIVATIONS and node.input[0] in producer:
            nodes.insert(0, producer[node.input[0]][1].name)  # a Relu's error is its conv's too
        rows.append({"index": index, "layer": name, "nodes": nodes,
                     "op": node.op_type if node is not None else "?",
                     **{m: float(np.nanmean(acc[f"qdq_err_{m}"])) for m in ("channel_error", "sqnr_db", "rmse")},
                     **{f"xmodel_{m}": float(np.nanmean(acc[f"xmodel_err_{m}"]))
                        for m in ("channel_error", "sqnr_db", "rmse") if f"xmodel_err_{m}" in acc}})
    rows.sort(key=lambda r: r["index"])
    for i, r in enumerate(rows):
        r["index"] = i
    return rows


def _flat_metric(name: str, c: int):
    """An ``err_func`` for onnxruntime's compute_activation_error: lists of flattened tensors."""
    def fn(xs, ys):
        f, q = np.concatenate(xs).ravel(), np.concatenate(ys).ravel()
        shape = (c, -1) if c > 1 and f.size % c == 0 else (1, -1)
        return layer_metrics(f.reshape(shape), q.reshape(shape), 0.0, axis=0)[name]
    return fn


def keras_layer_of(name: str, known: set[str], preferred: set[str] = frozenset()) -> str | None:
    """The Keras layer an op or tensor name comes from: among the ``model/layer/op`` parts of
    the name (TFLite joins fused ops' names with ';'), the first in ``preferred`` (layers with
    MACs: a fused conv+BN+ReLU is its conv), else the first in ``known``."""
    parts = [p.split(":")[0] for p in name.replace(";", "/").split("/") if p]
    hits = [p for p in parts if p in known]
    return next((p for p in hits if p in preferred), hits[0] if hits else None)


def parts_of(name: str) -> set[str]:
    return {p.split(":")[0] for p in name.replace(";", "/").split("/") if p}


def onnx_nodes_of(graph, layers: list[str]) -> list[str]:
    """Nodes of an ONNX graph that belong to Keras ``layers`` (by name), with the activations
    that read them (quantize_static would otherwise quantize between the two)."""
    wanted = set(layers)
    own = [n for n in graph.node if parts_of(n.name) & wanted]
    outs = {o for n in own for o in n.output}
    acts = [n for n in graph.node if n.op_type in ACTIVATIONS and n.input and n.input[0] in outs]
    return list(dict.fromkeys(n.name for n in own + acts))


def onnx_readers(graph, rows: list[dict], known: set[str], preferred: set[str] = frozenset()) -> dict[str, list[str]]:
    """Keras layer of each row -> the Keras layers whose nodes read that row's activation
    (through a folded activation such as Relu, whose output is the tensor that gets quantized)."""
    readers: dict[str, list[str]] = {}
    for r in rows:
        if not r.get("keras_layer"):
            continue
        found = [keras_layer_of(n.name, known, preferred) for n in graph.node if r["layer"] in n.input]
        readers.setdefault(r["keras_layer"], [])
        readers[r["keras_layer"]] += [x for x in found if x and x != r["keras_layer"]
                                      and x not in readers[r["keras_layer"]]]
    return readers


def worst_layers(rows: list[dict], n: int, key: str = RANK_BY) -> list[str]:
    """The ``n`` Keras layers with the largest ``key``, worst first (each layer once)."""
    ranked = sorted((r for r in rows if r.get("keras_layer") and np.isfinite(r.get(key, np.nan))),
                    key=lambda r: -r[key])
    return list(dict.fromkeys(r["keras_layer"] for r in ranked))[:n]


def layer_macs(model) -> dict[str, int]:
    """Multiply-accumulates per Keras layer (hostinfo.count_macs_keras, per layer)."""
    return count_macs_keras(model)["per_layer"]

"""The int8 / fp32 speed study behind benchmarks/NOTES.md (run on a scratch 299 px run).

1. ``variants RUN``: from RUN's onnx-fp32, build ONNX int8 variants (QDQ vs QOperator,
   U8S8 vs S8S8, per-channel vs per-tensor, an offline-optimized graph) and add them to RUN's
   manifest under ``study-*`` names, so the one benchmark harness measures them like any export.
2. ``litert RUN``: LiteRT interpreter options (threads, XNNPACK on/off, latest XNNPACK
   features) on the TFLite files, in-process, with the same ``measure_runtime`` harness.
3. ``ort-spin RUN``: onnxruntime's intra-op spin-waiting on and off at 2 threads.
4. ``pools DIR``: where tflite-int8's time goes. An untrained 299 px InceptionV3 converted to
   int8 twice (Keras' average pools, and the export graph's depthwise conv + multiply), timed
   interleaved; then each of the nine pools alone, as int8 pool (builtin kernel) and as its
   rewrite (XNNPACK), so the pools' own cost and the partition hand-offs separate.
5. ``recipes RUN``: on an exported (trained) run, add today's int8 recipe side by side with
   the new ones: ``study-tflite-int8-keras-pools`` (int8 without the pool rewrite) and
   ``study-onnx-int8-<target>`` for every ``--onnx-target``, same calibration images; then
   ``skinscan-edge evaluate`` and ``benchmark`` measure them like any export.

    python benchmarks/study_int8.py variants /tmp/bench299
    skinscan-edge benchmark /tmp/bench299 --threads 2 --batch 1 --models onnx-int8,study-...
    python benchmarks/study_int8.py litert /tmp/bench299
    python benchmarks/study_int8.py ort-spin /tmp/bench299
    python benchmarks/study_int8.py pools /tmp/pools299
    python benchmarks/study_int8.py recipes runs/demo
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import skinscan_edge  # noqa: F401
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.files import read_json, sha256_file, write_json
from skinscan_edge.core.formats import INT8_TARGETS

VARIANTS = {  # name -> quantize_static settings
    "study-qdq-u8s8-pc": dict(fmt="QDQ", act="QUInt8", per_channel=True),
    "study-qop-u8s8-pc": dict(fmt="QOperator", act="QUInt8", per_channel=True),
    "study-qdq-s8s8-pc": dict(fmt="QDQ", act="QInt8", per_channel=True),
    "study-qop-s8s8-pc": dict(fmt="QOperator", act="QInt8", per_channel=True),
    "study-qdq-u8s8-pt": dict(fmt="QDQ", act="QUInt8", per_channel=False),
}


class _Reader:
    def __init__(self, images):
        self.it = iter(images)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"image": x[None].astype(np.float32)}


def build_variants(root: Path, calib_count: int = 32) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from skinscan_edge.exporters.run import calibration_set

    run = RunDir(root)
    manifest = read_json(run.manifest_path)
    fp32 = run.exports / next(e["file"] for e in manifest["exports"] if e["name"] == "onnx-fp32")
    _, calib = calibration_set(run, calib_count, 0)
    prep = run.exports / "study_prep.onnx"
    quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=False)
    entries = [e for e in manifest["exports"] if not e["name"].startswith("study-")]
    for name, v in VARIANTS.items():
        out = run.exports / f"{name.replace('-', '_')}.onnx"
        t0 = time.time()
        quantize_static(str(prep), str(out), _Reader(calib), quant_format=getattr(QuantFormat, v["fmt"]),
                        activation_type=getattr(QuantType, v["act"]), weight_type=QuantType.QInt8,
                        per_channel=v["per_channel"], calibrate_method=CalibrationMethod.MinMax)
        entries.append(_entry(name, out, "int8", f"{v} ({time.time() - t0:.0f} s)"))
        print(name, out.stat().st_size / 1e6, "MB", flush=True)
    # an offline-optimized copy of the default export (ORT_ENABLE_EXTENDED: portable across hosts)
    entries += [_offline(run, "onnx-int8", "study-qdq-u8s8-pc-offline", "int8", manifest),
                _offline(run, "onnx-fp32", "study-fp32-offline", "fp32", manifest)]
    prep.unlink()
    manifest["exports"] = entries
    write_json(run.manifest_path, manifest)


def _entry(name: str, path: Path, precision: str, notes: str) -> dict:
    return {"name": name, "file": path.name, "format": "onnx", "precision": precision,
            "size_bytes": path.stat().st_size, "sha256": sha256_file(path), "notes": notes}


def _offline(run: RunDir, source: str, name: str, precision: str, manifest: dict) -> dict:
    import onnxruntime as ort

    src = run.exports / next(e["file"] for e in manifest["exports"] if e["name"] == source)
    out = run.exports / f"{name.replace('-', '_')}.onnx"
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(out)
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    return _entry(name, out, precision, f"offline ORT_ENABLE_EXTENDED of {source}")


def litert_options(root: Path, threads: tuple[int, ...] = (1, 2), rounds: int = 2) -> list[dict]:
    """Batch-1 p50 of each TFLite file under several interpreter options, interleaved in rounds."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from skinscan_edge.benchmark.harness import BenchmarkConfig, _tflite_delegation, sample_images
    from skinscan_edge.benchmark.measure import measure_runtime
    from skinscan_edge.runtimes.interface import TFLiteRuntime

    run = RunDir(root)
    images = sample_images(run, 8, 0)
    cfg = BenchmarkConfig(batches=(1,), warmup=3, min_time_s=1.5, min_runs=10)
    options = {
        "xnnpack (default)": {},
        "xnnpack latest features": {"experimental_default_delegate_latest_features": True},
        "builtin kernels, no xnnpack": {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES},
    }
    files = [e for e in read_json(run.manifest_path)["exports"] if e["name"] in ("tflite-fp32", "tflite-int8")]
    rows = []
    for r in range(rounds):
        order = list(options.items()) if r % 2 == 0 else list(reversed(options.items()))
        for e in files:
            for t in threads:
                for label, kw in order:
                    rt = TFLiteRuntime(run.exports / e["file"], num_threads=t, name=e["name"])
                    rt.interp = Interpreter(model_path=str(run.exports / e["file"]), num_threads=t, **kw)
                    rt._in, rt._out = rt.interp.get_input_details()[0], rt.interp.get_output_details()[0]
                    rt._batch = None
                    m = measure_runtime(rt, images, cfg)
                    rows.append({"round": r, "model": e["name"], "threads": t, "option": label,
                                 "p50_ms": round(m["latency_p50_ms"], 1),
                                 "delegation": _tflite_delegation(rt.interp)["accelerator_detail"]})
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def ort_spinning(root: Path, threads: int = 2, rounds: int = 3) -> list[dict]:
    """Batch-1 p50 of onnx-fp32 / onnx-int8 with intra-op spin-waiting on and off, interleaved."""
    import onnxruntime as ort

    from skinscan_edge.benchmark.harness import BenchmarkConfig, sample_images
    from skinscan_edge.benchmark.measure import measure_runtime
    from skinscan_edge.runtimes.interface import OnnxRuntime

    run = RunDir(root)
    images = sample_images(run, 8, 0)
    cfg = BenchmarkConfig(batches=(1,), warmup=3, min_time_s=1.5, min_runs=8)
    files = {e["name"]: run.exports / e["file"] for e in read_json(run.manifest_path)["exports"]
             if e["name"] in ("onnx-fp32", "onnx-int8")}
    rows = []
    for r in range(rounds):
        for name, path in files.items():
            for spin in (("1", "0") if r % 2 == 0 else ("0", "1")):
                rt = OnnxRuntime(path, num_threads=threads, name=name)
                opts = ort.SessionOptions()
                opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
                opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
                rt.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
                m = measure_runtime(rt, images, cfg)
                rows.append({"round": r, "model": name, "threads": threads, "allow_spinning": spin,
                             "p50_ms": round(m["latency_p50_ms"], 1), "mean_ms": round(m["latency_mean_ms"], 1)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def _int8_file(model, path: Path, images: np.ndarray, tmp: Path) -> Path:
    from skinscan_edge.exporters import tflite

    serving = tflite.save_serving_model(model, tmp / path.stem)
    path.write_bytes(tflite.convert(serving, "int8", lambda: iter(images)))
    return path


def _p50_ms(path: Path, threads: int, x: np.ndarray, min_time_s: float = 1.0) -> float:
    from ai_edge_litert.interpreter import Interpreter

    from skinscan_edge.benchmark.measure import time_calls

    interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    xq = x.astype(inp["dtype"]) if inp["dtype"] == np.uint8 else np.clip(np.round(x), -128, 127).astype(inp["dtype"])
    interp.set_tensor(inp["index"], xq)

    for _ in range(3):
        interp.invoke()
    return float(np.median(time_calls(interp.invoke, min_time_s, 10))) * 1e3


def pool_study(out: Path, img: int = 299, threads: tuple[int, ...] = (1, 2), rounds: int = 2) -> list[dict]:
    """The whole int8 network with and without the pool rewrite, then the pools alone."""
    from skinscan_edge.core.tf import keras
    from skinscan_edge.exporters.graph import export_model, is_rewritable_pool
    from skinscan_edge.runtimes.xnnpack import describe_delegation
    from skinscan_edge.training.model import build_model

    k = keras()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    from PIL import Image

    images = np.stack([np.asarray(Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize(
        (img, img), Image.Resampling.BICUBIC), np.float32) for _ in range(16)])
    model = build_model(10, img, weights="none")
    files = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, m in (("keras-pool", model), ("export-graph", export_model(model))):
            path = out / f"int8_{label}.tflite"
            files[label] = path if path.exists() else _int8_file(m, path, images, Path(tmp))
        # the pools alone, at their shapes in this network
        pools = [l for l in model.layers if is_rewritable_pool(l)]
        singles = {}
        for i, layer in enumerate(pools):
            shape = tuple(layer.input_shape[1:])
            inp = k.Input(shape)
            alone = k.Model(inp, k.layers.AveragePooling2D(layer.pool_size, 1, "same")(inp))
            x = rng.normal(0, 1, (8, *shape)).astype(np.float32)
            for label, m in (("pool", alone), ("rewrite", export_model(alone))):
                path = out / f"alone{i}_{label}.tflite"
                if not path.exists():
                    _int8_file(m, path, x, Path(tmp))
                singles.setdefault(label, []).append((path, shape))
    rows = []
    for label, path in files.items():
        rows.append({"file": label, **describe_delegation(path)})
        print(json.dumps(rows[-1]), flush=True)
    x1 = images[:1]
    for r in range(rounds):
        for t in threads:
            order = list(files.items()) if r % 2 == 0 else list(reversed(files.items()))
            for label, path in order:
                rows.append({"round": r, "threads": t, "file": label, "p50_ms": round(_p50_ms(path, t, x1), 1)})
                print(json.dumps(rows[-1]), flush=True)
            for label, items in singles.items():
                total = sum(_p50_ms(p, t, rng.normal(0, 20, (1, *s)), 0.2) for p, s in items)
                rows.append({"round": r, "threads": t, "file": f"9 pools alone, {label}", "p50_ms": round(total, 2)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def build_recipes(root: Path) -> None:
    """Today's int8 TFLite (Keras pools) and the ONNX int8 file of every target, into the manifest."""
    from skinscan_edge.exporters import onnx as onnx_export
    from skinscan_edge.exporters import tflite
    from skinscan_edge.exporters.run import calibration_set

    run = RunDir(root)
    manifest = read_json(run.manifest_path)
    cfg = manifest["config"]
    _, calib = calibration_set(run, cfg["calib_samples"], cfg["seed"])
    entries = [e for e in manifest["exports"] if not e["name"].startswith("study-")]
    with tempfile.TemporaryDirectory() as tmp:
        out = run.exports / "study_int8_keras_pools.tflite"
        serving = tflite.save_serving_model(run.load_model(), Path(tmp) / "serving", rewrite_pools=False)
        out.write_bytes(tflite.convert(serving, "int8", lambda: iter(calib)))
        entries.append(dict(_entry("study-tflite-int8-keras-pools", out, "int8", "int8 without the pool rewrite"),
                            format="tflite"))
    fp32 = run.exports / next(e["file"] for e in entries if e["name"] == "onnx-fp32")
    for target in INT8_TARGETS:
        out = run.exports / f"study_int8_{target.replace('-', '_')}.onnx"
        onnx_export.quantize_int8(fp32, out, list(calib), target)
        entries.append(_entry(f"study-onnx-int8-{target}", out, "int8", onnx_export.int8_notes(target)))
        print(entries[-1]["name"], flush=True)
    manifest["exports"] = entries
    write_json(run.manifest_path, manifest)


if __name__ == "__main__":
    what, root = sys.argv[1], Path(sys.argv[2])
    if what == "variants":
        build_variants(root)
    elif what == "ort-spin":
        ort_spinning(root)
    elif what == "recipes":
        build_recipes(root)
    elif what == "pools":
        rows = pool_study(root)
        (root / "pool_study.json").write_text(json.dumps(rows, indent=1))
    elif what == "litert":
        out = litert_options(root)
        Path(tempfile.gettempdir(), "litert_study.json").write_text(json.dumps(out, indent=1))
    else:
        sys.exit(__doc__)

"""What the benchmark ran on, and the floor it is judged against.

Three things live here, all cheap enough to measure in the same run as the models:

* :func:`host_info` — CPU model, cores, the instruction-set flags that decide int8 speed
  (AVX2, AVX-512, VNNI, AMX), memory, load average and library versions.
* :func:`measure_floor` — the host's fp32 and int8 matrix-multiply peak through onnxruntime
  (``MatMul`` and ``MatMulInteger`` on large matrices built with ``onnx.helper``).
* :func:`count_macs_onnx` / :func:`count_macs_keras` — a model's multiply-accumulates per image
  (conv and dense layers), so that ``floor_ms = 2 * MACs / peak`` and ``x_floor`` follow.

>>> # floor = measure_floor(threads=2); floor["fp32_gflops"], floor["int8_gops"]
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from skinscan_edge.core.formats import check_onnx_target, choose_target, quantization

#: Flags that change which GEMM kernels onnxruntime (MLAS) and XNNPACK can use.
X86_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")
LIBRARIES = ("tensorflow", "tf-keras", "onnxruntime", "onnxruntime-gpu", "onnx", "ai-edge-litert",
             "tf2onnx", "numpy")
#: What a run directory records of the tools that made it (config.json, the manifest).
TOOLS = ("skinscan-edge", "tensorflow", "tf-keras", "tensorflow-model-optimization", "tf2onnx", "onnx",
         "onnxruntime", "ai-edge-litert", "numpy", "scikit-learn")
#: Square GEMM side for the floor: 2 x 1024^3 = 2.1 GFLOP, ~50 ms per call at 40 GFLOP/s and
#: 12 MB of matrices: bigger than L2, and S8S8 (no AVX2 kernel in MLAS) still takes < 0.2 s.
FLOOR_GEMM_SIZE = 1024


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo as a dict ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def tool_versions() -> dict:
    """Python and the version of each of TOOLS (None where not installed)."""
    return {"python": platform.python_version(), **{name: _version(name) for name in TOOLS}}


def host_info() -> dict:
    """Facts about this host that a benchmark number needs next to it (no heavy imports)."""
    import psutil

    cpu = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "cpu_model": cpu.get("model name") or platform.processor() or "unknown",
        "cpu_vendor": cpu.get("vendor_id"),
        "cpu_family": cpu.get("cpu family"),
        "cpu_model_number": cpu.get("model"),
        "machine": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_flags": {f: f in flags for f in (ARM_FLAGS if "asimd" in flags else X86_FLAGS)},
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: v for name in LIBRARIES if (v := _version(name))},
    }


def host_line(info: dict) -> str:
    """One line for a report: `AMD EPYC (x86_64), 2 cores, AVX2 FMA; no AVX-512/VNNI/AMX, ...`."""
    flags = info.get("cpu_flags", {})
    have = [f.upper() for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8",
                                "asimddp", "i8mm") if flags.get(f)]
    missing = [name for name, keys in (("AVX-512", ("avx512f",)), ("VNNI", ("avx512_vnni", "avx_vnni")),
                                       ("AMX", ("amx_int8",))) if not any(flags.get(k) for k in keys)]
    versions = info.get("versions", {})
    libs = ", ".join(f"{k} {versions[k]}" for k in ("onnxruntime", "onnxruntime-gpu", "ai-edge-litert",
                                                    "tensorflow") if k in versions)
    fam = f", family {info['cpu_family']} model {info['cpu_model_number']}" if info.get("cpu_family") else ""
    return (f"{info.get('cpu_model', 'unknown')} ({info.get('machine')}{fam}), "
            f"{info.get('usable_cores')} usable cores, {' '.join(have) or 'no SIMD flags read'}"
            + (f"; no {'/'.join(missing)}" if missing else "")
            + f", {info.get('memory_gb')} GiB, load {info.get('loadavg_1m')}; {libs}")


# --- the floor: measured GEMM peak ---------------------------------------------------------
def _gemm_model(kind: str, n: int, seed: int = 0):
    """A one-node ONNX model computing A @ B with B as an initializer (like a conv's weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if kind == "fp32":
        b = rng.standard_normal((n, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:
        b = rng.integers(-127, 128, (n, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type = TensorProto.UINT8 if kind == "u8s8" else TensorProto.INT8
        y_type = TensorProto.INT32
    graph = helper.make_graph(
        [node], f"floor_{kind}",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("Y", y_type, [n, n])],
        initializer=[numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)  # readable by any onnxruntime we pin
    onnx.checker.check_model(model)
    a = {"fp32": lambda: rng.standard_normal((n, n), dtype=np.float32),
         "u8s8": lambda: rng.integers(0, 256, (n, n), dtype=np.uint8),
         "s8s8": lambda: rng.integers(-128, 128, (n, n), dtype=np.int8)}[kind]()
    return model.SerializeToString(), a


def time_gemm(kind: str, threads: int, n: int = FLOOR_GEMM_SIZE, min_time_s: float = 0.5,
              min_runs: int = 3, max_runs: int = 50) -> dict:
    """Best-of-N wall time of one n x n x n GEMM in onnxruntime: {gops, best_ms, runs}."""
    import onnxruntime as ort

    blob, a = _gemm_model(kind, n)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    sess.run(None, {"A": a})  # warm-up: thread pool, packing of B
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_time_s):
        t0 = time.perf_counter()
        sess.run(None, {"A": a})
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"gops": 2.0 * n**3 / best / 1e9, "best_ms": best * 1e3,
            "median_ms": float(np.median(times)) * 1e3, "runs": len(times)}


def measure_floor(threads: int, n: int = FLOOR_GEMM_SIZE, min_time_s: float = 0.5,
                  kinds: tuple[str, ...] = ("fp32", "u8s8", "s8s8")) -> dict:
    """The host's GEMM peak at ``threads`` intra-op threads, measured now through onnxruntime.

    fp32 is ``MatMul``; int8 is ``MatMulInteger`` with uint8 activations and int8 weights
    (U8S8, what ORT's quantizer emits by default) and with int8 on both sides (S8S8).
    ``int8_gops`` is the better of the two: the floor is what the host can do at best.
    A kind the installed onnxruntime cannot run is recorded as None with the reason.
    """
    out: dict = {"threads": threads, "gemm_size": n}
    for kind, key in (("fp32", "fp32_gflops"), ("u8s8", "u8s8_gops"), ("s8s8", "s8s8_gops")):
        if kind not in kinds:
            continue
        try:
            r = time_gemm(kind, threads, n=n, min_time_s=min_time_s)
        except Exception as e:  # an ORT build without the kernel: say so, keep going
            out[key], out[f"{kind}_error"] = None, str(e).splitlines()[0][:200]
            continue
        out[key] = round(r["gops"], 1)
        out[f"{kind}_best_ms"] = round(r["best_ms"], 3)
        out[f"{kind}_runs"] = r["runs"]
    int8 = [v for v in (out.get("u8s8_gops"), out.get("s8s8_gops")) if v]
    out["int8_gops"] = max(int8) if int8 else None
    return out


def floor_ms(macs: float | None, precision: str, floor: dict | None, batch: int = 1) -> float | None:
    """Time for ``batch`` images at the measured peak: 2 ops per MAC (None if anything is unknown)."""
    if not macs or not floor:
        return None
    peak = floor.get("int8_gops") if quantization(precision).floor == "int8" else floor.get("fp32_gflops")
    return 2.0 * macs * batch / (peak * 1e9) * 1e3 if peak else None


# --- MAC counting --------------------------------------------------------------------------
_CONV_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "FusedConv": 1, "NhwcFusedConv": 1, "QLinearConv": 3}
_MATMUL_A_INPUT = {"MatMul": 0, "MatMulInteger": 0, "FusedMatMul": 0, "QLinearMatMul": 0,
                   "MatMulIntegerToFloat": 0, "DynamicQuantizeMatMul": 0, "Gemm": 0}


def count_macs_onnx(model_or_path, batch: int = 1) -> dict:
    """Multiply-accumulates of an ONNX graph's conv and matmul nodes for ``batch`` images.

    The batch dimension is pinned, shapes are inferred, then per node:
    conv = output elements x (C_in / group) x kh x kw; matmul/gemm = output elements x K.
    Returns ``{"macs": int, "nodes": counted, "unknown": nodes whose shapes were not inferred}``.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    model = onnx.ModelProto.FromString(model.SerializeToString())  # never touch the caller's copy
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    model = shape_inference.infer_shapes(model)
    shapes: dict[str, list[int | None]] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                           for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)

    def known(shape):
        return shape is not None and len(shape) > 0 and all(d for d in shape)

    macs, counted, unknown = 0, 0, 0
    for node in model.graph.node:
        op = node.op_type
        if op not in _CONV_WEIGHT_INPUT and op not in _MATMUL_A_INPUT:
            continue
        out = shapes.get(node.output[0])
        if op in _CONV_WEIGHT_INPUT:
            w = shapes.get(node.input[_CONV_WEIGHT_INPUT[op]])
            if not (known(out) and known(w)):
                unknown += 1
                continue
            macs += int(np.prod(out, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
        else:
            a = shapes.get(node.input[_MATMUL_A_INPUT[op]])
            if not (known(out) and known(a)):
                unknown += 1
                continue
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[0] if (op == "Gemm" and trans_a) else a[-1]
            macs += int(np.prod(out, dtype=np.int64)) * int(k)
        counted += 1
    return {"macs": macs, "nodes": counted, "unknown": unknown}


def count_macs_keras(model, batch: int = 1) -> dict:
    """Multiply-accumulates of a Keras model's Conv2D / DepthwiseConv2D / SeparableConv2D / Dense
    layers for ``batch`` images (nested models are walked)."""
    macs, counted, per_layer = 0, 0, {}

    def walk(layer):
        nonlocal macs, counted
        for sub in getattr(layer, "layers", []) or []:
            walk(sub)
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense"):
            return
        out = layer.output_shape
        out = out[0] if isinstance(out, list) else out
        spatial = int(np.prod([d for d in out[1:-1]], dtype=np.int64))
        kh_kw = int(np.prod(getattr(layer, "kernel_size", (1,)), dtype=np.int64))
        in_shape = layer.input_shape[0] if isinstance(layer.input_shape, list) else layer.input_shape
        c_in = int(in_shape[-1])
        before = macs
        if kind == "Conv2D":
            macs += spatial * int(out[-1]) * kh_kw * (c_in // getattr(layer, "groups", 1))
        elif kind == "DepthwiseConv2D":
            macs += spatial * int(out[-1]) * kh_kw
        elif kind == "SeparableConv2D":
            mid = c_in * layer.depth_multiplier
            macs += spatial * mid * kh_kw + spatial * mid * int(out[-1])
        else:  # Dense applies to the last axis; leading axes multiply
            macs += max(spatial, 1) * c_in * int(out[-1])
        counted += 1
        per_layer[layer.name] = (macs - before) * batch

    walk(model)
    return {"macs": macs * batch, "nodes": counted, "unknown": 0, "per_layer": per_layer}


# --- the sweep ---------------------------------------------------------------------------------
def cuda_unavailable_reason() -> str | None:
    """Why there is no CUDA device, cheaply (no framework import); None when one may be present."""
    if os.environ.get("SKINSCAN_FORCE_NO_CUDA"):
        return "no CUDA device: SKINSCAN_FORCE_NO_CUDA is set"
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists():
        return None
    return "no CUDA device: no NVIDIA driver on this host (/dev/nvidia0 is missing)"


def resolve_target(name: str) -> str:
    """``auto`` -> this host's ONNX int8 target (formats.choose_target); a target name -> itself;
    else an error naming the valid ones."""
    if name == "auto":
        info = host_info()
        return choose_target(info["machine"], [f for f, on in info["cpu_flags"].items() if on])
    return check_onnx_target(name)

"""``skinscan-edge benchmark``: one harness for the Keras baseline and every export.

Each (model, device, threads) row is measured in a fresh process (``python -m
skinscan_edge.benchmark --worker SPEC``) so peak memory is the model's own and one model's
thread pools and caches don't warm the next. Every row sees the same seeded sample of the
run's test images. Rows are flat dicts with units in the keys; a failed model records
``error``, an impossible one ``skipped`` with the reason, and the sweep goes on. The host, the
measured GEMM floor and the MAC count sit beside the rows in ``RUN/reports/benchmark.json``,
from which ``benchmark.md``, ``benchmark.csv`` and ``benchmark.png`` are rendered.

>>> # results = run_benchmark("runs/demo", BenchmarkConfig(threads=(2,), batches=(1, 8)))
>>> # [(r["model"], r["latency_p50_ms"], r["x_floor"]) for r in results["rows"]]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import SkinscanError
from .hostinfo import (INT8_PRECISIONS, count_macs_keras, count_macs_onnx, floor_ms, host_info, host_line,
                       measure_floor)
from .rundir import RunDir, read_json, sha256_file

DEVICES = ("auto", "cpu", "gpu", "all")
ANDROID_GPU = ("TFLite's GPU delegate is for Android (OpenCL / OpenGL ES); it has no desktop "
               "CUDA path, so no desktop GPU number is reported")
#: The GEMM each worker re-measures after its timed runs (the run-level floor uses hostinfo's default).
WORKER_FLOOR = {"n": 1024, "min_time_s": 0.3}
#: Batch-1 latency and load metrics every measured row carries (throughput keys depend on --batch).
ROW_METRICS = ("size_mb", "load_ms", "first_inference_ms", "latency_p50_ms", "latency_p90_ms",
               "latency_p99_ms", "latency_mean_ms", "latency_std_ms", "peak_rss_mb")


@dataclass
class BenchmarkConfig:
    """How to benchmark a run.

    Attributes:
      device: ``auto`` (``all`` where an NVIDIA driver is present, else ``cpu``), ``cpu``, ``gpu``
        or ``all``. GPU rows run ONNX on onnxruntime's CUDA (TensorRT
        where present) provider and Keras on TensorFlow's GPU; without a CUDA device they are
        recorded as skipped with the reason.
      threads: intra-op thread counts; every CPU model is measured at each.
      batches: batch sizes for throughput (images/s). Latency percentiles are at batch 1.
      warmup: untimed batch-1 runs after the first inference.
      min_time_s, min_runs: timed batch-1 runs continue until both are reached.
      min_batch_runs: timed runs per throughput batch (also at least ``min_time_s``).
      images: size of the fixed, seeded sample of the test split (tiled for bigger batches).
      seed: chooses that sample.
      models: names to run (``keras`` and manifest names); None runs the baseline and every export.
      floor: measure the GEMM floor in the same run (before and after the models; best kept).
      worker_timeout_s: a model taking longer is recorded as an error.
    """

    device: str = "auto"
    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 8, 32)
    warmup: int = 5
    min_time_s: float = 2.0
    min_runs: int = 10
    min_batch_runs: int = 3
    images: int = 32
    seed: int = 0
    models: tuple[str, ...] | None = None
    floor: bool = True
    worker_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        from .errors import did_you_mean

        if self.device not in DEVICES:
            raise SkinscanError(did_you_mean(self.device, list(DEVICES)).replace("unknown name", "unknown --device"))
        self.threads, self.batches = tuple(self.threads), tuple(self.batches)
        for flag, values in (("--threads", self.threads), ("--batch", self.batches)):
            if not values or any(int(v) < 1 for v in values):
                raise SkinscanError(f"{flag} needs positive integers, got {values}")
        if self.warmup < 0 or self.min_time_s < 0 or self.min_runs < 1 or self.images < 1:
            raise SkinscanError("--warmup and --min-time must be >= 0, --min-runs and --images >= 1")

    def devices(self) -> list[str]:
        if self.device == "auto":
            return ["cpu"] if cuda_unavailable_reason() else ["cpu", "gpu"]
        return ["cpu", "gpu"] if self.device == "all" else [self.device]


# --- the harness -----------------------------------------------------------------------------
def latency_stats(times_ms) -> dict:
    """p50 / p90 / p99 (linear interpolation), mean and population std of per-call times in ms."""
    t = np.asarray(times_ms, dtype=np.float64)
    if t.size == 0:
        raise ValueError("no timed runs")
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"latency_p50_ms": float(p50), "latency_p90_ms": float(p90), "latency_p99_ms": float(p99),
            "latency_mean_ms": float(t.mean()), "latency_std_ms": float(t.std()), "latency_runs": int(t.size)}


def time_calls(fn: Callable[[], object], min_time_s: float, min_runs: int,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Call ``fn`` until at least ``min_runs`` calls and ``min_time_s`` seconds; per-call seconds."""
    times: list[float] = []
    total = 0.0
    while len(times) < min_runs or total < min_time_s:
        t0 = clock()
        fn()
        dt = clock() - t0
        times.append(dt)
        total += dt
    return times


def batch_of(images: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` images of the sample, tiled when the sample is smaller."""
    return images[np.arange(n) % len(images)]


def measure_runtime(rt, images: np.ndarray, cfg: BenchmarkConfig,
                    clock: Callable[[], float] = time.perf_counter) -> dict:
    """First inference, warm-up, batch-1 latency statistics and throughput at each batch size."""
    x1 = batch_of(images, 1)
    t0 = clock()
    rt.predict(x1)
    out = {"first_inference_ms": (clock() - t0) * 1e3}
    for _ in range(cfg.warmup):
        rt.predict(x1)
    lat = time_calls(lambda: rt.predict(x1), cfg.min_time_s, cfg.min_runs, clock)
    out.update(latency_stats([t * 1e3 for t in lat]))
    for b in cfg.batches:
        if b == 1:
            times = lat
        else:
            xb = batch_of(images, b)
            rt.predict(xb)  # resize / re-plan for the new shape, untimed
            times = time_calls(lambda: rt.predict(xb), cfg.min_time_s, cfg.min_batch_runs, clock)
        out[f"throughput_b{b}_ips"] = b * len(times) / sum(times)
    return out


# --- one row, in its own process -----------------------------------------------------------
def sample_images(run: RunDir, count: int, seed: int) -> np.ndarray:
    """A fixed, seeded sample of the run's test split at the run's image size (uint8 NHWC)."""
    from .imageio import load_batch

    items = run.split_items("test")
    if not items:
        raise SkinscanError(f"the test split of {run.root} is empty; benchmark needs test images")
    idx = np.random.default_rng(seed).permutation(len(items))[:count]
    return load_batch([items[i][0] for i in sorted(idx)], run.img_size())


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """This process's own high-water mark. On Linux, read VmHWM: ``ru_maxrss`` survives exec, so
    a worker started by a large parent (``pipeline`` after training) would report the parent's
    peak; psutil does not expose the high-water mark."""
    import resource

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _open(run: RunDir, entry: dict | None, spec: dict):
    """Open the row's runtime, or return the reason it must be skipped (a str)."""
    from .runtimes import KerasRuntime, OnnxRuntime, open_runtime

    device, threads = spec["device"], spec["threads"]
    if entry is None:
        from ._tf import tf

        tfm = tf()
        tfm.config.threading.set_intra_op_parallelism_threads(threads)
        tfm.config.threading.set_inter_op_parallelism_threads(1)
        if device == "gpu" and not tfm.config.list_physical_devices("GPU"):
            return "no CUDA device: TensorFlow sees no GPU"
        return KerasRuntime(run.load_model(), name="keras", device="/GPU:0" if device == "gpu" else "/CPU:0")
    if device == "gpu" and entry["format"] == "onnx":
        import onnxruntime as ort

        from .export.manifest import verify_entry

        have = ort.get_available_providers()
        if "CUDAExecutionProvider" not in have:
            return ("no CUDA device: onnxruntime has no CUDAExecutionProvider "
                    "(install the [gpu] extra, onnxruntime-gpu, on a CUDA host)")
        providers = ["CUDAExecutionProvider"]
        if "TensorrtExecutionProvider" in have:
            providers.insert(0, "TensorrtExecutionProvider")
        rt = OnnxRuntime(verify_entry(run, entry), num_threads=threads, name=entry["name"], providers=providers)
        if rt.session.get_providers()[0] not in providers:
            return f"no CUDA device: the CUDA provider did not initialise (session runs on {rt.accelerator})"
        return rt
    return open_runtime(run, entry, num_threads=threads, device=device)


def _tflite_delegation(interp) -> dict:
    """How much of the graph XNNPACK took: walk back from each DELEGATE node's outputs."""
    ops = interp._get_ops_details()  # the only public-ish view of the node list
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {int(t): o for o in ops if o["op_name"] != "DELEGATE" for t in o["outputs"]}
    taken: set[int] = set()
    for d in delegates:
        stop = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        while todo:
            op = producer.get(todo.pop())
            if op is None or op["index"] in taken:
                continue
            taken.add(op["index"])
            todo.extend(int(t) for t in op["inputs"] if t >= 0 and int(t) not in stop)
    real = [o for o in ops if o["op_name"] != "DELEGATE"]
    left = sorted({o["op_name"] for o in real if o["index"] not in taken})
    heavy = [o for o in real if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    return {"accelerated": bool(heavy) and all(o["index"] in taken for o in heavy),
            "accelerator_detail": f"XNNPACK took {len(taken)}/{len(real)} ops in {len(delegates)} "
                                  f"partition(s)" + (f"; left to builtin kernels: {', '.join(left)}" if left else "")}


_ORT_INT8 = {"QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat",
             "DynamicQuantizeMatMul", "QGemm"}
_ORT_FLOAT = {"Conv", "FusedConv", "NhwcFusedConv", "MatMul", "FusedMatMul", "Gemm"}


def _onnx_kernels(path: Path, precision: str) -> dict:
    """Which conv/matmul kernels onnxruntime's optimized CPU graph really uses (int8 vs float)."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
    kinds = [n.op_type for n in graph.node]
    n_int8 = sum(k in _ORT_INT8 for k in kinds)
    n_float = sum(k in _ORT_FLOAT for k in kinds)
    quantized = precision in ("int8", "qat-int8", "dynamic")
    return {"accelerated": (n_float == 0 and n_int8 > 0) if quantized else n_float > 0,
            "accelerator_detail": f"CPUExecutionProvider (MLAS); optimized graph: {n_int8} int8 "
                                  f"conv/matmul, {n_float} float conv/matmul, "
                                  f"{kinds.count('Transpose')} Transpose, "
                                  f"{kinds.count('DequantizeLinear')} DequantizeLinear"}


def _accelerator(rt, entry: dict | None, device: str, path: Path | None) -> dict:
    if entry is None:
        return {"accelerated": device == "gpu" or None,
                "accelerator_detail": "TensorFlow does not report which kernels ran (oneDNN is on by default on x86)"}
    if entry["format"] == "tflite":
        return _tflite_delegation(rt.interp)
    if device == "gpu":
        providers = rt.session.get_providers()
        return {"accelerated": providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider"),
                "accelerator_detail": f"session providers: {', '.join(providers)}"}
    return _onnx_kernels(path, entry["precision"])


def run_worker(spec: dict) -> dict:
    """Measure one (model, device, threads) row; called in a fresh process by :func:`run_benchmark`."""
    run = RunDir.open(spec["run"], require_model=spec["entry"] is None)
    entry = spec["entry"]
    cfg = BenchmarkConfig(**spec["config"])
    images = sample_images(run, cfg.images, cfg.seed)
    # Import the runtime library first, so base_rss_mb is the process before the model.
    if entry is None:
        from ._tf import tf

        tf()
    elif entry["format"] == "onnx":
        import onnxruntime  # noqa: F401
    else:
        import ai_edge_litert.interpreter  # noqa: F401
    base = _rss_mb()
    t0 = time.perf_counter()
    rt = _open(run, entry, spec)
    if isinstance(rt, str):
        return {"skipped": rt}
    load_ms = (time.perf_counter() - t0) * 1e3
    path = run.model_path if entry is None else run.exports / entry["file"]
    row = {"size_mb": path.stat().st_size / 1e6, "load_ms": load_ms, "base_rss_mb": base}
    row.update(measure_runtime(rt, images, cfg))
    row["peak_rss_mb"] = _peak_rss_mb()  # before anything below allocates
    if spec["device"] == "cpu" and spec.get("floor_kinds"):
        # The floor again, in this process, right after the timed runs: on a shared host the
        # model and its floor then see the same contention, so x_floor compares like with like.
        f = measure_floor(spec["threads"], kinds=tuple(spec["floor_kinds"]), **spec["floor_args"])
        row["floor_fp32_gflops"] = f.get("fp32_gflops")
        row["floor_int8_gops"] = f.get("int8_gops")
    row["accelerator"] = rt.accelerator
    row.update(_accelerator(rt, entry, spec["device"], path))
    if entry is None:
        row["gmacs"] = count_macs_keras(rt.model)["macs"] / 1e9
    elif entry["format"] == "onnx":
        row["gmacs"] = count_macs_onnx(path)["macs"] / 1e9
    return row


def _worker_main(spec_json: str) -> int:
    # Keep stdout for the one JSON line: libraries print to fd 1 too.
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        result = run_worker(json.loads(spec_json))
    except SkinscanError as e:
        result = {"error": str(e)}
    except Exception as e:  # the parent records it and the sweep goes on
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}
    with os.fdopen(real_stdout, "w") as out:
        out.write(json.dumps(result, default=float) + "\n")
    return 0


def _spawn(spec: dict, timeout_s: float) -> dict:
    cmd = [sys.executable, "-m", "skinscan_edge.benchmark", "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s (raise worker_timeout_s or lower --min-time)"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"worker exited with code {proc.returncode}: {tail[-500:]}"}
    return json.loads(lines[-1])


# --- the sweep ---------------------------------------------------------------------------------
def cuda_unavailable_reason() -> str | None:
    """Why there is no CUDA device, cheaply (no framework import); None when one may be present."""
    if os.environ.get("SKINSCAN_FORCE_NO_CUDA"):
        return "no CUDA device: SKINSCAN_FORCE_NO_CUDA is set"
    if Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists():
        return None
    return "no CUDA device: no NVIDIA driver on this host (/dev/nvidia0 is missing)"


def _plan(run: RunDir, cfg: BenchmarkConfig) -> list[dict | None]:
    from .export.manifest import entries

    exports = entries(run) if run.manifest_path.exists() else []
    known = {"keras": None, **{e["name"]: e for e in exports}}
    if not cfg.models:
        return list(known.values())
    from .errors import did_you_mean

    missing = [m for m in cfg.models if m not in known]
    if missing:
        raise SkinscanError(did_you_mean(missing[0], list(known)).replace("unknown name", "unknown model"))
    return [known[m] for m in cfg.models]


def _describe(run: RunDir, entry: dict | None, device: str, threads: int) -> dict:
    if entry is None:
        return {"model": "keras", "format": "keras", "precision": "fp32", "file": run.model_path.name,
                "device": device, "threads": threads}
    return {"model": entry["name"], "format": entry["format"], "precision": entry["precision"],
            "file": f"exports/{entry['file']}", "device": device, "threads": threads}


def _floor_kinds(floor: dict | None, entry: dict | None) -> list[str]:
    """The GEMMs a worker re-measures: fp32, plus the faster int8 kind for an int8 model."""
    if not floor:
        return []
    if entry is None or entry["precision"] not in INT8_PRECISIONS:
        return ["fp32"]
    return ["fp32", "s8s8" if (floor.get("s8s8_gops") or 0) > (floor.get("u8s8_gops") or 0) else "u8s8"]


def _merge_floor(a: dict, b: dict) -> dict:
    """Best of two floor measurements per key: a GEMM peak can only be under-measured."""
    out = dict(a)
    for k, v in b.items():
        if k.endswith(("_gflops", "_gops")) and v is not None:
            out[k] = max(v, a.get(k) or 0.0)
    return out


def run_benchmark(run_dir: str | Path, cfg: BenchmarkConfig,
                  progress: Callable[[dict], None] | None = None) -> dict:
    """Benchmark the baseline and every export of ``run_dir``; write and return the report JSON."""
    run = RunDir.open(run_dir)
    plan = _plan(run, cfg)
    cpu_threads = sorted(set(cfg.threads))
    floors = {t: measure_floor(t) for t in cpu_threads} if cfg.floor and "cpu" in cfg.devices() else {}
    no_cuda = cuda_unavailable_reason() if "gpu" in cfg.devices() else None
    rows = []
    for device in cfg.devices():
        for entry in plan:
            for threads in (cpu_threads if device == "cpu" else [max(cpu_threads)]):
                row = _describe(run, entry, device, threads)
                if device == "gpu" and entry is not None and entry["format"] == "tflite":
                    row["skipped"] = ANDROID_GPU
                elif device == "gpu" and no_cuda:
                    row["skipped"] = no_cuda
                else:
                    spec = {"run": str(run.root), "entry": entry, "device": device, "threads": threads,
                            "config": {**asdict(cfg), "models": None},
                            "floor_kinds": _floor_kinds(floors.get(threads), entry), "floor_args": WORKER_FLOOR}
                    row.update(_spawn(spec, cfg.worker_timeout_s))
                rows.append(row)
                if progress:
                    progress(row)
    if floors:  # again after the models: on a shared host, keep the better reading
        floors = {t: _merge_floor(f, measure_floor(t)) for t, f in floors.items()}
    results = _assemble(run, cfg, rows, floors)
    write_results(results, run.reports)
    return results


def _assemble(run: RunDir, cfg: BenchmarkConfig, rows: list[dict], floors: dict) -> dict:
    gmacs = next((r["gmacs"] for name in ("keras", "onnx-fp32") for r in rows
                  if r["model"] == name and r.get("gmacs")), None)
    gmacs = gmacs or next((r["gmacs"] for r in rows if r.get("gmacs")), None)
    evaluation = read_evaluation(run.reports / "evaluate.json")
    for row in rows:
        row.setdefault("accuracy", evaluation["accuracy"].get(row["model"]))
        if "skipped" in row or "error" in row:
            continue
        row["size_mb"] = round(row["size_mb"], 3)
        floor = floors.get(row["threads"]) if row["device"] == "cpu" else None
        if floor and row.get("floor_fp32_gflops"):  # prefer the worker's own, same-moment floor
            floor = {"fp32_gflops": row["floor_fp32_gflops"], "int8_gops": row.get("floor_int8_gops")}
        row["floor_ms"] = floor_ms((row.get("gmacs") or gmacs or 0) * 1e9, row["precision"], floor)
        row["x_floor"] = row["latency_p50_ms"] / row["floor_ms"] if row["floor_ms"] else None
        if row["device"] != "cpu":
            row["floor_note"] = "the floor is the CPU GEMM peak; no GPU floor is measured"
    info = host_info()
    return {
        "schema": 1, "run": str(run.root), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "img_size": run.img_size(), "config": asdict(cfg), "host": info,
        "manifest_sha256": sha256_file(run.manifest_path) if run.manifest_path.exists() else None, "host_line": host_line(info),
        "floor": {str(t): f for t, f in floors.items()}, "model_gmacs": gmacs,
        "gate_passed": evaluation["gate_passed"], "evaluate_json": evaluation["source"],
        "notes": [f"tflite on gpu: {ANDROID_GPU}"] if "gpu" in cfg.devices() else [], "rows": rows,
    }


def read_evaluation(path: Path) -> dict:
    """Accuracy per model name from evaluate.json, read defensively (missing or odd: empty)."""
    out = {"accuracy": {}, "gate_passed": None, "source": None}
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return out
    models = data.get("models") if isinstance(data, dict) else None
    if isinstance(models, dict):  # {"keras": {...}} form
        models = [{"name": k, **v} for k, v in models.items() if isinstance(v, dict)]
    for m in models if isinstance(models, list) else []:
        acc = m.get("accuracy") if isinstance(m, dict) else None
        if isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(acc, (int, float)):
            out["accuracy"][m["name"]] = float(acc)
    gate = data.get("gate") if isinstance(data, dict) else None
    out["gate_passed"] = gate.get("passed") if isinstance(gate, dict) else None
    out["source"] = str(path)
    return out


def write_results(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write benchmark.json, then render benchmark.md, .csv and .png from what was written."""
    from .rundir import atomic_write_text, write_json

    out_dir = Path(out_dir)
    paths = {k: out_dir / f"benchmark.{k}" for k in ("json", "md", "csv", "png")}
    write_json(paths["json"], results)
    results = read_json(paths["json"])  # render from the one source, exactly as stored
    atomic_write_text(paths["md"], render_markdown(results))
    atomic_write_text(paths["csv"], render_csv(results))
    plot_latency(results, paths["png"])
    return paths


# --- rendering (from the JSON only) -------------------------------------------------------------
def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if digits < 0:  # adaptive: 2 decimals under 10, 1 under 1000, none above
            digits = 2 if abs(v) < 10 else 1 if abs(v) < 1000 else 0
        return f"{v:,.{digits}f}"
    return str(v)


def _status(row: dict) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return f"error: {row['error']}"
    return row.get("accelerator_detail") or row.get("accelerator") or ""


def render_markdown(results: dict) -> str:
    """benchmark.md: host, floor, one table of every row (skips and errors say why), notes."""
    cfg, rows = results["config"], results["rows"]
    batches = cfg["batches"]
    gm = results.get("model_gmacs")
    lines = [f"# Benchmark: {results['run']}", "",
             f"- Host: {results['host_line']}",
             f"- Input {results['img_size']} px; {cfg['images']} test images (seed {cfg['seed']}); "
             f"{cfg['warmup']} warm-up runs; each measurement >= {cfg['min_time_s']} s and "
             f">= {cfg['min_runs']} runs (batch 1), >= {cfg['min_batch_runs']} runs (other batches)",
             f"- Model: {_fmt(gm, 2)} GMACs per image (conv + dense), {results['created']}", ""]
    if results.get("floor"):
        lines += ["## Floor (onnxruntime GEMM, measured in this run)", "",
                  "| threads | fp32 GFLOP/s | u8s8 GOP/s | s8s8 GOP/s | fp32 floor ms | int8 floor ms |",
                  "|---|---|---|---|---|---|"]
        for t, f in results["floor"].items():
            lines.append(f"| {t} | {_fmt(f.get('fp32_gflops'))} | {_fmt(f.get('u8s8_gops'))} | "
                         f"{_fmt(f.get('s8s8_gops'))} | {_fmt(floor_ms((gm or 0) * 1e9, 'fp32', f), -1)} | "
                         f"{_fmt(floor_ms((gm or 0) * 1e9, 'int8', f), -1)} |")
        lines.append("")
    head = (["model", "precision", "device", "threads", "size MB", "load ms", "first ms", "p50 ms",
             "p90 ms", "p99 ms", "mean ± std ms"] + [f"b{b} img/s" for b in batches]
            + ["peak RSS MB", "floor ms", "x floor", "accuracy", "accelerated", "kernels / status"])
    lines += ["## Results (latency at batch 1)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ok = "skipped" not in r and "error" not in r
        mean = f"{_fmt(r.get('latency_mean_ms'), -1)} ± {_fmt(r.get('latency_std_ms'), -1)}" if ok else "–"
        cells = ([r["model"], r["precision"], r["device"], r["threads"], _fmt(r.get("size_mb"), 2),
                  _fmt(r.get("load_ms"), 0), _fmt(r.get("first_inference_ms"), -1),
                  _fmt(r.get("latency_p50_ms"), -1), _fmt(r.get("latency_p90_ms"), -1),
                  _fmt(r.get("latency_p99_ms"), -1), mean]
                 + [_fmt(r.get(f"throughput_b{b}_ips"), -1) for b in batches]
                 + [_fmt(r.get("peak_rss_mb"), 0), _fmt(r.get("floor_ms"), -1), _fmt(r.get("x_floor"), 2),
                    _fmt(r.get("accuracy"), 3), _fmt(r.get("accelerated")), _status(r).replace("|", "/")])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "## Against the floor (batch 1, most threads)", ""] + _target_lines(results)
    lines += ["", "## Notes", ""] + [f"- {n}" for n in results.get("notes", [])]
    lines += [f"- Parity gate (evaluate.json): {_fmt(results.get('gate_passed'))}",
              "- floor ms = 2 x MACs / GEMM peak (int8 peak for int8, QAT and dynamic models), the peak "
              "re-measured in each model's own process right after its timed runs (the table above is "
              "the host's best before and after the sweep); x floor = p50 / floor ms. peak RSS is the worker process's high-water mark "
              "(runtime library + model + buffers)."]
    return "\n".join(lines) + "\n"


#: The performance target: fastest int8 export within 2.5x its int8 floor, fp32 within 1.2x.
TARGETS = {"int8": 2.5, "fp32": 1.2}


def _target_lines(results: dict) -> list[str]:
    threads = max(results["config"]["threads"])
    lines = []
    for kind, target in TARGETS.items():
        precisions = ("int8", "qat-int8") if kind == "int8" else ("fp32",)
        rows = [r for r in results["rows"] if r.get("x_floor") and r["device"] == "cpu"
                and r["threads"] == threads and r["precision"] in precisions and r["format"] != "keras"]
        if not rows:
            lines.append(f"- {kind}: no measured {kind} export at {threads} threads")
            continue
        best = min(rows, key=lambda r: r["latency_p50_ms"])
        verdict = "meets" if best["x_floor"] <= target else "misses"
        lines.append(f"- fastest {kind} export: {best['model']}, p50 {best['latency_p50_ms']:.1f} ms = "
                     f"{best['x_floor']:.2f} x its floor ({best['floor_ms']:.1f} ms); {verdict} the "
                     f"{target} x target")
    return lines


def render_csv(results: dict) -> str:
    import csv
    import io

    keys: list[str] = []
    for r in results["rows"]:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(results["rows"])
    return buf.getvalue()


def plot_latency(results: dict, path: Path) -> Path:
    """Batch-1 p50 latency against accuracy (or, with no evaluate.json, against the floor)."""
    from .plots import _plt

    plt = _plt()
    threads = max(results["config"]["threads"])
    rows = [r for r in results["rows"] if r.get("latency_p50_ms") and r["device"] == "cpu"
            and r["threads"] == threads] or [r for r in results["rows"] if r.get("latency_p50_ms")]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    if any(r.get("accuracy") is not None for r in rows):
        for r in rows:
            if r.get("accuracy") is not None:
                ax.scatter(r["latency_p50_ms"], r["accuracy"], s=30)
                ax.annotate(r["model"], (r["latency_p50_ms"], r["accuracy"]), fontsize=8,
                            xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(f"p50 latency, batch 1, {threads} threads (ms)")
        ax.set_ylabel("test accuracy (evaluate.json)")
    else:
        names = [r["model"] for r in rows]
        ax.barh(names, [r["latency_p50_ms"] for r in rows], color="tab:blue", label="p50 latency")
        floors = [r.get("floor_ms") or 0 for r in rows]
        ax.scatter(floors, names, marker="|", s=200, color="black", label="floor (GEMM peak)", zorder=3)
        ax.set_xlabel(f"ms, batch 1, {threads} threads (no evaluate.json: accuracy not shown)")
        ax.legend(fontsize=8)
    ax.set_title(results.get("host_line", "")[:90], fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return Path(path)


if __name__ == "__main__":  # python -m skinscan_edge.benchmark --worker SPEC_JSON
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2]))
    sys.exit("usage: python -m skinscan_edge.benchmark --worker SPEC_JSON (internal)")

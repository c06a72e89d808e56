"""``skinscan-edge benchmark``: one harness for the Keras baseline and every export.

Each (model, device, threads) row is measured in a fresh process (``bench_worker.py``) so peak memory is the model's own and one model's
thread pools and caches don't warm the next. Every row sees the same seeded sample of the
run's test images. Rows are flat dicts with units in the keys; a failed model records
``error``, an impossible one ``skipped`` with the reason, and the sweep goes on. The host, the
measured GEMM floor and the MAC count sit beside the rows in ``RUN/reports/benchmark.json``,
from which ``benchmark.md``, ``benchmark.csv`` and ``benchmark.png`` are rendered.

>>> # results = run_benchmark("runs/demo", BenchmarkConfig(threads=(2,), batches=(1, 8)))
>>> # [(r["model"], r["latency_p50_ms"], r["x_floor"]) for r in results["rows"]]
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path


from skinscan_edge.benchmark.adb import adb_rows, preflight
from skinscan_edge.benchmark.markdown import render_benchmark_csv, render_benchmark_markdown
from skinscan_edge.benchmark.worker import spawn
from skinscan_edge.core import runfiles
from skinscan_edge.core.config import DEVICES
from skinscan_edge.core.config_stages import BenchmarkConfig
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import atomic_write_text, read_json, sha256_file, timestamp
from skinscan_edge.core.formats import quantization
from skinscan_edge.core.host import cuda_unavailable_reason, floor_ms, host_info, host_line, measure_floor
from skinscan_edge.core.plots import plot_latency
from skinscan_edge.core.progress import Reporter, reporter_or_silent
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.runlock import holds_run_lock
from skinscan_edge.runtimes.interface import runtime_class
from skinscan_edge.runtimes.models import describe, model_entries

__all__ = ["BenchmarkConfig", "DEVICES", "run_benchmark", "write_results"]

#: The GEMM each worker re-measures after its timed runs (the run-level floor uses hostinfo's default).
WORKER_FLOOR = {"n": 1024, "min_time_s": 0.3}












def _floor_kinds(floor: dict | None, entry: dict) -> list[str]:
    """The GEMMs a worker re-measures: fp32, plus the faster int8 kind for an int8 model."""
    if not floor:
        return []
    if quantization(entry["precision"]).floor != "int8":
        return ["fp32"]
    return ["fp32", "s8s8" if (floor.get("s8s8_gops") or 0) > (floor.get("u8s8_gops") or 0) else "u8s8"]


def _merge_floor(a: dict, b: dict) -> dict:
    """Best of two floor measurements per key: a GEMM peak can only be under-measured."""
    out = dict(a)
    for k, v in b.items():
        if k.endswith(("_gflops", "_gops")) and v is not None:
            out[k] = max(v, a.get(k) or 0.0)
    return out


@holds_run_lock("benchmark")
def _check_labels(run: RunDir) -> None:
    labels = run.labels()  # missing, not UTF-8 or malformed: one line
    trained = run.config().get("labels")
    if trained is not None and len(trained) != len(labels):  # the model's outputs; renaming a class is fine
        raise SkinscanError(f"{run.labels_path} lists {len(labels)} classes but the model was trained on "
                            f"{len(trained)} ({', '.join(map(str, trained[:3]))}, ...), as config.json records; "
                            f"restore labels.txt from the run's config.json, or train again")


def run_benchmark(run_dir: str | Path, cfg: BenchmarkConfig, reporter: Reporter | None = None) -> dict:
    """Benchmark the baseline and every export of ``run_dir``; write and return the report JSON.

    >>> # results = run_benchmark("runs/demo", BenchmarkConfig(threads=(2,), batches=(1, 8)))
    """
    say = reporter_or_silent(reporter)
    run = RunDir.open(run_dir)
    _check_labels(run)  # as evaluate and predict do: a run whose labels.txt is gone or changed is refused
    plan = model_entries(run, list(cfg.models) if cfg.models else None)
    if cfg.adb:  # a missing phone or binary fails before the desktop sweep, not after it

        preflight(cfg.adb, cfg.benchmark_model)
    cpu_threads = sorted(set(cfg.threads))
    floors = {t: measure_floor(t) for t in cpu_threads} if cfg.floor and "cpu" in cfg.devices() else {}
    no_cuda = cuda_unavailable_reason() if "gpu" in cfg.devices() else None
    rows = []
    for device in cfg.devices():
        for entry in plan:
            for threads in (cpu_threads if device == "cpu" else [max(cpu_threads)]):
                about = describe(run, entry)
                row = {"model": entry["name"], "format": about["format"], "precision": about["precision"],
                       "file": about["file"], "device": device, "threads": threads}
                skip = (runtime_class(entry["format"]).no_gpu_reason or no_cuda) if device == "gpu" else None
                if skip:
                    row["skipped"] = skip
                else:
                    spec = {"run": str(run.root), "entry": entry, "device": device, "threads": threads,
                            "config": {**asdict(cfg), "models": None},
                            "floor_kinds": _floor_kinds(floors.get(threads), entry), "floor_args": WORKER_FLOOR}
                    row.update(spawn(spec, cfg.worker_timeout_s))
                rows.append(row)
                say.row("benchmark", row)
    if cfg.adb:  # the phone's rows, from its own benchmark_model (adb_bench.py)

        rows += adb_rows(run, plan, cfg.adb, cfg.benchmark_model, reporter=say)
    if floors:  # again after the models: on a shared host, keep the better reading
        floors = {t: _merge_floor(f, measure_floor(t)) for t, f in floors.items()}
    results = _assemble(run, cfg, rows, floors)
    write_results(results, run.reports)
    return results


def _assemble(run: RunDir, cfg: BenchmarkConfig, rows: list[dict], floors: dict) -> dict:
    gmacs = next((r["gmacs"] for name in ("keras", "onnx-fp32") for r in rows
                  if r["model"] == name and r.get("gmacs")), None)
    gmacs = gmacs or next((r["gmacs"] for r in rows if r.get("gmacs")), None)
    evaluation = read_evaluation(run.evaluate_path)
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
        if row["device"] == "gpu":
            row["floor_note"] = "the floor is the CPU GEMM peak; no GPU floor is measured"
    info = host_info()
    return {
        "run": str(run.root), "created": timestamp(),
        "img_size": run.img_size(), "config": asdict(cfg), "host": info,
        "manifest_sha256": sha256_file(run.manifest_path) if run.manifest_path.exists() else None, "host_line": host_line(info),
        "floor": {str(t): f for t, f in floors.items()}, "model_gmacs": gmacs,
        "gate_passed": evaluation["gate_passed"], "evaluate_json": evaluation["source"],
        "notes": [f"{f} on gpu: {c.no_gpu_reason}" for f, c in _formats_without_gpu(rows)] if "gpu" in cfg.devices() else [],
        "rows": rows,
    }


def _formats_without_gpu(rows: list[dict]):
    """(format, runtime class) of each format in the rows that never runs on a desktop GPU."""
    formats = dict.fromkeys(r["format"] for r in rows)
    return [(f, runtime_class(f)) for f in formats if runtime_class(f).no_gpu_reason]


def read_evaluation(path: Path) -> dict:
    """Accuracy per model name and the gate's verdict from evaluate.json (missing or odd: empty)."""
    out = {"accuracy": {}, "gate_passed": None, "source": None}

    data = runfiles.read_or_none(runfiles.EvaluateReport, path)
    if data is None:
        return out
    for m in data.get("models") or []:
        if isinstance(m, dict) and isinstance(m.get("name"), str) and isinstance(m.get("accuracy"), (int, float)):
            out["accuracy"][m.get("name")] = float(m["accuracy"])
    gate = data.get("gate")
    out["gate_passed"] = gate.get("passed") if isinstance(gate, dict) else None
    out["source"] = str(path)
    return out


def write_results(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write benchmark.json (``runfiles.BenchmarkReport``), then render benchmark.md, .csv and .png
    from what was written."""
    out_dir = Path(out_dir)
    json_path = out_dir / Path(runfiles.BenchmarkReport.FILE).name
    paths = {"json": json_path, **{k: json_path.with_suffix(f".{k}") for k in ("md", "csv", "png")}}
    runfiles.save(runfiles.BenchmarkReport, json_path, results)
    results = read_json(json_path)  # render from the one source, exactly as stored
    atomic_write_text(paths["md"], render_benchmark_markdown(results))
    atomic_write_text(paths["csv"], render_benchmark_csv(results))
    plot_latency(results, paths["png"])
    return paths

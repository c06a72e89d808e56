"""``skinscan-edge pipeline``: images in, a report and shippable files out, resumable."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional

import typer

from . import options, stderr_console, user_errors
from .train import TRAIN_FIELDS


@user_errors
def command(
    data: Path = options.DATA,
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<name of --data>). Re-running with the same --out skips the stages that are finished and valid."),
    img_size: int = options.IMG_SIZE,
    epochs: int = options.EPOCHS,
    fine_tune_epochs: int = options.FINE_TUNE_EPOCHS,
    batch_size: int = options.BATCH_SIZE,
    weights: str = options.WEIGHTS,
    learning_rate: float = options.LR,
    fine_tune_lr: float = options.FINE_TUNE_LR,
    unfreeze_from: str = options.UNFREEZE_FROM,
    labels: Optional[Path] = options.LABELS,
    seed: int = options.SEED,
    class_weights: bool = options.CLASS_WEIGHTS,
    augment: bool = options.AUGMENT,
    strategy: str = options.STRATEGY,
    cpu_replicas: int = options.CPU_REPLICAS,
    mixed_precision: Optional[bool] = options.MIXED_PRECISION,
    qat: bool = typer.Option(True, "--qat/--no-qat", help="Include the quantization-aware-training export (the slowest one)."),
    calib_samples: int = options.CALIB_SAMPLES,
    qat_epochs: int = options.QAT_EPOCHS,
    android: bool = typer.Option(False, "--android", help="Also fill the Android bundle (int8 .tflite with metadata, labels, guide)."),
    android_dir: Path = options.ANDROID_DIR,
    critical_class: Optional[List[str]] = options.CRITICAL_CLASS,
    max_accuracy_drop: float = options.MAX_ACCURACY_DROP,
    max_recall_drop: float = options.MAX_RECALL_DROP,
    min_agreement: Optional[float] = options.MIN_AGREEMENT,
    device: str = typer.Option("auto", "--device", help="Benchmark on auto (cpu, plus gpu where an NVIDIA driver is present), cpu, gpu or all (GPU rows are skipped, with the reason, without a CUDA device)."),
    bench_threads: str = typer.Option("1,2", "--bench-threads", help="Benchmark intra-op thread counts, comma-separated."),
    bench_batch: str = typer.Option("1,8", "--bench-batch", help="Benchmark batch sizes for throughput, comma-separated."),
    bench_min_time: float = typer.Option(1.0, "--bench-min-time", help="Seconds each benchmark measurement runs for, at least."),
) -> None:
    """Train, export (every precision), evaluate, benchmark and write RUN/reports/index.html.

    Each stage's settings and input hashes are kept in RUN/pipeline.json; running the same command again skips the stages that are finished and valid, resumes an interrupted training, and redoes what changed. Exit codes: 0 done and the gate passed; 1 done, but an export failed, the gate failed or a benchmark row failed; 2 a problem with the input; 130 interrupted.
    """
    from ..benchmark import BenchmarkConfig
    from ..evaluate import EvaluateConfig
    from ..export.run import PRECISIONS, ExportConfig
    from ..pipeline import PipelineConfig
    from . import parse_csv_ints

    if out is None:
        out = Path("runs") / data.resolve().name
    resume = False
    kw = dict(locals())
    cfg = PipelineConfig(
        train=options.train_config(**{k: kw[k] for k in TRAIN_FIELDS}),
        export=ExportConfig(precisions=[p for p in PRECISIONS if qat or p != "qat"], calib_samples=calib_samples,
                            qat_epochs=qat_epochs),
        evaluate=EvaluateConfig(critical_classes=list(critical_class or []), max_accuracy_drop_pp=max_accuracy_drop,
                                max_recall_drop_pp=max_recall_drop, min_agreement=min_agreement),
        benchmark=BenchmarkConfig(device=device, threads=tuple(parse_csv_ints(bench_threads, "--bench-threads")),
                                  batches=tuple(parse_csv_ints(bench_batch, "--bench-batch")),
                                  min_time_s=bench_min_time),
        android_dir=str(android_dir) if android else None,
    )
    state = _run_with_display(cfg)
    report = Path(cfg.train.out) / "reports" / "index.html"
    typer.echo(f"report: {report}")
    if not state["ok"]:
        raise typer.Exit(1)


def _run_with_display(cfg) -> dict:
    from rich.table import Table

    from ..pipeline import STAGES, run_pipeline
    from .benchmark import row_printer
    from .evaluate import batch_progress, print_table

    console = stderr_console()
    bars = contextlib.ExitStack()

    def stage_start(name: str, index: int) -> None:
        console.rule(f"[bold]stage {index}/{len(STAGES)}: {name}")

    def evaluate_progress(name: str, done: int, total: int) -> None:
        if not hasattr(evaluate_progress, "bar"):
            evaluate_progress.bar = bars.enter_context(batch_progress())
        evaluate_progress.bar(name, done, total)

    def stage_end(name: str, record: dict) -> None:
        bars.close()
        if hasattr(evaluate_progress, "bar"):
            del evaluate_progress.bar
        how = f"skipped ({record.get('why')})" if record["state"] == "skipped" else f"done in {record['seconds']:.0f} s"
        console.print(f"{name}: {how}: {record.get('summary', '')}", highlight=False)

    hooks = {"stage_start": stage_start, "stage_end": stage_end, "evaluate_progress": evaluate_progress,
             "evaluate_done": print_table, "benchmark_progress": row_printer(console)}
    try:
        state = run_pipeline(cfg, console=console, hooks=hooks)
    finally:
        bars.close()
    table = Table(title="pipeline")
    for col in ("stage", "state", "seconds", "result"):
        table.add_column(col)
    for name in STAGES:
        r = state["stages"].get(name, {})
        table.add_row(name, r.get("state", "-"), f"{r['seconds']:.0f}" if r.get("state") == "ran" else "-",
                      str(r.get("summary", "")))
    console.print(table)
    return state

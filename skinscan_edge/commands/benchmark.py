"""``skinscan-edge benchmark RUN``: latency, throughput, memory and floor for Keras and every export."""

from __future__ import annotations

from pathlib import Path

import typer

from . import parse_csv_ints, stderr_console, user_errors


@user_errors
def command(
    run: Path = typer.Argument(..., help="Run directory written by `skinscan-edge train` (and `export`)."),
    device: str = typer.Option("auto", help="auto (GPU rows too where an NVIDIA driver is present), cpu, gpu or all. GPU rows are skipped, with the reason, "
                                           "where there is no CUDA device."),
    threads: str = typer.Option("1,2", help="Intra-op thread counts, comma-separated."),
    batch: str = typer.Option("1,8,32", help="Batch sizes for throughput, comma-separated."),
    warmup: int = typer.Option(5, help="Untimed runs before timing."),
    min_time: float = typer.Option(2.0, help="Seconds each measurement runs for, at least."),
    min_runs: int = typer.Option(10, help="Timed batch-1 runs, at least."),
    models: str = typer.Option("", help="Only these models, comma-separated (keras and manifest "
                                        "names); default: all."),
    images: int = typer.Option(32, help="Size of the seeded sample of test images."),
    floor: bool = typer.Option(True, help="Measure the GEMM floor in the same run."),
) -> None:
    """Measure the Keras baseline and every export with one harness; write RUN/reports/benchmark.*"""
    from ..benchmark import BenchmarkConfig, run_benchmark

    cfg = BenchmarkConfig(
        device=device, threads=tuple(parse_csv_ints(threads, "--threads")),
        batches=tuple(parse_csv_ints(batch, "--batch")), warmup=warmup, min_time_s=min_time,
        min_runs=min_runs, images=images, floor=floor,
        models=tuple(m.strip() for m in models.split(",") if m.strip()) or None,
    )
    results = run_benchmark(run, cfg, progress=row_printer(stderr_console()))
    reports = Path(results["run"]) / "reports"
    typer.echo(f"host: {results['host_line']}")
    typer.echo(f"wrote {reports / 'benchmark.json'} (+ .md, .csv, .png)")
    errors = [r for r in results["rows"] if "error" in r]
    if errors:
        typer.echo(f"{len(errors)} row(s) failed: " + "; ".join(f"{r['model']}: {r['error']}" for r in errors),
                   err=True)
        raise typer.Exit(1)


def row_printer(console):
    """A progress callback that prints each benchmark row as it is measured."""

    def progress(row: dict) -> None:
        what = (f"skipped: {row['skipped']}" if "skipped" in row else f"error: {row['error']}"
                if "error" in row else f"p50 {row['latency_p50_ms']:.1f} ms")
        console.print(f"{row['model']:>14} {row['device']} x{row['threads']}: {what}", highlight=False)

    return progress

"""``skinscan-edge benchmark RUN``: latency, throughput, memory and floor for Keras and every export."""

from __future__ import annotations

from pathlib import Path

import typer

from skinscan_edge.api import benchmark
from skinscan_edge.commands import options, reporter, user_errors
from skinscan_edge.core.config_stages import BenchmarkConfig


@user_errors
@options.group(BenchmarkConfig, options.BENCHMARK, "bench_opts")
def command(
    run: Path = typer.Argument(..., help="Run directory written by `skinscan-edge train` (and `export`)."),
    bench_opts: dict = None,
) -> None:
    """Measure the Keras baseline and every export with one harness; write RUN/reports/benchmark.*"""
    result = benchmark(run, BenchmarkConfig(**bench_opts), reporter=reporter())
    typer.echo(f"host: {result.results['host_line']}")
    typer.echo(f"wrote {result.json_path} (+ .md, .csv, .png)")
    if result.errors:
        typer.echo(f"{len(result.errors)} row(s) failed: " + "; ".join(f"{r['model']}: {r['error']}" for r in result.errors),
                   err=True)
        raise typer.Exit(1)

"""``skinscan-edge benchmark RUN``: latency, throughput, memory and floor for Keras and every export."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from skinscan_edge.api import benchmark
from skinscan_edge.commands import options, reporter, user_errors
from skinscan_edge.core.config_stages import BenchmarkConfig


@user_errors
@options.group(BenchmarkConfig, options.BENCHMARK, "bench_opts")
def command(
    run: Path = typer.Argument(..., help="Run directory written by `skinscan-edge train` (and `export`)."),
    models: Optional[str] = typer.Option(None, "--model", "--models", metavar="NAMES", help="Only these models, comma-separated (keras and manifest names); default: all."),
    bench_opts: dict = None,
) -> None:
    """Measure the Keras baseline and every export with one harness; write RUN/reports/benchmark.*"""
    names = options.csv_names(models)
    result = benchmark(run, BenchmarkConfig(models=tuple(names) if names else None, **bench_opts), reporter=reporter())
    typer.echo(f"host: {result.results['host_line']}")
    typer.echo(f"wrote {result.json_path} (+ .md, .csv, .png)")
    if result.errors:
        typer.echo(f"{len(result.errors)} row(s) failed: " + "; ".join(f"{r['model']}: {r['error']}" for r in result.errors),
                   err=True)
        raise typer.Exit(1)

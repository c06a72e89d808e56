"""``skinscan-edge evaluate RUN``: every export against the Keras baseline, a report and a gate."""

from __future__ import annotations

from pathlib import Path

import typer

from skinscan_edge.api import evaluate
from skinscan_edge.commands import options, reporter, user_errors
from skinscan_edge.core.config_stages import EvaluateConfig


@user_errors
@options.group(EvaluateConfig, options.EVALUATE, "eval_opts")
@options.gate_group
def command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory written by `train`, with exports from `export`."),
    eval_opts: dict = None,
    gate_opts: dict = None,
) -> None:
    """Score Keras and every export on the same split images and gate the exports.

    Writes RUN/reports/evaluate.json, evaluate.md, evaluate_predictions.npz and confusion PNGs.

    Exit codes: 0 gate passed; 1 gate failed (one line per failure); 2 a problem with the run.
    """
    result = evaluate(run, EvaluateConfig(**eval_opts, **gate_opts), reporter=reporter())
    print_table(result)
    typer.echo(f"report: {result.run / 'reports' / 'evaluate.md'}")
    for line in result.failures:
        typer.echo(f"gate failed: {line}", err=True)
    typer.echo(result.summary, err=not result.passed)
    if not result.passed:
        raise typer.Exit(1)


def print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    results, (columns, rows) = result.results, result.table
    table = Table(title=f"{results['split']} split: {results['num_images']} images "
                        f"({results['num_skipped']} skipped)")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < 3 else "right", no_wrap=i == 0,
                         min_width=max(len(r[0]) for r in rows) if i == 0 else None)
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # CI logs and pipes: the whole table, not 80 columns of ellipses
        console = Console(width=160)
    console.print(table)

    for name, _, twin_acc, twin_agree, agree, delta, drop in result.twin_rows:
        console.print(f"{name} against its float twin (quantization alone; not gated): agreement {agree}, "
                      f"Δaccuracy {delta} pp, worst recall drop {drop}; the twin agrees with Keras {twin_agree}",
                      highlight=False)

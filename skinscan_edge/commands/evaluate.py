"""``skinscan-edge evaluate RUN``: every export against the Keras baseline, a report and a gate."""

from __future__ import annotations

import contextlib

from pathlib import Path
from typing import Optional

import typer

from . import stderr_console, user_errors


@user_errors
def command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory written by `train`, with exports from `export`."),
    split: str = typer.Option("test", "--split", help="Persisted split to score: test, val or train."),
    formats: str = typer.Option(
        "", "--formats", metavar="NAMES", help="Comma-separated export names from the manifest, e.g. "
        "tflite-int8,onnx-fp32. Default: every export."),
    max_accuracy_drop: float = typer.Option(
        1.0, "--max-accuracy-drop", help="Gate: fail an export whose accuracy is more than this many "
        "percentage points below Keras."),
    max_recall_drop: float = typer.Option(
        2.0, "--max-recall-drop", help="Gate: fail an export whose recall for a class is more than this "
        "many percentage points below Keras (every class, or the --critical-class ones)."),
    critical_class: Optional[list[str]] = typer.Option(
        None, "--critical-class", metavar="CLASS", help="Apply --max-recall-drop to this class only (a name from "
        "labels.txt, e.g. Melanoma). Repeatable."),
    min_agreement: Optional[float] = typer.Option(
        None, "--min-agreement", help="Gate: fail an export whose top-1 agreement with Keras is below "
        "this share (0..1). Default: not gated."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images decoded and fed per call."),
    threads: Optional[int] = typer.Option(
        None, "--threads", help="CPU threads for TFLite and onnxruntime (default: runtime's choice)."),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="Paired-bootstrap resamples for the 95% interval of Δaccuracy."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Score Keras and every export on the same split images and gate the exports.

    Writes RUN/reports/evaluate.json, evaluate.md, evaluate_predictions.npz and confusion PNGs.

    Exit codes: 0 gate passed; 1 gate failed (one line per failure); 2 a problem with the run.
    """
    from ..evaluate import EvaluateConfig
    from ..rundir import RunDir

    config = EvaluateConfig(
        split=split, formats=[f.strip() for f in formats.split(",") if f.strip()] or None,
        batch_size=batch_size, num_threads=threads, n_bootstrap=bootstrap, seed=seed,
        max_accuracy_drop_pp=max_accuracy_drop, max_recall_drop_pp=max_recall_drop,
        critical_classes=list(critical_class or []), min_agreement=min_agreement,
    )
    run_dir = RunDir.open(run)
    from ..fingerprint import data_change

    if change := data_change(run_dir):  # still the saved split: the warning says the data moved on
        typer.echo(f"warning: {change.warning()}; evaluating the split saved at training", err=True)
    results = _evaluate_with_progress(run_dir, config)
    print_table(results)
    gate = results["gate"]
    typer.echo(f"report: {run_dir.reports / 'evaluate.md'}")
    if not gate["passed"]:
        for line in gate["failures"]:
            typer.echo(f"gate failed: {line}", err=True)
        raise typer.Exit(1)
    typer.echo(f"gate passed ({len(results['models']) - 1} exports checked)")


def _evaluate_with_progress(run_dir, config) -> dict:
    from ..evaluate import evaluate_run

    with batch_progress() as on_batch:
        return evaluate_run(run_dir, config, progress=on_batch)


@contextlib.contextmanager
def batch_progress():
    """One progress bar per model, fed by evaluate's ``progress(name, done, total)`` callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=stderr_console()) as bar:
        tasks: dict[str, int] = {}

        def on_batch(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done)

        yield on_batch


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluate import TABLE_COLUMNS, comparison_rows

    rows = comparison_rows(results)
    table = Table(title=f"{results['split']} split: {results['num_images']} images "
                        f"({results['num_skipped']} skipped)")
    for i, col in enumerate(TABLE_COLUMNS):
        table.add_column(col, justify="left" if i < 3 else "right", no_wrap=i == 0,
                         min_width=max(len(r[0]) for r in rows) if i == 0 else None)
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # CI logs and pipes: the whole table, not 80 columns of ellipses
        console = Console(width=160)
    console.print(table)

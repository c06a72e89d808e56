"""`skinscan-edge train`: fine-tune InceptionV3 on a folder of labelled images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from skinscan_edge.api import train
from skinscan_edge.commands import options, reporter, user_errors
from skinscan_edge.core.config import TrainConfig
from skinscan_edge.core.errors import SkinscanError


@user_errors
@options.train_group
def command(
    data: Path = options.DATA,
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (default runs/<timestamp>). With --resume, the run to continue."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last completed epoch (after Ctrl-C, a crash or a kill)."),
    train_opts: dict = None,
) -> None:
    """Fine-tune InceptionV3 (custom head, two phases) and write a self-describing run directory.

    Ctrl-C stops cleanly (exit 130) and says what was saved; --resume continues from the last completed epoch, after a Ctrl-C or a crash.
    """
    if out is None:
        if resume:
            raise SkinscanError("--resume needs --out RUN (the run to continue)")
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    result = train(TrainConfig(data=str(data), out=str(out), resume=resume, **train_opts), reporter=reporter())
    if not result.chief:
        typer.echo(f"{result.task}: done; the chief wrote the run")
        return
    typer.echo(result.report_text)
    duplicates = f"; {result.duplicates}" if result.duplicates else ""
    typer.echo(f"test accuracy {result.test_accuracy:.4f} on {result.n_test} images{duplicates}; "
               f"run written to {result.run}")

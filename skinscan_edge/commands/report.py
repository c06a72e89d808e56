"""``skinscan-edge report RUN``: one self-contained HTML page from everything the run holds."""

from __future__ import annotations

from pathlib import Path

import typer

from skinscan_edge.api import report
from skinscan_edge.commands import user_errors


@user_errors
def command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory written by `train` (export, evaluate and benchmark fill in the rest)."),
) -> None:
    """Render RUN/reports/index.html: which file to ship, what it costs, and the evidence.

    The page embeds its images, so it can be sent on its own. Sections whose stage has not run yet name the command that fills them in. Nothing is measured here.
    """
    typer.echo(f"report: {report(run)}")

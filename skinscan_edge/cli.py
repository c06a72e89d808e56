"""The ``skinscan-edge`` command line. Each command lives in ``skinscan_edge/commands/``."""

from __future__ import annotations

import typer

from .commands import benchmark as benchmark_cmd
from .commands import demo as demo_cmd
from .commands import evaluate as evaluate_cmd
from .commands import export as export_cmd
from .commands import train as train_cmd

app = typer.Typer(
    name="skinscan-edge",
    help="Fine-tune InceptionV3 on skin images, export it for phones (TFLite, ONNX), and "
    "prove every export against the Keras baseline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("demo-data")(demo_cmd.command)
app.command("train")(train_cmd.command)
app.command("export")(export_cmd.command)
app.command("evaluate")(evaluate_cmd.command)
app.command("benchmark")(benchmark_cmd.command)


def main() -> None:
    """Console entry point (errors are handled per command by ``commands.user_errors``)."""
    app()

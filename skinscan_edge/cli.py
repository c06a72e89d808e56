"""The ``skinscan-edge`` command line. Each command lives in ``skinscan_edge/commands/``."""

from __future__ import annotations

import typer

from skinscan_edge.commands import (benchmark as benchmark_cmd, bundle as bundle_cmd, demo as demo_cmd,
    evaluate as evaluate_cmd, explain as explain_cmd, export as export_cmd, pipeline as pipeline_cmd,
    predict as predict_cmd, report as report_cmd, train as train_cmd)
from skinscan_edge.core.tf import set_verbose

app = typer.Typer(
    name="skinscan-edge",
    help="Fine-tune InceptionV3 on skin images, export it for phones (TFLite, ONNX), and "
    "prove every export against the Keras baseline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _options(verbose: bool = typer.Option(
        False, "--verbose", help="Show TensorFlow's native start-up and converter lines (hidden by default), "
        "in worker processes too. Give it before the command: skinscan-edge --verbose train ...")) -> None:
    if verbose:
        set_verbose(True)


app.command("demo-data")(demo_cmd.command)
app.command("train")(train_cmd.command)
app.command("export")(export_cmd.command)
app.command("evaluate")(evaluate_cmd.command)
app.command("explain")(explain_cmd.command)
app.command("benchmark")(benchmark_cmd.command)
app.command("bundle")(bundle_cmd.command)
app.command("pipeline")(pipeline_cmd.command)
app.command("predict")(predict_cmd.command)
app.command("report")(report_cmd.command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point. Our own errors are handled per command (``commands.user_errors``);
    here click's usage errors (an unknown option, a value of the wrong type) become the same
    one line and exit code 2, instead of click's multi-line usage panel."""
    import sys

    # typer 0.29 (pinned) vendors click and does not re-export its usage errors.
    from typer._click import exceptions as click

    try:
        code = app(args=argv, prog_name="skinscan-edge", standalone_mode=False)
    except click.NoArgsIsHelpError as e:
        typer.echo(e.format_message())
        code = 0
    except click.UsageError as e:
        where = f"{e.ctx.command_path}: " if e.ctx is not None else ""
        typer.echo(f"error: {where}{e.format_message()} (see --help)", err=True)
        code = 2
    except typer.Abort:
        typer.echo("stopped: interrupted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)

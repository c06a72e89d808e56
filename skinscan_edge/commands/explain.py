"""``skinscan-edge explain RUN``: which layers of an int8 export lose the accuracy."""

from __future__ import annotations

from pathlib import Path

import typer

from skinscan_edge.api import explain
from skinscan_edge.commands import options, reporter, user_errors
from skinscan_edge.core.config_stages import ExplainConfig


@user_errors
@options.group(ExplainConfig, options.EXPLAIN, "explain_opts")
def command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory with int8 exports (and, best, evaluate.json)."),
    explain_opts: dict = None,
) -> None:
    """Per-layer quantization error of int8 exports against the float model.

    TFLite through LiteRT's QuantizationDebugger, ONNX through onnxruntime's qdq_loss_debug, on the calibration images and on the test images whose top-1 flipped. Writes RUN/reports/quant_debug.json, quant_debug.md and a plot per export; `export --keep-float auto` keeps the worst layers in float. Exit codes: 0 done; 2 a problem with the run.
    """
    result = explain(run, ExplainConfig(**explain_opts), reporter=reporter())
    for m in result.models:
        worst = ", ".join(f"{w['keras_layer'] or w['layer']} ({w['value']:.3f})" for w in m["worst"][:5])
        typer.echo(f"{m['name']}: worst layers by {m['worst'][0]['ranked_by'] if m['worst'] else '-'}: {worst}")
    typer.echo(f"report: {result.run / 'reports' / 'quant_debug.md'}")

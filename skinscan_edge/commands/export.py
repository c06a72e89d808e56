"""`skinscan-edge export`: TFLite and ONNX at every precision, and QAT. (The Android bundle is
`skinscan-edge bundle`, after the gate.)"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from skinscan_edge.api import export
from skinscan_edge.commands import options, reporter, user_errors
from skinscan_edge.core.config import ExportConfig
from skinscan_edge.core.config import GateConfig


@user_errors
@options.export_group
@options.gate_group
def command(
    run: Path = typer.Argument(..., help="Run directory written by `skinscan-edge train`."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write TFLite fp16 (float16 weights)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Also write TFLite dynamic-range (int8 weights, float activations)."),
    int8: bool = typer.Option(False, "--int8", help="Also write full-integer TFLite int8 (uint8 in/out) and static ONNX int8, calibrated on the train split."),
    qat: bool = typer.Option(False, "--qat", help="Also run quantization-aware training (tfmot) and write it as full-integer TFLite."),
    precision: Optional[List[str]] = typer.Option(None, "--precision", help="Precision by name, repeatable: fp32, fp16, dynamic, int8, qat (same as the flags)."),
    seed: int = typer.Option(options.default_of(options.C.ExportConfig, "seed"), "--seed", help="Seed of the calibration sample and QAT."),
    export_opts: dict = None,
    gate_opts: dict = None,
) -> None:
    """Export a trained run to TFLite and ONNX; write RUN/exports/manifest.json.

    Files already made from this model with the same settings are kept (SHA-256 verified), so running an interrupted export again finishes only what is missing. Exit codes: 0 done; 1 a conversion failed; 2 a problem with the run; 130 interrupted. The gate options matter only to --keep-float auto: the limits its file must meet on the validation split.
    """
    wanted = list(precision or [])
    wanted += [p for p, on in (("fp16", fp16), ("dynamic", dynamic), ("int8", int8), ("qat", qat)) if on]
    cfg = ExportConfig(precisions=["fp32", *dict.fromkeys(wanted)], seed=seed, gate=GateConfig(**gate_opts), **export_opts)
    result = export(run, cfg, reporter=reporter())
    typer.echo(f"manifest: {result.manifest_path} ({len(result.exports)} exports)")
    for f in result.failures:
        typer.echo(f"error: export {f['name']} failed: {f['error']}", err=True)
    if not result.ok:
        raise typer.Exit(1)

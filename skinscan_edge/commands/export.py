"""`skinscan-edge export`: TFLite and ONNX at every precision, QAT, and the Android bundle."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import options, stderr_console, user_errors


@user_errors
def command(
    run: Path = typer.Argument(..., help="Run directory written by `skinscan-edge train`."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write TFLite fp16 (float16 weights)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Also write TFLite dynamic-range (int8 weights, float activations)."),
    int8: bool = typer.Option(False, "--int8", help="Also write full-integer TFLite int8 (uint8 in/out) and static ONNX int8, calibrated on the train split."),
    qat: bool = typer.Option(False, "--qat", help="Also run quantization-aware training (tfmot) and write it as full-integer TFLite."),
    precision: Optional[List[str]] = typer.Option(None, "--precision", help="Precision by name, repeatable: fp32, fp16, dynamic, int8, qat (same as the flags)."),
    calib_samples: int = typer.Option(256, "--calib-samples", help="Train-split images (seeded sample) used to calibrate the int8 files."),
    qat_epochs: int = typer.Option(1, "--qat-epochs", help="Epochs of quantization-aware fine-tuning."),
    onnx_target: str = options.ONNX_TARGET,
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration sample and QAT."),
    jobs: int = typer.Option(2, "--jobs", help="2: run the QAT export in a second process beside the other conversions (faster on 2+ cores); 1: one file at a time."),
    android: bool = typer.Option(False, "--android", help="Fill the Android bundle: .tflite with TFLite Model Metadata, labels.txt, metadata.json, guide. With the default --android-export it also makes the int8 files (as --int8)."),
    android_dir: Path = typer.Option(Path("android_assets"), "--android-dir", help="Folder of the Android bundle."),
    android_export: str = typer.Option("tflite-int8", "--android-export", help="Which export goes into the Android bundle."),
) -> None:
    """Export a trained run to TFLite and ONNX; write RUN/exports/manifest.json."""
    from ..export.run import ExportConfig, export_run
    from ..rundir import RunDir

    rd = RunDir.open(run)
    wanted = list(precision or [])
    wanted += [p for p, on in (("fp16", fp16), ("dynamic", dynamic), ("int8", int8), ("qat", qat)) if on]
    if android and android_export == "tflite-int8" and "int8" not in wanted:
        wanted.append("int8")
    cfg = ExportConfig(precisions=["fp32", *dict.fromkeys(wanted)], calib_samples=calib_samples,
                       qat_epochs=qat_epochs, seed=seed, jobs=jobs, onnx_target=onnx_target)
    console = stderr_console()
    manifest = export_run(rd, cfg, console=console)
    typer.echo(f"manifest: {rd.manifest_path} ({len(manifest['exports'])} exports)")
    if android:
        from ..export.android import build_android_bundle

        summary = build_android_bundle(rd, android_dir, export_name=android_export)
        typer.echo(f"android bundle: {android_dir} ({summary['model_path']})")
    if manifest["failures"]:
        for f in manifest["failures"]:
            typer.echo(f"error: export {f['name']} failed: {f['error']}", err=True)
        raise typer.Exit(1)

"""``skinscan-edge bundle RUN``: the Android bundle, from an export the gate already judged."""

from __future__ import annotations

from pathlib import Path

import typer

from skinscan_edge.api import bundle
from skinscan_edge.commands import options, user_errors
from skinscan_edge.core.config_stages import BundleConfig


@user_errors
@options.group(BundleConfig, options.BUNDLE, "bundle_opts")
def command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory, exported (`export`) and evaluated (`evaluate`); benchmarked (`benchmark`) for the fastest pick."),
    bundle_opts: dict = None,
) -> None:
    """Write the Android bundle: the chosen .tflite with TFLite Model Metadata, labels.txt, metadata.json (with the gate's verdict and the file's own figures), a lossless golden image and its scores, the guide, a Kotlin example, the model card, and a zip of them all.

    By default it bundles the file the report recommends. A file that failed the gate, or was never evaluated, is refused unless --allow-failed. Exit codes: 0 written; 2 refused, or a problem with the run.
    """
    result = bundle(run, BundleConfig(**bundle_opts))
    typer.echo(f"bundled {result['source_export']} (gate {result['verdict']}): {result['why']}")
    typer.echo(f"android bundle: {Path(result['model_path']).parent} ({Path(result['zip_path']).name})")

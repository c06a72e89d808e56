"""``skinscan-edge predict RUN IMAGE...``: top-k labels and scores through the model or an export."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer

from skinscan_edge.api import predict
from skinscan_edge.commands import user_errors


@user_errors
def command(
    run: Path = typer.Argument(..., metavar="RUN", help="Run directory written by `train` (and `export`)."),
    images: List[Path] = typer.Argument(..., metavar="IMAGE...", help="Image files, or folders of images."),
    model: str = typer.Option("keras", "--model", "--format", metavar="NAME", help="keras, or an export name from the "
                              "manifest, e.g. tflite-int8 (the file the Android bundle ships) or onnx-fp32."),
    top_k: int = typer.Option(3, "--top-k", help="How many labels to print per image, best first."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document (a list, one object per image) instead of text."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for TFLite and onnxruntime (default: runtime's choice)."),
) -> None:
    """Print each image's top-k labels and scores.

    An image that cannot be used (missing, empty, truncated, not an image, too large) is reported with its reason, like the scanner reports it, and the others are still predicted. Exit codes: 0 every image predicted; 2 an image or the run could not be used.
    """
    results = predict(run, list(images), model=model, top_k=top_k, num_threads=threads)
    if as_json:
        rows = [{"path": r.path, "top_k": [{"label": lb, "score": s} for lb, s in r.top_k]} if not r.skipped
                else {k: v for k, v in asdict(r).items() if k != "top_k"} for r in results]
        typer.echo(json.dumps({"model": model, "results": rows}, indent=2))
    else:
        for r in results:
            if not r.skipped:
                typer.echo(f"{r.path}: " + ", ".join(f"{label} {score:.3f}" for label, score in r.top_k))
    skipped = [r for r in results if r.skipped]
    for r in skipped:
        typer.echo(f"error: {r.path}: {r.skipped}" + (f" ({r.detail})" if r.detail else ""), err=True)
    if skipped:
        raise typer.Exit(2)

"""``skinscan-edge demo-data``: write the SYNTHETIC demo dataset (not medical images)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from skinscan_edge.commands import reporter, user_errors
from skinscan_edge.api import DEFAULT_PER_CLASS, DEFAULT_SIZE, demo_data


@user_errors
def command(
    out: Annotated[Path, typer.Argument(
        help="Folder to create. Gets one sub-folder per class (ImageFolder layout) and a README.txt.",
        show_default=False)],
    per_class: Annotated[int, typer.Option(
        "--per-class", help="Images per class (at least 5, so every class can be split).")] = DEFAULT_PER_CLASS,
    size: Annotated[int, typer.Option("--size", help="Side of each square JPEG, in pixels (32-1024).")] = DEFAULT_SIZE,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed writes the same bytes.")] = 0,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Write into a non-empty OUT, replacing only the 10 class folders and "
        "README.txt this command owns.")] = False,
) -> None:
    """Write a SYNTHETIC 10-class demo dataset: procedurally drawn, NOT medical images.

    For trying train, export, evaluate and benchmark without real data. Useless clinically.

    OUT/README.txt and every JPEG (EXIF ImageDescription, JPEG comment) say so.
    """
    summary = demo_data(out, per_class=per_class, size=size, seed=seed, reporter=reporter(),
                                 overwrite=overwrite)
    typer.echo(
        f"wrote {summary['n_images']} SYNTHETIC demo images ({len(summary['classes'])} classes x "
        f"{summary['per_class']} + {len(summary['planted_duplicates'])} planted near-duplicates, "
        f"{summary['size_px']} px, seed {summary['seed']}) to {summary['path']} "
        f"in {summary['write_s']:.1f} s: procedurally generated, not medical images (see README.txt)"
    )

"""`skinscan-edge train`: fine-tune InceptionV3 on a folder of labelled images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from . import options, stderr_console, user_errors


@user_errors
def command(
    data: Path = options.DATA,
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (default runs/<timestamp>). With --resume, the run to continue."),
    img_size: int = options.IMG_SIZE,
    epochs: int = options.EPOCHS,
    fine_tune_epochs: int = options.FINE_TUNE_EPOCHS,
    batch_size: int = options.BATCH_SIZE,
    weights: str = options.WEIGHTS,
    learning_rate: float = options.LR,
    fine_tune_lr: float = options.FINE_TUNE_LR,
    unfreeze_from: str = options.UNFREEZE_FROM,
    labels: Optional[Path] = options.LABELS,
    seed: int = options.SEED,
    class_weights: bool = options.CLASS_WEIGHTS,
    augment: bool = options.AUGMENT,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last completed epoch (after Ctrl-C, a crash or a kill)."),
    strategy: str = options.STRATEGY,
    cpu_replicas: int = options.CPU_REPLICAS,
    mixed_precision: Optional[bool] = options.MIXED_PRECISION,
) -> None:
    """Fine-tune InceptionV3 (custom head, two phases) and write a self-describing run directory.

    Ctrl-C stops cleanly (exit 130) and says what was saved; --resume continues from the last completed epoch, after a Ctrl-C or a crash.
    """
    from ..train import train

    if out is None:
        if resume:
            from ..errors import SkinscanError

            raise SkinscanError("--resume needs --out RUN (the run to continue)")
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    kw = dict(locals())
    cfg = options.train_config(**{k: kw[k] for k in TRAIN_FIELDS})
    console = stderr_console()
    result = train(cfg, console=console)
    if not result["chief"]:
        typer.echo(f"{result['task']}: done; the chief wrote the run")
        return
    typer.echo(result["report_text"])
    typer.echo(f"test accuracy {result['test_accuracy']:.4f} on {result['n_test']} images; "
               f"run written to {result['run']}")


#: The command's parameters that are TrainConfig fields (same names).
TRAIN_FIELDS = ("data", "out", "img_size", "epochs", "fine_tune_epochs", "batch_size", "weights", "learning_rate",
                "fine_tune_lr", "unfreeze_from", "labels", "seed", "class_weights", "augment", "resume",
                "strategy", "cpu_replicas", "mixed_precision")

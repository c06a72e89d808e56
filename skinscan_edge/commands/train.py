"""`skinscan-edge train`: fine-tune InceptionV3 on a folder of labelled images."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from . import stderr_console, user_errors


@user_errors
def command(
    data: Path = typer.Option(..., "--data", help="Image folder: one subfolder per class (Kaggle IMG_CLASSES/ is found automatically), or train/ val/ test/ subfolders."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (default runs/<timestamp>). With --resume, the run to continue."),
    img_size: int = typer.Option(299, "--img-size", help="Square input size in pixels; at least 75 (InceptionV3's minimum)."),
    epochs: int = typer.Option(5, "--epochs", help="Phase 1 epochs: the head trains, the InceptionV3 base is frozen."),
    fine_tune_epochs: int = typer.Option(5, "--fine-tune-epochs", help="Phase 2 epochs: the base trains from --unfreeze-from on, at a lower learning rate."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per training step."),
    weights: str = typer.Option("imagenet", "--weights", help="'imagenet' (downloaded by Keras), 'none' (random init), or PATH to a local InceptionV3 no-top .h5 weights file."),
    learning_rate: float = typer.Option(1e-3, "--lr", help="Phase 1 (head) learning rate, Adam."),
    fine_tune_lr: float = typer.Option(1e-4, "--fine-tune-lr", help="Phase 2 learning rate; keep it low with pretrained weights, raise it (1e-3) from scratch."),
    unfreeze_from: str = typer.Option("mixed7", "--unfreeze-from", help="Phase 2 trains the base layers after this block's output (mixed0..mixed10), or 'input' for the whole base."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="JSON map {folder name: display label}, e.g. convert/kaggle_labels.json."),
    seed: int = typer.Option(1337, "--seed", help="Seeds the split, augmentation and initialisation; same seed and data give the same split."),
    class_weights: bool = typer.Option(True, "--class-weights/--no-class-weights", help="Weight the loss by inverse class frequency (imbalanced classes)."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Flip, rotation, zoom and contrast in the training pipeline (never in the exported model)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last completed epoch."),
) -> None:
    """Fine-tune InceptionV3 (custom head, two phases) and write a self-describing run directory."""
    from ..config import TrainConfig
    from ..train import train

    if out is None:
        if resume:
            from ..errors import SkinscanError

            raise SkinscanError("--resume needs --out RUN (the run to continue)")
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    cfg = TrainConfig(data=str(data), out=str(out), img_size=img_size, epochs=epochs,
                      fine_tune_epochs=fine_tune_epochs, batch_size=batch_size,
                      learning_rate=learning_rate, fine_tune_lr=fine_tune_lr, weights=weights,
                      unfreeze_from=unfreeze_from, labels=str(labels) if labels else None, seed=seed,
                      class_weights=class_weights, augment=augment, resume=resume)
    console = stderr_console()
    result = train(cfg, console=console)
    typer.echo(result["report_text"])
    typer.echo(f"test accuracy {result['test_accuracy']:.4f} on {result['n_test']} images; "
               f"run written to {result['run']}")

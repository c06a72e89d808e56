"""Options shared by more than one command (`train` and `pipeline`), declared once."""

from __future__ import annotations

from pathlib import Path

import typer

DATA = typer.Option(..., "--data", help="Image folder: one subfolder per class (Kaggle IMG_CLASSES/ is found automatically), or train/ val/ test/ subfolders.")
IMG_SIZE = typer.Option(299, "--img-size", help="Square input size in pixels; at least 75 (InceptionV3's minimum).")
EPOCHS = typer.Option(5, "--epochs", help="Phase 1 epochs: the head trains, the InceptionV3 base is frozen.")
FINE_TUNE_EPOCHS = typer.Option(5, "--fine-tune-epochs", help="Phase 2 epochs: the base trains from --unfreeze-from on, at a lower learning rate.")
BATCH_SIZE = typer.Option(32, "--batch-size", help="Images per training step (the global batch, split across replicas).")
WEIGHTS = typer.Option("imagenet", "--weights", help="'imagenet' (downloaded by Keras), 'none' (random init), or PATH to a local InceptionV3 no-top .h5 weights file.")
LR = typer.Option(1e-3, "--lr", help="Phase 1 (head) learning rate, Adam.")
FINE_TUNE_LR = typer.Option(1e-4, "--fine-tune-lr", help="Phase 2 learning rate; keep it low with pretrained weights, raise it (1e-3) from scratch.")
UNFREEZE_FROM = typer.Option("mixed7", "--unfreeze-from", help="Phase 2 trains the base layers after this block's output (mixed0..mixed10), or 'input' for the whole base.")
LABELS = typer.Option(None, "--labels", help="JSON map {folder name: display label}, e.g. convert/kaggle_labels.json.")
SEED = typer.Option(1337, "--seed", help="Seeds the split, augmentation and initialisation; same seed and data give the same split.")
CLASS_WEIGHTS = typer.Option(True, "--class-weights/--no-class-weights", help="Weight the loss by inverse class frequency (imbalanced classes).")
AUGMENT = typer.Option(True, "--augment/--no-augment", help="Flip, rotation, zoom and contrast in the training pipeline (never in the exported model).")
STRATEGY = typer.Option("default", "--strategy", help="default (one device), mirrored (every GPU of this machine) or multi-worker (the machines in TF_CONFIG; run the same command on each). --batch-size is the global batch.")
CPU_REPLICAS = typer.Option(1, "--cpu-replicas", help="With --strategy mirrored on a machine without GPUs: mirror over this many logical CPU devices (tests the distributed path; not faster).")
MIXED_PRECISION = typer.Option(None, "--mixed-precision/--no-mixed-precision", help="float16 compute with float32 weights and output. Default: on where every GPU has compute capability 7.0 or more, else off. Exports are float32 either way.")

CALIB_SAMPLES = typer.Option(256, "--calib-samples", help="Train-split images (seeded sample) used to calibrate the int8 files.")
QAT_EPOCHS = typer.Option(1, "--qat-epochs", help="Epochs of quantization-aware fine-tuning.")
ANDROID_DIR = typer.Option(Path("android_assets"), "--android-dir", help="Folder of the Android bundle.")

CRITICAL_CLASS = typer.Option(None, "--critical-class", metavar="CLASS", help="Apply --max-recall-drop to this class only (a name from labels.txt, e.g. Melanoma). Repeatable.")
MAX_ACCURACY_DROP = typer.Option(1.0, "--max-accuracy-drop", help="Gate: fail an export whose accuracy is more than this many percentage points below Keras.")
MAX_RECALL_DROP = typer.Option(2.0, "--max-recall-drop", help="Gate: fail an export whose recall for a class is more than this many percentage points below Keras (every class, or the --critical-class ones).")
MIN_AGREEMENT = typer.Option(None, "--min-agreement", help="Gate: fail an export whose top-1 agreement with Keras is below this share (0..1). Default: not gated.")


def train_config(**kw):
    """A TrainConfig from the shared options (paths become strings)."""
    from ..config import TrainConfig

    kw["data"], kw["out"] = str(kw["data"]), str(kw["out"])
    kw["labels"] = str(kw["labels"]) if kw.get("labels") else None
    return TrainConfig(**kw)

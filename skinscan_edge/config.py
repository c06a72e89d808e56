"""Configs, one dataclass per concern. The resolved config is saved into the run directory."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

MIN_IMG_SIZE = 75  # InceptionV3's minimum input size


@dataclass
class TrainConfig:
    """Everything that decides a training run.

    Attributes:
      data: the image folder (one subfolder per class, or train/ val/ test/ subfolders).
      out: the run directory to write.
      img_size: square input size in pixels (InceptionV3 needs at least 75).
      epochs: phase 1 epochs (head only, base frozen).
      fine_tune_epochs: phase 2 epochs (unfrozen from ``unfreeze_from``, lower learning rate).
      batch_size: images per step.
      weights: ``imagenet``, ``none`` or the path of a no-top InceptionV3 ``.h5`` weights file.
      unfreeze_from: first layer (block name, e.g. ``mixed7``) trained in phase 2;
        ``input`` unfreezes the whole base.
      labels: optional label map file (JSON {folder: display name}) for display names.
      seed: seeds the split, the augmentation and weight init.
      val_fraction, test_fraction: stratified split shares (ignored for pre-split folders).
      learning_rate: phase 1 learning rate; ``fine_tune_lr`` is used in phase 2.
      dropout, dense_units: the custom head.
      class_weights: weight the loss by inverse class frequency (for imbalanced data).
      augment: flip / rotation / zoom / contrast in the training pipeline only.
      early_stopping_patience, reduce_lr_patience: callback patience in epochs.
      resume: continue an interrupted run from its last completed epoch.
      strategy: ``default``, ``mirrored`` or ``multi-worker`` (see skinscan_edge.distribute).
      cpu_replicas: with ``mirrored`` and no GPU, the number of logical CPU devices.
      mixed_precision: ``None`` (auto: on where every GPU has compute capability >= 7.0),
        ``True`` or ``False``; see skinscan_edge.precision. Exports are float32 either way.
    """

    data: str = ""
    out: str = ""
    img_size: int = 299
    epochs: int = 5
    fine_tune_epochs: int = 5
    batch_size: int = 32
    weights: str = "imagenet"
    unfreeze_from: str = "mixed7"
    labels: str | None = None
    seed: int = 1337
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    learning_rate: float = 1e-3
    fine_tune_lr: float = 1e-4
    dropout: float = 0.3
    dense_units: int = 256
    class_weights: bool = True
    augment: bool = True
    early_stopping_patience: int = 4
    reduce_lr_patience: int = 2
    resume: bool = False
    strategy: str = "default"
    cpu_replicas: int = 1
    mixed_precision: bool | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> "TrainConfig":
        from .errors import SkinscanError

        if self.img_size < MIN_IMG_SIZE:
            raise SkinscanError(f"--img-size must be at least {MIN_IMG_SIZE} (InceptionV3's minimum), got {self.img_size}")
        if self.batch_size < 1:
            raise SkinscanError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.epochs < 0 or self.fine_tune_epochs < 0 or self.epochs + self.fine_tune_epochs == 0:
            raise SkinscanError("--epochs and --fine-tune-epochs must be >= 0 and not both 0")
        if not 0 < self.val_fraction < 0.5 or not 0 < self.test_fraction < 0.5:
            raise SkinscanError("split fractions must be between 0 and 0.5")
        from .distribute import STRATEGIES
        from .errors import did_you_mean
        from .model import BLOCKS

        if self.strategy not in STRATEGIES:
            raise SkinscanError("--strategy: " + did_you_mean(self.strategy, STRATEGIES))
        if self.cpu_replicas < 1:
            raise SkinscanError(f"--cpu-replicas must be at least 1, got {self.cpu_replicas}")
        if self.cpu_replicas > 1 and self.strategy != "mirrored":
            raise SkinscanError("--cpu-replicas only applies to --strategy mirrored")

        if self.unfreeze_from not in BLOCKS:
            raise SkinscanError("--unfreeze-from: " + did_you_mean(self.unfreeze_from, BLOCKS))
        data = Path(self.data)
        if not data.exists():
            raise SkinscanError(f"--data folder not found: {data}")
        if not data.is_dir():
            raise SkinscanError(f"--data must be a folder of class subfolders, got a file: {data}")
        if self.weights not in ("imagenet", "none"):
            from .model import resolve_weights

            resolve_weights(self.weights)  # a bad file fails here, before the data is scanned
        if self.labels and not Path(self.labels).is_file():
            raise SkinscanError(f"--labels file not found: {self.labels}")
        return self

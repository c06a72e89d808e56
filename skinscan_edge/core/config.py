"""Configs, one dataclass per concern, and the one place each default is declared.

The CLI's options read their defaults from these fields (``commands/options.py``), the Python
API takes these objects, and the resolved config is saved into the run directory. Importing
this module imports no TensorFlow.

Over 350 lines on purpose: every config dataclass lives here, so that each default is declared
once and the CLI, the API and the saved config read it from one place.
"""

from __future__ import annotations

import numbers
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.formats import check_onnx_target, specs_for

MIN_IMG_SIZE = 75  # InceptionV3's minimum input size
#: Benchmark devices: ``auto`` adds the GPU rows where an NVIDIA driver is present.
DEVICES = ("auto", "cpu", "gpu", "all")
ECE_BINS = 15
# The values that options accept, declared here once; the modules that act on them import them.
#: ``--strategy`` values: where training runs (skinscan_edge.training.distribute).
STRATEGIES = ["default", "mirrored", "multi-worker"]
#: InceptionV3 block outputs that ``--unfreeze-from`` accepts, plus ``input`` (whole base).
BLOCKS = ["input"] + [f"mixed{i}" for i in range(11)]
#: ``--image-cache`` values: auto (disk when a split exceeds the RAM budget), disk (always), off.
IMAGE_CACHE_MODES = ("auto", "disk", "off")
#: ``--on-conflict`` values: what to do with a group whose images carry different labels.
ON_CONFLICT = ("train-only", "drop", "keep")
#: ``--client`` values: the real clients evaluate can score the TFLite exports through.
CLIENTS = ("mediapipe",)
#: ``--require`` values: what the bundle's file must be.
REQUIREMENTS = ("full-integer",)


def _type_error(cls, name: str, value, want: str) -> SkinscanError:
    return SkinscanError(f"{cls.__name__}.{name} must be {want}, got {value!r} ({type(value).__name__})")


def _coerce(cls, name: str, value, hint):
    """``value`` checked against the field's annotation; returns it (a path as str, a list as the
    container the field holds). Hand-written: the dataclass annotations are the one declaration,
    and a validation library would mean a second one (or pydantic models for every config)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return _coerce(cls, name, value, rest[0]) if len(rest) == 1 else value
    if hint is bool:
        if not isinstance(value, bool) and type(value).__name__ != "bool_":  # numpy's, not imported here
            raise _type_error(cls, name, value, "True or False")
        return bool(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _type_error(cls, name, value, "a whole number")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _type_error(cls, name, value, "a number")
        return float(value)
    if hint is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            raise _type_error(cls, name, value, "a string")
        return value
    if origin in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _type_error(cls, name, value, f"a {origin.__name__} (e.g. {origin.__name__}(...) of values)")
        inner = args[0] if args else None
        items = [_coerce(cls, f"{name}[{i}]", v, inner) for i, v in enumerate(value)] if inner else list(value)
        return origin(items)
    return value


def check_fields(obj) -> None:
    """Type-check every field of a config dataclass where it is built (issue 28, D10), then the
    ranges of ``RANGES``: a wrong value names its field, before anything runs."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        setattr(obj, f.name, _coerce(cls, f.name, getattr(obj, f.name), hints[f.name]))
    for name, (lo, hi, text) in getattr(cls, "RANGES", {}).items():
        value = getattr(obj, name)
        if value is not None and not (lo <= value <= hi):  # the CLI flag and the field: either may be the way in
            raise SkinscanError(f"--{name.replace('_', '-')} must be {text}, got {value!r} ({cls.__name__}.{name})")


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
      augment: flip / rotation / zoom / contrast, in the training step only (never exported).
      feature_cache: phase 1 computes the frozen base's pooled features once (per view) and
        trains the head on them (skinscan_edge.training.features); with one device (``default`` strategy).
      feature_views: seeded augmented views per train image for phase 1 on features (with augment).
      stem_views: phase 2 runs the frozen layers below ``unfreeze_from`` once per view (seeded
        augmented views of each train image; epoch e uses view e mod N) and trains the layers
        above on their cached output (skinscan_edge.training.features, one device); 0 runs the whole
        model every step instead. ``None`` (auto): 1 on a machine without GPUs, where it was
        measured to help (benchmarks/NOTES.md, "Issue 31"), else 0.
      image_cache: ``auto`` (a decoded-image cache on disk in RUN/cache when the decoded data set
        exceeds the in-memory budget), ``disk`` (always) or ``off``; see skinscan_edge.data.imagecache.
      early_stopping_patience, reduce_lr_patience: callback patience in epochs.
      resume: continue an interrupted run from its last completed epoch.
      strategy: ``default``, ``mirrored`` or ``multi-worker`` (see skinscan_edge.training.distribute).
      cpu_replicas: with ``mirrored`` and no GPU, the number of logical CPU devices.
      worker_timeout_s: with ``multi-worker``, how long a worker may go without a heartbeat (and
        how long workers wait for each other to join and to finish) before TensorFlow's coordination
        service declares it dead. TensorFlow's 10 s heartbeat failed a two-worker run on a busy host.
      group_by: ``FILE.csv:column`` of known groups (e.g. HAM10000's ``lesion_id``), kept whole
        in one split like near-duplicates (skinscan_edge.data.grouping).
      on_conflict: a group whose images carry different labels: ``train-only``, ``drop`` or ``keep``.
      mixed_precision: ``None`` (auto: float16 where every GPU has compute capability >= 7.0,
        bfloat16 on CPUs with AVX512_BF16 or AMX), ``True`` or ``False``; see
        skinscan_edge.training.precision. Exports are float32 either way.
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
    feature_cache: bool = True
    feature_views: int = 1
    stem_views: int | None = None
    image_cache: str = "auto"
    early_stopping_patience: int = 4
    reduce_lr_patience: int = 2
    resume: bool = False
    strategy: str = "default"
    cpu_replicas: int = 1
    worker_timeout_s: float = 300.0
    group_by: str | None = None
    on_conflict: str = "train-only"
    mixed_precision: bool | None = None

    #: field: (lowest, highest, in words); checked when the object is built.
    RANGES: typing.ClassVar[dict] = {
        "img_size": (MIN_IMG_SIZE, 4096, f"at least {MIN_IMG_SIZE} (InceptionV3's minimum)"),
        "epochs": (0, 10**6, ">= 0"), "fine_tune_epochs": (0, 10**6, ">= 0"), "batch_size": (1, 10**6, "at least 1"),
        "val_fraction": (1e-9, 0.5 - 1e-9, "between 0 and 0.5"), "test_fraction": (1e-9, 0.5 - 1e-9, "between 0 and 0.5"),
        "learning_rate": (1e-12, 10.0, "> 0"), "fine_tune_lr": (1e-12, 10.0, "> 0"),
        "dropout": (0.0, 0.999999, "in [0, 1)"), "dense_units": (1, 1 << 20, ">= 1"),
        "feature_views": (1, 1000, ">= 1"), "early_stopping_patience": (0, 10**6, ">= 0"),
        "reduce_lr_patience": (0, 10**6, ">= 0"), "cpu_replicas": (1, 4096, ">= 1"),
        "worker_timeout_s": (1.0, 86400.0, "between 1 and 86400 seconds"),
    }

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> "TrainConfig":
        if self.img_size < MIN_IMG_SIZE:
            raise SkinscanError(f"--img-size must be at least {MIN_IMG_SIZE} (InceptionV3's minimum), got {self.img_size}")
        if self.batch_size < 1:
            raise SkinscanError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.epochs < 0 or self.fine_tune_epochs < 0 or self.epochs + self.fine_tune_epochs == 0:
            raise SkinscanError("--epochs and --fine-tune-epochs must be >= 0 and not both 0")
        if not 0 < self.val_fraction < 0.5 or not 0 < self.test_fraction < 0.5:
            raise SkinscanError("split fractions must be between 0 and 0.5")
        if self.strategy not in STRATEGIES:
            raise SkinscanError("--strategy: " + did_you_mean(self.strategy, STRATEGIES, "strategy", "strategies"))
        if self.cpu_replicas < 1:
            raise SkinscanError(f"--cpu-replicas must be at least 1, got {self.cpu_replicas}")
        if self.cpu_replicas > 1 and self.strategy != "mirrored":
            raise SkinscanError("--cpu-replicas only applies to --strategy mirrored")


        if self.image_cache not in IMAGE_CACHE_MODES:
            raise SkinscanError("--image-cache: " + did_you_mean(self.image_cache, IMAGE_CACHE_MODES))
        if self.feature_views < 1:
            raise SkinscanError(f"--feature-views must be at least 1, got {self.feature_views}")
        if self.stem_views is not None and self.stem_views < 0:
            raise SkinscanError(f"--stem-views must be 0 (off) or more, got {self.stem_views}")
        if self.unfreeze_from not in BLOCKS:
            raise SkinscanError("--unfreeze-from: " + did_you_mean(self.unfreeze_from, BLOCKS, "block"))
        data = Path(self.data)
        if not data.exists():
            raise SkinscanError(f"--data folder not found: {data}")
        if not data.is_dir():
            raise SkinscanError(f"--data must be a folder of class subfolders, got a file: {data}")
        # The weights file's layers and the --group-by CSV's columns are read by
        # training.fine_tune.check_files, which train and the pipeline call before the data is scanned.
        if self.on_conflict not in ON_CONFLICT:
            raise SkinscanError("--on-conflict: " + did_you_mean(self.on_conflict, list(ON_CONFLICT)))
        if self.labels and not Path(self.labels).is_file():
            raise SkinscanError(f"--labels file not found: {self.labels}")
        return self


@dataclass
class ExportConfig:
    """What to export.

    Attributes:
      precisions: ``--precision`` names (``formats.precisions()``); fp32 (TFLite and
        ONNX) is always exported.
      calib_samples: images drawn (seeded) from the train split to calibrate int8 files.
      calib_class_floor: every class puts at least this many of them in (all it has when
        fewer); 0: a plain random sample (exporters/calibration.py).
      qat_epochs: epochs of quantization-aware fine-tuning on the train split (0: the
        activation ranges are calibrated on one batch, the weights are not trained).
      qat_lr: learning rate of that fine-tuning. The default keeps the QAT file's top-1
        agreement with Keras high (0.99 on the demo with BatchNorm frozen; 0.82 at 1e-5): it adapts
        the activation ranges and barely moves the weights; raise it to retrain for int8.
      qat_freeze_bn: keep BatchNormalization in inference mode during it (moving statistics not
        updated); False lets the train batches' statistics move them (exporters/qat.py).
      opset: ONNX opset (17 or later).
      seed: seeds the calibration sample and QAT.
      jobs: 2 runs the QAT export (the longest) in a second process beside the other
        conversions, which are mostly single-threaded; 1 converts one file at a time.
      force: convert every file again, even one already made from the same model and settings.
      onnx_target: the CPU the onnx-int8 file is for (exporters/onnx.py INT8_TARGETS), or
        ``auto``: this host's.
      keep_float: Keras layer names kept float in the mixed int8 files (tflite-int8-mixed,
        onnx-int8-mixed), or ``["auto"]`` (exporters/mixed.py); empty: no mixed files.
      keep_float_budget_pct: ``auto`` keeps at most this share of the model's MACs in float.
      gate: the limits ``auto`` must meet on the validation split (``export`` and ``pipeline``
        take the evaluate gate's options, so one set of limits decides both).
    """

    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    calib_samples: int = 256
    calib_class_floor: int = 8
    qat_epochs: int = 1
    qat_lr: float = 1e-7  # measured on the demo: benchmarks/NOTES.md, "Issue 12: QAT defaults"
    qat_freeze_bn: bool = True
    opset: int = 17
    seed: int = 0
    jobs: int = 2
    force: bool = False
    onnx_target: str = "auto"
    keep_float: list[str] = field(default_factory=list)
    keep_float_budget_pct: float = 25.0
    gate: "GateConfig" = field(default_factory=lambda: GateConfig())

    #: Fields that say how the files are made, not what they are (a change makes nothing due).
    HOW = ("jobs", "force")

    def __post_init__(self):
        if isinstance(self.gate, dict):  # from a saved config (manifest, QAT worker)
            self.gate = GateConfig(**self.gate)
        if not isinstance(self.gate, GateConfig):
            raise _type_error(type(self), "gate", self.gate, "a GateConfig")
        check_fields(self)

    def validate(self) -> "ExportConfig":
        specs_for(self.precisions)  # unknown names fail with the valid list
        if self.keep_float:  # --keep-float asks for the mixed files, which rank the int8 file's layers
            self.precisions += [p for p in ("int8", "mixed") if p not in self.precisions]
        elif "mixed" in self.precisions:
            raise SkinscanError("--precision mixed needs --keep-float auto or --keep-float LAYER,... (Keras layer names)")
        if "auto" in self.keep_float and self.keep_float != ["auto"]:
            raise SkinscanError("--keep-float is either auto or a list of layer names, not both")
        if not 0 < self.keep_float_budget_pct <= 100:
            raise SkinscanError(f"--keep-float-budget is a share of MACs in %, got {self.keep_float_budget_pct}")
        if "fp32" not in self.precisions:
            self.precisions = ["fp32", *self.precisions]
        if self.calib_class_floor < 0:
            raise SkinscanError(f"--calib-class-floor must be >= 0, got {self.calib_class_floor}")
        if self.calib_samples < 1:
            raise SkinscanError(f"--calib-samples must be at least 1, got {self.calib_samples}")
        if self.qat_epochs < 0 or not self.qat_lr > 0:
            raise SkinscanError(f"--qat-epochs must be >= 0 and --qat-lr > 0, got {self.qat_epochs} and {self.qat_lr}")
        if self.jobs not in (1, 2):
            raise SkinscanError(f"--jobs is 1 or 2, got {self.jobs}")
        if self.opset < 17:
            raise SkinscanError(f"--opset must be 17 or later, got {self.opset}")
        check_onnx_target(self.onnx_target)  # an unknown name fails with the valid ones
        return self

    def names(self) -> list[str]:
        """Export names in conversion order."""
        return [spec.name for spec in specs_for(self.precisions)]

    def recipe(self) -> dict:
        """What decides the files' content: every field but the precisions and HOW (and the
        gate, which decides only what ``--keep-float auto`` picks)."""
        skip = ("precisions", *self.HOW, *(() if self.keep_float == ["auto"] else ("gate",)))
        return {k: v for k, v in asdict(self).items() if k not in skip}


@dataclass
class GateConfig:
    """The evaluate gate: an export fails when it loses more than this against Keras.

    Attributes:
      max_accuracy_drop_pp: largest allowed accuracy drop vs Keras, percentage points.
      max_recall_drop_pp: largest allowed per-class recall drop vs Keras, pp.
      critical_classes: gate recall only for these classes (empty: every class).
      min_agreement: smallest allowed top-1 agreement with Keras (None: not gated).
    """

    max_accuracy_drop_pp: float = 1.0
    max_recall_drop_pp: float = 2.0
    critical_classes: list[str] = field(default_factory=list)
    min_agreement: float | None = None

    def __post_init__(self) -> None:
        check_fields(self)

    def validate_gate(self) -> None:
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise SkinscanError(f"--min-agreement is a share between 0 and 1, got {self.min_agreement}")
        if self.max_accuracy_drop_pp < 0 or self.max_recall_drop_pp < 0:
            raise SkinscanError("--max-accuracy-drop and --max-recall-drop are drops in pp; use values >= 0")

    def gate(self) -> "GateConfig":
        """Only the gate's fields (an EvaluateConfig is a GateConfig with more)."""
        return GateConfig(**{f.name: getattr(self, f.name) for f in fields(GateConfig)})

"""Every option that maps to a config field, declared once: its flag, its help and its type.

The default is never written here: it is read from the config dataclass (``config.py``), so the
CLI, the Python API and the saved config cannot disagree. A command takes a whole group with
:func:`group`, which adds the options to its signature and hands the command one dict of
values, ready for the dataclass. ``pipeline`` takes the same groups as ``train``, ``export``,
``evaluate`` and ``benchmark`` (the benchmark's with a ``--bench-`` prefix).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from skinscan_edge.commands import parse_csv_ints
from skinscan_edge.core import config as C


@dataclass(frozen=True)
class Opt:
    """One option: the config field it sets, its flag(s), help, CLI type and optional parser."""

    field: str
    flags: tuple[str, ...]
    help: str
    type: Any
    parse: Callable[[Any], Any] | None = None
    metavar: str | None = None
    hidden: bool = False


def default_of(cls, name: str):
    """The dataclass field's default (its default_factory called)."""
    f = next(f for f in fields(cls) if f.name == name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def csv_ints(flag: str) -> Callable[[str], tuple]:
    def parse(text):
        return tuple(parse_csv_ints(text, flag)) if isinstance(text, str) else tuple(text)
    return parse


def csv_names(text):
    if text is None or isinstance(text, (list, tuple)):
        return list(text) if text else None
    return [t.strip() for t in str(text).split(",") if t.strip()] or None


def _shown(value, kind=None) -> Any:
    """How a config default looks on the command line: a tuple, or a list given as text, becomes
    '1,8,32' (an empty list: no default); a list option (repeatable) stays a list."""
    if isinstance(value, tuple) or (isinstance(value, list) and kind in (str, Optional[str])):
        return ",".join(map(str, value)) or None
    return value


TRAIN = (
    Opt("img_size", ("--img-size",), "Square input size in pixels; at least 75 (InceptionV3's minimum).", int),
    Opt("epochs", ("--epochs",), "Phase 1 epochs: the head trains, the InceptionV3 base is frozen.", int),
    Opt("fine_tune_epochs", ("--fine-tune-epochs",), "Phase 2 epochs: the base trains from --unfreeze-from on, at a lower learning rate.", int),
    Opt("batch_size", ("--batch-size",), "Images per training step (the global batch, split across replicas).", int),
    Opt("weights", ("--weights",), "'imagenet' (downloaded by Keras), 'none' (random init), or PATH to a local InceptionV3 no-top .h5 weights file.", str),
    Opt("learning_rate", ("--lr",), "Phase 1 (head) learning rate, Adam.", float),
    Opt("fine_tune_lr", ("--fine-tune-lr",), "Phase 2 learning rate; keep it low with pretrained weights, raise it (1e-3) from scratch.", float),
    Opt("unfreeze_from", ("--unfreeze-from",), "Phase 2 trains the base layers after this block's output (mixed0..mixed10), or 'input' for the whole base.", str),
    Opt("labels", ("--labels",), "JSON map {folder name: display label}, e.g. convert/kaggle_labels.json.", Optional[Path],
        parse=lambda v: str(v) if v else None),
    Opt("seed", ("--seed",), "Seeds the split, augmentation and initialisation; same seed and data give the same split.", int),
    Opt("class_weights", ("--class-weights/--no-class-weights",), "Weight the loss by inverse class frequency (imbalanced classes).", bool),
    Opt("augment", ("--augment/--no-augment",), "Flip, rotation, zoom and contrast in the training pipeline (never in the exported model).", bool),
    Opt("feature_cache", ("--feature-cache/--no-feature-cache",), "Phase 1: compute the frozen base's features once (per --feature-views view) and train the head on them, instead of running the base every epoch. One device only.", bool),
    Opt("feature_views", ("--feature-views",), "With --augment and --feature-cache: seeded augmented views of each train image for phase 1 (epoch e uses view e mod N); each view costs one forward pass over the train split.", int),
    Opt("stem_views", ("--stem-views",), "Phase 2: run the frozen layers below --unfreeze-from once per view (seeded augmented views; epoch e uses view e mod N), cache their output on disk in RUN/stem_cache (float16, 0.44 MB per image and view at 299 px; removed after phase 2) and train only the layers above. 0: the whole model every step. Default: 1 without GPUs, else 0. One device only.", Optional[int]),
    Opt("image_cache", ("--image-cache",), "Decoded-image cache on disk in RUN/cache: auto (when the decoded data set exceeds 1.5 GB), disk (always) or off. Its size is stated before it is built; `rm -r RUN/cache` removes it.", str),
    Opt("mixed_precision", ("--mixed-precision/--no-mixed-precision",), "float16 (GPU) or bfloat16 (CPU) compute with float32 weights and output. Default: on where every GPU has compute capability 7.0 or more, or, without GPUs, where the CPU has AVX512_BF16 or AMX; else off. Exports are float32 either way.",
        Optional[bool]),
    Opt("strategy", ("--strategy",), "default (one device), mirrored (every GPU of this machine) or multi-worker (the machines in TF_CONFIG; run the same command on each). --batch-size is the global batch.", str),
    Opt("group_by", ("--group-by",), "Known groups kept whole in one split, like near-duplicates: a CSV column (e.g. HAM10000_metadata.csv:lesion_id); rows are matched to images by a column of file names.",
        Optional[str], metavar="FILE.csv:COLUMN"),
    Opt("on_conflict", ("--on-conflict",), "A group (near-duplicates or --group-by) whose images carry different labels: train-only (kept in train, never val/test), drop (left out), or keep (split whole under its most common label). Listed in RUN/duplicates.json.", str),
    Opt("cpu_replicas", ("--cpu-replicas",), "With --strategy mirrored on a machine without GPUs: mirror over this many logical CPU devices (tests the distributed path; not faster).", int),
    Opt("worker_timeout_s", ("--worker-timeout",), "With --strategy multi-worker: seconds a worker may go without a heartbeat, or wait for the others to join or finish, before the run is stopped (busy machines need more than TensorFlow's 10 s).", float),
)

EXPORT = (
    Opt("calib_samples", ("--calib-samples",), "Train-split images (seeded sample) used to calibrate the int8 files.", int),
    Opt("calib_class_floor", ("--calib-class-floor",), "Each class puts at least this many images into the calibration sample (stratified, seeded); 0: a plain random sample.", int),
    Opt("qat_epochs", ("--qat-epochs",), "Epochs of quantization-aware fine-tuning (0: calibrate the ranges only).", int),
    Opt("qat_lr", ("--qat-lr",), "Learning rate of the quantization-aware fine-tuning.", float),
    Opt("qat_freeze_bn", ("--qat-freeze-bn/--no-qat-freeze-bn",), "Keep BatchNormalization's moving statistics fixed during the QAT fine-tuning (updating them moves the model away from Keras).", bool),
    Opt("jobs", ("--jobs",), "2: run the QAT export in a second process beside the other conversions (faster on 2+ cores); 1: one file at a time.", int),
    Opt("onnx_target", ("--onnx-target",), "CPU the onnx-int8 file is for: x86-avx2 (U8S8, 7-bit weights: no VNNI), x86-vnni (U8S8, VNNI/AMX), arm (S8S8), or auto (this host's; the manifest records which).", str),
    Opt("keep_float", ("--keep-float",), "Also write tflite-int8-mixed and onnx-int8-mixed with these Keras layers in float (comma-separated, names from `skinscan-edge explain`), or auto: the worst layers, a few at a time, until the file passes the gate on the validation split.",
        str, parse=lambda v: csv_names(v) or [], metavar="LAYERS"),
    Opt("keep_float_budget_pct", ("--keep-float-budget",), "With --keep-float auto: keep at most this share (%) of the model's MACs in float.", float),
    Opt("force", ("--force",), "Convert every file again, even one already made from this model with the same settings (those are kept by default, SHA-256 verified).", bool),
)

GATE = (
    Opt("critical_classes", ("--critical-class",), "Apply --max-recall-drop to this class only (a name from labels.txt, e.g. Melanoma). Repeatable.",
        Optional[List[str]], parse=lambda v: list(v or []), metavar="CLASS"),
    Opt("max_accuracy_drop_pp", ("--max-accuracy-drop",), "Gate: fail an export whose accuracy is more than this many percentage points below Keras.", float),
    Opt("max_recall_drop_pp", ("--max-recall-drop",), "Gate: fail an export whose recall for a class is more than this many percentage points below Keras (every class, or the --critical-class ones).", float),
    Opt("min_agreement", ("--min-agreement",), "Gate: fail an export whose top-1 agreement with Keras is below this share (0..1). Default: not gated.", Optional[float]),
)

EVALUATE = (
    Opt("split", ("--split",), "Persisted split to score: test, val or train.", str),
    Opt("formats", ("--model", "--models", "--formats"), "Only these models, comma-separated (keras and export names from the manifest, e.g. tflite-int8,onnx-fp32). Default: every export.",
        Optional[str], parse=csv_names, metavar="NAMES"),
    Opt("batch_size", ("--batch-size",), "Images decoded and fed per call.", int),
    Opt("num_threads", ("--threads",), "CPU threads for TFLite and onnxruntime (default: runtime's choice).", Optional[int]),
    Opt("n_bootstrap", ("--bootstrap",), "Paired-bootstrap resamples for the 95% interval of Δaccuracy.", int),
    Opt("seed", ("--seed",), "Seed of the bootstrap.", int),
    Opt("client", ("--client",), "Also score every TFLite export through a real client: 'mediapipe' runs it, with TFLite Model Metadata, in MediaPipe's ImageClassifier (built once into the user cache folder, or $SKINSCAN_READER_VENV), as row '<export> (mediapipe)': on the photos prepared as the Android guide says (gated like any export), and on the original files (shown, not gated).", Optional[str]),
    Opt("arm64", ("--arm64/--no-arm64",), "Also run every TFLite export (and the ONNX int8 file of --onnx-target arm) on arm64 kernels under QEMU, one row per file and emulated CPU, gated like any export and compared with the x86 run (docs/arm64.md; set up with `make arm64-env`).", bool),
    Opt("arm64_limit", ("--arm64-limit",), "With --arm64: score a seeded sample of this many images (emulation is slow); the rows' intervals widen accordingly.", Optional[int], metavar="N"),
    Opt("arm64_cpus", ("--arm64-cpu",), "With --arm64: emulated CPUs, comma-separated: max (dot-product + i8mm), cortex-a53 (no dot-product), max-sme, cortex-a76.", str,
        parse=lambda v: csv_names(v) or [], metavar="CPUS"),
    Opt("arm64_models", ("--arm64-models",), "With --arm64: only these files on arm64, comma-separated (e.g. tflite-int8, the bundle's); float files emulate 10x slower. Default: every TFLite export and the ONNX int8 of --onnx-target arm.",
        Optional[str], parse=csv_names, metavar="NAMES"),
)

BUNDLE = (
    Opt("out", ("--out", "--android-dir"), "The bundle folder (created; a bundle skinscan-edge wrote there before is replaced whole; the default is git-ignored).", Path,
        parse=str),
    Opt("model", ("--model",), "The export to bundle. Default: the report's recommendation, the fastest TFLite export that passed the gate (a phone's latency where the run has benchmark --adb rows; ties within the benchmark's noise go to the full-integer file).", Optional[str]),
    Opt("require", ("--require",), "'full-integer': choose only among uint8-in/out files, as NPU and Edge TPU delegates need.", Optional[str]),
    Opt("allow_failed", ("--allow-failed",), "Bundle a file that failed the gate (or was never evaluated); the bundle's README, metadata.json and model card then say FAILED. Without it such a file is refused.", bool),
)

BENCHMARK = (
    Opt("device", ("--device",), "auto (cpu, plus gpu where an NVIDIA driver is present), cpu, gpu or all. GPU rows are skipped, with the reason, where there is no CUDA device.", str),
    Opt("models", ("--model", "--models"), "Only these models, comma-separated (keras and export names from the manifest). Default: the Keras baseline and every export.",
        Optional[str], parse=csv_names, metavar="NAMES"),
    Opt("threads", ("--threads",), "Intra-op thread counts to measure, comma-separated: each count is a row (evaluate and predict take one count).", str, parse=csv_ints("--threads")),
    Opt("batches", ("--batch",), "Batch sizes for throughput, comma-separated.", str, parse=csv_ints("--batch")),
    Opt("min_time_s", ("--min-time",), "Seconds each measurement runs for, at least.", float),
    Opt("warmup", ("--warmup",), "Untimed runs before timing.", int),
    Opt("min_runs", ("--min-runs",), "Timed batch-1 runs, at least.", int),
    Opt("images", ("--images",), "Size of the seeded sample of test images.", int),
    Opt("floor", ("--floor/--no-floor",), "Measure the GEMM floor in the same run.", bool),
    Opt("adb", ("--adb",), "Also measure every TFLite export on an Android phone over adb: its serial (adb devices), or 'auto' for the only one attached. Needs --benchmark-model.", Optional[str], metavar="SERIAL"),
    Opt("benchmark_model", ("--benchmark-model",), "Path of LiteRT's benchmark_model binary for Android (docs/android.md: Phone latency over adb); pushed to the phone.", Optional[Path],
        parse=lambda v: str(v) if v else None, metavar="PATH"),
)
EXPLAIN = (
    Opt("models", ("--model", "--models"), "int8 exports to explain, comma-separated (e.g. tflite-int8,onnx-int8). Default: those that failed the gate in evaluate.json, else tflite-int8.",
        Optional[str], parse=csv_names, metavar="NAMES"),
    Opt("worst", ("--worst",), "How many of the worst layers to name.", int),
    Opt("max_flipped", ("--max-flipped",), "Measure at most this many flipped test images.", int),
)

#: The evaluate options pipeline exposes (its split, models and client are the pipeline's own).
PIPELINE_EVALUATE = ("arm64", "arm64_limit", "arm64_cpus", "arm64_models")
#: The benchmark options pipeline exposes (with --bench- in front); the others keep their defaults.
PIPELINE_BENCHMARK = ("device", "threads", "batches", "min_time_s")


def _flags(opt: Opt, prefix: str, rename: dict | None = None) -> tuple[str, ...]:
    if rename and opt.field in rename:
        return rename[opt.field]
    if not prefix:
        return opt.flags
    # --device stays --device in pipeline: it says where the pipeline benchmarks, nothing else.
    return tuple(f if f == "--device" else "--" + prefix + "-" + f.lstrip("-").replace("/--", f"/--{prefix}-")
                 for f in opt.flags)


def group(cls, opts: tuple[Opt, ...], into: str, prefix: str = "", only: tuple[str, ...] | None = None,
          rename: dict[str, tuple[str, ...]] | None = None):
    """Decorator: add ``opts`` to the command's options (defaults from ``cls``) and pass the
    command their values as one dict, ``into=`` (field name -> parsed value). ``rename`` gives
    some fields other flags in this command (pipeline's ``--android-dir`` for the bundle's out)."""
    chosen = [o for o in opts if only is None or o.field in only]

    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        params = [p for p in sig.parameters.values() if p.name != into]
        names = {o.field: f"{into}__{o.field}" for o in chosen}
        for o in chosen:
            option = typer.Option(_shown(default_of(cls, o.field), o.type), *_flags(o, prefix, rename), help=o.help,
                                  metavar=o.metavar, hidden=o.hidden, show_default=o.field != "critical_classes")
            params.append(inspect.Parameter(names[o.field], inspect.Parameter.KEYWORD_ONLY, default=option,
                                            annotation=o.type))

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            values = {}
            for o in chosen:
                v = kwargs.pop(names[o.field])
                values[o.field] = o.parse(v) if o.parse else v
            kwargs[into] = values
            return fn(*args, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=params)
        return wrapper

    return decorate


def train_group(fn):
    return group(C.TrainConfig, TRAIN, "train_opts")(fn)


def export_group(fn):
    return group(C.ExportConfig, EXPORT, "export_opts")(fn)


def gate_group(fn):
    return group(C.GateConfig, GATE, "gate_opts")(fn)


DATA = typer.Option(..., "--data", help="Image folder: one subfolder per class (Kaggle IMG_CLASSES/ is found automatically), or train/ val/ test/ subfolders.")

"""The configs of the stages that judge and ship an export: the gate, evaluate, benchmark, the
bundle and explain. Like core/config.py (the data, training and export configs, and the helpers
both use), the one place each of their defaults is declared."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

from skinscan_edge.core.arm64env import CPUS, find_env
from skinscan_edge.core.config import check_fields, CLIENTS, DEVICES, ECE_BINS, GateConfig, REQUIREMENTS
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.host import cuda_unavailable_reason




@dataclass
class EvaluateConfig(GateConfig):
    """What to evaluate; the gate's fields come from GateConfig. The run supplies everything else.

    Attributes:
      split: which persisted split to score ('test', 'val' or 'train').
      formats: model names (``keras`` and manifest names, e.g. ['tflite-int8']); None: all.
      batch_size: images decoded and fed per call; memory is bounded by this, not the split.
      num_threads: CPU threads for TFLite and onnxruntime; None lets each runtime choose.
      n_bootstrap: paired-bootstrap resamples for the 95% interval of Δaccuracy.
      seed: seed of the bootstrap, so the same predictions give the same interval.
      ece_bins: equal-width confidence bins for the expected calibration error.
      client: also score every TFLite export through a real client (``mediapipe``: MediaPipe's
        ImageClassifier, in its own venv, on the photos prepared as the Android guide says, gated,
        and on the original files, shown); None: not.
      arm64: also run every TFLite export (and the ONNX int8 file for --onnx-target arm) on arm64
        kernels under QEMU, on each of ``arm64_cpus`` (arm64.py; `make arm64-env` sets it up).
      arm64_limit: score the arm64 rows on a seeded sample of this many images (None: the split).
      arm64_cpus: emulated CPUs (names in arm64.CPUS).
      arm64_models: only these of the evaluated files on arm64 (None: every one that can run there).
    """

    split: str = "test"
    formats: list[str] | None = None
    batch_size: int = 32
    num_threads: int | None = None
    n_bootstrap: int = 1000
    seed: int = 0
    ece_bins: int = ECE_BINS
    client: str | None = None
    # --- arm64 (arm64.py) ---
    arm64: bool = False
    arm64_limit: int | None = None
    arm64_cpus: list[str] = field(default_factory=lambda: ["max", "cortex-a53"])
    arm64_models: list[str] | None = None

    RANGES: typing.ClassVar[dict] = {"batch_size": (1, 10**6, "at least 1"), "n_bootstrap": (1, 10**7, "at least 1"),
                                     "ece_bins": (1, 10**4, "at least 1"), "num_threads": (1, 4096, "at least 1")}

    def validate(self) -> "EvaluateConfig":

        if self.client is not None and self.client not in CLIENTS:
            raise SkinscanError("--client: " + did_you_mean(self.client, list(CLIENTS), "client"))
        if self.batch_size < 1:
            raise SkinscanError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.n_bootstrap < 1:
            raise SkinscanError(f"--bootstrap must be at least 1, got {self.n_bootstrap}")
        if self.arm64_limit is not None and self.arm64_limit < 1:
            raise SkinscanError(f"--arm64-limit must be at least 1, got {self.arm64_limit}")

        for cpu in self.arm64_cpus:
            if cpu not in CPUS:
                raise SkinscanError("--arm64-cpu: " + did_you_mean(cpu, list(CPUS), "CPU"))
        if self.arm64:
            find_env()  # before the slow part: one line naming what is missing
        self.validate_gate()
        return self


@dataclass
class BenchmarkConfig:
    """How to benchmark a run.

    Attributes:
      device: ``auto`` (``all`` where an NVIDIA driver is present, else ``cpu``), ``cpu``, ``gpu``
        or ``all``. GPU rows run ONNX on onnxruntime's CUDA (TensorRT where present) provider and
        Keras on TensorFlow's GPU; without a CUDA device they are recorded as skipped with the reason.
      threads: intra-op thread counts; every CPU model is measured at each.
      batches: batch sizes for throughput (images/s). Latency percentiles are at batch 1.
      warmup: untimed batch-1 runs after the first inference.
      min_time_s, min_runs: timed batch-1 runs continue until both are reached.
      min_batch_runs: timed runs per throughput batch (also at least ``min_time_s``).
      images: size of the fixed, seeded sample of the test split (tiled for bigger batches).
      seed: chooses that sample.
      models: names to run (``keras`` and manifest names); None runs the baseline and every export.
      floor: measure the GEMM floor in the same run (before and after the models; best kept).
      worker_timeout_s: a model taking longer is recorded as an error.
      adb: also measure every TFLite export on an Android phone over adb (its serial, or
        ``auto`` for the only attached one); needs ``benchmark_model`` (see adb_bench.py).
      benchmark_model: path of LiteRT's benchmark_model binary for Android, pushed to the phone.
    """

    device: str = "auto"
    threads: tuple[int, ...] = (1, 2)
    batches: tuple[int, ...] = (1, 8, 32)
    warmup: int = 5
    min_time_s: float = 2.0
    min_runs: int = 10
    min_batch_runs: int = 3
    images: int = 32
    seed: int = 0
    models: tuple[str, ...] | None = None
    floor: bool = True
    worker_timeout_s: float = 1800.0
    adb: str | None = None
    benchmark_model: str | None = None

    def __post_init__(self) -> None:
        check_fields(self)
        if bool(self.adb) != bool(self.benchmark_model):
            raise SkinscanError("--adb SERIAL and --benchmark-model PATH go together: the phone runs LiteRT's "
                                "benchmark_model binary (see docs/android.md, Phone latency over adb)")
        if self.device not in DEVICES:
            raise SkinscanError(did_you_mean(self.device, list(DEVICES), "--device", "devices"))
        self.threads, self.batches = tuple(self.threads), tuple(self.batches)
        if self.models is not None:
            self.models = tuple(self.models)
        for flag, values in (("--threads", self.threads), ("--batch", self.batches)):
            if not values or any(int(v) < 1 for v in values):
                raise SkinscanError(f"{flag} needs positive integers, got {values}")
        if self.warmup < 0 or self.min_time_s < 0 or self.min_runs < 1 or self.images < 1:
            raise SkinscanError("--warmup and --min-time must be >= 0, --min-runs and --images >= 1")

    def devices(self) -> list[str]:
        if self.device == "auto":
            return ["cpu"] if cuda_unavailable_reason() else ["cpu", "gpu"]
        return ["cpu", "gpu"] if self.device == "all" else [self.device]


@dataclass
class BundleConfig:
    """Which export goes into the Android bundle, and where the bundle goes.

    Attributes:
      out: the bundle folder (created; replaced whole when skinscan-edge wrote it before).
      model: the export to bundle; None picks the report's recommendation: the fastest TFLite
        export that passed the gate (a phone's latency where the run has ``benchmark --adb`` rows),
        ties within the benchmark's noise broken toward the full-integer file.
      require: ``full-integer`` restricts the choice to uint8-in/out files (NPU and Edge TPU
        delegates); None: any TFLite export.
      allow_failed: bundle a file that failed the gate (or was never evaluated), stamped FAILED in
        the bundle's README, metadata.json and model card. Without it such a file is refused.
    """

    out: str = "android_assets/bundle"
    model: str | None = None
    require: str | None = None
    allow_failed: bool = False

    def validate(self) -> "BundleConfig":

        if self.require is not None and self.require not in REQUIREMENTS:
            raise SkinscanError("--require: " + did_you_mean(self.require, list(REQUIREMENTS), "requirement"))
        return self


@dataclass
class ExplainConfig:
    """What ``explain`` measures.

    Attributes:
      models: int8 export names (e.g. ['tflite-int8']); None: those that failed the gate in
        evaluate.json, else tflite-int8.
      worst: how many of the worst layers are named (report, plot).
      max_flipped: at most this many flipped test images are measured.
    """

    models: list[str] | None = None
    worst: int = 10
    max_flipped: int = 64

    def __post_init__(self) -> None:
        check_fields(self)

    def validate(self) -> "ExplainConfig":
        if self.worst < 1 or self.max_flipped < 1:
            raise SkinscanError(f"--worst and --max-flipped must be at least 1, got {self.worst}, {self.max_flipped}")
        return self

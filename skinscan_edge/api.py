"""The Python API: what every command does, for notebooks and scripts.

Each function takes the same config dataclass as its command, returns a typed result and
raises :class:`~skinscan_edge.errors.SkinscanError` (the one-line message the CLI prints)
instead of exiting. Progress goes to ``reporter``: rich bars by default, which render in
Jupyter too; pass ``progress.Reporter()`` for silence. The CLI commands are thin wrappers over
exactly these functions.

>>> # import skinscan_edge as se
>>> # se.train(se.TrainConfig(data="data/demo", out="runs/nb", img_size=75, weights="none"))
>>> # se.export("runs/nb", se.ExportConfig(precisions=["int8"]))
>>> # result = se.evaluate("runs/nb", se.EvaluateConfig(critical_classes=["Melanoma"]))
>>> # result.passed, result.failures
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import BenchmarkConfig, BundleConfig, EvaluateConfig, ExplainConfig, ExportConfig, TrainConfig
from .progress import Reporter

_DEFAULT = object()


def _reporter(reporter) -> Reporter:
    if reporter is _DEFAULT:
        from .progress import RichReporter

        return RichReporter()
    from .progress import reporter_or_silent

    return reporter_or_silent(reporter)


def _open(run_dir):
    from .rundir import RunDir

    return run_dir if isinstance(run_dir, RunDir) else RunDir.open(run_dir)


@dataclass
class TrainResult:
    """``run``: the run directory; ``chief``: False on a non-chief multi-worker process, which
    wrote nothing (the other fields are then empty)."""

    run: Path
    chief: bool = True
    test_accuracy: float | None = None
    n_test: int = 0
    train_seconds: float | None = None
    labels: list[str] = field(default_factory=list)
    report_text: str = ""
    task: str = "chief"
    duplicates: str = ""


@dataclass
class ExportResult:
    """The manifest as written; ``ok`` is False when a conversion failed (``failures``)."""

    run: Path
    manifest: dict

    @property
    def manifest_path(self) -> Path:
        from .runfiles import Manifest

        return Manifest.path(self.run)

    @property
    def exports(self) -> list[dict]:
        return self.manifest["exports"]

    @property
    def failures(self) -> list[dict]:
        return self.manifest["failures"]

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class EvaluateResult:
    """``results`` is evaluate.json; ``passed`` and ``failures`` are the gate's verdict."""

    run: Path
    results: dict

    @property
    def passed(self) -> bool:
        return self.results["gate"]["passed"]

    @property
    def failures(self) -> list[str]:
        """The gate's failures as sentences (``results["gate"]["failures"]`` holds them as records)."""
        from .metrics import failure_text

        return [failure_text(f) for f in self.results["gate"]["failures"]]

    @property
    def summary(self) -> str:
        """The gate's one line: the verdict, and how many exports were requested and checked."""
        r = self.results
        partial = "; partial set" if r.get("partial") else ""
        counts = f"{r.get('exports_checked', len(r['models']) - 1)} of {r.get('exports_requested', '?')} requested exports checked{partial}"
        return f"gate {'passed' if self.passed else 'failed'} ({counts})"


@dataclass
class ExplainResult:
    """``results`` is quant_debug.json; ``models`` one entry per export explained (``worst`` first)."""

    run: Path
    results: dict

    @property
    def models(self) -> list[dict]:
        return self.results["models"]

    def worst_layers(self, name: str) -> list[str]:
        """Keras layer names of ``name``'s worst layers, worst first."""
        m = next(m for m in self.models if m["name"] == name)
        return [w["keras_layer"] or w["layer"] for w in m["worst"]]


@dataclass
class BenchmarkResult:
    """``results`` is benchmark.json; ``rows`` one dict per (model, device, threads)."""

    run: Path
    results: dict

    @property
    def rows(self) -> list[dict]:
        return self.results["rows"]

    @property
    def json_path(self) -> Path:
        from .runfiles import BenchmarkReport

        return BenchmarkReport.path(self.run)

    @property
    def errors(self) -> list[dict]:
        return [r for r in self.rows if "error" in r]


@dataclass
class Prediction:
    """One image: ``top_k`` as (label, score) pairs, best first, or ``skipped`` with the reason."""

    path: str
    top_k: list[tuple[str, float]] = field(default_factory=list)
    skipped: str | None = None
    detail: str = ""


@dataclass
class PipelineResult:
    run: Path
    stages: dict
    ok: bool

    @property
    def report(self) -> Path:
        return self.run / "reports" / "index.html"


def train(config: TrainConfig, reporter: Reporter | None = _DEFAULT) -> TrainResult:
    """Fine-tune InceptionV3 and write the run directory (``skinscan-edge train``)."""
    from .training import train as train_run

    r = train_run(config, reporter=_reporter(reporter))
    if not r["chief"]:
        return TrainResult(run=Path(config.out), chief=False, task=r["task"])
    return TrainResult(run=Path(r["run"]), test_accuracy=r["test_accuracy"], n_test=r["n_test"],
                       train_seconds=r["train_seconds"], labels=r["labels"], report_text=r["report_text"],
                       duplicates=r.get("duplicates") or "")


def export(run_dir, config: ExportConfig | None = None, reporter: Reporter | None = _DEFAULT) -> ExportResult:
    """Export at the configured precisions (``skinscan-edge export``)."""
    from .exporters.run import export_run

    run = _open(run_dir)
    manifest = export_run(run, config or ExportConfig(), reporter=_reporter(reporter))
    return ExportResult(run=run.root, manifest=manifest)


def bundle(run_dir, config: BundleConfig | None = None) -> dict:
    """Write the Android bundle from an evaluated export (``skinscan-edge bundle``): by default the
    report's recommendation; a file that failed the gate only with ``allow_failed``. Returns a
    flat summary (``model_path``, ``source_export``, ``verdict``, ``why``, ``zip_path``...)."""
    from .release.bundle import write_bundle
    from .release.choose import choose

    config = (config or BundleConfig()).validate()
    run = _open(run_dir)
    choice = choose(run, model=config.model, require=config.require, allow_failed=config.allow_failed)
    return write_bundle(run, Path(config.out), choice)


def evaluate(run_dir, config: EvaluateConfig | None = None, reporter: Reporter | None = _DEFAULT) -> EvaluateResult:
    """Score Keras and every export on the same images and gate them (``skinscan-edge evaluate``)."""
    from .evaluation import evaluate_run

    run = _open(run_dir)
    return EvaluateResult(run=run.root, results=evaluate_run(run, config or EvaluateConfig(), reporter=_reporter(reporter)))


def explain(run_dir, config: ExplainConfig | None = None, reporter: Reporter | None = _DEFAULT) -> ExplainResult:
    """Per-layer quantization error of int8 exports (``skinscan-edge explain``)."""
    from .explain import explain_run

    run = _open(run_dir)
    results = explain_run(run, config or ExplainConfig(), reporter=_reporter(reporter))
    names = (config.models if config and config.models else None)
    models = [m for m in results["models"] if names is None or m["name"] in names]
    return ExplainResult(run=run.root, results={**results, "models": models} if names else results)


def benchmark(run_dir, config: BenchmarkConfig | None = None, reporter: Reporter | None = _DEFAULT) -> BenchmarkResult:
    """Latency, throughput, memory and the floor for every model (``skinscan-edge benchmark``)."""
    from .benchmarking import run_benchmark

    run = _open(run_dir)
    return BenchmarkResult(run=run.root, results=run_benchmark(run.root, config or BenchmarkConfig(),
                                                                 reporter=_reporter(reporter)))


def predict(run_dir, images, model: str = "keras", top_k: int = 3, num_threads: int | None = None) -> list[Prediction]:
    """Top-k labels for image files or folders (``skinscan-edge predict``), through any model."""
    from .prediction import predict_images

    paths = [Path(p) for p in ([images] if isinstance(images, (str, Path)) else images)]
    out = []
    for r in predict_images(_open(run_dir), paths, model=model, top_k=top_k, num_threads=num_threads):
        out.append(Prediction(path=r["path"], top_k=[(t["label"], t["score"]) for t in r.get("top_k", [])],
                              skipped=r.get("skipped"), detail=r.get("detail", "")))
    return out


def report(run_dir) -> Path:
    """Render ``RUN/reports/index.html`` (``skinscan-edge report``) and return its path."""
    from .reporting import build_report

    return build_report(_open(run_dir))


def pipeline(config, reporter: Reporter | None = _DEFAULT) -> PipelineResult:
    """Train, export, evaluate, benchmark and report, skipping what is done (``skinscan-edge pipeline``).

    ``config`` is a ``pipeline.PipelineConfig``."""
    from .stages import run_pipeline

    state = run_pipeline(config, reporter=_reporter(reporter))
    return PipelineResult(run=Path(config.train.out), stages=state["stages"], ok=state["ok"])

"""The Python API: what every command does, for notebooks and scripts.

Each function takes the same config dataclass as its command, returns a typed result and
raises :class:`~skinscan_edge.core.errors.SkinscanError` (the one-line message the CLI prints)
instead of exiting. Progress goes to ``reporter``: rich bars by default (in Jupyter too, with
ipywidgets; plain lines without it); pass ``progress.Reporter()`` for silence. The CLI commands are thin wrappers over
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

from skinscan_edge.benchmark.harness import run_benchmark
from skinscan_edge.core.config import ExportConfig, TrainConfig
from skinscan_edge.core.config_stages import BenchmarkConfig, BundleConfig, EvaluateConfig, ExplainConfig
from skinscan_edge.core.errors import user_facing
from skinscan_edge.core.formats import EVERY_PRECISION
from skinscan_edge.core.metrics import failure_text
from skinscan_edge.core.progress import default_reporter, Reporter, reporter_or_silent
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.runfiles import BenchmarkReport, Manifest
from skinscan_edge.data.demo import DEFAULT_PER_CLASS, DEFAULT_SIZE, write_demo_dataset
from skinscan_edge.data.fingerprint import data_change
from skinscan_edge.evaluation.evaluate import evaluate_run
from skinscan_edge.evaluation.explain import explain_run
from skinscan_edge.evaluation.markdown import comparison_rows, TABLE_COLUMNS, twin_rows
from skinscan_edge.exporters.run import export_run
from skinscan_edge.release.bundle import write_bundle
from skinscan_edge.release.choose import choose
from skinscan_edge.report.page import build_report
from skinscan_edge.runtimes.prediction import predict_images
from skinscan_edge.stages import PipelineConfig, run_pipeline, STAGES
from skinscan_edge.training.fine_tune import train as train_run

#: Re-exported for the commands, which import nothing but this module (and core's configs,
#: errors and progress): the pipeline's config and stages, every precision, the demo's defaults.
__all__ = ["train", "export", "evaluate", "explain", "benchmark", "bundle", "predict", "report", "pipeline",
           "demo_data", "PipelineConfig", "STAGES", "EVERY_PRECISION", "DEFAULT_PER_CLASS", "DEFAULT_SIZE",
           "TrainResult", "ExportResult", "EvaluateResult", "ExplainResult", "BenchmarkResult", "Prediction",
           "PipelineResult"]


class _DefaultReporter:
    """The ``reporter`` default, named so that ``help()`` shows what it means (a bare
    ``object()`` shows as ``<object object at 0x...>``)."""

    def __repr__(self) -> str:
        return "<progress for this terminal or notebook>"


_DEFAULT = _DefaultReporter()


def _reporter(reporter) -> Reporter:
    if reporter is _DEFAULT:
        return default_reporter()

    return reporter_or_silent(reporter)


def _open(run_dir):
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
        return [failure_text(f) for f in self.results["gate"]["failures"]]

    @property
    def table(self) -> tuple[list[str], list[list[str]]]:
        """The comparison table (columns, one row of strings per model), as evaluate.md shows it."""
        return TABLE_COLUMNS, comparison_rows(self.results)

    @property
    def twin_rows(self) -> list[list[str]]:
        """Each QAT file against its float twin (quantization alone; not gated), as strings."""
        return twin_rows(self.results)

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


@user_facing
def train(config: TrainConfig, reporter: Reporter | None = _DEFAULT) -> TrainResult:
    """Fine-tune InceptionV3 and write the run directory (``skinscan-edge train``)."""
    r = train_run(config, reporter=_reporter(reporter))
    if not r["chief"]:
        return TrainResult(run=Path(config.out), chief=False, task=r["task"])
    return TrainResult(run=Path(r["run"]), test_accuracy=r["test_accuracy"], n_test=r["n_test"],
                       train_seconds=r["train_seconds"], labels=r["labels"], report_text=r["report_text"],
                       duplicates=r.get("duplicates") or "")


@user_facing
def export(run_dir, config: ExportConfig | None = None, reporter: Reporter | None = _DEFAULT) -> ExportResult:
    """Export at the configured precisions (``skinscan-edge export``)."""
    run = _open(run_dir)
    manifest = export_run(run, config or ExportConfig(), reporter=_reporter(reporter))
    return ExportResult(run=run.root, manifest=manifest)


@user_facing
def bundle(run_dir, config: BundleConfig | None = None) -> dict:
    """Write the Android bundle from an evaluated export (``skinscan-edge bundle``): by default the
    report's recommendation; a file that failed the gate only with ``allow_failed``. Returns a
    flat summary (``model_path``, ``source_export``, ``verdict``, ``why``, ``zip_path``...)."""
    config = (config or BundleConfig()).validate()
    run = _open(run_dir)
    choice = choose(run, model=config.model, require=config.require, allow_failed=config.allow_failed)
    return write_bundle(run, Path(config.out), choice)


@user_facing
def evaluate(run_dir, config: EvaluateConfig | None = None, reporter: Reporter | None = _DEFAULT) -> EvaluateResult:
    """Score Keras and every export on the same images and gate them (``skinscan-edge evaluate``)."""
    run, say = _open(run_dir), _reporter(reporter)
    if change := data_change(run):  # still the saved split: the warning says the data moved on
        say.message(f"warning: {change.warning()}; evaluating the split saved at training", "warn")
    results = evaluate_run(run, config or EvaluateConfig(), reporter=say)
    if results.get("leak_warning"):
        say.message(f"warning: {results['leak_warning']}", "warn")
    return EvaluateResult(run=run.root, results=results)


@user_facing
def explain(run_dir, config: ExplainConfig | None = None, reporter: Reporter | None = _DEFAULT) -> ExplainResult:
    """Per-layer quantization error of int8 exports (``skinscan-edge explain``)."""
    run = _open(run_dir)
    results = explain_run(run, config or ExplainConfig(), reporter=_reporter(reporter))
    names = (config.models if config and config.models else None)
    models = [m for m in results["models"] if names is None or m["name"] in names]
    return ExplainResult(run=run.root, results={**results, "models": models} if names else results)


@user_facing
def benchmark(run_dir, config: BenchmarkConfig | None = None, reporter: Reporter | None = _DEFAULT) -> BenchmarkResult:
    """Latency, throughput, memory and the floor for every model (``skinscan-edge benchmark``)."""
    run = _open(run_dir)
    return BenchmarkResult(run=run.root, results=run_benchmark(run.root, config or BenchmarkConfig(),
                                                                 reporter=_reporter(reporter)))


@user_facing
def predict(run_dir, images, model: str = "keras", top_k: int = 3, num_threads: int | None = None) -> list[Prediction]:
    """Top-k labels for image files or folders (``skinscan-edge predict``), through any model."""
    paths = [Path(p) for p in ([images] if isinstance(images, (str, Path)) else images)]
    out = []
    for r in predict_images(_open(run_dir), paths, model=model, top_k=top_k, num_threads=num_threads):
        out.append(Prediction(path=r["path"], top_k=[(t["label"], t["score"]) for t in r.get("top_k", [])],
                              skipped=r.get("skipped"), detail=r.get("detail", "")))
    return out


@user_facing
def report(run_dir) -> Path:
    """Render ``RUN/reports/index.html`` (``skinscan-edge report``) and return its path."""
    return build_report(_open(run_dir))


@user_facing
def pipeline(config, reporter: Reporter | None = _DEFAULT) -> PipelineResult:
    """Train, export, evaluate, benchmark and report, skipping what is done (``skinscan-edge pipeline``).

    ``config`` is a ``pipeline.PipelineConfig``."""
    state = run_pipeline(config, reporter=_reporter(reporter))
    return PipelineResult(run=Path(config.train.out), stages=state["stages"], ok=state["ok"])


@user_facing
def demo_data(out, per_class: int = DEFAULT_PER_CLASS, size: int = DEFAULT_SIZE, seed: int = 0, overwrite: bool = False,
              reporter: Reporter | None = _DEFAULT) -> dict:
    """Write the SYNTHETIC demo dataset (``skinscan-edge demo-data``): procedurally drawn, NOT medical
    images, one folder per class and a README.txt that says so. Returns its summary (counts, seed,
    the planted near-duplicates, the time taken)."""
    return write_demo_dataset(Path(out), per_class=per_class, size=size, seed=seed, reporter=_reporter(reporter),
                              overwrite=overwrite)

"""``skinscan-edge pipeline``: train, export, evaluate, benchmark, report and bundle in one go.

Running the same command again skips every stage whose outputs are there, intact, and made
from the current inputs with the same settings (see :func:`stage_is_current`), resumes an
interrupted training, and redoes a stage whose inputs changed; a redone export changes the
manifest, which redoes evaluate and benchmark. ``RUN/pipeline.json`` records what each stage
did (ran or skipped, seconds, summary) for the display.

>>> # run_pipeline(PipelineConfig(train=TrainConfig(data="data/demo", out="runs/demo", ...)))
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from skinscan_edge.benchmark.harness import run_benchmark
from skinscan_edge.core import runfiles
from skinscan_edge.core.config import ExportConfig, TrainConfig
from skinscan_edge.core.config_stages import BenchmarkConfig, BundleConfig, EvaluateConfig
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import read_json_or_none, sha256_file, timestamp, write_json
from skinscan_edge.core.formats import EVERY_PRECISION
from skinscan_edge.core.metrics import failure_text
from skinscan_edge.core.progress import Reporter, reporter_or_silent
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.runlock import run_lock
from skinscan_edge.core.workers import PEAKS, peaks_since, reset_peak_rss
from skinscan_edge.data.fingerprint import data_change
from skinscan_edge.evaluation.evaluate import evaluate_run
from skinscan_edge.exporters.run import export_run, reusable_entries
from skinscan_edge.release.bundle import bundle_is_current, write_bundle
from skinscan_edge.release.choose import choose, PASSED
from skinscan_edge.report.page import build_report
from skinscan_edge.training.fine_tune import check_files, train

STAGES = ("train", "export", "evaluate", "benchmark", "report", "bundle")
STATE_NAME = "pipeline.json"

#: Why train is skipped when the data changed and ``keep_model`` is set; the warning follows it.
KEPT = "kept with --keep-model; "

#: TrainConfig fields that say where and how a run continues, not what it trains.
_PLACEMENT_FIELDS = ("out", "resume", "strategy", "cpu_replicas", "mixed_precision")


@dataclass
class PipelineConfig:
    """The settings of every stage; each stage's own config documents its fields."""

    train: TrainConfig
    export: ExportConfig = field(default_factory=lambda: ExportConfig(precisions=list(EVERY_PRECISION)))
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    bundle: BundleConfig | None = None  # the Android bundle, after the gate (``--android``); None: no bundle
    keep_model: bool = False  # when the data changed since training: keep the model (and warn) instead of retraining


def _same(a, b) -> bool:
    """Settings equal once both are plain JSON (tuples and lists alike)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _train_settings(cfg: TrainConfig) -> dict:
    d = cfg.to_dict()
    for k in _PLACEMENT_FIELDS:
        d.pop(k, None)
    return d


def stage_is_current(stage: str, cfg: PipelineConfig, run: RunDir) -> str | None:
    """Why ``stage``'s outputs can be reused, or None when the stage must run.

    Decided from the files themselves, not from pipeline.json, so that a stage run by its own
    command (``skinscan-edge export`` ...) with the same settings counts as done: the manifest
    records the model it was made from, evaluate.json and benchmark.json the manifest they read.
    """
    if stage == "train":
        return _train_is_done(cfg, run)
    if stage == "report":
        return None  # always rendered again: it is cheap and reads everything
    if stage == "bundle":
        return _bundle_current(cfg, run)
    manifest = runfiles.read_or_none(runfiles.Manifest, run.manifest_path)
    if not manifest:
        return None
    if stage == "export":
        return _exports_current(cfg, run, manifest)
    report = (runfiles.read_or_none(runfiles.EvaluateReport, run.evaluate_path) if stage == "evaluate"
              else runfiles.read_or_none(runfiles.BenchmarkReport, run.benchmark_path))
    key, mine = ("settings", cfg.evaluate) if stage == "evaluate" else ("config", cfg.benchmark)
    if report and report.get("manifest_sha256") == sha256_file(run.manifest_path) and _same(report.get(key), asdict(mine)):
        return "same exports, same settings"
    return None


def _exports_current(cfg: PipelineConfig, run: RunDir, manifest: dict) -> str | None:
    if manifest.get("state", "complete") != "complete" or manifest.get("failures"):
        return None
    wanted = set(cfg.export.validate().names())
    if set(manifest.get("config", {}).get("precisions", [])) != set(cfg.export.precisions) \
            or not wanted <= set(reusable_entries(run, manifest, cfg.export)):
        return None
    return "made from this model with the same settings; SHA-256 verified"


def _bundle_current(cfg: PipelineConfig, run: RunDir) -> str | None:
    """No bundle asked for, or the bundle folder already holds the chosen file with its verdict."""
    if cfg.bundle is None:
        return "no --android: no bundle asked for"

    try:
        choice = choose(run, cfg.bundle.model, cfg.bundle.require, cfg.bundle.allow_failed)
    except SkinscanError:
        return None  # the stage runs and records why nothing can be bundled
    if bundle_is_current(run, Path(cfg.bundle.out), choice):
        return f"{cfg.bundle.out} already holds {choice.name} (gate {choice.verdict.verdict}); SHA-256 verified"
    return None


def _train_is_done(cfg: PipelineConfig, run: RunDir) -> str | None:
    """A finished run is reused only if it was trained with the same settings on the same data
    (``skinscan_edge.data.fingerprint``), or, with ``keep_model``, on an older copy of it."""
    if run.status().get("state") != "complete" or not run.model_path.exists():
        return None
    mine, theirs = _train_settings(cfg.train), _train_settings(TrainConfig.from_dict(run.config()["train"]))
    if mine != theirs:
        diff = next(k for k in mine if mine[k] != theirs.get(k))
        raise SkinscanError(f"{run.root} holds a finished run trained with other settings ({diff}: "
                            f"{theirs.get(diff)!r}, asked {mine[diff]!r}); use a new --out")
    change = data_change(run, cfg.train.data)
    if change is None:
        return "trained with the same settings"
    return KEPT + change.warning() if cfg.keep_model else None


def run_pipeline(cfg: PipelineConfig, reporter: Reporter | None = None) -> dict:
    """Run the stages that are not current; return the pipeline state (also in pipeline.json).

    The return value has ``stages`` (per stage: ``state`` ran | skipped, ``seconds``, ``summary``,
    ``ok``) and ``ok``: False when an export failed, the evaluate gate failed or a benchmark row
    errored. ``reporter`` sees ``stage`` when a stage starts, a ``row("stage", record)`` when it
    ends, and the stages' own messages and rows.
    """
    check_files(cfg.train.validate())  # every stage's settings are checked before the first one starts
    cfg.export.validate()
    cfg.evaluate.validate()
    with run_lock(cfg.train.out, "pipeline", create=True):  # held across the stages, which take it again
        return _run_stages(cfg, RunDir(Path(cfg.train.out)), reporter_or_silent(reporter))


def _run_stages(cfg: PipelineConfig, run: RunDir, say: Reporter) -> dict:
    state = read_json_or_none(run.root / STATE_NAME) or {"stages": {}}
    state["ok"] = True
    for index, stage in enumerate(STAGES, 1):
        say.stage(stage, index, len(STAGES))
        t0 = time.time()
        why = stage_is_current(stage, cfg, run)
        if why:
            record = {"state": "skipped", "why": why, "ok": _verdict(stage, run), "summary": _SUMMARIES[stage](run)}
            if why.startswith(KEPT):
                record["warning"] = why.removeprefix(KEPT)
        else:
            reset_peak_rss()  # so the stage's record holds its own peak, not an earlier stage's
            n_peaks = len(PEAKS)
            summary, ok = _STAGE_RUNNERS[stage](cfg, run, say)
            record = {"state": "ran", "seconds": round(time.time() - t0, 1), "summary": summary,
                      "ok": ok, "finished": timestamp(), **peaks_since(n_peaks)}
        state["ok"] = state["ok"] and record["ok"]
        state["stages"][stage] = record
        write_json(run.root / STATE_NAME, state)
        say.row("stage", {"stage": stage, **record})
    return state


def _verdict(stage: str, run: RunDir) -> bool:
    """A reused stage's verdict, read from its own files."""
    if stage == "evaluate":
        return bool((runfiles.read_or_none(runfiles.EvaluateReport, run.evaluate_path) or {}).get("gate", {}).get("passed"))
    if stage == "benchmark":
        rows = (runfiles.read_or_none(runfiles.BenchmarkReport, run.benchmark_path) or {}).get("rows", [])
        return not any("error" in r for r in rows)
    return True


_SUMMARIES = {
    "train": lambda run: f"test accuracy {run.status().get('test_accuracy', float('nan')):.4f}",
    "export": lambda run: f"{len((runfiles.read_or_none(runfiles.Manifest, run.manifest_path) or {}).get('exports', []))} exports",
    "evaluate": lambda run: "gate " + ("passed" if _verdict("evaluate", run) else "failed"),
    "benchmark": lambda run: f"{len((runfiles.read_or_none(runfiles.BenchmarkReport, run.benchmark_path) or {}).get('rows', []))} rows",
    "report": lambda run: str(run.reports / "index.html"),
    "bundle": lambda run: "",
}


def _run_train(cfg: PipelineConfig, run: RunDir, say: Reporter) -> tuple[str, bool]:
    train_cfg = TrainConfig.from_dict(cfg.train.to_dict())
    started = run.config_path.exists()
    if started and _train_settings(TrainConfig.from_dict(run.config()["train"])) != _train_settings(cfg.train):
        raise SkinscanError(f"{run.root} holds an interrupted run with other settings; "
                            f"resume it with the same options or use a new --out")
    change = data_change(run, cfg.train.data) if started else None
    if change is not None:
        say.message(f"data changed since training: {change.describe()}; training again "
                    f"(--keep-model keeps the old model)", "warn")
    train_cfg.resume = started and change is None  # an interrupted run continues from its last epoch
    result = train(train_cfg, reporter=say, replace=change is not None)
    if not result["chief"]:
        raise SkinscanError("the pipeline runs on the chief only; start `train` on the other workers")
    duplicates = f"; {result['duplicates']}" if result.get("duplicates") else ""
    return f"test accuracy {result['test_accuracy']:.4f} on {result['n_test']} images{duplicates}", True


def _run_export(cfg: PipelineConfig, run: RunDir, say: Reporter) -> tuple[str, bool]:
    manifest = export_run(RunDir.open(run.root), cfg.export, reporter=say)
    summary = f"{len(manifest['exports'])} exports"
    failed = [f["name"] for f in manifest["failures"]]
    if failed:
        summary += f"; failed: {', '.join(failed)}"
    return summary, not failed


def _run_evaluate(cfg: PipelineConfig, run: RunDir, say: Reporter) -> tuple[str, bool]:
    results = evaluate_run(RunDir.open(run.root), cfg.evaluate, reporter=say)
    gate = results["gate"]
    say.row("evaluate", results)
    return evaluate_summary(results), gate["passed"]


def evaluate_summary(results: dict) -> str:
    """The evaluate stage's line: images, exports, the extra rows by kind, the gate's verdict."""
    gate = results["gate"]
    verdict = "gate passed" if gate["passed"] else f"gate failed: {'; '.join(map(failure_text, gate['failures']))}"
    models = [m for m in results["models"] if m["name"] != "keras"]
    exports = [m for m in models if not m.get("client")]
    arm64 = sum(1 for m in models if m.get("arm64"))
    clients = len(models) - len(exports) - arm64
    extra = (f" + {clients} MediaPipe client row(s)" if clients else "") + (f" + {arm64} arm64 row(s)" if arm64 else "")
    return f"{results['num_images']} images, {len(exports)} exports{extra}; {verdict}"


def _run_benchmark(cfg: PipelineConfig, run: RunDir, say: Reporter) -> tuple[str, bool]:
    results = run_benchmark(run.root, cfg.benchmark, reporter=say)
    errors = [r for r in results["rows"] if "error" in r]
    timed = [r for r in results["rows"] if r.get("latency_p50_ms")]
    summary = f"{len(timed)} rows timed"
    if errors:
        summary += f"; {len(errors)} failed: " + "; ".join(f"{r['model']}: {r['error']}" for r in errors)
    return summary, not errors


def _run_report(cfg: PipelineConfig, run: RunDir, say: Reporter) -> tuple[str, bool]:
    page = build_report(RunDir.open(run.root))  # writes RUN/MODEL_CARD.md too
    return str(page), True


def _run_bundle(cfg: PipelineConfig, run: RunDir, say: Reporter) -> tuple[str, bool]:
    """After the gate and the benchmark: the bundle of the report's recommended file (which the
    model card, written by the report stage, goes with). Nothing to bundle is a failed stage, not
    a crash: the summary says why."""
    try:
        choice = choose(run, cfg.bundle.model, cfg.bundle.require, cfg.bundle.allow_failed)
    except SkinscanError as e:
        say.message(f"no Android bundle: {e}", "warn")
        return f"no bundle: {e}", False
    done = write_bundle(run, Path(cfg.bundle.out), choice)
    return (f"{done['model_path']} ({choice.name}, gate {choice.verdict.verdict}): {choice.why}",
            choice.verdict.verdict == PASSED)


_STAGE_RUNNERS = {"train": _run_train, "export": _run_export, "evaluate": _run_evaluate,
                  "benchmark": _run_benchmark, "report": _run_report, "bundle": _run_bundle}

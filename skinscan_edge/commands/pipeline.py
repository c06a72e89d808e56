"""``skinscan-edge pipeline``: images in, a report and shippable files out, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from skinscan_edge.api import EVERY_PRECISION, EvaluateResult, pipeline, PipelineConfig, STAGES
from skinscan_edge.commands import options, user_errors
from skinscan_edge.commands.evaluate import print_table
from skinscan_edge.core.config import ExportConfig, GateConfig, TrainConfig
from skinscan_edge.core.config_stages import BenchmarkConfig, BundleConfig, EvaluateConfig
from skinscan_edge.core.progress import RichReporter


@user_errors
@options.train_group
@options.export_group
@options.gate_group
@options.group(EvaluateConfig, options.EVALUATE, "eval_opts", only=options.PIPELINE_EVALUATE)
@options.group(BenchmarkConfig, options.BENCHMARK, "bench_opts", prefix="bench", only=options.PIPELINE_BENCHMARK)
@options.group(BundleConfig, options.BUNDLE, "bundle_opts", only=("out", "require"), rename={"out": ("--android-dir",)})
def command(
    data: Path = options.DATA,
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default runs/<name of --data>). Re-running with the same --out skips the stages that are finished and valid."),
    qat: bool = typer.Option(True, "--qat/--no-qat", help="Include the quantization-aware-training export (the slowest one)."),
    keep_model: bool = typer.Option(False, "--keep-model", help="When the data folder changed since training, keep the trained model (with a warning in the summary and the report) instead of training again."),
    android: bool = typer.Option(False, "--android", help="Also write the Android bundle after the gate and the benchmark (stage 6, `skinscan-edge bundle`): the report's recommended file, and score every TFLite export through MediaPipe in evaluate."),
    client: bool = typer.Option(True, "--client/--no-client", help="With --android: score every TFLite export through MediaPipe (evaluate --client mediapipe), gated on photos prepared as the Android guide says. --no-client leaves that check out (the bundle then carries no MediaPipe figures)."),
    train_opts: dict = None,
    export_opts: dict = None,
    gate_opts: dict = None,
    eval_opts: dict = None,
    bench_opts: dict = None,
    bundle_opts: dict = None,
) -> None:
    """Train, export (every precision), evaluate, benchmark, write RUN/reports/index.html, and, with --android, the Android bundle.

    Each stage's settings and input hashes are kept in RUN/pipeline.json; running the same command again skips the stages that are finished and valid, resumes an interrupted training, and redoes what changed. Exit codes: 0 done and the gate passed; 1 done, but an export failed, the gate failed or a benchmark row failed; 2 a problem with the input; 130 interrupted.
    """
    out = out or Path("runs") / data.resolve().name
    cfg = PipelineConfig(
        train=TrainConfig(data=str(data), out=str(out), **train_opts),
        export=ExportConfig(precisions=[p for p in EVERY_PRECISION if qat or p != "qat"],
                            gate=GateConfig(**gate_opts), **export_opts),
        evaluate=EvaluateConfig(**gate_opts, **eval_opts, client="mediapipe" if android and client else None),  # what the phone sees
        benchmark=BenchmarkConfig(**bench_opts),
        bundle=BundleConfig(**bundle_opts) if android else None, keep_model=keep_model,
    )
    display = PipelineReporter()
    result = pipeline(cfg, reporter=display)
    _summary_table(result.stages, display.console)
    typer.echo(f"report: {result.report}")
    if not result.ok:
        raise typer.Exit(1)


class PipelineReporter(RichReporter):
    """The CLI's pipeline display: a rule per stage, one line when it ends, the evaluate table."""

    def row(self, kind: str, row: dict) -> None:
        if kind == "stage":
            how = f"skipped ({row.get('why')})" if row["state"] == "skipped" else f"done in {row['seconds']:.0f} s"
            self.message(f"{row['stage']}: {how}" + (f": {row['summary']}" if row.get("summary") else ""))
        elif kind == "evaluate":  # the pipeline sends evaluate.json as it is written
            print_table(EvaluateResult(run=Path(), results=row))
        else:
            super().row(kind, row)


def _summary_table(stages: dict, console) -> None:
    from rich.console import Console
    from rich.table import Table

    if not console.is_terminal:  # CI logs and pipes: whole cells, as evaluate's table does
        console = Console(stderr=console.stderr, width=160)
    table = Table(title="pipeline")
    for col in ("stage", "state", "seconds", "peak RSS MiB (this process / largest worker)", "result"):
        table.add_column(col)
    for name in STAGES:
        r = stages.get(name, {})
        ran = r.get("state") == "ran"
        peak = (f"{r['peak_rss_mib']:,}" + (f" / {r['worker_peak_rss_mib']:,}" if "worker_peak_rss_mib" in r else "")
                if ran and "peak_rss_mib" in r else "-")
        table.add_row(name, r.get("state", "-"), f"{r['seconds']:.0f}" if ran else "-", peak, str(r.get("summary", "")))
    console.print(table)
    for name in STAGES:
        if stages.get(name, {}).get("warning"):
            console.print(f"[yellow]warning: {name}: {stages[name]['warning']}", highlight=False)

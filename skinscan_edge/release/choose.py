"""Which export ships to phones: decided from the gate's verdict and the benchmark, after both ran.

:func:`choose` is the one place the choice is made: the report's "Which file to ship" and
``skinscan-edge bundle`` both call it, so they cannot disagree. By default it picks the fastest
TFLite export that passed the gate (on a phone's latency where the run has ``benchmark --adb``
rows, else the desktop CPU's); latencies within the benchmark's noise margin are a tie, broken
toward the full-integer file, which more phone accelerators (NPU and Edge TPU delegates) can run.

>>> # choice = choose(RunDir.open("runs/demo"))
>>> # choice.name, choice.why
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skinscan_edge.benchmark.quant_order import MARGIN
from skinscan_edge.core import runfiles
from skinscan_edge.core.config import REQUIREMENTS
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.files import sha256_file
from skinscan_edge.core.formats import spec
from skinscan_edge.core.manifest import check_complete
from skinscan_edge.core.rundir import RunDir

PASSED, FAILED, NOT_EVALUATED = "passed", "failed", "not evaluated"


@dataclass
class Verdict:
    """One export's gate verdict and its own figures from evaluate.json (test split, against Keras)."""

    verdict: str
    figures: dict = field(default_factory=dict)


@dataclass
class Choice:
    """The export to bundle and why; ``verdict`` is its gate verdict, ``latency_ms`` what decided."""

    name: str
    why: str
    verdict: Verdict
    latency_ms: float | None = None
    latency_source: str | None = None
    tie: list[str] = field(default_factory=list)
    explicit: bool = False


def verdicts(run: RunDir, manifest: runfiles.Manifest) -> dict[str, Verdict]:
    """Each export's verdict from evaluate.json, if it evaluated this very manifest."""
    evaluation = runfiles.load_or_none(runfiles.EvaluateReport, run.evaluate_path)
    if evaluation is None or evaluation.manifest_sha256 != sha256_file(run.manifest_path):
        return {}
    out = {}
    for m in evaluation.models:
        if m.name == "keras" or m.client:
            continue
        failures = evaluation.gate.failures_of(m.name)
        client = next((c for c in evaluation.models if c.client and c.source_export == m.name), None)
        figures = {"split": evaluation.split, "images": evaluation.num_images, "accuracy": m.accuracy,
                   "keras_accuracy": evaluation.model("keras").accuracy if evaluation.model("keras") else None,
                   "delta_accuracy_pp": m.delta_accuracy_pp,
                   "delta_accuracy_ci95_pp": [m.delta_accuracy_ci95_low_pp, m.delta_accuracy_ci95_high_pp],
                   "top1_agreement": m.top1_agreement, "worst_recall_drop_pp": m.worst_recall_drop_pp,
                   "worst_recall_drop_class": m.worst_recall_drop_class,
                   "failures": [f.model_dump(mode="json", by_alias=True) for f in failures],
                   "limits": {k: getattr(evaluation.gate, k) for k in
                              ("max_accuracy_drop_pp", "max_recall_drop_pp", "critical_classes", "min_agreement")},
                   "client": _client_figures(evaluation, client) if client else None}
        out[m.name] = Verdict(FAILED if failures or (client and evaluation.gate.failures_of(client.name)) else PASSED,
                              figures)
    return out


def _client_figures(evaluation: runfiles.EvaluateReport, row: runfiles.ModelScore) -> dict:
    """The MediaPipe-client row: the guided path (gated) and the naive one (shown, not gated)."""
    extra = row.model_extra or {}
    return {"name": row.name, "client": row.client, "passed": not evaluation.gate.failures_of(row.name),
            "guided": {"accuracy": row.accuracy, "delta_accuracy_pp": row.delta_accuracy_pp,
                       "top1_agreement": row.top1_agreement, "worst_recall_drop_pp": row.worst_recall_drop_pp,
                       "worst_recall_drop_class": row.worst_recall_drop_class},
            "naive": extra.get("naive")}


def latencies(run: RunDir) -> tuple[dict[str, float], str | None]:
    """Batch-1 p50 per model and where it was measured: a phone's (``benchmark --adb``) when the
    run has phone rows, else the desktop CPU's at the most threads measured."""
    bench = runfiles.load_or_none(runfiles.BenchmarkReport, run.benchmark_path)
    if bench is None:
        return {}, None
    phone = [r for r in bench.rows if r.device.startswith("android:") and r.latency_p50_ms]
    if phone:
        return {r.model: r.latency_p50_ms for r in phone}, f"phone ({phone[0].device.removeprefix('android:')})"
    best: dict[str, runfiles.BenchmarkRow] = {}
    for r in bench.rows:
        if r.device == "cpu" and r.latency_p50_ms and (r.model not in best or (r.threads or 0) > (best[r.model].threads or 0)):
            best[r.model] = r
    threads = max((r.threads or 0 for r in best.values()), default=0)
    return {n: r.latency_p50_ms for n, r in best.items()}, f"desktop CPU, {threads} thread(s)"


def choose(run: RunDir, model: str | None = None, require: str | None = None, allow_failed: bool = False) -> Choice:
    """The TFLite export to ship (see the module docstring); raises one line when there is none
    to ship, or when ``model`` failed the gate (or was never evaluated) without ``allow_failed``."""
    if require is not None and require not in REQUIREMENTS:
        raise SkinscanError("--require: " + did_you_mean(require, list(REQUIREMENTS), "requirement"))

    manifest = runfiles.load(runfiles.Manifest, run.manifest_path)
    check_complete(run, manifest.model_dump(mode="json"))
    tflite = [e.name for e in manifest.exports if e.format == "tflite"]
    if require == "full-integer":
        tflite = [n for n in tflite if spec(n).full_integer]
    verdict = verdicts(run, manifest)
    times, where = latencies(run)
    if model is not None:
        return _explicit(run, model, tflite, verdict, times, where, require, allow_failed)
    if not tflite:
        what = "full-integer TFLite" if require else "TFLite"
        raise SkinscanError(f"{run.root} has no {what} export; run `skinscan-edge export {run.root} --int8`")
    if not verdict:
        raise SkinscanError(f"the exports of {run.root} are not evaluated (or changed since); run "
                            f"`skinscan-edge evaluate {run.root}` first, then bundle")
    passed = [n for n in tflite if verdict.get(n, Verdict(NOT_EVALUATED)).verdict == PASSED]
    if not passed:
        failed = ", ".join(f"{n} ({verdict.get(n, Verdict(NOT_EVALUATED)).verdict})" for n in tflite)
        raise SkinscanError(f"no {'full-integer ' if require else ''}TFLite export passed the gate ({failed}); "
                            f"ship one anyway with `skinscan-edge bundle {run.root} --model NAME --allow-failed` "
                            "(the bundle then says FAILED)")
    timed = [n for n in passed if n in times]
    if not timed:
        sizes = {e.name: e.size_bytes for e in manifest.exports}
        best = min(passed, key=lambda n: sizes[n])
        return Choice(best, f"the smallest of the {len(passed)} TFLite export(s) that passed the gate "
                            f"(no benchmark yet: run `skinscan-edge benchmark {run.root}`)", verdict[best])
    fastest = min(timed, key=lambda n: times[n])
    tie = [n for n in timed if times[n] <= times[fastest] * (1 + MARGIN)]
    best = min(tie, key=lambda n: (not spec(n).full_integer, times[n]))
    why = f"the fastest ({where}) of the {len(passed)} TFLite export(s) that passed the gate"
    if best != fastest:
        why = (f"{best} ({times[best]:.2f} ms) and {fastest} ({times[fastest]:.2f} ms) are within the benchmark's "
               f"noise margin ({MARGIN:.0%}, {where}): a tie, broken toward the full-integer file, which more phone "
               f"accelerators (NPU and Edge TPU delegates) can run; of the {len(passed)} TFLite export(s) that "
               "passed the gate")
    return Choice(best, why, verdict[best], times[best], where, tie if len(tie) > 1 else [])


def _explicit(run, model, tflite, verdict, times, where, require, allow_failed) -> Choice:
    if model not in tflite:
        what = "full-integer TFLite" if require else "TFLite"
        raise SkinscanError(f"--model: {did_you_mean(model, tflite, 'export', f'{what} exports of this run')}"
                            if tflite else f"{run.root} has no {what} export")
    v = verdict.get(model, Verdict(NOT_EVALUATED))
    if v.verdict != PASSED and not allow_failed:
        how = (f"failed the gate ({'; '.join(_failure_texts(v))})" if v.verdict == FAILED
               else f"was never evaluated (run `skinscan-edge evaluate {run.root}`)")
        raise SkinscanError(f"{model} {how}; refusing to bundle it. Pass --allow-failed to ship it anyway, "
                            "stamped FAILED in the bundle")
    return Choice(model, "named with --model" + ("" if v.verdict == PASSED else f"; gate {v.verdict.upper()}, "
                                                 "bundled with --allow-failed"), v, times.get(model), where,
                  explicit=True)


def _failure_texts(v: Verdict) -> list[str]:
    texts = [runfiles.GateFailure.model_validate(f).text() for f in v.figures.get("failures", [])]
    client = v.figures.get("client")
    if client and not client["passed"]:
        texts.append(f"its MediaPipe-client row {client['name']} failed")
    return texts

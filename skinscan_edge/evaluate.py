"""Run the Keras model and every export on the same split images; report parity and gate it.

Each model is opened through the one runtime interface (``runtimes.open_runtime``) in turn,
so only one model is in memory at a time, and the split is streamed in batches, so memory
stays flat as the split grows. Every model sees byte-identical pixels (checked with a digest).

Writes ``RUN/reports/``: ``evaluate.json`` (the one source of truth), ``evaluate.md`` rendered
from it, ``evaluate_predictions.npz`` (paths, y_true, probabilities per model, to recompute
anything) and ``evaluate_confusion_<model>.png``.

>>> # from skinscan_edge.rundir import RunDir
>>> # results = evaluate_run(RunDir.open("runs/demo"), EvaluateConfig(formats=["tflite-int8"]))
>>> # results["gate"]["passed"], results["models"][1]["top1_agreement"]
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from . import metrics
from .errors import BadImage, SkinscanError
from .rundir import RunDir, atomic_write_bytes, atomic_write_text, sha256_file, write_json
from .runlock import holds_run_lock

#: Names of the report files inside ``RUN/reports/``.
JSON_NAME = "evaluate.json"
MARKDOWN_NAME = "evaluate.md"
PREDICTIONS_NAME = "evaluate_predictions.npz"

Progress = Callable[[str, int, int], None]
"""``progress(model_name, images_done, images_total)``, called after every batch."""


@dataclass
class EvaluateConfig:
    """What to evaluate and how strict the gate is. The run supplies everything else.

    Attributes:
      split: Which persisted split to score ('test', 'val' or 'train').
      formats: Export names from the manifest (e.g. ['tflite-int8']); None means all of them.
      batch_size: Images decoded and fed per call; memory is bounded by this, not the split.
      num_threads: CPU threads for TFLite and onnxruntime; None lets each runtime choose.
      n_bootstrap: Paired-bootstrap resamples for the 95% interval of Δaccuracy.
      seed: Seed of the bootstrap, so the same predictions give the same interval.
      ece_bins: Equal-width confidence bins for the expected calibration error.
      max_accuracy_drop_pp: Gate: largest allowed accuracy drop vs Keras, percentage points.
      max_recall_drop_pp: Gate: largest allowed per-class recall drop vs Keras, pp.
      critical_classes: Gate recall only for these classes (empty: every class).
      min_agreement: Gate: smallest allowed top-1 agreement with Keras (None: not gated).
    """

    split: str = "test"
    formats: list[str] | None = None
    batch_size: int = 32
    num_threads: int | None = None
    n_bootstrap: int = 1000
    seed: int = 0
    ece_bins: int = metrics.ECE_BINS
    max_accuracy_drop_pp: float = 1.0
    max_recall_drop_pp: float = 2.0
    critical_classes: list[str] = field(default_factory=list)
    min_agreement: float | None = None

    def validate(self) -> "EvaluateConfig":
        if self.batch_size < 1:
            raise SkinscanError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.n_bootstrap < 1:
            raise SkinscanError(f"--bootstrap must be at least 1, got {self.n_bootstrap}")
        if self.min_agreement is not None and not 0.0 <= self.min_agreement <= 1.0:
            raise SkinscanError(f"--min-agreement is a share between 0 and 1, got {self.min_agreement}")
        if self.max_accuracy_drop_pp < 0 or self.max_recall_drop_pp < 0:
            raise SkinscanError("--max-accuracy-drop and --max-recall-drop are drops in pp; use values >= 0")
        return self

    def gate_kwargs(self) -> dict:
        return {"max_accuracy_drop_pp": self.max_accuracy_drop_pp,
                "max_recall_drop_pp": self.max_recall_drop_pp,
                "critical_classes": list(self.critical_classes), "min_agreement": self.min_agreement}


@holds_run_lock("evaluate")
def evaluate_run(run: RunDir, config: EvaluateConfig, progress: Progress | None = None) -> dict:
    """Score Keras and the chosen exports on ``config.split``, write the reports, return the JSON.

    Fails early (SkinscanError, one line) on an unknown export or class name, an export whose
    SHA-256 no longer matches the manifest, or labels that don't match the model's outputs.
    """
    from .export.manifest import entries, read_manifest, verify_entry

    labels = run.labels()
    metrics.resolve_classes(config.critical_classes, labels)
    config.validate()
    chosen = entries(run, config.formats)
    for entry in chosen:
        verify_entry(run, entry)  # refuse a tampered file before the slow part, not after it
    items = run.split_items(config.split)
    bad_labels = sorted({y for _, y in items if not 0 <= y < len(labels)})
    if bad_labels:
        raise SkinscanError(f"split.json uses label index {bad_labels[0]} but labels.txt lists only "
                            f"{len(labels)} classes; the run's labels don't match its split")

    probs, info = {}, {}
    for entry in [None, *chosen]:
        name, p, used, skipped_now, digest_now, seconds = _score_model(run, entry, items, labels,
                                                                        config, progress)
        if entry is None:  # the Keras pass decides which images are usable; the rest reuse them
            items, skipped, digest = used, skipped_now, digest_now
            if not items:
                first = f" (first: {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
                raise SkinscanError(f"no usable image in split '{config.split}'{first}; "
                                    f"check the data root in {run.split_path}")
        elif skipped_now or digest_now != digest:
            raise SkinscanError(f"the {config.split} images changed while {name} was evaluated; "
                                f"re-run evaluate on a stable copy of the data")
        probs[name] = p
        info[name] = _describe(run, entry, seconds)

    paths = [str(p) for p, _ in items]
    y_true = np.array([y for _, y in items], dtype=np.int64)
    results = {
        "run": str(run.root), "split": config.split, "created": _now(),
        "labels": labels, "num_images": len(paths), "num_skipped": len(skipped), "skipped": skipped,
        "pixels_sha256": digest, "img_size": run.img_size(), "settings": asdict(config),
        "manifest_sha256": sha256_file(run.manifest_path) if run.manifest_path.exists() else None,
        "predictions_npz": f"reports/{PREDICTIONS_NAME}",
        "export_failures": read_manifest(run).get("failures", []) if not config.formats else [],
        "models": [],
    }
    for name, p in probs.items():
        row = {**info[name], **score_against_baseline(y_true, probs["keras"], p, labels, paths, config)}
        cm = metrics.confusion(y_true, p.argmax(axis=1), len(labels))
        row["confusion_matrix"] = cm.tolist()
        row["confusion_png"] = _plot_confusion(run, name, cm, labels, row["accuracy"])
        results["models"].append(row)
    failures = metrics.check_gate(results, **config.gate_kwargs())
    results["gate"] = {"passed": not failures, "failures": failures, **config.gate_kwargs()}
    write_reports(run, results, probs, paths, y_true)
    return results


def score_against_baseline(y_true: np.ndarray, probs_base: np.ndarray, probs: np.ndarray,
                           labels: list[str], paths: list[str], config: EvaluateConfig) -> dict:
    """Every per-model number of evaluate.json, from the labels and two probability arrays."""
    pred_base, pred = probs_base.argmax(axis=1), probs.argmax(axis=1)
    delta = metrics.recall_delta_pp(y_true, pred_base, pred, len(labels))
    drop, drop_class = metrics.worst_recall_drop(delta, labels)
    lo, hi = metrics.paired_bootstrap_ci(y_true, pred_base, pred, n_boot=config.n_bootstrap, seed=config.seed)
    mean_diff, max_diff = metrics.prob_abs_diff(probs_base, probs)
    flips = metrics.flips(paths, y_true, probs_base, probs, labels)
    return {
        "accuracy": metrics.accuracy(y_true, probs),
        "delta_accuracy_pp": 100.0 * (metrics.accuracy(y_true, probs) - metrics.accuracy(y_true, probs_base)),
        "delta_accuracy_ci95_low_pp": lo,
        "delta_accuracy_ci95_high_pp": hi,
        "top1_agreement": metrics.top1_agreement(probs_base, probs),
        "prob_mean_abs_diff": mean_diff,
        "prob_max_abs_diff": max_diff,
        "ece": metrics.expected_calibration_error(y_true, probs, config.ece_bins),
        "worst_recall_drop_pp": drop,
        "worst_recall_drop_class": drop_class,
        "recall_delta_pp": {c: (None if np.isnan(d) else float(d)) for c, d in zip(labels, delta)},
        "classification_report": metrics.classification_report_dict(y_true, pred, labels),
        "num_flips": len(flips),
        "flips": flips,
    }


def _score_model(run, entry, items, labels, config, progress):
    """One model over the split: (name, probs, usable items, skipped, pixel digest, seconds)."""
    from .imageio import load_rgb
    from .runtimes import open_runtime

    rt = open_runtime(run, entry, num_threads=config.num_threads)
    name = "keras" if entry is None else entry["name"]
    if entry is None and rt.model.output_shape[-1] != len(labels):
        raise SkinscanError(f"model.keras outputs {rt.model.output_shape[-1]} classes but labels.txt "
                            f"lists {len(labels)}; the run's labels don't match its model")
    size, total = run.img_size(), len(items)
    used, skipped, out, digest = [], [], [], hashlib.sha256()
    start = time.perf_counter()
    if progress:
        progress(name, 0, total)
    for i in range(0, total, config.batch_size):
        batch, images = [], []
        for path, y in items[i:i + config.batch_size]:
            try:
                images.append(load_rgb(path, size))
                batch.append((path, y))
            except BadImage as e:
                skipped.append({"path": str(path), "reason": e.reason, "detail": e.detail})
        if images:
            x = np.stack(images)
            digest.update(x.tobytes())
            p = _predict(rt, x)
            if p.ndim != 2 or p.shape[1] != len(labels):
                raise SkinscanError(f"{name} outputs shape {tuple(p.shape)} but labels.txt lists "
                                    f"{len(labels)} classes; the run's labels don't match its model")
            out.append(p)
            used.extend(batch)
        if progress:
            progress(name, min(i + config.batch_size, total), total)
    probs = np.concatenate(out) if out else np.zeros((0, len(labels)), np.float32)
    return name, probs, used, skipped, digest.hexdigest(), time.perf_counter() - start


def _predict(rt, x: np.ndarray) -> np.ndarray:
    """Batched when the runtime allows; an export that cannot resize its batch runs per image."""
    try:
        return rt.predict(x)
    except (RuntimeError, ValueError) as e:
        error = e
    if len(x) > 1:
        try:
            return np.concatenate([rt.predict(x[j:j + 1]) for j in range(len(x))])
        except (RuntimeError, ValueError):
            pass
    raise SkinscanError(f"{rt.name} cannot run images of shape {tuple(x.shape[1:])} "
                        f"({str(error).splitlines()[0][:200]}); was it exported from this run?")


def _describe(run: RunDir, entry: dict | None, seconds: float) -> dict:
    if entry is None:
        return {"name": "keras", "format": "keras", "precision": "fp32", "file": run.model_path.name,
                "size_mb": run.model_path.stat().st_size / 1e6, "eval_seconds": seconds}
    return {"name": entry["name"], "format": entry["format"], "precision": entry["precision"],
            "file": f"exports/{entry['file']}", "size_mb": entry["size_bytes"] / 1e6,
            "eval_seconds": seconds}


def _plot_confusion(run: RunDir, name: str, cm: np.ndarray, labels: list[str], acc: float) -> str:
    from .plots import plot_confusion

    rel = f"reports/evaluate_confusion_{name}.png"
    plot_confusion(cm, labels, run.root / rel, title=f"{name}: accuracy {acc:.3f}")
    return rel


def write_reports(run: RunDir, results: dict, probs: dict, paths: list[str], y_true: np.ndarray) -> None:
    """evaluate.json, evaluate.md (rendered from the JSON) and the raw predictions, atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, paths=np.array(paths), y_true=y_true, labels=np.array(results["labels"]),
                        models=np.array(list(probs)), **{f"probs_{k}": v for k, v in probs.items()})
    atomic_write_bytes(run.reports / PREDICTIONS_NAME, buf.getvalue())
    write_json(run.reports / JSON_NAME, results)
    atomic_write_text(run.reports / MARKDOWN_NAME, render_markdown(results))


# --- rendering (from the JSON only) -----------------------------------------------------------
TABLE_COLUMNS = ["model", "format", "precision", "size MB", "accuracy", "Δaccuracy pp [95% CI]",
                 "agreement", "worst recall drop", "ECE"]


def comparison_rows(results: dict) -> list[list[str]]:
    """The comparison table as strings, one row per model; shared by Markdown and the console."""
    rows = []
    for m in results["models"]:
        if m["name"] == "keras":
            delta, drop = "baseline", "-"
        else:
            delta = (f"{m['delta_accuracy_pp']:+.2f} [{m['delta_accuracy_ci95_low_pp']:+.2f}, "
                     f"{m['delta_accuracy_ci95_high_pp']:+.2f}]")
            drop = (f"{m['worst_recall_drop_pp']:.1f} pp ({m['worst_recall_drop_class']})"
                    if m["worst_recall_drop_class"] else "none")
        rows.append([m["name"], m["format"], m["precision"], _size(m["size_mb"]), f"{m['accuracy']:.4f}",
                     delta, f"{m['top1_agreement']:.4f}", drop, f"{m['ece']:.4f}"])
    return rows


def render_markdown(results: dict, max_flips: int = 20) -> str:
    gate = results["gate"]
    lines = [f"# Evaluation: every export against Keras ({results['split']} split)", "",
             f"Run `{results['run']}`, {results['num_images']} images at {results['img_size']} px, "
             f"{results['num_skipped']} skipped; created {results['created']}.", "",
             "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in comparison_rows(results)]
    scope = ", ".join(gate["critical_classes"]) or "every class"
    agree = f", top-1 agreement >= {gate['min_agreement']}" if gate["min_agreement"] is not None else ""
    lines += ["", f"## Gate: {'PASSED' if gate['passed'] else 'FAILED'}", "",
              f"Accuracy drop <= {gate['max_accuracy_drop_pp']} pp, recall drop <= "
              f"{gate['max_recall_drop_pp']} pp ({scope}){agree}.", ""]
    lines += [f"- {f}" for f in gate["failures"]]
    for f in results["export_failures"]:
        lines.append(f"- export {f.get('name')} was not produced: {f.get('error')}")
    for m in results["models"]:
        lines += ["", f"## {m['name']}", "", f"![confusion matrix]({m['confusion_png'].split('/', 1)[1]})", "",
                  "| class | precision | recall | F1 | support | recall Δ pp |", "|---|---|---|---|---|---|"]
        report = m["classification_report"]
        for c in results["labels"]:
            r, d = report[c], m["recall_delta_pp"][c]
            lines.append(f"| {c} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | "
                         f"{int(r['support'])} | {'n/a' if d is None else f'{d:+.1f}'} |")
        for avg in ("macro avg", "weighted avg"):
            r = report[avg]
            lines.append(f"| *{avg}* | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | "
                         f"{int(r['support'])} | |")
        if m["name"] == "keras":
            continue
        lines += ["", f"Probabilities vs Keras: mean |Δ| {m['prob_mean_abs_diff']:.5f}, "
                      f"max |Δ| {m['prob_max_abs_diff']:.5f}. Top-1 flips: {m['num_flips']}."]
        lines += [f"- `{f['path']}` (true {f['true']}): Keras {f['keras']} -> {f['export']}"
                  for f in m["flips"][:max_flips]]
        if m["num_flips"] > max_flips:
            lines.append(f"- ... {m['num_flips'] - max_flips} more in evaluate.json")
    if results["skipped"]:
        lines += ["", "## Skipped images", ""]
        lines += [f"- `{s['path']}`: {s['reason']}" for s in results["skipped"]]
    return "\n".join(lines) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _size(mb: float) -> str:
    return f"{mb:.2f}" if mb >= 0.01 else "<0.01"

"""Run the Keras model and every export on the same split images; report parity and gate it.

Each model is opened through the one runtime interface (``runtimes.open_runtime``) in turn,
so only one model is in memory at a time, and the split is streamed in batches, so memory
stays flat as the split grows. Every model sees byte-identical pixels (checked with a digest).

Writes ``RUN/reports/``: ``evaluate.json`` (the one source of truth), ``evaluate.md`` rendered
from it, ``evaluate_predictions.npz`` (paths, y_true, probabilities per model, to recompute
anything) and ``evaluate_confusion_<model>.png``.

>>> # from skinscan_edge.core.rundir import RunDir
>>> # results = evaluate_run(RunDir.open("runs/demo"), EvaluateConfig(formats=["tflite-int8"]))
>>> # results["gate"]["passed"], results["models"][1]["top1_agreement"]
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import asdict

import numpy as np

from skinscan_edge.core import metrics, runfiles
from skinscan_edge.core.config_stages import EvaluateConfig
from skinscan_edge.core.config import GateConfig
from skinscan_edge.core.errors import BadImage, SkinscanError
from skinscan_edge.core.files import atomic_write_bytes, atomic_write_text, sha256_file, timestamp
from skinscan_edge.core.manifest import completeness, float_twin_entry, read_manifest, verify_entry, verify_float_twin
from skinscan_edge.core.metrics import score_against_baseline
from skinscan_edge.core.plots import save_confusion
from skinscan_edge.core.progress import Reporter, reporter_or_silent
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.runlock import holds_run_lock
from skinscan_edge.data.grouping import leak_summary
from skinscan_edge.data.imagecache import split_image_loader
from skinscan_edge.evaluation.arm64 import score_arm64
from skinscan_edge.evaluation.client import score_client
from skinscan_edge.evaluation.markdown import render_evaluate_markdown
from skinscan_edge.runtimes.models import describe, model_entries, open_model

__all__ = ["EvaluateConfig", "GateConfig", "evaluate_run", "write_reports"]

#: Names of the report files inside ``RUN/reports/`` (evaluate.json: ``runfiles.EvaluateReport``).
MARKDOWN_NAME = "evaluate.md"
PREDICTIONS_NAME = "evaluate_predictions.npz"


@holds_run_lock("evaluate")
def evaluate_run(run: RunDir, config: EvaluateConfig, reporter: Reporter | None = None) -> dict:
    """Score Keras and the chosen exports on ``config.split``, write the reports, return the JSON.

    Fails early (SkinscanError, one line) on an unknown model or class name, an export set whose
    export was interrupted (unless ``config.formats`` names a subset that exists), an export
    whose SHA-256 no longer matches the manifest, or labels that don't match the model's outputs.
    """
    say = reporter_or_silent(reporter)
    labels = run.labels()
    metrics.resolve_classes(config.critical_classes, labels)
    config.validate()
    manifest = read_manifest(run)
    chosen = model_entries(run, [n for n in config.formats if n != "keras"] if config.formats else None, keras=False)
    for entry in chosen:
        verify_entry(run, entry)  # refuse a tampered file before the slow part, not after it
        verify_float_twin(run, entry)
    items = run.split_items(config.split)
    bad_labels = sorted({y for _, y in items if not 0 <= y < len(labels)})
    if bad_labels:
        raise SkinscanError(f"split.json uses label index {bad_labels[0]} but labels.txt lists only "
                            f"{len(labels)} classes; the run's labels don't match its split")

    probs, info = {}, {}
    with say.bars(transient=False):
        for entry in model_entries(run, ["keras"]) + chosen:
            name, p, used, skipped_now, digest_now, seconds = _score_model(run, entry, items, labels, config, say)
            if name == "keras":  # the baseline decides which images are usable; the rest reuse them
                items, skipped, digest = used, skipped_now, digest_now
                if not items:
                    first = f" (first: {skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
                    raise SkinscanError(f"no usable image in split '{config.split}'{first}; "
                                        f"check the data root in {run.split_path}")
            elif skipped_now or digest_now != digest:
                raise SkinscanError(f"the {config.split} images changed while {name} was evaluated; "
                                    f"re-run evaluate on a stable copy of the data")
            probs[name] = p
            info[name] = {"name": name, **describe(run, entry), "eval_seconds": seconds}
        twins = {}  # export name -> (twin file, its probabilities, seconds): the ungated second baseline
        for entry in chosen:
            if twin := float_twin_entry(entry):
                _, p, _, skipped_now, digest_now, seconds = _score_model(run, twin, items, labels, config, say)
                if skipped_now or digest_now != digest:
                    raise SkinscanError(f"the {config.split} images changed while {twin['name']} was evaluated; "
                                        f"re-run evaluate on a stable copy of the data")
                twins[entry["name"]] = (f"exports/{twin['file']}", p, seconds)

    client, naive = {}, {}
    if config.client:  # every TFLite export through the real client (client.py): guided, gated; naive, shown

        with say.bars(transient=False):
            scored, tensor = score_client(run, [e for e in chosen if e["format"] == "tflite"], items, labels, say)
        for s in scored.values():
            name = s["info"]["name"]
            probs[name], info[name], naive[name] = s["guided"], s["info"], s["naive"]
        client = {"client_gaps": [s["gap"] for s in scored.values()], "client_tensor": tensor}
    paths = [str(p) for p, _ in items]
    y_true = np.array([y for _, y in items], dtype=np.int64)
    results = {
        "run": str(run.root), "split": config.split, "created": timestamp(),
        "labels": labels, "num_images": len(paths), "num_skipped": len(skipped), "skipped": skipped,
        "pixels_sha256": digest, "img_size": run.img_size(), "settings": asdict(config),
        "manifest_sha256": sha256_file(run.manifest_path) if run.manifest_path.exists() else None,
        "predictions_npz": f"reports/{PREDICTIONS_NAME}",
        "export_failures": manifest.get("failures", []) if not config.formats else [],
        "exports_requested": completeness(manifest)[1], "exports_checked": len(chosen),
        "partial": manifest.get("state", "complete") != "complete" or len(chosen) < completeness(manifest)[1],
        **leak_summary(run.split(), config.split),  # images with a near-duplicate in another split
        "models": [],
    }
    results.update(client)
    for name, p in probs.items():
        row = {**info[name], **score_against_baseline(y_true, probs["keras"], p, labels, paths, config)}
        cm = metrics.confusion(y_true, p.argmax(axis=1), len(labels))
        row["confusion_matrix"] = cm.tolist()
        row["confusion_png"] = save_confusion(run, name, cm, labels, row["accuracy"])
        if name in naive:  # the original files straight into MediaPipe: what skipping the guide costs
            n = score_against_baseline(y_true, probs["keras"], naive[name], labels, paths, config)
            row["naive"] = {k: n[k] for k in ("accuracy", "delta_accuracy_pp", "top1_agreement", "worst_recall_drop_pp",
                                              "worst_recall_drop_class", "recall_delta_pp")}
        if name in twins:
            row["vs_float_twin"] = score_against_twin(y_true, probs["keras"], *twins[name], p, labels, paths, config)
        results["models"].append(row)
    if config.arm64:  # the same files on arm64 kernels under QEMU (arm64.py); gated below like any row

        with say.bars(transient=False):
            arm_rows, results["arm64"] = score_arm64(run, config, manifest, chosen, items, probs, labels, say)
        results["models"] += arm_rows
    gate = config.gate()
    failures = metrics.check_gate(results, gate)
    results["gate"] = {"passed": not failures, "failures": failures, **asdict(gate)}
    results = runfiles.validate(runfiles.EvaluateReport, results)
    write_reports(run, results, probs, paths, y_true, {k: v[1] for k, v in twins.items()})
    return results


def score_against_twin(y_true: np.ndarray, probs_keras: np.ndarray, twin_file: str, probs_twin: np.ndarray,
                       seconds: float, probs: np.ndarray, labels: list[str], paths: list[str],
                       config: EvaluateConfig) -> dict:
    """What quantization alone costs: the export against its own float twin (the QAT file against
    its fine-tuned float weights), not against Keras; plus the twin's own agreement with Keras
    (what the retraining alone moved). Not gated: ``metrics.check_gate`` reads only the Keras
    comparison."""
    s = score_against_baseline(y_true, probs_twin, probs, labels, paths, config)
    keys = ("delta_accuracy_pp", "delta_accuracy_ci95_low_pp", "delta_accuracy_ci95_high_pp", "top1_agreement",
            "prob_mean_abs_diff", "prob_max_abs_diff", "worst_recall_drop_pp", "worst_recall_drop_class",
            "recall_delta_pp", "num_flips")
    return {"file": twin_file, "twin_accuracy": metrics.accuracy(y_true, probs_twin),
            "twin_top1_agreement_with_keras": metrics.top1_agreement(probs_keras, probs_twin),
            "eval_seconds": seconds, **{k: s[k] for k in keys}}


def _score_model(run, entry, items, labels, config, say: Reporter):
    """One model over the split: (name, probs, usable items, skipped, pixel digest, seconds)."""
    rt = open_model(run, entry, num_threads=config.num_threads)
    name = entry["name"]
    load, total = split_image_loader(run, config.split), len(items)
    used, skipped, out, digest = [], [], [], hashlib.sha256()
    start = time.perf_counter()
    say.advance(name, 0, total)
    for i in range(0, total, config.batch_size):
        batch, images = [], []
        for path, y in items[i:i + config.batch_size]:
            try:
                images.append(load(path))
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
        say.advance(name, min(i + config.batch_size, total), total)
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




def write_reports(run: RunDir, results: dict, probs: dict, paths: list[str], y_true: np.ndarray,
                  twin_probs: dict | None = None) -> None:
    """evaluate.json, evaluate.md (rendered from the JSON) and the raw predictions, atomically
    (a float twin's as ``twin_probs_<export>``, outside ``models``)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, paths=np.array(paths), y_true=y_true, labels=np.array(results["labels"]),
                        models=np.array(list(probs)), **{f"probs_{k}": v for k, v in probs.items()},
                        **{f"twin_probs_{k}": v for k, v in (twin_probs or {}).items()})
    atomic_write_bytes(run.reports / PREDICTIONS_NAME, buf.getvalue())
    runfiles.save(runfiles.EvaluateReport, run.evaluate_path, results)

    atomic_write_text(run.reports / MARKDOWN_NAME, render_evaluate_markdown(results))



"""Parity metrics between the Keras baseline and an export, and the release gate.

Pure numpy and scikit-learn: every function takes labels (``y_true``, int, shape (N,)) and
probabilities (float, shape (N, classes)) or top-1 predictions, so each number in
``evaluate.json`` can be recomputed from ``evaluate_predictions.npz`` alone.

>>> import numpy as np
>>> y = np.array([0, 1, 1]); base = np.eye(2)[[0, 1, 1]]; other = np.eye(2)[[0, 0, 1]]
>>> top1_agreement(base, other)
0.6666666666666666
>>> recall_delta_pp(y, base.argmax(1), other.argmax(1), 2).tolist()
[0.0, -50.0]
"""

from __future__ import annotations

import numpy as np

from skinscan_edge.core.config import ECE_BINS
from skinscan_edge.core.config import GateConfig  # ECE_BINS: equal-width confidence bins of the ECE
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.runfiles import GateFailure

#: Slack for float noise at a gate limit: 100 * (0.49 - 0.50) is -1.0000000000000009, not -1.
_EPS = 1e-9



def accuracy(y_true: np.ndarray, probs: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == y_true)) if len(y_true) else float("nan")


def top1_agreement(probs_a: np.ndarray, probs_b: np.ndarray) -> float:
    """Share of images whose top-1 class is the same under both models."""
    if not len(probs_a):
        return float("nan")
    return float(np.mean(np.argmax(probs_a, axis=1) == np.argmax(probs_b, axis=1)))


def prob_abs_diff(probs_a: np.ndarray, probs_b: np.ndarray) -> tuple[float, float]:
    """(mean, max) absolute difference over every image and class probability."""
    if not len(probs_a):
        return float("nan"), float("nan")
    d = np.abs(np.asarray(probs_a, np.float64) - np.asarray(probs_b, np.float64))
    return float(d.mean()), float(d.max())


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over bins of (share of images) x |accuracy - mean confidence|.

    Bins are equal-width and right-closed, (0, 1/B], (1/B, 2/B], ..., so a confidence of
    exactly 1.0 falls in the last bin (a confidence of 0 joins the first).
    """
    if not len(y_true):
        return float("nan")
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    bins = np.searchsorted(inner_edges, conf, side="left")  # (lo, hi]: 0.7 stays in (0.6, 0.7]
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall per class; NaN for a class with no image in ``y_true`` (it cannot be measured)."""
    recall = np.full(n_classes, np.nan)
    for c in range(n_classes):
        m = y_true == c
        if m.any():
            recall[c] = float(np.mean(y_pred[m] == c))
    return recall


def recall_delta_pp(y_true: np.ndarray, pred_base: np.ndarray, pred_model: np.ndarray,
                    n_classes: int) -> np.ndarray:
    """Per-class recall of the model minus the baseline's, in percentage points (NaN: no support)."""
    return 100.0 * (per_class_recall(y_true, pred_model, n_classes)
                    - per_class_recall(y_true, pred_base, n_classes))


def worst_recall_drop(delta_pp: np.ndarray, labels: list[str]) -> tuple[float, str | None]:
    """The largest per-class recall drop in pp (>= 0) and its class; (0.0, None) if none dropped."""
    drops = -np.asarray(delta_pp, np.float64)
    if not np.any(drops > 0):
        return 0.0, None
    i = int(np.nanargmax(drops))
    return float(drops[i]), labels[i]


def paired_bootstrap_ci(y_true: np.ndarray, pred_base: np.ndarray, pred_model: np.ndarray, *,
                        n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                        chunk: int = 100) -> tuple[float, float]:
    """Percentile interval for accuracy(model) - accuracy(base), in pp, resampling images.

    Both models are scored on the same resampled images (a paired bootstrap), which is what
    makes the interval narrow when the export agrees with Keras almost everywhere. Seeded, so
    the same predictions always give the same interval. Resamples are drawn ``chunk`` at a
    time so memory stays at chunk x N whatever the split size.
    """
    n = len(y_true)
    if n == 0:
        return float("nan"), float("nan")
    d = (pred_model == y_true).astype(np.float64) - (pred_base == y_true).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        means.append(d[idx].mean(axis=1))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.concatenate(means), [alpha, 1.0 - alpha])
    return float(100.0 * lo), float(100.0 * hi)


def classification_report_dict(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """scikit-learn's report (precision, recall, F1, support; macro and weighted) as a dict."""
    from sklearn.metrics import classification_report

    return classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=labels,
                                 output_dict=True, zero_division=0)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))


def flips(paths: list[str], y_true: np.ndarray, probs_base: np.ndarray, probs_model: np.ndarray,
          labels: list[str]) -> list[dict]:
    """Images whose top-1 class differs between the baseline and the model, with both answers."""
    pb, pm = probs_base.argmax(axis=1), probs_model.argmax(axis=1)
    return [
        {"path": str(paths[i]), "true": labels[y_true[i]],
         "keras": labels[pb[i]], "keras_prob": float(probs_base[i, pb[i]]),
         "export": labels[pm[i]], "export_prob": float(probs_model[i, pm[i]])}
        for i in np.flatnonzero(pb != pm)
    ]


def resolve_classes(names: list[str] | None, labels: list[str]) -> list[str]:
    """Check class names against the run's labels; an unknown one fails with the valid list."""
    for name in names or []:
        if name not in labels:
            raise SkinscanError(did_you_mean(name, labels, "class", "labels"))
    return list(names or [])


def check_gate(results: dict, gate=None) -> list[dict]:
    """One record per failure: ``{"model", "metric", "limit", "value"}`` (and ``"class"`` for a
    recall drop), as ``runfiles.GateFailure`` types them; empty means it passed.

    ``results`` is the ``evaluate.json`` dict, ``gate`` a ``config.GateConfig`` (its defaults
    when None). Recall is checked for every class, or only for ``gate.critical_classes`` when
    given; a class with no image in the split cannot fail. ``GateFailure.text`` words a record.
    """
    gate = gate or GateConfig()
    max_accuracy_drop_pp, max_recall_drop_pp = gate.max_accuracy_drop_pp, gate.max_recall_drop_pp
    critical_classes, min_agreement = gate.critical_classes, gate.min_agreement
    labels = results["labels"]
    classes = resolve_classes(critical_classes, labels) or labels
    failures = []
    for m in results["models"]:
        if m["name"] == "keras":
            continue
        drop = -m["delta_accuracy_pp"]
        if drop > max_accuracy_drop_pp + _EPS:
            failures.append({"model": m["name"], "metric": "accuracy_drop_pp", "limit": max_accuracy_drop_pp,
                             "value": drop})
        for cls in classes:
            delta = m["recall_delta_pp"].get(cls)
            if delta is not None and -delta > max_recall_drop_pp + _EPS:
                failures.append({"model": m["name"], "metric": "recall_drop_pp", "class": cls,
                                 "limit": max_recall_drop_pp, "value": -delta})
        if min_agreement is not None and m["top1_agreement"] < min_agreement - _EPS:
            failures.append({"model": m["name"], "metric": "top1_agreement", "limit": min_agreement,
                             "value": m["top1_agreement"]})
    return failures


def failure_text(failure: dict) -> str:
    """A gate failure record as one sentence (``runfiles.GateFailure.text``)."""
    return GateFailure.model_validate(failure).text()


def score_against_baseline(y_true: np.ndarray, probs_base: np.ndarray, probs: np.ndarray,
                           labels: list[str], paths: list[str], config) -> dict:
    """Every per-model number of evaluate.json, from the labels and two probability arrays (``config``:
    an ``EvaluateConfig``, for the bootstrap and the calibration bins). Below both export (the mixed
    files' search) and evaluate, which both score a file against a baseline."""
    pred_base, pred = probs_base.argmax(axis=1), probs.argmax(axis=1)
    delta = recall_delta_pp(y_true, pred_base, pred, len(labels))
    drop, drop_class = worst_recall_drop(delta, labels)
    lo, hi = paired_bootstrap_ci(y_true, pred_base, pred, n_boot=config.n_bootstrap, seed=config.seed)
    mean_diff, max_diff = prob_abs_diff(probs_base, probs)
    flipped = flips(paths, y_true, probs_base, probs, labels)
    return {
        "accuracy": accuracy(y_true, probs),
        "delta_accuracy_pp": 100.0 * (accuracy(y_true, probs) - accuracy(y_true, probs_base)),
        "delta_accuracy_ci95_low_pp": lo,
        "delta_accuracy_ci95_high_pp": hi,
        "top1_agreement": top1_agreement(probs_base, probs),
        "prob_mean_abs_diff": mean_diff,
        "prob_max_abs_diff": max_diff,
        "ece": expected_calibration_error(y_true, probs, config.ece_bins),
        "worst_recall_drop_pp": drop,
        "worst_recall_drop_class": drop_class,
        "recall_delta_pp": {c: (None if np.isnan(d) else float(d)) for c, d in zip(labels, delta)},
        "classification_report": classification_report_dict(y_true, pred, labels),
        "num_flips": len(flipped),
        "flips": flipped,
    }

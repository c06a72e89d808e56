"""Plots people would rather look at than read. matplotlib with the Agg backend, imported lazily.

Every plot is rendered from data already written (a report's JSON), and saved atomically.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from skinscan_edge.core.rundir import RunDir


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Write the figure to a temporary name, then rename: a reader never sees half a PNG."""
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_confusion(cm: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix with counts in each cell and class names on both axes."""
    plt = _plt()
    cm = np.asarray(cm)
    n = len(labels)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.65 * n, 1.0 + 0.6 * n), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    return save(fig, path)


def plot_history(rows: list[dict], path: Path, fine_tune_start: int | None = None) -> Path:
    """Loss and accuracy curves (train and val) from history.csv rows, phases marked."""
    plt = _plt()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "--o")):
            vals = [float(r[prefix + key]) for r in rows if r.get(prefix + key) not in (None, "")]
            if vals:
                ax.plot(epochs[: len(vals)], vals, style, ms=3, label=(prefix or "train_") + key)
        if fine_tune_start is not None:
            ax.axvline(fine_tune_start + 0.5, color="grey", lw=0.8, ls=":")
            ax.text(fine_tune_start + 0.6, ax.get_ylim()[1], "fine-tune", va="top", fontsize=8, color="grey")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def latency_plot_rows(results: dict) -> tuple[int, list[dict]]:
    """The rows the latency plot shows: every model's CPU row at the most threads (any row with a
    latency when there is none), whatever its format."""
    threads = max(results["config"]["threads"])
    rows = [r for r in results["rows"] if r.get("latency_p50_ms") and r["device"] == "cpu"
            and r["threads"] == threads] or [r for r in results["rows"] if r.get("latency_p50_ms")]
    return threads, rows


def plot_latency(results: dict, path: Path) -> Path:
    """Batch-1 p50 latency against accuracy (or, with no evaluate.json, against the floor), from
    benchmark.json."""
    plt = _plt()
    threads, rows = latency_plot_rows(results)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    if any(r.get("accuracy") is not None for r in rows):
        for r in rows:
            if r.get("accuracy") is not None:
                ax.scatter(r["latency_p50_ms"], r["accuracy"], s=30)
                ax.annotate(r["model"], (r["latency_p50_ms"], r["accuracy"]), fontsize=8,
                            xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(f"p50 latency, batch 1, {threads} threads (ms)")
        ax.set_ylabel("test accuracy (evaluate.json)")
    else:
        names = [r["model"] for r in rows]
        ax.barh(names, [r["latency_p50_ms"] for r in rows], color="tab:blue", label="p50 latency")
        floors = [r.get("floor_ms") or 0 for r in rows]
        ax.scatter(floors, names, marker="|", s=200, color="black", label="floor (GEMM peak)", zorder=3)
        ax.set_xlabel(f"ms, batch 1, {threads} threads (no evaluate.json: accuracy not shown)")
        ax.legend(fontsize=8)
    ax.set_title(results.get("host_line", "")[:90], fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


#: A channel error below this is float rounding (an exact op), not quantization.
EXACT_ERROR = 1e-5


def plot_quant_debug(entry: dict, path: Path, named: int = 6) -> Path:
    """Per-layer channel error of one export in graph order (quant_debug.json), log scale, one
    line per image set; the worst layers numbered on the curve and named in a list beside it
    (names written on the curve overlap where the worst layers are neighbours); float layers
    of a mixed file shaded."""
    plt = _plt()
    rows = entry["layers"]
    x = [r["index"] for r in rows]
    fig, ax = plt.subplots(figsize=(11, 3.8), dpi=110)
    for key, style, label in (("calibration_channel_error", "-", "calibration images"),
                              ("flipped_channel_error", "-", "flipped test images")):
        ys = [r.get(key) for r in rows]
        if any(v is not None for v in ys):
            # exact ops (max pool, concatenation, kept-float layers) differ by float rounding
            # only: left out (gaps in the line) rather than drawn as dips to 1e-9
            ax.plot(x, [np.nan if v is None or v < EXACT_ERROR else v for v in ys], style, lw=1, marker=".",
                    ms=3, label=label, alpha=0.8)
    floats = set(entry.get("float_layers") or [])
    for r in rows:
        if r.get("keras_layer") in floats:
            ax.axvspan(r["index"] - 0.5, r["index"] + 0.5, color="tab:green", alpha=0.15, lw=0)
    listed = []
    for rank, w in enumerate(entry["worst"][:named], 1):
        y = next(r for r in rows if r["index"] == w["index"]).get(w["ranked_by"])
        ax.annotate(str(rank), (w["index"], y), fontsize=7, xytext=(0, 5), textcoords="offset points",
                    color="tab:red", ha="center", fontweight="bold")
        listed.append(f"{rank}  {w['keras_layer'] or w['op']}  {y:.3f}")  # no Keras layer: an op of its own
    if listed:
        ranked_by = entry["worst"][0]["ranked_by"].replace("_channel_error", "")
        ax.text(1.01, 1.0, f"worst ({ranked_by}):\n" + "\n".join(listed), transform=ax.transAxes, va="top",
                fontsize=7, color="tab:red", family="monospace")
    ax.set_yscale("log")
    ax.set_xlabel("layer (graph order)")
    ax.set_ylabel("channel error ||int8 - float|| / ||float||")
    ax.set_title(f"{entry['name']}: per-layer quantization error", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.subplots_adjust(right=0.78)
    return save(fig, path)


def save_confusion(run: RunDir, name: str, cm: np.ndarray, labels: list[str], acc: float) -> str:
    rel = f"reports/evaluate_confusion_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_')}.png"
    plot_confusion(cm, labels, run.root / rel, title=f"{name}: accuracy {acc:.3f}")
    return rel

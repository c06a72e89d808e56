"""Two-phase fine-tuning of InceptionV3, written top to bottom.

1. scan + split the data (persisted), 2. build the model, 3. phase 1: head only,
4. phase 2: unfreeze from a block at a lower learning rate, 5. save the model, history,
plots, and the Keras model's test-split report into the run directory.
"""

from __future__ import annotations

import csv
import platform
import time
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .data import load_label_map, make_dataset, scan, split_items
from .errors import SkinscanError
from .rundir import RunDir, atomic_write_text, read_json, write_json


def tool_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("skinscan-edge", "tensorflow", "tf-keras", "tensorflow-model-optimization", "tf2onnx",
                "onnx", "onnxruntime", "ai-edge-litert", "numpy", "scikit-learn"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _scan_and_split(cfg: TrainConfig, console) -> tuple[dict, list[str], list[dict]]:
    """Scan and split the data; nothing is written yet, so bad data leaves no half-made run."""
    result = scan(Path(cfg.data), progress=console is not None)
    if result.skipped:
        reasons: dict[str, int] = {}
        for s in result.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        _say(console, f"[yellow]skipped {len(result.skipped)} file(s): {summary} (listed in skipped.json)")
    labels = load_label_map(cfg.labels, result.classes)
    split = split_items(result, cfg.seed, cfg.val_fraction, cfg.test_fraction)
    split["counts"] = {name: {labels[i]: int(n) for i, n in enumerate(
        np.bincount([y for _, y in part], minlength=len(labels)))} for name, part in split["splits"].items()}
    return split, labels, result.skipped


def _say(console, msg: str) -> None:
    if console is not None:
        console.print(msg)


def _datasets(split: dict, cfg: TrainConfig, placement):
    """From the split in memory: a non-chief worker must not wait for the chief's split.json."""
    from .distribute import shard_by_data
    from .rundir import split_pairs

    def items(name):
        pairs = split_pairs(split, name)
        return [str(p) for p, _ in pairs], [y for _, y in pairs]

    tr, va = items("train"), items("val")
    train_ds = make_dataset(*tr, cfg.img_size, cfg.batch_size, training=True, seed=cfg.seed, augment=cfg.augment)
    val_ds = make_dataset(*va, cfg.img_size, cfg.batch_size, training=False, seed=cfg.seed)
    if placement.workers > 1:
        train_ds, val_ds = shard_by_data(train_ds), shard_by_data(val_ds)
    return train_ds, val_ds, tr[1]


def _class_weights(labels: list[int], n: int) -> dict[int, float]:
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    w = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    out = {i: 1.0 for i in range(n)}
    out.update({int(c): float(v) for c, v in zip(present, w)})
    return out


def _callbacks(run: RunDir, cfg: TrainConfig, phase: str, chief: bool = True):
    """Every worker runs the callbacks that save state (under multi-worker, reading the
    variables is a collective; Keras gives non-chief workers temporary files it removes);
    only the chief logs history and TensorBoard."""
    from ._tf import keras

    k = keras()
    ckpt = run.root / "checkpoints"
    if chief:
        ckpt.mkdir(parents=True, exist_ok=True)
    shared = [
        # First, so that an epoch's state is saved before its history row is written.
        k.callbacks.BackupAndRestore(str(run.root / "backup" / phase)),
        k.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                  restore_best_weights=True, verbose=1),
        k.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=cfg.reduce_lr_patience,
                                      min_lr=1e-6, verbose=1),
        k.callbacks.ModelCheckpoint(str(ckpt / f"best_{phase}.weights.h5"), monitor="val_loss",
                                    save_best_only=True, save_weights_only=True),
    ]
    if not chief:
        return shared
    return shared + [
        k.callbacks.CSVLogger(str(run.root / f"history_{phase}.csv"), append=True),
        k.callbacks.TensorBoard(str(run.root / "tensorboard" / phase), write_graph=False, profile_batch=0),
    ]


def _merge_history(run: RunDir) -> tuple[list[dict], int | None]:
    rows, boundary = [], None
    for phase in ("head", "fine_tune"):
        path = run.root / f"history_{phase}.csv"
        if not path.exists():
            continue
        with open(path, newline="") as f:
            # A kill between an epoch's backup and its history row repeats that epoch on resume.
            phase_rows = list({r["epoch"]: r for r in csv.DictReader(f)}.values())
        if phase == "fine_tune" and rows:
            boundary = len(rows)
        for r in phase_rows:
            r["phase"] = phase
            r["epoch"] = str(len(rows))
            rows.append(r)
    if rows:
        keys = ["epoch", "phase"] + [k for k in rows[0] if k not in ("epoch", "phase")]
        lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
        atomic_write_text(run.root / "history.csv", "\n".join(lines) + "\n")
    return rows, boundary


def evaluate_keras(model, run: RunDir, labels: list[str], img_size: int, batch_size: int) -> dict:
    """The Keras model's test-split report: classification report (text + JSON) and confusion PNG."""
    from sklearn.metrics import classification_report, confusion_matrix

    from .imageio import load_batch
    from .plots import plot_confusion

    items = run.split_items("test")
    y_true = np.asarray([y for _, y in items])
    probs = []
    for i in range(0, len(items), batch_size):
        batch = load_batch([p for p, _ in items[i:i + batch_size]], img_size)
        probs.append(model.predict(batch.astype(np.float32), verbose=0))
    probs = np.concatenate(probs) if probs else np.zeros((0, len(labels)))
    y_pred = probs.argmax(axis=1)
    idx = list(range(len(labels)))
    text = classification_report(y_true, y_pred, labels=idx, target_names=labels, digits=4, zero_division=0)
    report = classification_report(y_true, y_pred, labels=idx, target_names=labels, output_dict=True, zero_division=0)
    accuracy = float((y_true == y_pred).mean()) if len(y_true) else 0.0
    run.reports.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.reports / "keras_test_report.txt", text)
    write_json(run.reports / "keras_test_report.json",
               {"split": "test", "accuracy": accuracy, "n_images": int(len(y_true)), "report": report})
    cm = confusion_matrix(y_true, y_pred, labels=idx)
    plot_confusion(cm, labels, run.reports / "keras_confusion.png", f"Keras, test split (accuracy {accuracy:.3f})")
    return {"accuracy": accuracy, "n_images": int(len(y_true)), "report_text": text}


class Interrupted(SkinscanError):
    """Ctrl-C during training: the message says what was saved and how to continue."""

    exit_code = 130


def train(cfg: TrainConfig, console=None) -> dict:
    """Run the whole training; returns a summary. Writes everything into ``cfg.out``.

    Under ``--strategy multi-worker`` every worker calls this; only the chief writes the run
    directory (Keras' own multi-worker callbacks give the other workers temporary files that
    they remove), and the others return ``{"chief": False}``.

    >>> # train(TrainConfig(data="data/demo", out="runs/demo", weights="none", img_size=96))
    """
    from .distribute import make_placement
    from .precision import decide, policy, visible_gpus

    cfg.validate()
    run = RunDir(Path(cfg.out))
    if cfg.resume:
        if not run.config_path.exists():
            raise SkinscanError(f"--resume: {run.root} has no run to continue (config.json missing)")
        saved = TrainConfig.from_dict(read_json(run.config_path)["train"])
        # Where to train is this command's choice; what to train is the saved run's.
        saved.resume, saved.out, saved.strategy, saved.cpu_replicas = True, cfg.out, cfg.strategy, cfg.cpu_replicas
        saved.mixed_precision = cfg.mixed_precision
        cfg = saved
        if run.status().get("state") == "complete":
            raise SkinscanError(f"run {run.root} is already complete; nothing to resume")
    placement = make_placement(cfg.strategy, cfg.cpu_replicas)  # before TensorFlow runs any op
    precision = decide(cfg.mixed_precision, visible_gpus())  # before anything is written
    chief = placement.is_chief
    if chief and not cfg.resume and run.root.exists() and any(run.root.iterdir()):
        raise SkinscanError(f"--out {run.root} already holds a run; use --resume to continue it or pick a new folder")
    if cfg.resume:
        split, labels = run.split(), run.labels()
    else:
        split, labels, skipped = _scan_and_split(cfg, console if chief else None)
        if chief:
            run.root.mkdir(parents=True, exist_ok=True)
            write_json(run.skipped_path, skipped)
            write_json(run.split_path, split)
            atomic_write_text(run.labels_path, "\n".join(labels) + "\n")
    if not chief:
        _say(console, f"{placement.task}: training as one of {placement.workers} workers; "
             "the chief writes the run directory")
    state = {"phase": "prepare", "precision": precision}
    try:
        with policy(state["precision"]):
            return _train(cfg, run, placement, split, labels, console, state)
    except KeyboardInterrupt:
        raise Interrupted(_interrupted_message(run, state["phase"], chief)) from None


def _train(cfg: TrainConfig, run: RunDir, placement, split: dict, labels: list[str], console, state: dict) -> dict:
    from ._tf import keras

    k = keras()
    chief = placement.is_chief
    if chief:
        run.set_status("incomplete", phase="prepare")
        write_json(run.config_path, {
            "train": cfg.to_dict(), "labels": labels, "classes": split["classes"],
            "data_root": split["root"], "layout": split["layout"], "split_sha256": split["sha256"],
            "split_counts": split.get("counts"), "versions": tool_versions(),
            "distribution": placement.describe(), "precision": state["precision"].describe(),
            "input_contract": {"layout": "NHWC", "color": "RGB", "range": [0, 255], "dtype": "float32",
                               "size": [cfg.img_size, cfg.img_size]},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
    k.utils.set_random_seed(cfg.seed)
    _say(console, f"data: {split['layout']} layout, {len(labels)} classes, "
         + ", ".join(f"{n} {len(v)}" for n, v in split["splits"].items())
         + (f"; {placement.name}: {placement.replicas} replica(s) on {placement.workers} worker(s)"
            if placement.name != "default" else ""))

    _say(console, f"precision: {state['precision'].reason}")
    train_ds, val_ds, train_labels = _datasets(split, cfg, placement)
    class_weight = _class_weights(train_labels, len(labels)) if cfg.class_weights else None
    with placement.strategy.scope():
        model = build_model_for(cfg, len(labels))
    pretrained = cfg.weights != "none"
    t0 = time.time()

    phase1_done = run.root / "checkpoints" / "phase1_end.weights.h5"
    if cfg.epochs > 0 and not phase1_done.exists():
        state["phase"] = "head"
        if chief:
            run.set_status("incomplete", phase="head")
        _say(console, f"phase 1: head only, {cfg.epochs} epoch(s), lr {cfg.learning_rate}")
        from .model import freeze_base

        with placement.strategy.scope():
            freeze_base(model)
            model.compile(k.optimizers.Adam(cfg.learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, class_weight=class_weight,
                  callbacks=_callbacks(run, cfg, "head", chief), verbose=2)
        _save_weights(model, phase1_done, chief)
    elif phase1_done.exists():
        model.load_weights(str(phase1_done))

    if cfg.fine_tune_epochs > 0:
        state["phase"] = "fine_tune"
        if chief:
            run.set_status("incomplete", phase="fine_tune")
        from .model import unfreeze_from

        with placement.strategy.scope():
            n = unfreeze_from(model, cfg.unfreeze_from, keep_bn_frozen=pretrained)
            model.compile(k.optimizers.Adam(cfg.fine_tune_lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
        _say(console, f"phase 2: fine-tune from {cfg.unfreeze_from} ({n} base layers trainable, "
             f"BatchNorm {'frozen' if pretrained else 'training: no pretrained statistics'}), "
             f"{cfg.fine_tune_epochs} epoch(s), lr {cfg.fine_tune_lr}")
        model.fit(train_ds, validation_data=val_ds, epochs=cfg.fine_tune_epochs, class_weight=class_weight,
                  callbacks=_callbacks(run, cfg, "fine_tune", chief), verbose=2)
    train_seconds = time.time() - t0
    state["phase"] = "save"
    weights = model.get_weights()  # a collective read under multi-worker: every worker takes part
    if not chief:
        return {"chief": False, "task": placement.task}

    plain = _save_model(model, weights, run)
    from .plots import plot_history

    rows, boundary = _merge_history(run)
    if rows:
        plot_history(rows, run.root / "training_curves.png", boundary)
    result = evaluate_keras(plain, run, labels, cfg.img_size, cfg.batch_size)
    run.set_status("complete", train_seconds=round(train_seconds, 1), test_accuracy=result["accuracy"])
    return {"chief": True, "run": str(run.root), "test_accuracy": result["accuracy"], "n_test": result["n_images"],
            "train_seconds": train_seconds, "labels": labels, "report_text": result["report_text"]}


def _interrupted_message(run: RunDir, phase: str, chief: bool) -> str:
    if not chief:
        return "interrupted; this worker writes nothing (the chief keeps the run's state)"
    done = 0
    history = run.root / f"history_{phase}.csv"
    if history.exists():
        with open(history, newline="") as f:
            done = len({r.get("epoch") for r in csv.DictReader(f)})
    saved = (f"{done} completed epoch(s) of phase '{phase}' are saved in {run.root / 'backup' / phase}"
             if phase in ("head", "fine_tune") else "nothing was trained yet")
    return (f"interrupted during {phase}; {saved}; the run is marked incomplete. "
            f"Continue with `skinscan-edge train --resume --out {run.root}`")


def build_model_for(cfg: TrainConfig, num_classes: int):
    from .model import build_model

    return build_model(num_classes, cfg.img_size, cfg.weights, cfg.dropout, cfg.dense_units)


def _save_weights(model, path: Path, chief: bool) -> None:
    """Every worker saves (a collective read); the non-chief ones into a temporary folder."""
    import tempfile

    if chief:
        model.save_weights(str(path))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model.save_weights(str(Path(tmp) / path.name))


def _save_model(model, weights: list, run: RunDir):
    """Save the trained weights as model.keras, without the optimizer's state; returns the
    plain (undistributed) model.

    The optimizer's moments would triple the file (270 MB instead of 89 MB); an uncompiled
    clone carries the same architecture and weights. Resuming uses BackupAndRestore instead.
    """
    import os

    from .precision import float32_clone

    clean = float32_clone(model, weights)  # outside any strategy scope: plain float32 layers
    tmp = run.root / ".model.tmp.keras"
    clean.save(str(tmp))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, run.model_path)
    return clean

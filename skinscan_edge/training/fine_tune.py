"""Two-phase fine-tuning of InceptionV3, written top to bottom.

1. scan + split the data (persisted), 2. build the model, 3. phase 1: head only,
4. phase 2: unfreeze from a block at a lower learning rate, 5. save the model, history,
plots, and the Keras model's test-split report into the run directory.

Over 350 lines on purpose: the two phases, their callbacks, resume, the run lock and the
multi-worker placement read top to bottom in one file; phase 1 on cached features lives in
features.py, the decoded-image cache in imagecache.py.
"""

from __future__ import annotations

import contextlib
import csv
import time
from pathlib import Path

import numpy as np

from skinscan_edge.core import runfiles
from skinscan_edge.core.config import TrainConfig
from skinscan_edge.core.errors import as_user_error, SkinscanError
from skinscan_edge.core.files import atomic_write_text, is_temporary, read_json_or_none, timestamp, write_json
from skinscan_edge.core.host import tool_versions
from skinscan_edge.core.plots import plot_confusion, plot_history
from skinscan_edge.core.progress import Reporter, reporter_or_silent, SILENT
from skinscan_edge.core.rundir import RunDir, split_pairs
from skinscan_edge.core.runlock import LOCK_NAME, run_lock
from skinscan_edge.core.tf import keras
from skinscan_edge.data.fingerprint import clear_training_state, data_fingerprint, save_file_list
from skinscan_edge.data.folder import image_batches, scan, split_items, training_model
from skinscan_edge.data.grouping import build_grouping, duplicates_report, parse_group_by, short_summary, summary_line
from skinscan_edge.data.imagecache import (CACHE_DIR, check_disk, decoded_bytes, load_split_images, open_verified,
    wants_disk_cache)
from skinscan_edge.training.distribute import make_placement, shard_by_data
from skinscan_edge.training.features import fit_head_on_features, fit_top_on_stem, STEM_DIR
from skinscan_edge.training.model import build_model, freeze_base, resolve_weights, unfreeze_from
from skinscan_edge.training.precision import cpu_bf16_flags, decide, policy, visible_gpus
from skinscan_edge.training.callbacks import callbacks_for, merge_history
from skinscan_edge.training.checkpoints import load_phase1, save_model, save_weights


def _scan_and_split(cfg: TrainConfig, say: Reporter) -> tuple[dict, list[str], list[dict], dict]:
    """Scan and split the data; nothing is written yet, so bad data leaves no half-made run."""
    result = scan(Path(cfg.data), reporter=say, labels=cfg.labels)  # names checked before any decode
    if result.skipped:
        reasons: dict[str, int] = {}
        for s in result.skipped:
            reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        say.message(f"skipped {len(result.skipped)} file(s): {summary} (listed in skipped.json)", "warn")
    labels = result.labels
    grouping = build_grouping(result, cfg.group_by, cfg.on_conflict)
    split = split_items(result, cfg.seed, cfg.val_fraction, cfg.test_fraction, grouping)
    duplicates = duplicates_report(grouping, split, labels)
    say.message(summary_line(duplicates))
    split["counts"] = {name: {labels[i]: int(n) for i, n in enumerate(
        np.bincount([y for _, y in part], minlength=len(labels)))} for name, part in split["splits"].items()}
    return split, labels, result.skipped, duplicates


def _datasets(split: dict, cfg: TrainConfig, placement, caches: dict):
    """From the split in memory: a non-chief worker must not wait for the chief's split.json.

    uint8 batches; augmentation and the cast to float run in the training step (``training_model``).
    Also returns the unshuffled train batches (for phase 1's features) and the train labels."""
    def items(name):
        pairs = split_pairs(split, name)
        return [str(p) for p, _ in pairs], [y for _, y in pairs]

    tr, va = items("train"), items("val")
    kw = dict(img_size=cfg.img_size, batch_size=cfg.batch_size, seed=cfg.seed)
    train_ds = image_batches(*tr, training=True, cache=caches.get("train"), **kw).prefetch(-1)
    val_ds = image_batches(*va, training=False, cache=caches.get("val"), **kw).prefetch(-1)
    train_plain = image_batches(*tr, training=False, cache=caches.get("train"), **kw).prefetch(-1)
    if placement.workers > 1:
        train_ds, val_ds = shard_by_data(train_ds), shard_by_data(val_ds)
    return train_ds, val_ds, train_plain, tr[1]


def _check_cache_space(split: dict, cfg: TrainConfig, run: RunDir, placement) -> None:
    total = sum(len(v) for v in split["splits"].values())
    if placement.workers == 1 and wants_disk_cache(cfg.image_cache, total, cfg.img_size):
        check_disk(run.root / CACHE_DIR, decoded_bytes(total, cfg.img_size),
                   f"{total} images at {cfg.img_size} px")


def _disk_caches(split: dict, cfg: TrainConfig, run: RunDir, placement, say: Reporter) -> dict:
    """The decoded-image caches on disk (see skinscan_edge.data.imagecache), built when the data set
    does not fit the in-memory budget; one process only (multi-worker decodes as before)."""
    total = sum(len(v) for v in split["splits"].values())
    if placement.workers > 1 or not wants_disk_cache(cfg.image_cache, total, cfg.img_size):
        return {}
    caches = {}
    for name in ("train", "val", "test"):
        paths = [str(p) for p, _ in split_pairs(split, name)]
        # Checked against its digests before the first epoch: a damaged file is rebuilt, never trained on.
        caches[name] = open_verified(run.root / CACHE_DIR, name, split["sha256"], cfg.img_size, paths, reporter=say)
    return caches


def _class_weights(labels: list[int], n: int) -> dict[int, float]:
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    w = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    out = {i: 1.0 for i in range(n)}
    out.update({int(c): float(v) for c, v in zip(present, w)})
    return out








def evaluate_keras(model, run: RunDir, labels: list[str], img_size: int, batch_size: int) -> dict:
    """The Keras model's test-split report: classification report (text + JSON) and confusion PNG."""
    from sklearn.metrics import classification_report, confusion_matrix

    items = run.split_items("test")
    y_true = np.asarray([y for _, y in items])
    probs = []
    for i in range(0, len(items), batch_size):
        batch = load_split_images(run, "test", range(i, min(i + batch_size, len(items))))
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


def train(cfg: TrainConfig, reporter: Reporter | None = None, replace: bool = False) -> dict:
    """Run the whole training; returns a summary. Writes everything into ``cfg.out``.

    ``replace`` (the pipeline, when the data changed): train again into a finished run; its old
    model and training state are removed once the new data has been scanned and split.

    Under ``--strategy multi-worker`` every worker calls this; only the chief writes the run
    directory (Keras' own multi-worker callbacks give the other workers temporary files that
    they remove), and the others return ``{"chief": False}``.

    >>> # train(TrainConfig(data="data/demo", out="runs/demo", weights="none", img_size=96))
    """
    say = reporter_or_silent(reporter)
    check_files(cfg.validate())
    run = RunDir(Path(cfg.out))
    if cfg.resume:
        if not run.config_path.exists():
            raise SkinscanError(f"--resume: {run.root} has no run to continue (config.json missing: it was stopped "
                                f"before training began); run the same command without --resume")
        saved = TrainConfig.from_dict(run.config()["train"])
        # Where to train is this command's choice; what to train is the saved run's.
        saved.resume, saved.out, saved.strategy, saved.cpu_replicas = True, cfg.out, cfg.strategy, cfg.cpu_replicas
        saved.worker_timeout_s = cfg.worker_timeout_s
        saved.mixed_precision = cfg.mixed_precision
        cfg = saved
        if run.status().get("state") == "complete":
            raise SkinscanError(f"run {run.root} is already complete; nothing to resume")
    placement = make_placement(cfg.strategy, cfg.cpu_replicas, cfg.worker_timeout_s)  # before TensorFlow runs any op
    gpus = visible_gpus()
    precision = decide(cfg.mixed_precision, gpus, () if gpus else cpu_bf16_flags())  # before anything is written
    _refuse_a_finished_out(cfg, run, placement.is_chief, replace)
    # One writer per run: the chief holds RUN/.lock (skinscan_edge.core.runlock); the other workers write nothing.
    with run_lock(run.root, "train", create=True) if placement.is_chief else contextlib.nullcontext():
        _refuse_a_finished_out(cfg, run, placement.is_chief, replace)  # again: a writer may have finished meanwhile
        return _train_locked(cfg, run, placement, say, replace, precision)


def check_files(cfg: TrainConfig) -> TrainConfig:
    """What the config's files hold, before any data is scanned: a weights file must be InceptionV3
    no-top weights, a --group-by CSV must have its column. One line naming the fix otherwise."""
    if cfg.weights not in ("imagenet", "none"):
        resolve_weights(cfg.weights)
    if cfg.group_by:
        parse_group_by(cfg.group_by)
    return cfg


#: What train writes before config.json: a folder holding only these was never trained (a kill
#: during the scan or split), so a new train may start over in it.
_BEFORE_CONFIG = {LOCK_NAME, runfiles.Duplicates.FILE, "skipped.json", "split.json", "labels.txt", "data_files.json", "status.json"}


def _refuse_a_finished_out(cfg: TrainConfig, run: RunDir, chief: bool, replace: bool) -> None:
    if chief and not cfg.resume and not replace and run.root.is_dir() \
            and any(p.name not in _BEFORE_CONFIG and not is_temporary(p.name) for p in run.root.iterdir()):
        raise SkinscanError(f"--out {run.root} already holds a run; use --resume to continue it or pick a new folder")


def _train_locked(cfg: TrainConfig, run: RunDir, placement, say: Reporter, replace: bool, precision) -> dict:
    chief = placement.is_chief
    if cfg.resume:
        split, labels = run.split(), run.labels()
        fingerprint = run.config().get("data_fingerprint")
    else:
        fp = data_fingerprint(cfg.data) if chief else None  # before the scan: a later change is seen next time
        split, labels, skipped, duplicates = _scan_and_split(cfg, say if chief else SILENT)
        fingerprint = fp.summary() if fp else None
        if chief:
            _check_cache_space(split, cfg, run, placement)  # refuse before anything of the run is written
            if replace:  # the data changed (pipeline): nothing of the old model may be resumed
                clear_training_state(run)
            run.root.mkdir(parents=True, exist_ok=True)
            runfiles.save(runfiles.Duplicates, run.duplicates_path, duplicates)
            write_json(run.skipped_path, skipped)
            write_json(run.split_path, split)
            atomic_write_text(run.labels_path, "\n".join(labels) + "\n")
            save_file_list(run, fp)
    if not chief:
        say.message(f"{placement.task}: training as one of {placement.workers} workers; "
                    "the chief writes the run directory")
    state = {"phase": "prepare", "data_fingerprint": fingerprint, "precision": precision}
    try:
        with policy(state["precision"]):
            return _train(cfg, run, placement, split, labels, say, state)
    except KeyboardInterrupt:
        raise Interrupted(_interrupted_message(run, state["phase"], chief)) from None
    except OSError as e:  # a full disk, an I/O error: say how to go on once it is fixed

        user = as_user_error(e)
        if user is None or not chief or not run.config_path.exists():
            raise
        raise SkinscanError(f"{user}; then continue with `skinscan-edge train --resume --out {run.root}`") from e


def _train(cfg: TrainConfig, run: RunDir, placement, split: dict, labels: list[str], say: Reporter, state: dict) -> dict:
    k = keras()
    chief = placement.is_chief
    if chief:
        run.set_status("incomplete", phase="prepare")
        runfiles.save(runfiles.RunConfig, run.config_path, {
            "train": cfg.to_dict(), "labels": labels, "classes": split["classes"],
            "data_root": split["root"], "layout": split["layout"], "split_sha256": split["sha256"],
            "split_counts": split.get("counts"), "data_fingerprint": state.get("data_fingerprint"),
            "versions": tool_versions(),
            "distribution": placement.describe(), "precision": state["precision"].describe(),
            "input_contract": {"layout": "NHWC", "color": "RGB", "range": [0, 255], "dtype": "float32",
                               "size": [cfg.img_size, cfg.img_size]},
            "created": timestamp(),
        })
    k.utils.set_random_seed(cfg.seed)
    say.message(f"data: {split['layout']} layout, {len(labels)} classes, "
         + ", ".join(f"{n} {len(v)}" for n, v in split["splits"].items())
         + (f"; {placement.name}: {placement.replicas} replica(s) on {placement.workers} worker(s)"
            if placement.name != "default" else ""))

    say.message(f"precision: {state['precision'].reason}")
    caches = _disk_caches(split, cfg, run, placement, say)
    train_ds, val_ds, train_plain, train_labels = _datasets(split, cfg, placement, caches)
    class_weight = _class_weights(train_labels, len(labels)) if cfg.class_weights else None
    with placement.strategy.scope():
        model = build_model_for(cfg, len(labels))
        trainer = training_model(model, cfg.seed, cfg.augment)
    pretrained = cfg.weights != "none"
    t0 = time.time()

    phase1_done = run.root / "checkpoints" / "phase1_end.weights.h5"
    if phase1_done.exists():
        load_phase1(model, phase1_done, say)  # an unreadable file is removed: phase 1 runs again
    if cfg.epochs > 0 and not phase1_done.exists():
        state["phase"] = "head"
        if chief:
            run.set_status("incomplete", phase="head")
        on_features = cfg.feature_cache and placement.name == "default"
        say.message(f"phase 1: head only, {cfg.epochs} epoch(s), lr {cfg.learning_rate}"
                + (", on cached base features" if on_features else ""))

        with placement.strategy.scope():
            freeze_base(model)
        if on_features:
            fit_head_on_features(model, cfg, train_plain, val_ds, class_weight,
                                 callbacks_for(run, cfg, "head", chief, say), say)
        else:
            with placement.strategy.scope():
                trainer.compile(k.optimizers.Adam(cfg.learning_rate), "sparse_categorical_crossentropy",
                                metrics=["accuracy"])
            trainer.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, class_weight=class_weight,
                        callbacks=callbacks_for(run, cfg, "head", chief, say), verbose=0)
        save_weights(model, phase1_done, chief)

    if cfg.fine_tune_epochs > 0:
        state["phase"] = "fine_tune"
        if chief:
            run.set_status("incomplete", phase="fine_tune")

        on_stem = _stem_views(cfg) > 0 and cfg.unfreeze_from != "input" and placement.name == "default"
        with placement.strategy.scope():
            n = unfreeze_from(model, cfg.unfreeze_from, keep_bn_frozen=pretrained)
            if not on_stem:
                trainer.compile(k.optimizers.Adam(cfg.fine_tune_lr), "sparse_categorical_crossentropy",
                                metrics=["accuracy"])
        say.message(f"phase 2: fine-tune from {cfg.unfreeze_from} ({n} base layers trainable, "
             f"BatchNorm {'frozen' if pretrained else 'training: no pretrained statistics'}), "
             f"{cfg.fine_tune_epochs} epoch(s), lr {cfg.fine_tune_lr}"
             + (f", on the cached output of {cfg.unfreeze_from}" if on_stem else ""))
        if on_stem:
            _fine_tune_on_stem(model, cfg, run, split, train_plain, train_labels, val_ds, class_weight,
                               callbacks_for(run, cfg, "fine_tune", chief, say), say)
        else:
            trainer.fit(train_ds, validation_data=val_ds, epochs=cfg.fine_tune_epochs, class_weight=class_weight,
                        callbacks=callbacks_for(run, cfg, "fine_tune", chief, say), verbose=0)
    train_seconds = time.time() - t0
    state["phase"] = "save"
    weights = model.get_weights()  # a collective read under multi-worker: every worker takes part
    if not chief:
        return {"chief": False, "task": placement.task}

    plain = save_model(model, weights, run)

    rows, boundary = merge_history(run)
    if rows:
        plot_history(rows, run.root / "training_curves.png", boundary)
    result = evaluate_keras(plain, run, labels, cfg.img_size, cfg.batch_size)
    run.set_status("complete", train_seconds=round(train_seconds, 1), test_accuracy=result["accuracy"])
    return {"chief": True, "run": str(run.root), "test_accuracy": result["accuracy"], "n_test": result["n_images"],
            "train_seconds": train_seconds, "labels": labels, "report_text": result["report_text"],
            "duplicates": short_summary(read_json_or_none(run.duplicates_path))}


def _stem_views(cfg: TrainConfig) -> int:
    """``--stem-views``, or by default 1 on a machine without GPUs (measured to help there; on a
    GPU the disk reads of 0.44 MB per image might not keep up, not measured) and 0 with one."""
    return cfg.stem_views if cfg.stem_views is not None else (0 if visible_gpus() else 1)


def _fine_tune_on_stem(model, cfg: TrainConfig, run: RunDir, split: dict, train_plain, train_labels, val_ds,
                       class_weight, callbacks, say: Reporter) -> None:
    """Phase 2 on the frozen stem's cached activations (features.fit_top_on_stem); the cache
    (0.44 MB per image and view at 299 px) is removed afterwards, and rebuilt on a resume."""
    import shutil

    val_labels = [y for _, y in split_pairs(split, "val")]
    try:
        fit_top_on_stem(model, cfg, run.root / STEM_DIR, train_plain, train_labels, val_ds, val_labels,
                        class_weight, callbacks, say)
    finally:
        shutil.rmtree(run.root / STEM_DIR, ignore_errors=True)


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
    return build_model(num_classes, cfg.img_size, cfg.weights, cfg.dropout, cfg.dense_units)







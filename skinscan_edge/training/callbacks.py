"""Training's Keras callbacks: state saved every epoch (resume), history, TensorBoard, and each
epoch reported through the run's Reporter (every fit runs with verbose=0); and the phases' histories
merged into one."""

from __future__ import annotations

import csv
import time

from skinscan_edge.core.config import TrainConfig
from skinscan_edge.core.files import atomic_write_text
from skinscan_edge.core.progress import Reporter, SILENT
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.tf import keras


def epoch_reporter(say: Reporter, phase: str, epochs: int):
    """A Keras callback that sends each epoch's figures, the learning-rate drops and an early stop
    through ``say``: training's one progress channel (every fit runs with verbose=0, so Keras
    itself prints nothing). Last in the callback list, so it sees what the others changed."""
    k = keras()

    class EpochReporter(k.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.lr, self.last = self._lr(), None

        def _lr(self) -> float:
            return float(k.backend.get_value(self.model.optimizer.learning_rate))

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.monotonic()
            say.message(f"{phase}: epoch {epoch + 1}/{epochs}")

        def on_epoch_end(self, epoch, logs=None):
            logs, self.last = logs or {}, epoch + 1
            figures = ", ".join(f"{name} {logs[name]:.4f}" for name in ("loss", "accuracy", "val_loss", "val_accuracy")
                                if name in logs)
            say.advance(f"{phase} epochs", epoch + 1, epochs)
            say.message(f"{phase}: epoch {epoch + 1}/{epochs} done in {time.monotonic() - self.t0:.0f} s: {figures}")
            lr = self._lr()
            if lr < self.lr:
                say.message(f"{phase}: val_loss stopped improving; learning rate {self.lr:.2g} -> {lr:.2g}")
            self.lr = lr

        def on_train_end(self, logs=None):
            if self.model.stop_training and self.last is not None and self.last < epochs:
                say.message(f"{phase}: early stop after epoch {self.last}/{epochs} (val_loss stopped improving; "
                            "the best epoch's weights are kept)")

    return EpochReporter()


def callbacks_for(run: RunDir, cfg: TrainConfig, phase: str, chief: bool = True, say: Reporter = SILENT):
    """Every worker runs the callbacks that save state (under multi-worker, reading the
    variables is a collective; Keras gives non-chief workers temporary files it removes);
    only the chief logs history and TensorBoard, and reports each epoch through ``say``."""
    k = keras()
    ckpt = run.root / "checkpoints"
    if chief:
        ckpt.mkdir(parents=True, exist_ok=True)
    shared = [
        # First, so that an epoch's state is saved before its history row is written.
        k.callbacks.BackupAndRestore(str(run.root / "backup" / phase)),
        k.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.early_stopping_patience,
                                  restore_best_weights=True, verbose=0),
        k.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=cfg.reduce_lr_patience,
                                      min_lr=1e-6, verbose=0),
        k.callbacks.ModelCheckpoint(str(ckpt / f"best_{phase}.weights.h5"), monitor="val_loss",
                                    save_best_only=True, save_weights_only=True),
    ]
    if not chief:
        return shared
    return shared + [
        k.callbacks.CSVLogger(str(run.root / f"history_{phase}.csv"), append=True),
        k.callbacks.TensorBoard(str(run.root / "tensorboard" / phase), write_graph=False, profile_batch=0),
        epoch_reporter(say, phase, cfg.epochs if phase == "head" else cfg.fine_tune_epochs),
    ]


def merge_history(run: RunDir) -> tuple[list[dict], int | None]:
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

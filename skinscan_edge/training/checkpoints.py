"""The model's weights between the phases and the saved model: written whole, by the chief alone."""

from __future__ import annotations

from pathlib import Path

from skinscan_edge.core.progress import Reporter
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.training.precision import float32_clone


def save_weights(model, path: Path, chief: bool) -> None:
    """Every worker saves (a collective read); the non-chief ones into a temporary folder.

    The chief writes a temporary name (ending in .weights.h5, which selects Keras' format),
    fsyncs and renames it: a kill during the write leaves no file that resume would trust."""
    import os
    import tempfile

    if chief:
        tmp = path.with_name(f".{path.name[:-len('.weights.h5')]}.{os.getpid()}.tmp.weights.h5")
        try:
            model.save_weights(str(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            e.filename = e.filename or str(path)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model.save_weights(str(Path(tmp) / path.name))


def load_phase1(model, path: Path, say: Reporter) -> bool:
    """Load phase 1's final weights; False (after one warning line, the file removed) when the
    file is missing or cannot be read back, e.g. torn by a kill in a version that wrote it in place."""
    try:
        model.load_weights(str(path))
        return True
    except (OSError, ValueError) as e:  # h5py: "Unable to synchronously open file (bad object header ...)"
        say.message(f"{path} cannot be read ({str(e).splitlines()[0][:120]}); it is removed and phase 1 "
                    f"is trained again", "warn")
        path.unlink(missing_ok=True)
        return False


def save_model(model, weights: list, run: RunDir):
    """Save the trained weights as model.keras, without the optimizer's state; returns the
    plain (undistributed) model.

    The optimizer's moments would triple the file (270 MB instead of 89 MB); an uncompiled
    clone carries the same architecture and weights. Resuming uses BackupAndRestore instead.
    """
    import os

    clean = float32_clone(model, weights)  # outside any strategy scope: plain float32 layers
    tmp = run.root / ".model.tmp.keras"
    try:
        clean.save(str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, run.model_path)
    except OSError as e:
        e.filename = e.filename or str(run.model_path)
        raise
    finally:
        tmp.unlink(missing_ok=True)  # after a failed write (a full disk): no 87 MB left behind
    return clean

"""Lazy, quiet access to TensorFlow and tf-keras (imported only by commands that need them).

TensorFlow's C++ side writes its start-up lines straight to file descriptor 2: the oneDNN
notice and "Could not find cuda drivers" while it imports, and "failed call to cuInit" when it
first looks for devices. ``TF_CPP_MIN_LOG_LEVEL`` does not stop them all: TF 2.21 logs the import
lines through absl before ``absl::InitializeLog()`` runs, which ignores that variable, and the
cuInit line is an ERROR, which level 2 keeps in both 2.20 and 2.21 (measured). Python's
``sys.stderr`` never sees these bytes, so the descriptor itself is pointed at a temporary file
while TensorFlow imports and enumerates its devices (:func:`quiet_stderr`). The
capture is dropped, or shown with ``--verbose`` (``SKINSCAN_VERBOSE=1``, which worker processes
inherit through their environment); if the import fails, it is shown, since it may say why.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
from skinscan_edge.core.errors import SkinscanError

#: ``1`` shows TensorFlow's native start-up and converter lines (``skinscan-edge --verbose``).
VERBOSE_ENV = "SKINSCAN_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool = True) -> None:
    """Show (or hide) TensorFlow's native lines in this process and in the worker processes it starts."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"


@contextlib.contextmanager
def quiet_stderr():
    """Capture what this block writes to stderr, natively (fd 2) and through Python's
    ``sys.stderr`` (which in Jupyter is not fd 2); drop it on success, show it if the block raises.

    With --verbose nothing is captured. One process-wide redirection: output that another
    thread writes in the block is captured too (the blocks are short: an import, a conversion).
    """
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_side = io.StringIO()
    ok = False
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            with _logging_to(python_side), contextlib.redirect_stderr(python_side):
                yield
            ok = True
        except KeyboardInterrupt:
            ok = True  # stopped, not failed: the capture explains nothing
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not ok:
                capture.seek(0)
                os.write(2, capture.read())
                sys.stderr.write(python_side.getvalue())


def _stream_handlers():
    """Every logging.StreamHandler there is, absl's inside its ABSLHandler included."""
    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            handler = getattr(handler, "python_handler", handler)  # absl's ABSLHandler wraps one
            if isinstance(handler, logging.StreamHandler):
                yield handler


@contextlib.contextmanager
def _logging_to(stream):
    """Point the logging handlers that write to stderr at ``stream`` for the block.

    A handler holds the stream it was made with: in a Jupyter kernel that is the kernel's
    stderr object, which neither ``redirect_stderr`` nor the descriptor capture reaches
    (onnxruntime's quantizer logs "WARNING:root:Axis 1 is out-of-range ..." through one).
    A handler made inside the block (``logging.basicConfig`` in a library) gets stderr back after.
    """
    real = sys.stderr
    moved = [h for h in _stream_handlers() if h.stream in (real, sys.__stderr__)]
    for handler in moved:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler in _stream_handlers():
            if handler.stream is stream:
                handler.setStream(real)


_ready = False


def tf():
    global _ready
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    if not _ready:
        with quiet_stderr():
            import tensorflow as tf_mod

            tf_mod.config.list_physical_devices()  # the cuInit attempt happens here, inside the capture
        tf_mod.get_logger().setLevel(logging.ERROR)
        check_keras_matches(tf_mod.__version__)
        _ready = True
    import tensorflow as tf_mod

    return tf_mod


def keras():
    tf()
    import tf_keras

    return tf_keras


def check_keras_matches(tf_version: str, keras_version: str | None = None) -> None:
    """tf-keras must be on TensorFlow's minor version (2.20 with 2.20, 2.21 with 2.21).

    pip cannot express "same minor as another package" in pyproject.toml, so the ranges there
    allow a mismatch; the lock files never hold one, and this check catches a hand-made one.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        keras_version = keras_version or version("tf-keras")
    except PackageNotFoundError:
        raise SkinscanError(f"tf-keras is not installed; pip install 'tf-keras~={_minor(tf_version)}.0'") from None
    if _minor(tf_version) != _minor(keras_version):
        raise SkinscanError(f"tf-keras {keras_version} does not match TensorFlow {tf_version}; "
                            f"pip install 'tf-keras~={_minor(tf_version)}.0'")


def _minor(v: str) -> str:
    return ".".join(v.split(".")[:2])

"""Accuracy through the real client: each TFLite export, with TFLite Model Metadata, in MediaPipe's
ImageClassifier, as an Android app runs it.

MediaPipe cannot live beside tfmot (their absl-py pins clash), so it runs in its own venv, in the
user's cache folder or ``$SKINSCAN_READER_VENV`` (built on demand by :func:`reader_python`, with a
progress bar; about 650 MB), through the script ``_mediapipe_reader.py``. It reads the model's
metadata alone, as an app's MediaPipe does.

:func:`score_client` returns, per export, MediaPipe's probabilities on the photos prepared as the
bundle's guide says (row ``<export> (mediapipe)``, gated like any export) and on the original
files (naive: shown, not gated), the preprocessing gap (the same file in LiteRT on the project's
Pillow pixels against MediaPipe), and, through an identity "probe" model, which preprocessing
MediaPipe's input tensor actually matches.

>>> # python = reader_python()            # builds the reader venv once, in the cache folder (pip install mediapipe==1.2.3)
>>> # scored, tensor = score_client(run, tflite_entries, items, labels)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from skinscan_edge.core import metrics
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.owned import is_owned, make_owned, remove_owned
from skinscan_edge.core.progress import Reporter, reporter_or_silent
from skinscan_edge.core.tf import keras, quiet_stderr, tf
from skinscan_edge.data.imageio import load_batch, load_rgb, to_input_size
from skinscan_edge.exporters.metadata import MEDIAPIPE_PYTHON, write_metadata
from skinscan_edge.runtimes.interface import TFLiteRuntime

#: Moves the reader venv (default: the user's cache folder, see :func:`reader_venv`).
READER_VENV_ENV = "SKINSCAN_READER_VENV"
#: The reader venv's size on disk, measured: 648 MB (mediapipe 1.2.3, Linux x86-64, this repo's tests, 2026-12-04).
READER_MB = 650
MEDIAPIPE = f"mediapipe=={MEDIAPIPE_PYTHON}"
SCRIPT = Path(__file__).with_name("_mediapipe_reader.py")
#: Files of the split whose MediaPipe input tensor is read back through the probe.
PROBE_FILES = 12


def reader_venv() -> Path:
    """$SKINSCAN_READER_VENV, else ``reader-venv`` in the user's cache folder (platformdirs:
    ``$XDG_CACHE_HOME/skinscan-edge`` or ``~/.cache/skinscan-edge`` on Linux)."""
    chosen = os.environ.get(READER_VENV_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    import platformdirs

    return Path(platformdirs.user_cache_dir("skinscan-edge", appauthor=False)) / "reader-venv"


def _run(args: list, what: str, venv: Path, timeout: float, **kw) -> subprocess.CompletedProcess:
    """A step of the build; a failure to start or a hang is one line naming the folder and the fix."""
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise SkinscanError(f"{what} for the MediaPipe reader venv {venv} did not finish in {timeout:.0f} s; "
                            f"check the network (or PIP_INDEX_URL) and retry") from None
    except OSError as e:
        raise SkinscanError(f"{what} for the MediaPipe reader venv {venv} could not start ({e.strerror}); "
                            f"set {READER_VENV_ENV} to a writable folder and retry") from None


def _build_failed(venv: Path, what: str, done: subprocess.CompletedProcess) -> SkinscanError:
    last = ((done.stderr or done.stdout or "").strip().splitlines() or ["no output"])[-1]
    return SkinscanError(f"{what} failed for the MediaPipe reader venv {venv} ({last[-200:]}); "
                         f"set {READER_VENV_ENV} to a writable folder with {READER_MB} MB free and retry")


def ready_reader(venv: Path | None = None) -> Path | None:
    """The reader venv's python when it is already built (its stamp file is there); never builds it."""
    venv = Path(venv or reader_venv())
    python, stamp = venv / "bin" / "python", venv / f".installed-{MEDIAPIPE}"
    return python if stamp.exists() and python.exists() else None


def reader_python(venv: Path | None = None, reporter: Reporter | None = None) -> Path:
    """The reader venv's python with mediapipe installed; built once (a stamp file marks it done).

    The venv folder is the project's own (``owned.make_owned``): a folder that already holds
    something else is refused, never removed (issue 28, D6). Raises SkinscanError when the venv
    cannot be made or pip cannot install mediapipe, saying whether the registry answered.
    """
    say = reporter_or_silent(reporter)
    venv = Path(venv or reader_venv())
    python = ready_reader(venv)
    if python:
        return python
    python, stamp = venv / "bin" / "python", venv / f".installed-{MEDIAPIPE}"
    say.message(f"building the MediaPipe reader venv in {venv} ({MEDIAPIPE}, about {READER_MB} MB; once; "
                f"set {READER_VENV_ENV} to put it elsewhere)")
    with say.bars():
        say.advance("reader venv", 0, 3)
        if is_owned(venv):
            remove_owned(venv, "the MediaPipe reader venv")  # a half-built venv from an interrupted run
        try:
            make_owned(venv, f"the MediaPipe reader venv (${READER_VENV_ENV})")
        except OSError as e:
            raise SkinscanError(f"cannot create the MediaPipe reader venv {venv} ({e.strerror}); "
                                f"set {READER_VENV_ENV} to a writable folder and retry") from None
        made = _run([sys.executable, "-m", "venv", str(venv)], "python -m venv", venv, 600)
        if made.returncode != 0:
            raise _build_failed(venv, "python -m venv", made)
        say.advance("reader venv", 1, 3)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        done = _run([*pip, "install", "--quiet", MEDIAPIPE], f"pip install {MEDIAPIPE}", venv, 3600)
        if done.returncode != 0:
            probe = _run([*pip, "index", "versions", "mediapipe"], "pip index", venv, 120)
            remove_owned(venv, "the MediaPipe reader venv")
            if probe.returncode != 0:
                last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
                raise SkinscanError(f"pip cannot reach the package registry to install {MEDIAPIPE} into {venv} "
                                    f"({last}); connect to PyPI (or set PIP_INDEX_URL) and retry")
            raise _build_failed(venv, f"pip install {MEDIAPIPE}", done)
        say.advance("reader venv", 2, 3)
        check = _run([str(python), "-c", "import mediapipe"], "import mediapipe", venv, 300)
        if check.returncode != 0:
            raise SkinscanError(f"{MEDIAPIPE} installed into {venv} but does not import "
                                f"({(check.stderr.strip().splitlines() or ['?'])[-1]}); remove {venv} and retry")
        stamp.touch()
        say.advance("reader venv", 3, 3)
    size = sum(p.stat().st_size for p in venv.rglob("*") if p.is_file() and not p.is_symlink())
    say.message(f"MediaPipe reader venv ready: {venv}, {size / 1e6:.0f} MB")
    return python


def _reader(python: Path, job: dict, timeout: float = 3600) -> list[dict]:
    # A Jupyter kernel exports MPLBACKEND=module://matplotlib_inline..., which the reader venv's
    # matplotlib (a mediapipe dependency) cannot load: the reader draws nothing, so Agg.
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run([str(python), str(SCRIPT)], input=json.dumps(job), capture_output=True, text=True,
                          timeout=timeout, env=env)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SkinscanError(f"MediaPipe's ImageClassifier failed on {Path(job['model']).name} ({last[:300]})")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def classify_files(python: Path, model: Path, files: list[str], n_outputs: int,
                   converted: list | None = None) -> np.ndarray:
    """MediaPipe's scores for each file, (N, n_outputs). A file MediaPipe cannot classify as it is
    (a single-channel JPEG) is classified converted to RGB, as the bundle's guide tells apps to
    prepare it, and its path is appended to ``converted``; one that fails even so is an error."""
    out = _reader(python, {"mode": "classify", "model": str(model), "files": files, "outputs": n_outputs})
    bad = [r for r in out if "error" in r]
    if bad:
        raise SkinscanError(f"MediaPipe cannot read {bad[0]['path']} ({bad[0]['error']}), even converted to RGB; "
                            f"the project's decoder can. Remove or re-save the file")
    if converted is not None:
        converted += [r["path"] for r in out if "converted_to_rgb" in r]
    return np.array([r["scores"] for r in out], dtype=np.float32)


def probe_model(size: int, folder: Path) -> Path:
    """An identity classifier: input [1, size, size, 3] float (0..255), output the same pixels
    flattened, with TFLite metadata (identity normalisation) so MediaPipe reports its input tensor."""
    tf_, k = tf(), keras()
    inp = k.Input((size, size, 3), batch_size=1, name="image")
    model = k.Model(inp, k.layers.Reshape((size * size * 3,), name="probs")(inp))
    flat = tf_.lite.TFLiteConverter.from_keras_model(model).convert()
    data = write_metadata(flat, labels=[f"p{i}" for i in range(size * size * 3)], img_size=size, name="probe",
                          description="identity: the scores are the input pixels", version="1", author="skinscan-edge",
                          license="Apache-2.0")
    path = folder / "probe.tflite"
    path.write_bytes(data)
    return path


def measure_preprocessing(python: Path, files: list[str], size: int) -> dict:
    """What MediaPipe feeds the model for each file, against the project's pixels and candidates.

    Returns per-candidate mean absolute differences (0..255 levels) averaged over the files, the
    project's (Pillow) difference, the decoders' difference, and the best-matching candidate."""
    with tempfile.TemporaryDirectory(prefix="skinscan-probe-") as tmp:
        with quiet_stderr():  # the converter's native "Ignored output_format" lines, which TF_CPP_MIN_LOG_LEVEL misses
            probe = probe_model(size, Path(tmp))
        np.save(Path(tmp) / "project.npy", np.stack([load_rgb(f, size) for f in files]))
        out = _reader(python, {"mode": "probe", "model": str(probe), "files": files, "size": size,
                               "outputs": size * size * 3, "project": str(Path(tmp) / "project.npy")})
    ok = [r for r in out if "candidates" in r]
    if not ok:
        return {"files": 0}
    names = list(ok[0]["candidates"])
    cands = {n: float(np.mean([r["candidates"][n] for r in ok])) for n in names}
    decoder = [r["decoder_mean_abs"] for r in ok if r.get("decoder_mean_abs") is not None]
    shapes = sorted({tuple(r["decoded_shape"]) for r in ok})
    return {"files": len(ok), "size": size, "source_shapes": [list(s) for s in shapes],
            "project_mean_abs": float(np.mean([r["project_mean_abs"] for r in ok])),
            "project_max_abs": float(np.max([r["project_max_abs"] for r in ok])),
            "decoder_mean_abs": float(np.mean(decoder)) if decoder else None,
            "candidates_mean_abs": cands, "best_match": min(cands, key=cands.get)}


def client_row_name(export: str) -> str:
    """evaluate.json's name of an export's MediaPipe row."""
    return f"{export} (mediapipe)"


def score_client(run, exports: list[dict], items: list, labels: list[str],
                 reporter: Reporter | None = None) -> tuple[dict, dict]:
    """Each TFLite export through MediaPipe's ImageClassifier, two ways, on the files of ``items``.

    * guided: the photos prepared as the bundle's guide tells app developers (decoded to RGB,
      scaled with the guide's ``toInputSize`` arithmetic, ``imageio.to_input_size``), then handed
      to MediaPipe at the input size, lossless. This is the row evaluate gates.
    * naive: the original files straight into MediaPipe, which decodes and resizes them itself
      (without antialiasing). Shown, not gated: the reason to follow the guide.

    Returns ``{export: {"guided": probs, "naive": probs, "info": row fields, "gap": gap}}`` and
    the measured MediaPipe input tensor (``measure_preprocessing``, once: it does not depend on
    the model). The gap compares LiteRT on the project's pixels with MediaPipe on the same file.
    """
    import time

    from PIL import Image

    say = reporter_or_silent(reporter)
    python = reader_python(reporter=say)
    files, size = [str(p) for p, _ in items], run.img_size()
    y = np.array([label for _, label in items])
    out = {}
    with tempfile.TemporaryDirectory(prefix="skinscan-client-") as tmp:
        guided_files = []
        for i, f in enumerate(files):  # PNG: lossless, so MediaPipe gets exactly these pixels
            guided_files.append(str(Path(tmp) / f"{i:06d}.png"))
            Image.fromarray(to_input_size(load_rgb(f), size), "RGB").save(guided_files[-1])
        pixels = np.concatenate([load_batch(files[i:i + 32], size) for i in range(0, len(files), 32)])
        for entry in exports:
            start = time.perf_counter()
            model = Path(tmp) / entry["file"]
            model.write_bytes(write_metadata((run.exports / entry["file"]).read_bytes(), labels=labels,
                                             img_size=size, name=entry["name"], description="evaluate's client row",
                                             version="eval", author="skinscan-edge", license="Apache-2.0"))
            row = client_row_name(entry["name"])
            say.advance(row, 0, 2 * len(files))
            guided = classify_files(python, model, guided_files, len(labels))
            say.advance(row, len(files), 2 * len(files))
            converted: list[str] = []  # files MediaPipe rejects as they are (single-channel): scored as RGB
            naive = classify_files(python, model, files, len(labels), converted)
            if converted:
                say.message(f"MediaPipe rejected {len(converted)} of {len(files)} files as they are (single-channel, "
                            f"e.g. {Path(converted[0]).name}); the naive row scored them converted to RGB, as the "
                            "bundle's guide tells apps (listed in evaluate.json)", "warn")
            say.advance(row, 2 * len(files), 2 * len(files))
            rt = TFLiteRuntime(model)
            litert = np.concatenate([rt.predict(pixels[i:i + 1]) for i in range(len(pixels))])
            mean_diff, max_diff = metrics.prob_abs_diff(litert, naive)
            gap = {"source_export": entry["name"], "row": row, "files": len(files),
                   "top1_agreement": metrics.top1_agreement(litert, naive),
                   "num_top1_differ": int((litert.argmax(1) != naive.argmax(1)).sum()),
                   "prob_mean_abs_diff": mean_diff, "prob_max_abs_diff": max_diff,
                   "guided_top1_agreement": metrics.top1_agreement(litert, guided),
                   "litert_accuracy": metrics.accuracy(y, litert), "client_accuracy": metrics.accuracy(y, naive),
                   "guided_accuracy": metrics.accuracy(y, guided)}
            info = {"name": row, "format": "tflite", "precision": entry["precision"], "file": f"exports/{entry['file']}",
                    "size_mb": model.stat().st_size / 1e6, "client": f"MediaPipe {MEDIAPIPE_PYTHON} ImageClassifier",
                    "source_export": entry["name"], "preprocessing": "the guide's toInputSize, then MediaPipe",
                    "naive_converted_to_rgb": {"count": len(converted), "files": converted},
                    "eval_seconds": time.perf_counter() - start}
            out[entry["name"]] = {"guided": guided, "naive": naive, "info": info, "gap": gap}
        tensor = measure_preprocessing(python, files[:PROBE_FILES], size) if exports else {"files": 0}
    return out, tensor

"""Accuracy through the real client: each TFLite export, with TFLite Model Metadata, in MediaPipe's
ImageClassifier, as an Android app runs it.

MediaPipe cannot live beside tfmot (their absl-py pins clash), so it runs in its own venv,
``.venv-reader`` (built on demand by :func:`reader_python`, with a progress bar), through the
script ``_mediapipe_reader.py``. It reads the model's metadata alone, as an app's MediaPipe does.

:func:`score_client` returns, per export, MediaPipe's probabilities on the photos prepared as the
bundle's guide says (row ``<export> (mediapipe)``, gated like any export) and on the original
files (naive: shown, not gated), the preprocessing gap (the same file in LiteRT on the project's
Pillow pixels against MediaPipe), and, through an identity "probe" model, which preprocessing
MediaPipe's input tensor actually matches.

>>> # python = reader_python()            # builds .venv-reader once (pip install mediapipe==1.2.3)
>>> # scored, tensor = score_client(run, tflite_entries, items, labels)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .errors import SkinscanError
from .tflite_metadata import MEDIAPIPE_PYTHON
from .progress import Reporter, reporter_or_silent

CLIENTS = ("mediapipe",)
#: Where the reader venv lives: $SKINSCAN_READER_VENV, else .venv-reader in the working directory.
READER_VENV_ENV = "SKINSCAN_READER_VENV"
MEDIAPIPE = f"mediapipe=={MEDIAPIPE_PYTHON}"
SCRIPT = Path(__file__).with_name("_mediapipe_reader.py")
#: Files of the split whose MediaPipe input tensor is read back through the probe.
PROBE_FILES = 12


def reader_venv() -> Path:
    return Path(os.environ.get(READER_VENV_ENV) or ".venv-reader").absolute()


def reader_python(venv: Path | None = None, reporter: Reporter | None = None) -> Path:
    """The reader venv's python with mediapipe installed; built once (a stamp file marks it done).

    Raises SkinscanError when pip cannot install mediapipe, saying whether the registry answered.
    """
    say = reporter_or_silent(reporter)
    venv = Path(venv or reader_venv())
    python, stamp = venv / "bin" / "python", venv / f".installed-{MEDIAPIPE}"
    if stamp.exists() and python.exists():
        return python
    say.message(f"building the MediaPipe reader venv {venv} ({MEDIAPIPE}; once)")
    with say.bars():
        say.advance("reader venv", 0, 3)
        shutil.rmtree(venv, ignore_errors=True)  # a half-built venv from an interrupted run
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        say.advance("reader venv", 1, 3)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        done = subprocess.run([*pip, "install", "--quiet", MEDIAPIPE], capture_output=True, text=True)
        if done.returncode != 0:
            probe = subprocess.run([*pip, "index", "versions", "mediapipe"], capture_output=True, text=True)
            shutil.rmtree(venv, ignore_errors=True)
            if probe.returncode != 0:
                last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
                raise SkinscanError(f"pip cannot reach the package registry to install {MEDIAPIPE} into {venv} "
                                    f"({last}); connect to PyPI (or set PIP_INDEX_URL) and retry")
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SkinscanError(f"pip install {MEDIAPIPE} into {venv} failed ({last}); see pip's log, then retry")
        say.advance("reader venv", 2, 3)
        check = subprocess.run([str(python), "-c", "import mediapipe"], capture_output=True, text=True)
        if check.returncode != 0:
            raise SkinscanError(f"{MEDIAPIPE} installed into {venv} but does not import "
                                f"({(check.stderr.strip().splitlines() or ['?'])[-1]}); remove {venv} and retry")
        stamp.touch()
        say.advance("reader venv", 3, 3)
    return python


def _reader(python: Path, job: dict, timeout: float = 3600) -> list[dict]:
    done = subprocess.run([str(python), str(SCRIPT)], input=json.dumps(job), capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SkinscanError(f"MediaPipe's ImageClassifier failed on {Path(job['model']).name} ({last[:300]})")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def classify_files(python: Path, model: Path, files: list[str], n_outputs: int) -> np.ndarray:
    """MediaPipe's scores for each file, (N, n_outputs); a file MediaPipe cannot read is an error."""
    out = _reader(python, {"mode": "classify", "model": str(model), "files": files, "outputs": n_outputs})
    bad = [r for r in out if "error" in r]
    if bad:
        raise SkinscanError(f"MediaPipe cannot read {bad[0]['path']} ({bad[0]['error']}); the project's decoder can. "
                            f"Remove or re-save the file")
    return np.array([r["scores"] for r in out], dtype=np.float32)


def probe_model(size: int, folder: Path) -> Path:
    """An identity classifier: input [1, size, size, 3] float (0..255), output the same pixels
    flattened, with TFLite metadata (identity normalisation) so MediaPipe reports its input tensor."""
    from ._tf import keras, tf
    from .tflite_metadata import write_metadata

    tf, k = tf(), keras()
    inp = k.Input((size, size, 3), batch_size=1, name="image")
    model = k.Model(inp, k.layers.Reshape((size * size * 3,), name="probs")(inp))
    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
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
    from .imageio import load_rgb

    with tempfile.TemporaryDirectory(prefix="skinscan-probe-") as tmp:
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

    from . import metrics
    from .imageio import load_batch, load_rgb, to_input_size
    from .runtimes import TFLiteRuntime
    from .tflite_metadata import write_metadata

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
            naive = classify_files(python, model, files, len(labels))
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
                    "eval_seconds": time.perf_counter() - start}
            out[entry["name"]] = {"guided": guided, "naive": naive, "info": info, "gap": gap}
        tensor = measure_preprocessing(python, files[:PROBE_FILES], size) if exports else {"files": 0}
    return out, tensor

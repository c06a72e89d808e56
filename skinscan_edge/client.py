"""Accuracy through the real client: the Android bundle's ``.tflite`` in MediaPipe's ImageClassifier.

MediaPipe cannot live beside tfmot (their absl-py pins clash), so it runs in its own venv,
``.venv-reader`` (built on demand by :func:`reader_python`, with a progress bar), through the
script ``_mediapipe_reader.py``. MediaPipe gets the ORIGINAL image files of the split and decodes,
resizes and normalizes them itself, from the model's metadata alone: what an app gets.

:func:`score_client` returns the client's probabilities (evaluate scores them against Keras like
any export: row ``android-bundle (mediapipe)``, gated) and the preprocessing gap: the same
bundle file in LiteRT on the project's Pillow pixels against MediaPipe on the file, and, through
an identity "probe" model, which preprocessing MediaPipe's input tensor actually matches.

>>> # python = reader_python()            # builds .venv-reader once (pip install mediapipe==1.2.3)
>>> # probs, gap = score_client(run, config, items, labels)
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
from .exporters.android_guide import MEDIAPIPE_PYTHON
from .progress import Reporter, reporter_or_silent

CLIENTS = ("mediapipe",)
CLIENT_ROW = "android-bundle (mediapipe)"
#: Where the reader venv lives: $SKINSCAN_READER_VENV, else .venv-reader in the working directory.
READER_VENV_ENV = "SKINSCAN_READER_VENV"
MEDIAPIPE = f"mediapipe=={MEDIAPIPE_PYTHON}"
#: The export's default bundle folder (commands/options.py ANDROID_DIR); evaluate reads the bundle there.
DEFAULT_BUNDLE = "android_assets/bundle"
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


def bundle_model(run, android_dir: str | None) -> tuple[Path, dict]:
    """The bundle's .tflite and its metadata.json, checked to come from this run's export."""
    from .rundir import read_json_or_none, sha256_file

    folder = Path(android_dir or DEFAULT_BUNDLE)
    sidecar = read_json_or_none(folder / "metadata.json")
    fix = f"run `skinscan-edge export {run.root} --android --android-dir {folder}` first"
    if not sidecar:
        raise SkinscanError(f"no Android bundle in {folder} (no metadata.json); {fix}")
    model = folder / sidecar["model_file"]
    manifest = read_json_or_none(run.manifest_path) or {}
    source = {e["name"]: e["sha256"] for e in manifest.get("exports", [])}.get(sidecar.get("source_export"))
    if source != sidecar.get("source_sha256") or not model.is_file() or sha256_file(model) != sidecar.get("model_sha256"):
        raise SkinscanError(f"the Android bundle in {folder} is not from this run's exports (or was changed); {fix}")
    return model, sidecar


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
    from .exporters.android import write_metadata

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
    from ._tf import quiet_stderr
    from .imageio import load_rgb

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


def score_client(run, config, items: list, labels: list[str],
                 reporter: Reporter | None = None) -> tuple[np.ndarray, dict, dict]:
    """MediaPipe's probabilities on the original files of ``items``, the row's description for
    evaluate.json, and the preprocessing gap.

    The gap compares the same bundle file two ways on the same files: LiteRT on the project's
    pixels (``imageio.load_rgb``: Pillow, antialiased bilinear) and MediaPipe on the file."""
    from . import metrics
    from .imageio import load_batch
    from .rundir import read_json_or_none
    from .runtimes import TFLiteRuntime

    import time

    say = reporter_or_silent(reporter)
    start = time.perf_counter()
    model, sidecar = bundle_model(run, config.android_dir)
    python = reader_python(reporter=say)
    files = [str(p) for p, _ in items]
    say.advance(CLIENT_ROW, 0, len(files))
    client = classify_files(python, model, files, len(labels))
    say.advance(CLIENT_ROW, len(files), len(files))
    rt, size = TFLiteRuntime(model), run.img_size()
    litert = np.concatenate([rt.predict(load_batch(files[i:i + 32], size)) for i in range(0, len(files), 32)])
    y = np.array([label for _, label in items])
    mean_diff, max_diff = metrics.prob_abs_diff(litert, client)
    gap = {"model_file": str(model), "source_export": sidecar["source_export"], "files": len(files),
           "top1_agreement": metrics.top1_agreement(litert, client),
           "num_top1_differ": int((litert.argmax(1) != client.argmax(1)).sum()),
           "prob_mean_abs_diff": mean_diff, "prob_max_abs_diff": max_diff,
           "litert_accuracy": metrics.accuracy(y, litert), "client_accuracy": metrics.accuracy(y, client),
           "tensor": measure_preprocessing(python, files[:PROBE_FILES], size)}
    source = sidecar["source_export"]
    precision = next((e["precision"] for e in (read_json_or_none(run.manifest_path) or {}).get("exports", [])
                      if e["name"] == source), source)
    info = {"name": CLIENT_ROW, "format": "tflite", "precision": precision, "file": str(model),
            "size_mb": model.stat().st_size / 1e6, "client": f"MediaPipe {MEDIAPIPE_PYTHON} ImageClassifier",
            "eval_seconds": time.perf_counter() - start}
    return client, info, gap

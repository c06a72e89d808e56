"""``skinscan-edge bundle RUN``: the Android bundle, written from an export the gate already judged.

The bundle holds one ``.tflite`` with TFLite Model Metadata (``tflite_metadata``), ``labels.txt``,
``metadata.json`` (the facts for scripts, with the gate's verdict and the file's own figures),
the lossless golden image and its expected scores, the guide ``README.md`` and the Kotlin example
rendered for this file's input and output types, the run's model card, and a zip of them all.
It is written into a temporary folder beside the target and renamed into place, so a crash never
leaves a half-written bundle that looks whole.

>>> # from skinscan_edge.release.choose import choose
>>> # run = RunDir.open("runs/demo")
>>> # write_bundle(run, Path("android_assets/bundle"), choose(run))["model_path"]
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from skinscan_edge.core.contract import __version__, INPUT_NAME, OUTPUT_NAME
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import atomic_write_bytes, atomic_write_text, read_json_or_none, sha256_file, write_json
from skinscan_edge.core.manifest import entries, verify_entry
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.data.demo import is_synthetic
from skinscan_edge.exporters.metadata import (LABELS_FILE, METADATA_NAME, MIN_PARSER_VERSION, MODEL_AUTHOR,
    MODEL_LICENSE, NORM_MEAN, NORM_STD, write_metadata)
from skinscan_edge.release import guide
from skinscan_edge.release.choose import Choice, PASSED
from skinscan_edge.release.golden import (GOLDEN_IMAGE, golden_tolerance, kernel_scores, output_quantization,
    write_golden_image)
from skinscan_edge.runtimes.interface import TFLiteRuntime

SIDECAR = "metadata.json"
#: Written into every bundle folder: the mark that skinscan-edge made it, so replacing it is safe.
OWNER_MARK = ".skinscan-edge-bundle"


def write_bundle(run: RunDir, out_dir: Path, choice: Choice) -> dict:
    """Write the whole bundle for ``choice`` into ``out_dir`` (replacing a bundle skinscan-edge wrote
    there before) and return a flat summary."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / OWNER_MARK).exists():
        raise SkinscanError(f"{out_dir} holds files skinscan-edge did not write; bundle into an empty or new "
                            "folder (--out)")
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # ours: the pid-named folder of an earlier crashed attempt
    try:
        summary = _fill(run, tmp, choice)
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # The summary named the staging folder's files; every one of them now lives in out_dir.
    return {k: (str(out_dir / Path(v).relative_to(tmp)) if isinstance(v, str) and v.startswith(f"{tmp}{os.sep}") else v)
            for k, v in summary.items()}


def _fill(run: RunDir, out_dir: Path, choice: Choice) -> dict:
    (entry,) = entries(run, [choice.name])
    source = verify_entry(run, entry)
    labels, img_size = run.labels(), run.img_size()
    precision = re.sub(r"[^a-z0-9]+", "_", str(entry.get("precision", choice.name)).lower()).strip("_")
    data = write_metadata(
        source.read_bytes(), labels=labels, img_size=img_size, author=MODEL_AUTHOR, license=MODEL_LICENSE,
        name=f"Skinscan InceptionV3 ({precision})", version=f"{__version__}+{entry['sha256'][:12]}",
        description=f"Screens a photo of a skin lesion into {len(labels)} classes. A screening aid for "
        "triage, not a diagnosis.",
    )
    out_dir.mkdir(parents=True)
    (out_dir / OWNER_MARK).write_text("written by skinscan-edge bundle; replaced whole by the next bundle\n")
    model_path = out_dir / f"skinscan_{precision}.tflite"
    atomic_write_bytes(model_path, data)
    atomic_write_text(out_dir / LABELS_FILE, "\n".join(labels) + "\n")

    runtime = TFLiteRuntime(model_path)
    golden = write_golden_image(run, out_dir / GOLDEN_IMAGE, img_size)
    pixels = golden.pop("pixels")
    probs = runtime.predict(pixels[None])[0]
    top3 = [{"index": int(i), "label": labels[i], "score": round(float(probs[i]), 6)}
            for i in (-probs).argsort(kind="stable")[:3]]  # ties: lower index first
    output = output_quantization(runtime)
    sha = hashlib.sha256(data).hexdigest()
    sidecar = {
        "model_file": model_path.name, "model_sha256": sha, "model_size_bytes": len(data),
        "source_export": choice.name, "source_file": entry["file"], "source_sha256": entry["sha256"],
        "gate": {"verdict": choice.verdict.verdict, **choice.verdict.figures},
        "choice": {"why": choice.why, "explicit": choice.explicit, "latency_p50_ms": choice.latency_ms,
                   "latency_measured_on": choice.latency_source, "tie": choice.tie},
        "labels": labels, "input_size": img_size,
        "input": {"name": INPUT_NAME, "shape": [1, img_size, img_size, 3], "layout": "NHWC",
                  "color_space": "RGB", "dtype": str(runtime.input_dtype.__name__), "value_range": [0, 255]},
        "output": {"name": OUTPUT_NAME, "shape": [1, len(labels)], "meaning": "softmax probabilities", **output},
        "normalization": {"mean": NORM_MEAN, "std": NORM_STD, "in_model": True,
                          "note": "the model maps 0..255 to [-1, 1] itself; pass raw RGB pixels"},
        "tflite_metadata": {"name": METADATA_NAME, "min_parser_version": MIN_PARSER_VERSION,
                            "associated_files": [LABELS_FILE]},
        "golden": {**golden, "image": GOLDEN_IMAGE, "pixels_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
                   **golden_tolerance(output, kernel_scores(model_path, pixels, image=out_dir / GOLDEN_IMAGE)
                                    if output["scale"] else None),
                   "top3": top3},
    }
    write_json(out_dir / SIDECAR, sidecar)
    names = [model_path.name, LABELS_FILE, SIDECAR, GOLDEN_IMAGE, guide.README, guide.KOTLIN]
    card = run.root / guide.MODEL_CARD
    if card.is_file():  # the run's model card, stamped with this file's verdict when it did not pass
        atomic_write_text(out_dir / guide.MODEL_CARD, _stamp_card(card.read_text(encoding="utf-8"), sidecar))
        names.append(guide.MODEL_CARD)
    synthetic = is_synthetic(run.config().get("data_root"))
    atomic_write_text(out_dir / guide.README, guide.render_guide(sidecar, synthetic=synthetic,
                                                                 model_card=card.is_file()))
    atomic_write_text(out_dir / guide.KOTLIN, guide.render_kotlin(sidecar, synthetic=synthetic))
    zip_path = guide.write_bundle_zip(out_dir, names)
    return {
        "model_path": str(model_path), "model_sha256": sha, "model_size_mb": round(len(data) / 1e6, 3),
        "source_export": choice.name, "source_sha256": entry["sha256"], "verdict": choice.verdict.verdict,
        "why": choice.why, "input_dtype": sidecar["input"]["dtype"], "input_size": img_size,
        "labels_path": str(out_dir / LABELS_FILE), "metadata_path": str(out_dir / SIDECAR),
        "golden_image": str(out_dir / GOLDEN_IMAGE), "golden_top3": top3,
        "golden_tolerance": sidecar["golden"]["tolerance"], "readme": str(out_dir / guide.README),
        "kotlin": str(out_dir / guide.KOTLIN), "zip_path": str(zip_path), "files": sorted(names),
    }


def _stamp_card(text: str, sidecar: dict) -> str:
    gate = sidecar["gate"]
    if gate["verdict"] == PASSED:
        return text
    return (f"> **GATE {gate['verdict'].upper()}: this bundle's file, `{sidecar['source_export']}`, "
            f"{'failed the evaluate gate' if gate['verdict'] == 'failed' else 'was never evaluated'} and was "
            "bundled with `--allow-failed`.** See the bundle's README.md and metadata.json for the figures.\n\n"
            + text)


def bundle_is_current(run: RunDir, out_dir: Path, choice: Choice) -> bool:
    """Whether ``out_dir`` already holds a whole bundle of ``choice``'s file, unchanged, with its
    current verdict (the pipeline then skips the stage)."""
    out_dir = Path(out_dir)
    sidecar = read_json_or_none(out_dir / SIDECAR) or {}
    manifest = {e["name"]: e["sha256"] for e in entries(run)}
    model = out_dir / str(sidecar.get("model_file", ""))
    return (sidecar.get("source_export") == choice.name and manifest.get(choice.name) == sidecar.get("source_sha256")
            and (sidecar.get("gate") or {}).get("verdict") == choice.verdict.verdict
            and guide.bundle_is_whole(out_dir) and model.is_file() and sha256_file(model) == sidecar.get("model_sha256"))

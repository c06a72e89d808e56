"""The Android bundle's golden vector: one test image, stored losslessly, its expected scores, and
the tolerance a test on another decoder and device should allow.

>>> # from skinscan_edge.runtimes.interface import TFLiteRuntime
>>> # golden_tolerance(output_quantization(TFLiteRuntime(Path("skinscan_int8.tflite"))))["tolerance"]
>>> # 0.00390625
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from skinscan_edge.core.errors import BadImage, SkinscanError
from skinscan_edge.core.files import atomic_write_bytes
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.tf import quiet_stderr
from skinscan_edge.data.imageio import load_rgb
from skinscan_edge.evaluation import arm64 as a64
from skinscan_edge.evaluation.arm64_worker import run_tflite
from skinscan_edge.evaluation.client import classify_files, ready_reader
from skinscan_edge.exporters.metadata import MEDIAPIPE_PYTHON

GOLDEN_IMAGE = "golden_image.png"
#: Bundles before the lossless golden image had this JPEG; a rebuild removes it.
LEGACY_GOLDEN_IMAGE = "golden_image.jpg"
#: Golden tolerance for a float output: MediaPipe and LiteRT agree within it on the same pixels
#: (tests/test_android.py::test_mediapipe_reads_a_float_model).
FLOAT_TOLERANCE = 1e-4


def output_quantization(runtime) -> dict:
    """The output tensor's type and, when it is quantized, its scale and zero point."""
    import numpy as np

    out = runtime.interp.get_output_details()[0]
    quantized = out["dtype"] in (np.uint8, np.int8)
    scale, zero = out["quantization"]
    return {"dtype": np.dtype(out["dtype"]).name, "scale": float(scale) if quantized else None,
            "zero_point": int(zero) if quantized else None}


def golden_tolerance(output: dict, kernels: dict | None = None) -> dict:
    """What a golden test may allow per score, and why. With ``kernels`` (:func:`kernel_scores`): the
    largest difference, over the kernel families measured, from the published (x86 XNNPACK) scores,
    at least one output step: the PNG gives every decoder the same pixels, so only the kernels'
    rounding differs, and it differs by family and ISA (docs/arm64.md). Without: one output step for
    a quantized output; for a float output, the agreement the float cross-reader test holds."""
    if kernels and output["scale"]:
        step = output["scale"]
        base = np.asarray(kernels["scores"]["x86 XNNPACK"])
        worst, family = max((float(np.abs(np.asarray(v) - base).max()), k) for k, v in kernels["scores"].items())
        steps = max(1, int(np.rint(worst / step)))
        missing = f"; not measured: {kernels['not_measured']}" if kernels.get("not_measured") else ""
        spread = f"the largest difference from these scores, {family}'s" if worst > 0 else "none differs from these"
        return {"tolerance": steps * step, "tolerance_steps": steps,
                # a list of records, so that the sidecar's shape does not depend on what was measured
                "kernel_scores": [{"family": k, "scores": v} for k, v in kernels["scores"].items()],
                "tolerance_basis": f"{steps} step(s) of the {output['dtype']} output (scale {_fraction(step)}), at "
                f"least one: among the kernel families measured on this image ({', '.join(kernels['scores'])}), "
                f"{spread}{missing}"}
    if output["scale"]:
        step = output["scale"]
        return {"tolerance": step, "tolerance_basis": f"one step of the {output['dtype']} output, scale {_fraction(step)}"}
    return {"tolerance": FLOAT_TOLERANCE,
            "tolerance_basis": f"float output; MediaPipe and LiteRT agree within {FLOAT_TOLERANCE:g} on the "
            "same pixels on a desktop CPU (a GPU delegate computing in fp16 needs more)"}


def _fraction(step: float) -> str:
    inverse = 1 / step
    return f"1/{inverse:.0f}" if abs(inverse - round(inverse)) < 1e-9 else f"{step:g}"


def kernel_scores(model_path: Path, pixels: np.ndarray, arm64: bool = True, image: Path | None = None) -> dict:
    """The golden image's scores on each kernel family a phone or a desktop may run: LiteRT's XNNPACK
    and builtin kernels on x86; MediaPipe's own (its TFLite build, as the guide's Android app runs it)
    on ``image`` when its reader venv is already built (client.ready_reader); and, where `make
    arm64-env` set it up, LiteRT on arm64 under QEMU (arm64.py). Returns ``scores`` (family ->
    probabilities, rounded to 6 digits) and ``not_measured`` (why not)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    scores = {}
    for family, kind in (("x86 XNNPACK", OpResolverType.AUTO),
                         ("x86 builtin", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)):
        interp = Interpreter(model_path=str(model_path), num_threads=1, experimental_op_resolver_type=kind)
        with quiet_stderr():
            interp.allocate_tensors()
        scores[family] = run_tflite(interp, pixels[None])[0][0]  # the arm64 worker's own (de)quantization
    not_measured = []
    # MediaPipe on the same PNG: the tolerance must hold for the reader the guide names. Its TFLite
    # build's XNNPACK rounds a QAT file's output up to two steps apart from LiteRT 2.3.0's on an
    # AVX2 host (a CI run), where the LiteRT families agreed.
    python = ready_reader() if image is not None else None
    if python is not None:
        n = len(scores["x86 XNNPACK"])
        scores[f"MediaPipe {MEDIAPIPE_PYTHON} (x86)"] = classify_files(python, model_path, [str(image)], n)[0]
    else:
        not_measured.append("MediaPipe (its reader venv is not built here; `evaluate --client mediapipe` builds it)"
                            if image is not None else "MediaPipe (no image file)")
    if arm64:
        try:
            for cpu in a64.DEFAULT_CPUS:
                models = [{"name": k, "path": model_path, "format": "tflite", "kernels": k} for k in ("xnnpack", "builtin")]
                for m in a64.run_models(models, pixels[None], cpu)["models"]:
                    family = "XNNPACK" if m["kernels"] == "xnnpack" else "builtin"
                    scores[f"arm64 {family} ({cpu})"] = m["probs"][0]
        except SkinscanError as e:
            not_measured.append(f"arm64 ({e})")
    else:
        not_measured.append("arm64 (not asked)")
    return {"scores": {k: [round(float(x), 6) for x in v] for k, v in scores.items()},
            "not_measured": "; ".join(not_measured) or None}


def write_golden_image(run: RunDir, path: Path, img_size: int) -> dict:
    """Save the first decodable test-split image, resized to the input size, as a PNG and return its
    pixels. PNG, not JPEG: lossless, so every decoder (Pillow here, MediaPipe, Android's
    BitmapFactory) returns exactly the pixels the expected scores come from; JPEG decoders differ by
    several output steps. Pillow writes no colour-profile or gamma chunk, so nothing colour-converts
    it."""
    from PIL import Image

    items = run.split_items("test")
    for src, label in items:
        try:
            pixels = load_rgb(src, img_size)
        except BadImage:
            continue
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, "PNG")
        atomic_write_bytes(path, buf.getvalue())
        root = Path(run.split()["root"])
        rel = src.relative_to(root).as_posix() if src.is_relative_to(root) else src.name
        return {"source": rel, "true_label": run.labels()[label], "pixels": pixels}
    raise SkinscanError(f"no usable image in the test split of {run.root} ({len(items)} listed); "
                        "the golden vector needs one")

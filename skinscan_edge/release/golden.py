"""The Android bundle's golden vector: one test image, stored losslessly, its expected scores, and
the tolerance a test on another decoder and device should allow.

>>> # from skinscan_edge.runtimes import TFLiteRuntime
>>> # golden_tolerance(output_quantization(TFLiteRuntime(Path("skinscan_int8.tflite"))))["tolerance"]
>>> # 0.00390625
"""

from __future__ import annotations

import io
from pathlib import Path

from ..errors import SkinscanError
from ..rundir import RunDir, atomic_write_bytes

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


def golden_tolerance(output: dict) -> dict:
    """What a golden test may allow per score, and why: one output step for a quantized output (the
    PNG gives every decoder the same pixels, so only the last rounding may differ); for a float
    output, the agreement the float cross-reader test holds (tests/test_android.py)."""
    if output["scale"]:
        step = output["scale"]
        inverse = 1 / step
        text = f"1/{inverse:.0f}" if abs(inverse - round(inverse)) < 1e-9 else f"{step:g}"
        return {"tolerance": step, "tolerance_basis": f"one step of the {output['dtype']} output, scale {text}"}
    return {"tolerance": FLOAT_TOLERANCE,
            "tolerance_basis": f"float output; MediaPipe and LiteRT agree within {FLOAT_TOLERANCE:g} on the "
            "same pixels on a desktop CPU (a GPU delegate computing in fp16 needs more)"}


def write_golden_image(run: RunDir, path: Path, img_size: int) -> dict:
    """Save the first decodable test-split image, resized to the input size, as a PNG and return its
    pixels. PNG, not JPEG: lossless, so every decoder (Pillow here, MediaPipe, Android's
    BitmapFactory) returns exactly the pixels the expected scores come from; JPEG decoders differ by
    several output steps. Pillow writes no colour-profile or gamma chunk, so nothing colour-converts
    it."""
    from PIL import Image

    from ..errors import BadImage
    from ..imageio import load_rgb

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

"""Runs inside the reader venv (mediapipe only, no skinscan_edge): classify with MediaPipe's
ImageClassifier given nothing but the model file, and read the metadata back with the
flatc-generated reader that mediapipe ships. Prints one JSON object.

    python classify.py MODEL [--array PIXELS.npy] [--image IMAGE.png]
"""

import argparse
import hashlib
import importlib.util
import json
import os

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core.base_options import BaseOptions

METADATA_DIR = os.path.join(os.path.dirname(mp.__file__), "tasks", "metadata")


def _categories(result) -> list[dict]:
    (head,) = result.classifications
    return [{"index": c.index, "name": c.category_name, "score": float(c.score)} for c in head.categories]


def _generated(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(METADATA_DIR, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_metadata(model_path: str) -> dict:
    tfl = _generated("schema_py_generated")
    md_fb = _generated("metadata_schema_py_generated")
    data = open(model_path, "rb").read()
    model = tfl.Model.GetRootAs(data, 0)
    entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    blob = model.Buffers(entries["TFLITE_METADATA"]).DataAsNumpy().tobytes()
    md = md_fb.ModelMetadataT.InitFromObj(md_fb.ModelMetadata.GetRootAs(blob, 0))
    sub = md.subgraphMetadata[0]
    image, probs = sub.inputTensorMetadata[0], sub.outputTensorMetadata[0]
    unit = image.processUnits[0]
    text = lambda b: b.decode() if isinstance(b, bytes) else b  # noqa: E731
    return {
        "identifier_ok": bool(md_fb.ModelMetadata.ModelMetadataBufferHasIdentifier(blob, 0)),
        "name": text(md.name), "description": text(md.description), "version": text(md.version),
        "author": text(md.author), "license": text(md.license), "min_parser_version": text(md.minParserVersion),
        "input_name": text(image.name), "output_name": text(probs.name),
        "content_type": image.content.contentPropertiesType,
        "content_type_image": md_fb.ContentProperties.ImageProperties,
        "color_space": image.content.contentProperties.colorSpace, "rgb": md_fb.ColorSpaceType.RGB,
        "default_size": [image.content.contentProperties.defaultSize.width,
                         image.content.contentProperties.defaultSize.height],
        "unit_type": unit.optionsType, "unit_type_norm": md_fb.ProcessUnitOptions.NormalizationOptions,
        "mean": [float(v) for v in unit.options.mean], "std": [float(v) for v in unit.options.std],
        "stats_min": [float(v) for v in image.stats.min], "stats_max": [float(v) for v in image.stats.max],
        "output_process_units": len(probs.processUnits or []),
        "output_files": [[text(f.name), f.type] for f in probs.associatedFiles],
        "axis_labels": md_fb.AssociatedFileType.TENSOR_AXIS_LABELS,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--array", help=".npy of one HxWx3 uint8 RGB image")
    ap.add_argument("--image", help="an image file, decoded by MediaPipe")
    args = ap.parse_args()
    # No labels, no normalisation, no options beyond the model path: all of it must come
    # from the model's metadata.
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=args.model))
    out = {"mediapipe_version": mp.__version__, "fbs": os.path.join(METADATA_DIR, "metadata_schema.fbs"),
           "metadata": read_metadata(args.model)}
    with vision.ImageClassifier.create_from_options(options) as classifier:
        if args.array:
            pixels = np.ascontiguousarray(np.load(args.array), dtype=np.uint8)
            out["array"] = _categories(classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels)))
        if args.image:
            image = mp.Image.create_from_file(args.image)  # MediaPipe's own decoder, not Pillow
            out["image"] = _categories(classifier.classify(image))
            rgb = np.ascontiguousarray(image.numpy_view()[..., :3], dtype=np.uint8)
            out["image_shape"] = list(rgb.shape)
            out["image_sha256"] = hashlib.sha256(rgb.tobytes()).hexdigest()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

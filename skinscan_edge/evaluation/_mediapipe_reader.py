"""Runs inside the reader venv (mediapipe, its numpy, OpenCV and Pillow; no skinscan_edge).

Reads one JSON job on stdin and prints one JSON line per file:

* ``{"mode": "classify", "model": M, "files": [...]}``: MediaPipe's ImageClassifier, given only
  the model file, classifies each original image file (MediaPipe decodes and resizes it):
  ``{"path", "scores"}`` with the scores in output order, or ``{"path", "error"}``.
* ``{"mode": "probe", "model": P, "files": [...], "project": "pixels.npy", "size": S}``: ``P`` is
  an identity model (its "scores" are its input pixels), so MediaPipe reports the exact tensor it
  fed; it is compared with the project's pixels (Pillow, ``project``) and with candidate
  preprocessings of MediaPipe's own decoded image: mean absolute difference in 0..255 levels.

Importing this module imports nothing heavy; ``main`` does.
"""

import json
import sys


def _scores(classifier, image, n: int) -> list:
    (head,) = classifier.classify(image).classifications
    out = [0.0] * n
    for c in head.categories:
        out[c.index] = float(c.score)
    return out


def _candidates(rgb, size: int) -> dict:
    """Ways to get a size x size image from MediaPipe's decoded RGB: which one is MediaPipe's?"""
    import cv2
    import numpy as np
    from PIL import Image

    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = rgb[top:top + side, left:left + side]
    pil = Image.fromarray(rgb)
    # A perspective warp that maps the image's corners onto the tensor's corners (x_src = x * w / size,
    # no half-pixel offset), as MediaPipe's CPU ImageToTensor converter builds its transform.
    warp = np.float32([[w / size, 0, 0], [0, h / size, 0]])
    corner = cv2.warpAffine(rgb, warp, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    return {
        "stretch, corner-aligned bilinear warp without antialiasing (OpenCV warpAffine)": corner,
        "stretch, bilinear without antialiasing (OpenCV INTER_LINEAR)": cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR),
        "stretch, area average (OpenCV INTER_AREA)": cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA),
        "stretch, antialiased bilinear (Pillow BILINEAR)": np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR)),
        "centre crop, bilinear without antialiasing": cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR),
        "stretch, bilinear without antialiasing, channels swapped (BGR)": cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)[..., ::-1],
    }


def main() -> None:
    import mediapipe as mp
    import numpy as np
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    job = json.loads(sys.stdin.read())
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=job["model"]))
    project = np.load(job["project"]) if job.get("project") else None
    classifier = vision.ImageClassifier.create_from_options(options)
    n = job.get("outputs", 0)
    for i, path in enumerate(job["files"]):
        converted = None
        try:
            image = mp.Image.create_from_file(path)
            scores = _scores(classifier, image, n)
        except Exception as e:  # noqa: BLE001  (one file's failure is reported, the rest go on)
            # After an error MediaPipe's graph stays broken for every later image: start a new one.
            classifier = _recreate(vision, classifier, options)
            converted = f"{type(e).__name__}: {e}"[:300]
            try:  # as the bundle's guide tells apps: 3-channel RGB
                image = _as_rgb(mp, path)
                scores = _scores(classifier, image, n)
            except Exception as e2:  # noqa: BLE001
                classifier = _recreate(vision, classifier, options)
                print(json.dumps({"path": path, "error": f"{type(e2).__name__}: {e2}"[:300],
                                  "first_error": converted}), flush=True)
                continue
        if job["mode"] == "classify":
            print(json.dumps({"path": path, "scores": scores,
                              **({"converted_to_rgb": converted} if converted else {})}), flush=True)
            continue
        size = job["size"]
        seen = np.asarray(scores, dtype=np.float64).reshape(size, size, 3)
        rgb = np.ascontiguousarray(image.numpy_view()[..., :3])
        diffs = {name: float(np.abs(seen - c.astype(np.float64)).mean()) for name, c in _candidates(rgb, size).items()}
        out = {"path": path, "decoded_shape": list(rgb.shape), "candidates": diffs,
               "edge_rows_mean": float(seen[[0, -1]].mean()), "edge_cols_mean": float(seen[:, [0, -1]].mean())}
        from PIL import Image, ImageOps

        with Image.open(path) as img:  # the project's decode (imageio.load_rgb: EXIF, then RGB)
            pil_rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        out["decoder_mean_abs"] = (float(np.abs(pil_rgb.astype(np.int16) - rgb.astype(np.int16)).mean())
                                   if pil_rgb.shape == rgb.shape else None)
        if project is not None:
            out["project_mean_abs"] = float(np.abs(seen - project[i].astype(np.float64)).mean())
            out["project_max_abs"] = float(np.abs(seen - project[i].astype(np.float64)).max())
        print(json.dumps(out), flush=True)
    _close(classifier)


def _as_rgb(mp, path: str):
    """The file as 3-channel RGB (EXIF orientation applied), as an app's ARGB_8888 Bitmap holds it."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        rgb = np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(img).convert("RGB")))
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)


def _close(classifier) -> None:
    try:
        classifier.close()
    except Exception:  # noqa: BLE001  (a graph broken by an error raises on close; it is dropped anyway)
        pass


def _recreate(vision, classifier, options):
    _close(classifier)
    return vision.ImageClassifier.create_from_options(options)


if __name__ == "__main__":
    main()

"""One image decoder for every path through the toolkit.

Training, calibration, evaluation, benchmarking and predict all decode with ``load_rgb`` so
that the Keras model and every export see byte-identical pixels. Pillow does the decoding
because TensorFlow's decoders ignore EXIF orientation, mishandle CMYK JPEGs and return
16-bit PNGs as uint16.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from skinscan_edge.core.errors import BadImage

#: Refuse images over this many pixels (decompression bombs). 50 MP covers any phone photo.
MAX_PIXELS = 50_000_000


#: Every reason a file can be refused for (``BadImage.reason``), as skipped.json records them.
REASONS = ("not-found", "not-a-file", "empty-file", "unreadable", "not-an-image", "corrupt", "truncated",
           "too-many-pixels")


def _to_rgb(img):
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit int) grayscale: scale the full range to 8 bits, don't clip it.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency over white, the way a viewer shows it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to a uint8 RGB array (H, W, 3), optionally resized to size x size.

    Applies the EXIF orientation, converts grayscale / RGBA / CMYK / 16-bit to 8-bit RGB,
    and raises :class:`BadImage` with a short reason for anything unusable.

    >>> # load_rgb("lesion.jpg", size=299).shape == (299, 299, 3)
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        if path.is_dir():
            raise BadImage("not-a-file", "a folder")
        if path.stat().st_size == 0:
            raise BadImage("empty-file", "0 bytes")
    except FileNotFoundError:
        raise BadImage("not-found", "no such file") from None
    except OSError as e:
        raise BadImage("unreadable", str(e)) from None
    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = MAX_PIXELS
            with Image.open(path) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise BadImage("too-many-pixels", f"{w}x{h} exceeds {MAX_PIXELS} pixels")
                img.load()
                img = ImageOps.exif_transpose(img)
                img = _to_rgb(img)
                if size is not None:
                    img = img.resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BadImage("too-many-pixels", str(e)) from None
    except UnidentifiedImageError:
        if _has_image_magic(path):
            raise BadImage("corrupt", "image header present but the data cannot be decoded") from None
        raise BadImage("not-an-image", "unrecognised file format") from None
    except Exception as e:  # noqa: BLE001
        # Pillow's parsers report damaged data through many exception types (OSError,
        # SyntaxError, ValueError, struct.error, KeyError in EXIF, ...); for bytes from a user's
        # folder every one of them means the same thing: this file cannot be used.
        msg = str(e).lower()
        reason = "truncated" if "truncated" in msg or "premature" in msg else "corrupt"
        raise BadImage(reason, str(e)[:200]) from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    if arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 1:
        raise BadImage("corrupt", f"unexpected decoded shape {arr.shape}")
    return arr


_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def _has_image_magic(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def load_batch(paths, size: int) -> np.ndarray:
    """Stack images into one uint8 NHWC batch at size x size (paths must be valid)."""
    return np.stack([load_rgb(p, size) for p in paths]) if len(paths) else np.zeros((0, size, size, 3), np.uint8)



def to_input_size(rgb: np.ndarray, size: int) -> np.ndarray:
    """The Android guide's ``toInputSize``, in numpy: what an app following the guide hands MediaPipe.

    Halve with a 2x2 box filter while both sides are at least twice ``size``
    (``Bitmap.createScaledBitmap(w / 2, h / 2, filter = true)``: bilinear at exactly one half is
    the 2x2 mean), then one bilinear step without antialiasing, pixel centres aligned, to
    ``size`` x ``size`` (stretched, no crop). Written here because neither Pillow (its BILINEAR
    antialiases when shrinking) nor numpy has Android's filter; evaluate's guided MediaPipe row uses
    it, so the gated figure is the guide's arithmetic. uint8 RGB in and out.
    """
    img = np.asarray(rgb, np.float32)
    while img.shape[0] >= 2 * size and img.shape[1] >= 2 * size:
        h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
        img = np.rint(img[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)))  # a Bitmap holds bytes
    if img.shape[:2] != (size, size):
        def axis(n: int):
            x = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
            lo = np.floor(x).astype(int)
            return lo, np.minimum(lo + 1, n - 1), (x - lo).astype(np.float32)

        (y0, y1, wy), (x0, x1, wx) = axis(img.shape[0]), axis(img.shape[1])
        top = img[y0][:, x0] * (1 - wx)[None, :, None] + img[y0][:, x1] * wx[None, :, None]
        bottom = img[y1][:, x0] * (1 - wx)[None, :, None] + img[y1][:, x1] * wx[None, :, None]
        img = top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)

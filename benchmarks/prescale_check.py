"""The Android example's toInputSize against the resize the model was evaluated with (issue 14 follow-up).

Run: python benchmarks/prescale_check.py [SIZE] (reads ../shared/real-photos, never copied here)."""
# How close is the Kotlin example's toInputSize (halve with a 2x2 box while >= 2x, then one
# bilinear step) to the project's Pillow BILINEAR (antialiased) resize, against a plain
# corner-aligned bilinear warp without antialiasing (MediaPipe's, measured in issue 14)?
import sys, numpy as np
from pathlib import Path
from PIL import Image
import tensorflow as tf
size = int(sys.argv[1]) if len(sys.argv) > 1 else 299
photos = sorted((Path(__file__).resolve().parents[2] / 'shared' / 'real-photos' / 'ham10000-sample').rglob('*.jpg'))
d_half, d_plain = [], []
for p in photos:
    img = Image.open(p).convert('RGB')
    ref = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), np.float64)
    a = np.asarray(img, np.float32)
    while a.shape[0] >= 2 * size and a.shape[1] >= 2 * size:  # Android createScaledBitmap(w/2, h/2, filter=true)
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        a = a[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    half = tf.image.resize(a[None], (size, size), method='bilinear', antialias=False).numpy()[0]
    plain = tf.compat.v1.image.resize_bilinear(np.asarray(img, np.float32)[None], (size, size), align_corners=True).numpy()[0]
    d_half.append(np.abs(np.round(half) - ref).mean()); d_plain.append(np.abs(np.round(plain) - ref).mean())
print(f"{len(photos)} photos at {size} px: mean |diff| to Pillow's antialiased resize, levels of 255: "
      f"halving+bilinear {np.mean(d_half):.2f} (max per photo {np.max(d_half):.2f}); "
      f"plain bilinear, no antialiasing {np.mean(d_plain):.2f} (max {np.max(d_plain):.2f})")

"""The SYNTHETIC demo lesions, drawn procedurally: one painter per class on a skin-toned background
(what tells the classes apart: data/demo.py's table). Not medical images."""

from __future__ import annotations

import numpy as np


# Light to dark skin tones (RGB, 0-1); lighting, blotches and noise are added on top.
_SKIN_TONES = np.array([
    [0.96, 0.82, 0.71], [0.91, 0.74, 0.60], [0.82, 0.62, 0.47],
    [0.70, 0.50, 0.36], [0.55, 0.38, 0.26], [0.40, 0.27, 0.19],
], dtype=np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(t, t, indexing="xy")  # xx, yy in (0, 1)


def _noise(rng, size: int, cells: float) -> np.ndarray:
    """Smooth value noise with features about size/cells pixels wide, roughly unit variance."""
    n = int(np.ceil(cells)) + 3
    g = rng.standard_normal((n, n), dtype=np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) * np.float32(cells / size)
    ty, tx = t + np.float32(rng.uniform(0, 1)), t + np.float32(rng.uniform(0, 1))
    fy, fx = ty - np.floor(ty), tx - np.floor(tx)
    iy, ix = ty.astype(np.int32), tx.astype(np.int32)
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], fx * fx * (3 - 2 * fx)
    rows = g[:, ix] + (g[:, ix + 1] - g[:, ix]) * fx  # separable: along x first, (n, size)
    top, bot = rows[iy], rows[iy + 1]
    return (top + (bot - top) * fy) * np.float32(1.6)


def _frame(rng, xx, yy, radius, center, aspect=(0.75, 1.0), angle=True):
    """Polar coordinates (r, theta) of a randomly rotated, squashed ellipse; r == 1 on its rim.

    theta is None unless `angle` (arctan2 is the slowest step of drawing an image).
    """
    ang, a = rng.uniform(0, 2 * np.pi), rng.uniform(*aspect)
    cos, sin = np.float32(np.cos(ang) / radius), np.float32(np.sin(ang) / radius)
    dx, dy = xx - np.float32(center[0]), yy - np.float32(center[1])
    u = dx * cos + dy * sin
    v = (dy * cos - dx * sin) * np.float32(1 / a)
    return np.sqrt(u * u + v * v), (_atan2(v, u) if angle else None)


def _atan2(y, x):
    """arctan2 to within 0.001 rad, several times faster than numpy's for float32."""
    ax, ay = np.abs(x), np.abs(y)
    a = np.minimum(ax, ay) / (np.maximum(ax, ay) + np.float32(1e-12))
    s = a * a
    t = (((np.float32(-0.0464964749) * s + np.float32(0.15931422)) * s - np.float32(0.327622764)) * s + 1) * a
    t = np.where(ay > ax, np.float32(np.pi / 2) - t, t)
    t = np.where(x < 0, np.float32(np.pi) - t, t)
    return np.where(y < 0, -t, t)


def _wobble(rng, theta, amp: float, kmax: int) -> np.ndarray:
    """Radius multiplier 1 + sum of random harmonics: amp ~0.03 is round, ~0.2 is ragged."""
    out = np.ones_like(theta)
    for k in range(2, kmax + 1):
        weight = np.float32(amp * rng.uniform(0.3, 1.0) / np.sqrt(k - 1))
        out += weight * np.cos(k * theta + np.float32(rng.uniform(0, 2 * np.pi)))
    return out


def _inside(r, edge: float) -> np.ndarray:
    """Soft mask: 1 well inside r < 1, 0 outside, a smooth ramp `edge` wide across the rim."""
    t = np.clip((1 - r) / edge + 0.5, 0, 1)
    return t * t * (3 - 2 * t)


def _paint(img, alpha, color) -> None:
    """Blend `color` (RGB, or a planar (3, H, W) array) over planar `img` with opacity `alpha`."""
    color = np.asarray(color, np.float32)
    img += alpha * ((color[:, None, None] if color.ndim == 1 else color) - img)


def _shade(img, height, strength: float, size: int) -> None:
    """Light a height map from the upper left (bumps look raised)."""
    gy, gx = np.gradient(height * size / 32.0)
    img *= 1 + strength * np.clip(-(gx + gy), -1.5, 1.5)


def _polyline(alpha, pts, width: float) -> None:
    """Draw an antialiased polyline (pixel coordinates) into `alpha`, cropping to each segment."""
    size, pts = alpha.shape[0], np.asarray(pts).tolist()  # python floats: fast scalar maths
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        pad = width + 2
        lo_x, hi_x = int(max(0, min(x0, x1) - pad)), int(min(size, max(x0, x1) + pad + 1))
        lo_y, hi_y = int(max(0, min(y0, y1) - pad)), int(min(size, max(y0, y1) + pad + 1))
        if lo_x >= hi_x or lo_y >= hi_y:
            continue
        py = np.arange(lo_y, hi_y, dtype=np.float32)[:, None] + np.float32(0.5)
        px = np.arange(lo_x, hi_x, dtype=np.float32)[None, :] + np.float32(0.5)
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((px - x0) * dx + (py - y0) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        ex, ey = px - x0 - t * dx, py - y0 - t * dy
        d = np.sqrt(ex * ex + ey * ey)
        sub = alpha[lo_y:hi_y, lo_x:hi_x]
        np.maximum(sub, np.clip(width / 2 + 0.5 - d, 0, 1), out=sub)


def _walk(rng, start, steps: int, step: float, turn: float) -> np.ndarray:
    ang = rng.uniform(0, 2 * np.pi)
    pts = [np.asarray(start, np.float32)]
    for _ in range(steps):
        ang += rng.normal(0, turn)
        pts.append(pts[-1] + step * np.array([np.cos(ang), np.sin(ang)], np.float32))
    return np.stack(pts)


def _mole(rng, img, c):  # Tahi Lalat: small, round, one even brown, smooth sharp rim
    r, th = _frame(rng, c["xx"], c["yy"], rng.uniform(0.07, 0.12) * c["zoom"], c["center"])
    r = r / _wobble(rng, th, 0.03, 4)
    col = np.array([0.36, 0.22, 0.13], np.float32) * rng.uniform(0.5, 1.05)
    _paint(img, 0.95 * _inside(r, 0.12), col[:, None, None] * (1 - 0.12 * np.clip(1 - r, 0, 1)))


def _melanoma(rng, img, c):  # larger, ragged notched rim, several tones in blotches
    r, th = _frame(rng, c["xx"], c["yy"], rng.uniform(0.13, 0.22) * c["zoom"], c["center"], (0.6, 1.0))
    ragged = rng.uniform(0.08, 0.22)
    r = r / (_wobble(rng, th, ragged, 7) + ragged * 0.8 * _noise(rng, c["size"], 7))
    mask = _inside(r, rng.uniform(0.08, 0.2))
    _paint(img, 0.95 * mask, np.array([0.32, 0.19, 0.11], np.float32) * rng.uniform(0.7, 1.1))
    # black, then blue-grey veil or red, sometimes light brown: never the mole's single brown
    tones = np.array([[0.08, 0.06, 0.06], [0.40, 0.45, 0.56], [0.66, 0.26, 0.22], [0.60, 0.42, 0.28]],
                     np.float32)
    for k in (0, rng.integers(1, 3), *([3] if rng.uniform() < 0.5 else [])):
        blot = np.clip(_noise(rng, c["size"], 5) - rng.uniform(-0.3, 0.3), 0, 1)
        _paint(img, 0.85 * mask * blot, tones[k])


def _patch(rng, c, radius):
    """An ill-defined inflamed patch: a soft, lumpy-edged mask."""
    r, _ = _frame(rng, c["xx"], c["yy"], radius * c["zoom"], c["center"], (0.6, 1.0), angle=False)
    return _inside(r + 0.3 * _noise(rng, c["size"], 5), 0.45)


def _eczema(rng, img, c):  # Eksim: bright red patch, fine (~4% wide) speckle, weeping dots
    mask = _patch(rng, c, rng.uniform(0.2, 0.33)) * rng.uniform(0.75, 0.95)
    fine = _noise(rng, c["size"], 25)
    col = c["skin"] * np.array([1.15, 0.55, 0.52], np.float32)
    _paint(img, mask, col[:, None, None] * (1 + 0.12 * fine))
    _paint(img, mask * np.clip(fine - 1.1, 0, 1), np.array([0.97, 0.88, 0.72], np.float32))


def _atopic(rng, img, c):  # Dermatitis Atopik: duller red, coarse lichenified cross-hatching
    mask = _patch(rng, c, rng.uniform(0.2, 0.33)) * rng.uniform(0.75, 0.95)
    period = rng.uniform(0.07, 0.11)
    a1 = rng.uniform(0, np.pi)
    a2 = a1 + rng.uniform(1.1, 2.0)
    hatch = sum(np.sin(c["xx"] * np.float32(2 * np.pi * np.cos(a) / period)
                       + c["yy"] * np.float32(2 * np.pi * np.sin(a) / period)) for a in (a1, a2))
    tex = 0.15 * hatch + 0.07 * _noise(rng, c["size"], 8)
    col = c["skin"] * np.array([0.95, 0.56, 0.55], np.float32)
    _paint(img, mask, col[:, None, None] * (1 + tex))


def _tinea(rng, img, c):  # Infeksi Jamur: deep red ring around paler clearing skin
    for n in range(1 + (rng.uniform() < 0.3)):
        center = c["center"] + (rng.uniform(-0.12, 0.12, 2) if n else 0)
        r, th = _frame(rng, c["xx"], c["yy"], rng.uniform(0.17, 0.3) * c["zoom"], center)
        r = r / _wobble(rng, th, 0.05, 5)
        width = rng.uniform(0.2, 0.35)
        ring = _inside(r, 0.1) * (1 - _inside(r / (1 - width), 0.15))
        _paint(img, 0.25 * _inside(r, 0.1), c["skin"] * np.array([1.03, 0.96, 0.92], np.float32))
        _paint(img, 0.9 * ring, c["skin"] * np.array([1.0, 0.52, 0.48], np.float32))
        scale = np.clip(_noise(rng, c["size"], c["size"] / 4) - 1.2, 0, 1)  # sparse, unlike psoriasis
        _paint(img, 0.4 * ring * scale, np.array([0.93, 0.88, 0.84], np.float32))


def _psoriasis(rng, img, c):  # sharp salmon plaques under silvery-white scale
    for n in range(rng.integers(1, 4)):
        center = c["center"] + (rng.uniform(-0.2, 0.2, 2) if n else 0)
        r, th = _frame(rng, c["xx"], c["yy"], rng.uniform(0.1, 0.2) * c["zoom"], center, (0.6, 1.0))
        r = r / _wobble(rng, th, 0.08, 5)
        _paint(img, 0.9 * _inside(r, 0.07), c["skin"] * np.array([1.15, 0.66, 0.62], np.float32))
        scale = np.clip(_noise(rng, c["size"], 10) + 0.3, 0, 1) * _inside(r / 0.85, 0.15)
        _paint(img, 0.8 * scale, np.array([0.88, 0.88, 0.9], np.float32) * rng.uniform(0.9, 1.05))


def _papules(rng, img, c, count, radius, spread, rough: float, color, dimple: bool):
    """Raised domes, used by both Kutil (few, big, rough) and Infeksi Virus (many, small, smooth)."""
    size = c["size"]
    height, cover = np.zeros_like(c["xx"]), np.zeros_like(c["xx"])
    for _ in range(count):
        center = c["center"] + rng.uniform(-spread, spread, 2) * c["zoom"]
        rad = rng.uniform(*radius) * c["zoom"]
        (x0, y0), (x1, y1) = np.clip(((center - 1.2 * rad) * size, (center + 1.2 * rad) * size + 1), 0, size)
        box = np.s_[int(y0):int(y1), int(x0):int(x1)]  # draw each dome in its own bounding box
        r, _ = _frame(rng, c["xx"][box], c["yy"][box], rad, center, (0.8, 1.0), angle=False)
        dome = np.sqrt(np.clip(1 - r * r, 0, 1))
        if dimple:
            dome = dome * (1 - 0.5 * _inside(r / 0.22, 0.5))
        np.maximum(height[box], dome, out=height[box])
        np.maximum(cover[box], _inside(r, 0.15), out=cover[box])
    if rough:
        height = height * (1 + rough * np.abs(_noise(rng, c["size"], c["size"] / 5)))
    _paint(img, 0.85 * cover, color)
    _shade(img, height * (radius[1] / 0.05), 0.35, c["size"])
    return cover


def _wart(rng, img, c):  # Kutil: 1-3 big grey-yellow cauliflower papules with black dots
    color = 0.5 * c["skin"] + 0.5 * np.array([0.72, 0.66, 0.5], np.float32)
    cover = _papules(rng, img, c, rng.integers(1, 4), (0.06, 0.11), 0.1, 0.7, color, False)
    dots = np.clip(_noise(rng, c["size"], c["size"] / 6) - 1.5, 0, 1) * cover
    _paint(img, np.clip(3 * dots, 0, 0.9), np.array([0.15, 0.08, 0.08], np.float32))


def _viral(rng, img, c):  # Infeksi Virus: a scatter of small pearly domes with a central dimple
    color = 0.4 * c["skin"] + 0.6 * np.array([0.95, 0.84, 0.82], np.float32)
    _papules(rng, img, c, rng.integers(6, 18), (0.025, 0.048), 0.22, 0.0, color, True)


def _nodule(rng, img, c, color):
    r, th = _frame(rng, c["xx"], c["yy"], rng.uniform(0.1, 0.19) * c["zoom"], c["center"])
    r = r / _wobble(rng, th, 0.05, 4)
    _paint(img, 0.9 * _inside(r, 0.12), color)
    _shade(img, np.sqrt(np.clip(1 - r * r, 0, 1)) * 4, 0.25, c["size"])
    return r


def _bcc(rng, img, c):  # Karsinoma Sel Basal: pearly pink nodule, bright rim, vessels, ulcer
    r = _nodule(rng, img, c, 0.35 * c["skin"] + 0.65 * np.array([0.95, 0.78, 0.78], np.float32))
    mask = _inside(r, 0.12)
    _paint(img, 0.5 * mask * (1 - _inside(r / 0.75, 0.2)), np.array([0.98, 0.92, 0.9], np.float32))
    vessels, s = np.zeros_like(r), c["size"]
    for _ in range(rng.integers(3, 7)):
        start = (c["center"] + rng.uniform(-0.08, 0.08, 2) * c["zoom"]) * s
        _polyline(vessels, _walk(rng, start, 5, 0.035 * s * c["zoom"], 0.6), max(0.8, s / 128))
    _paint(img, 0.75 * vessels * mask, np.array([0.72, 0.12, 0.16], np.float32))
    if rng.uniform() < 0.6:
        ulcer = _inside(r / rng.uniform(0.25, 0.45), 0.3) * (0.8 + 0.2 * _noise(rng, s, 12))
        _paint(img, np.clip(ulcer, 0, 1), np.array([0.36, 0.15, 0.12], np.float32))


def _benign(rng, img, c):  # Tumor Jinak: smooth, even tan-pink dome, sometimes a darker halo
    r = _nodule(rng, img, c, 0.4 * c["skin"] + 0.6 * np.array([0.72, 0.53, 0.43], np.float32))
    if rng.uniform() < 0.5:
        halo = _inside(r, 0.15) * (1 - _inside(r / 0.7, 0.4))
        _paint(img, 0.35 * halo, np.array([0.45, 0.3, 0.22], np.float32))


_PAINTERS = {
    "Dermatitis Atopik": _atopic, "Eksim": _eczema, "Infeksi Jamur": _tinea, "Infeksi Virus": _viral,
    "Karsinoma Sel Basal": _bcc, "Kutil": _wart, "Melanoma": _melanoma, "Psoriasis": _psoriasis,
    "Tahi Lalat": _mole, "Tumor Jinak": _benign,
}


def _skin(rng, size: int):
    xx, yy = _grid(size)
    pos = rng.uniform(0, 1) ** 1.5 * (len(_SKIN_TONES) - 1)  # lighter tones more often
    lo = int(min(pos, len(_SKIN_TONES) - 2))
    base = _SKIN_TONES[lo] + (pos - lo) * (_SKIN_TONES[lo + 1] - _SKIN_TONES[lo])
    base = base * rng.normal(1, 0.025, 3).astype(np.float32)
    ang, strength = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.25)
    cos, sin = np.float32(strength * np.cos(ang)), np.float32(strength * np.sin(ang))
    light = 1 + (xx - 0.5) * cos + (yy - 0.5) * sin
    light = light * (1 + 0.04 * _noise(rng, size, 4)) * (1 + 0.02 * _noise(rng, size, size / 6))
    return xx, yy, base, base[:, None, None] * light  # planar (3, H, W): blending is faster


def _hairs(rng, img, size: int) -> None:
    alpha = np.zeros(img.shape[1:], np.float32)
    for _ in range(rng.integers(1, 5)):
        start = rng.uniform(0, size, 2)
        _polyline(alpha, _walk(rng, start, 8, size / 6, 0.15), rng.uniform(0.6, 1.3) * size / 128)
    _paint(img, 0.8 * alpha, np.array([0.12, 0.08, 0.06], np.float32) * rng.uniform(0.6, 1.4))


def render_image(class_name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw one synthetic image of `class_name` as a uint8 RGB array (size, size, 3)."""
    xx, yy, skin, img = _skin(rng, size)
    ctx = {"xx": xx, "yy": yy, "skin": skin, "size": size,
           "zoom": rng.uniform(0.85, 1.3), "center": rng.uniform(0.33, 0.67, 2).astype(np.float32)}
    _PAINTERS[class_name](rng, img, ctx)
    if rng.uniform() < 0.35:
        _hairs(rng, img, size)
    img *= (rng.normal(1, 0.03, 3) * rng.uniform(0.9, 1.1)).astype(np.float32)[:, None, None]  # white balance
    vignette = 1 - rng.uniform(0, 0.25) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    img *= vignette
    img += (rng.random(img.shape, dtype=np.float32) - np.float32(0.5)) * np.float32(0.04)  # sensor noise
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0).copy()

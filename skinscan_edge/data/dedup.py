"""Near-duplicate photos: a perceptual hash per image, a sub-quadratic search, a confirmation.

1. **Fingerprint** (:func:`fingerprint`), computed by ``data.scan`` from the pixels it already
   decoded (no second decode): the image is shrunk once to 128×128 grayscale (area average), then
   five centred crops (keeping 100, 95, 90, 85 and 80% of each side) are area-averaged to 32×32
   thumbnails. Each
   thumbnail, and its horizontal, vertical and double mirror image, gets a 64-bit pHash: the
   same hash as ``imagehash.phash`` (2-D DCT-II of the 32×32 thumbnail, its top-left 8×8 block,
   one bit per coefficient above their median; Zauner 2010), 20 hashes per image. The detail of
   the five thumbnails (high-passed, int8, 5 KB) is kept for the confirmation.
2. **Candidates** (:func:`candidate_pairs`): every image's plain hash is looked up among every
   image's 20 hashes within ``HASH_RADIUS`` bits, by multi-index hashing (Norouzi et al., 2012):
   the 64 bits are dealt into 4 chunks of 16 (a fixed shuffle, so each chunk mixes low and high
   frequencies and the buckets stay even); two hashes within 7 bits agree to within 1 bit on at
   least one chunk (pigeonhole), so each query probes 17 keys per chunk in a sorted array,
   instead of comparing with every image. 27,000 images never make 27,000² comparisons.
3. **Confirmation** (:func:`find_near_duplicates`): hash distance alone pairs unrelated flat or
   look-alike skin photos, so a candidate pair is kept only when the Pearson correlation of the
   high-passed thumbnails (thumbnail minus its Gaussian blur, sigma 2 px, which removes the shared
   vignette and skin tone) reaches ``MIN_CORRELATION``, at the crop and mirror that matched.

Found: re-encodes, resizes, mirror images (flips count: a mirrored copy is the same photo),
centred crops that keep at least 80% of each side, and combinations of them. Not found:
one-sided crops over a few percent, 90° rotations, heavy edits. The thresholds and their
measured precision and recall are in benchmarks/NOTES.md (benchmarks/dedup_real_photos.py).

Hand-written rather than ``imagehash``: imagehash hashes one PIL image per call (about 2 ms
here), and this needs 20 hashes per image as one batched DCT (a matrix product: only the 8×8
low frequencies are needed); tests/test_dedup.py checks that the plain hash equals
``imagehash.phash``. A BK-tree (``pybktree``) would visit most of the tree at radius 7 of 64 bits.

>>> # fps = [fingerprint(load_rgb(p)) for p in paths]
>>> # find_near_duplicates(fps)  # -> [NearDuplicate(a=0, b=3, hash_distance=2, correlation=0.99, ...)]
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Centred crops fingerprinted per image: the share of each side kept.
SCALES = (1.0, 0.95, 0.9, 0.85, 0.8)
#: Mirror images fingerprinted per crop (applied to the thumbnail: flipping commutes with it).
FLIPS = ("none", "horizontal", "vertical", "both")
THUMB_PX = 32
_WORK_PX = 128
#: Largest Hamming distance (of 64 bits) between two hashes that makes a candidate pair.
HASH_RADIUS = 7
_CHUNKS = 4  # multi-index hashing: 4 chunks of 16 bits; chunk radius HASH_RADIUS // 4 = 1
_BIT_ORDER = np.random.default_rng(20121).permutation(64)  # how the 64 bits are dealt into chunks
#: Smallest correlation of high-passed thumbnails that confirms a candidate pair.
MIN_CORRELATION = 0.90
_HIGHPASS_SIGMA = 2.0
_FLAT = 1.0  # thumbnails whose high-passed std (grey levels) is below this can't be confirmed


@dataclass(frozen=True)
class Fingerprint:
    """One image's hashes (uint64, one per crop × flip, crop-major) and the detail of each crop's
    thumbnail: high-passed, scaled to int8 (±127), all zero when the image is flat."""

    hashes: np.ndarray  # (len(SCALES) * len(FLIPS),) uint64; [0] is the plain image's hash
    detail: np.ndarray  # (len(SCALES), 32, 32) int8


@dataclass(frozen=True)
class NearDuplicate:
    """A confirmed pair: image ``b`` matches image ``a`` cropped to ``scale`` and mirrored by ``flip``."""

    a: int
    b: int
    hash_distance: int
    correlation: float
    scale: float
    flip: str


def _flips(t: np.ndarray) -> np.ndarray:
    """(S, H, W) -> (S, 4, H, W) in FLIPS order."""
    return np.stack([t, t[:, :, ::-1], t[:, ::-1, :], t[:, ::-1, ::-1]], axis=1)


@functools.lru_cache(maxsize=None)
def _dct_rows() -> np.ndarray:
    """The first 8 rows of scipy's unnormalised DCT-II matrix for 32 points (what imagehash uses)."""
    k, n = np.arange(8)[:, None], np.arange(THUMB_PX)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * THUMB_PX))


def phash_bits(thumbs: np.ndarray) -> np.ndarray:
    """64-bit pHash of each (32, 32) thumbnail in a batch, as uint64; equals imagehash.phash."""
    c = _dct_rows()
    # a batch of 8×32 products: small enough that OpenBLAS does not thread them
    coeffs = (c @ thumbs.astype(np.float64) @ c.T).reshape(-1, 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel()


def thumbnails(rgb: np.ndarray) -> np.ndarray:
    """(len(SCALES), 32, 32) uint8 grayscale thumbnails of the centred crops of an RGB image.

    Pillow does the area averages: one 32×128 matrix product per crop would be as fast alone, but
    OpenBLAS threads it, and several scan threads doing so at once thrash (measured 5-15 ms)."""
    from PIL import Image

    box = Image.Resampling.BOX
    gray = Image.fromarray(rgb).convert("L").resize((_WORK_PX, _WORK_PX), box)
    out = []
    for s in SCALES:
        m = _WORK_PX * (1 - s) / 2
        out.append(np.asarray(gray.resize((THUMB_PX, THUMB_PX), box, box=(m, m, _WORK_PX - m, _WORK_PX - m))))
    return np.stack(out)


def fingerprint(rgb: np.ndarray) -> Fingerprint:
    """The fingerprint of a decoded uint8 RGB image (H, W, 3); about 1 ms (see benchmarks/NOTES.md).

    The detail is high-passed here, once per image, so that confirming a candidate pair later is
    one dot product (mirroring commutes with the symmetric filter)."""
    thumbs = thumbnails(rgb)
    detail = _highpass(thumbs)
    top = np.abs(detail).max(axis=(1, 2), keepdims=True)
    detail = np.round(detail * (127 / np.maximum(top, 1e-12))).astype(np.int8)
    return Fingerprint(hashes=phash_bits(_flips(thumbs)), detail=detail)


def _chunk_keys(hashes: np.ndarray) -> np.ndarray:
    """(len(hashes), _CHUNKS) int64 keys: the hash bits dealt into chunks by _BIT_ORDER."""
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)[:, _BIT_ORDER]
    packed = np.packbits(bits.reshape(len(hashes), _CHUNKS, 64 // _CHUNKS), axis=2)  # (n, chunks, 2)
    return packed[..., 0].astype(np.int64) << 8 | packed[..., 1]


def candidate_pairs(queries: np.ndarray, index: np.ndarray, radius: int = HASH_RADIUS,
                    block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query i, index entry j) whose uint64 hashes differ in at most ``radius`` bits,
    found by multi-index hashing (module docstring). Returns (i, j, distance) arrays."""
    if radius >= 2 * _CHUNKS:
        raise ValueError(f"radius {radius} needs more than {_CHUNKS} chunks")
    width = 64 // _CHUNKS
    masks = np.array([0] + [1 << b for b in range(width)] * (radius // _CHUNKS >= 1), np.int64)
    qkeys, ikeys = _chunk_keys(queries), _chunk_keys(index)
    found = []
    for c in range(_CHUNKS):
        order = np.argsort(ikeys[:, c], kind="stable")
        sorted_keys = ikeys[order, c]
        for start in range(0, len(queries), block):
            probes = (qkeys[start:start + block, c, None] ^ masks[None, :]).ravel()
            lo = np.searchsorted(sorted_keys, probes, "left")
            counts = np.searchsorted(sorted_keys, probes, "right") - lo
            qi = np.repeat(np.repeat(np.arange(start, start + len(probes) // len(masks)), len(masks)), counts)
            # positions lo..hi-1 of every probe, concatenated
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            ji = order[np.repeat(lo, counts) + offsets]
            dist = np.bitwise_count(queries[qi] ^ index[ji])
            ok = dist <= radius
            found.append((qi[ok], ji[ok], dist[ok]))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8)
    qi, ji, dist = (np.concatenate(x) for x in zip(*found))
    pair = np.unique(qi.astype(np.int64) * len(index) + ji, return_index=True)[1]  # a pair found by 2 chunks
    return qi[pair].astype(np.int64), ji[pair].astype(np.int64), dist[pair]


@functools.lru_cache(maxsize=None)
def _blur_matrix() -> np.ndarray:
    """(32, 32) matrix B with B @ x == scipy's gaussian_filter1d(x, sigma, axis=0, mode="reflect")."""
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(np.eye(THUMB_PX), _HIGHPASS_SIGMA, axis=0, mode="reflect").astype(np.float32)


def _highpass(thumbs: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm high-passed thumbnails (..., 32, 32) float32 (the thumbnail minus its
    Gaussian blur); all-zero when flat."""
    b = _blur_matrix()
    t = thumbs.astype(np.float32)
    t = t - b @ t @ b.T
    t -= t.mean(axis=(-2, -1), keepdims=True)
    norm = np.sqrt((t * t).sum(axis=(-2, -1), keepdims=True))
    flat = norm < _FLAT * THUMB_PX  # std below _FLAT grey levels
    return np.where(flat, 0.0, t / np.maximum(norm, 1e-6)).astype(np.float32)


def _variants(fps: list[Fingerprint], owner: np.ndarray, variant: np.ndarray) -> np.ndarray:
    """The details of (image, crop × flip) variants, (k, 32, 32) float32."""
    scale, flip = np.divmod(variant, len(FLIPS))
    t = np.stack([fps[o].detail[s] for o, s in zip(owner.tolist(), scale.tolist())]).astype(np.float32)
    h, v = np.isin(flip, (1, 3)), np.isin(flip, (2, 3))
    t[h] = t[h][:, :, ::-1]
    t[v] = t[v][:, ::-1, :]
    return t


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of zero-mean details, row by row; 0 for flat ones."""
    dot = (a * b).sum(axis=(1, 2))
    norms = np.sqrt((a * a).sum(axis=(1, 2)) * (b * b).sum(axis=(1, 2)))
    return np.where(norms > 0, dot / np.maximum(norms, 1e-12), 0.0)


def find_near_duplicates(fps: list[Fingerprint], radius: int = HASH_RADIUS,
                         min_correlation: float = MIN_CORRELATION, block: int = 8192) -> list[NearDuplicate]:
    """Confirmed near-duplicate pairs among fingerprints, the best-correlated match per pair of
    images. Flat images (blank, or one even colour) can't be confirmed, so they are left out
    before the search: their hashes are all alike and would make every pair of them a candidate."""
    per = len(SCALES) * len(FLIPS)
    active = np.flatnonzero([fp.detail[0].any() for fp in fps])
    if len(active) < 2:
        return []
    hashes = np.stack([fps[k].hashes for k in active])  # (n, per)
    qi, ji, dist = candidate_pairs(hashes[:, 0], hashes.ravel(), radius)
    owner, variant = ji // per, ji % per
    keep = owner != qi
    qi, owner, variant, dist = active[qi[keep]], active[owner[keep]], variant[keep], dist[keep]
    corr = np.zeros(len(qi), np.float32)
    for start in range(0, len(qi), block):  # batched: the candidates can be many on look-alike data
        sl = slice(start, start + block)
        plain = np.stack([fps[q].detail[0] for q in qi[sl].tolist()]).astype(np.float32)
        corr[sl] = _correlation(plain, _variants(fps, owner[sl], variant[sl]))
    ok = np.flatnonzero(corr >= min_correlation)
    ok = ok[np.lexsort((-corr[ok], np.minimum(qi[ok], owner[ok]) * len(fps) + np.maximum(qi[ok], owner[ok])))]
    best: dict[tuple[int, int], NearDuplicate] = {}
    for k in ok.tolist():  # sorted by pair, best correlation first
        q, o = int(qi[k]), int(owner[k])
        s, f = divmod(int(variant[k]), len(FLIPS))
        best.setdefault((min(q, o), max(q, o)), NearDuplicate(
            a=o, b=q, hash_distance=int(dist[k]), correlation=round(float(corr[k]), 4), scale=SCALES[s], flip=FLIPS[f]))
    return [best[k] for k in sorted(best)]

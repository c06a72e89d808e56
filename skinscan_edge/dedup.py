"""Near-duplicate photos: a perceptual hash per image, a sub-quadratic search, a confirmation.

1. **Fingerprint** (:func:`fingerprint`), computed by ``data.scan`` from the pixels it already
   decoded (no second decode): the image is shrunk once to 128×128 grayscale (area average), then five centred
   crops (keeping 100, 95, 90, 85 and 80% of each side) are shrunk to 32×32 thumbnails. Each
   thumbnail, and its horizontal, vertical and double mirror image, gets a 64-bit pHash: the
   same hash as ``imagehash.phash`` (2-D DCT-II of the 32×32 thumbnail, its top-left 8×8 block,
   one bit per coefficient above their median; Zauner 2010), 20 hashes per image. The five
   uint8 thumbnails (5 KB) are kept for the confirmation.
2. **Candidates** (:func:`candidate_pairs`): every image's plain hash is looked up among every
   image's 20 hashes within ``HASH_RADIUS`` bits, by multi-index hashing (Norouzi et al., 2012):
   the 64 bits are cut into 4 chunks of 16; two hashes within 7 bits agree to within 1 bit on
   at least one chunk (pigeonhole), so each query probes 17 keys per chunk in a sorted array,
   instead of comparing with every image. 27,000 images never make 27,000² comparisons.
3. **Confirmation** (:func:`find_near_duplicates`): hash distance alone pairs unrelated flat or
   look-alike skin photos, so a candidate pair is kept only when the Pearson correlation of the
   high-passed thumbnails (thumbnail minus its Gaussian blur, sigma 2 px, which removes the shared
   vignette and skin tone) reaches ``MIN_CORRELATION``, at the crop and mirror that matched.

Found: re-encodes, resizes, mirror images (flips count: a mirrored copy is the same photo),
centred crops that keep at least 80% of each side, and combinations of them. Not found:
one-sided crops over a few percent, 90° rotations, heavy edits. The thresholds and their
measured precision and recall are in benchmarks/NOTES.md (benchmarks/dedup_real_photos.py).

hand-written rather than ``imagehash``: imagehash hashes one PIL image per call (about 2 ms
here), and this needs 20 hashes per image batched in one DCT (tests/test_dedup.py checks that
the plain hash equals ``imagehash.phash``); a BK-tree (``pybktree``) would visit most of the
tree at radius 7 of 64 bits.

>>> # fps = [fingerprint(load_rgb(p)) for p in paths]
>>> # find_near_duplicates(fps)  # -> [NearDuplicate(a=0, b=3, hash_distance=2, correlation=0.99, ...)]
"""

from __future__ import annotations

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
#: Smallest correlation of high-passed thumbnails that confirms a candidate pair.
MIN_CORRELATION = 0.90
_HIGHPASS_SIGMA = 2.0
_FLAT = 1.0  # thumbnails whose high-passed std (grey levels) is below this can't be confirmed


@dataclass(frozen=True)
class Fingerprint:
    """One image's hashes (uint64, one per crop × flip, crop-major) and 32×32 uint8 thumbnails."""

    hashes: np.ndarray  # (len(SCALES) * len(FLIPS),) uint64; [0] is the plain image's hash
    thumbs: np.ndarray  # (len(SCALES), 32, 32) uint8


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


def phash_bits(thumbs: np.ndarray) -> np.ndarray:
    """64-bit pHash of each (32, 32) thumbnail in a batch, as uint64; equals imagehash.phash."""
    from scipy.fft import dctn

    coeffs = dctn(thumbs.astype(np.float64), axes=(-2, -1))[..., :8, :8].reshape(-1, 64)
    bits = coeffs > np.median(coeffs, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel()


def fingerprint(rgb: np.ndarray) -> Fingerprint:
    """The fingerprint of a decoded uint8 RGB image (H, W, 3); about 3 ms for a 600×450 photo."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    # BOX (an area average) for the big reduction: as good as Lanczos at 128 px, 3x faster
    gray = Image.fromarray(rgb).convert("L").resize((_WORK_PX, _WORK_PX), Image.Resampling.BOX)
    thumbs = []
    for s in SCALES:
        m = _WORK_PX * (1 - s) / 2
        thumbs.append(np.asarray(gray.resize((THUMB_PX, THUMB_PX), lanczos,
                                             box=(m, m, _WORK_PX - m, _WORK_PX - m)), np.uint8))
    thumbs = np.stack(thumbs)
    return Fingerprint(hashes=phash_bits(_flips(thumbs)), thumbs=thumbs)


def candidate_pairs(queries: np.ndarray, index: np.ndarray, radius: int = HASH_RADIUS,
                    block: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (query i, index entry j) whose uint64 hashes differ in at most ``radius`` bits,
    found by multi-index hashing (module docstring). Returns (i, j, distance) arrays."""
    if radius >= 2 * _CHUNKS:
        raise ValueError(f"radius {radius} needs more than {_CHUNKS} chunks")
    width = 64 // _CHUNKS
    r = radius // _CHUNKS
    masks = np.array([0] + [1 << b for b in range(width)] * (r >= 1), np.uint64)
    found = []
    for c in range(_CHUNKS):
        shift, keep = np.uint64(c * width), np.uint64((1 << width) - 1)
        keys = (index >> shift) & keep
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        for start in range(0, len(queries), block):
            q = queries[start:start + block]
            probes = (((q >> shift) & keep)[:, None] ^ masks[None, :]).ravel()
            lo = np.searchsorted(sorted_keys, probes, "left")
            hi = np.searchsorted(sorted_keys, probes, "right")
            counts = hi - lo
            qi = np.repeat(np.repeat(np.arange(start, start + len(q)), len(masks)), counts)
            # positions lo..hi-1 of every probe, concatenated
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            ji = order[np.repeat(lo, counts) + offsets]
            dist = np.bitwise_count(queries[qi] ^ index[ji])
            ok = dist <= radius
            found.append((qi[ok], ji[ok], dist[ok]))
    if not found:
        return (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.uint8),)
    qi, ji, dist = (np.concatenate(x) for x in zip(*found))
    pair = np.unique(qi.astype(np.int64) * len(index) + ji, return_index=True)[1]  # a pair found by 2 chunks
    return qi[pair].astype(np.int64), ji[pair].astype(np.int64), dist[pair]


def _highpass(thumbs: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm high-passed thumbnails (..., 32, 32) float32; all-zero when flat."""
    from scipy.ndimage import gaussian_filter

    t = thumbs.astype(np.float32)
    sigma = (0,) * (t.ndim - 2) + (_HIGHPASS_SIGMA, _HIGHPASS_SIGMA)
    t = t - gaussian_filter(t, sigma, mode="reflect")
    t -= t.mean(axis=(-2, -1), keepdims=True)
    std = t.std(axis=(-2, -1), keepdims=True)
    norm = np.sqrt((t * t).sum(axis=(-2, -1), keepdims=True))
    return np.where(std >= _FLAT, t / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def find_near_duplicates(fps: list[Fingerprint], radius: int = HASH_RADIUS,
                         min_correlation: float = MIN_CORRELATION) -> list[NearDuplicate]:
    """Confirmed near-duplicate pairs among fingerprints, the best-correlated match per pair of
    images. Flat images (blank, or one even colour) can't be confirmed, so they are left out
    before the search: their hashes are all alike and would make every pair of them a candidate."""
    per = len(SCALES) * len(FLIPS)
    plain = _highpass(np.stack([fp.thumbs[0] for fp in fps])) if fps else np.zeros((0, 1, 1))
    active = np.flatnonzero(plain.any(axis=(1, 2)))
    if len(active) < 2:
        return []
    hashes = np.stack([fps[k].hashes for k in active])  # (n, per)
    qi, ji, dist = candidate_pairs(hashes[:, 0], hashes.ravel(), radius)
    owner, variant = ji // per, ji % per
    keep = owner != qi
    qi, owner, variant, dist = active[qi[keep]], active[owner[keep]], variant[keep], dist[keep]
    hp = {int(k): _highpass(fps[k].thumbs) for k in np.unique(owner)}  # (S, 32, 32); flips by indexing
    best: dict[tuple[int, int], NearDuplicate] = {}
    for q, o, v, d in zip(qi.tolist(), owner.tolist(), variant.tolist(), dist.tolist()):
        s, f = divmod(v, len(FLIPS))
        c = float((plain[q] * _flips(hp[o][s:s + 1])[0, f]).sum())
        if c < min_correlation:
            continue
        key = (min(q, o), max(q, o))
        if key not in best or c > best[key].correlation:
            best[key] = NearDuplicate(a=o, b=q, hash_distance=int(d), correlation=round(c, 4),
                                      scale=SCALES[s], flip=FLIPS[f])
    return [best[k] for k in sorted(best)]

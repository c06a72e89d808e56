"""The decoded-image cache on disk: one uint8 ``.npy`` per split, at the run's image size.

A split that does not fit the in-memory budget (``RAM_BUDGET_BYTES``) is decoded once (Pillow,
``imageio.load_rgb``, as everywhere else) into ``RUN/cache/<split>-<sha16>-<size>px.npy``; every
later epoch, export calibration, evaluate and benchmark read rows from it instead of decoding
JPEGs again. The file name carries the key (the split's SHA-256 and the image size), so a changed
split or size never reads an old file: the new one is built and the stale one removed.

The build writes to a hidden temporary name and renames it when complete (fsynced), so a killed
build leaves nothing that is later trusted. Beside each file, ``<name>.xxh3`` holds one xxh3-64
digest per row (written first, also atomically); the first time a process opens a cache file, every
row is checked against it (:func:`open_verified`, in threads: xxhash releases the GIL). A file that
does not match (a flipped bit, a file overwritten in place) is removed and rebuilt, with one
warning line, and never used; reads after that check cost nothing extra (benchmarks/cache_read.py,
``disk_verified``). Rows are read with ``os.preadv`` (a copy out of the
page cache) into aligned buffers that are reused once nothing refers to them (``_Buffers``), not
through a memory map, so reading the whole cache does not grow the process' resident set. The
copy costs CPU: on the 2-core dev host, 35-43 CPU us per 299 px image through tf.data against
19-21 for tf.data's in-memory ``cache()``; a memory map whose pages are dropped after each batch
cost 66 (page faults). See benchmarks/cache_read.py and benchmarks/NOTES.md (issue 15).

Remove every cache of a run with ``rm -r RUN/cache`` (it is rebuilt when needed), or never build
one with ``train --image-cache off``.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xxhash

from skinscan_edge.core.errors import BadImage, SkinscanError
from skinscan_edge.core.files import atomic_write_bytes
from skinscan_edge.core.progress import Reporter, reporter_or_silent
from skinscan_edge.core.rundir import split_pairs
from skinscan_edge.data.imageio import load_batch, load_rgb

#: Splits whose decoded pixels fit this budget are cached in memory (tf.data ``cache()``) instead.
RAM_BUDGET_BYTES = 1.5e9
CACHE_DIR = "cache"
#: Disk space left free after a build, so the run can still write its model and reports.
DISK_MARGIN_BYTES = 1 << 30
_ALIGN = 64  # bytes: enough for TensorFlow to adopt a buffer (measured: a 16-byte-aligned one is copied)
_CHUNK = 256  # images decoded per round of the thread pool: bounds the memory of a build


def decoded_bytes(count: int, img_size: int) -> int:
    return count * img_size * img_size * 3


def human_bytes(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def cache_path(cache_dir: Path, name: str, split_sha256: str, img_size: int) -> Path:
    return Path(cache_dir) / f"{name}-{split_sha256[:16]}-{img_size}px.npy"


def digest_path(path: Path) -> Path:
    """The per-row digests of cache file ``path`` (little-endian uint64 xxh3-64, one per row)."""
    return Path(path).with_suffix(".xxh3")


def _row_digest(row) -> int:
    return xxhash.xxh3_64_intdigest(row)


class CacheCorrupt(SkinscanError):
    """A cache file whose rows do not match their digests."""


#: Cache files this process has checked against their digests: (path, inode, size, mtime_ns).
_VERIFIED: set[tuple] = set()
_VERIFIED_LOCK = threading.Lock()


@dataclass
class ImageCache:
    """An open, complete cache file: ``read(indices)`` returns those rows as uint8 NHWC."""

    path: Path
    count: int
    img_size: int
    offset: int

    def __post_init__(self):
        self._fd = os.open(self.path, os.O_RDONLY)
        self._buffers = _Buffers()

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def read(self, indices) -> np.ndarray:
        s = self.img_size
        row = s * s * 3
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = self._buffers.take((len(idx), s, s, 3))
        for j, i in enumerate(idx):
            if os.preadv(self._fd, [out[j]], self.offset + int(i) * row) != row:
                raise SkinscanError(f"{self.path} is shorter than its header says; remove it (`rm {self.path}`)")
        return out


class _Buffers:
    """Uninitialised uint8 arrays whose data start on a 64-byte boundary, on reused buffers.

    Aligned: TensorFlow adopts an aligned array returned by ``tf.numpy_function`` as the tensor's
    buffer (holding a reference to it) and copies an unaligned one, 8.6 MB per batch of 32 at
    299 px. Reused: a fresh 8.6 MB allocation per batch costs page faults and zeroing (measured:
    43 instead of 55 CPU us per 299 px image through tf.data). A buffer is handed out again only
    when nothing refers to it any more: no array returned from it, no view of one, no tensor
    (numpy views keep their base alive, so the buffer's reference count says whether any is left).
    Requests larger than ``max_bytes`` (say a whole evaluation split) are not kept.
    """

    def __init__(self, keep: int = 16, max_bytes: int = 64 << 20):
        # The kept buffers, after a sentinel that is never handed out: its reference count, read
        # in the same loop, is what an idle buffer's reads there, whatever the interpreter's
        # reference-counting shortcuts (CPython 3.14 skips some increments).
        self._free: list[np.ndarray] = [np.empty(0, np.uint8)]
        self._keep, self._max_bytes = keep, max_bytes
        self._lock = threading.Lock()

    def take(self, shape: tuple) -> np.ndarray:
        n = int(np.prod(shape))
        with self._lock:
            idle = None
            for buf in self._free:
                if idle is None:
                    idle = sys.getrefcount(buf)  # the sentinel
                elif buf.size >= n + _ALIGN and sys.getrefcount(buf) == idle:
                    break
            else:
                buf = np.empty(max(n, 1) + _ALIGN, np.uint8)
                if buf.nbytes <= self._max_bytes and len(self._free) <= self._keep:
                    self._free.append(buf)
            start = -buf.ctypes.data % _ALIGN
            return buf[start:start + n].reshape(shape)


def open_cache(cache_dir: Path, name: str, split_sha256: str, img_size: int, count: int) -> ImageCache | None:
    """The complete cache for this key, or None (missing, or a file whose header or length is wrong)."""
    path = cache_path(cache_dir, name, split_sha256, img_size)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError):
        return None
    if (shape != (count, img_size, img_size, 3) or fortran or dtype != np.uint8
            or size != offset + decoded_bytes(count, img_size)):
        return None
    digests = digest_path(path)
    try:
        if digests.stat().st_size != 8 * count:
            return None
    except OSError:  # written by a version without digests, or a build killed between the two renames
        return None
    return ImageCache(path, count, img_size, offset)


def verify_cache(cache: ImageCache, workers: int = 4) -> None:
    """Check every row against its digest, once per process and file; raise CacheCorrupt if any differs."""
    st = os.stat(cache.path)
    key = (str(cache.path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _VERIFIED_LOCK:
        if key in _VERIFIED:
            return
    import mmap

    want = np.fromfile(digest_path(cache.path), dtype="<u8")
    row = cache.img_size ** 2 * 3
    step = max(1, (8 << 20) // row)  # rows per task: about 8 MB
    # Hashed straight from a read-only map (no copy: 1.6x the rate of reading rows out first);
    # each task drops its pages from this process once hashed, so the check does not grow the RSS.
    with open(cache.path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        view = memoryview(mm)

        def bad_rows(start: int) -> list[int]:
            stop = min(start + step, cache.count)
            bad = [i for i in range(start, stop)
                   if _row_digest(view[cache.offset + i * row:cache.offset + (i + 1) * row]) != want[i]]
            lo = (cache.offset + start * row) // mmap.PAGESIZE * mmap.PAGESIZE
            mm.madvise(mmap.MADV_DONTNEED, lo, min(len(mm), cache.offset + stop * row) - lo)
            return bad

        try:
            with ThreadPoolExecutor(workers) as pool:
                bad = [i for part in pool.map(bad_rows, range(0, cache.count, step)) for i in part]
        finally:
            view.release()
    if bad:
        raise CacheCorrupt(f"{cache.path}: {len(bad)} of {cache.count} rows do not match their digests "
                           f"(first: row {bad[0]})")
    with _VERIFIED_LOCK:
        _VERIFIED.add(key)


def open_verified(cache_dir: Path, name: str, split_sha256: str, img_size: int, paths: list, *,
                  reporter=None, build: bool = True) -> ImageCache | None:
    """The cache for this key, checked against its digests (once per process); a damaged one is
    removed with one warning line and rebuilt (``build``; else None: the caller decodes)."""
    cache = open_cache(cache_dir, name, split_sha256, img_size, len(paths))
    if cache is not None:
        try:
            verify_cache(cache)
            return cache
        except CacheCorrupt as e:
            reporter_or_silent(reporter).message(f"{e}; the damaged cache is removed and rebuilt", "warn")
            _remove(cache.path)
    return build_cache(cache_dir, name, split_sha256, img_size, paths, reporter=reporter) if build else None


def _remove(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)


def check_disk(cache_dir: Path, need: int, what: str) -> None:
    """One line, with the fix, when the disk cannot hold ``need`` bytes (plus a margin)."""
    probe = Path(cache_dir)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need + DISK_MARGIN_BYTES > free:
        raise SkinscanError(
            f"the decoded-image cache ({what}) needs {human_bytes(need)} but {probe} has "
            f"{human_bytes(free)} free (keeping {DISK_MARGIN_BYTES / 2**30:.0f} GiB spare); free some space, "
            f"or pass --image-cache off to decode every epoch instead")


def build_cache(cache_dir: Path, name: str, split_sha256: str, img_size: int, paths: list, *,
                reporter=None, workers: int = 4) -> ImageCache:
    """Decode ``paths`` once into the cache file for this key (atomically); see the module docstring."""
    say = reporter_or_silent(reporter)
    cache_dir = Path(cache_dir)
    need = decoded_bytes(len(paths), img_size)
    check_disk(cache_dir, need, f"{name} split, {len(paths)} images at {img_size} px")
    final = cache_path(cache_dir, name, split_sha256, img_size)
    say.message(f"decoded-image cache: {name} split, {len(paths)} images at {img_size} px, "
                f"{human_bytes(need)} in {final} (built once; `rm -r {cache_dir}` removes it)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*cache_dir.glob(f"{name}-*.npy"), *cache_dir.glob(f"{name}-*.xxh3"), *cache_dir.glob(f".{name}-*.tmp")]:
        stale.unlink(missing_ok=True)  # another key of this split, or a build that was killed
    tmp = cache_dir / f".{final.stem}.{os.getpid()}.tmp"
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(paths), img_size, img_size, 3)}
    digests = np.zeros(len(paths), dtype="<u8")
    try:
        with open(tmp, "wb") as f, ThreadPoolExecutor(workers) as pool, say.bars():
            np.lib.format.write_array_header_1_0(f, header)
            done = 0
            for start in range(0, len(paths), _CHUNK):
                for arr in pool.map(lambda p: _decode(p, img_size), paths[start:start + _CHUNK]):
                    f.write(arr.tobytes())
                    digests[done] = _row_digest(arr)
                    done += 1
                    say.advance(f"caching {name} images", done, len(paths))
            f.flush()
            os.fsync(f.fileno())

        atomic_write_bytes(digest_path(final), digests.tobytes())  # first: a cache file never lacks its digests
        os.replace(tmp, final)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:  # a write's error names no file; the user needs it
            e.filename = str(final)
        raise
    cache = open_cache(cache_dir, name, split_sha256, img_size, len(paths))
    if cache is None:
        raise SkinscanError(f"{final} was written but does not read back; check the disk, remove {cache_dir} and retry")
    verify_cache(cache)  # reads back what the disk now holds
    return cache


def _decode(path, img_size: int) -> np.ndarray:
    try:
        return load_rgb(path, img_size)
    except BadImage as e:
        raise SkinscanError(f"{path} can no longer be decoded ({e.reason}) although it was valid when the split "
                            f"was made; restore the file, or train a new run on the data as it is now") from None


def wants_disk_cache(mode: str, count: int, img_size: int) -> bool:
    return mode == "disk" or (mode == "auto" and decoded_bytes(count, img_size) >= RAM_BUDGET_BYTES)


# --- the one loader that export calibration, evaluate and benchmark use ----------------------
def run_cache(run, name: str, reporter=None) -> ImageCache | None:
    """The run's complete cache of split ``name`` at its image size (checked against its digests
    once per process; a damaged one is rebuilt with one warning line), or None."""
    split = run.split()
    if "sha256" not in split or not (run.root / CACHE_DIR).is_dir():  # a split made by hand has no key
        return None
    paths = [str(p) for p, _ in split_pairs(split, name)]
    if open_cache(run.root / CACHE_DIR, name, split["sha256"], run.img_size(), len(paths)) is None:
        return None  # never built for this split (train decided it fits in memory)
    return open_verified(run.root / CACHE_DIR, name, split["sha256"], run.img_size(), paths,
                         reporter=reporter or _STDERR)


class _StderrWarnings(Reporter):
    """Where a library function with no reporter of its own says that a cache was damaged (and
    nothing else: the rebuild's own progress stays quiet)."""

    def message(self, text: str, level: str = "info") -> None:
        if level in ("warn", "error"):
            print(f"warning: {text}", file=sys.stderr, flush=True)


_STDERR = _StderrWarnings()


def load_split_images(run, name: str, indices) -> np.ndarray:
    """Rows ``indices`` of split ``name`` as uint8 NHWC at the run's size: from the disk cache
    when the run has one, else decoded (``imageio.load_batch``)."""
    cache = run_cache(run, name)
    if cache is not None:
        return cache.read(indices)
    items = run.split_items(name)
    return load_batch([items[i][0] for i in indices], run.img_size())


def split_image_loader(run, name: str):
    """A function path -> uint8 image at the run's size, reading the disk cache for the paths of
    split ``name`` when it exists, decoding (``imageio.load_rgb``, which may raise BadImage) otherwise."""
    size, cache = run.img_size(), run_cache(run, name)
    if cache is None:
        return lambda path: load_rgb(path, size)
    row = {str(p): i for i, (p, _) in enumerate(run.split_items(name))}
    return lambda path: cache.read([row[str(path)]])[0] if str(path) in row else load_rgb(path, size)

"""Hostile inputs: mutated JPEG/PNG/GIF/WebP bytes never crash the loader or the scanner.

Every byte string either decodes to an RGB image or is refused with one of the documented
reasons (``imageio.REASONS``), the same rule for the scanner, ``evaluate`` and ``predict``.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from skinscan_edge.data import scan
from skinscan_edge.errors import BadImage
from skinscan_edge.imageio import REASONS, load_rgb


def _encode(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    img = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    if fmt == "JPEG":  # with EXIF, so the orientation parser sees mutated bytes too
        exif = Image.Exif()
        exif[0x0112] = 6
        img.save(buf, fmt, exif=exif)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


SEEDS = {fmt: _encode(fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")}

mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 64)),
)


def _mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for op, pos, arg in ops:
        if not b:
            break
        pos %= len(b)
        if op == "flip":
            b[pos] ^= arg
        elif op == "truncate":
            del b[pos:]
        elif op == "insert":
            b.insert(pos, arg)
        else:
            del b[pos:pos + arg]
    return bytes(b)


def _load_or_reason(data: bytes, tmp: Path, size: int | None = 32):
    path = tmp / "x.img"
    path.write_bytes(data)
    try:
        return load_rgb(path, size)
    except BadImage as e:
        return e.reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fmt=st.sampled_from(sorted(SEEDS)), ops=st.lists(mutation, min_size=1, max_size=6))
def test_mutated_images_decode_or_are_refused_with_a_reason(fmt, ops):
    with tempfile.TemporaryDirectory() as tmp:
        out = _load_or_reason(_mutate(SEEDS[fmt], ops), Path(tmp))
    if isinstance(out, str):
        assert out in REASONS
    else:
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_decode_or_are_refused_with_a_reason(data):
    with tempfile.TemporaryDirectory() as tmp:
        out = _load_or_reason(data, Path(tmp), size=None)
    assert out in REASONS if isinstance(out, str) else out.ndim == 3


@settings(max_examples=15, deadline=None)
@given(batch=st.lists(st.tuples(st.sampled_from(sorted(SEEDS)), st.lists(mutation, max_size=4)),
                      min_size=1, max_size=12))
def test_scanner_accounts_for_every_file(batch):
    """The scanner never crashes: each file is either kept or skipped with a reason."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, (fmt, ops) in enumerate(batch):
            d = root / ("a" if i % 2 else "b")
            d.mkdir(exist_ok=True)
            (d / f"{i}.{fmt.lower()}").write_bytes(_mutate(SEEDS[fmt], ops) if ops else SEEDS[fmt])
        result = scan(root)
        kept = sum(len(v) for v in result.items.values())
        assert kept + len(result.skipped) == len(batch)
        assert all(s["reason"] in REASONS for s in result.skipped)


@pytest.mark.parametrize("make, reason", [
    (lambda p: p / "missing.jpg", "not-found"),
    (lambda p: (p / "dir.jpg").mkdir() or p / "dir.jpg", "not-a-file"),
    (lambda p: (p / "empty.jpg").write_bytes(b"") and p / "empty.jpg" or p / "empty.jpg", "empty-file"),
    (lambda p: (p / "text.jpg").write_text("hello") and p / "text.jpg", "not-an-image"),
    (lambda p: (p / "cut.png").write_bytes(SEEDS["PNG"][:60]) and p / "cut.png", None),
])
def test_single_paths_get_the_stated_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(BadImage) as e:
        load_rgb(path, 32)
    assert e.value.reason in REASONS
    if reason:
        assert e.value.reason == reason

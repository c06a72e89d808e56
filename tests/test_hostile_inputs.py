"""Hostile inputs: mutated JPEG/PNG/GIF/WebP bytes never crash the loader or the scanner, and
hostile names (file and folder names of any bytes, label maps, labels.txt) never crash anything.

Every byte string either decodes to an RGB image or is refused with one of the documented
reasons (``imageio.REASONS``), the same rule for the scanner, ``evaluate`` and ``predict``.
Every name is either carried whole or refused (a label: one line naming the key) or skipped
(a file name: ``names.NAME_REASONS``).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from skinscan_edge.data.folder import load_label_map, make_dataset, scan
from skinscan_edge.core.errors import BadImage, SkinscanError
from skinscan_edge.data.imageio import REASONS, load_rgb
from skinscan_edge.core.names import NAME_REASONS
from skinscan_edge.core.rundir import RunDir


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


# --- hostile names (issue 19) -----------------------------------------------------------------
PNG = SEEDS["PNG"]


def _fits(name: bytes) -> bool:
    """A Linux file name: 1 to 255 bytes, anything but "/" and NUL."""
    return 0 < len(name) <= 255 and b"/" not in name and b"\0" not in name and name not in (b".", b"..")


name_bytes = st.binary(min_size=1, max_size=255).filter(_fits)


#: Text the way users write it: every Unicode category, bidi controls and zero-width characters.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["a", " ", "\n", "\t", "\r", "\u2028", "\u200b", "\u200f", "\u202e", "\u00a0",
                              "\u0645", "e\u0301", "\u00e9", "\U0001F600", "<", "&", "$"]), max_size=12).map("".join),
)


def _carriable(name: bytes) -> bool:
    """What the pipeline can carry: UTF-8 without control characters or line separators."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(unicodedata.category(c) == "Cc" or c in "\u2028\u2029" for c in text)


def _is_label(x) -> bool:
    """The label rule, restated from the issue: one non-empty line of printable text, unpadded."""
    return isinstance(x, str) and bool(x) and x == x.strip() and x.isprintable()


def _one_line(error: Exception) -> str:
    text = str(error)
    assert text and len(text.splitlines()) == 1 and "\n" not in text, repr(text)
    return text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(name_bytes, min_size=1, max_size=8, unique=True))
def test_scanner_keeps_every_carriable_file_name_and_skips_the_rest_with_a_reason(names):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        for cls in ("a", "b"):
            (root / cls).mkdir(parents=True)
            for name in names:
                with open(os.path.join(os.fsencode(root / cls), name), "wb") as f:
                    f.write(PNG)
        result = scan(root)
        visible = [n for n in names if not n.startswith(b".")]  # hidden files are not images
        kept = [rel for rel, _ in result.items["all"]]
        assert len(kept) + len(result.skipped) == 2 * len(visible)
        assert len(kept) == 2 * sum(map(_carriable, visible))
        for rel in kept:  # every kept path is UTF-8 text that JSON, split.json and tf.data carry
            assert (root / rel).is_file() and not any(unicodedata.category(c) == "Cc" for c in rel)
            assert json.loads(json.dumps(rel, ensure_ascii=False).encode("utf-8")) == rel
        for s in result.skipped:
            assert s["reason"] in NAME_REASONS
            assert s["path"].isprintable()  # undecodable bytes and control characters escaped


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(folders=st.lists(st.one_of(name_bytes, hostile_text.map(str.encode).filter(_fits)), min_size=2, max_size=4,
                        unique=True))
def test_class_folder_names_are_labels_or_a_one_line_refusal(folders):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        root.mkdir()
        for name in folders:
            folder = os.path.join(os.fsencode(root), name)
            os.mkdir(folder)
            with open(os.path.join(folder, b"x.png"), "wb") as f:
                f.write(PNG)
        try:
            result = scan(root)
        except SkinscanError as e:
            _one_line(e)
            return
        assert result.labels == result.classes
        assert all(map(_is_label, result.classes))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.one_of(hostile_text, st.integers(), st.none()), min_size=1, max_size=4))
def test_label_map_values_are_accepted_whole_or_refused_with_one_line_naming_the_key(values):
    folders = [f"folder{i}" for i in range(len(values))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "map.json"
        path.write_text(json.dumps(dict(zip(folders, values))), encoding="utf-8")
        try:
            labels = load_label_map(path, folders)
        except SkinscanError as e:
            assert re.search(r"folder 'folder\d+'", _one_line(e))
            return
        assert labels == values
        run = RunDir(Path(tmp))  # what train writes, every later command reads back unchanged
        run.labels_path.write_text("\n".join(labels) + "\n", encoding="utf-8")
        assert run.labels() == labels


@settings(max_examples=60, deadline=None)
@given(text=hostile_text)
def test_a_run_labels_txt_is_read_whole_or_refused_with_one_line(text):
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp))
        run.labels_path.write_text(text, encoding="utf-8")
        try:
            labels = run.labels()
        except SkinscanError as e:
            assert "labels.txt: " in _one_line(e)
            return
        lines = text.splitlines()
        assert all(map(_is_label, labels))
        assert labels == lines[:len(labels)] and not "".join(lines[len(labels):]).strip()


@pytest.mark.parametrize("value, fragment", [
    ("Line\nBreak", "contains a line break"),
    (" Melanoma", "leading or trailing space"),
    ("", "is empty"),
    ("Mela\u200bnoma", "non-printable character"),
    ("\u202eamonaleM", "non-printable character"),
    (5, "not text"),
])
def test_the_issue_label_cases_are_refused_naming_the_folder(tmp_path, value, fragment):
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"Price $5 & <b>": "Price", "b": value}))
    with pytest.raises(SkinscanError, match=fragment) as e:
        load_label_map(path, ["Price $5 & <b>", "b"])
    assert "folder 'b'" in _one_line(e.value)


def test_an_undecodable_file_name_is_skipped_with_a_printable_path(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "ok.png").write_bytes(PNG)
    with open(os.path.join(os.fsencode(tmp_path / "a"), b"\xff\xfe_bad_utf8.jpg"), "wb") as f:
        f.write(SEEDS["JPEG"])
    result = scan(tmp_path)
    assert result.skipped == [{"path": "a/\\xff\\xfe_bad_utf8.jpg", "reason": "undecodable-name"}]
    assert sorted(rel for rel, _ in result.items["all"]) == ["a/ok.png", "b/ok.png"]


def test_long_right_to_left_and_zero_width_names_go_through_the_training_pipeline(tmp_path):
    """The crash site of issue 19 was the tf.data string tensor: these names must reach it and
    decode there (long, right-to-left, zero-width, combining, emoji, markup)."""
    names = ["L" * 250 + ".png", "\u202eRTL-override.png", "zero\u200bwidth.png", "\u0645\u0631\u062d\u0628\u0627.png",
             "e\u0301 \U0001F600.png", "quote'\"&<b>.png"]
    folders = ["\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "b\u200d"]  # a zero-width joiner: fine in a folder
    for cls in folders:
        (tmp_path / "data" / cls).mkdir(parents=True)
        for name in names:
            (tmp_path / "data" / cls / name).write_bytes(PNG)
    (tmp_path / "map.json").write_text(json.dumps(dict(zip(folders, ["Price $5 & <b>", "\u0645\u064a\u0644\u0627"]))))
    with pytest.raises(SkinscanError, match="folder 'b\\\\u200d'"):  # but not as a label
        scan(tmp_path / "data")
    result = scan(tmp_path / "data", labels=tmp_path / "map.json")
    assert not result.skipped and len(result.items["all"]) == 2 * len(names)
    paths = [str(result.root / rel) for rel, _ in result.items["all"]]
    ds = make_dataset(paths, [y for _, y in result.items["all"]], 8, 4, training=False, seed=0)
    assert sum(int(x.shape[0]) for x, _ in ds) == len(paths)


def test_train_refuses_a_label_with_a_newline_with_one_line_before_any_work(tmp_path):
    from conftest import cli

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        (tmp_path / "data" / cls / "x.png").write_bytes(PNG)
    (tmp_path / "map.json").write_text(json.dumps({"a": "Price $5 & <b>", "b": "Line\nBreak"}))
    result = cli(["train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--labels", tmp_path / "map.json",
                  "--weights", "none", "--img-size", 75], timeout=300)
    tf_log = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")  # TensorFlow's C++ start-up lines
    lines = [ln for ln in result.output.splitlines() if ln.strip() and not tf_log.match(ln)]
    assert result.exit_code == 2, result.output
    assert lines == ["error: --labels " + str(tmp_path / "map.json") + ": the label for folder 'b' contains a line "
                     "break ('\\n', U+000A); labels must be one line of printable text without leading or trailing "
                     "space"], result.output
    assert not (tmp_path / "run").exists()

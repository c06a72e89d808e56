"""Scanner, image decoding, split and label-map behaviour, against files the tests write."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinscan_edge.data import imageio
from skinscan_edge.data.folder import detect_layout, load_label_map, scan, split_items
from skinscan_edge.core.errors import BadImage, SkinscanError

REPO = Path(__file__).resolve().parents[1]
SKINSCAN_LABELS = ["Dermatitis Atopik", "Eksim", "Infeksi Jamur", "Infeksi Virus", "Karsinoma Sel Basal",
                   "Kutil", "Melanoma", "Psoriasis", "Tahi Lalat", "Tumor Jinak"]


def _jpeg(path: Path, color=(200, 120, 90), size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, "JPEG")
    return path


def _folder(root: Path, classes: dict[str, int]) -> Path:
    for c, n in classes.items():
        for i in range(n):
            _jpeg(root / c / f"{i}.jpg", color=(20 * i % 255, 100, 30 * len(c) % 255))
    return root


# --- bad files ---------------------------------------------------------------------------
def _write_bad(kind: str, d: Path) -> Path:
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, "JPEG")
    data = good.getvalue()
    p = d / f"{kind}.jpg"
    if kind == "empty-file":
        p.write_bytes(b"")
    elif kind == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        p.write_bytes(data[:20] + bytes(range(256)) * 8)
    elif kind == "not-an-image":
        p = d / "notes.txt"
        p.write_text("not an image")
    return p


@pytest.mark.parametrize("kind", ["empty-file", "truncated", "corrupt", "not-an-image"])
def test_bad_file_gets_its_reason(kind, tmp_path):
    p = _write_bad(kind, tmp_path)
    with pytest.raises(BadImage) as e:
        imageio.load_rgb(p)
    assert e.value.reason == kind


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    p = _jpeg(tmp_path / "big.jpg", size=(200, 200))
    monkeypatch.setattr(imageio, "MAX_PIXELS", 10_000)
    with pytest.raises(BadImage) as e:
        imageio.load_rgb(p)
    assert e.value.reason == "too-many-pixels"


def test_scan_lists_every_bad_file_with_reason(tmp_path):
    root = _folder(tmp_path / "data", {"a": 6, "b": 6})
    for kind in ("empty-file", "truncated", "corrupt", "not-an-image"):
        _write_bad(kind, root / "a")
    result = scan(root)
    reasons = {Path(s["path"]).name: s["reason"] for s in result.skipped}
    assert reasons == {"empty-file.jpg": "empty-file", "truncated.jpg": "truncated",
                       "corrupt.jpg": "corrupt", "notes.txt": "not-an-image"}
    assert len(result.items["all"]) == 12


# --- colour modes ------------------------------------------------------------------------
def test_grayscale_rgba_cmyk_16bit_become_rgb(tmp_path):
    Image.new("L", (10, 8), 77).save(tmp_path / "gray.png")
    Image.new("RGBA", (10, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent
    Image.new("CMYK", (10, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red in CMYK
    Image.fromarray(np.full((8, 10), 65535, np.uint16)).save(tmp_path / "white16.png")
    gray = imageio.load_rgb(tmp_path / "gray.png")
    assert gray.shape == (8, 10, 3) and (gray == 77).all()
    assert (imageio.load_rgb(tmp_path / "clear.png") == 255).all()  # composited over white
    cmyk = imageio.load_rgb(tmp_path / "cmyk.jpg").mean(axis=(0, 1))
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60
    white = imageio.load_rgb(tmp_path / "white16.png")
    assert white.dtype == np.uint8 and (white == 255).all()


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    arr = imageio.load_rgb(tmp_path / "rot.jpg")
    assert arr.shape == (40, 20, 3)  # portrait after the EXIF turn
    assert arr[:15].mean() > 200 and arr[25:].mean() < 50  # white half is now on top


# --- layouts and split ---------------------------------------------------------------------
def test_kaggle_layout_is_descended(tmp_path):
    _folder(tmp_path / "IMG_CLASSES", {"1. Eczema 1677": 5, "2. Melanoma 15.75k": 5})
    layout, root = detect_layout(tmp_path)
    assert layout == "kaggle" and root.name == "IMG_CLASSES"


def test_split_is_stratified_seeded_and_reproducible(tmp_path):
    root = _folder(tmp_path / "data", {"a": 20, "b": 12, "c": 8})
    result = scan(root)
    s1 = split_items(result, seed=3, val_fraction=0.15, test_fraction=0.15)
    s2 = split_items(scan(root), seed=3, val_fraction=0.15, test_fraction=0.15)
    s3 = split_items(result, seed=4, val_fraction=0.15, test_fraction=0.15)
    assert s1 == s2 and s1["sha256"] == s2["sha256"]
    assert s1["splits"] != s3["splits"]
    for name in ("train", "val", "test"):
        assert {y for _, y in s1["splits"][name]} == {0, 1, 2}, name
    all_paths = [p for part in s1["splits"].values() for p, _ in part]
    assert len(all_paths) == len(set(all_paths)) == 40
    assert all(not Path(p).is_absolute() for p in all_paths)


def test_presplit_layout_is_kept_and_val_carved_from_train(tmp_path):
    _folder(tmp_path / "train", {"a": 10, "b": 10})
    _folder(tmp_path / "test", {"a": 3, "b": 3})
    result = scan(tmp_path)
    assert result.layout == "presplit"
    s = split_items(result, seed=0, val_fraction=0.2, test_fraction=0.15)
    assert len(s["splits"]["test"]) == 6 and all(p.startswith("test/") for p, _ in s["splits"]["test"])
    assert len(s["splits"]["train"]) + len(s["splits"]["val"]) == 20


@pytest.mark.parametrize("classes, message", [
    ({"only": 10}, "need at least 2 classes"),
    ({"a": 10, "b": 3}, "too few valid images to split"),
])
def test_split_refuses_unusable_data(tmp_path, classes, message):
    result = scan(_folder(tmp_path / "data", classes))
    with pytest.raises(SkinscanError, match=message):
        split_items(result, seed=0, val_fraction=0.15, test_fraction=0.15)


# --- label maps ---------------------------------------------------------------------------
def test_kaggle_label_map_covers_the_ten_skinscan_labels():
    mapping = json.loads((REPO / "convert" / "kaggle_labels.json").read_text())["labels"]
    assert len(mapping) == 10
    assert sorted(mapping.values()) == sorted(SKINSCAN_LABELS)
    names = load_label_map(REPO / "convert" / "kaggle_labels.json", list(mapping))
    assert names == list(mapping.values())


@pytest.mark.parametrize("mapping, message", [
    ({"a": "A"}, "no label for folder"),
    ({"a": "X", "b": "X"}, "same label"),
    (["a", "b"], "must be a JSON object"),
])
def test_bad_label_maps_are_refused(tmp_path, mapping, message):
    p = tmp_path / "labels.json"
    p.write_text(json.dumps(mapping))
    with pytest.raises(SkinscanError, match=message):
        load_label_map(p, ["a", "b"])


def test_folder_names_are_the_default_labels():
    assert load_label_map(None, ["b", "a"]) == ["b", "a"]

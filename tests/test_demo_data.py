"""The synthetic demo dataset and `skinscan-edge demo-data` (fast: small images, few per class)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from skinscan_edge.data import demo as demo_data
from skinscan_edge.data.demo import CLASS_NAMES, IMAGE_NOTE, slugify, write_demo_dataset
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.data.imageio import load_rgb

SKINSCAN_LABELS = [
    "Dermatitis Atopik", "Eksim", "Infeksi Jamur", "Infeksi Virus", "Karsinoma Sel Basal",
    "Kutil", "Melanoma", "Psoriasis", "Tahi Lalat", "Tumor Jinak",
]


def invoke(args):
    from typer.testing import CliRunner

    from skinscan_edge.cli import app

    return CliRunner().invoke(app, ["demo-data", *[str(a) for a in args]])


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("demo") / "data"
    return root, write_demo_dataset(root, per_class=6, size=48, seed=0)


def test_labels_are_the_skinscan_labels_in_imagefolder_order():
    assert list(CLASS_NAMES) == SKINSCAN_LABELS == sorted(SKINSCAN_LABELS)


@pytest.mark.parametrize("name, slug", [("Eksim", "eksim"), ("Karsinoma Sel Basal", "karsinoma-sel-basal"),
                                        ("Tahi Lalat", "tahi-lalat")])
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_layout_counts_and_summary(small):
    root, summary = small
    assert sorted(p.name for p in root.iterdir()) == sorted([*SKINSCAN_LABELS, "README.txt"])
    planted = {"Melanoma": ["melanoma_0000_planted-reencode.jpg"], "Eksim": ["eksim_0001_planted-crop.jpg"],
               "Tahi Lalat": ["melanoma_0002_planted-resize.jpg"]}
    for name in SKINSCAN_LABELS:
        files = sorted(p.name for p in (root / name).iterdir())
        assert files == sorted([f"{slugify(name)}_{i:04d}.jpg" for i in range(6)] + planted.get(name, []))
    assert summary["classes"] == {name: 6 + len(planted.get(name, [])) for name in SKINSCAN_LABELS}
    assert (summary["n_images"], summary["per_class"], summary["size_px"], summary["seed"]) == (63, 6, 48, 0)
    assert [p["file"] for p in summary["planted_duplicates"]] == [f"{c}/{f[0]}" for c, f in planted.items()]
    assert summary["synthetic"] is True and summary["path"] == str(root)


def test_readme_and_every_image_say_synthetic(small):
    from PIL import Image

    root, _ = small
    readme = (root / "README.txt").read_text()
    for phrase in ("SYNTHETIC", "NOT MEDICAL", "procedurally generated", "useless for any clinical"):
        assert phrase in readme
    for path in root.rglob("*.jpg"):
        with Image.open(path) as img:
            assert img.getexif()[0x010E] == IMAGE_NOTE  # EXIF ImageDescription
            assert img.info["comment"] == IMAGE_NOTE.encode()
    assert "synthetic" in IMAGE_NOTE.lower() and "not a medical image" in IMAGE_NOTE


def test_planted_near_duplicates_are_grouped_and_the_cross_class_copy_is_a_conflict(small):
    from skinscan_edge.data.folder import scan
    from skinscan_edge.data.grouping import build_grouping

    root, summary = small
    grouping = build_grouping(scan(root))
    assert grouping.groups == sorted(sorted([p["of"], p["file"]]) for p in summary["planted_duplicates"])
    assert [grouping.groups[g] for g in grouping.conflicts] == [["Melanoma/melanoma_0002.jpg",
                                                                 "Tahi Lalat/melanoma_0002_planted-resize.jpg"]]


def test_images_decode_with_load_rgb(small):
    root, _ = small
    for name in SKINSCAN_LABELS:
        arr = load_rgb(next((root / name).glob("*.jpg")))
        assert arr.shape == (48, 48, 3) and arr.dtype.name == "uint8" and arr.std() > 3
    assert load_rgb(next((root / "Melanoma").glob("*.jpg")), size=75).shape == (75, 75, 3)


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    root, _ = small
    again = tmp_path / "again"
    write_demo_dataset(again, per_class=6, size=48, seed=0)
    assert hashes(again) == hashes(root)
    other = tmp_path / "other"
    write_demo_dataset(other, per_class=6, size=48, seed=1)
    changed = [k for k, v in hashes(other).items() if hashes(root)[k] != v]
    assert len(changed) == 63  # the planted near-duplicates are copies of other images


def test_an_image_depends_only_on_seed_class_and_index():
    assert demo_data.render_jpeg("Kutil", 3, seed=5, size=40) == demo_data.render_jpeg("Kutil", 3, seed=5, size=40)
    assert demo_data.render_jpeg("Kutil", 3, seed=5, size=40) != demo_data.render_jpeg("Kutil", 4, seed=5, size=40)
    with pytest.raises(SkinscanError, match="did you mean 'Kutil'"):
        demo_data.render_jpeg("Kutill", 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"per_class": 4}, "at least 5"),
    ({"size": 16}, "between 32 and 1024"),
    ({"seed": -1}, "non-negative"),
])
def test_bad_arguments_fail_with_the_fix(tmp_path, kwargs, message):
    with pytest.raises(SkinscanError, match=message):
        write_demo_dataset(tmp_path / "x", **{"per_class": 5, "size": 32, **kwargs})
    assert not (tmp_path / "x").exists()


def test_interrupted_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    calls = []

    def flaky(name, index, seed, size):
        calls.append(name)
        if len(calls) > 12:
            raise KeyboardInterrupt
        return b"jpeg"

    monkeypatch.setattr(demo_data, "render_jpeg", flaky)
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(tmp_path / "out", per_class=5, size=32)
    assert list((tmp_path / "out").iterdir()) == []


def test_cli_writes_the_dataset_and_says_it_is_synthetic(tmp_path):
    result = invoke([tmp_path / "d", "--per-class", 5, "--size", 40, "--seed", 3])
    assert result.exit_code == 0, result.output
    assert "wrote 53 SYNTHETIC demo images" in result.stdout and "not medical images" in result.stdout
    assert "3 planted near-duplicates" in result.stdout
    assert len(list((tmp_path / "d").rglob("*.jpg"))) == 53
    assert load_rgb(tmp_path / "d" / "Psoriasis" / "psoriasis_0004.jpg").shape == (40, 40, 3)


def test_cli_refuses_a_non_empty_folder_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke([tmp_path, "--per-class", 5, "--size", 32])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--overwrite" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_cli_overwrite_replaces_only_its_own_folders(tmp_path):
    assert invoke([tmp_path, "--per-class", 6, "--size", 32]).exit_code == 0
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke([tmp_path, "--per-class", 5, "--size", 32, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert len(list((tmp_path / "Eksim").iterdir())) == 5 + 1  # + the planted crop; the old sixth image is gone
    assert not (tmp_path / "Eksim" / "eksim_0005.jpg").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_rejects_too_few_per_class(tmp_path):
    result = invoke([tmp_path / "d", "--per-class", 4])
    assert result.exit_code == 2 and "at least 5" in result.stderr
    assert not (tmp_path / "d").exists()


def test_cli_help_documents_every_option():
    result = invoke(["--help"])
    assert result.exit_code == 0
    for flag in ("--per-class", "--size", "--seed", "--overwrite", "SYNTHETIC"):
        assert flag in result.stdout


def test_cli_defaults_match_the_library():
    import inspect

    from skinscan_edge.commands.demo import command

    params = inspect.signature(command).parameters
    assert params["per_class"].default == demo_data.DEFAULT_PER_CLASS
    assert params["size"].default == demo_data.DEFAULT_SIZE


def test_command_module_does_not_import_tensorflow():
    code = "import sys, skinscan_edge.commands.demo; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

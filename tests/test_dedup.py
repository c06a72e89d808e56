"""Near-duplicates (skinscan_edge.data.dedup) and group-aware splits (skinscan_edge.data.grouping), on
synthetic images and hand-made splits; no training."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinscan_edge.data.folder import ScanResult, scan, split_items
from skinscan_edge.data.dedup import HASH_RADIUS, candidate_pairs, find_near_duplicates, fingerprint, thumbnails
from skinscan_edge.data.demo import CLASS_NAMES
from skinscan_edge.data.lesions import render_image
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.data.grouping import (Grouping, build_grouping, duplicates_report, leak_summary, leaked_images,
                                         read_group_by)

#: The 70 real HAM10000 photos in ../shared/real-photos/ (of the checkout, or of a folder above a worktree).
_SAMPLE = Path("shared") / "real-photos" / "ham10000-sample"
REAL = next((p / _SAMPLE for p in Path(__file__).resolve().parents[1:] if (p / _SAMPLE).is_dir()), ".." / _SAMPLE)


def _synthetic(n: int, size: int = 128, seed: int = 0) -> list[np.ndarray]:
    """n SYNTHETIC demo images, several per class: look-alikes of one another."""
    return [render_image(CLASS_NAMES[i % len(CLASS_NAMES)], np.random.default_rng([seed, i]), size) for i in range(n)]


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _crop(rgb: np.ndarray, share: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    dy, dx = round(h * share), round(w * share)
    return rgb[dy:h - dy, dx:w - dx]


def _resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((round(w * factor), round(h * factor)), Image.Resampling.BILINEAR))


EDITS = {
    "re-encode q40": lambda x: _jpeg(x, 40),
    "crop 4% per side": lambda x: _crop(x, 0.04),
    "crop 8% per side + q70": lambda x: _jpeg(_crop(x, 0.08), 70),
    "resize 60%": lambda x: _resize(x, 0.6),
    "resize 150%": lambda x: _resize(x, 1.5),
    "mirror": lambda x: x[:, ::-1],
}


def test_hash_is_imagehash_phash():
    import imagehash  # the [test] extra

    for rgb in _synthetic(6):
        thumbs = thumbnails(rgb)
        assert int(str(imagehash.phash(Image.fromarray(thumbs[0]))), 16) == int(fingerprint(rgb).hashes[0])
        assert int(str(imagehash.phash(Image.fromarray(thumbs[2][:, ::-1]))), 16) == int(fingerprint(rgb).hashes[9])


def test_planted_duplicates_are_found_and_look_alikes_are_not():
    originals = _synthetic(30)  # 3 of each class: unrelated look-alikes
    copies = [edit(originals[i]) for i, edit in enumerate(EDITS.values())]
    found = find_near_duplicates([fingerprint(x) for x in originals + copies])
    pairs = {(min(p.a, p.b), max(p.a, p.b)) for p in found}
    assert pairs == {(i, len(originals) + i) for i in range(len(EDITS))}, [p for p in found]
    by_pair = {(min(p.a, p.b), max(p.a, p.b)): p for p in found}
    mirror = list(EDITS).index("mirror")
    assert by_pair[(mirror, len(originals) + mirror)].flip == "horizontal"


def _look_alikes(rng) -> list[np.ndarray]:
    """Two unrelated photos with one shared smooth layout (skin tone, blotches, shading) and each
    its own fine texture: their hashes are close, their details unrelated."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(rng.normal(0, 1, (160, 160)), 12)
    layout = 140 + 50 * smooth / smooth.std()
    out = []
    for _ in range(2):
        fine = rng.normal(0, 30, (40, 40))
        texture = np.kron(fine - gaussian_filter(fine, 2.0), np.ones((4, 4)))  # no low frequencies
        out.append((np.clip(layout + texture, 0, 255)[..., None] * np.array([1.0, 0.8, 0.7])).astype(np.uint8))
    return out


def test_hash_neighbours_without_shared_detail_are_rejected_by_the_confirmation():
    a, b = _look_alikes(np.random.default_rng(3))
    fa, fb = fingerprint(a), fingerprint(b)
    assert int(np.bitwise_count(fa.hashes[0] ^ fb.hashes[0])) <= HASH_RADIUS  # the hash alone would pair them
    assert find_near_duplicates([fa, fb], min_correlation=-1.0)  # so would a confirmation that accepts all
    assert find_near_duplicates([fa, fb]) == []


def test_flat_images_are_never_paired():
    flat = [np.full((50, 60, 3), (200, 150, 120), np.uint8), np.full((50, 60, 3), (201, 150, 120), np.uint8)]
    assert find_near_duplicates([fingerprint(x) for x in flat]) == []


def test_multi_index_search_equals_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 400, dtype=np.uint64)
    near = base[:60] ^ np.array([sum(1 << int(b) for b in rng.choice(64, k, replace=False)) for k in
                                 rng.integers(0, 11, 60)], np.uint64)  # 0..10 bits away
    index = np.concatenate([base, near])
    qi, ji, dist = candidate_pairs(index, index)
    brute = np.bitwise_count(index[:, None] ^ index[None, :])
    expected = {(int(i), int(j)) for i, j in zip(*np.nonzero(brute <= HASH_RADIUS))}
    assert {(int(i), int(j)) for i, j in zip(qi, ji)} == expected
    assert (dist == brute[qi, ji]).all() and len(expected) > len(index)  # some real neighbours, not just i == i


# --- groups and the split -------------------------------------------------------------------------
def _scan_result(n_per_class: int = 12, classes: int = 3) -> ScanResult:
    items = [(f"c{c}/{i}.jpg", c) for c in range(classes) for i in range(n_per_class)]
    return ScanResult(root=Path("/data"), layout="imagefolder", classes=[f"c{c}" for c in range(classes)],
                      items={"all": items})


def _grouping(result: ScanResult, groups: list[list[str]], on_conflict: str = "train-only") -> Grouping:
    label_of = {rel: y for items in result.items.values() for rel, y in items}
    conflicts = [g for g, m in enumerate(groups) if len({label_of[r] for r in m}) > 1]
    return Grouping(groups=groups, sources=[["near-duplicate"]] * len(groups), conflicts=conflicts,
                    label_of=label_of, on_conflict=on_conflict)


GROUPS = [["c0/0.jpg", "c0/1.jpg", "c0/2.jpg"], ["c1/0.jpg", "c1/5.jpg"], ["c2/3.jpg", "c2/4.jpg"],
          ["c0/7.jpg", "c0/8.jpg"], ["c1/9.jpg", "c1/10.jpg", "c1/11.jpg"]]


@pytest.mark.parametrize("seed", range(12))
def test_groups_never_straddle_splits_and_the_split_stays_stratified(seed):
    result = _scan_result()
    split = split_items(result, seed, 0.2, 0.2, _grouping(result, GROUPS))
    where = {rel: name for name, part in split["splits"].items() for rel, _ in part}
    assert sorted(where) == sorted(rel for rel, _ in result.items["all"])
    for members in GROUPS:
        assert len({where[r] for r in members}) == 1, members
    for name in ("train", "val", "test"):
        assert {y for _, y in split["splits"][name]} == {0, 1, 2}, name
    assert split["groups"] == GROUPS and leaked_images(split, "test") == []


def test_without_groups_the_split_is_the_ungrouped_one():
    from sklearn.model_selection import train_test_split

    result = _scan_result()
    split = split_items(result, 5, 0.2, 0.2, _grouping(result, []))
    items = result.items["all"]
    rest, test = train_test_split(items, test_size=0.2, random_state=5, stratify=[y for _, y in items])
    assert sorted(map(tuple, split["splits"]["test"])) == sorted(test)


def test_the_split_hash_covers_the_groups():
    import hashlib
    import json

    result = _scan_result()
    a = split_items(result, 1, 0.2, 0.2, _grouping(result, GROUPS))
    b = split_items(result, 1, 0.2, 0.2, _grouping(result, GROUPS, on_conflict="keep"))  # no conflict: same split
    covered = {k: a[k] for k in ("splits", "groups", "grouping")}
    assert a["sha256"] == hashlib.sha256(json.dumps(covered, sort_keys=True).encode()).hexdigest()
    assert a["splits"] == b["splits"] and a["sha256"] != b["sha256"]


CONFLICT = ["c0/3.jpg", "c1/3.jpg"]  # the same photo filed under two classes


@pytest.mark.parametrize("policy", ["train-only", "drop", "keep"])
def test_conflicts_are_listed_and_handled_per_policy(policy):
    result = _scan_result()
    grouping = _grouping(result, GROUPS + [CONFLICT], policy)
    split = split_items(result, 0, 0.2, 0.2, grouping)
    where = {rel: name for name, part in split["splits"].items() for rel, _ in part}
    places = {where.get(r) for r in CONFLICT}
    expected = {"train-only": {"train"}, "drop": {None}}.get(policy)
    assert places == expected if expected else len(places) == 1 and None not in places
    report = duplicates_report(grouping, split, result.classes)
    assert report["num_conflicts"] == 1 and report["on_conflict"] == policy
    assert report["conflicts"][0]["images"] == CONFLICT and report["conflicts"][0]["labels"] == ["c0", "c1"]


def test_group_by_csv_joins_images_by_file_name(tmp_path):
    csv = tmp_path / "meta.csv"
    csv.write_text("lesion_id,image_id,dx\nL1,0,a\nL1,1,a\nL2,4,a\nL2,5,a\nL3,6,a\n")
    result = _scan_result(8, 1)  # images 2, 3 and 7 are not in the CSV
    groups, key = read_group_by(f"{csv}:lesion_id", [r for r, _ in result.items["all"]])
    assert key == "image_id" and groups == {"c0/0.jpg": "L1", "c0/1.jpg": "L1", "c0/4.jpg": "L2",
                                            "c0/5.jpg": "L2", "c0/6.jpg": "L3"}
    grouping = build_grouping(result, f"{csv}:lesion_id")
    assert grouping.groups == [["c0/0.jpg", "c0/1.jpg"], ["c0/4.jpg", "c0/5.jpg"]]
    assert grouping.sources == [["group-by"], ["group-by"]] and grouping.group_by_matched == 5


@pytest.mark.parametrize("spec, message", [
    ("meta.csv", "takes FILE.csv:column"),
    ("missing.csv:lesion_id", "file not found"),
    ("meta.csv:patient", "has no column 'patient'; its columns: lesion_id, image_id"),
])
def test_group_by_errors_carry_the_fix(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "meta.csv").write_text("lesion_id,image_id\nL1,x\n")
    with pytest.raises(SkinscanError, match=message):
        build_grouping(_scan_result(), spec)


def test_group_by_without_a_file_name_column_says_what_it_needs(tmp_path):
    (tmp_path / "meta.csv").write_text("lesion_id,image_id\nL1,nothing-like-a-file\n")
    with pytest.raises(SkinscanError, match="needs a column of file names"):
        build_grouping(_scan_result(), f"{tmp_path / 'meta.csv'}:lesion_id")


def test_cli_refuses_a_bad_group_by_or_policy_before_scanning(tmp_path):
    from conftest import invoke

    (tmp_path / "data" / "a").mkdir(parents=True)
    for args, message in ((["--group-by", "nope.csv:x"], "--group-by file not found"),
                          (["--on-conflict", "trian-only"], "did you mean 'train-only'")):
        result = invoke(["train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--weights", "none", *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "run").exists()


def test_leak_count_on_a_split_made_by_hand_to_leak():
    split = {"root": "/data", "groups": [["a.jpg", "b.jpg"], ["c.jpg", "d.jpg"], ["e.jpg", "f.jpg", "g.jpg"]],
             "splits": {"train": [["a.jpg", 0], ["e.jpg", 1], ["x.jpg", 0]], "val": [["f.jpg", 1]],
                        "test": [["b.jpg", 0], ["c.jpg", 0], ["d.jpg", 0], ["g.jpg", 1], ["x.jpg", 0]]}}
    # b: group with a (train); c, d: their group is all in test; g: group with e, f; x: the same file in train
    assert leaked_images(split, "test") == ["b.jpg", "g.jpg", "x.jpg"]
    assert leaked_images(split, "val") == ["f.jpg"]
    assert leak_summary(split, "test")["num_leaked_images"] == 3
    old = {k: v for k, v in split.items() if k != "groups"}
    summary = leak_summary(old, "test")
    assert summary["num_leaked_images"] is None
    assert "re-split with `skinscan-edge train --data /data --out NEW_RUN`" in summary["leak_warning"]


# --- the real photos ------------------------------------------------------------------------------
@pytest.mark.skipif(not REAL.is_dir(), reason=f"the real HAM10000 sample is not here ({REAL})")
def test_real_photos_have_no_false_pairs_and_their_edits_are_found():
    result = scan(REAL, workers=2)
    rels = sorted(result.fingerprints)[:35]
    fps = [result.fingerprints[r] for r in rels]
    assert find_near_duplicates(fps) == []  # 35 different lesions: no pair
    from skinscan_edge.data.imageio import load_rgb

    copies = [fingerprint(edit(load_rgb(result.root / rels[i]))) for i, edit in enumerate(EDITS.values())]
    found = {(min(p.a, p.b), max(p.a, p.b)) for p in find_near_duplicates(fps + copies)}
    assert found == {(i, len(fps) + i) for i in range(len(EDITS))}


@pytest.mark.skipif(not REAL.is_dir(), reason=f"the real HAM10000 sample is not here ({REAL})")
def test_group_by_reads_the_ham10000_metadata():
    result = scan(REAL, workers=2)
    grouping = build_grouping(result, f"{REAL / 'HAM10000_metadata_sample.csv'}:lesion_id")
    assert (grouping.group_by_key, grouping.group_by_matched) == ("image_id", 70)
    assert grouping.groups == []  # the sample's 70 photos are 70 lesions


def test_a_presplit_folder_keeps_its_split_and_its_leaks_are_counted(tmp_path):
    from skinscan_edge.data.demo import render_jpeg
    from skinscan_edge.data.grouping import summary_line

    for split, n in (("train", 8), ("test", 3)):
        for c in ("Eksim", "Kutil"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                (tmp_path / split / c / f"{i}.jpg").write_bytes(render_jpeg(c, i + 10 * (split == "test"), size=64))
    (tmp_path / "test" / "Eksim" / "copy.jpg").write_bytes((tmp_path / "train" / "Eksim" / "0.jpg").read_bytes())
    result = scan(tmp_path)
    grouping = build_grouping(result)
    split = split_items(result, 0, 0.2, 0.2, grouping)
    assert ["test/Eksim/copy.jpg", 0] in split["splits"]["test"]  # the folders' split is kept
    report = duplicates_report(grouping, split, result.classes)
    assert report["num_test_images_with_duplicate_in_train_val"] == 1
    assert report["leaked_test_images"] == ["test/Eksim/copy.jpg"]
    assert "1 test image(s) have a near-duplicate in train/val" in summary_line(report)

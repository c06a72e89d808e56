"""Groups of images that must stay in one split: near-duplicates, and known groups from a CSV.

A group is a connected set of images joined by confirmed near-duplicate pairs
(:mod:`skinscan_edge.data.dedup`) or by a shared value in ``--group-by FILE.csv:column`` (e.g.
HAM10000's ``lesion_id``). The split keeps every group whole (:func:`split_groups`); a group
whose images carry different labels is a *conflict*, handled by ``--on-conflict``:

* ``train-only`` (default): the whole group goes to train, never to val or test;
* ``drop``: its images are left out of every split;
* ``keep``: it is split like any group, under its most common label.

``split.json`` records the groups, ``RUN/duplicates.json`` the pairs, groups and conflicts,
and :func:`leaked_images` counts the images of one split that share a group with another.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinscan_edge.core.config import ON_CONFLICT
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.data.dedup import find_near_duplicates, HASH_RADIUS, MIN_CORRELATION

_KEY_HINT = "a column of file names (e.g. image_id = ISIC_0025554 for ISIC_0025554.jpg)"


def _read_csv_text(path: Path) -> str:
    """The CSV's text: UTF-8, with or without a byte-order mark (Excel writes one), or one line
    saying which encoding to save it in (no guessing: a wrong guess would mismatch file names)."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SkinscanError(f"--group-by {path} is not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                            f"save it as UTF-8 (Excel: CSV UTF-8) and retry") from None


def parse_group_by(spec: str) -> tuple[Path, str]:
    """'meta.csv:lesion_id' -> (path, column); fails with the fix when either is wrong."""
    path, sep, column = spec.rpartition(":")
    if not sep or not path or not column:
        raise SkinscanError(f"--group-by takes FILE.csv:column (e.g. HAM10000_metadata.csv:lesion_id), got '{spec}'")
    path = Path(path)
    if not path.is_file():
        raise SkinscanError(f"--group-by file not found: {path}")
    header = next(csv.reader(io.StringIO(_read_csv_text(path), newline="")), [])
    if column not in header:
        raise SkinscanError(f"--group-by: {path} has no column '{column}'; its columns: {', '.join(header)}")
    return path, column


def read_group_by(spec: str, rels: list[str]) -> tuple[dict[str, str], str]:
    """{relative path: group value} from the CSV, and the column that named the files.

    Rows are matched to images by whichever other column holds the most of their relative paths,
    file names or file names without extension.
    """
    path, column = parse_group_by(spec)
    rows = list(csv.DictReader(io.StringIO(_read_csv_text(path), newline="")))
    names: dict[str, list[str]] = {}
    for rel in rels:
        p = Path(rel)
        for name in {rel, p.name, p.stem}:
            names.setdefault(name, []).append(rel)
    keys = [k for k in (rows[0] if rows else {}) if k != column]
    hits = {k: sum(r.get(k) in names for r in rows) for k in keys}
    key = max(keys, key=lambda k: hits[k], default=None)
    if key is None or hits[key] == 0:
        raise SkinscanError(f"--group-by {spec}: no column of {path.name} matches the image files; "
                            f"it needs {_KEY_HINT}")
    out = {}
    for r in rows:
        if r.get(column) not in (None, ""):
            for rel in names.get(r.get(key), []):
                out[rel] = r[column]
    return out, key


@dataclass
class Grouping:
    """The groups of one scan.

    Attributes:
      groups: groups of two or more images, each a sorted list of relative paths.
      sources: per group, what joined it ("near-duplicate", "group-by" or both).
      pairs: confirmed near-duplicate pairs, as duplicates.json lists them.
      conflicts: indices into ``groups`` of the groups with more than one label.
      label_of: the label index of every image.
      on_conflict, group_by: the settings; group_by_key: the CSV column that named the files.
      group_by_matched: images found in the CSV.
    """

    groups: list[list[str]] = field(default_factory=list)
    sources: list[list[str]] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    label_of: dict[str, int] = field(default_factory=dict)
    on_conflict: str = "train-only"
    group_by: str | None = None
    group_by_key: str | None = None
    group_by_matched: int = 0

    def group_of(self) -> dict[str, int]:
        return {rel: g for g, members in enumerate(self.groups) for rel in members}

    def set_aside(self) -> set[str]:
        """Images kept out of the split proper: conflicts under train-only (added to train) or drop."""
        if self.on_conflict == "keep":
            return set()
        return {rel for g in self.conflicts for rel in self.groups[g]}

    def settings(self) -> dict:
        return {"near_duplicates": {"hash_radius_bits": HASH_RADIUS, "min_correlation": MIN_CORRELATION},
                "group_by": self.group_by, "on_conflict": self.on_conflict}


def build_grouping(scan_result, group_by: str | None = None, on_conflict: str = "train-only") -> Grouping:
    """Find the groups of a :class:`skinscan_edge.data.folder.ScanResult` (near-duplicates from its
    fingerprints, plus ``group_by``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if on_conflict not in ON_CONFLICT:
        raise SkinscanError("--on-conflict: " + did_you_mean(on_conflict, list(ON_CONFLICT)))
    label_of = {rel: y for items in scan_result.items.values() for rel, y in items}
    rels = sorted(label_of)
    index = {rel: i for i, rel in enumerate(rels)}
    out = Grouping(label_of=label_of, on_conflict=on_conflict, group_by=group_by)
    edges: list[tuple[int, int, str]] = []
    fps = getattr(scan_result, "fingerprints", {}) or {}
    with_fp = [rel for rel in rels if rel in fps]
    for p in find_near_duplicates([fps[rel] for rel in with_fp]):
        a, b = with_fp[p.a], with_fp[p.b]
        edges.append((index[a], index[b], "near-duplicate"))
        out.pairs.append({"a": a, "b": b, "hash_distance_bits": p.hash_distance, "correlation": p.correlation,
                          "match": _describe_match(p.scale, p.flip)})
    if group_by:
        values, out.group_by_key = read_group_by(group_by, rels)
        out.group_by_matched = len(values)
        first: dict[str, int] = {}
        for rel, value in sorted(values.items()):
            edges.append((first.setdefault(value, index[rel]), index[rel], "group-by"))
    if not edges:
        return out
    i, j, _ = zip(*edges)
    graph = coo_matrix((np.ones(len(edges)), (i, j)), shape=(len(rels), len(rels)))
    _, comp = connected_components(graph, directed=False)
    members: dict[int, list[str]] = {}
    for k, rel in enumerate(rels):
        members.setdefault(int(comp[k]), []).append(rel)
    multi = sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])
    source: dict[int, set[str]] = {}
    for a, _, kind in edges:
        source.setdefault(int(comp[a]), set()).add(kind)
    out.groups = multi
    out.sources = [sorted(source[int(comp[index[m[0]]])]) for m in multi]
    out.conflicts = [g for g, m in enumerate(multi) if len({label_of[r] for r in m}) > 1]
    return out


def _describe_match(scale: float, flip: str) -> str:
    parts = ([] if scale == 1.0 else [f"a cropped to {scale:.0%} of each side"]) + \
            ([] if flip == "none" else [f"a mirrored ({flip})"])
    return ", ".join(parts) or "same framing"


def split_groups(items: list, test_size: float, seed: int, group_of: dict[str, int]) -> tuple[list, list]:
    """Stratified, seeded split of ``items`` [(relpath, label)] that keeps each group whole.

    scikit-learn's ``train_test_split`` over groups instead of images, stratified by each
    group's most common label. Chosen over ``StratifiedGroupKFold``, whose test share can only
    be 1/k: this keeps the asked fractions (counted in groups), and when no image has a group it
    is exactly the ungrouped ``train_test_split`` of the images, so earlier splits reproduce.
    """
    from sklearn.model_selection import train_test_split

    units: dict[object, list] = {}
    for item in items:
        units.setdefault(group_of.get(item[0], ("image", item[0])), []).append(item)
    groups = list(units.values())
    strata = [min(Counter(y for _, y in g).most_common(), key=lambda t: (-t[1], t[0]))[0] for g in groups]
    train, test = train_test_split(list(range(len(groups))), test_size=test_size, random_state=seed, stratify=strata)
    return [it for k in train for it in groups[k]], [it for k in test for it in groups[k]]


def leaked_images(split: dict, name: str) -> list[str] | None:
    """Images of split ``name`` that share a group with an image of another split; None when
    ``split`` (a split.json document) predates groups."""
    if "groups" not in split:
        return None
    where: dict[str, set[str]] = {}
    for s, part in split["splits"].items():
        for rel, _ in part:
            where.setdefault(rel, set()).add(s)
    mine = {rel for rel, places in where.items() if name in places}
    out = {rel for rel in mine if len(where[rel]) > 1}  # the same file in two splits
    for members in split["groups"]:
        places = set().union(*(where.get(r, set()) for r in members))
        if name in places and len(places) > 1:
            out.update(r for r in members if r in mine)
    return sorted(out)


def leak_summary(split: dict, name: str) -> dict:
    """evaluate.json's leak fields for split ``name``; a one-line warning when the split predates groups."""
    leaked = leaked_images(split, name)
    if leaked is None:
        return {"num_leaked_images": None, "leaked_images": [], "leak_warning": (
            f"split.json predates near-duplicate detection, so {name} images may have near-duplicates in the "
            f"other splits; re-split with `skinscan-edge train --data {split.get('root', 'DATA')} --out NEW_RUN`")}
    return {"num_leaked_images": len(leaked), "leaked_images": leaked, "leak_warning": None}


def duplicates_report(grouping: Grouping, split: dict, classes: list[str]) -> dict:
    """The content of RUN/duplicates.json."""
    where = {rel: s for s, part in split["splits"].items() for rel, _ in part}  # real splits don't overlap
    action = {"train-only": "kept in train only", "drop": "dropped from every split",
              "keep": "kept whole in one split under its most common label"}[grouping.on_conflict]
    groups = []
    for g, members in enumerate(grouping.groups):
        groups.append({"id": g, "images": members, "labels": [classes[grouping.label_of[r]] for r in members],
                       "source": grouping.sources[g], "conflict": g in grouping.conflicts,
                       "splits": sorted({where[r] for r in members if r in where})})
    leaked = leaked_images(split, "test") or []
    return {
        **grouping.settings(), "group_by_key_column": grouping.group_by_key,
        "group_by_matched_images": grouping.group_by_matched,
        "num_pairs": len(grouping.pairs), "num_groups": len(groups),
        "num_grouped_images": sum(len(m) for m in grouping.groups),
        "num_conflicts": len(grouping.conflicts), "conflict_action": action,
        "num_test_images_with_duplicate_in_train_val": len(leaked), "leaked_test_images": leaked,
        "conflicts": [groups[g] for g in grouping.conflicts], "groups": groups, "pairs": grouping.pairs,
    }


def summary_line(report: dict) -> str:
    """One line for the train log and summary."""
    if not report["num_groups"]:
        return "duplicates: no near-duplicates" + (" or --group-by groups" if report["group_by"] else "") + " found"
    text = (f"duplicates: {report['num_groups']} group(s) of {report['num_grouped_images']} images kept whole "
            f"in one split ({report['num_pairs']} near-duplicate pair(s)")
    text += f", --group-by {report['group_by']})" if report["group_by"] else ")"
    if report["num_conflicts"]:
        text += f"; {report['num_conflicts']} label conflict(s) {report['conflict_action']} (--on-conflict)"
    if report["num_test_images_with_duplicate_in_train_val"]:
        text += (f"; {report['num_test_images_with_duplicate_in_train_val']} test image(s) have a near-duplicate "
                 "in train/val (the folders' own split; merge them into one folder to split by group)")
    return text + "; see duplicates.json"


def short_summary(report: dict | None) -> str | None:
    """The train summary line's part: groups, conflicts and test leaks (None without a report)."""
    if report is None:
        return None
    text = f"{report['num_groups']} duplicate group(s)"
    if report["num_conflicts"]:
        text += f", {report['num_conflicts']} label conflict(s) {report['conflict_action']}"
    n = report["num_test_images_with_duplicate_in_train_val"]
    return text + f", {n} test image(s) with a near-duplicate in train/val (duplicates.json)"

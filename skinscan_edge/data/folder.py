"""Scan, validate and split an image folder, and build the tf.data input pipeline.

Accepted layouts:
  * ImageFolder: ``DATA/<class>/<image>`` (the Kaggle "skin-diseases-image-dataset" as
    extracted, whose single ``IMG_CLASSES/`` folder is descended into automatically);
  * pre-split: ``DATA/train/<class>/...``, ``DATA/test/<class>/...`` and optionally ``DATA/val/``
    (carved from train when absent).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skinscan_edge.core.errors import BadImage, SkinscanError
from skinscan_edge.core.names import check_labels, file_name_problem, printable_path, shown
from skinscan_edge.core.progress import reporter_or_silent
from skinscan_edge.core.tf import keras, tf
from skinscan_edge.data.dedup import fingerprint
from skinscan_edge.data.grouping import build_grouping, split_groups
from skinscan_edge.data.imagecache import decoded_bytes, RAM_BUDGET_BYTES
from skinscan_edge.data.imageio import load_rgb

MIN_IMAGES_PER_CLASS = 5
SPLITS = ("train", "val", "test")
KAGGLE_SUBFOLDER = "IMG_CLASSES"


def natural_key(name: str):
    """'2. Melanoma' before '10. Warts'."""
    return [int(t) if t.isdecimal() else t.lower() for t in re.split(r"(\d+)", name)]  # not isdigit: "²"


@dataclass
class ScanResult:
    """Valid images per class folder, and every refused file with its reason."""

    root: Path
    layout: str
    classes: list[str]
    items: dict[str, list[tuple[str, int]]]  # split name (or "all") -> [(relpath, class index)]
    skipped: list[dict] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # display names in class order (checked)
    fingerprints: dict = field(default_factory=dict)  # relpath -> dedup.Fingerprint

    def counts(self) -> dict[str, dict[str, int]]:
        out = {}
        for split, items in self.items.items():
            c = np.bincount([y for _, y in items], minlength=len(self.classes))
            out[split] = {self.classes[i]: int(n) for i, n in enumerate(c)}
        return out


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: natural_key(d.name))


def detect_layout(data: Path) -> tuple[str, Path]:
    """Return (layout, class root) for a data folder; see the module docstring."""
    data = Path(data)
    subdirs = {d.name.lower(): d for d in _class_dirs(data)}
    if "train" in subdirs and "test" in subdirs:
        return "presplit", data
    if set(subdirs) == {KAGGLE_SUBFOLDER.lower()}:
        return "kaggle", subdirs[KAGGLE_SUBFOLDER.lower()]
    return "imagefolder", data


def _check(root: Path, rel: str, hashing: bool = True):
    """(None, near-duplicate fingerprint from the same decode) or (reason, None)."""
    name_reason = file_name_problem(rel)
    if name_reason:
        return name_reason, None
    try:
        rgb = load_rgb(root / rel)
        return None, fingerprint(rgb) if hashing else None
    except BadImage as e:
        return e.reason, None


def _files_under(root: Path, folder: str) -> list[str]:
    """Every non-hidden file under ``root/folder``, at any depth, as a path relative to ``root``;
    symlinked folders are not followed. The same files, in the same order, as
    ``sorted(path.rglob("*"))`` filtered by ``is_file()``, written with os.scandir and plain
    strings because pathlib's objects made that 4x slower at 27,000 files."""
    out: list[str] = []
    stack = [folder]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel)))
        except OSError:  # an unreadable subfolder, as rglob skips it
            continue
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                stack.append(f"{rel}/{e.name}")
            elif not e.name.startswith(".") and e.is_file():
                out.append(f"{rel}/{e.name}")
    return sorted(out, key=lambda r: r.split("/"))  # pathlib's order: part by part


@dataclass
class FileListing:
    """What a scan reads, found without decoding anything: the layout, the class root, the class
    folder names in order, and every candidate file as (split name or "all", path relative to
    ``root`` with "/" separators, class index)."""

    layout: str
    root: Path
    groups: list[str]
    classes: list[str]
    files: list[tuple[str, str, int]]


def list_files(data: Path) -> FileListing:
    """Every non-hidden file under the class folders (what ``scan`` decodes and what the data
    fingerprint, ``skinscan_edge.data.fingerprint``, hashes)."""
    layout, root = detect_layout(Path(data))
    groups: dict[str, Path] = (
        {s: d for s in SPLITS for d in _class_dirs(root) if d.name.lower() == s}
        if layout == "presplit" else {"all": root}
    )
    class_names = sorted({d.name for g in groups.values() for d in _class_dirs(g)}, key=natural_key)
    if not class_names:
        raise SkinscanError(f"no class folders in {data}: expected one subfolder per class")
    index = {c: i for i, c in enumerate(class_names)}
    files: list[tuple[str, str, int]] = []
    for split, gdir in groups.items():
        for cdir in _class_dirs(gdir):
            files += [(split, rel, index[cdir.name]) for rel in _files_under(root, cdir.relative_to(root).as_posix())]
    return FileListing(layout=layout, root=root, groups=list(groups), classes=class_names, files=files)


def scan(data: Path, reporter=None, workers: int = 4, labels: str | Path | None = None,
         hashing: bool = True) -> ScanResult:
    """Decode every file once, keeping the valid images and recording the rest with reasons;
    ``hashing`` fingerprints each decoded image for near-duplicate detection (skinscan_edge.data.dedup).

    The display names (``labels``: a ``--labels`` map, or the folder names) are resolved and
    checked before anything is decoded, so a bad name fails in the first second. A file whose
    name the pipeline cannot carry is skipped unread (``skinscan_edge.core.names``). ``reporter``
    (a ``progress.Reporter``) sees one ``advance`` per file."""
    say = reporter_or_silent(reporter)
    listing = list_files(data)
    root, class_names, files = listing.root, listing.classes, listing.files
    for name in class_names:  # every path of the class carries it: refuse it rather than skip them all
        if file_name_problem(name):
            raise SkinscanError(f"class folder {shown(name)} in {root}: {file_name_problem(name)}; rename the folder")
    display = load_label_map(labels, class_names)
    items: dict[str, list[tuple[str, int]]] = {s: [] for s in listing.groups}
    skipped, fingerprints = [], {}
    with say.bars(), ThreadPoolExecutor(workers) as pool:
        for done, ((split, rel, y), (reason, fp)) in enumerate(
                zip(files, pool.map(lambda t: _check(root, t[1], hashing), files)), 1):
            if reason is None:
                items[split].append((rel, y))
                fingerprints[rel] = fp
            else:
                skipped.append({"path": printable_path(rel), "reason": reason})
            say.advance("scanning", done, len(files))
    return ScanResult(root=root.resolve(), layout=listing.layout, classes=class_names, items=items,
                      skipped=skipped, labels=display, fingerprints=fingerprints if hashing else {})


def read_label_map(path: str | Path) -> dict[str, str]:
    """A ``--labels`` JSON map {folder: display name}, every value checked (skinscan_edge.core.names)."""
    try:
        mapping = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: JSON syntax, and bytes that are not UTF-8
        raise SkinscanError(f"--labels {path} is not a JSON object of folder -> label ({e})") from None
    if isinstance(mapping, dict) and "labels" in mapping and isinstance(mapping["labels"], dict):
        mapping = mapping["labels"]
    if not isinstance(mapping, dict):
        raise SkinscanError(f"--labels {path} must be a JSON object mapping folder names to labels")
    check_labels(list(mapping.values()), [f"folder {shown(k)}" for k in mapping], f"--labels {path}")
    return mapping


def load_label_map(path: str | Path | None, classes: list[str]) -> list[str]:
    """Display names in class order: the folder names, or a JSON {folder: display name} map."""
    if path is None:
        return check_labels(list(classes), [f"folder {shown(c)}" for c in classes],
                            "class folder names used as labels (no --labels)")
    mapping = read_label_map(path)
    missing = [c for c in classes if c not in mapping]
    if missing:
        raise SkinscanError(f"--labels {path} has no label for folder(s): {', '.join(map(shown, missing))}")
    return [mapping[c] for c in classes]


def split_items(scan_result: ScanResult, seed: int, val_fraction: float, test_fraction: float,
                grouping=None) -> dict:
    """Stratified, seeded train/val/test split (scikit-learn), persisted as relative paths, that
    keeps each group of ``grouping`` (default: the scan's near-duplicates) whole; see
    skinscan_edge.data.grouping for groups and label conflicts."""
    grouping = grouping or build_grouping(scan_result)
    group_of, aside = grouping.group_of(), grouping.set_aside()
    classes = scan_result.classes
    pools = {name: [it for it in items if it[0] not in aside] for name, items in scan_result.items.items()}
    present = {y for items in pools.values() for _, y in items}
    if len(present) < 2:
        raise SkinscanError(
            f"need at least 2 classes with valid images, found {len(present)} in {scan_result.root}"
        )

    def _split(items, size, what):
        counts = np.bincount([y for _, y in items], minlength=len(classes))
        small = [f"{classes[i]} ({n})" for i, n in enumerate(counts) if 0 < n < MIN_IMAGES_PER_CLASS]
        empty = [classes[i] for i, n in enumerate(counts) if n == 0]
        if small or empty:
            bad = ", ".join(small + [f"{c} (0)" for c in empty])
            raise SkinscanError(
                f"too few valid images to split {what}: {bad}; each class needs at least "
                f"{MIN_IMAGES_PER_CLASS} (add images or remove the folder)"
            )
        try:
            return split_groups(items, size, seed, group_of)
        except ValueError as e:
            raise SkinscanError(
                f"too few images for a stratified split of {what} ({e}); add images to the small classes"
            ) from None

    if scan_result.layout == "presplit":
        train, test = pools.get("train", []), pools.get("test", [])
        val = pools.get("val", [])
        if not val:
            train, val = _split(train, val_fraction, "train into train/val")
    else:
        rest, test = _split(pools["all"], test_fraction, "the data")
        train, val = _split(rest, val_fraction / (1 - test_fraction), "train into train/val")
    if grouping.on_conflict == "train-only":
        train = list(train) + [it for items in scan_result.items.values() for it in items if it[0] in aside]
    splits = {name: sorted([list(t) for t in part]) for name, part in
              (("train", train), ("val", val), ("test", test))}
    body = {"root": str(scan_result.root), "layout": scan_result.layout, "seed": seed,
            "classes": classes, "splits": splits, "groups": grouping.groups, "grouping": grouping.settings()}
    hashed = {k: body[k] for k in ("splits", "groups", "grouping")}
    body["sha256"] = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
    return body


def augmentation(seed: int):
    """The random flip / rotation / zoom / contrast layers (active only when called with
    ``training=True``; RandomContrast clips to 0..255). Never part of the saved model."""
    k = keras()
    return k.Sequential([
        k.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        k.layers.RandomRotation(0.08, fill_mode="reflect", seed=seed + 1),
        k.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 2),
        k.layers.RandomContrast(0.15, seed=seed + 3),
    ], name="augment")


def training_model(model, seed: int, augment: bool):
    """What ``train`` fits: uint8 batches in, the cast to float and the augmentation (training
    only) inside the step, so they run on the accelerator when there is one rather than in the
    CPU input pipeline; then ``model`` itself, whose weights it shares. Never saved."""
    k = keras()
    x = inputs = k.Input(model.input_shape[1:], dtype="uint8", name="pixels")
    x = k.layers.Rescaling(1.0, name="to_float")(x)  # Rescaling casts to float32
    if augment:
        x = augmentation(seed)(x)
    return k.Model(inputs, model(x), name="trainer")


def image_batches(paths: list[str], labels: list[int], img_size: int, batch_size: int, *,
                  training: bool, seed: int, cache=None):
    """Batches of uint8 images and int32 labels, shuffled when training.

    From ``cache`` (an :class:`skinscan_edge.data.imagecache.ImageCache` of exactly these paths) when
    given: each batch is one read of its rows. Otherwise each image is decoded in parallel
    (Pillow via numpy_function) and the decoded set is kept in memory when it fits the budget.
    """
    tf_ = tf()
    autotune = tf_.data.AUTOTUNE
    y_all = np.asarray(labels, np.int32)
    shape = (img_size, img_size, 3)
    if cache is not None:
        def _read(ix):
            return cache.read(ix), y_all[ix]

        def _rows(ix):
            x, y = tf_.numpy_function(_read, [ix], (tf_.uint8, tf_.int32))
            x.set_shape((None, *shape))
            y.set_shape((None,))
            return x, y

        ds = tf_.data.Dataset.range(len(paths))
        if training:
            ds = ds.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).map(_rows, num_parallel_calls=autotune, deterministic=True)

    def _decode(path):
        return load_rgb(path.decode("utf-8"), img_size)

    def _load(path, y):
        img = tf_.numpy_function(_decode, [path], tf_.uint8)
        img.set_shape(shape)
        return img, y

    ds = tf_.data.Dataset.from_tensor_slices((list(map(str, paths)), y_all))
    ds = ds.map(_load, num_parallel_calls=autotune, deterministic=True)
    if decoded_bytes(len(paths), img_size) < RAM_BUDGET_BYTES:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size)


def make_dataset(paths: list[str], labels: list[int], img_size: int, batch_size: int, *,
                 training: bool, seed: int, augment: bool = True, cache=None):
    """tf.data pipeline of float32 0..255 images and labels (:func:`image_batches`, then
    augmentation on the CPU for training only). Normalization is inside the model, and
    augmentation never enters the exported graph. ``train`` augments inside the training step
    instead (on the accelerator when there is one); the QAT export uses this."""
    tf_ = tf()
    autotune = tf_.data.AUTOTUNE
    ds = image_batches(paths, labels, img_size, batch_size, training=training, seed=seed, cache=cache)
    ds = ds.map(lambda x, y: (tf_.cast(x, tf_.float32), y))
    if training and augment:
        aug = augmentation(seed)
        ds = ds.map(lambda x, y: (tf_.clip_by_value(aug(x, training=True), 0.0, 255.0), y),
                    num_parallel_calls=autotune)
    return ds.prefetch(autotune)

"""The Android bundle: TFLite Model Metadata written here, read back by MediaPipe itself; the whole
bundle (guide, Kotlin, golden PNG, zip) in any folder, and git-ignored at the default one.

A tiny real int8 .tflite (32x32, uint8 in/out) stands in for InceptionV3. The real-reader test
runs MediaPipe's ImageClassifier in a separate venv (``.venv-reader``, built once with pip) because
mediapipe's absl-py pin cannot live beside tfmot's.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import scaled_timeout

import skinscan_edge  # sets TF_USE_LEGACY_KERAS before TensorFlow is imported
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.exporters import metadata as android
from skinscan_edge.core.config_stages import BundleConfig
from skinscan_edge.release import golden
from skinscan_edge.release import guide as android_guide
from skinscan_edge.release.bundle import write_bundle
from skinscan_edge.release.choose import Choice, Verdict, choose
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.files import sha256_file, write_json
from skinscan_edge.exporters.metadata import read_metadata, write_metadata

REPO = Path(__file__).resolve().parents[1]
READER_DIR = Path(__file__).with_name("android_reader")
READER_VENV = REPO / ".venv-reader"
SIZE = 32
LABELS = ["Dermatitis Atopik", "Eksim", "Infeksi Jamur", "Infeksi Virus", "Karsinoma Sel Basal", "Kutil",
          "Melanoma", "Psoriasis", "Tahi Lalat", "Tumor Jinak"]  # the demo run's order (alphabetical)
#: Every file a bundle always has, besides the model.
BUNDLE_FILES = {"README.md", "ImageClassifierExample.kt", "metadata.json", "labels.txt", "golden_image.png",
                "skinscan_android_bundle.zip"}
MD_ARGS = dict(name="tiny", description="a test model", version="9.9.9", author="tests", license="MIT")


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_saved(tmp_path_factory) -> Path:
    """Input 32x32x3 float 0..255 -> Rescaling -> Conv -> GAP -> Dense(10, softmax), saved as a
    light SavedModel (a tf.Module with one serving signature: "image" in, "probs" out)."""
    from skinscan_edge.core.tf import keras, tf

    tf, k = tf(), keras()
    k.utils.set_random_seed(0)
    inp = k.Input((SIZE, SIZE, 3), name="image")
    x = k.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    x = k.layers.Conv2D(8, 3, activation="relu")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    model = k.Model(inp, k.layers.Dense(10, activation="softmax", name="probs")(x))
    dense = model.get_layer("probs")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 12, bias])  # peaky scores, so a wrong label order would show

    class Serving(tf.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="image")])
        def serve(self, image):
            return {"probs": self.m(image, training=False)}

    saved = tmp_path_factory.mktemp("tiny_saved")
    module = Serving(model)
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    return saved


def _convert(saved: Path, int8: bool) -> bytes:
    from skinscan_edge.core.tf import tf

    tf = tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if int8:  # full-integer, uint8 in/out, as the project's tflite-int8 export
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.uint8
        rng = np.random.default_rng(0)
        conv.representative_dataset = lambda: ({"image": _image(rng, c)[None].astype(np.float32)} for c in range(16))
    return conv.convert()


@pytest.fixture(scope="session")
def tiny_int8(tiny_saved) -> bytes:
    return _convert(tiny_saved, int8=True)


@pytest.fixture(scope="session")
def tiny_fp32(tiny_saved) -> bytes:
    return _convert(tiny_saved, int8=False)


def _image(rng, seed: int, shape=(SIZE, SIZE)) -> np.ndarray:
    """A colour-dominated synthetic photo: one strong base colour plus noise."""
    base = np.random.default_rng(seed).integers(0, 256, 3)
    noise = rng.integers(-40, 41, (*shape, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _litert(path: Path, pixels: np.ndarray) -> np.ndarray:
    from skinscan_edge.runtimes.interface import TFLiteRuntime

    return TFLiteRuntime(path).predict(pixels)


def _save(tmp_path: Path, data: bytes, name: str = "m.tflite") -> Path:
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


def build_android_bundle(run: RunDir, out: Path, name: str = "tflite-int8") -> dict:
    """The bundle writer on its own, for a file the test declares passed (choose() is tested below)."""
    return write_bundle(run, out, Choice(name, "named in the test", Verdict("passed")))


def _make_run(root: Path, model: bytes, labels=LABELS, fmt="tflite") -> RunDir:
    """A minimal run directory by hand: config, labels, status, split with PNGs, one export."""
    from PIL import Image

    data = root / "data"
    items = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(1)
    for i, split in enumerate(["train", "val", "test", "test", "test"]):
        rel = f"cls{i % 3}/img{i}.png"
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(rng, 100 + i, shape=(40, 48))).save(data / rel)
        items[split].append([rel, i % 3])
    run = RunDir(root / "run")
    run.root.mkdir()
    write_json(run.config_path, {"train": {"img_size": SIZE}, "labels": labels})
    run.labels_path.write_text("\n".join(labels) + "\n", encoding="utf-8")
    run.set_status("complete")
    write_json(run.split_path, {"root": str(data), "seed": 0, "splits": items})
    run.exports.mkdir()
    (run.exports / "model_int8.tflite").write_bytes(model)
    entry = {"name": "tflite-int8", "file": "model_int8.tflite", "format": fmt, "precision": "int8",
             "size_bytes": len(model), "sha256": hashlib.sha256(model).hexdigest()}
    write_json(run.manifest_path, {"run": str(run.root), "created": "now", "exports": [entry], "failures": []})
    return run


@pytest.fixture(scope="session")
def bundle(tiny_int8, tmp_path_factory) -> tuple[RunDir, Path, dict]:
    root = tmp_path_factory.mktemp("bundle")
    run = _make_run(root, tiny_int8)
    out = root / "fresh" / "android"  # does not exist yet: nothing comes from the repository
    return run, out, build_android_bundle(run, out)


@pytest.fixture(scope="session")
def reader_python() -> Path:
    """The reader venv's python, with mediapipe installed (once; cached in <repo>/.venv-reader) by the
    library's own builder, skinscan_edge.evaluation.client.reader_python."""
    from skinscan_edge.evaluation.client import reader_python as build

    try:
        return build(READER_VENV)
    except SkinscanError as e:
        if "cannot reach the package registry" in str(e):
            pytest.skip(f"{e}; the MediaPipe real-reader check did not run")
        raise


# --- write_metadata / read_metadata -----------------------------------------------------------
def test_metadata_reads_back(tiny_int8):
    md = read_metadata(write_metadata(tiny_int8, labels=LABELS, img_size=SIZE, **MD_ARGS))
    assert {k: md[k] for k in MD_ARGS} == MD_ARGS
    assert md["labels"] == LABELS and md["labels_file"] == "labels.txt" and md["packed_files"] == ["labels.txt"]
    assert (md["input_name"], md["output_name"]) == ("image", "probs")
    assert (md["input_content"], md["color_space"]) == ("ImageProperties", "RGB")
    assert (md["normalization_mean"], md["normalization_std"]) == ([0.0], [1.0])
    assert (md["input_min"], md["input_max"]) == ([0.0], [255.0])
    assert md["output_process_units"] == []  # no score calibration
    assert md["min_parser_version"] == "1.0.0"


def test_metadata_leaves_inference_unchanged_and_rewrites_idempotently(tiny_int8, tmp_path):
    once = write_metadata(tiny_int8, labels=LABELS, img_size=SIZE, **MD_ARGS)
    assert write_metadata(once, labels=LABELS, img_size=SIZE, **MD_ARGS) == once
    renamed = read_metadata(write_metadata(once, labels=LABELS, img_size=SIZE, **{**MD_ARGS, "name": "new"}))
    assert renamed["name"] == "new" and renamed["packed_files"] == ["labels.txt"]
    pixels = np.stack([_image(np.random.default_rng(s), s) for s in range(4)])
    np.testing.assert_array_equal(_litert(_save(tmp_path, tiny_int8, "a.tflite"), pixels),
                                  _litert(_save(tmp_path, once, "b.tflite"), pixels))


def _int8_input(model: bytes) -> bytes:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]].type = schema.TensorType.INT8
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


@pytest.mark.parametrize("change, message", [
    (dict(labels=LABELS[:9]), "9 labels but the model outputs 10 scores"),
    (dict(labels=LABELS[:9] + LABELS[:1]), "labels must be unique"),
    (dict(labels=LABELS[:9] + ["two\nlines"]), "labels must be unique, non-empty single lines"),
    (dict(img_size=64), "is not [1, 64, 64, 3]"),
    (dict(model=_int8_input), "model input is INT8"),
])
def test_write_metadata_refuses(tiny_int8, change, message):
    kw = dict(labels=LABELS, img_size=SIZE, **MD_ARGS) | change
    model = kw.pop("model", lambda m: m)(tiny_int8)
    with pytest.raises(SkinscanError) as err:
        write_metadata(model, **kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def _strip_packed_files(model: bytes) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    repacked = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(repacked))  # the zip is not carried over


@pytest.mark.parametrize("with_metadata, message", [
    (False, "no TFLITE_METADATA entry in the model's metadata"),
    (True, "the model's metadata names ['labels.txt'] but the packed files are missing"),
])
def test_read_metadata_refuses(tiny_int8, with_metadata, message):
    model = tiny_int8
    if with_metadata:
        model = _strip_packed_files(write_metadata(tiny_int8, labels=LABELS, img_size=SIZE, **MD_ARGS))
    with pytest.raises(SkinscanError) as err:
        read_metadata(model)
    assert message in str(err.value)


# --- build_android_bundle ---------------------------------------------------------------------
def _shape(obj):
    """Keys and value types, recursively: what the golden file pins."""
    if isinstance(obj, dict):
        return {k: _shape(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_shape(obj[0])] if obj else []
    return type(obj).__name__


def test_bundle_files_and_sidecar(bundle, tiny_int8):
    run, out, summary = bundle
    model = out / "skinscan_int8.tflite"
    sidecar = json.loads((out / "metadata.json").read_text())
    shape = json.loads((READER_DIR / "metadata.golden.json").read_text())
    assert _shape(sidecar) == shape, "metadata.json changed shape; update tests/android_reader/metadata.golden.json"
    assert sidecar["model_sha256"] == sha256_file(model) == summary["model_sha256"]
    assert sidecar["model_size_bytes"] == model.stat().st_size
    assert sidecar["source_export"] == "tflite-int8"
    assert sidecar["source_sha256"] == hashlib.sha256(tiny_int8).hexdigest()
    assert sidecar["labels"] == LABELS == (out / "labels.txt").read_text().splitlines()
    assert (sidecar["input_size"], sidecar["input"]["dtype"]) == (SIZE, "uint8")
    assert sidecar["normalization"]["mean"] == [0.0] and sidecar["normalization"]["std"] == [1.0]
    assert read_metadata(model)["labels"] == LABELS
    assert sidecar["golden"]["source"] == "cls2/img2.png"  # the first test-split image
    # uint8 output: the tolerance is a whole number of output steps (at least one: the spread of the
    # kernel families measured, release/golden.py), read from the model's own quantization
    assert (sidecar["output"]["dtype"], sidecar["output"]["zero_point"]) == ("uint8", 0)
    assert sidecar["golden"]["tolerance"] == sidecar["golden"]["tolerance_steps"] * sidecar["output"]["scale"]
    assert sidecar["output"]["scale"] == 1 / 256 and sidecar["golden"]["tolerance_steps"] >= 1
    assert "1/256" in sidecar["golden"]["tolerance_basis"]


def test_bundle_is_whole_in_a_fresh_folder(bundle):
    """Guide, Kotlin, metadata, labels, golden PNG, model and zip, rendered from package data alone."""
    _, out, summary = bundle
    sidecar = json.loads((out / "metadata.json").read_text())
    assert {p.name for p in out.iterdir()} == BUNDLE_FILES | {"skinscan_int8.tflite", ".skinscan-edge-bundle"}
    assert summary["files"] == sorted(BUNDLE_FILES - {"skinscan_android_bundle.zip"} | {"skinscan_int8.tflite"})
    for key in ("model_path", "labels_path", "metadata_path", "golden_image", "readme", "kotlin", "zip_path"):
        assert Path(summary[key]).parent == out and Path(summary[key]).is_file(), key  # not the staging folder

    readme = (out / "README.md").read_text()
    for heading in ("# Skinscan on Android", "## Input contract", "## Output", "## Labels",
                    "## Kotlin (MediaPipe Tasks)", "## Golden vector for an instrumentation test"):
        assert f"\n{heading}\n" in readme, heading
    for i, label in enumerate(LABELS):  # the label table, from this run
        assert f"\n| {i} | {label} |\n" in readme
    assert f"[1, {SIZE}, {SIZE}, 3]" in readme and "Tolerance: ±0.00390625." in readme
    assert readme.count(android_guide.GOLDEN_START) == readme.count(android_guide.GOLDEN_END) == 1
    assert "SYNTHETIC" not in readme  # this run's data has no demo-data README
    assert "{{" not in readme and "{%" not in readme

    kotlin = (out / "ImageClassifierExample.kt").read_text()
    tasks = android_guide.MEDIAPIPE_TASKS_VISION
    assert f'implementation("com.google.mediapipe:tasks-vision:{tasks}")' in kotlin
    assert f'implementation("com.google.mediapipe:tasks-vision:{tasks}")' in readme
    assert 'const val MODEL_FILE = "skinscan_int8.tflite"' in kotlin
    assert f"const val INPUT_SIZE = {SIZE}\n" in kotlin and 'const val GOLDEN_IMAGE = "golden_image.png"' in kotlin
    listed = re.search(r"val LABELS = listOf\(\n(.*?)\n    \)", kotlin, re.S).group(1)
    assert [json.loads(line.strip().rstrip(",")) for line in listed.splitlines()] == LABELS
    for t in sidecar["golden"]["top3"]:
        assert f'"{t["label"]}" to {t["score"]:.6f}f,' in kotlin
    assert "const val GOLDEN_TOLERANCE = 0.00390625f" in kotlin

    with zipfile.ZipFile(out / "skinscan_android_bundle.zip") as zf:
        assert zf.namelist() == summary["files"]  # sorted, everything but the zip itself
        for info in zf.infolist():
            assert zf.read(info) == (out / info.filename).read_bytes()
            assert info.date_time == (1980, 1, 1, 0, 0, 0)


def test_the_same_run_gives_a_byte_identical_zip(bundle, tmp_path):
    run, out, _ = bundle
    again = build_android_bundle(run, tmp_path / "again")
    assert Path(again["zip_path"]).read_bytes() == (out / "skinscan_android_bundle.zip").read_bytes()


@pytest.mark.parametrize("output, tolerance, basis", [
    (dict(dtype="uint8", scale=1 / 256, zero_point=0), 1 / 256, "one step of the uint8 output, scale 1/256"),
    (dict(dtype="int8", scale=0.0123, zero_point=-128), 0.0123, "one step of the int8 output, scale 0.0123"),
    (dict(dtype="float32", scale=None, zero_point=None), golden.FLOAT_TOLERANCE, "float output; MediaPipe and LiteRT"),
])
def test_golden_tolerance_is_one_output_step(output, tolerance, basis):
    got = golden.golden_tolerance(output)
    assert got["tolerance"] == tolerance and got["tolerance_basis"].startswith(basis)


def test_the_templates_ship_in_the_package():
    """An installed package renders the same bundle: pyproject's package-data covers every template."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for pkg, globs in data.items() for g in globs for p in (REPO / pkg.replace(".", "/")).glob(g)}
    templates = {p for p in (REPO / "skinscan_edge").rglob("*") if p.is_file() and "templates" in p.parts
                 and "__pycache__" not in p.parts}
    assert templates and templates <= shipped, f"not in package-data: {sorted(map(str, templates - shipped))}"
    assert {"README.md.j2", "ImageClassifierExample.kt.j2"} <= {p.name for p in templates}


def test_kotlin_strings_are_escaped():
    assert android_guide._kotlin_string('a"b\\c$d\ne') == '"a\\"b\\\\c\\$d\\u000ae"'
    assert android_guide._md_cell("a|b") == "a\\|b"


def test_golden_vector_is_litert_on_the_exact_pixels(bundle):
    from PIL import Image

    from skinscan_edge.data.imageio import load_rgb

    run, out, summary = bundle
    with Image.open(out / "golden_image.png") as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (SIZE, SIZE))
        assert not {"icc_profile", "gamma", "srgb"} & set(im.info)  # nothing for a decoder to colour-convert
    sidecar = json.loads((out / "metadata.json").read_text())
    pixels = load_rgb(out / "golden_image.png")
    source = run.split_items("test")[0][0]
    np.testing.assert_array_equal(pixels, load_rgb(source, SIZE))  # lossless: the resized source itself
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == sidecar["golden"]["pixels_sha256"]
    probs = _litert(out / "skinscan_int8.tflite", pixels[None])[0]
    top3 = sidecar["golden"]["top3"]
    assert top3 == summary["golden_top3"]
    assert [t["index"] for t in top3] == list(np.argsort(-probs, kind="stable")[:3])
    assert [t["label"] for t in top3] == [LABELS[t["index"]] for t in top3]
    np.testing.assert_allclose([t["score"] for t in top3], np.sort(probs)[::-1][:3], atol=1e-6)
    assert top3[0]["score"] > top3[2]["score"]  # the tiny model is not flat


def test_bundle_replaces_its_own_folder_whole_and_carries_the_model_card(tiny_int8, tmp_path):
    run = _make_run(tmp_path, tiny_int8)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("a user's notes")  # a folder skinscan-edge did not write: refused, kept
    with pytest.raises(SkinscanError, match="holds files skinscan-edge did not write"):
        build_android_bundle(run, out)
    assert (out / "notes.txt").read_text() == "a user's notes"
    (out / "notes.txt").unlink()
    summary = build_android_bundle(run, out)
    assert {p.name for p in out.iterdir()} == BUNDLE_FILES | {"skinscan_int8.tflite", ".skinscan-edge-bundle"}
    assert "MODEL_CARD" not in (out / "README.md").read_text()
    (out / "skinscan_fp32.tflite").write_bytes(b"old")  # a stale file inside our own bundle goes with it

    (run.root / "MODEL_CARD.md").write_text("# Model card\n")  # the hook: a run that has one
    summary = build_android_bundle(run, out)
    assert not (out / "skinscan_fp32.tflite").exists()
    assert not list(tmp_path.glob(".out.*"))  # no temporary folder left beside it
    assert (out / "MODEL_CARD.md").read_text() == "# Model card\n" and "MODEL_CARD.md" in summary["files"]
    assert "`MODEL_CARD.md`" in (out / "README.md").read_text()
    with zipfile.ZipFile(out / "skinscan_android_bundle.zip") as zf:
        assert "MODEL_CARD.md" in zf.namelist() and ".skinscan-edge-bundle" not in zf.namelist()
    assert android_guide.bundle_is_whole(out)
    (out / "skinscan_android_bundle.zip").unlink()
    assert not android_guide.bundle_is_whole(out)  # the pipeline then rebuilds it


def test_a_synthetic_run_says_so_in_the_guide_and_the_kotlin(tiny_int8, tmp_path):
    run = _make_run(tmp_path, tiny_int8)
    (tmp_path / "data" / "README.txt").write_text("SYNTHETIC demo data\n")
    write_json(run.config_path, {"train": {"img_size": SIZE}, "labels": LABELS, "data_root": str(tmp_path / "data")})
    out = tmp_path / "out"
    build_android_bundle(run, out)
    assert "trained on SYNTHETIC demo data" in (out / "README.md").read_text()
    assert "trained on SYNTHETIC demo data" in (out / "ImageClassifierExample.kt").read_text()


def _git(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], input=stdin, capture_output=True, text=True)


def test_what_the_demo_writes_is_ignored_by_git(bundle):
    """`make demo` writes its data, its run and the Android bundle at the default --android-dir; on a
    fresh clone `git status --porcelain` must stay empty, so git must ignore every one of those paths
    (a tracked file is never reported by check-ignore, so a generated name that is tracked fails too)."""
    if shutil.which("git") is None or _git("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        pytest.skip("not a git checkout (an installed package): nothing for git status to report")
    _, out, _ = bundle
    make = (REPO / "Makefile").read_text()
    demo = [re.search(rf"^{var}\s*:=\s*(\S+)", make, re.M).group(1) for var in ("DEMO_DATA", "DEMO_RUN")]
    default = Path(BundleConfig().out)
    paths = [(default / p.name).as_posix() for p in out.iterdir()]
    paths += [(default / name).as_posix() for name in ("MODEL_CARD.md", "skinscan_fp32.tflite")]
    paths += [f"{d}/anything" for d in demo] + [".venv-reader/bin/python"]
    paths += [(default.parent / f".{default.name}.{kind}-123/metadata.json").as_posix() for kind in ("tmp", "old")]
    ignored = _git("check-ignore", "--stdin", stdin="\n".join(paths))
    assert sorted(ignored.stdout.split()) == sorted(paths), f"not ignored: {set(paths) - set(ignored.stdout.split())}"
    tracked = _git("ls-files", "--", default.as_posix()).stdout.split()
    assert tracked == [], f"tracked files inside the generated bundle folder: {tracked}"


@pytest.mark.parametrize("setup, message", [
    ("unknown", "--model: unknown export 'tflite-int9'; valid TFLite exports of this run: tflite-int8 (did you mean 'tflite-int8'?)"),
    ("onnx", "has no TFLite export"),
    ("labels", "9 labels but the model outputs 10 scores"),
    ("tampered", "does not match its manifest SHA-256"),
    ("no-test-images", "no usable image in the test split"),
])
def test_bundle_errors_are_one_line(tiny_int8, tmp_path, setup, message):
    run = _make_run(tmp_path, tiny_int8, labels=LABELS[:9] if setup == "labels" else LABELS,
                    fmt="onnx" if setup == "onnx" else "tflite")
    if setup == "tampered":
        (run.exports / "model_int8.tflite").write_bytes(tiny_int8 + b"x")
    if setup == "no-test-images":
        split = json.loads(run.split_path.read_text())
        split["splits"]["test"] = [["cls0/missing.png", 0]]
        write_json(run.split_path, split)
    with pytest.raises(SkinscanError) as err:
        choice = choose(run, model="tflite-int9" if setup == "unknown" else "tflite-int8", allow_failed=True)
        write_bundle(run, tmp_path / "out", choice)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))  # nothing half-written


# --- the real reader: MediaPipe Tasks ---------------------------------------------------------
def test_schema_excerpt_matches_the_published_schema(reader_python):
    """Every table, enum and union in android._SCHEMA must match metadata_schema.fbs field for field
    (the slot numbers follow from the order)."""
    (fbs,) = READER_VENV.glob("lib/python*/site-packages/mediapipe/tasks/metadata/metadata_schema.fbs")
    real_tables, real_enums, real_unions = android._parse_fbs(fbs.read_text())
    tables, enums, unions = android._schema()
    for name, fields in tables.items():
        assert fields == real_tables[name], name
    for name, (base, values) in enums.items():
        assert (base, values) == real_enums[name], name
    for name, members in unions.items():
        assert members == real_unions[name], name


def _classify(reader_python: Path, model: Path, tmp_path: Path, pixels: np.ndarray, image: Path | None = None) -> dict:
    """Run tests/android_reader/classify.py in the reader venv; its JSON output."""
    np.save(tmp_path / "pixels.npy", pixels)
    cmd = [str(reader_python), str(READER_DIR / "classify.py"), str(model), "--array", str(tmp_path / "pixels.npy")]
    cmd += ["--image", str(image)] if image else []
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=scaled_timeout(300))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _readme_golden(readme: Path) -> tuple[list[tuple[int, str, float]], float]:
    """The golden rows (index, label, score) and the tolerance, as the bundle's README prints them."""
    section = android_guide.golden_section(readme.read_text(encoding="utf-8"))
    rows = re.findall(r"^\| \d+ \| (\d+) \| (.+?) \| ([0-9.]+) \|$", section, re.M)
    tolerance = re.search(r"Tolerance: ±([0-9.e-]+)\.", section)
    assert rows and tolerance, f"no golden table or tolerance in {readme}"
    return [(int(i), label, float(score)) for i, label, score in rows], float(tolerance.group(1))


def test_mediapipe_image_classifier_reads_the_bundle(bundle, reader_python, tmp_path):
    from skinscan_edge.data.imageio import load_rgb

    run, out, _ = bundle
    model = out / "skinscan_int8.tflite"
    pixels = load_rgb(run.split_items("test")[1][0], SIZE)  # a second image, straight from pixels
    got = _classify(reader_python, model, tmp_path, pixels, image=out / "golden_image.png")
    assert got["mediapipe_version"] == "1.2.3"

    # Labels come from the metadata alone, and the scores are LiteRT's (same uint8 output, dequantised).
    litert = _litert(model, pixels[None])[0]
    assert sorted(c["name"] for c in got["array"]) == sorted(LABELS)
    for c in got["array"]:
        assert c["name"] == LABELS[c["index"]]
        assert c["score"] == pytest.approx(float(litert[c["index"]]), abs=1 / 256 + 1e-6)
    # The golden vector from the bundle alone: MediaPipe decodes the PNG itself (its own decoder, not
    # Pillow), gets the exact pixels, and scores the README's figures within the README's tolerance.
    sidecar = json.loads((out / "metadata.json").read_text())
    assert got["image_shape"] == [SIZE, SIZE, 3] and got["image_sha256"] == sidecar["golden"]["pixels_sha256"]
    rows, tolerance = _readme_golden(out / "README.md")
    assert [(label, score) for _, label, score in rows] == [(t["label"], round(t["score"], 6)) for t in sidecar["golden"]["top3"]]
    mp_scores = {c["name"]: c["score"] for c in got["image"]}
    for _, label, score in rows:
        assert abs(mp_scores[label] - score) <= tolerance + 1e-6, (label, mp_scores[label], score, tolerance)
    assert [label for _, label, _ in rows][0] == max(mp_scores, key=mp_scores.get)

    md = got["metadata"]
    assert md["identifier_ok"] and md["min_parser_version"] == "1.0.0"
    assert {k: md[k] for k in MD_ARGS if k != "description"} == {
        "name": "Skinscan InceptionV3 (int8)", "version": f"{skinscan_edge.__version__}+"
        f"{json.loads((out / 'metadata.json').read_text())['source_sha256'][:12]}",
        "author": android.MODEL_AUTHOR, "license": android.MODEL_LICENSE}
    assert (md["input_name"], md["output_name"]) == ("image", "probs")
    assert md["content_type"] == md["content_type_image"] and md["color_space"] == md["rgb"]
    assert md["default_size"] == [SIZE, SIZE]
    assert md["unit_type"] == md["unit_type_norm"] and (md["mean"], md["std"]) == ([0.0], [1.0])
    assert (md["stats_min"], md["stats_max"]) == ([0.0], [255.0])
    assert md["output_files"] == [["labels.txt", md["axis_labels"]]] and md["output_process_units"] == 0


def test_mediapipe_reads_a_float_model(tiny_fp32, reader_python, tmp_path):
    """A float32-input export: MediaPipe must apply the identity normalisation (mean 0, std 1) and
    feed 0..255, which the model normalises itself; any other normalisation changes the scores."""
    model = _save(tmp_path, write_metadata(tiny_fp32, labels=LABELS, img_size=SIZE, **MD_ARGS))
    pixels = _image(np.random.default_rng(7), 7)
    got = _classify(reader_python, model, tmp_path, pixels)
    litert = _litert(model, pixels[None])[0]
    assert litert.max() > 0.3  # not flat, so a wrong normalisation would show
    assert {c["name"]: c["score"] for c in got["array"]} == pytest.approx(
        {LABELS[i]: float(p) for i, p in enumerate(litert)}, abs=golden.FLOAT_TOLERANCE)


# --- a real bundle: the session's InceptionV3 int8 export (75 px, synthetic data) ---------------
#: Every kind of file a bundle can hold: float I/O (fp32, fp16 weights, dynamic range) and uint8 I/O.
BUNDLE_KINDS = [("tflite-fp32", "float32"), ("tflite-fp16", "float32"), ("tflite-dynamic", "float32"),
                ("tflite-int8", "uint8"), ("tflite-qat-int8", "uint8")]


@pytest.mark.parametrize("export, io_dtype", BUNDLE_KINDS)
def test_every_kind_of_bundle_scores_in_mediapipe_as_its_guide_says(exported_run, reader_python, tmp_path,
                                                                     monkeypatch, export, io_dtype):
    """The session's InceptionV3 export bundled (evaluated or not: --allow-failed), then MediaPipe's
    ImageClassifier on the golden PNG must give the guide's scores within the guide's tolerance,
    which follows the file's output type. A user who ran `evaluate --client mediapipe` has the reader
    venv: the bundle then measures MediaPipe's kernels among the families its tolerance covers."""
    from skinscan_edge.evaluation import client
    from skinscan_edge.core.config import TrainConfig
    from skinscan_edge.data.imageio import load_rgb
    from skinscan_edge.stages import PipelineConfig, stage_is_current

    monkeypatch.setenv(client.READER_VENV_ENV, str(READER_VENV))
    run, out = exported_run, tmp_path / "bundle"
    write_bundle(run, out, choose(run, model=export, allow_failed=True))
    sidecar = json.loads((out / "metadata.json").read_text())
    assert sidecar["input"]["dtype"] == sidecar["output"]["dtype"] == io_dtype
    if io_dtype == "uint8":
        assert "MediaPipe 1.2.3 (x86)" in [k["family"] for k in sidecar["golden"]["kernel_scores"]]
    got = _classify(reader_python, out / sidecar["model_file"], tmp_path, load_rgb(out / "golden_image.png"),
                    image=out / "golden_image.png")
    assert got["image_sha256"] == sidecar["golden"]["pixels_sha256"]  # MediaPipe decodes the same pixels
    rows, tolerance = _readme_golden(out / "README.md")
    assert tolerance == sidecar["golden"]["tolerance"] == (sidecar["golden"]["tolerance_steps"] / 256 if io_dtype == "uint8"
                                                           else golden.FLOAT_TOLERANCE)
    scores = {c["name"]: c["score"] for c in got["image"]}
    for _, label, score in rows:
        assert abs(scores[label] - score) <= tolerance + 1e-6, (label, scores[label], score)
    assert "trained on SYNTHETIC demo data" in (out / "README.md").read_text()
    if export != "tflite-int8":
        return
    # The pipeline finds the bundle stage finished only while the bundle is whole.
    cfg = PipelineConfig(train=TrainConfig.from_dict(run.config()["train"]),
                         bundle=BundleConfig(out=str(out), model="tflite-int8", allow_failed=True))
    assert stage_is_current("bundle", cfg, run)
    (out / "skinscan_android_bundle.zip").unlink()
    assert stage_is_current("bundle", cfg, run) is None


# --- the client path: evaluate --client mediapipe (skinscan_edge.evaluation.client) -----------------------
def test_client_scores_each_export_guided_and_naive_and_measures_the_gap(bundle, reader_python, tmp_path):
    """Guided: the photos scaled as the guide says (imageio.to_input_size), then MediaPipe at the
    input size; naive: MediaPipe gets the original 48x40 PNGs and resizes them itself. The gap
    against LiteRT on the project's pixels is measured, and the probe names MediaPipe's resize."""
    from PIL import Image

    from skinscan_edge.evaluation.client import client_row_name, score_client
    from skinscan_edge.data.imageio import load_rgb, to_input_size

    run, out, _ = bundle
    items = run.split_items("test")
    entry = json.loads(run.manifest_path.read_text())["exports"][0]
    scored, tensor = score_client(run, [entry], items, LABELS)
    s = scored["tflite-int8"]
    assert s["guided"].shape == s["naive"].shape == (len(items), len(LABELS))
    assert s["info"]["name"] == client_row_name("tflite-int8") and s["info"]["precision"] == "int8"
    # The same file through MediaPipe by hand (tests/android_reader/classify.py) gives the naive scores ...
    got = _classify(reader_python, out / "skinscan_int8.tflite", tmp_path, load_rgb(items[0][0]), image=items[0][0])
    assert [c["score"] for c in sorted(got["image"], key=lambda c: c["index"])] == pytest.approx(s["naive"][0].tolist(), abs=1e-6)
    # ... and, on the image scaled with the guide's arithmetic, the guided ones.
    guided = tmp_path / "guided.png"
    Image.fromarray(to_input_size(load_rgb(items[0][0]), SIZE)).save(guided)
    got = _classify(reader_python, out / "skinscan_int8.tflite", tmp_path, load_rgb(guided), image=guided)
    assert [c["score"] for c in sorted(got["image"], key=lambda c: c["index"])] == pytest.approx(s["guided"][0].tolist(), abs=1e-6)
    litert = _litert(out / "skinscan_int8.tflite", np.stack([load_rgb(p, SIZE) for p, _ in items]))
    gap = s["gap"]
    assert gap["prob_max_abs_diff"] == pytest.approx(float(np.abs(litert - s["naive"]).max()), abs=1e-6)
    assert gap["num_top1_differ"] == int((litert.argmax(1) != s["naive"].argmax(1)).sum())
    assert tensor["files"] == len(items) and tensor["source_shapes"] == [[40, 48, 3]]
    assert tensor["best_match"].startswith("stretch, corner-aligned bilinear warp")
    assert tensor["candidates_mean_abs"][tensor["best_match"]] < 0.5 < tensor["project_mean_abs"]
    assert tensor["decoder_mean_abs"] == 0.0  # PNG: both decoders give the same pixels


def test_to_input_size_halves_then_steps_as_the_kotlin_example():
    """The guide's arithmetic: a 2x2 mean while both sides are at least twice the size, then one
    bilinear step without antialiasing (checked against TensorFlow's half-pixel bilinear resize)."""
    from skinscan_edge.core.tf import tf
    from skinscan_edge.data.imageio import to_input_size

    img = np.random.default_rng(0).integers(0, 256, (90, 100, 3)).astype(np.uint8)
    # 100x90 to 40: halved once (both sides >= 80), to 50x45, then one bilinear step to 40x40.
    half = np.rint(img.reshape(45, 2, 50, 2, 3).mean(axis=(1, 3)))
    reference = tf().image.resize(half[None].astype(np.float32), (40, 40), method="bilinear", antialias=False)
    got = to_input_size(img, 40)
    assert got.shape == (40, 40, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - np.rint(reference.numpy()[0]).astype(int)).max() <= 1  # rounding only
    square = img[:80, :80]
    np.testing.assert_array_equal(to_input_size(square, 40), np.rint(square.reshape(40, 2, 40, 2, 3).mean(axis=(1, 3))))
    np.testing.assert_array_equal(to_input_size(square, 80), square)  # already the input size: untouched

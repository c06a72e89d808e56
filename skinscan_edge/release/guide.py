"""The Android bundle's written parts and its hand-over zip.

The guide (``README.md``) and ``ImageClassifierExample.kt`` are jinja2 templates shipped as package
data (``skinscan_edge/release/templates/android/``), rendered for each bundle from its ``metadata.json``, so
an installed package writes the same whole bundle as a clone of the repository, into any folder.
:func:`write_bundle_zip` packs the bundle deterministically: the same files give the same bytes.

>>> # text = render_guide(json.loads(Path("android_assets/bundle/metadata.json").read_text()))
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from skinscan_edge.core.contract import __version__
from skinscan_edge.core.files import atomic_write_bytes
from skinscan_edge.core.metrics import failure_text
from skinscan_edge.exporters.metadata import LABELS_FILE, MEDIAPIPE_PYTHON
from skinscan_edge.release.golden import GOLDEN_IMAGE
from skinscan_edge.release.model_card import CARD_NAME

README = "README.md"
KOTLIN = "ImageClassifierExample.kt"
#: Copied from the run (RUN/MODEL_CARD.md) into the bundle when the run has one.
MODEL_CARD = CARD_NAME
BUNDLE_ZIP = "skinscan_android_bundle.zip"
GOLDEN_START, GOLDEN_END = "<!-- golden:start -->", "<!-- golden:end -->"
#: The MediaPipe Tasks for Android release the Kotlin example is written against (its Gradle line).
#: ImageClassifier, BaseOptions and BitmapImageBuilder have kept these signatures since 0.10.0.
MEDIAPIPE_TASKS_VISION = "0.10.29"
#: Zip entries carry this date (the zip format's earliest), not the clock, so the zip is reproducible.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _kotlin_string(value: str) -> str:
    """A Kotlin string literal. Not json.dumps: Kotlin has no \\f or \\/ escapes and reads "$" as a
    template, so only \\, " and $ are escaped, and control characters become \\uXXXX."""
    out = []
    for ch in str(value):
        if ch in '\\"$':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _md_cell(value: str) -> str:
    """Text for a Markdown table cell: a "|" would end the cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|")


def _env():
    import jinja2

    # Markdown and Kotlin, not HTML: no autoescape; every variable must exist (StrictUndefined).
    env = jinja2.Environment(loader=jinja2.PackageLoader("skinscan_edge.release", "templates/android"),
                             autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["kt"] = _kotlin_string
    env.filters["cell"] = _md_cell
    return env


def _context(sidecar: dict, *, synthetic: bool, model_card: bool) -> dict:
    gate = sidecar.get("gate") or {"verdict": "not evaluated"}
    return {"md": sidecar, "golden": sidecar["golden"], "labels": sidecar["labels"], "gate": gate,
            "failure_texts": [failure_text(f) for f in gate.get("failures", [])],
            "size": sidecar["input_size"], "version": __version__, "synthetic": synthetic,
            "model_card": MODEL_CARD if model_card else None, "zip_name": BUNDLE_ZIP, "readme": README,
            "kotlin": KOTLIN, "golden_start": GOLDEN_START, "golden_end": GOLDEN_END,
            "tasks_version": MEDIAPIPE_TASKS_VISION, "mediapipe_python": MEDIAPIPE_PYTHON}


def render_guide(sidecar: dict, *, synthetic: bool = False, model_card: bool = False) -> str:
    """The bundle's README.md for Android developers, from its metadata.json content."""
    return _env().get_template("README.md.j2").render(**_context(sidecar, synthetic=synthetic,
                                                                   model_card=model_card))


def render_kotlin(sidecar: dict, *, synthetic: bool = False) -> str:
    """ImageClassifierExample.kt naming this bundle's model file, input size, labels and golden vector."""
    return _env().get_template("ImageClassifierExample.kt.j2").render(**_context(sidecar, synthetic=synthetic,
                                                                                  model_card=False))


def golden_section(readme_text: str) -> str:
    """The text between the golden markers of a rendered README ('' when there are none)."""
    start, end = readme_text.find(GOLDEN_START), readme_text.find(GOLDEN_END)
    return readme_text[start + len(GOLDEN_START):end] if 0 <= start < end else ""


def bundle_is_whole(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds every file a bundle always has (the model is named in metadata.json;
    the pipeline checks it by SHA-256). A bundle from an older skinscan-edge lacks some."""
    names = (README, KOTLIN, BUNDLE_ZIP, "metadata.json", LABELS_FILE, GOLDEN_IMAGE)
    return all((Path(out_dir) / name).is_file() for name in names)


def write_bundle_zip(out_dir: Path, names: list[str]) -> Path:
    """Zip ``names`` (files of ``out_dir``) into ``out_dir/BUNDLE_ZIP``: sorted entries, fixed dates,
    modes and creator system, deflate at a fixed level, so the same files give byte-identical zips.
    (``shutil.make_archive`` stamps each file's mtime and walks in directory order.)"""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(names):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.create_system = 3  # Unix, wherever it runs
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, (Path(out_dir) / name).read_bytes(), compresslevel=9)
    path = Path(out_dir) / BUNDLE_ZIP
    atomic_write_bytes(path, buf.getvalue())
    return path

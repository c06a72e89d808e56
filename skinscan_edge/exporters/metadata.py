"""Standard TFLite Model Metadata in a ``.tflite``, so MediaPipe's ``ImageClassifier`` and the
TFLite Task Library load it with no extra code: written and read here, below both the Android
bundle (``release``) and evaluate's MediaPipe-client row, which both need it.

How the metadata is written, and why by hand. The standard writer (tflite-support's
``MetadataPopulator``) cannot be installed here: tflite-support pins protobuf<4 and TensorFlow 2.21
needs protobuf 7; mediapipe's copy of the writer fails to import and mediapipe's absl-py pin clashes
with tfmot's. What remains is the public schema, ``metadata_schema.fbs``. ``_SCHEMA`` below is an
excerpt of it (v1.5.0; the tables we touch, every field in its declared order, comments dropped).
A tiny generic packer reads that text and gives each field the vtable slot flatc would give it
(declaration order; a union takes two slots, type tag then value), so no slot number is typed by
hand and the excerpt can be checked against the real .fbs (tests/test_android.py does that with
the copy mediapipe ships). The model flatbuffer is edited only through LiteRT's own object API
(``ai_edge_litert.tools.flatbuffer_utils`` over ``schema_py_generated.ModelT``): the metadata
flatbuffer goes in as a buffer named ``TFLITE_METADATA`` and ``labels.txt`` is appended to the model
as an uncompressed zip, the layout MetadataPopulator produces and MediaPipe's extractor reads.

>>> # data = write_metadata(Path("model_int8.tflite").read_bytes(), labels=labels, ...)
>>> # read_metadata(data)["labels"] == labels

Over 300 lines on purpose: most of it is the metadata schema excerpt and its packer, which
belong together.
"""

from __future__ import annotations

import io
import re
import zipfile
from functools import cache
from pathlib import Path

from skinscan_edge.core.contract import INPUT_NAME, OUTPUT_NAME
from skinscan_edge.core.errors import SkinscanError

METADATA_NAME = "TFLITE_METADATA"
METADATA_FILE_ID = b"M001"
#: Every field we write predates schema 1.0.1 (see the History in metadata_schema.fbs).
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
#: The MediaPipe Python release whose ImageClassifier reads our metadata in the tests and in
#: evaluate's client row (the same C++ task as MediaPipe Tasks for Android).
MEDIAPIPE_PYTHON = "1.2.3"
MODEL_AUTHOR = "skinscan-edge"
MODEL_LICENSE = "Apache-2.0"
#: The model divides by 127.5 and subtracts 1 itself, so readers must pass raw 0..255 pixels.
NORM_MEAN, NORM_STD = [0.0], [1.0]
#: Image input types MediaPipe's and the Task Library's image preprocessors accept.
_IMAGE_DTYPES = {"UINT8": "uint8", "FLOAT32": "float32"}

_SCHEMA = """
enum AssociatedFileType : byte { UNKNOWN = 0, DESCRIPTIONS = 1, TENSOR_AXIS_LABELS = 2,
  TENSOR_VALUE_LABELS = 3, TENSOR_AXIS_SCORE_CALIBRATION = 4, VOCABULARY = 5, SCANN_INDEX_FILE = 6, }
table AssociatedFile { name:string; description:string; type:AssociatedFileType; locale:string;
  version:string; }
table FeatureProperties { }
enum ColorSpaceType : byte { UNKNOWN = 0, RGB = 1, GRAYSCALE = 2, }
table ImageSize { width:uint; height:uint; }
table ImageProperties { color_space:ColorSpaceType; default_size:ImageSize; }
union ContentProperties { FeatureProperties, ImageProperties, BoundingBoxProperties, AudioProperties, }
table ValueRange { min:int; max:int; }
table Content { content_properties:ContentProperties; range:ValueRange; }
table NormalizationOptions { mean:[float]; std:[float]; }
union ProcessUnitOptions { NormalizationOptions, ScoreCalibrationOptions, ScoreThresholdingOptions,
  BertTokenizerOptions, SentencePieceTokenizerOptions, RegexTokenizerOptions }
table ProcessUnit { options:ProcessUnitOptions; }
table Stats { max:[float]; min:[float]; }
table TensorMetadata { name:string; description:string; dimension_names:[string]; content:Content;
  process_units:[ProcessUnit]; stats:Stats; associated_files:[AssociatedFile]; }
table SubGraphMetadata { name:string; description:string; input_tensor_metadata:[TensorMetadata];
  output_tensor_metadata:[TensorMetadata]; associated_files:[AssociatedFile];
  input_process_units:[ProcessUnit]; output_process_units:[ProcessUnit];
  input_tensor_groups:[TensorGroup]; output_tensor_groups:[TensorGroup];
  custom_metadata:[CustomMetadata]; }
table ModelMetadata { name:string; description:string; version:string;
  subgraph_metadata:[SubGraphMetadata]; author:string; license:string;
  associated_files:[AssociatedFile]; min_parser_version:string; }
"""
_SCALARS = {"byte": "Int8", "ubyte": "Uint8", "int": "Int32", "uint": "Uint32", "float": "Float32"}


# --- the schema-driven flatbuffer packer and reader ------------------------------------------
def _parse_fbs(text: str) -> tuple[dict, dict, dict]:
    """Parse the table / enum / union declarations of a flatbuffers schema (comments allowed):
    tables -> {field: (slot, type)}, enums -> (base, {name: value}), unions -> {member: tag}.
    A union field's value sits at ``slot`` and its type tag at ``slot - 1``, as flatc lays it out."""
    text = re.sub(r"//[^\n]*", "", text)
    decls = re.findall(r"\b(table|enum|union)\s+(\w+)\s*(?::\s*(\w+))?\s*\{([^}]*)\}", text)
    tables, enums, unions = {}, {}, {}
    for kind, name, base, body in decls:
        if kind == "enum":
            enums[name] = (base, {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(-?\d+)", body)})
        elif kind == "union":
            unions[name] = {m: tag for tag, m in enumerate(re.findall(r"\w+", body), start=1)}
    for kind, name, _, body in decls:
        if kind == "table":
            fields, slot = {}, 0
            for field, ftype in re.findall(r"(\w+)\s*:\s*(\[?\w+\]?)[^;]*;", body):
                slot += 1 if ftype in unions else 0
                fields[field] = (slot, ftype)
                slot += 1
            tables[name] = fields
    return tables, enums, unions


@cache
def _schema() -> tuple[dict, dict, dict]:
    return _parse_fbs(_SCHEMA)


def _pack(builder, table: str, obj: dict) -> int:
    """Write ``obj`` (field -> value; a union value is ``(member, dict)``, an enum value its name)."""
    tables, enums, unions = _schema()
    fields = tables[table]
    unknown = set(obj) - set(fields)
    if unknown:
        raise ValueError(f"{table} has no field(s) {sorted(unknown)}")
    refs = {}  # children must be finished before their parent table starts
    for key, value in obj.items():
        ftype = fields[key][1]
        if ftype == "string":
            refs[key] = builder.CreateString(value)
        elif ftype.startswith("["):
            refs[key] = _pack_vector(builder, ftype[1:-1], value)
        elif ftype in tables:
            refs[key] = _pack(builder, ftype, value)
        elif ftype in unions:
            refs[key] = _pack(builder, value[0], value[1])
    builder.StartObject(max(slot for slot, _ in fields.values()) + 1 if fields else 0)
    for key, value in obj.items():
        slot, ftype = fields[key]
        if key in refs:
            if ftype in unions:
                builder.PrependUint8Slot(slot - 1, unions[ftype][value[0]], 0)
            builder.PrependUOffsetTRelativeSlot(slot, refs[key], 0)
        elif ftype in enums:
            base, values = enums[ftype]
            getattr(builder, f"Prepend{_SCALARS[base]}Slot")(slot, values[value], 0)
        else:
            getattr(builder, f"Prepend{_SCALARS[ftype]}Slot")(slot, value, 0)
    return builder.EndObject()


def _pack_vector(builder, elem: str, values: list) -> int:
    if elem in _SCALARS:
        builder.StartVector(4 if elem not in ("byte", "ubyte") else 1, len(values), 4)
        for v in reversed(values):
            getattr(builder, f"Prepend{_SCALARS[elem]}")(v)
        return builder.EndVector()
    refs = [builder.CreateString(v) if elem == "string" else _pack(builder, elem, v) for v in values]
    builder.StartVector(4, len(refs), 4)
    for ref in reversed(refs):
        builder.PrependUOffsetTRelative(ref)
    return builder.EndVector()


def _read(buf, pos: int, table: str) -> dict:
    """The inverse of ``_pack``: every field present in the table at ``pos``."""
    from flatbuffers import number_types as N
    from flatbuffers.table import Table

    tables, enums, unions = _schema()
    tab, out = Table(buf, pos), {}
    for key, (slot, ftype) in tables[table].items():
        o = tab.Offset(4 + 2 * slot)
        if not o:
            continue
        if ftype == "string":
            out[key] = tab.String(o + tab.Pos).decode("utf-8")
        elif ftype.startswith("["):
            elem, start, n = ftype[1:-1], tab.Vector(o), tab.VectorLen(o)
            if elem in _SCALARS:
                flags = getattr(N, f"{_SCALARS[elem]}Flags")
                out[key] = [tab.Get(flags, start + i * flags.bytewidth) for i in range(n)]
            elif elem == "string":
                out[key] = [tab.String(start + 4 * i).decode("utf-8") for i in range(n)]
            elif elem in tables:
                out[key] = [_read(buf, tab.Indirect(start + 4 * i), elem) for i in range(n)]
        elif ftype in tables:
            out[key] = _read(buf, tab.Indirect(o + tab.Pos), ftype)
        elif ftype in unions:
            tag_at = tab.Offset(4 + 2 * (slot - 1))
            tag = tab.Get(N.Uint8Flags, tag_at + tab.Pos) if tag_at else 0
            member = {t: m for m, t in unions[ftype].items()}.get(tag, f"tag {tag}")
            inner = _read(buf, tab.Indirect(o + tab.Pos), member) if member in tables else {}
            out[key] = (member, inner)
        elif ftype in enums:
            base, values = enums[ftype]
            value = tab.Get(getattr(N, f"{_SCALARS[base]}Flags"), o + tab.Pos)
            out[key] = {v: k for k, v in values.items()}.get(value, value)
        else:
            out[key] = tab.Get(getattr(N, f"{_SCALARS[ftype]}Flags"), o + tab.Pos)
    return out


# --- the model ---------------------------------------------------------------------------
def _io_tensors(model) -> tuple:
    sub = model.subgraphs[0]
    if len(model.subgraphs) != 1 or len(sub.inputs) != 1 or len(sub.outputs) != 1:
        raise SkinscanError("the Android bundle needs a single-subgraph model with one input and one output")
    return sub.tensors[sub.inputs[0]], sub.tensors[sub.outputs[0]]


def _metadata_tree(*, labels, name, description, version, author, license, img_size) -> dict:
    image = {
        "name": INPUT_NAME,
        "description": f"RGB photo, NHWC {img_size}x{img_size}, pixel values 0..255. Normalisation to "
        "[-1, 1] is inside the model, so the NormalizationOptions are mean 0, std 1 (identity).",
        "content": {"content_properties": ("ImageProperties", {
            "color_space": "RGB", "default_size": {"width": img_size, "height": img_size}})},
        "process_units": [{"options": ("NormalizationOptions", {"mean": NORM_MEAN, "std": NORM_STD})}],
        "stats": {"max": [255.0], "min": [0.0]},
    }
    probs = {
        "name": OUTPUT_NAME,
        "description": f"Probabilities of the {len(labels)} classes (softmax), in {LABELS_FILE} order. "
        "No score calibration.",
        "content": {"content_properties": ("FeatureProperties", {})},
        "stats": {"max": [1.0], "min": [0.0]},
        "associated_files": [{"name": LABELS_FILE, "type": "TENSOR_AXIS_LABELS",
                              "description": "Class names, one per line, in output order."}],
    }
    return {"name": name, "description": description, "version": version, "author": author,
            "license": license, "min_parser_version": MIN_PARSER_VERSION,
            "subgraph_metadata": [{"input_tensor_metadata": [image], "output_tensor_metadata": [probs]}]}


def write_metadata(model_bytes: bytes, *, labels: list[str], name: str, description: str, version: str,
                   author: str, license: str, img_size: int) -> bytes:
    """Return ``model_bytes`` with TFLite Model Metadata and ``labels.txt`` packed in.

    Any metadata already there is replaced, so the call is idempotent. The input type (uint8 or
    float32) is read from the model; the shapes must match ``img_size`` and ``labels``.

    >>> # data = write_metadata(Path("model_int8.tflite").read_bytes(), labels=["a", "b"],
    >>> #     name="m", description="d", version="1", author="me", license="MIT", img_size=299)
    >>> # read_metadata(data)["labels"] == ["a", "b"]
    """
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    bad = [lb for lb in labels if not lb.strip() or "\n" in lb or "\r" in lb]
    if not labels or bad or len(set(labels)) != len(labels):
        raise SkinscanError(f"labels must be unique, non-empty single lines; got {labels!r}")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    image, probs = _io_tensors(model)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    in_type = types.get(image.type, str(image.type))
    if in_type not in _IMAGE_DTYPES:
        raise SkinscanError(f"model input is {in_type}; MediaPipe and the Task Library read only uint8 or "
                            "float32 images (export with uint8 in/out, or use a float export)")
    if list(image.shape) != [1, img_size, img_size, 3]:
        raise SkinscanError(f"model input shape {list(image.shape)} is not [1, {img_size}, {img_size}, 3] "
                            "(NHWC RGB at the trained size)")
    if int(probs.shape[-1]) != len(labels):
        raise SkinscanError(f"{len(labels)} labels but the model outputs {int(probs.shape[-1])} scores; "
                            "use the labels.txt of the run that produced this export")

    builder = flatbuffers.Builder(1024)
    tree = _metadata_tree(labels=labels, name=name, description=description, version=version,
                          author=author, license=license, img_size=img_size)
    builder.Finish(_pack(builder, "ModelMetadata", tree), file_identifier=METADATA_FILE_ID)
    blob = np.frombuffer(bytes(builder.Output()), dtype=np.uint8)
    entry = next((m for m in model.metadata or [] if _text(m.name) == METADATA_NAME), None)
    if entry is None:
        model.buffers.append(schema.BufferT(data=blob))
        model.metadata = [*(model.metadata or []), schema.MetadataT(name=METADATA_NAME,
                                                                     buffer=len(model.buffers) - 1)]
    else:
        model.buffers[entry.buffer].data = blob
    packed = io.BytesIO()
    packed.write(flatbuffer_utils.convert_object_to_bytearray(model))
    # Associated files must be stored uncompressed: the C++ extractors hand out views into them.
    # A fixed timestamp: the same inputs give the same bytes (zipfile would stamp the clock).
    with zipfile.ZipFile(packed, "a", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(LABELS_FILE, date_time=(1980, 1, 1, 0, 0, 0)), "\n".join(labels) + "\n")
    return packed.getvalue()


def read_metadata(model: bytes | str | Path) -> dict:
    """Read back what :func:`write_metadata` wrote, as one flat dict (our own checks use it).

    >>> # md = read_metadata("android_assets/bundle/skinscan_int8.tflite")
    >>> # md["labels"][:2], md["normalization_mean"], md["input_name"]
    """
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import encode, packer, util

    data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    root = schema.Model.GetRootAs(data, 0)
    names = [_text(root.Metadata(i).Name()) for i in range(root.MetadataLength())]
    if METADATA_NAME not in names:
        raise SkinscanError(f"no {METADATA_NAME} entry in the model's metadata (found {names})")
    blob = root.Buffers(root.Metadata(names.index(METADATA_NAME)).Buffer()).DataAsNumpy().tobytes()
    if not util.BufferHasIdentifier(blob, 0, METADATA_FILE_ID):
        raise SkinscanError(f"{METADATA_NAME} is not a metadata flatbuffer (identifier is not M001)")
    md = _read(blob, encode.Get(packer.uoffset, blob, 0), "ModelMetadata")
    sub = md["subgraph_metadata"][0]
    image, probs = sub["input_tensor_metadata"][0], sub["output_tensor_metadata"][0]
    norm = dict(pu["options"] for pu in image.get("process_units", [])).get("NormalizationOptions", {})
    label_files = [f["name"] for f in probs.get("associated_files", []) if f.get("type") == "TENSOR_AXIS_LABELS"]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            packed = zf.namelist()
            labels = zf.read(label_files[0]).decode("utf-8").splitlines() if label_files else []
    except (zipfile.BadZipFile, KeyError) as e:
        raise SkinscanError(f"the model's metadata names {label_files} but the packed files are "
                            f"missing ({e})") from None
    content = image.get("content", {}).get("content_properties", ("NONE", {}))
    return {
        "name": md.get("name"), "description": md.get("description"), "version": md.get("version"),
        "author": md.get("author"), "license": md.get("license"),
        "min_parser_version": md.get("min_parser_version"),
        "input_name": image.get("name"), "output_name": probs.get("name"),
        "input_content": content[0], "color_space": content[1].get("color_space"),
        "normalization_mean": norm.get("mean"), "normalization_std": norm.get("std"),
        "input_min": image.get("stats", {}).get("min"), "input_max": image.get("stats", {}).get("max"),
        "output_process_units": [pu["options"][0] for pu in probs.get("process_units", [])],
        "labels_file": label_files[0] if label_files else None, "labels": labels, "packed_files": packed,
    }


def _move_in(staging: Path, final_dir: Path, names: list[str], stale: list[str], zip_name: str) -> None:
    """Renames only (no space needed): the old sidecar and zip go first and come back last, so a
    crash half-way leaves a folder that reads as no bundle (no metadata.json), never as a whole one."""
    import os

    final_dir.mkdir(parents=True, exist_ok=True)
    for name in ("metadata.json", zip_name, *stale):
        (final_dir / name).unlink(missing_ok=True)
    for name in [n for n in names if n != "metadata.json"] + ["metadata.json", zip_name]:
        os.replace(staging / name, final_dir / name)


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)

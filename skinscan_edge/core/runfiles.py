"""The run's files that stages hand to each other: one typed definition each, read and written here.

``config.json`` (train), ``exports/manifest.json`` (export), ``reports/evaluate.json``
(evaluate), ``reports/benchmark.json`` (benchmark) and ``duplicates.json`` (train) each have one
model below, with its file name and a ``schema_version``. Writers validate what they write;
readers validate what they read, so a stage never trusts another stage's file by string keys
alone. A file that does not parse, does not match its model, or was written by an older schema
is refused with one line that names the file and the command that writes it again: never misread.
``schemas/*.schema.json`` are these models' JSON Schemas, for a user's CI
(``make schemas`` writes them; a test keeps them in step).

Why pydantic (v2): the files are nested JSON written by several stages; pydantic gives
validation on read and write with the failing field named, and JSON Schema from the same
classes, and the stack already carries it (typer depends on it). Dataclasses with a hand-written
validator would re-implement both. The rows keep ``extra="allow"``: the fields every consumer
relies on are typed; a stage may record more about a row (a new runtime's details) without a
schema change, and those extra fields are carried, not interpreted.

>>> EvaluateReport.FILE, Manifest.FILE
('reports/evaluate.json', 'exports/manifest.json')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import write_json


class _Row(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class RunFile(_Row):
    """A run file: ``FILE`` (relative to the run), the command that writes it, its schema version."""

    FILE: ClassVar[str] = ""
    #: The command that writes the file again (the fix in a refusal).
    WRITER: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1
    #: Files written before a schema version was recorded had this shape (None: refuse them).
    UNVERSIONED_IS: ClassVar[int | None] = None

    schema_version: int = Field(description="The shape of this file; a newer skinscan-edge may refuse an older one.")

    @classmethod
    def path(cls, run_root: str | Path) -> Path:
        return Path(run_root) / cls.FILE


# --- config.json ------------------------------------------------------------------------------
class RunConfig(RunFile):
    """``config.json``: the resolved training settings and what the run was made from."""

    FILE = "config.json"
    WRITER = "train --data DATA --out {run}"
    UNVERSIONED_IS = 1

    train: dict[str, Any] = Field(description="TrainConfig, resolved (skinscan_edge.core.config.TrainConfig).")
    labels: list[str] = Field(default=[], description="A copy of labels.txt, which is the source of truth.")
    classes: list[str] = []
    data_root: str | None = None
    layout: str | None = None
    split_sha256: str | None = None
    split_counts: dict[str, dict[str, int]] = {}
    data_fingerprint: dict[str, Any] | None = None
    versions: dict[str, Any] = {}
    input_contract: dict[str, Any] | None = None
    created: str | None = None


# --- exports/manifest.json --------------------------------------------------------------------
class ExportEntry(_Row):
    name: str
    file: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    convert_seconds: float | None = None
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    notes: str = ""
    float_twin: dict[str, Any] | None = None
    keep_float: dict[str, Any] | None = None


class ExportFailure(_Row):
    name: str
    error: str


class Manifest(RunFile):
    """``exports/manifest.json``: every exported file, its SHA-256, and the export's state."""

    FILE = "exports/manifest.json"
    WRITER = "export {run}"
    UNVERSIONED_IS = 1

    run: str | None = None
    created: str | None = None
    state: Literal["running", "complete", "interrupted"] = "complete"
    requested: list[str] = []
    command_flags: str = ""
    config: dict[str, Any] = Field(default={}, description="ExportConfig, resolved.")
    model_sha256: str | None = None
    tool_versions: dict[str, Any] = {}
    input_contract: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    onnx_int8_settings: dict[str, Any] | None = None
    exports: list[ExportEntry]
    failures: list[ExportFailure] = []

    def entry(self, name: str) -> ExportEntry | None:
        return next((e for e in self.exports if e.name == name), None)


# --- reports/evaluate.json --------------------------------------------------------------------
class GateFailure(_Row):
    """One failed check of the gate: which model, which metric, its limit and its value."""

    model: str
    metric: Literal["accuracy_drop_pp", "recall_drop_pp", "top1_agreement"]
    limit: float
    value: float
    cls: str | None = Field(default=None, alias="class", description="The class, for recall_drop_pp.")

    def text(self) -> str:
        """The failure as one sentence (the one place it is worded)."""
        if self.metric == "accuracy_drop_pp":
            return (f"{self.model}: accuracy dropped {self.value:.2f} pp vs Keras "
                    f"(limit {self.limit:.2f} pp, over by {self.value - self.limit:.2f})")
        if self.metric == "recall_drop_pp":
            return (f"{self.model}: recall of {self.cls} dropped {self.value:.2f} pp vs Keras "
                    f"(limit {self.limit:.2f} pp, over by {self.value - self.limit:.2f})")
        return (f"{self.model}: top-1 agreement with Keras {self.value:.4f} is below "
                f"{self.limit:.4f} (short by {self.limit - self.value:.4f})")


class GateResult(_Row):
    passed: bool
    failures: list[GateFailure]
    max_accuracy_drop_pp: float
    max_recall_drop_pp: float
    critical_classes: list[str] = []
    min_agreement: float | None = None

    def failures_of(self, model: str) -> list[GateFailure]:
        return [f for f in self.failures if f.model == model]


class ModelScore(_Row):
    """One model's row: Keras (the baseline), an export, or an export through a client."""

    name: str
    format: str
    precision: str
    file: str | None = None
    size_mb: float | None = None
    accuracy: float
    delta_accuracy_pp: float
    delta_accuracy_ci95_low_pp: float | None = None
    delta_accuracy_ci95_high_pp: float | None = None
    top1_agreement: float
    worst_recall_drop_pp: float | None = None
    worst_recall_drop_class: str | None = None
    recall_delta_pp: dict[str, float | None] = {}
    client: str | None = Field(default=None, description="The client that ran the file (a MediaPipe row).")
    source_export: str | None = Field(default=None, description="For a client row: the export it ran.")


class EvaluateReport(RunFile):
    """``reports/evaluate.json``: every model against Keras on one split, and the gate's verdict."""

    FILE = "reports/evaluate.json"
    WRITER = "evaluate {run}"
    SCHEMA_VERSION = 2  # 2: gate failures are records (model, metric, limit, value), not sentences

    run: str
    split: str
    created: str
    labels: list[str]
    num_images: int
    num_skipped: int = 0
    img_size: int
    settings: dict[str, Any] = {}
    manifest_sha256: str | None = None
    exports_requested: int | None = None
    exports_checked: int | None = None
    partial: bool = False
    models: list[ModelScore]
    gate: GateResult

    def model(self, name: str) -> ModelScore | None:
        return next((m for m in self.models if m.name == name), None)


# --- reports/benchmark.json -------------------------------------------------------------------
class BenchmarkRow(_Row):
    model: str
    format: str | None = None
    precision: str | None = None
    device: str
    threads: int | None = None
    size_mb: float | None = None
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_std_ms: float | None = None
    latency_runs: int | None = None
    error: str | None = None
    skipped: str | None = None


class BenchmarkReport(RunFile):
    """``reports/benchmark.json``: latency, throughput and memory per (model, device, threads)."""

    FILE = "reports/benchmark.json"
    WRITER = "benchmark {run}"
    SCHEMA_VERSION = 2  # 2: ``schema`` became ``schema_version``, like every run file

    run: str
    created: str
    img_size: int
    config: dict[str, Any]
    host: dict[str, Any] = {}
    host_line: str = ""
    manifest_sha256: str | None = None
    rows: list[BenchmarkRow]


# --- duplicates.json --------------------------------------------------------------------------
class Duplicates(RunFile):
    """``duplicates.json``: near-duplicate pairs and groups, label conflicts, test leaks."""

    FILE = "duplicates.json"
    WRITER = "train --data DATA --out {run}"
    UNVERSIONED_IS = 1

    num_pairs: int
    num_groups: int
    num_grouped_images: int
    num_conflicts: int
    conflict_action: str
    num_test_images_with_duplicate_in_train_val: int
    leaked_test_images: list[str] = []
    groups: list[dict[str, Any]] = []
    pairs: list[Any] = []


#: Every typed run file, for the schemas and the tests.
RUN_FILES: tuple[type[RunFile], ...] = (RunConfig, Manifest, EvaluateReport, BenchmarkReport, Duplicates)

F = TypeVar("F", bound=RunFile)


def _refuse(cls: type[RunFile], path: Path, why: str) -> SkinscanError:
    run = path.parents[cls.FILE.count("/")]
    return SkinscanError(f"{path} {why}; write it again with `skinscan-edge {cls.WRITER.format(run=run)}`")


def load(cls: type[F], path: str | Path) -> F:
    """Read and validate one run file; a missing, damaged, mismatched or older file raises one line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _refuse(cls, path, "is missing") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise _refuse(cls, path, f"is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(data, dict):
        raise _refuse(cls, path, f"holds a JSON {type(data).__name__}, not an object")
    version = data.get("schema_version", cls.UNVERSIONED_IS)
    if version != cls.SCHEMA_VERSION:
        found = "no schema version" if "schema_version" not in data else f"schema {version}"
        raise _refuse(cls, path, f"was written by another skinscan-edge ({found}; this one reads schema "
                                 f"{cls.SCHEMA_VERSION})")
    try:
        return cls.model_validate({**data, "schema_version": version})
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _refuse(cls, path, f"does not match its schema ({where}: {first['msg']})") from None


def load_or_none(cls: type[F], path: str | Path) -> F | None:
    """The file, or None when it is missing or cannot be read as this schema (the caller redoes the
    stage that writes it, or says it has not run)."""
    try:
        return load(cls, path)
    except SkinscanError:
        return None


def read_or_none(cls: type[RunFile], path: str | Path) -> dict | None:
    """The file as the dict it holds, once it validated; None when it is missing or cannot be read as
    this schema (an older file is then treated as not written: never misread)."""
    model = load_or_none(cls, path)
    return None if model is None else model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def validate(cls: type[F], data: dict) -> dict:
    """``data`` stamped with the schema version and checked against the model (a stage's own
    output: a mismatch is our bug, raised as such); returns the dict to write."""
    out = {"schema_version": cls.SCHEMA_VERSION, **{k: v for k, v in data.items() if k != "schema_version"}}
    cls.model_validate(out)
    return out


def save(cls: type[RunFile], path: str | Path, data: dict) -> dict:
    """Validate and write one run file atomically; returns what was written."""
    out = validate(cls, data)
    write_json(Path(path), out)
    return out


def write_schemas(folder: str | Path) -> list[Path]:
    """Write every run file's JSON Schema into ``folder`` (``schemas/`` in the repository)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for cls in RUN_FILES:
        schema = cls.model_json_schema(by_alias=True)
        schema["$id"] = f"skinscan-edge/{cls.FILE}"
        schema["properties"]["schema_version"]["const"] = cls.SCHEMA_VERSION
        path = folder / f"{Path(cls.FILE).stem}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        out.append(path)
    return out


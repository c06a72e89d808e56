"""The run directory: the contract between `train` and every later command.

``train`` writes it; ``export``, ``evaluate``, ``benchmark`` and ``predict`` read it. Nothing a
run already knows (image size, labels, data root, split) is asked for again on the command line.

Layout::

    RUN/
      config.json            resolved TrainConfig, tool versions, data root, split hash, data fingerprint
      data_files.json        the scanned files' sizes and mtimes (skinscan_edge.data.fingerprint)
      .lock                  held by the one command writing the run (skinscan_edge.core.runlock)
      labels.txt             display names, one per line, in output order
      model.keras            the trained Keras model (best weights)
      split.json             persisted stratified split (paths relative to the data root)
      skipped.json           files the scanner refused, each with a reason
      status.json            {"state": "complete" | "incomplete", ...}
      history.csv, training_curves.png
      reports/               keras_test_report.{txt,json}, keras_confusion.png, evaluate.*, benchmark.*
      exports/manifest.json  one entry per exported file (see skinscan_edge.core.manifest)
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skinscan_edge.core import runfiles
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import read_json, write_json
from skinscan_edge.core.names import check_labels
from skinscan_edge.core.runlock import refuse_if_in_use
from skinscan_edge.core.tf import keras


@dataclass(frozen=True)
class RunDir:
    """Paths and readers for one run directory."""

    root: Path

    @classmethod
    def open(cls, path: str | Path, *, require_model: bool = True) -> "RunDir":
        """Open an existing run; fail with a one-line error that says what is missing."""
        root = Path(path)
        if not root.exists():
            raise SkinscanError(f"run directory not found: {root}")
        if not root.is_dir():
            raise SkinscanError(f"not a run directory (it is a file): {root}")
        run = cls(root)
        if require_model:
            if run.status().get("state") != "complete":
                refuse_if_in_use(root)  # being trained now, not interrupted
            if run.status().get("state") == "incomplete":
                raise SkinscanError(
                    f"run {root} is incomplete (training was interrupted); "
                    f"finish it with `skinscan-edge train --resume --out {root}`"
                )
            if not run.model_path.exists():
                raise SkinscanError(
                    f"no trained model in {root} (expected {run.model_path.name}); "
                    f"run `skinscan-edge train --out {root}` first"
                )
            state = run.status().get("state")
            if state != "complete":
                raise SkinscanError(
                    f"run {root} is incomplete (training was interrupted); "
                    f"finish it with `skinscan-edge train --resume --out {root}`"
                )
        return run

    # --- paths -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return runfiles.RunConfig.path(self.root)

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.txt"

    @property
    def model_path(self) -> Path:
        return self.root / "model.keras"

    @property
    def split_path(self) -> Path:
        return self.root / "split.json"

    @property
    def skipped_path(self) -> Path:
        return self.root / "skipped.json"

    @property
    def status_path(self) -> Path:
        return self.root / "status.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def manifest_path(self) -> Path:
        return runfiles.Manifest.path(self.root)

    @property
    def evaluate_path(self) -> Path:
        return runfiles.EvaluateReport.path(self.root)

    @property
    def benchmark_path(self) -> Path:
        return runfiles.BenchmarkReport.path(self.root)

    @property
    def duplicates_path(self) -> Path:
        return runfiles.Duplicates.path(self.root)

    # --- readers -------------------------------------------------------------------------
    def config(self) -> dict:
        """config.json, validated (``runfiles.RunConfig``), as the dict it holds."""
        if not self.config_path.exists():
            raise SkinscanError(f"{self.config_path} is missing; is {self.root} a skinscan-edge run?")
        return runfiles.load(runfiles.RunConfig, self.config_path).model_dump(mode="json", by_alias=True,
                                                                              exclude_unset=True)

    def labels(self) -> list[str]:
        if not self.labels_path.exists():
            raise SkinscanError(f"{self.labels_path} is missing")

        try:
            lines = self.labels_path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise SkinscanError(f"{self.labels_path} is not UTF-8 text ({e})") from None
        while lines and not lines[-1].strip():  # an editor's trailing blank line
            lines.pop()
        return check_labels(lines, [f"line {i}" for i in range(1, len(lines) + 1)], str(self.labels_path))

    def img_size(self) -> int:
        return int(self.config()["train"]["img_size"])

    def split(self) -> dict:
        if not self.split_path.exists():
            raise SkinscanError(f"{self.split_path} is missing; the run has no persisted split")
        return read_json(self.split_path)

    def split_items(self, name: str) -> list[tuple[Path, int]]:
        """(absolute path, label index) for every image in one split ('train', 'val', 'test')."""
        return split_pairs(self.split(), name)

    def status(self) -> dict:
        return read_json(self.status_path) if self.status_path.exists() else {}

    def set_status(self, state: str, **extra: Any) -> None:
        write_json(self.status_path, {"state": state, **extra})

    def load_model(self):
        """Load model.keras with safe_mode on.

        Written by hand because tf-keras' ``load_model`` hands h5py a seekable view into the
        zip member; on Python 3.11 every backward seek re-reads the member from its start, so
        loading InceptionV3 (87 MB) takes minutes. We extract the weights file once and use
        the same two public calls ``load_model`` makes: deserialize the config (safe_mode)
        and load the weights.
        """
        return load_keras_model(self.model_path)


def split_pairs(split: dict, name: str) -> list[tuple[Path, int]]:
    """(absolute path, label index) for one split of a split.json document."""
    if name not in split["splits"]:
        raise SkinscanError(f"unknown split '{name}'; valid: {', '.join(split['splits'])}")
    root = Path(split["root"])
    return [(root / rel, int(label)) for rel, label in split["splits"][name]]


def load_keras_model(path: Path):
    k = keras()
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory() as tmp:
            config = json.loads(zf.read("config.json"))
            config["compile_config"] = None
            zf.extract("model.weights.h5", tmp)
            model = k.saving.deserialize_keras_object(config, safe_mode=True)
            model.load_weights(os.path.join(tmp, "model.weights.h5"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise SkinscanError(f"{path} is not a valid .keras model file ({e})") from None
    except (ValueError, TypeError) as e:  # safe_mode refuses Lambda layers and other code in the file
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SkinscanError(f"{path} cannot be loaded safely ({text[:200]})") from None
    return model

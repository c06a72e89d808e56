"""Session-scoped fixtures: make the synthetic data, train once and export once.

Everything runs through the real CLI (typer's CliRunner) at InceptionV3's minimum size
(75 px) so the whole suite stays within a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import skinscan_edge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

IMG = 75
FINE_TUNE_EPOCHS = 8


def invoke(args: list[str]):
    from typer.testing import CliRunner

    from skinscan_edge.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from skinscan_edge.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(root, per_class=24, size=96, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def train_result(demo_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    # From scratch (no ImageNet here), so the head-only phase is skipped and the whole base
    # trains at a from-scratch learning rate: ~0.5 test accuracy on 10 classes in ~1.5 min.
    result = invoke(["train", "--data", demo_data, "--out", out, "--img-size", IMG, "--epochs", 0,
                     "--fine-tune-epochs", FINE_TUNE_EPOCHS, "--weights", "none", "--unfreeze-from", "input",
                     "--batch-size", 8, "--fine-tune-lr", "1e-3", "--no-augment", "--seed", 7])
    return out, result


@pytest.fixture(scope="session")
def trained_run(train_result):
    from skinscan_edge.rundir import RunDir

    out, result = train_result
    assert result.exit_code == 0, result.output
    return RunDir.open(out)


@pytest.fixture(scope="session")
def export_result(trained_run):
    result = invoke(["export", trained_run.root, "--int8", "--fp16", "--dynamic", "--qat",
                     "--calib-samples", 48, "--qat-epochs", 1])
    return trained_run, result


@pytest.fixture(scope="session")
def exported_run(export_result):
    run, result = export_result
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run (for tests that damage it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run.root, dst, ignore=shutil.ignore_patterns("tensorboard", "backup", "checkpoints", "exports"))
    from skinscan_edge.rundir import RunDir

    return RunDir(dst)


def pytest_configure(config):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

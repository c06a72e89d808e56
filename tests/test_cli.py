"""The CLI itself: --help is fast (no TensorFlow import) and documents every command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import invoke

COMMANDS = ["demo-data", "train", "export", "evaluate", "benchmark"]


def test_help_does_not_import_tensorflow():
    code = ("import sys; from skinscan_edge.cli import app; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']); "
            "assert r.exit_code == 0; "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'onnxruntime', 'tf2onnx') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = invoke([command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output and "--help" in result.output

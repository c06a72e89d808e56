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


# --- bad arguments: exit code 2 and one line, through the real entry point ----------------------
def run_main(args, capsys) -> tuple[int, str]:
    from skinscan_edge.cli import main

    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, (out.out + out.err).strip()


def _one_class(p):
    from PIL import Image

    for i in range(6):
        (p / "data" / "Melanoma").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), (i * 30, 0, 0)).save(p / "data" / "Melanoma" / f"{i}.png")
    return p / "data"


def _short_label_map(p):
    (p / "map.json").write_text('{"labels": {"Melanoma": "Melanoma"}}')
    return p / "map.json"


def _labels_off_by_one(exported_run, tmp):
    """A copy of the run (model, one export) whose labels.txt lost a line."""
    import shutil

    dst = tmp / "short-labels"
    shutil.copytree(exported_run.root, dst, ignore=shutil.ignore_patterns(
        "tensorboard", "backup", "checkpoints", "reports", "*.onnx", "model_fp*", "model_dynamic*", "model_qat*"))
    lines = (dst / "labels.txt").read_text().splitlines()
    (dst / "labels.txt").write_text("\n".join(lines[:-1]) + "\n")
    return dst


# (name, argv built from (tmp_path, demo_data, run_root, run_copy_factory), expected text in the one line)
BAD_ARGS = [
    ("missing data", lambda t, d, r, c: ["train", "--data", t / "nope"], "--data folder not found"),
    ("data is a file", lambda t, d, r, c: ["train", "--data", (t / "f.txt").write_text("x") and t / "f.txt"], "got a file"),
    ("empty data folder", lambda t, d, r, c: ["train", "--data", (t / "e").mkdir() or t / "e"], "no class folders"),
    ("one-class data folder", lambda t, d, r, c: ["train", "--data", _one_class(t), "--out", t / "o", "--weights", "none"],
     "need at least 2 classes"),
    ("img-size under 75", lambda t, d, r, c: ["train", "--data", d, "--img-size", 74], "at least 75"),
    ("img-size not a number", lambda t, d, r, c: ["train", "--data", d, "--img-size", "big"], "Invalid value for '--img-size'"),
    ("batch size 0", lambda t, d, r, c: ["train", "--data", d, "--batch-size", 0], "--batch-size must be at least 1"),
    ("unknown option", lambda t, d, r, c: ["train", "--data", d, "--epoch", 3], "No such option"),
    ("unknown strategy", lambda t, d, r, c: ["train", "--data", d, "--strategy", "mirored"], "did you mean 'mirrored'"),
    ("cpu replicas without mirrored", lambda t, d, r, c: ["train", "--data", d, "--cpu-replicas", 2], "only applies to --strategy mirrored"),
    ("label map count mismatch", lambda t, d, r, c: ["train", "--data", d, "--out", t / "o", "--labels", _short_label_map(t)],
     "has no label for folder(s)"),
    ("missing run", lambda t, d, r, c: ["export", t / "nope"], "run directory not found"),
    ("run is a file", lambda t, d, r, c: ["evaluate", (t / "f").write_text("x") and t / "f"], "it is a file"),
    ("unknown precision", lambda t, d, r, c: ["export", r, "--precision", "int4"], "unknown name 'int4'"),
    ("unknown export format", lambda t, d, r, c: ["evaluate", r, "--formats", "tflite-int9"], "did you mean 'tflite-int8'"),
    ("unknown benchmark model", lambda t, d, r, c: ["benchmark", r, "--models", "onnx-fp33"], "onnx-fp32"),
    ("benchmark threads 0", lambda t, d, r, c: ["benchmark", r, "--threads", "0"], "must be positive"),
    ("evaluate batch size 0", lambda t, d, r, c: ["evaluate", r, "--batch-size", 0], "--batch-size must be at least 1"),
    ("predict unknown format", lambda t, d, r, c: ["predict", r, d / "Melanoma", "--format", "tflite-int9"], "did you mean 'tflite-int8'"),
    ("predict top-k 0", lambda t, d, r, c: ["predict", r, d / "Melanoma", "--top-k", 0], "--top-k must be between 1 and 10"),
    ("predict missing image", lambda t, d, r, c: ["predict", r, t / "nope.jpg", "--format", "tflite-int8"], "nope.jpg: not-found"),
    ("predict labels do not match the model",
     lambda t, d, r, c: ["predict", _labels_off_by_one(c(), t), d / "Melanoma", "--format", "tflite-int8"],
     "labels don't match"),
    ("pipeline bad gate value", lambda t, d, r, c: ["pipeline", "--data", d, "--out", t / "o", "--min-agreement", 2],
     "between 0 and 1"),
    ("report of a missing run", lambda t, d, r, c: ["report", t / "nope"], "run directory not found"),
]


@pytest.mark.parametrize("name, make, expected", BAD_ARGS, ids=[b[0] for b in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(name, make, expected, tmp_path, demo_data, exported_run, capsys, request):
    args = make(tmp_path, demo_data, exported_run.root, lambda: exported_run)
    code, output = run_main(args, capsys)
    assert code == 2, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert output.startswith("error:") and expected in output, output

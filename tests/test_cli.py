"""The CLI itself: --help is fast (no TensorFlow import) and documents every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import scaled_timeout


COMMANDS = ["demo-data", "train", "export", "evaluate", "benchmark", "bundle", "pipeline", "predict", "report", "explain"]


def test_help_does_not_import_tensorflow():
    code = ("import sys; from skinscan_edge.cli import app; "
            "from typer.testing import CliRunner; r = CliRunner().invoke(app, ['--help']); "
            "assert r.exit_code == 0; "
            "heavy = [m for m in ('tensorflow', 'tf_keras', 'onnxruntime', 'tf2onnx') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=scaled_timeout(60))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _click_command(name):
    import typer

    from skinscan_edge.cli import app

    return typer.main.get_command(app).commands[name]


def test_the_cli_has_exactly_these_commands():
    import typer

    from skinscan_edge.cli import app

    assert sorted(typer.main.get_command(app).commands) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_every_command_is_explained_in_its_help(command):
    from typer.testing import CliRunner

    from skinscan_edge.cli import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "240"})  # no truncated flags
    assert result.exit_code == 0
    flat = " ".join(result.output.split())  # rich wraps long help over lines
    for param in _click_command(command).params:
        assert param.help and len(param.help) > 15, f"{command} {param.name} has no real help"
        if param.param_type_name == "option":
            assert param.opts[0] in flat, f"{command} --help does not list {param.opts[0]}"


def _groups(command):
    """The config groups each command's options come from, and the flag prefix they carry."""
    from skinscan_edge.commands import options as o
    from skinscan_edge.core.config import ExportConfig, TrainConfig
    from skinscan_edge.core.config_stages import BenchmarkConfig, BundleConfig, EvaluateConfig, ExplainConfig
    from skinscan_edge.core.config import GateConfig

    train, export, gate = (TrainConfig, o.TRAIN, ""), (ExportConfig, o.EXPORT, ""), (GateConfig, o.GATE, "")
    return {"train": [train], "export": [export], "evaluate": [(EvaluateConfig, o.EVALUATE, ""), gate],
            "benchmark": [(BenchmarkConfig, o.BENCHMARK, "")], "explain": [(ExplainConfig, o.EXPLAIN, "")],
            "bundle": [(BundleConfig, o.BUNDLE, "")],
            "pipeline": [train, export, gate, (BenchmarkConfig, o.BENCHMARK, "bench")]}[command]


@pytest.mark.parametrize("command", ["train", "export", "evaluate", "benchmark", "bundle", "pipeline", "explain"])
def test_every_option_default_is_the_library_default(command):
    """An option bound to a config field shows, and uses, that field's default: the CLI, the
    Python API and the saved config cannot disagree (pipeline's --bench-batch included)."""
    from skinscan_edge.commands import options

    params = {p.opts[0]: p for p in _click_command(command).params if p.param_type_name == "option"}
    checked = 0
    for cls, opts, prefix in _groups(command):
        for opt in opts:
            flag = options._flags(opt, prefix)[0].split("/")[0]
            if flag not in params:
                assert prefix and opt.field not in options.PIPELINE_BENCHMARK, f"{command} lacks {flag}"
                continue
            default, shown = options.default_of(cls, opt.field), params[flag].default
            value = opt.parse(shown) if opt.parse else shown
            assert value == (tuple(default) if isinstance(default, tuple) else default), \
                f"{command} {flag}: {shown!r} is not {cls.__name__}.{opt.field} = {default!r}"
            checked += 1
    assert checked == sum(len(opts) if not prefix else len(options.PIPELINE_BENCHMARK)
                          for _, opts, prefix in _groups(command))
    if command == "pipeline":  # the bundle's folder, under pipeline's name for it
        from skinscan_edge.core.config_stages import BundleConfig

        assert str(params["--android-dir"].default) == BundleConfig().out


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


def _place(name: str, tmp: Path, demo_data: Path, request) -> Path:
    """The paths a bad command line names: made only when a case uses them."""
    if name == "tmp":
        return tmp
    if name == "data":
        return demo_data
    if name == "file":
        (tmp / "f.txt").write_text("x")
        return tmp / "f.txt"
    if name == "empty":
        (tmp / "e").mkdir()
        return tmp / "e"
    if name == "one_class":
        return _one_class(tmp)
    if name == "short_map":
        return _short_label_map(tmp)
    run = request.getfixturevalue("exported_run")
    return run.root if name == "run" else _labels_off_by_one(run, tmp)


def _argv(template: list[str], tmp: Path, demo_data: Path, request) -> list[str]:
    """``{data}/Melanoma`` -> the demo data's Melanoma folder, and so on (see _place)."""
    import re

    return [re.sub(r"\{(\w+)\}", lambda m: str(_place(m.group(1), tmp, demo_data, request)), a) for a in template]


# (case, command line with {placeholders} from _place, what its one line must say)
BAD_ARGS = [
    ("missing data", "train --data {tmp}/nope", "--data folder not found"),
    ("data is a file", "train --data {file}", "got a file"),
    ("empty data folder", "train --data {empty}", "no class folders"),
    ("one-class data folder", "train --data {one_class} --out {tmp}/o --weights none", "need at least 2 classes"),
    ("img-size under 75", "train --data {data} --img-size 74", "at least 75"),
    ("img-size not a number", "train --data {data} --img-size big", "Invalid value for '--img-size'"),
    ("batch size 0", "train --data {data} --batch-size 0", "--batch-size must be at least 1"),
    ("unknown option", "train --data {data} --epoch 3", "No such option"),
    ("unknown strategy", "train --data {data} --strategy mirored", "did you mean 'mirrored'"),
    ("cpu replicas without mirrored", "train --data {data} --cpu-replicas 2", "only applies to --strategy mirrored"),
    ("label map count mismatch", "train --data {data} --out {tmp}/o --labels {short_map}", "has no label for folder(s)"),
    ("missing run", "export {tmp}/nope", "run directory not found"),
    ("run is a file", "evaluate {file}", "it is a file"),
    ("pipeline bad gate value", "pipeline --data {data} --out {tmp}/o --min-agreement 2", "between 0 and 1"),
    ("pipeline unknown device", "pipeline --data {data} --out {tmp}/o --device gpus", "did you mean 'gpu'"),
    ("report of a missing run", "report {tmp}/nope", "run directory not found"),
]
#: The same, for cases that need the session's exported run.
BAD_RUN_ARGS = [
    ("unknown precision", "export {run} --precision int4", "unknown precision 'int4'"),
    ("unknown evaluate model", "evaluate {run} --model tflite-int9", "did you mean 'tflite-int8'"),
    ("unknown benchmark model", "benchmark {run} --model onnx-fp33", "did you mean 'onnx-fp32'"),
    ("old option name still works", "benchmark {run} --models onnx-fp33", "did you mean 'onnx-fp32'"),
    ("benchmark threads 0", "benchmark {run} --threads 0", "must be positive"),
    ("evaluate batch size 0", "evaluate {run} --batch-size 0", "--batch-size must be at least 1"),
    ("predict unknown model", "predict {run} {data}/Melanoma --model tflite-int9", "did you mean 'tflite-int8'"),
    ("predict top-k 0", "predict {run} {data}/Melanoma --top-k 0", "--top-k must be between 1 and 10"),
    ("predict missing image", "predict {run} {tmp}/nope.jpg --model tflite-int8", "nope.jpg: not-found"),
    ("predict labels do not match the model", "predict {short_labels_run} {data}/Melanoma --model tflite-int8",
     "labels don't match"),
]


def _check_one_line_error(case, tmp_path, demo_data, capsys, request):
    name, template, expected = case
    code, output = run_main(_argv(template.split(), tmp_path, demo_data, request), capsys)
    assert code == 2, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert output.startswith("error:") and expected in output, output


@pytest.mark.parametrize("case", BAD_ARGS, ids=[b[0] for b in BAD_ARGS])
def test_bad_arguments_exit_2_with_one_line(case, tmp_path, demo_data, capsys, request):
    _check_one_line_error(case, tmp_path, demo_data, capsys, request)


@pytest.mark.parametrize("case", BAD_RUN_ARGS, ids=[b[0] for b in BAD_RUN_ARGS])
def test_bad_arguments_about_a_run_exit_2_with_one_line(case, tmp_path, demo_data, exported_run, capsys, request):
    _check_one_line_error(case, tmp_path, demo_data, capsys, request)



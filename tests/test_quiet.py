"""A quiet terminal: TensorFlow's native start-up lines never reach stderr unless --verbose.

The lines are written by C++ straight to file descriptor 2 (see skinscan_edge/core/tf.py), so the
checks run real processes and read what reached their stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ENV, scaled_timeout

#: What TensorFlow prints at start-up on a machine without a GPU (TF 2.20 and 2.21, measured),
#: and the absl preamble and converter lines that come with them.
NATIVE_LINES = ("oneDNN custom operations", "Could not find cuda drivers", "failed call to cuInit",
                "absl::InitializeLog", "cuda_platform.cc", "tf_tfl_flatbuffer_helpers.cc",
                "Created TensorFlow Lite XNNPACK delegate", "is out-of-range for weight",
                "single_machine.cc", "Number of eligible GPUs")
NO_DRIVER = not (Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/version").exists())

#: Imports TensorFlow and tf-keras the package's way, looks for devices, runs one op.
SNIPPET = ("import sys; from skinscan_edge.core.tf import keras, tf; keras(); tf().constant(1.0) + 1; "
           "print('python stderr still works', file=sys.stderr)")


def _run(env_extra: dict) -> subprocess.CompletedProcess:
    env = {**ENV, "TF_CPP_MIN_LOG_LEVEL": "2", **env_extra}  # level 2: the setting, not enough alone
    return subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=env,
                          timeout=scaled_timeout(300))


def native_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(m in line for m in NATIVE_LINES)]


def test_tensorflow_start_up_is_quiet_by_default_and_shown_with_verbose():
    quiet = _run({})
    assert quiet.returncode == 0, quiet.stderr
    assert native_lines(quiet.stderr) == [], quiet.stderr
    assert "python stderr still works" in quiet.stderr  # fd 2 was given back
    if not NO_DRIVER:
        pytest.skip("an NVIDIA driver is present: TensorFlow prints no cuInit error to compare against")
    loud = _run({"SKINSCAN_VERBOSE": "1"})
    assert loud.returncode == 0, loud.stderr
    assert any("cuInit" in line for line in native_lines(loud.stderr)), loud.stderr


def test_the_capture_is_replayed_when_the_block_fails(capfd):
    from skinscan_edge.core.tf import quiet_stderr

    os.environ.pop("SKINSCAN_VERBOSE", None)
    with quiet_stderr():
        os.write(2, b"native, dropped on success\n")
        print("python, dropped on success", file=sys.stderr)
    with pytest.raises(RuntimeError), quiet_stderr():
        os.write(2, b"native, kept on failure\n")
        print("python, kept on failure", file=sys.stderr)
        raise RuntimeError("boom")
    err = capfd.readouterr().err
    assert "dropped on success" not in err
    assert "native, kept on failure" in err and "python, kept on failure" in err


def test_cli_verbose_reaches_worker_processes_through_the_environment(monkeypatch):
    from conftest import invoke

    monkeypatch.delenv("SKINSCAN_VERBOSE", raising=False)
    result = invoke(["--verbose", "demo-data", "--help"])
    assert result.exit_code == 0, result.output
    assert os.environ.get("SKINSCAN_VERBOSE") == "1"


def test_tf_keras_minor_must_match_tensorflow():
    from skinscan_edge.core.tf import check_keras_matches
    from skinscan_edge.core.errors import SkinscanError

    check_keras_matches("2.20.0", "2.20.1")
    check_keras_matches("2.21.0", "2.21.0")
    with pytest.raises(SkinscanError, match=r"tf-keras~=2\.20\.0"):
        check_keras_matches("2.20.0", "2.21.0")


def test_train_export_and_pipeline_print_no_native_lines(jobs, train_result, export_result):
    """The session's real `train`, `export --qat` (the QAT conversion runs in a second process)
    and `pipeline` (evaluate runs LiteRT; benchmark workers) processes wrote none of
    TensorFlow's or LiteRT's native lines to their stderr: what `make demo` shows."""
    for _, result in (train_result, export_result, jobs["piped"].result()):
        assert result.exit_code == 0, result.output
        assert native_lines(result.stderr) == [], native_lines(result.stderr)


def test_the_api_is_silent_without_a_reporter(tmp_path, capfd):
    """API train and export with ``reporter=None``: nothing on stdout or stderr (file descriptors
    1 and 2, so the conversion workers' output counts too). Keras' epoch lines come through the
    reporter like every other progress line, so with none there are none."""
    import skinscan_edge as se
    from skinscan_edge.data.demo import write_demo_dataset

    write_demo_dataset(tmp_path / "data", per_class=10, size=80, seed=1)
    capfd.readouterr()
    config = se.TrainConfig(data=str(tmp_path / "data"), out=str(tmp_path / "run"), img_size=75, epochs=1,
                            fine_tune_epochs=1, unfreeze_from="mixed10", weights="none", batch_size=16, augment=False)
    trained = se.train(config, reporter=None)
    exported = se.export(trained.run, se.ExportConfig(precisions=["fp32"], jobs=1), reporter=None)
    out, err = capfd.readouterr()
    assert {e["name"] for e in exported.exports} == {"tflite-fp32", "onnx-fp32"}
    assert (out, err) == ("", ""), (out[-2000:], err[-2000:])

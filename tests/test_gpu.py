"""GPU defaults: mixed precision (the decision, the float32 output, exports unchanged) and
the benchmark's --device auto.

Training on a GPU could not be run where these tests were written (no GPU, and TensorFlow does
not fit the GPU machine's transfer limit): what runs here is the decision on a faked device
list, and a model built under the mixed_float16 policy, on CPU.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.training.precision import Gpu, decide

T4, A100, P100, K80 = Gpu("Tesla T4", (7, 5)), Gpu("A100", (8, 0)), Gpu("Tesla P100", (6, 0)), Gpu("K80", (3, 7))


@pytest.mark.parametrize("requested, gpus, mixed, reason", [
    (None, [], False, "float32 (no GPU)"),
    (None, [T4], True, "mixed_float16 on Tesla T4 (compute capability 7.5)"),
    (None, [A100, A100], True, "mixed_float16 on A100 (compute capability 8.0)"),
    (None, [P100], False, "float32 (a GPU below compute capability 7.0: Tesla P100 6.0)"),
    (None, [A100, K80], False, "float32 (a GPU below compute capability 7.0: A100 8.0, K80 3.7)"),
    (None, [Gpu("unknown", None)], False, "float32 (a GPU below compute capability 7.0: unknown unknown)"),
    (False, [A100], False, "float32 (--no-mixed-precision)"),
    (True, [T4], True, "mixed_float16 on Tesla T4 (compute capability 7.5)"),
])
def test_decision_table(requested, gpus, mixed, reason):
    d = decide(requested, gpus)
    assert (d.mixed, d.reason) == (mixed, reason)


@pytest.mark.parametrize("requested, gpus, cpu, policy, reason", [
    (None, [], ("avx512_bf16",), "mixed_bfloat16", "mixed_bfloat16 on the CPU (avx512_bf16)"),
    (True, [], ("amx_bf16", "avx512_bf16"), "mixed_bfloat16", "mixed_bfloat16 on the CPU (amx_bf16, avx512_bf16)"),
    (False, [], ("avx512_bf16",), "float32", "float32 (--no-mixed-precision)"),
    (None, [T4], ("avx512_bf16",), "mixed_float16", "mixed_float16 on Tesla T4 (compute capability 7.5)"),
    (None, [P100], ("avx512_bf16",), "float32", "float32 (a GPU below compute capability 7.0: Tesla P100 6.0)"),
])
def test_bfloat16_on_a_cpu_that_has_it(requested, gpus, cpu, policy, reason):
    d = decide(requested, gpus, cpu)
    assert (d.describe()["policy"], d.reason) == (policy, reason)


@pytest.mark.parametrize("gpus", [[], [P100]])
def test_asking_for_it_without_a_capable_gpu_fails_with_the_fix(gpus):
    with pytest.raises(SkinscanError, match="Drop the flag"):
        decide(True, gpus)


def test_cli_mixed_precision_on_cpu_fails_before_writing(demo_data, tmp_path, monkeypatch):
    from conftest import invoke

    from skinscan_edge.training import fine_tune
    from skinscan_edge.training.precision import visible_gpus

    if visible_gpus():
        pytest.skip("this host has a GPU")
    monkeypatch.setattr(fine_tune, "cpu_bf16_flags", lambda: ())  # a CPU without bfloat16, wherever this runs
    out = tmp_path / "run"
    result = invoke(["train", "--data", demo_data, "--out", out, "--img-size", 75, "--weights", "none",
                     "--mixed-precision"])
    assert result.exit_code == 2 and "--mixed-precision needs GPUs" in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("policy, compute", [("", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_model_has_float32_output_and_saves_as_the_float32_model(tmp_path, policy, compute):
    """Under mixed_float16 the layers compute in float16 but the softmax is float32; the saved
    copy (what every export reads) is float32 throughout, with the same weights, and predicts
    exactly what a model built in float32 with those weights predicts."""
    from skinscan_edge.core.tf import keras
    from skinscan_edge.exporters import tflite
    from skinscan_edge.training.model import build_model
    from skinscan_edge.training.precision import PrecisionDecision, float32_clone
    from skinscan_edge.training.precision import policy as precision_policy

    k = keras()
    with precision_policy(PrecisionDecision(True, "test", policy)):
        mixed = build_model(3, 75, weights="none", dense_units=8)
    assert k.mixed_precision.global_policy().name == "float32"  # restored after the block
    assert mixed.get_layer("head_dense").compute_dtype == compute
    assert mixed.get_layer("probs").compute_dtype == "float32" and mixed.output.dtype == "float32"

    saved = tmp_path / "model.keras"
    float32_clone(mixed).save(str(saved))
    loaded = k.models.load_model(str(saved), compile=False)
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    plain = build_model(3, 75, weights="none", dense_units=8)
    plain.set_weights(mixed.get_weights())
    x = np.random.default_rng(0).uniform(0, 255, (2, 75, 75, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), plain.predict(x, verbose=0))

    data = tflite.convert(tflite.save_serving_model(loaded, tmp_path / "sm"), "fp32")
    from ai_edge_litert.interpreter import Interpreter

    dtypes = {np.dtype(t["dtype"]).name for t in Interpreter(model_content=data).get_tensor_details()}
    assert "float16" not in dtypes and "float32" in dtypes


def test_trained_run_records_its_precision(trained_run):
    config = json.loads(trained_run.config_path.read_text())
    assert config["precision"]["policy"] in ("float32", "mixed_float16", "mixed_bfloat16")  # bf16: AVX512_BF16 CPUs
    assert config["train"]["mixed_precision"] is None  # auto unless asked


@pytest.mark.parametrize("driver, expected", [(False, ["cpu"]), (True, ["cpu", "gpu"])])
def test_benchmark_device_auto_adds_gpu_rows_where_a_driver_is_present(monkeypatch, driver, expected):
    from skinscan_edge.core import config_stages
    from skinscan_edge.core.config_stages import BenchmarkConfig

    monkeypatch.setattr(config_stages, "cuda_unavailable_reason", lambda: None if driver else "no CUDA device: test")
    assert BenchmarkConfig().device == "auto"
    assert BenchmarkConfig(device="auto").devices() == expected
    assert BenchmarkConfig(device="cpu").devices() == ["cpu"]

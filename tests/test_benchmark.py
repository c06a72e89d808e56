"""The benchmark harness, the floor, MAC counting and the report, on tiny real models."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import scaled_timeout

import skinscan_edge  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow)
from skinscan_edge.benchmark import worker as bench_worker
from skinscan_edge.benchmark import harness as bm
from skinscan_edge.benchmark import measure
from skinscan_edge.core import host as hostinfo
from skinscan_edge.core.errors import SkinscanError

IMG = 32
LABELS = ["a", "b", "c"]


# --- the harness on fake models with known times -------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRuntime:
    """predict() 'takes' durations[i] seconds per image on a fake clock, cycling."""

    name, accelerator = "fake", "none"

    def __init__(self, clock: FakeClock, per_image_s: list[float], overhead_s: float = 0.0):
        self.clock, self.per_image, self.overhead, self.calls = clock, per_image_s, overhead_s, 0

    def predict(self, images):
        self.clock.now += self.overhead + len(images) * self.per_image[self.calls % len(self.per_image)]
        self.calls += 1
        return np.zeros((len(images), 3), np.float32)


@pytest.mark.parametrize("times, expected", [
    ([5.0], {"latency_p50_ms": 5.0, "latency_p90_ms": 5.0, "latency_p99_ms": 5.0, "latency_std_ms": 0.0}),
    (list(range(1, 101)), {"latency_p50_ms": 50.5, "latency_p90_ms": 90.1, "latency_p99_ms": 99.01,
                           "latency_mean_ms": 50.5}),
    ([1.0, 3.0], {"latency_p50_ms": 2.0, "latency_mean_ms": 2.0, "latency_std_ms": 1.0, "latency_runs": 2}),
])
def test_latency_stats_table(times, expected):
    stats = measure.latency_stats(times)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value), key


def test_harness_exact_on_fake_clock():
    clock = FakeClock()
    rt = FakeRuntime(clock, per_image_s=[i / 1000 for i in range(1, 101)])  # 1..100 ms
    cfg = bm.BenchmarkConfig(warmup=0, min_time_s=0.0, min_runs=100, min_batch_runs=4, batches=(1, 4))
    images = np.zeros((2, IMG, IMG, 3), np.uint8)
    out = measure.measure_runtime(rt, images, cfg, clock=clock)
    # call 0 is the first inference (1 ms); timed calls 1..100 cycle back to 1 ms at the end.
    assert out["first_inference_ms"] == pytest.approx(1.0)
    assert out["latency_runs"] == 100
    assert out["latency_p50_ms"] == pytest.approx(50.5)
    assert out["latency_p90_ms"] == pytest.approx(90.1)
    assert out["latency_mean_ms"] == pytest.approx(50.5)
    assert out["throughput_b1_ips"] == pytest.approx(1000 / 50.5)
    # then one untimed resize call (2 ms/image) and 4 timed batch-4 calls at 3, 4, 5, 6 ms/image
    assert out["throughput_b4_ips"] == pytest.approx(16 / (4 * (3 + 4 + 5 + 6) / 1000))


def test_harness_with_real_sleeps():
    class Sleeper:
        name, accelerator = "sleeper", "none"

        def predict(self, images):
            time.sleep(0.002 + 0.001 * len(images))  # 3 ms at batch 1, 6 ms at batch 4
            return np.zeros((len(images), 3), np.float32)

    cfg = bm.BenchmarkConfig(warmup=1, min_time_s=0.1, min_runs=10, batches=(1, 4))
    out = measure.measure_runtime(Sleeper(), np.zeros((1, 8, 8, 3), np.uint8), cfg)
    assert out["latency_runs"] >= 10 and out["latency_runs"] * out["latency_mean_ms"] >= 100
    # sleep never returns early (a loaded host only adds time, so no upper bound is asserted here:
    # exact arithmetic is checked on the fake clock above)
    assert out["latency_p50_ms"] >= 2.9
    assert out["latency_p50_ms"] <= out["latency_p90_ms"] <= out["latency_p99_ms"]
    assert 0 < out["throughput_b4_ips"] <= 4 / 0.006


def test_config_fails_early_with_the_fix():
    with pytest.raises(SkinscanError, match="did you mean 'gpu'"):
        bm.BenchmarkConfig(device="gpus")
    with pytest.raises(SkinscanError, match="--threads"):
        bm.BenchmarkConfig(threads=(0,))


# --- the floor and MAC counts ---------------------------------------------------------------
def test_floor_is_a_real_positive_measurement():
    f = hostinfo.measure_floor(threads=1, n=256, min_time_s=0.02)
    assert f["fp32_gflops"] > 0.05 and f["u8s8_gops"] > 0.05 and f["int8_gops"] >= f["u8s8_gops"]
    assert f["fp32_runs"] >= 3 and f["fp32_best_ms"] > 0
    # best time x GOP/s recovers the matrix's 2 n^3 operations: the number is derived from a timing
    assert f["fp32_gflops"] * 1e9 * f["fp32_best_ms"] / 1e3 == pytest.approx(2 * 256**3, rel=0.01)
    # the floor is 2 ops per MAC at the peak of the precision's own kernels: int8 models use the int8 peak
    assert hostinfo.floor_ms(5e9, "int8", f) == pytest.approx(2 * 5e9 / (f["int8_gops"] * 1e9) * 1e3)
    assert hostinfo.floor_ms(5e9, "dynamic", f) == hostinfo.floor_ms(5e9, "int8", f)
    assert hostinfo.floor_ms(5e9, "fp16", f) == pytest.approx(2 * 5e9 / (f["fp32_gflops"] * 1e9) * 1e3)
    assert hostinfo.floor_ms(5e9, "fp32", f, batch=4) == pytest.approx(4 * hostinfo.floor_ms(5e9, "fp32", f))
    assert hostinfo.floor_ms(None, "fp32", f) is None and hostinfo.floor_ms(5e9, "fp32", None) is None


def _onnx_model(nodes, inputs, outputs, inits):
    from onnx import helper, numpy_helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("case, expected", [
    # 3x3 conv, 3 -> 8 channels, 32x32 -> 30x30: 30*30*8 * 3*3*3
    ("conv", 30 * 30 * 8 * 27),
    # grouped (depthwise) 3x3 conv on 8 channels, pad 1: 32*32*8 * 1*3*3
    ("depthwise", 32 * 32 * 8 * 9),
    # MatMul [N,64] x [64,10] and Gemm with transB: 64*10 each
    ("matmul+gemm", 2 * 64 * 10),
])
def test_count_macs_onnx_table(case, expected):
    from onnx import TensorProto, helper

    f32 = np.float32
    if case == "conv":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3])]
        ins, inits = [("x", [None, 3, 32, 32])], {"w": np.zeros((8, 3, 3, 3), f32)}
    elif case == "depthwise":
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], group=8, pads=[1, 1, 1, 1])]
        ins, inits = [("x", [None, 8, 32, 32])], {"w": np.zeros((8, 1, 3, 3), f32)}
    else:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
                 helper.make_node("Gemm", ["x", "w2"], ["y"], transB=1)]
        ins, inits = [("x", [None, 64])], {"w": np.zeros((64, 10), f32), "w2": np.zeros((10, 64), f32)}
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", *s[1:]]) for n, s in ins]
    model = _onnx_model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    got = hostinfo.count_macs_onnx(model)
    assert got["macs"] == expected and got["unknown"] == 0
    assert hostinfo.count_macs_onnx(model, batch=4)["macs"] == 4 * expected


def test_host_info_names_the_cpu_and_versions():
    info = hostinfo.host_info()
    assert info["logical_cores"] >= 1 and "onnxruntime" in info["versions"]
    assert set(info["cpu_flags"]) and all(isinstance(v, bool) for v in info["cpu_flags"].values())
    line = hostinfo.host_line(info)
    assert info["cpu_model"] in line and "onnxruntime" in line


# --- a tiny real run: Keras, TFLite fp32/int8, ONNX fp32, one tampered export -----------------
def _tiny_model():
    from skinscan_edge.core.tf import keras

    k = keras()
    return k.Sequential([
        k.layers.Input((IMG, IMG, 3), name="image"), k.layers.Rescaling(1 / 255.0),
        k.layers.Conv2D(8, 3, activation="relu"), k.layers.DepthwiseConv2D(3),
        k.layers.GlobalAveragePooling2D(), k.layers.Dense(len(LABELS), activation="softmax"),
    ])


def _make_exports(model, out: Path) -> list[dict]:
    import tf2onnx

    from skinscan_edge.core.tf import tf
    from skinscan_edge.core.files import sha256_file

    tfm = tf()
    spec = [tfm.TensorSpec([None, IMG, IMG, 3], tfm.float32, name="image")]
    fn = tfm.function(lambda image: model(image, training=False), input_signature=spec)
    concrete = fn.get_concrete_function()
    files = {}
    conv = tfm.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    files["tflite-fp32"] = ("model_fp32.tflite", "tflite", "fp32", conv.convert())
    conv = tfm.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    conv.optimizations = [tfm.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.uniform(0, 255, (1, IMG, IMG, 3)).astype(np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tfm.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tfm.uint8
    files["tflite-int8"] = ("model_int8.tflite", "tflite", "int8", conv.convert())
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    files["onnx-fp32"] = ("model_fp32.onnx", "onnx", "fp32", proto.SerializeToString())
    files["onnx-tampered"] = ("model_tampered.onnx", "onnx", "fp32", proto.SerializeToString())
    entries = []
    for name, (file, fmt, precision, blob) in files.items():
        (out / file).write_bytes(blob)
        entries.append({"name": name, "file": file, "format": fmt, "precision": precision,
                        "size_bytes": len(blob), "sha256": sha256_file(out / file)})
    (out / "model_tampered.onnx").write_bytes(blob + b"\0")  # now it no longer matches its SHA-256
    return entries


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A complete run directory at 32 px with a 3-class model and four exports."""
    from PIL import Image

    from skinscan_edge.core.rundir import RunDir
    from skinscan_edge.core.files import write_json

    root = tmp_path_factory.mktemp("bench") / "run"
    data = root.parent / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    test = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(data / f"{i}.png")
        test.append([f"{i}.png", i % 3])
    run = RunDir(root)
    root.mkdir()
    write_json(run.config_path, {"train": {"img_size": IMG}})
    run.labels_path.write_text("\n".join(LABELS) + "\n")
    write_json(run.split_path, {"root": str(data), "splits": {"train": [], "val": [], "test": test}})
    run.set_status("complete")
    model = _tiny_model()
    model.save(run.model_path)
    run.exports.mkdir()
    write_json(run.manifest_path, {"exports": _make_exports(model, run.exports), "failures": []})
    write_json(run.evaluate_path, _evaluation([{"name": "keras", "accuracy": 0.5}, {"name": "tflite-int8", "accuracy": 0.25}]))
    return run


@pytest.fixture
def small_floor(monkeypatch):
    """The real floor measurement, on 256^3 matrices so the test stays fast."""
    monkeypatch.setattr(bm, "measure_floor", functools.partial(hostinfo.measure_floor, n=256, min_time_s=0.02))
    monkeypatch.setattr(bm, "WORKER_FLOOR", {"n": 256, "min_time_s": 0.02})


FAST = dict(threads=(1,), batches=(1, 2), warmup=1, min_time_s=0.05, min_runs=3, min_batch_runs=2, images=4)


def test_every_row_is_filled_or_says_why(tiny_run, small_floor):
    results = bm.run_benchmark(tiny_run.root, bm.BenchmarkConfig(device="all", **FAST))
    rows = {(r["model"], r["device"]): r for r in results["rows"]}
    assert set(rows) == {(m, d) for m in ("keras", "tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-tampered")
                         for d in ("cpu", "gpu")}
    for key, r in rows.items():
        if "skipped" in r or "error" in r:
            assert (r.get("skipped") or r.get("error")).strip(), key
            continue
        for metric in (*measure.ROW_METRICS, "throughput_b1_ips", "throughput_b2_ips", "floor_ms", "x_floor"):
            assert isinstance(r[metric], float) and r[metric] > 0, (key, metric)
        assert r["x_floor"] == pytest.approx(r["latency_p50_ms"] / r["floor_ms"])
        assert r["floor_fp32_gflops"] > 0  # re-measured in the model's own process
        assert (r["floor_int8_gops"] or 0) > 0 if r["precision"] == "int8" else r.get("floor_int8_gops") is None
        assert r["peak_rss_mb"] >= r["base_rss_mb"] > 0
    measured = [k for k, r in rows.items() if "skipped" not in r and "error" not in r]
    assert sorted(measured) == [("keras", "cpu"), ("onnx-fp32", "cpu"), ("tflite-fp32", "cpu"), ("tflite-int8", "cpu")]
    assert "SHA-256" in rows["onnx-tampered", "cpu"]["error"]
    # the accelerated kernels: XNNPACK took every conv of the TFLite files; ORT ran float convs on MLAS
    assert rows["tflite-fp32", "cpu"]["accelerated"] is True
    assert rows["tflite-int8", "cpu"]["accelerated"] is True and "XNNPACK" in rows["tflite-int8", "cpu"]["accelerator_detail"]
    assert rows["onnx-fp32", "cpu"]["accelerated"] is True
    # MACs: the Keras graph and the ONNX graph agree on 30*30*8*27 + 28*28*8*9 + 8*3
    assert rows["keras", "cpu"]["gmacs"] * 1e9 == pytest.approx(30 * 30 * 8 * 27 + 28 * 28 * 8 * 9 + 24)
    assert rows["onnx-fp32", "cpu"]["gmacs"] == pytest.approx(rows["keras", "cpu"]["gmacs"])
    # accuracy joined from evaluate.json (test_read_evaluation_is_defensive: only from a whole, current one)
    assert rows["keras", "cpu"]["accuracy"] == 0.5 and rows["tflite-int8", "cpu"]["accuracy"] == 0.25
    assert rows["tflite-fp32", "cpu"]["accuracy"] is None  # not evaluated
    assert results["floor"]["1"]["fp32_gflops"] > 0 and results["floor"]["1"]["int8_gops"] > 0
    reports = tiny_run.reports
    assert json.loads((reports / "benchmark.json").read_text())["rows"] == results["rows"]
    md = (reports / "benchmark.md").read_text()
    assert results["host_line"] in md and "skipped: no CUDA device" in md and "Android" in md
    assert (reports / "benchmark.csv").read_text().count("\n") == len(results["rows"]) + 1
    assert (reports / "benchmark.png").stat().st_size > 1000


def test_gpu_rows_skip_cleanly_without_cuda(tiny_run, small_floor, monkeypatch):
    if bm.cuda_unavailable_reason() is None:
        monkeypatch.setenv("SKINSCAN_FORCE_NO_CUDA", "1")
    cfg = bm.BenchmarkConfig(device="gpu", models=("keras", "onnx-fp32", "tflite-int8"), **FAST)
    results = bm.run_benchmark(tiny_run.root, cfg)
    reasons = {r["model"]: r["skipped"] for r in results["rows"]}
    assert reasons["keras"].startswith("no CUDA device") and reasons["onnx-fp32"].startswith("no CUDA device")
    assert "Android" in reasons["tflite-int8"]
    assert not any("latency_p50_ms" in r for r in results["rows"])  # never a GPU number not measured


def test_gpu_worker_skips_when_onnxruntime_lacks_cuda(tiny_run):
    """Past the cheap driver check, the worker itself must skip, not fall back to CPU numbers."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this host has a CUDA onnxruntime")
    entry = {e["name"]: e for e in json.loads(tiny_run.manifest_path.read_text())["exports"]}["onnx-fp32"]
    spec = {"run": str(tiny_run.root), "entry": entry, "device": "gpu", "threads": 1,
            "config": {**FAST, "threads": [1], "batches": [1, 2]}}
    out = bench_worker.run_worker(spec)
    assert out == {"skipped": out["skipped"]} and "CUDAExecutionProvider" in out["skipped"]


def _evaluation(models: list) -> dict:
    """A whole evaluate.json of the current schema (runfiles.EvaluateReport) around ``models``."""
    return {"schema_version": 2, "run": "r", "split": "test", "created": "now", "labels": ["a"], "num_images": 1,
            "img_size": 75, "gate": {"passed": True, "failures": [], "max_accuracy_drop_pp": 1, "max_recall_drop_pp": 2},
            "models": [{"format": "tflite", "precision": "fp32", "delta_accuracy_pp": 0.0, "top1_agreement": 1.0, **m}
                       for m in models]}


@pytest.mark.parametrize("content, expected", [
    (_evaluation([{"name": "keras", "accuracy": 0.9}, {"name": "onnx-int8", "accuracy": 0.88}]),
     {"keras": 0.9, "onnx-int8": 0.88}),
    ({**_evaluation([{"name": "keras", "accuracy": 0.9}]), "schema_version": 1}, {}),  # an older schema: not misread
    ({"models": [{"name": "keras", "accuracy": 0.9}]}, {}),  # not a whole evaluate.json
    ({"models": {"keras": {"accuracy": 0.7}}}, {}),  # a dict is not evaluate.json's shape
    ({"models": [{"accuracy": 0.1}, "junk", {"name": "x"}]}, {}),
    ([1, 2, 3], {}),
    ("not json", {}),
])
def test_read_evaluation_is_defensive(tmp_path, content, expected):
    path = tmp_path / "evaluate.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert bm.read_evaluation(path)["accuracy"] == expected
    assert bm.read_evaluation(tmp_path / "missing.json")["accuracy"] == {}


CLI_CASES = [
    ("one model", "--model onnx-fp32 --threads 1 --batch 1,2 --min-time 0.05 --warmup 1 --images 4", 0, "benchmark.json"),
    ("unknown model", "--model onnx-fp33", 2, "did you mean 'onnx-fp32'"),
    ("tampered file: its row fails, the command exits 1", "--model onnx-tampered --threads 1 --batch 1 --min-time 0 --no-floor",
     1, "SHA-256"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_benchmark(tiny_run, small_floor, case):
    from typer.testing import CliRunner

    from skinscan_edge.cli import app

    _, args, code, text = case
    res = CliRunner().invoke(app, ["benchmark", str(tiny_run.root), *args.split()])
    assert res.exit_code == code and text in res.output, res.output


def test_worker_peak_rss_is_its_own_not_its_parents():
    """ru_maxrss survives fork+exec on Linux: a worker spawned by a big parent must not report it."""
    import subprocess
    import sys

    import numpy as np

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB resident in this (the parent) process
    code = "from skinscan_edge.benchmark.worker import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 timeout=scaled_timeout(120), check=True).stdout)
    assert ballast.sum() > 0 and child < 300, f"child reported {child:.0f} MB"

"""benchmarks/gpu_xla.py: the trained model lowered to XLA (tf2jax + jax.export) must compute what
Keras computes, on the CPU here, before its GPU timings mean anything.

A tiny run of its own (InceptionV3 at 75 px, a head of 8 units, BatchNorm statistics drawn at
random so that the probabilities are far from uniform), saved and loaded by the project's code,
instead of the session's trained run: that one takes minutes to train, and the lowering does not
depend on how the weights were obtained.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tf2jax", reason="the [test] extra's jax CPU build and tf2jax are not installed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_xla  # noqa: E402

IMG = 75


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from PIL import Image

    from skinscan_edge.training.model import build_model
    from skinscan_edge.core.rundir import RunDir
    from skinscan_edge.core.files import write_json

    root = tmp_path_factory.mktemp("xla") / "run"
    data = root.parent / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    test = []
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (90, 90, 3), dtype=np.uint8)).save(data / f"{i}.png")
        test.append([f"{i}.png", i % 3])
    run = RunDir(root)
    root.mkdir()
    write_json(run.config_path, {"train": {"img_size": IMG}})
    run.labels_path.write_text("a\nb\nc\n")
    write_json(run.split_path, {"root": str(data), "splits": {"train": [], "val": [], "test": test}})
    run.set_status("complete")
    model = build_model(3, IMG, weights="none", dense_units=8)
    for layer in model.layers:  # trained-looking BatchNorm statistics, so that inference mode matters
        if layer.__class__.__name__ == "BatchNormalization":
            beta, mean, var = layer.get_weights()  # InceptionV3's BatchNorm has no scale
            layer.set_weights([rng.normal(0, 0.2, beta.shape).astype("float32"),
                               rng.normal(0, 0.5, mean.shape).astype("float32"),
                               rng.uniform(0.5, 2.0, var.shape).astype("float32")])
    model.save(run.model_path)
    return run


def test_the_xla_bundle_computes_what_keras_computes(tiny_run, tmp_path):
    """export -> the bundle the GPU machine gets -> loaded and run as it is there (on the CPU)."""
    from skinscan_edge.benchmark.worker import sample_images
    from skinscan_edge.runtimes.interface import KerasRuntime

    bundle = tmp_path / "bundle"
    manifest = gpu_xla.export_bundle(tiny_run.root, bundle, ["run"], images=6, variants=("fp32",), batches=(1, 8))
    assert json.loads((bundle / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    entry = manifest["sizes"][str(IMG)]
    # The float32 artifact with float32 weights against Keras (export refuses beyond 1e-4).
    assert entry["parity_max_abs_vs_keras"] <= gpu_xla.PARITY_ATOL

    images = sample_images(tiny_run, 6, 0)
    keras = KerasRuntime(tiny_run.model_path).predict(images)
    assert np.ptp(keras, axis=1).min() > 0.05, "near-uniform probabilities would make the check vacuous"
    rt = gpu_xla.XlaRuntime(bundle, manifest, IMG, "fp32")
    got = np.concatenate([rt.predict(images[:1]), rt.predict(gpu_xla._tile(images[1:], 8))[:5]])
    # What travels: float16 weights, cast back on load. The reference made here uses the same ones.
    np.testing.assert_allclose(got, np.load(bundle / f"reference_{IMG}.npy"), atol=gpu_xla.PARITY_ATOL, rtol=0)
    np.testing.assert_array_equal(got.argmax(1), keras.argmax(1))
    assert {p.name for p in bundle.iterdir()} == {
        "manifest.json", gpu_xla.WEIGHTS_FILE, f"sample_{IMG}.npy", f"reference_{IMG}.npy",
        f"xla_{IMG}px_fp32_b1.bin", f"xla_{IMG}px_fp32_b8.bin"}


def test_recorded_gpu_rows_join_the_runs_benchmark(tiny_run, tmp_path):
    """`record` appends the GPU rows to RUN/reports/benchmark.json (a real one: the demo run's
    committed copy), replaces them on a second record, and re-renders benchmark.md from them."""
    from skinscan_edge.benchmark.harness import write_results
    from skinscan_edge.core.errors import SkinscanError

    results = tmp_path / "gpu_xla_results.json"
    with pytest.raises(SkinscanError, match="benchmark.json is missing; write it again"):
        gpu_xla.record(tiny_run.root, results)
    demo = json.loads((Path(__file__).resolve().parents[1] / "docs" / "demo-run" / "benchmark.json").read_text())
    demo.pop("schema", None)  # the committed copy may predate schema_version; the writer stamps it
    write_results(demo, tiny_run.reports)
    before = json.loads((tiny_run.reports / "benchmark.json").read_text())["rows"]
    row = {"model": "xla-fp32-299px", "format": "xla", "precision": "fp32", "device": "gpu", "threads": None,
           "img_size": 299, "latency_p50_ms": 2.5, "throughput_b1_ips": 400.0, "throughput_b8_ips": 1500.0}
    results.write_text(json.dumps({"jax": "0.11.2", "device_kind": "NVIDIA H200", "rows": [row]}))
    for _ in range(2):
        gpu_xla.record(tiny_run.root, results)
    after = json.loads((tiny_run.reports / "benchmark.json").read_text())
    assert after["rows"][:len(before)] == before
    assert [r["model"] for r in after["rows"][len(before):]] == ["xla-fp32-299px"]
    assert after["rows"][-1]["runtime"] == "XLA via JAX on NVIDIA H200"
    assert sum(n.startswith("xla rows:") for n in after["notes"]) == 1
    md = (tiny_run.reports / "benchmark.md").read_text()
    assert "| xla-fp32-299px | fp32 | gpu | – |" in md and "| 2.50 |" in md

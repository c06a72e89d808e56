"""The GPU row, measured: a run's trained Keras model lowered to XLA here, timed where JAX sees a GPU.

The lent GPU machine has JAX (with its CUDA plugin) but no TensorFlow, and one call carries at
most 64 MiB. So the model goes there as data, not as a framework:

1. ``export RUN BUNDLE`` (here; TensorFlow + jax's CPU build): the run's model.keras, loaded by
   the project's own loader (``KerasRuntime``), is converted op by op to JAX by ``tf2jax`` and
   serialized with ``jax.export`` for the platforms cpu and cuda (StableHLO: the same graph,
   compiled there by the same XLA, on the same cuDNN convolutions TensorFlow's GPU path uses).
   One artifact per (input size, precision, batch); the weights go beside them in ONE file, in
   **float16**, because float32 InceptionV3 weights (about 90 MB) do not fit a 64 MiB call; they
   are cast back to float32 (bfloat16 for the bf16 variant) on load. Before writing, the float32
   artifact's outputs are checked against Keras' on the run's test sample (``check_parity``).
2. ``time BUNDLE OUT`` (on the GPU machine; jax only): compiles each artifact and times it with
   the benchmark's own harness, ``skinscan_edge.benchmark.measure.measure_runtime`` (first
   inference, warm-up, batch-1 p50/p90/p99, images/s per batch), and checks each variant's
   outputs against the CPU reference made in step 1.
3. ``record RUN RESULTS`` (here): appends the GPU rows to ``RUN/reports/benchmark.json`` and
   re-renders benchmark.md/.csv/.png with the benchmark's own writer.

Precisions: ``fp32`` is exported under ``jax.default_matmul_precision("highest")`` (true float32
convolutions); ``tf32`` keeps XLA's DEFAULT precision, which XLA runs as TF32 on Ampere and newer
(what TensorFlow does by default on such a card); ``bf16`` casts weights and activations to
bfloat16. The precision is baked into the serialized module, so it is chosen here, not there.

    python benchmarks/gpu_xla.py export runs/demo .gpu/bundle --sizes run,299
    PYTHONPATH=. python3 benchmarks/gpu_xla.py time .gpu/bundle OUT   # where JAX sees a GPU
    python benchmarks/gpu_xla.py record runs/demo OUT/gpu_xla_results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

#: Export-time matmul precision per variant (None: XLA's DEFAULT), and the dtype weights take on load.
VARIANTS = {"fp32": ("highest", "float32"), "tf32": (None, "float32"), "bf16": ("highest", "bfloat16")}
BATCHES = (1, 8, 32)
#: Parity of the float32 artifact with Keras on the CPU (probabilities, absolute).
PARITY_ATOL = 1e-4
WEIGHTS_FILE = "weights_fp16.npz"


# --- here: lowering (TensorFlow imported lazily: the GPU side has none) -------------------------
def load_model(model_path: Path, size: int | None = None):
    """The run's model by the project's loader; with ``size``, the same layers and weights
    rebuilt for a ``size`` px input (InceptionV3 + global average pooling does not depend on it)."""
    from skinscan_edge.core.tf import keras
    from skinscan_edge.runtimes.interface import KerasRuntime

    model = KerasRuntime(Path(model_path)).model
    if size is None or size == model.input_shape[1]:
        return model
    config = model.get_config()
    config["layers"][0]["config"]["batch_input_shape"] = (None, size, size, 3)
    rebuilt = keras().Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def lower(model, bf16: bool = False):
    """(jax function (params, x) -> probabilities, float32 params by variable name) via tf2jax.

    ``bf16``: the graph's float32 constants (the normalization's scale and offset) become
    bfloat16 too, so that bfloat16 weights and activations are not promoted back to float32."""
    import tf2jax
    from absl import logging as absl_logging

    from skinscan_edge.core.tf import tf

    t = tf()
    # tf2jax logs every constant it converts to bfloat16, values included: keep the terminal quiet.
    absl_logging.set_verbosity(absl_logging.ERROR)
    spec = t.TensorSpec([None, *model.input_shape[1:]], t.float32)
    # The same call as KerasRuntime's tf.function (inference mode).
    with tf2jax.override_config("force_const_float32_to_bfloat16", bf16), _static_avg_pool_counts():
        fn, params = tf2jax.convert(t.function(lambda x: model(x, training=False)), spec)
    return (lambda p, x: fn(p, x)[0]), {k: np.asarray(v, np.float32) for k, v in params.items()}


@contextlib.contextmanager
def _static_avg_pool_counts():
    """tf2jax's AvgPool with SAME padding divides by a reduce_window over ``ones_like(x)``, a
    constant of the activation's full shape that XLA then folds at compile time: minutes for
    InceptionV3 at batch 32 (seen on the CPU here, "Constant folding an instruction is taking >
    1m"). The window counts depend on the spatial shape alone, so they are computed here, exactly,
    as a (1, H, W, 1) constant; the arithmetic (sum, then divide by the count) is unchanged.
    tf2jax has no public hook for one op, hence the swap in its parser table."""
    from tf2jax._src import ops

    original = ops._jax_ops["AvgPool"]

    def parse(proto):
        fn = original(proto)  # validates the attributes
        ksize, strides = tuple(proto.attr["ksize"].list.i), tuple(proto.attr["strides"].list.i)
        if proto.attr["padding"].s != b"SAME" or proto.attr["data_format"].s != b"NHWC":
            return fn

        def _func(x):
            import jax

            pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, ksize, strides, "SAME")
            counts = np.ones((1, *pooled.shape[1:3], 1), np.float32)
            for axis in (1, 2):
                counts = counts * _same_counts(x.shape[axis], ksize[axis], strides[axis]).reshape(
                    [-1 if a == axis else 1 for a in range(4)])
            return pooled / counts.astype(x.dtype)

        return _func

    ops._jax_ops["AvgPool"] = parse
    try:
        yield
    finally:
        ops._jax_ops["AvgPool"] = original


def _same_counts(size: int, k: int, stride: int) -> np.ndarray:
    """How many inputs each output of a SAME-padded window of ``k`` covers along one axis."""
    out = -(-size // stride)
    before = max((out - 1) * stride + k - size, 0) // 2
    start = np.arange(out) * stride - before
    return (np.minimum(start + k, size) - np.maximum(start, 0)).astype(np.float32)


def export_variant(fn, params: dict, size: int, batch: int, variant: str) -> bytes:
    """Serialized jax.export artifact for platforms cpu and cuda: (params, float32 NHWC) -> float32."""
    import jax
    from jax import export

    precision, dtype = VARIANTS[variant]
    jdtype = jax.numpy.dtype(dtype)

    def call(p, x):
        if jdtype != np.float32:  # bf16: activations follow the weights; probabilities back in float32
            return fn(p, x.astype(jdtype)).astype(np.float32)
        return fn(p, x)

    avals = ({k: jax.ShapeDtypeStruct(v.shape, jdtype) for k, v in params.items()},
             jax.ShapeDtypeStruct((batch, size, size, 3), np.float32))
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
        exp = export.export(jax.jit(call), platforms=("cpu", "cuda"))(*avals)
    # The precision is baked into each convolution; make sure the variant is what its name says.
    if ("precision HIGHEST" in exp.mlir_module()) != (precision == "highest"):
        raise RuntimeError(f"{variant}: the exported convolutions do not carry the expected precision")
    return bytes(exp.serialize())


def check_parity(model_path: Path, images: np.ndarray, batch: int = 8) -> float:
    """Max |artifact - Keras| over ``images`` (float32 artifact, float32 weights, on the CPU, after
    a serialize/deserialize round trip as on the GPU machine)."""
    from jax import export

    from skinscan_edge.runtimes.interface import KerasRuntime

    rt = KerasRuntime(Path(model_path))
    fn, params = lower(rt.model)
    exp = export.deserialize(bytearray(export_variant(fn, params, images.shape[1], batch, "fp32")))
    x = _tile(images, batch).astype(np.float32)
    return float(np.abs(np.asarray(exp.call(params, x)) - rt.predict(x)).max())


def _tile(images: np.ndarray, n: int) -> np.ndarray:
    return images[np.arange(n) % len(images)]


def export_bundle(run_dir: Path, bundle: Path, sizes: list[str], images: int = 32, seed: int = 0,
                  variants=tuple(VARIANTS), batches=BATCHES) -> dict:
    """Write the bundle the GPU side reads (see the module docstring); returns its manifest."""
    import jax
    from jax import export

    from skinscan_edge.benchmark.worker import sample_images
    from skinscan_edge.data.imageio import load_batch
    from skinscan_edge.core.rundir import RunDir
    from skinscan_edge.core.files import sha256_file, write_json

    run = RunDir.open(run_dir)
    bundle.mkdir(parents=True, exist_ok=True)
    items = run.split_items("test")
    idx = sorted(np.random.default_rng(seed).permutation(len(items))[:images])  # bench_worker's sample
    manifest = {"run": str(run.root), "model_sha256": sha256_file(run.model_path), "run_img_size": run.img_size(),
                "weights": WEIGHTS_FILE, "weights_dtype": "float16 (cast back on load: 64 MiB per call)",
                "jax_exported_with": jax.__version__, "batches": list(batches), "variants": {}, "sizes": {}}
    names = None
    for s in sizes:
        size = run.img_size() if s == "run" else int(s)
        model = load_model(run.model_path, size)
        fn, params = lower(model)
        if names is None:
            names = sorted(params)
            half = {k: params[k].astype(np.float16) for k in names}
            np.savez(bundle / WEIGHTS_FILE, **half)
        elif sorted(params) != names:
            raise RuntimeError(f"the {size} px model's variables differ from the first size's")
        sample = sample_images(run, images, seed) if size == run.img_size() else \
            load_batch([items[i][0] for i in idx], size)
        np.save(bundle / f"sample_{size}.npy", sample)
        # The fp32 artifact with float32 weights must equal Keras; then the reference the GPU is
        # checked against: the same artifact with the float16 weights that travel.
        keras_probs = load_keras_probs(model, sample)
        exp = export.deserialize(bytearray(export_variant(fn, params, size, len(sample), "fp32")))
        parity = float(np.abs(np.asarray(exp.call(params, sample.astype(np.float32))) - keras_probs).max())
        if parity > PARITY_ATOL:
            raise RuntimeError(f"{size} px: the XLA artifact differs from Keras by {parity:.2e} (> {PARITY_ATOL})")
        back = {k: v.astype(np.float32) for k, v in half.items()}
        np.save(bundle / f"reference_{size}.npy", np.asarray(exp.call(back, sample.astype(np.float32))))
        entry = {"parity_max_abs_vs_keras": parity, "artifacts": {}}
        for variant in variants:
            vfn = lower(model, bf16=True)[0] if VARIANTS[variant][1] == "bfloat16" else fn
            for b in batches:
                name = f"xla_{size}px_{variant}_b{b}.bin"
                (bundle / name).write_bytes(export_variant(vfn, params, size, b, variant))
                entry["artifacts"][f"{variant}/{b}"] = name
        manifest["sizes"][str(size)] = entry
    manifest["variants"] = {v: {"export_precision": VARIANTS[v][0] or "default", "weights_on_load": VARIANTS[v][1]}
                            for v in variants}
    write_json(bundle / "manifest.json", manifest)
    return manifest


def load_keras_probs(model, images: np.ndarray) -> np.ndarray:
    from skinscan_edge.runtimes.interface import KerasRuntime

    return KerasRuntime(None, model=model).predict(images)


# --- there: timing (jax + numpy + the project's harness; no TensorFlow) --------------------------
class XlaRuntime:
    """A bundle's artifacts for one (size, variant), duck-typed as a skinscan-edge Runtime
    (``predict``: uint8/float NHWC in, float32 probabilities out, host to host, like the others)."""

    def __init__(self, bundle: Path, manifest: dict, size: int, variant: str):
        import jax
        from jax import export

        dtype = jax.numpy.dtype(VARIANTS[variant][1])
        with np.load(bundle / manifest["weights"]) as w:
            self.params = jax.device_put({k: w[k].astype(dtype) for k in w.files})
        arts = manifest["sizes"][str(size)]["artifacts"]
        self._calls, self.size_bytes = {}, (bundle / manifest["weights"]).stat().st_size
        for b in manifest["batches"]:
            path = bundle / arts[f"{variant}/{b}"]
            self.size_bytes += path.stat().st_size
            exp = export.deserialize(bytearray(path.read_bytes()))
            x = jax.ShapeDtypeStruct((b, size, size, 3), np.float32)
            self._calls[b] = jax.jit(exp.call).lower(self.params, x).compile()
        dev = jax.devices()[0]
        self.accelerator = f"XLA via JAX {jax.__version__} on {dev.device_kind} ({dev.platform})"

    def predict(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._calls[len(images)](self.params, np.asarray(images, np.float32)))

    def resident(self, images: np.ndarray):
        """A call on inputs already on the device, synchronised (what the PyTorch proxy timed)."""
        import jax

        x = jax.device_put(np.asarray(images, np.float32))
        call = self._calls[len(images)]
        return lambda: call(self.params, x).block_until_ready()


class _Skip(Exception):
    pass


def time_bundle(bundle: Path, out: Path, min_time_s: float = 1.0, budget_s: float = 300.0) -> dict:
    """Time every (size, variant) of the bundle; write and return OUT/gpu_xla_results.json."""
    import jax

    from skinscan_edge.benchmark.measure import batch_of, measure_runtime, time_calls
    from skinscan_edge.core.config_stages import BenchmarkConfig

    manifest = json.loads((bundle / "manifest.json").read_text())
    cfg = BenchmarkConfig(device="gpu", batches=tuple(manifest["batches"]), min_time_s=min_time_s)
    dev = jax.devices()[0]
    device = "gpu" if dev.platform in ("gpu", "cuda") else dev.platform
    result = {"jax": jax.__version__, "device_kind": dev.device_kind, "platform": dev.platform,
              "config": {"batches": list(cfg.batches), "warmup": cfg.warmup, "min_time_s": cfg.min_time_s,
                         "min_runs": cfg.min_runs, "min_batch_runs": cfg.min_batch_runs},
              "manifest": manifest, "rows": []}
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    sizes = sorted(manifest["sizes"], key=int, reverse=True)  # the 299 px figure first
    for size in sizes:
        images = np.load(bundle / f"sample_{size}.npy")
        reference = np.load(bundle / f"reference_{size}.npy")
        for variant in manifest["variants"]:
            row = {"model": f"xla-{variant}-{size}px", "format": "xla", "precision": variant, "device": device,
                   "threads": None, "img_size": int(size), "file": f"xla_{size}px_{variant}_b*.bin"}
            try:
                if time.perf_counter() - t_start > budget_s:
                    raise _Skip(f"not timed: the device call's time budget ({budget_s:.0f} s) was spent")
                t0 = time.perf_counter()
                rt = XlaRuntime(bundle, manifest, int(size), variant)
                row["load_ms"] = (time.perf_counter() - t0) * 1e3  # deserialize + compile every batch
                row["size_mb"] = rt.size_bytes / 1e6
                row.update(measure_runtime(rt, images, cfg))
                for b in cfg.batches:  # device-resident inputs: the model alone, no host copies
                    times = time_calls(rt.resident(batch_of(images, b)), cfg.min_time_s, cfg.min_batch_runs)
                    row[f"device_resident_throughput_b{b}_ips"] = b * len(times) / sum(times)
                got = np.concatenate([rt.predict(batch_of(images[i:], 8)) for i in range(0, len(images), 8)])
                row["max_abs_diff_vs_cpu_fp32"] = float(np.abs(got[:len(images)] - reference).max())
                row["top1_agreement_vs_cpu_fp32"] = float((got[:len(images)].argmax(1) == reference.argmax(1)).mean())
                row.update({"accelerator": rt.accelerator, "accelerated": True,
                            "accelerator_detail": rt.accelerator + f", {VARIANTS[variant][0] or 'DEFAULT'} precision"})
            except _Skip as e:
                row["skipped"] = str(e)
            except Exception as e:  # recorded like the benchmark's workers do, and the sweep goes on
                row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
            result["rows"].append(row)
            # After every row: a call stopped at its time limit still brings back what it measured.
            (out / "gpu_xla_results.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
            print(json.dumps({k: row.get(k) for k in ("model", "load_ms", "latency_p50_ms", "throughput_b32_ips",
                                                     "device_resident_throughput_b32_ips", "max_abs_diff_vs_cpu_fp32",
                                                     "error")}), flush=True)
    return result


# --- here again: the rows into the run's benchmark.json -----------------------------------------
def record(run_dir: Path, results_path: Path) -> Path:
    """Append the GPU rows to RUN/reports/benchmark.json (replacing earlier XLA rows) and re-render."""
    from skinscan_edge.core import runfiles
    from skinscan_edge.benchmark.harness import write_results
    from skinscan_edge.core.rundir import RunDir

    run = RunDir.open(run_dir)
    bench_path = run.root / runfiles.BenchmarkReport.FILE
    # A missing or older benchmark.json stops here with one line that says how to write it again.
    bench = runfiles.load(runfiles.BenchmarkReport, bench_path).model_dump(mode="json", by_alias=True,
                                                                           exclude_unset=True)
    res = json.loads(Path(results_path).read_text())
    runtime = f"XLA via JAX on {res['device_kind']}"
    rows = [r for r in bench["rows"] if r.get("format") != "xla"]
    for r in res["rows"]:
        rows.append({**r, "runtime": runtime, "jax": res["jax"], "source": "benchmarks/gpu_xla.py"})
    bench["rows"] = rows
    note = (f"xla rows: {runtime} (benchmarks/gpu_xla.py): the trained model lowered by tf2jax + jax.export, "
            f"weights carried as float16 and cast back; times are host-to-host like every row, "
            f"device_resident_* keys leave the copies out")
    bench["notes"] = [n for n in bench.get("notes", []) if not n.startswith("xla rows:")] + [note]
    write_results(bench, run.reports)
    return bench_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="lower RUN's model to a bundle (here, with TensorFlow)")
    e.add_argument("run", type=Path)
    e.add_argument("bundle", type=Path)
    e.add_argument("--sizes", default="run", help="input sizes: 'run' (the run's own) and/or pixels, e.g. run,299")
    e.add_argument("--images", type=int, default=32)
    t = sub.add_parser("time", help="time a bundle where JAX sees a GPU")
    t.add_argument("bundle", type=Path)
    t.add_argument("out", type=Path)
    t.add_argument("--min-time", type=float, default=1.0)
    t.add_argument("--budget", type=float, default=300.0, help="seconds after which no new variant starts")
    r = sub.add_parser("record", help="append the GPU rows to RUN/reports/benchmark.json")
    r.add_argument("run", type=Path)
    r.add_argument("results", type=Path)
    a = ap.parse_args(argv)
    try:
        return _run(a)
    except Exception as e:  # bad input: one line, exit 2 (SkinscanError, a missing file, bad JSON)
        if not isinstance(e, (OSError, ValueError)) and type(e).__name__ != "SkinscanError":
            raise
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


def _run(a) -> int:
    if a.cmd == "export":
        m = export_bundle(a.run, a.bundle, a.sizes.split(","), images=a.images)
        print(json.dumps({s: e["parity_max_abs_vs_keras"] for s, e in m["sizes"].items()}))
    elif a.cmd == "time":
        time_bundle(a.bundle, a.out, a.min_time, a.budget)
    else:
        print(record(a.run, a.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

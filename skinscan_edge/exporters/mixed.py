"""Mixed int8 exports: int8 with named layers kept float (``export --int8 --keep-float``).

The library does the keeping: LiteRT's QuantizationDebugger re-quantizes the calibrated model
with ``denylisted_nodes`` (``quant_debug.TFLiteDebug.quantized``), onnxruntime's quantize_static
skips ``nodes_to_exclude``. No graph is edited here.

``--keep-float LAYER,...`` keeps those Keras layers float. ``--keep-float auto`` ranks the
layers by their own quantization error (``quant_debug``, on the calibration images), then keeps
the worst ``AUTO_STEP`` more in float per step and scores each file on the VALIDATION split
against Keras with the gate given to export (``ExportConfig.gate``: the evaluate gate's
options, so ``pipeline`` uses one set of limits for both). For ONNX, whose rows are
activations, a ranked layer comes with the layers that read its activation: quantize_static
puts a QDQ pair on any tensor a quantized node reads, so only then does the activation itself
stay float. The search stops at the first file that passes, or before the float layers would
exceed ``ExportConfig.keep_float_budget_pct`` of the model's MACs; each step (size, latency,
accuracy and recall deltas) is recorded in the manifest entry's ``keep_float``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from skinscan_edge.core.config_stages import EvaluateConfig
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.files import atomic_write_bytes
from skinscan_edge.core.metrics import check_gate, score_against_baseline
from skinscan_edge.data.imageio import load_batch
from skinscan_edge.exporters import onnx as onnx_export, quant_debug as qd, tflite
from skinscan_edge.exporters.converters import Context, Converter
from skinscan_edge.runtimes.interface import KerasRuntime, open_runtime

#: Layers added to the float set per ``auto`` step.
AUTO_STEP = 2
#: Quick in-process latency of each step: batch 1, after warm-up, median of this many runs.
TIMING_RUNS = 20


class MixedTFLite(Converter):
    """tflite-int8-mixed: LiteRT's denylisted_nodes (float input and output, int8 body)."""

    calibrated = True

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        dbg = qd.TFLiteDebug(ctx.model, ctx.calib, ctx.tmp / "mixed_tflite")
        rows = _named(ctx, dbg.layer_errors(ctx.calib))

        def build(layers: list[str], out: Path) -> list[str]:
            nodes = [r["layer"] for r in rows if r["keras_layer"] in set(layers)]
            atomic_write_bytes(out, dbg.quantized(nodes))
            return nodes

        info = search(ctx, "tflite", rows, build, path)
        return {**tflite.describe(path), "keep_float": info}, _notes(info, "LiteRT denylisted_nodes; float32 in/out")


class MixedOnnx(Converter):
    """onnx-int8-mixed: onnxruntime quantize_static with nodes_to_exclude (onnx-int8's recipe)."""

    calibrated = True

    def convert(self, ctx: Context, path: Path) -> tuple[dict, str]:
        import onnx
        from onnxruntime.quantization.shape_inference import quant_pre_process

        tmp = ctx.tmp / "mixed_onnx"
        tmp.mkdir(parents=True, exist_ok=True)
        fp32, prep = ctx.written("onnx-fp32"), tmp / "prep.onnx"
        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=False)
        graph = onnx.load(str(prep), load_external_data=False).graph
        rows = _named(ctx, qd.onnx_layer_errors(prep, ctx.written("onnx-int8"), ctx.calib, tmp))

        def build(layers: list[str], out: Path) -> list[str]:
            nodes = qd.onnx_nodes_of(graph, layers)
            onnx_export.quantize_int8(fp32, out, list(ctx.calib), ctx.onnx_target, nodes_to_exclude=nodes)
            return nodes

        info = search(ctx, "onnx", rows, build, path, readers=qd.onnx_readers(graph, rows, ctx.cache["known"], set(ctx.cache["macs"])))
        return {**onnx_export.describe(path), "keep_float": info}, _notes(info, "onnxruntime nodes_to_exclude; "
                                                                            + onnx_export.int8_notes(ctx.onnx_target))


def _named(ctx: Context, rows: list[dict]) -> list[dict]:
    """Rows with their Keras layer and its MACs (cached per export)."""
    if "macs" not in ctx.cache:
        ctx.cache["macs"] = qd.layer_macs(ctx.model)
        ctx.cache["known"] = {ly.name for ly in ctx.model.layers}
    macs = ctx.cache["macs"]
    for r in rows:
        r["keras_layer"] = qd.keras_layer_of(";".join([*r.get("nodes", []), r["layer"]]), ctx.cache["known"], set(macs))
    return rows


def _notes(info: dict, how: str) -> str:
    verdict = "passes" if info["passed"] else "did NOT pass"
    return (f"int8 with {len(info['layers'])} Keras layer(s) in float ({info['float_macs_pct']:.1f}% of MACs; "
            f"{how}); {info['mode']}: {verdict} the gate on the {info['split']} split")


def plan(requested: list[str], ranked: list[str], macs: dict[str, int], budget_pct: float,
         readers: dict[str, list[str]] | None = None) -> list[list[str]]:
    """The float-layer sets to try: the requested layers, or for ``auto`` the worst ``AUTO_STEP``
    more per step (starting with none; each with its ``readers``, when given) while their MACs
    stay within ``budget_pct``."""
    if requested != ["auto"]:
        return [list(requested)]
    total = max(sum(macs.values()), 1)
    steps = []
    for k in range(0, len(ranked) + 1, AUTO_STEP):
        layers = list(dict.fromkeys(x for name in ranked[:k] for x in [name, *(readers or {}).get(name, [])]))
        if 100.0 * sum(macs.get(name, 0) for name in layers) / total > budget_pct:
            break
        if not steps or layers != steps[-1]:
            steps.append(layers)
    return steps


def search(ctx: Context, fmt: str, rows: list[dict], build, path: Path,
           readers: dict[str, list[str]] | None = None) -> dict:
    """Build and score each planned step; keep the first passing file (else the last built)."""
    cfg, macs = ctx.cfg, ctx.cache["macs"]
    known = {r["keras_layer"] for r in rows if r["keras_layer"]}
    unknown = [name for name in cfg.keep_float if name != "auto" and name not in known]
    if unknown:
        raise SkinscanError("--keep-float: " + did_you_mean(unknown[0], sorted(known), "quantized layer"))
    ranked = qd.worst_layers(rows, len(rows))
    steps_todo = plan(cfg.keep_float, ranked, macs, cfg.keep_float_budget_pct, readers)
    val, gate = _validation(ctx), cfg.gate
    total = max(sum(macs.values()), 1)
    steps, chosen = [], None
    for i, layers in enumerate(steps_todo):
        trial = path.with_name(f".{path.stem}.step{i}{path.suffix}")
        nodes = build(layers, trial)
        step = {"step": i, "layers": layers, "nodes": len(nodes),
                "float_macs_pct": 100.0 * sum(macs.get(n, 0) for n in layers) / total,
                "size_mb": trial.stat().st_size / 1e6, **_score(trial, fmt, val, gate)}
        steps.append(step)
        ctx.say(f"  {fmt} keep-float step {i}: {len(layers)} layer(s) float, {step['float_macs_pct']:.1f}% MACs, "
                f"val Δacc {step['delta_accuracy_pp']:+.2f} pp, worst recall drop {step['worst_recall_drop_pp']:.1f} pp, "
                f"{'passes' if step['passed'] else 'fails'}")
        if chosen is not None:
            chosen[1].unlink(missing_ok=True)
        chosen = (step, trial, nodes)
        if step["passed"]:
            break
    if chosen is None:
        raise SkinscanError(f"--keep-float auto: even one step exceeds the budget of {cfg.keep_float_budget_pct}% of MACs")
    step, trial, nodes = chosen
    trial.replace(path)
    return {"mode": "auto" if cfg.keep_float == ["auto"] else "layers", "layers": step["layers"],
            "float_macs_pct": step["float_macs_pct"], "passed": step["passed"], "split": "val",
            "gate": gate.__dict__, "budget_pct": cfg.keep_float_budget_pct, "ranked_by": qd.RANK_BY,
            "steps": steps, f"{fmt}_nodes": nodes}


def _validation(ctx: Context) -> dict:
    """The validation images, their labels and Keras' probabilities (once per export)."""
    if "val" not in ctx.cache:
        items = ctx.run.split_items("val")
        if not items:
            raise SkinscanError(f"--keep-float needs validation images, and the split in {ctx.run.root} has none")
        x = load_batch([p for p, _ in items], ctx.run.img_size())
        keras = KerasRuntime(ctx.run.model_path, model=ctx.model)
        ctx.cache["val"] = {"x": x, "y": np.array([y for _, y in items]), "paths": [str(p) for p, _ in items],
                            "labels": ctx.run.labels(), "keras": np.concatenate(
                                [keras.predict(x[i:i + 32]) for i in range(0, len(x), 32)])}
    return ctx.cache["val"]


def _score(path: Path, fmt: str, val: dict, gate) -> dict:
    """One trial file on the validation split: deltas against Keras, the gate, quick latency."""
    rt = open_runtime(path, fmt, name=path.stem)
    probs = np.concatenate([rt.predict(val["x"][i:i + 1]) for i in range(len(val["x"]))])
    s = score_against_baseline(val["y"], val["keras"], probs, val["labels"], val["paths"], EvaluateConfig(n_bootstrap=200))
    failures = check_gate({"labels": val["labels"], "models": [{"name": "mixed", **s}]}, gate)
    one = val["x"][:1]
    for _ in range(3):
        rt.predict(one)
    times = []
    for _ in range(TIMING_RUNS):
        t0 = time.perf_counter()
        rt.predict(one)
        times.append(1e3 * (time.perf_counter() - t0))
    return {"val_accuracy": s["accuracy"], "delta_accuracy_pp": s["delta_accuracy_pp"],
            "top1_agreement": s["top1_agreement"], "worst_recall_drop_pp": s["worst_recall_drop_pp"],
            "worst_recall_drop_class": s["worst_recall_drop_class"], "recall_delta_pp": s["recall_delta_pp"],
            "latency_p50_ms": float(np.median(times)), "passed": not failures, "failures": failures}

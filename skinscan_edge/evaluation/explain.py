"""``explain``: which layers of an int8 export lose the accuracy (``reports/quant_debug.*``).

For each int8 export named (by default those that failed the gate in evaluate.json, else
``tflite-int8``), the per-layer quantization error of ``quant_debug.py`` on two image sets: the
calibration images the export was calibrated on (from the manifest), and the test images whose
top-1 flipped against Keras (from evaluate.json). Writes ``reports/quant_debug.json`` (one entry
per model, merged with earlier ones), ``quant_debug.md`` rendered from it, and one plot per model.

>>> # from skinscan_edge.core.rundir import RunDir
>>> # explain_run(RunDir.open("runs/demo"), ExplainConfig(models=["tflite-int8"]))["models"][0]["worst"]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from skinscan_edge.core import runfiles
from skinscan_edge.core.config_stages import ExplainConfig
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.files import atomic_write_text, read_json, read_json_or_none, timestamp, write_json
from skinscan_edge.core.formats import explainable, spec
from skinscan_edge.core.manifest import read_manifest, verify_entry
from skinscan_edge.core.plots import plot_quant_debug
from skinscan_edge.core.progress import Reporter, reporter_or_silent
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.data.imageio import load_batch
from skinscan_edge.exporters import quant_debug as qd
from skinscan_edge.exporters.run import pin_input_range

JSON_NAME = "quant_debug.json"
MARKDOWN_NAME = "quant_debug.md"


def default_models(manifest: dict, evaluation: dict | None) -> list[str]:
    """The int8 exports that failed the gate; with none (or no evaluate.json), tflite-int8."""
    ours = [e["name"] for e in manifest["exports"] if e["name"] in explainable()]
    failed = {f["model"] for f in ((evaluation or {}).get("gate", {}).get("failures", []))}
    return [n for n in ours if n in failed] or [n for n in ours if n == "tflite-int8"] or ours[:1]


def calibration_images(run: RunDir, manifest: dict) -> tuple[list[str], np.ndarray]:
    """The images the int8 exports were calibrated on (manifest), pinned to 0..255 as they were."""
    files = (manifest.get("calibration") or {}).get("files") or []
    if not files:
        raise SkinscanError(f"the manifest of {run.root} lists no calibration images; "
                            f"run `skinscan-edge export {run.root} --int8` first")
    root = Path(run.split()["root"])
    return files, pin_input_range(load_batch([root / f for f in files], run.img_size()))


def flipped_images(run: RunDir, evaluation: dict | None, name: str, cap: int) -> tuple[list[str], np.ndarray | None]:
    """The test images whose top-1 differed from Keras for ``name`` (evaluate.json), at most ``cap``."""
    model = next((m for m in (evaluation or {}).get("models", []) if m["name"] == name), None)
    paths = [f["path"] for f in (model or {}).get("flips", [])][:cap]
    return (paths, load_batch([Path(p) for p in paths], run.img_size())) if paths else ([], None)


def explain_run(run: RunDir, config: ExplainConfig | None = None, reporter: Reporter | None = None) -> dict:
    """Measure every chosen export, write the reports and return quant_debug.json's dict."""
    say = reporter_or_silent(reporter)
    config = (config or ExplainConfig()).validate()
    manifest = read_manifest(run)
    evaluation = runfiles.read_or_none(runfiles.EvaluateReport, run.evaluate_path)
    by_name = {e["name"]: e for e in manifest["exports"]}
    names = config.models or default_models(manifest, evaluation)
    if not names:
        raise SkinscanError(f"no int8 export in {run.root} to explain; run `skinscan-edge export {run.root} --int8`")
    for name in names:
        entry = by_name.get(name)
        if entry is None or entry["name"] not in explainable():
            valid = sorted(n for n, e in by_name.items() if e["name"] in explainable())
            raise SkinscanError("explain: " + did_you_mean(name, valid, "int8 export"))
        verify_entry(run, entry)
    files, calib = calibration_images(run, manifest)
    model = run.load_model()
    macs = qd.layer_macs(model)
    known = {ly.name for ly in model.layers}
    old = read_json_or_none(run.reports / JSON_NAME) or {}
    results = {"run": str(run.root), "created": timestamp(), "rank_by": qd.RANK_BY, "metrics": list(qd.METRICS),
               "models": [m for m in old.get("models", []) if m["name"] not in names]}
    with tempfile.TemporaryDirectory(prefix="skinscan-explain-") as tmp:
        for name in names:
            say.message(f"[bold]{name}[/] measuring per-layer quantization error…")
            flips, flipped = flipped_images(run, evaluation, name, config.max_flipped)
            sets = {"calibration": calib, **({"flipped": flipped} if flipped is not None else {})}
            rows = _measure(run, by_name[name], model, calib, sets, Path(tmp) / name)
            for r in rows:
                r["keras_layer"] = qd.keras_layer_of(";".join([*r.get("nodes", []), r["layer"]]), known, set(macs))
                r["macs"] = macs.get(r["keras_layer"], 0)
            entry = {"name": name, "format": by_name[name]["format"], "file": f"exports/{by_name[name]['file']}",
                     "method": METHOD[by_name[name]["format"]],
                     "sets": {"calibration": {"images": len(calib), "source": "the manifest's calibration files"},
                              "flipped": {"images": len(flips), "files": flips,
                                          "source": "evaluate.json flips" if evaluation else "no evaluate.json"}},
                     "layers": rows, "total_macs": int(sum(macs.values())),
                     "float_layers": by_name[name].get("keep_float", {}).get("layers", [])}
            entry["worst"] = _worst(entry, config.worst)
            entry["plot"] = _plot(run, entry)
            results["models"].append(entry)
    write_reports(run, results)
    return results


METHOD = {"tflite": "LiteRT QuantizationDebugger (layer-wise NumericVerify: each op's float twin on the same "
                    "quantized input), float I/O; body quantized as the export",
          "onnx": "onnxruntime qdq_loss_debug: activations before/after their QDQ pair in the int8 file (qdq), "
                  "and against the float model (xmodel, accumulated); graph optimizations off, so each pair "
                  "runs as fake-quant, not fused into int8 kernels"}


def _measure(run: RunDir, entry: dict, model, calib, sets: dict, tmp: Path) -> list[dict]:
    """Rows in graph order; each metric prefixed by the set it was measured on."""
    tmp.mkdir(parents=True, exist_ok=True)
    if entry["format"] == "tflite":
        dbg = qd.TFLiteDebug(model, calib, tmp)
        dbg.keep_float(entry.get("keep_float", {}).get("tflite_nodes", []))  # a mixed file's float layers
        per_set = {s: dbg.layer_errors(x) for s, x in sets.items()}
    else:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prep = tmp / "prep.onnx"
        quant_pre_process(str(run.exports / spec("onnx-fp32").file), str(prep), skip_symbolic_shape=False)
        per_set = {s: qd.onnx_layer_errors(prep, run.exports / entry["file"], x, tmp) for s, x in sets.items()}
    base = per_set["calibration"]
    rows = [{k: v for k, v in r.items() if k not in qd.METRICS and not k.startswith("xmodel_")} for r in base]
    for s, set_rows in per_set.items():
        by_layer = {r["layer"]: r for r in set_rows}
        for row in rows:
            other = by_layer.get(row["layer"], {})
            for k, v in other.items():
                if k in qd.METRICS or k.startswith("xmodel_"):
                    row[f"{s}_{k}"] = v
    return rows


def _worst(entry: dict, n: int) -> list[dict]:
    """The ``n`` worst rows by channel error on the flipped images (else calibration)."""
    key = f"flipped_{qd.RANK_BY}" if entry["sets"]["flipped"]["images"] else f"calibration_{qd.RANK_BY}"
    ranked = sorted((r for r in entry["layers"] if np.isfinite(r.get(key, np.nan))), key=lambda r: -r[key])
    return [{"index": r["index"], "layer": r["layer"], "keras_layer": r["keras_layer"], "op": r["op"],
             "ranked_by": key, "value": r[key]} for r in ranked[:n]]


def _plot(run: RunDir, entry: dict) -> str:
    rel = f"reports/quant_debug_{entry['name']}.png"
    plot_quant_debug(entry, run.root / rel)
    return rel


def write_reports(run: RunDir, results: dict) -> None:
    write_json(run.reports / JSON_NAME, results)
    atomic_write_text(run.reports / MARKDOWN_NAME, render_markdown(results))


def render_markdown(results: dict, top: int = 10) -> str:
    """quant_debug.md: per model, the worst layers, then every layer in graph order."""
    out = ["# Per-layer quantization error", "",
           f"Ranked by `{results['rank_by']}`: mean over channels of ||int8 - float|| / ||float||, per image, "
           "averaged. SQNR in dB (higher is better); rmse/scale about 0.29 is pure rounding.", ""]
    for m in results["models"]:
        sets = m["sets"]
        out += [f"## {m['name']}", "", f"Method: {m['method']}.",
                f"Images: {sets['calibration']['images']} calibration, {sets['flipped']['images']} flipped "
                f"test images ({sets['flipped']['source']}).", ""]
        if m.get("float_layers"):
            out += [f"Kept float in this file: {', '.join(m['float_layers'])}.", ""]
        has_flip = sets["flipped"]["images"] > 0
        head = ["#", "layer", "op", "MACs %", "calib channel error", "calib SQNR dB"]
        head += ["flipped channel error", "flipped SQNR dB"] if has_flip else []
        out += ["Worst layers:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        by_index = {r["index"]: r for r in m["layers"]}
        for w in m["worst"][:top]:
            out.append(_md_row(by_index[w["index"]], m["total_macs"], has_flip))
        out += ["", "<details><summary>every layer, graph order</summary>", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += [_md_row(r, m["total_macs"], has_flip) for r in m["layers"]]
        out += ["", "</details>", "", f"![{m['name']}]({Path(m['plot']).name})", ""]
    return "\n".join(out)


def _md_row(r: dict, total: int, has_flip: bool) -> str:
    def f(v, d=3):
        return "-" if v is None or not np.isfinite(v) else f"{v:.{d}f}"
    name = f"`{r['keras_layer'] or r['layer'][:48]}`"
    cells = [str(r["index"]), name, r["op"], f(100.0 * r["macs"] / total if total else None, 2),
             f(r.get("calibration_channel_error")), f(r.get("calibration_sqnr_db"), 1)]
    if has_flip:
        cells += [f(r.get("flipped_channel_error")), f(r.get("flipped_sqnr_db"), 1)]
    return "| " + " | ".join(cells) + " |"


def read_results(run: RunDir) -> dict | None:
    path = run.reports / JSON_NAME
    return read_json(path) if path.exists() else None

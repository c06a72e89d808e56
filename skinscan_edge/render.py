"""Reports rendered from their JSON: evaluate.md, benchmark.md and benchmark.csv.

Nothing here measures or reads a model: each function takes the dict that was written to
``evaluate.json`` or ``benchmark.json`` and returns text. The PNGs come from ``plots.py`` and
the HTML page from ``report.py``, from the same JSON.
"""

from __future__ import annotations

from .formats import target_precisions
from .metrics import failure_text
from .hostinfo import floor_ms

# --- evaluate -------------------------------------------------------------------------------
TABLE_COLUMNS = ["model", "format", "precision", "size MB", "accuracy", "Δaccuracy pp [95% CI]",
                 "agreement", "worst recall drop", "ECE"]


def comparison_rows(results: dict) -> list[list[str]]:
    """The comparison table as strings, one row per model; shared by Markdown and the console."""
    rows = []
    for m in results["models"]:
        if m["name"] == "keras":
            delta, drop = "baseline", "-"
        else:
            delta = (f"{m['delta_accuracy_pp']:+.2f} [{m['delta_accuracy_ci95_low_pp']:+.2f}, "
                     f"{m['delta_accuracy_ci95_high_pp']:+.2f}]")
            drop = (f"{m['worst_recall_drop_pp']:.1f} pp ({m['worst_recall_drop_class']})"
                    if m["worst_recall_drop_class"] else "none")
        rows.append([m["name"], m["format"], m["precision"], _size(m["size_mb"]), f"{m['accuracy']:.4f}",
                     delta, f"{m['top1_agreement']:.4f}", drop, f"{m['ece']:.4f}"])
    return rows


#: The second, ungated comparison of an export that has a float twin (QAT): columns of ``twin_rows``.
TWIN_COLUMNS = ["model", "against", "twin accuracy", "twin agreement with Keras", "agreement with twin",
                "Δaccuracy vs twin pp [95% CI]", "worst recall drop vs twin"]


def twin_rows(results: dict) -> list[list[str]]:
    """One row per export scored against its own float twin (``vs_float_twin``), as strings."""
    rows = []
    for m in results["models"]:
        t = m.get("vs_float_twin")
        if not t:
            continue
        drop = (f"{t['worst_recall_drop_pp']:.1f} pp ({t['worst_recall_drop_class']})"
                if t["worst_recall_drop_class"] else "none")
        rows.append([m["name"], t["file"], f"{t['twin_accuracy']:.4f}", f"{t['twin_top1_agreement_with_keras']:.4f}",
                     f"{t['top1_agreement']:.4f}",
                     f"{t['delta_accuracy_pp']:+.2f} [{t['delta_accuracy_ci95_low_pp']:+.2f}, "
                     f"{t['delta_accuracy_ci95_high_pp']:+.2f}]", drop])
    return rows


TWIN_NOTE = ("QAT goes on training, so the QAT file is a different model from Keras and its row above mixes "
             "quantization error with retraining. Here it is scored against its own float twin (its fine-tuned "
             "float weights without fake-quant): what quantization alone costs. Not gated; the gate is against Keras.")


def twin_lines(results: dict) -> list[str]:
    """The float-twin section of evaluate.md (empty when no export has a twin)."""
    rows = twin_rows(results)
    if not rows:
        return []
    return (["", "## Against its float twin: what quantization alone costs (not gated)", "", TWIN_NOTE, "",
             "| " + " | ".join(TWIN_COLUMNS) + " |", "|" + "---|" * len(TWIN_COLUMNS)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def render_evaluate_markdown(results: dict, max_flips: int = 20) -> str:
    """evaluate.md: the comparison table, the gate, per-model class reports and flips."""
    gate = results["gate"]
    lines = [f"# Evaluation: every export against Keras ({results['split']} split)", "",
             f"Run `{results['run']}`, {results['num_images']} images at {results['img_size']} px, "
             f"{results['num_skipped']} skipped; created {results['created']}.", "", leak_line(results), "",
             "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in comparison_rows(results)]
    lines += twin_lines(results)
    from .arm64 import render_markdown as arm64_markdown  # the arm64 rows' own table ('' without them)

    lines += [arm64_markdown(results)] if results.get("arm64") else []
    scope = ", ".join(gate["critical_classes"]) or "every class"
    agree = f", top-1 agreement >= {gate['min_agreement']}" if gate["min_agreement"] is not None else ""
    lines += ["", f"## Gate: {'PASSED' if gate['passed'] else 'FAILED'}", "",
              f"Accuracy drop <= {gate['max_accuracy_drop_pp']} pp, recall drop <= "
              f"{gate['max_recall_drop_pp']} pp ({scope}){agree}.", ""]
    lines += [f"- {failure_text(f)}" for f in gate["failures"]]
    if results.get("client_gaps"):
        lines += ["", *client_gap_lines(results)]
    for f in results["export_failures"]:
        lines.append(f"- export {f.get('name')} was not produced: {f.get('error')}")
    for m in results["models"]:
        lines += ["", f"## {m['name']}", "", f"![confusion matrix]({m['confusion_png'].split('/', 1)[1]})", "",
                  "| class | precision | recall | F1 | support | recall Δ pp |", "|---|---|---|---|---|---|"]
        report = m["classification_report"]
        for c in results["labels"]:
            r, d = report[c], m["recall_delta_pp"][c]
            lines.append(f"| {c} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | "
                         f"{int(r['support'])} | {'n/a' if d is None else f'{d:+.1f}'} |")
        for avg in ("macro avg", "weighted avg"):
            r = report[avg]
            lines.append(f"| *{avg}* | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1-score']:.3f} | "
                         f"{int(r['support'])} | |")
        if m["name"] == "keras":
            continue
        lines += ["", f"Probabilities vs Keras: mean |Δ| {m['prob_mean_abs_diff']:.5f}, "
                      f"max |Δ| {m['prob_max_abs_diff']:.5f}. Top-1 flips: {m['num_flips']}."]
        lines += [f"- `{f['path']}` (true {f['true']}): Keras {f['keras']} -> {f['export']}"
                  for f in m["flips"][:max_flips]]
        if m["num_flips"] > max_flips:
            lines.append(f"- ... {m['num_flips'] - max_flips} more in evaluate.json")
    if results["skipped"]:
        lines += ["", "## Skipped images", ""]
        lines += [f"- `{s['path']}`: {s['reason']}" for s in results["skipped"]]
    return "\n".join(lines) + "\n"


def leak_line(results: dict) -> str:
    """What the scores stand on: the split's images that have a near-duplicate in another split."""
    if results.get("num_leaked_images") is None:
        return f"Near-duplicates: {results.get('leak_warning') or 'not checked (evaluated before this was recorded)'}."
    return (f"Near-duplicates: {results['num_leaked_images']} of the {results['split']} images have a near-duplicate "
            f"(or a --group-by group member) in another split.")


CLIENT_COLUMNS = ["row", "export", "files", "LiteRT accuracy", "guided accuracy (gated)", "naive accuracy",
                  "naive Δ vs Keras pp", "naive worst recall drop", "LiteRT vs naive agreement"]
CLIENT_NOTE = ("Each TFLite export, with TFLite Model Metadata, in MediaPipe's ImageClassifier, as an app runs it. "
               "Guided: the photos prepared as the Android bundle's guide says (decoded to RGB, scaled with its "
               "toInputSize arithmetic), then MediaPipe at the input size; this row is gated like any export. "
               "Naive: the original files straight into MediaPipe, which resizes without antialiasing; shown, "
               "not gated: what skipping the guide costs.")


def client_rows(results: dict) -> list[list[str]]:
    """One row per export scored through MediaPipe, as strings (evaluate.md and the HTML page)."""
    gaps = {g["row"]: g for g in results.get("client_gaps") or []}
    rows = []
    for m in results["models"]:
        g, n = gaps.get(m["name"]), m.get("naive")
        if not m.get("client") or not g or not n:
            continue
        drop = f"{n['worst_recall_drop_pp']:.1f} pp ({n['worst_recall_drop_class']})" if n["worst_recall_drop_class"] else "none"
        rows.append([m["name"], g["source_export"], str(g["files"]), f"{g['litert_accuracy']:.4f}",
                     f"{m['accuracy']:.4f}", f"{n['accuracy']:.4f}", f"{n['delta_accuracy_pp']:+.2f}", drop,
                     f"{g['top1_agreement']:.4f}"])
    return rows


def client_gap_lines(results: dict) -> list[str]:
    """The MediaPipe rows, guided and naive, and MediaPipe's measured input tensor, as Markdown."""
    rows = client_rows(results)
    if not rows:
        return []
    lines = ["## What the phone sees: every TFLite export through MediaPipe", "", CLIENT_NOTE, "",
             "| " + " | ".join(CLIENT_COLUMNS) + " |", "|" + "---|" * len(CLIENT_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    t = results.get("client_tensor") or {}
    if t.get("files"):
        lines += ["", f"MediaPipe's input tensor on the original files (identity probe, {t['files']} files) vs the "
                      f"project's pixels: mean |Δ| {t['project_mean_abs']:.2f} of 255; decoders differ by "
                      f"{t['decoder_mean_abs'] if t['decoder_mean_abs'] is None else round(t['decoder_mean_abs'], 2)}. "
                      f"Best-matching candidate: {t['best_match']}.", "",
                  "| candidate | mean abs diff (levels) |", "|---|---|"]
        lines += [f"| {n} | {v:.2f} |" for n, v in t["candidates_mean_abs"].items()]
    return lines


def _size(mb: float) -> str:
    return f"{mb:.2f}" if mb >= 0.01 else "<0.01"


# --- benchmark ------------------------------------------------------------------------------
def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if digits < 0:  # adaptive: 2 decimals under 10, 1 under 1000, none above
            digits = 2 if abs(v) < 10 else 1 if abs(v) < 1000 else 0
        return f"{v:,.{digits}f}"
    return str(v)


def _status(row: dict) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row:
        return f"error: {row['error']}"
    return row.get("accelerator_detail") or row.get("accelerator") or ""


def render_benchmark_markdown(results: dict) -> str:
    """benchmark.md: host, floor, one table of every row (skips and errors say why), notes."""
    cfg, rows = results["config"], results["rows"]
    batches = cfg["batches"]
    gm = results.get("model_gmacs")
    lines = [f"# Benchmark: {results['run']}", "",
             f"- Host: {results['host_line']}",
             f"- Input {results['img_size']} px; {cfg['images']} test images (seed {cfg['seed']}); "
             f"{cfg['warmup']} warm-up runs; each measurement >= {cfg['min_time_s']} s and "
             f">= {cfg['min_runs']} runs (batch 1), >= {cfg['min_batch_runs']} runs (other batches)",
             f"- Model: {_fmt(gm, 2)} GMACs per image (conv + dense), {results['created']}", ""]
    if results.get("floor"):
        lines += ["## Floor (onnxruntime GEMM, measured in this run)", "",
                  "| threads | fp32 GFLOP/s | u8s8 GOP/s | s8s8 GOP/s | fp32 floor ms | int8 floor ms |",
                  "|---|---|---|---|---|---|"]
        for t, f in results["floor"].items():
            lines.append(f"| {t} | {_fmt(f.get('fp32_gflops'))} | {_fmt(f.get('u8s8_gops'))} | "
                         f"{_fmt(f.get('s8s8_gops'))} | {_fmt(floor_ms((gm or 0) * 1e9, 'fp32', f), -1)} | "
                         f"{_fmt(floor_ms((gm or 0) * 1e9, 'int8', f), -1)} |")
        lines.append("")
    head = (["model", "precision", "device", "threads", "size MB", "load ms", "first ms", "p50 ms",
             "p90 ms", "p99 ms", "mean ± std ms"] + [f"b{b} img/s" for b in batches]
            + ["peak RSS MB", "floor ms", "x floor", "accuracy", "accelerated", "kernels / status"])
    lines += ["## Results (latency at batch 1)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ok = "skipped" not in r and "error" not in r
        mean = f"{_fmt(r.get('latency_mean_ms'), -1)} ± {_fmt(r.get('latency_std_ms'), -1)}" if ok else "–"
        cells = ([r["model"], r["precision"], r["device"], _fmt(r.get("threads")), _fmt(r.get("size_mb"), 2),
                  _fmt(r.get("load_ms"), 0), _fmt(r.get("first_inference_ms"), -1),
                  _fmt(r.get("latency_p50_ms"), -1), _fmt(r.get("latency_p90_ms"), -1),
                  _fmt(r.get("latency_p99_ms"), -1), mean]
                 + [_fmt(r.get(f"throughput_b{b}_ips"), -1) for b in batches]
                 + [_fmt(r.get("peak_rss_mb"), 0), _fmt(r.get("floor_ms"), -1), _fmt(r.get("x_floor"), 2),
                    _fmt(r.get("accuracy"), 3), _fmt(r.get("accelerated")), _status(r).replace("|", "/")])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += ["", "## Against the floor (batch 1, most threads)", ""] + _target_lines(results)
    lines += ["", "## Notes", ""] + [f"- {n}" for n in results.get("notes", [])]
    lines += [f"- Parity gate (evaluate.json): {_fmt(results.get('gate_passed'))}",
              "- floor ms = 2 x MACs / GEMM peak (int8 peak for int8, QAT and dynamic models), the peak "
              "re-measured in each model's own process right after its timed runs (the table above is "
              "the host's best before and after the sweep); x floor = p50 / floor ms. peak RSS is the worker process's high-water mark "
              "(runtime library + model + buffers)."]
    return "\n".join(lines) + "\n"


#: The performance target: fastest int8 export within 2.5x its int8 floor (3x on AVX-512/AMX hosts:
#: quant_order.int8_target), fp32 within 1.2x.
TARGETS = {"int8": 2.5, "fp32": 1.2}


def _target_lines(results: dict) -> list[str]:
    threads = max(results["config"]["threads"])
    lines = []
    for kind, target in TARGETS.items():
        precisions = target_precisions(kind)
        rows = [r for r in results["rows"] if r.get("x_floor") and r["device"] == "cpu"
                and r["threads"] == threads and r["precision"] in precisions and r["format"] != "keras"]
        if not rows:
            lines.append(f"- {kind}: no measured {kind} export at {threads} threads")
            continue
        best = min(rows, key=lambda r: r["latency_p50_ms"])
        if kind == "int8":
            from .quant_order import int8_target

            target = int8_target(results.get("host"))
        verdict = "meets" if best["x_floor"] <= target else "misses"
        lines.append(f"- fastest {kind} export: {best['model']}, p50 {best['latency_p50_ms']:.1f} ms = "
                     f"{best['x_floor']:.2f} x its floor ({best['floor_ms']:.1f} ms); {verdict} the "
                     f"{target} x target")
    from .quant_order import slower_quantized

    return lines + slower_quantized(results["rows"], threads, results.get("host"))


def render_benchmark_csv(results: dict) -> str:
    import csv
    import io

    keys: list[str] = []
    for r in results["rows"]:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    w.writerows(results["rows"])
    return buf.getvalue()

"""evaluate.md, rendered from the dict written to ``evaluate.json``, and the comparison table's
rows that the console and the HTML page share. Nothing here measures or reads a model.
"""

from __future__ import annotations

from skinscan_edge.core.metrics import failure_text
from skinscan_edge.evaluation.arm64 import render_markdown as arm64_markdown

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



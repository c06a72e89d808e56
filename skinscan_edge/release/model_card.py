"""``RUN/MODEL_CARD.md``: the run's model card, in the sections of Hugging Face's model cards.

Every figure is read from the run's own files (``config.json``, ``skipped.json``,
``reports/evaluate.json``, ``reports/benchmark.json``, ``exports/manifest.json``); nothing is
measured or restated here, and a section whose stage has not run names the command that fills
it. ``report`` writes the card beside the page (and links it); the Android bundle carries a copy.

>>> # from skinscan_edge.core.rundir import RunDir
>>> # write_model_card(RunDir.open("runs/demo"))  # -> Path("runs/demo/MODEL_CARD.md")
"""

from __future__ import annotations

from pathlib import Path

from skinscan_edge.core import runfiles
from skinscan_edge.core.contract import __version__
from skinscan_edge.core.files import atomic_write_text, read_json_or_none
from skinscan_edge.core.formats import EXPORTS
from skinscan_edge.core.metrics import failure_text
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.data.demo import is_synthetic
from skinscan_edge.exporters.metadata import MODEL_AUTHOR, MODEL_LICENSE


#: The card's file name, in the run and in the Android bundle.
CARD_NAME = "MODEL_CARD.md"

#: Confidence level of the per-class precision and recall intervals (Wilson score).
CI_LEVEL = 0.95


def wilson_interval(k: int, n: int, level: float = CI_LEVEL) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion k/n (None when n is 0), from scipy."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def per_class_intervals(confusion: list[list[int]], labels: list[str]) -> list[dict]:
    """Per class: precision and recall with their Wilson intervals, from a confusion matrix
    (rows: true class, columns: predicted)."""
    out = []
    for i, label in enumerate(labels):
        tp = int(confusion[i][i])
        support = int(sum(confusion[i]))
        predicted = int(sum(row[i] for row in confusion))
        out.append({"label": label, "support": support, "predicted": predicted, "tp": tp,
                    "precision": tp / predicted if predicted else None, "precision_ci": wilson_interval(tp, predicted),
                    "recall": tp / support if support else None, "recall_ci": wilson_interval(tp, support)})
    return out


def _pct(v, digits: int = 1) -> str:
    return "–" if v is None else f"{100 * v:.{digits}f}%"


def _ci(ci) -> str:
    return "–" if ci is None else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _num(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _signed(v, digits: int = 2) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"


def _table(head: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]


def _details(run: RunDir, config: dict, manifest: dict | None, synthetic: bool) -> list[str]:
    train, labels = config["train"], config["labels"]
    weights = {"imagenet": "ImageNet", "none": "none (trained from scratch)"}.get(train["weights"], train["weights"])
    lines = ["## Model details", "",
             f"- **Model**: InceptionV3 image classifier (global average pooling, dropout, a "
             f"{train['dense_units']}-unit dense layer, softmax over {len(labels)} classes), fine-tuned with "
             f"skinscan-edge {config.get('versions', {}).get('skinscan-edge', __version__)}.",
             f"- **Developed by**: {MODEL_AUTHOR}; licence of the code and the files: {MODEL_LICENSE}.",
             f"- **Initial weights**: {weights}.",
             f"- **Input**: {train['img_size']}×{train['img_size']} RGB, raw 0–255 (see *Input contract*).",
             f"- **Classes** (output order, `labels.txt`): {', '.join(labels)}.",
             f"- **Run**: `{run.root}`, trained {config.get('created', '?')}; TensorFlow "
             f"{config.get('versions', {}).get('tensorflow', '?')}, tf-keras {config.get('versions', {}).get('tf-keras', '?')}."]
    if manifest:
        lines.append("- **Files**: " + ", ".join(f"`{e['name']}` ({e['size_bytes'] / 1e6:.2f} MB)"
                                                 for e in manifest.get("exports", [])) + ".")
    if synthetic:
        lines += ["", "> **This run was trained on SYNTHETIC demo data** (procedurally drawn shapes, "
                      "`skinscan-edge demo-data`). Its figures show the pipeline works; they say nothing "
                      "about skin disease."]
    return lines


USES = """## Intended use

- **Direct use**: a screening aid on a phone or a desktop. Given one photo of a skin lesion, it
  ranks the classes above, so that a person can decide whether to see a clinician.
- **Users**: app developers who embed the `.tflite` file (see the Android bundle's `README.md`),
  and the people who use their apps.

## Out-of-scope use

- **Not a medical device.** It has no regulatory clearance and gives no diagnosis. A low
  Melanoma score is no reason to skip a doctor's visit.
- It screens only. It should not triage a patient without a clinician, decide treatment, or
  replace a dermatologist or a biopsy.
- It is not for images unlike its training data: other cameras or dermoscopes, other skin
  tones or body sites, a lesion that is not centred, or images that are not of skin at all.
  It always answers with one of its classes, even for a photo of a cat.
"""


def _training_data(run: RunDir, config: dict, skipped: list) -> list[str]:
    labels, counts = config["labels"], config.get("split_counts") or {}
    lines = ["## Training data", "",
             f"- **Source**: `{config.get('data_root', '?')}` ({config.get('layout', '?')} layout); split "
             f"stratified and seeded (seed {config['train']['seed']}), persisted in `split.json` "
             f"(SHA-256 `{str(config.get('split_sha256', '?'))[:16]}…`).", ""]
    if counts:
        splits = list(counts)
        rows = [[label, *(counts[s].get(label, 0) for s in splits)] for label in labels]
        rows.append(["**total**", *(sum(counts[s].values()) for s in splits)])
        lines += _table(["class", *splits], rows) + [""]
    if skipped:
        from collections import Counter

        reasons = Counter(s.get("reason", "?") for s in skipped)
        lines.append(f"**{len(skipped)} file(s) skipped** by the scanner ("
                     + ", ".join(f"{n} {r}" for r, n in reasons.items()) + "), listed in `skipped.json`"
                     + (":" if len(skipped) <= 20 else "."))
        lines += [f"- `{s.get('path')}`: {s.get('reason')}" for s in skipped[:20]]
    else:
        lines.append("No file was skipped by the scanner (`skipped.json` is empty).")
    t = config["train"]
    lines += ["", "## Training procedure", "",
              f"- Phase 1 (head only): {t['epochs']} epoch(s), learning rate {t['learning_rate']}.",
              f"- Phase 2 (fine-tuning from `{t['unfreeze_from']}`): {t['fine_tune_epochs']} epoch(s), "
              f"learning rate {t['fine_tune_lr']}.",
              f"- Batch size {t['batch_size']}, dropout {t['dropout']}, augmentation "
              f"{'on' if t['augment'] else 'off'}, class weights {'on' if t['class_weights'] else 'off'}."]
    return lines


def _evaluation(evaluation: dict | None, run: RunDir) -> list[str]:
    lines = ["## Evaluation", ""]
    if not evaluation:
        return lines + [f"Not evaluated yet: run `skinscan-edge evaluate {run.root}`."]
    labels, models = evaluation["labels"], evaluation["models"]
    keras = next(m for m in models if m["name"] == "keras")
    lines += [f"**Testing data**: the `{evaluation['split']}` split, {evaluation['num_images']} images "
              f"({evaluation['num_skipped']} skipped), at {evaluation['img_size']} px.", "",
              f"### Keras model, per class (accuracy {_pct(keras['accuracy'])})", "",
              f"Precision and recall with their {int(CI_LEVEL * 100)}% Wilson score intervals, from the "
              "confusion matrix in `reports/evaluate.json`.", ""]
    rows = [[c["label"], c["support"], _pct(c["precision"]), _ci(c["precision_ci"]), _pct(c["recall"]),
             _ci(c["recall_ci"])] for c in per_class_intervals(keras["confusion_matrix"], labels)]
    lines += _table(["class", "support", "precision", "95% CI", "recall", "95% CI"], rows)
    lines += ["", "### Every export against Keras", "",
              "Δaccuracy with its paired-bootstrap 95% interval; agreement is the share of images with "
              "the same top-1 class as Keras.", ""]
    failures = evaluation["gate"]["failures"]
    rows = []
    for m in models:
        if m["name"] == "keras":
            continue
        failed = [f for f in failures if f["model"] == m["name"]]
        drop = (f"{m['worst_recall_drop_pp']:.1f} pp ({m['worst_recall_drop_class']})"
                if m.get("worst_recall_drop_class") else "none")
        rows.append([f"`{m['name']}`", m["precision"], _num(m.get("size_mb")), _pct(m["accuracy"]),
                     f"{_signed(m['delta_accuracy_pp'])} [{_signed(m['delta_accuracy_ci95_low_pp'])}, "
                     f"{_signed(m['delta_accuracy_ci95_high_pp'])}]", _num(m["top1_agreement"], 4), drop,
                     "fail" if failed else "pass"])
    lines += _table(["export", "precision", "size MB", "accuracy", "Δaccuracy pp [95% CI]", "agreement",
                     "worst recall drop", "gate"], rows)
    gate = evaluation["gate"]
    scope = ", ".join(gate["critical_classes"]) or "every class"
    agree = f", top-1 agreement ≥ {gate['min_agreement']}" if gate.get("min_agreement") is not None else ""
    lines += ["", f"**The gate: {'PASSED' if gate['passed'] else 'FAILED'}.** An export fails when its "
                  f"accuracy drops more than {gate['max_accuracy_drop_pp']} pp below Keras or its recall "
                  f"drops more than {gate['max_recall_drop_pp']} pp ({scope}){agree}."]
    lines += [f"- {failure_text(f)}" for f in failures]
    for m in models:  # QAT retrains: its Keras row mixes that with quantization; its twin row does not
        if t := m.get("vs_float_twin"):
            lines += ["", f"**`{m['name']}` against its float twin (not gated).** Against its own fine-tuned float "
                          f"weights (`{t['file']}`) it agrees on {_pct(t['top1_agreement'])} of top-1 classes, "
                          f"Δaccuracy {_signed(t['delta_accuracy_pp'])} pp: what quantization alone costs. The twin "
                          f"agrees with Keras on {_pct(t['twin_top1_agreement_with_keras'])}: what the QAT fine-tuning moved."]
    for m in models:
        if m.get("client") and (n := m.get("naive")):
            lines += ["", f"**What the phone sees: `{m['name']}`.** Through MediaPipe's ImageClassifier on photos "
                          f"prepared as the Android guide says: accuracy {_pct(m['accuracy'])} "
                          f"(Δ {_signed(m['delta_accuracy_pp'])} pp vs Keras, gated). Original files straight into "
                          f"MediaPipe (naive, not gated): accuracy {_pct(n['accuracy'])} (Δ {_signed(n['delta_accuracy_pp'])} pp), "
                          f"worst recall drop {_num(n['worst_recall_drop_pp'], 1)} pp"
                          + (f" ({n['worst_recall_drop_class']})." if n.get("worst_recall_drop_class") else ".")]
    return lines


def _quantization(manifest: dict | None, run: RunDir) -> list[str]:
    lines = ["## Quantization", ""]
    if not manifest:
        return lines + [f"Nothing exported yet: run `skinscan-edge export {run.root} --int8`."]
    calib = manifest.get("calibration") or {}
    if calib.get("count"):
        lines.append(f"The full-integer files were calibrated on {calib['count']} images drawn from the "
                     f"`{calib.get('split', 'train')}` split (seed {calib.get('seed')}), listed in "
                     "`exports/manifest.json`.")
    rows = []
    for e in manifest.get("exports", []):
        (inp,), (out,) = e.get("inputs") or [{}], e.get("outputs") or [{}]
        q = lambda t: (f"{t.get('dtype')} (scale {_num((t.get('quantization') or {}).get('scale'), 6)}, "  # noqa: E731
                       f"zero point {(t.get('quantization') or {}).get('zero_point')})"
                       if (t.get("quantization") or {}).get("scale") else str(t.get("dtype", "?")))
        rows.append([f"`{e['name']}`", e["format"], e["precision"], q(inp), q(out), (e.get("notes") or "").split(";")[0]])
    lines += [""] + _table(["export", "format", "precision", "input", "output", "notes"], rows)
    return lines


def _speed(benchmark: dict | None, run: RunDir) -> list[str]:
    lines = ["## Speed", ""]
    if not benchmark:
        return lines + [f"Not benchmarked yet: run `skinscan-edge benchmark {run.root}`."]
    rows = [[f"`{r['model']}`", r["device"], r.get("threads", "–"), _num(r.get("latency_p50_ms")),
             _num(r.get("peak_rss_mb"), 0), r.get("accelerator_detail") or r.get("accelerator") or ""]
            for r in benchmark["rows"] if r.get("latency_p50_ms") is not None]
    lines += [f"Batch-1 latency from `reports/benchmark.json`; desktop rows on {benchmark['host_line']}.", ""]
    lines += _table(["model", "device", "threads", "p50 ms", "peak RSS MB", "kernels"], rows)
    if not any(str(r["device"]).startswith("android:") for r in benchmark["rows"]):
        lines += ["", "No phone was measured for this run (`skinscan-edge benchmark RUN --adb` measures one)."]
    return lines


def _limitations(config: dict) -> list[str]:
    contract = config.get("input_contract") or {}
    size = contract.get("size") or [config["train"]["img_size"]] * 2
    return ["## Bias, risks and limitations", "",
            "- The accuracies above are from one split of one dataset: small classes have wide intervals, "
            "and nothing here was measured on other cameras, lighting, skin tones or body sites.",
            "- The Python figures come from Pillow's decoder and resize; a phone client resizes its own way. "
            "Where the report has `<export> (mediapipe)` rows, they are the accuracy through MediaPipe's "
            "`ImageClassifier` on photos prepared as the Android guide says (and, not gated, on the original files).",
            "- A quantized file can change single predictions even where its overall accuracy holds: read the "
            "per-class recall change in the report before shipping one.",
            "", "### Input contract", "",
            f"- Layout {contract.get('layout', 'NHWC')}, colour {contract.get('color', 'RGB')}, values "
            f"{contract.get('range', [0, 255])[0]}–{contract.get('range', [0, 255])[1]} **not normalised** (the model "
            "maps them to [-1, 1] itself).",
            f"- Size {size[0]}×{size[1]}, square: a non-square photo is stretched by the Python path; crop it "
            "yourself to keep the lesion's shape.",
            "- dtype float32 for Keras and " + ", ".join(f"`{s.name}`" for s in EXPORTS.values() if not s.full_integer)
            + "; uint8 in and out for the full-integer " + ", ".join(f"`{s.name}`" for s in EXPORTS.values() if s.full_integer)
            + " (input scale 1, zero point 0). Output `probs`: softmax over `labels.txt`."]


def render_model_card(run: RunDir) -> str:
    """The card's Markdown from the run's files."""
    config = run.config()
    evaluation = runfiles.read_or_none(runfiles.EvaluateReport, run.evaluate_path)
    benchmark = runfiles.read_or_none(runfiles.BenchmarkReport, run.benchmark_path)
    manifest = runfiles.read_or_none(runfiles.Manifest, run.manifest_path)
    skipped = read_json_or_none(run.skipped_path) or []
    synthetic = is_synthetic(config.get("data_root"))
    front = ["---", "license: apache-2.0", "library_name: tf-keras", "pipeline_tag: image-classification",
             "tags: [skin-lesion, screening, tflite, onnx" + (", synthetic-data" if synthetic else "") + "]", "---"]
    body = [f"# Model card: Skinscan InceptionV3 ({run.root.name})", ""]
    for part in (_details(run, config, manifest, synthetic), USES.splitlines(), _training_data(run, config, skipped),
                 _evaluation(evaluation, run), _quantization(manifest, run), _speed(benchmark, run),
                 _limitations(config)):
        body += [*part, ""]
    body += ["## Sources", "", "Every figure above is read from `config.json`, `skipped.json`, "
             "`reports/evaluate.json`, `reports/benchmark.json` and `exports/manifest.json` of this run."]
    return "\n".join(front + body) + "\n"


def write_model_card(run: RunDir) -> Path:
    """Write ``RUN/MODEL_CARD.md`` and return its path."""
    path = run.root / CARD_NAME
    atomic_write_text(path, render_model_card(run))
    return path

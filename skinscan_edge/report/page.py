"""``RUN/reports/index.html``: one self-contained page that answers "which file do I ship, and
what does it cost me?".

Everything on the page is read from files the other commands wrote (config.json, skipped.json,
duplicates.json, status.json, keras_test_report.json, evaluate.json, benchmark.json, exports/manifest.json);
nothing is measured here. The PNGs are embedded as data URIs, so the page can be mailed or
attached to a ticket on its own. A stage that has not run yet is named, with the command that
fills it in.

>>> # from skinscan_edge.core.rundir import RunDir
>>> # build_report(RunDir.open("runs/demo"))  # -> Path("runs/demo/reports/index.html")
"""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

from skinscan_edge.core import runfiles
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import atomic_write_text, read_json_or_none, timestamp
from skinscan_edge.core.manifest import check_complete
from skinscan_edge.core.metrics import failure_text
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.runlock import holds_run_lock
from skinscan_edge.data.demo import is_synthetic
from skinscan_edge.data.fingerprint import data_change
from skinscan_edge.evaluation.markdown import (CLIENT_COLUMNS, CLIENT_NOTE, client_rows, TWIN_COLUMNS, TWIN_NOTE,
    twin_rows)
from skinscan_edge.release.choose import choose
from skinscan_edge.release.model_card import write_model_card

INDEX_NAME = "index.html"
TEMPLATE = "report.html.j2"


def _png(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")




def _latency_rows(benchmark: dict | None) -> dict[str, dict]:
    """Per model: the CPU row at the highest thread count measured (what the table shows)."""
    if not benchmark:
        return {}
    out: dict[str, dict] = {}
    for row in benchmark.get("rows", []):
        if row.get("device") != "cpu" or not row.get("latency_p50_ms"):
            continue
        best = out.get(row["model"])
        if best is None or row["threads"] > best["threads"]:
            out[row["model"]] = row
    return out


def phone_rows(benchmark: dict | None) -> list[dict]:
    """The rows measured on an Android phone over adb, each with the desktop p50 of the same model."""
    if not benchmark:
        return []
    desktop = _latency_rows(benchmark)
    return [{**r, "desktop_p50_ms": (desktop.get(r["model"]) or {}).get("latency_p50_ms"),
             "desktop_threads": (desktop.get(r["model"]) or {}).get("threads")}
            for r in benchmark.get("rows", []) if str(r.get("device", "")).startswith("android:")]


def export_rows(evaluation: dict | None, benchmark: dict | None, manifest: dict | None) -> list[dict]:
    """One row per model (Keras first): size, accuracy and its delta, gate verdict, latency."""
    latency = _latency_rows(benchmark)
    failures = (evaluation or {}).get("gate", {}).get("failures", [])
    by_name: dict[str, dict] = {}
    for e in (manifest or {}).get("exports", []):
        by_name[e["name"]] = {"name": e["name"], "precision": e["precision"], "format": e["format"],
                              "file": f"exports/{e['file']}", "size_mb": e["size_bytes"] / 1e6,
                              "float_layers": (e.get("keep_float") or {}).get("layers")}
    for m in (evaluation or {}).get("models", []):
        row = by_name.setdefault(m["name"], {"name": m["name"]})
        row.update({k: m.get(k) for k in ("precision", "format", "file", "size_mb", "accuracy", "delta_accuracy_pp",
                                          "delta_accuracy_ci95_low_pp", "delta_accuracy_ci95_high_pp",
                                          "top1_agreement", "worst_recall_drop_pp", "worst_recall_drop_class",
                                          "recall_delta_pp", "confusion_png", "client")})
        if m["name"] != "keras":
            row["gate_failures"] = [failure_text(f) for f in failures if f["model"] == m["name"]]
            row["gate_passed"] = not row["gate_failures"]
    for name, r in latency.items():
        row = by_name.setdefault(name, {"name": name, "precision": r.get("precision"), "size_mb": r.get("size_mb")})
        row.update({"latency_p50_ms": r["latency_p50_ms"], "threads": r["threads"],
                    "throughput": {k: v for k, v in r.items() if k.startswith("throughput_b")},
                    "peak_rss_mb": r.get("peak_rss_mb"), "x_floor": r.get("x_floor")})
    rows = list(by_name.values())
    rows.sort(key=lambda r: (r["name"] != "keras", r["name"]))
    return rows


def recommend(run: RunDir, rows: list[dict]) -> dict:
    """The file to ship to phones: ``release.choose.choose``, the same call ``skinscan-edge bundle``
    makes, so the page and the bundle cannot disagree. Says why when there is none."""
    if not run.manifest_path.exists():
        return {"name": None, "why": f"nothing is exported yet: run `skinscan-edge export {run.root} --int8`"}
    try:
        choice = choose(run)
    except SkinscanError as e:
        return {"name": None, "why": str(e)}
    row = next((r for r in rows if r["name"] == choice.name), {"name": choice.name})
    return {"name": choice.name, "row": row, "mixed": mixed_cost(row, rows), "why": choice.why, "tie": choice.tie,
            "latency_source": choice.latency_source}


def mixed_cost(row: dict, rows: list[dict]) -> str | None:
    """For a mixed int8 file: "int8 with N layers in float: +X MB, +Y ms" against its plain int8."""
    if row.get("float_layers") is None:
        return None
    base = next((r for r in rows if r["name"] == row["name"].removesuffix("-mixed")), {})
    parts = [f"int8 with {len(row['float_layers'])} layer(s) in float ({', '.join(row['float_layers'])})"]
    if base.get("size_mb") is not None:
        parts.append(f"{row['size_mb'] - base['size_mb']:+.1f} MB")
    if base.get("latency_p50_ms") and row.get("latency_p50_ms"):
        parts.append(f"{row['latency_p50_ms'] - base['latency_p50_ms']:+.2f} ms")
    verdict = "passes" if row.get("gate_passed") else "not evaluated" if "gate_passed" not in row else "fails"
    return ": ".join([parts[0], ", ".join(parts[1:] + [verdict])]) + f" (vs {base.get('name', 'plain int8')})"


@holds_run_lock("report")
def build_report(run: RunDir) -> Path:
    """Render ``RUN/reports/index.html`` from the run's files and return its path."""
    import jinja2

    config = run.config()
    evaluation = runfiles.read_or_none(runfiles.EvaluateReport, run.evaluate_path)
    benchmark = runfiles.read_or_none(runfiles.BenchmarkReport, run.benchmark_path)
    manifest = runfiles.read_or_none(runfiles.Manifest, run.manifest_path)
    if manifest:
        check_complete(run, manifest)
    keras_report = read_json_or_none(run.reports / "keras_test_report.json")
    skipped = read_json_or_none(run.skipped_path) or []
    duplicates = runfiles.read_or_none(runfiles.Duplicates, run.duplicates_path)

    card = write_model_card(run)  # beside the page, from the same files; the page links it
    rows = export_rows(evaluation, benchmark, manifest)
    reasons = Counter(s.get("reason", "?") for s in skipped)
    images = {"curves": _png(run.root / "training_curves.png"),
              "keras_confusion": _png(run.reports / "keras_confusion.png"),
              "latency_accuracy": _png(run.reports / "benchmark.png")}
    confusions = [(r["name"], _png(run.root / r["confusion_png"])) for r in rows if r.get("confusion_png")]
    quant_debug = read_json_or_none(run.reports / "quant_debug.json")
    for m in (quant_debug or {}).get("models", []):
        m["plot_png"] = _png(run.root / m["plot"])
    env = jinja2.Environment(loader=jinja2.PackageLoader("skinscan_edge.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    twin = {"columns": TWIN_COLUMNS, "note": TWIN_NOTE, "rows": twin_rows(evaluation) if evaluation else []}
    client = {"columns": CLIENT_COLUMNS, "note": CLIENT_NOTE, "rows": client_rows(evaluation) if evaluation else []}
    env.filters["num"] = _num
    env.filters["signed"] = _signed
    env.filters["failure"] = failure_text
    page = env.get_template(TEMPLATE).render(
        run=run.root.name, run_path=str(run.root), created=timestamp()[:16].replace("T", " "),
        config=config, train=config["train"], status=run.status(), labels=run.labels(),
        synthetic=is_synthetic(config.get("data_root")), skipped=skipped, reasons=reasons,
        keras_report=keras_report, evaluation=evaluation, duplicates=duplicates, benchmark=benchmark, manifest=manifest,
        rows=rows, pick=recommend(run, rows), images=images, confusions=[c for c in confusions if c[1]],
        data_warning=_data_warning(run),
        model_card=f"../{card.name}", phone=phone_rows(benchmark),
        quant_debug=quant_debug, twin=twin, client=client,
    )
    out = run.reports / INDEX_NAME
    atomic_write_text(out, page)
    return out


def _data_warning(run: RunDir) -> str | None:
    """'model trained on an older copy of the data: N added, ...' when the data changed since training."""
    change = data_change(run)
    return change.warning() if change else None


def _num(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)  # autoescaped by jinja


def _signed(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:+.{digits}f}"

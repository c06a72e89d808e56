"""benchmark.md and benchmark.csv, rendered from the dict written to ``benchmark.json``. Nothing
here measures anything.
"""

from __future__ import annotations

from skinscan_edge.benchmark.quant_order import int8_target, slower_quantized
from skinscan_edge.core.formats import target_precisions
from skinscan_edge.core.host import floor_ms


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
            target = int8_target(results.get("host"))
        verdict = "meets" if best["x_floor"] <= target else "misses"
        lines.append(f"- fastest {kind} export: {best['model']}, p50 {best['latency_p50_ms']:.1f} ms = "
                     f"{best['x_floor']:.2f} x its floor ({best['floor_ms']:.1f} ms); {verdict} the "
                     f"{target} x target")
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

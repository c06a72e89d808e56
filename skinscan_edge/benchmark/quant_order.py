"""Benchmark checks on quantized files: a more quantized file should not be slower than a
less quantized one, and the int8 floor target depends on the CPU.

Quantizing trades accuracy for speed; a file that pays the accuracy and is slower anyway has
a cause worth naming (a graph split across delegate partitions, ops left in float, or a CPU
without fast int8 dot products). Rows are compared within one runtime (TFLite with TFLite,
ONNX with ONNX), at batch 1 and one thread count, from the same benchmark run.
"""

from __future__ import annotations

from skinscan_edge.core.formats import quantization

#: Slower by more than this share counts (below it, a shared host's noise decides).
MARGIN = 0.05
#: Ops a full-integer TFLite file may leave outside XNNPACK: the uint8 -> int8 input
#: quantize and the int8 softmax (XNNPACK has no quantized softmax).
IO_OPS = {"QUANTIZE", "DEQUANTIZE", "SOFTMAX"}
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
#: int8 p50 / int8 floor targets (issue 16): the AVX-512/AMX floor is so high (VNNI, tiles)
#: that batch-1 convolutions reach less of it than on AVX2.
INT8_TARGET_WIDE, INT8_TARGET = 3.0, 2.5


def int8_target(host: dict | None) -> float:
    """The x-floor target of the fastest int8 export on this host: 3x with AVX-512 or AMX, else 2.5x."""
    flags = (host or {}).get("cpu_flags") or {}
    return INT8_TARGET_WIDE if flags.get("avx512f") or flags.get("amx_int8") else INT8_TARGET


def likely_reason(row: dict, faster: dict, host: dict | None = None) -> str:
    """Why ``row`` is slower than the less quantized ``faster``, from what the benchmark recorded."""
    reasons = []
    parts = row.get("xnnpack_partitions")
    builtin = [o for o in str(row.get("builtin_ops") or "").split(", ") if o]
    if parts and parts > 1:
        reasons.append(f"XNNPACK split the graph into {parts} partitions")
    inner = [o for o in builtin if o not in IO_OPS]
    if inner:
        reasons.append(f"{', '.join(inner)} left to LiteRT's builtin kernels")
    if row.get("format") == "onnx" and row.get("accelerated") is False:
        reasons.append(f"onnxruntime kept float kernels ({row.get('accelerator_detail', '')})")
    flags = (host or {}).get("cpu_flags") or {}
    if quantization(faster["precision"]).floor == "fp32" and flags and not any(flags.get(f) for f in VNNI_FLAGS):
        reasons.append("this CPU has no int8 dot-product instructions (VNNI/dotprod), so int8 GEMMs "
                       "are little faster than float ones")
    return "; ".join(reasons) or "no split or fallback recorded: compare the kernels of the two rows"


def slower_quantized(rows: list[dict], threads: int, host: dict | None = None) -> list[str]:
    """One line per (less, more quantized) pair of the same runtime where the more quantized
    file's batch-1 p50 is over MARGIN slower, naming the likely reason."""
    ok = [r for r in rows if r.get("device") == "cpu" and r.get("threads") == threads
          and r.get("latency_p50_ms") and r.get("format") not in (None, "keras")]
    lines = []
    for fast in ok:
        for slow in ok:
            if (slow["format"] == fast["format"]
                    and quantization(slow["precision"]).level > quantization(fast["precision"]).level
                    and slow["latency_p50_ms"] > fast["latency_p50_ms"] * (1 + MARGIN)):
                lines.append(f"- {slow['model']} ({slow['latency_p50_ms']:.1f} ms) is slower than the less "
                             f"quantized {fast['model']} ({fast['latency_p50_ms']:.1f} ms): "
                             f"{likely_reason(slow, fast, host)}")
    return lines

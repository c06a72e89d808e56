"""The benchmark's check: a more quantized file slower than a less quantized one is flagged,
with the likely reason read from the row."""

from __future__ import annotations

from skinscan_edge.benchmark.quant_order import slower_quantized


def _row(model, fmt, precision, p50, threads=2, **kw):
    return {"model": model, "format": fmt, "precision": precision, "device": "cpu", "threads": threads,
            "latency_p50_ms": p50, **kw}


NO_VNNI = {"cpu_flags": {"avx2": True, "avx512_vnni": False}}
VNNI = {"cpu_flags": {"avx2": True, "avx512_vnni": True}}


def test_int8_slower_than_dynamic_names_the_partitions_and_builtin_ops():
    rows = [_row("tflite-dynamic", "tflite", "dynamic", 10.9, xnnpack_partitions=1, builtin_ops=""),
            _row("tflite-int8", "tflite", "int8", 17.2, xnnpack_partitions=10,
                 builtin_ops="AVERAGE_POOL_2D, QUANTIZE, SOFTMAX")]
    (line,) = slower_quantized(rows, 2, VNNI)
    assert line.startswith("- tflite-int8 (17.2 ms) is slower than the less quantized tflite-dynamic (10.9 ms)")
    assert "10 partitions" in line and "AVERAGE_POOL_2D left to LiteRT's builtin kernels" in line
    assert "QUANTIZE" not in line.split(":", 1)[1]  # the I/O quantize and softmax may stay outside


def test_float_kernels_and_missing_vnni_are_named():
    rows = [_row("onnx-fp32", "onnx", "fp32", 40.0), _row("onnx-int8", "onnx", "int8", 45.0, accelerated=False,
                                                           accelerator_detail="41 float conv/matmul")]
    (line,) = slower_quantized(rows, 2, NO_VNNI)
    assert "onnxruntime kept float kernels (41 float conv/matmul)" in line and "no int8 dot-product" in line
    assert "dot-product" not in slower_quantized(rows, 2, VNNI)[0]


def test_faster_noise_other_runtime_and_other_threads_are_not_flagged():
    rows = [_row("tflite-dynamic", "tflite", "dynamic", 10.0), _row("tflite-int8", "tflite", "int8", 10.4),  # within 5%
            _row("onnx-int8", "onnx", "int8", 30.0),  # another runtime: not compared with TFLite
            _row("tflite-fp32", "tflite", "fp32", 5.0, threads=1)]  # another thread count
    assert slower_quantized(rows, 2, VNNI) == []
    assert sorted(slower_quantized(rows + [_row("tflite-fp16", "tflite", "fp16", 9.0)], 2, VNNI)) == [
        "- tflite-dynamic (10.0 ms) is slower than the less quantized tflite-fp16 (9.0 ms): no split or fallback "
        "recorded: compare the kernels of the two rows",
        "- tflite-int8 (10.4 ms) is slower than the less quantized tflite-fp16 (9.0 ms): no split or fallback "
        "recorded: compare the kernels of the two rows"]


def test_int8_floor_target_depends_on_the_cpu():
    from skinscan_edge.benchmark.quant_order import int8_target

    assert int8_target({"cpu_flags": {"avx2": True, "avx512f": True}}) == 3.0
    assert int8_target({"cpu_flags": {"avx2": True, "amx_int8": True}}) == 3.0
    assert int8_target({"cpu_flags": {"avx2": True, "avx512f": False}}) == 2.5
    assert int8_target(None) == 2.5

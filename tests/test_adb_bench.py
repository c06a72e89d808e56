"""Phone latency over adb, against a fake `adb` (tests/fake_adb/adb) that replays real
benchmark_model output (tests/data/benchmark_model/, origins in its SOURCES.md).

No phone was measured: these tests prove the pushing, the runs' flags, the parsing and the rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from skinscan_edge.benchmark.adb import ADB_RUNS, DEVICE_DIR, adb_rows, parse_benchmark_output
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.rundir import RunDir
from skinscan_edge.core.files import write_json

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "benchmark_model"
ALL_OK = {"cpu1": "cpu_1thread.txt", "cpu4": "cpu_4threads.txt", "gpu": "gpu_full.txt", "nnapi": "nnapi_partial.txt"}


def _sample(name: str) -> dict:
    return parse_benchmark_output((DATA / name).read_text())


# --- the parser, on every sample (expected values copied from the files by hand) ----------------
@pytest.mark.parametrize("name, expected", [
    ("cpu_1thread.txt", dict(load_ms=20.283, first_inference_ms=339.304, warmup_mean_ms=302.814, latency_mean_ms=266.473,
                             latency_runs=50, latency_std_ms=0.419, latency_min_ms=265.837, latency_max_ms=268.116)),
    ("cpu_4threads.txt", dict(latency_mean_ms=55.0432, latency_std_ms=1.562, memory_init_mb=8.97656,
                              memory_overall_mb=18.7227)),
    ("gpu_full.txt", dict(load_ms=1361.236, latency_mean_ms=115.246, latency_p5_ms=112.107, latency_p50_ms=115.35,
                          latency_p95_ms=116.62, latency_runs=50, memory_overall_mb=132.816, delegation="full",
                          delegate="GPU", delegate_kernels=1)),
    ("gpu_partial.txt", dict(latency_mean_ms=12.1676, delegation="partial", delegate="GPU", delegate_kernels=9,
                             gpu_ops=97, cpu_ops=200)),
    ("nnapi_partial.txt", dict(latency_mean_ms=12.1676, latency_runs=75, delegation="partial", delegate="NNAPI",
                               delegate_kernels=44)),
    ("nnapi_not_executed.txt", dict(latency_mean_ms=112.533, delegation="none", delegate="NNAPI", delegate_kernels=0,
                                    memory_init_mb=6.70312, memory_overall_mb=63.4023)),
    ("gpu_failed.txt", dict(delegation="failed", delegate="GPU")),
])
def test_parse_benchmark_output(name, expected):
    got = _sample(name)
    assert {k: got.get(k) for k in expected} == pytest.approx(expected)


def test_parser_reads_the_gpu_op_coverage_and_prints_no_invented_percentiles():
    partial = _sample("gpu_partial.txt")
    assert partial["unsupported_ops"] == ["ARG_MAX", "CAST", "CONCATENATION", "DEQUANTIZE", "FLOOR_DIV", "GATHER_ND",
                                          "MUL", "PACK", "RESHAPE", "SUB", "UNPACK"]
    old = _sample("cpu_1thread.txt")  # an older release prints no percentiles and no memory line
    assert not {"latency_p50_ms", "latency_p95_ms", "memory_overall_mb", "delegation"} & set(old)
    assert "latency_mean_ms" not in _sample("gpu_failed.txt")


# --- adb_rows against the fake adb --------------------------------------------------------------
@pytest.fixture
def phone(tmp_path, monkeypatch):
    """A run with two TFLite exports and one ONNX export, the fake adb first on PATH, a binary."""
    run = RunDir(tmp_path / "run")
    run.exports.mkdir(parents=True)
    entries = []
    for name, file, fmt, precision in [("tflite-fp32", "model_fp32.tflite", "tflite", "fp32"),
                                       ("tflite-int8", "model_int8.tflite", "tflite", "int8"),
                                       ("onnx-fp32", "model_fp32.onnx", "onnx", "fp32")]:
        data = f"not a real {name}".encode()
        (run.exports / file).write_bytes(data)
        entries.append({"name": name, "file": file, "format": fmt, "precision": precision, "size_bytes": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
    write_json(run.manifest_path, {"exports": entries, "failures": [], "state": "complete"})
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF fake")
    log = tmp_path / "adb.log"
    monkeypatch.setenv("PATH", f"{HERE / 'fake_adb'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_SAMPLES", json.dumps(ALL_OK))
    return run, entries, binary, log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_every_tflite_export_runs_every_setting_on_the_phone(phone):
    run, entries, binary, log = phone
    rows = adb_rows(run, entries, "auto", binary)
    assert [(r["model"], r["accelerator"], r["threads"]) for r in rows] == [
        (e["name"], s.accelerator, s.threads) for e in entries[:2] for s in ADB_RUNS]  # the ONNX file is not pushed
    assert {r["device"] for r in rows} == {"android:Pixel 7"}
    pushes = [c[3:] for c in _calls(log) if c[2:3] == ["push"]]
    assert pushes == [[str(binary), f"{DEVICE_DIR}/benchmark_model"],
                      [str(run.exports / "model_fp32.tflite"), f"{DEVICE_DIR}/model_fp32.tflite"],
                      [str(run.exports / "model_int8.tflite"), f"{DEVICE_DIR}/model_int8.tflite"]]
    runs = [" ".join(c[3:]) for c in _calls(log) if c[2:3] == ["shell"] and "--graph=" in " ".join(c)]
    assert runs[:4] == [f"{DEVICE_DIR}/benchmark_model --graph={DEVICE_DIR}/model_fp32.tflite {' '.join(s.flags)}"
                        for s in ADB_RUNS]
    cpu1, cpu4, gpu, nnapi = rows[:4]
    assert cpu1["latency_mean_ms"] == pytest.approx(266.473) and "latency_p50_ms" not in cpu1
    assert cpu4["memory_overall_mb"] == pytest.approx(18.7227)
    assert gpu["latency_p50_ms"] == pytest.approx(115.35) and gpu["accelerator_detail"] == "GPU delegate ran the whole graph"
    assert nnapi["accelerator_detail"].startswith("NNAPI delegate ran part of the graph (44 delegate kernels")
    assert not any("error" in r or "skipped" in r for r in rows)


def test_a_delegate_failure_and_partial_delegation_are_said_in_the_row(phone, monkeypatch):
    run, entries, binary, _ = phone
    monkeypatch.setenv("FAKE_ADB_SAMPLES", json.dumps({**ALL_OK, "gpu": "gpu_failed.txt", "nnapi": "nnapi_not_executed.txt"}))
    failed, none = adb_rows(run, entries[:1], "emulator-5554", binary)[2:]
    assert failed["delegation"] == "failed" and "error" not in failed
    assert failed["skipped"].startswith("GPU delegate could not run this model: ERROR: Failed to build program executable")
    assert failed["accelerator_detail"] == "GPU delegate failed to apply"
    assert none["accelerator_detail"] == "NNAPI delegate applied but ran no node: everything on CPU"

    monkeypatch.setenv("FAKE_ADB_SAMPLES", json.dumps({**ALL_OK, "gpu": "gpu_partial.txt"}))
    gpu = adb_rows(run, entries[:1], "auto", binary)[2]
    assert gpu["delegation"] == "partial" and (gpu["gpu_ops"], gpu["cpu_ops"]) == (97, 200)
    assert gpu["accelerator_detail"] == (
        "GPU delegate ran part of the graph (9 delegate kernels, the rest on CPU); 97 ops on the GPU, 200 on the CPU "
        "(unsupported: ARG_MAX, CAST, CONCATENATION, DEQUANTIZE, FLOOR_DIV, GATHER_ND, MUL, PACK, RESHAPE, SUB, UNPACK)")


def test_nnapi_is_skipped_on_a_device_without_it(phone, monkeypatch):
    run, entries, binary, log = phone
    monkeypatch.setenv("FAKE_ADB_SDK", "26")
    nnapi = adb_rows(run, entries[:1], "auto", binary)[3]
    assert nnapi["skipped"] == "NNAPI needs Android 8.1 (API 27); this device runs API 26"
    assert not any("--use_nnapi=true" in " ".join(c) for c in _calls(log))


@pytest.mark.parametrize("devices, serial, message", [
    ("", "auto", "no Android device attached; connect a phone with USB debugging on"),
    ("R58M:unauthorized", "auto", "no Android device attached (R58M: unauthorized)"),
    ("A:device,B:device", "auto", "2 Android devices attached (A, B); name one with --adb SERIAL"),
    ("A:device", "Z9", "Android device Z9 is not attached (adb devices lists: A)"),
])
def test_a_missing_device_is_a_one_line_error(phone, monkeypatch, devices, serial, message):
    run, entries, binary, _ = phone
    monkeypatch.setenv("FAKE_ADB_DEVICES", devices)
    with pytest.raises(SkinscanError) as err:
        adb_rows(run, entries, serial, binary)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_missing_binary_or_adb_is_a_one_line_error(phone, monkeypatch, tmp_path):
    run, entries, binary, log = phone
    with pytest.raises(SkinscanError, match=r"--benchmark-model .*nope not found; download LiteRT's benchmark_model"):
        adb_rows(run, entries, "auto", tmp_path / "nope")
    assert not log.exists()  # nothing was sent to the device
    monkeypatch.setenv("PATH", str(tmp_path))  # no adb anywhere
    with pytest.raises(SkinscanError, match="adb not found on PATH; install Android's platform-tools"):
        adb_rows(run, entries, "auto", binary)


def test_benchmark_json_carries_the_phone_rows_beside_the_desktop_rows(phone):
    """The sweep's wiring: run_benchmark adds the phone's rows; benchmark.md and the report show them."""
    from skinscan_edge.benchmark.harness import run_benchmark
    from skinscan_edge.core.config_stages import BenchmarkConfig
    from skinscan_edge.benchmark.markdown import render_benchmark_markdown
    from skinscan_edge.report.page import phone_rows

    run, _, binary, _ = phone
    write_json(run.config_path, {"train": {"img_size": 75}})
    run.labels_path.write_text("a\nb\n")
    run.model_path.write_bytes(b"never loaded: only tflite-int8 is benchmarked")
    run.set_status("complete")
    write_json(run.split_path, {"root": str(run.root), "seed": 0, "splits": {"train": [], "val": [], "test": []}})
    cfg = BenchmarkConfig(models=("tflite-int8",), threads=(1,), batches=(1,), floor=False, adb="auto",
                          benchmark_model=str(binary))
    results = run_benchmark(run.root, cfg)
    desktop = [r for r in results["rows"] if r["device"] == "cpu"]
    phone_side = [r for r in results["rows"] if r["device"] == "android:Pixel 7"]
    assert [r["model"] for r in desktop] == ["tflite-int8"] and "error" in desktop[0]  # not a real model file
    assert len(phone_side) == len(ADB_RUNS) and not any("floor_note" in r for r in phone_side)
    md = render_benchmark_markdown(json.loads((run.reports / "benchmark.json").read_text()))
    assert "| tflite-int8 | int8 | android:Pixel 7 | 4 |" in md
    shown = phone_rows(results)
    assert [r["accelerator"] for r in shown] == [s.accelerator for s in ADB_RUNS]
    assert shown[2]["latency_p50_ms"] == pytest.approx(115.35)


def test_adb_needs_the_binary_and_the_binary_needs_adb():
    from skinscan_edge.core.config_stages import BenchmarkConfig

    for kwargs in ({"adb": "auto"}, {"benchmark_model": "bm"}):
        with pytest.raises(SkinscanError, match="--adb SERIAL and --benchmark-model PATH go together"):
            BenchmarkConfig(**kwargs)

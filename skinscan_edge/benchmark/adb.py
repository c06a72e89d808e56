"""Phone latency over adb: LiteRT's ``benchmark_model`` on an Android device, one row per run.

``benchmark --adb SERIAL --benchmark-model PATH`` pushes the binary (the user downloads it: the
docs/android.md says from where) and each ``.tflite`` export to ``/data/local/tmp/skinscan/``, then runs
every setting of :data:`ADB_RUNS` (CPU at 1 and 4 threads with XNNPACK, the GPU delegate, NNAPI
where the device has it) and parses what ``benchmark_model`` prints into flat rows with
``device: "android:<model>"``. A delegate that fails to apply, or runs only part of the graph,
is said in the row (``delegation``, ``delegate_kernels``, the GPU op coverage). Nothing here is
timed on this host: every figure is the phone's own, as the tool printed it.

>>> parse_benchmark_output("Inference timings in us: Init: 20283, First inference: 339304, "
...                        "Warmup (avg): 302814, Inference (avg): 266473")["latency_mean_ms"]
266.473
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.manifest import verify_entry
from skinscan_edge.core.progress import Reporter, reporter_or_silent

#: Where the binary and the models go on the device (adb's scratch space, writable by the shell user).
DEVICE_DIR = "/data/local/tmp/skinscan"
#: Where LiteRT publishes the prebuilt Android binary (docs/android.md, "Phone latency over adb").
BINARY_URL = ("https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/"
              "nightly/latest/android_aarch64_benchmark_model")
#: NNAPI exists from Android 8.1 (API 27).
NNAPI_MIN_SDK = 27
ADB_TIMEOUT_S = 900
#: adb calls that should answer at once (devices, getprop, mkdir, chmod).
ADB_STEP_TIMEOUT_S = 60


@dataclass(frozen=True)
class AdbRun:
    """One benchmark_model setting: its row's ``accelerator``, threads and flags."""

    accelerator: str
    threads: int | None
    flags: tuple[str, ...]


ADB_RUNS = (
    AdbRun("cpu-xnnpack", 1, ("--num_threads=1", "--use_xnnpack=true")),
    AdbRun("cpu-xnnpack", 4, ("--num_threads=4", "--use_xnnpack=true")),
    AdbRun("gpu", None, ("--use_gpu=true",)),
    AdbRun("nnapi", None, ("--use_nnapi=true",)),
)

_NUM = r"([-+]?[0-9.]+(?:e[-+]?[0-9]+)?)"
_TIMINGS = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
                      rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}")
_STATS = re.compile(rf"count=(\d+) first=\d+ curr=\d+ min={_NUM} max={_NUM} avg={_NUM} std={_NUM}"
                    rf"(?: p5={_NUM} median={_NUM} p95={_NUM})?")
#: "Memory footprint delta ..." (current) and "Peak memory footprint (MB): init= overall=" (older releases).
_MEMORY = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                     rf"init={_NUM} overall={_NUM}")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}")
_FULL = re.compile(r"Explicitly applied (\S+) delegate, and the model graph will be completely executed")
_PARTIAL = re.compile(r"Explicitly applied (\S+) delegate, and the model graph will be partially executed "
                      r"by the delegate w/ (\d+) delegate kernels")
_NONE = re.compile(r"Though (\S+) delegate is explicitly applied, the model graph will not be executed")
_FAILED = re.compile(r"Failed to apply (\S+) delegate")
_GPU_OPS = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations will run on the CPU")
_UNSUPPORTED_HEAD = "operations are not supported by GPU delegate"
_UNSUPPORTED_OP = re.compile(r"^\s*([A-Z][A-Z0-9_]+):")
_UNAVAILABLE = re.compile(r"(GPU|NNAPI) acceleration is unsupported on this platform")


def parse_benchmark_output(text: str) -> dict:
    """benchmark_model's printout as flat keys (ms, MB); only what it printed is present.

    ``latency_*`` come from the regular runs' statistics line (the last ``count=`` line): mean,
    std, min, max, and p5 / p50 (median) / p95 where the release prints them (it prints no p90).
    ``delegation`` is ``full``, ``partial``, ``none`` or ``failed``; the GPU delegate's op
    coverage (``gpu_ops``, ``cpu_ops``, ``unsupported_ops``) when it printed one.
    """
    out: dict = {}
    t = _TIMINGS.search(text)
    if t:
        init, first, warmup, avg = (float(v) / 1e3 for v in t.groups())
        out.update(load_ms=init, first_inference_ms=first, warmup_mean_ms=warmup, latency_mean_ms=avg)
    stats = _STATS.findall(text)
    if stats:
        count, lo, hi, avg, std, p5, p50, p95 = stats[-1]
        out.update(latency_runs=int(count), latency_min_ms=float(lo) / 1e3, latency_max_ms=float(hi) / 1e3,
                   latency_std_ms=float(std) / 1e3)
        if p50:
            out.update(latency_p5_ms=float(p5) / 1e3, latency_p50_ms=float(p50) / 1e3, latency_p95_ms=float(p95) / 1e3)
    m = _MEMORY.search(text)
    if m:
        out.update(memory_init_mb=float(m.group(1)), memory_overall_mb=float(m.group(2)))
    p = _PEAK.search(text)
    if p:
        out["peak_memory_mb"] = float(p.group(1))
    out.update(_delegation(text))
    return out


def _delegation(text: str) -> dict:
    out: dict = {}
    if (m := _FAILED.search(text)):
        out.update(delegation="failed", delegate=m.group(1))
    elif (m := _PARTIAL.search(text)):
        out.update(delegation="partial", delegate=m.group(1), delegate_kernels=int(m.group(2)))
    elif (m := _FULL.search(text)):
        out.update(delegation="full", delegate=m.group(1), delegate_kernels=1)
    elif (m := _NONE.search(text)):
        out.update(delegation="none", delegate=m.group(1), delegate_kernels=0)
    if (u := _UNAVAILABLE.search(text)):
        out.update(delegation="unavailable", delegate=u.group(1))
    if (g := _GPU_OPS.search(text)):
        out.update(gpu_ops=int(g.group(1)), cpu_ops=int(g.group(2)))
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _UNSUPPORTED_HEAD in line), None)
    if start is not None:
        ops = []
        for line in lines[start + 1:]:
            op = _UNSUPPORTED_OP.match(line.split(" : ", 1)[-1])  # a logcat prefix ends with " : "
            if not op:
                if line.strip():
                    break
                continue
            ops.append(op.group(1))
        out["unsupported_ops"] = ops
    return out


def describe_delegation(row: dict) -> str:
    """One line for the report: what ran where."""
    d = row.get("delegation")
    if row.get("accelerator", "").startswith("cpu"):
        base = "CPU, XNNPACK"
        return base + (f" ({d})" if d and d != "full" else "")
    name = row.get("delegate") or row.get("accelerator", "").upper()
    if d == "full":
        text = f"{name} delegate ran the whole graph"
    elif d == "partial":
        text = f"{name} delegate ran part of the graph ({row.get('delegate_kernels')} delegate kernels, the rest on CPU)"
    elif d == "none":
        text = f"{name} delegate applied but ran no node: everything on CPU"
    elif d == "failed":
        text = f"{name} delegate failed to apply"
    elif d == "unavailable":
        text = f"{name} acceleration is unsupported on this device"
    else:
        text = f"{name}: benchmark_model did not say what the delegate ran"
    if row.get("gpu_ops") is not None:
        text += f"; {row['gpu_ops']} ops on the GPU, {row['cpu_ops']} on the CPU"
    if row.get("unsupported_ops"):
        text += f" (unsupported: {', '.join(row['unsupported_ops'])})"
    return text


# --- adb ------------------------------------------------------------------------------------
def _adb(args: list[str], timeout: float = ADB_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(["adb", *args], capture_output=True, text=True, timeout=timeout)


def _adb_step(args: list[str], timeout: float | None = None) -> subprocess.CompletedProcess:
    """An adb call the benchmark cannot go on without: a hang or a failure is one line carrying
    adb's own words (issue 28, D4)."""
    timeout = ADB_STEP_TIMEOUT_S if timeout is None else timeout
    try:
        done = _adb(args, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SkinscanError(f"`adb {' '.join(args)}` did not answer within {timeout:.0f} s; unplug and reconnect the "
                            f"phone, or restart adb (`adb kill-server`), then retry") from None
    if done.returncode != 0:
        said = ((done.stderr or "").strip() or (done.stdout or "").strip() or "no output").splitlines()[-1]
        raise SkinscanError(f"`adb {' '.join(args)}` exited {done.returncode}: {said[-200:]}")
    return done


def pick_device(serial: str) -> str:
    """The serial to use: ``serial`` itself, or with ``auto`` the only attached device."""
    if shutil.which("adb") is None:
        raise SkinscanError("adb not found on PATH; install Android's platform-tools "
                            "(https://developer.android.com/tools/releases/platform-tools) and retry")
    listed = _adb_step(["devices"])
    devices = {}
    for line in listed.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2:
            devices[parts[0]] = parts[1]
    ready = [s for s, state in devices.items() if state == "device"]
    if serial == "auto":
        if not ready:
            others = f" ({', '.join(f'{s}: {st}' for s, st in devices.items())})" if devices else ""
            raise SkinscanError(f"no Android device attached{others}; connect a phone with USB debugging on "
                                f"and accept its prompt, then check `adb devices`")
        if len(ready) > 1:
            raise SkinscanError(f"{len(ready)} Android devices attached ({', '.join(ready)}); name one with --adb SERIAL")
        return ready[0]
    if devices.get(serial) != "device":
        state = devices.get(serial)
        why = f"is {state}" if state else "is not attached"
        raise SkinscanError(f"Android device {serial} {why} (adb devices lists: {', '.join(devices) or 'none'}); "
                            f"connect it with USB debugging on and accept its prompt")
    return serial


def preflight(serial: str, binary: str | Path) -> str:
    """Fail early, before any desktop row is measured: the binary exists and the device is there."""
    if not Path(binary).is_file():
        raise SkinscanError(f"--benchmark-model {binary} not found; download LiteRT's benchmark_model for "
                            f"Android ({BINARY_URL}) and pass its path")
    return pick_device(serial)


def _shell(serial: str, command: str, timeout: float = ADB_TIMEOUT_S) -> subprocess.CompletedProcess:
    return _adb(["-s", serial, "shell", command], timeout=timeout)


def _push(serial: str, local: Path, remote: str) -> None:
    try:
        done = _adb(["-s", serial, "push", str(local), remote])
    except subprocess.TimeoutExpired:
        raise SkinscanError(f"adb push {local} did not finish within {ADB_TIMEOUT_S} s; check the USB connection "
                            f"and retry") from None
    if done.returncode != 0:
        raise SkinscanError(f"adb push {local} failed ({(done.stderr or done.stdout).strip()[-200:]}); "
                            f"check the device's free space in /data/local/tmp")


def adb_rows(run, entries: list[dict], serial: str, binary: str | Path,
             reporter: Reporter | None = None) -> list[dict]:
    """Benchmark every TFLite entry on the phone; one row per (entry, :data:`ADB_RUNS` setting).

    A failed run is a row with ``error`` (and the delegate's verdict), a setting the device
    lacks one with ``skipped``; the sweep goes on either way.
    """
    say = reporter_or_silent(reporter)
    binary = Path(binary)
    serial = preflight(serial, binary)
    model = _adb_step(["-s", serial, "shell", "getprop ro.product.model"]).stdout.strip() or serial
    sdk = _adb_step(["-s", serial, "shell", "getprop ro.build.version.sdk"]).stdout.strip()
    device = f"android:{model}"
    _adb_step(["-s", serial, "shell", f"mkdir -p {DEVICE_DIR}"])
    _push(serial, binary, f"{DEVICE_DIR}/benchmark_model")
    _adb_step(["-s", serial, "shell", f"chmod 755 {DEVICE_DIR}/benchmark_model"])
    rows = []
    tflite = [e for e in entries if e.get("format") == "tflite"]
    total, done = len(tflite) * len(ADB_RUNS), 0
    for entry in tflite:
        path = verify_entry(run, entry)
        remote = f"{DEVICE_DIR}/{path.name}"
        _push(serial, path, remote)
        for setting in ADB_RUNS:
            row = {"model": entry["name"], "format": "tflite", "precision": entry["precision"],
                   "file": f"exports/{entry['file']}", "device": device, "threads": setting.threads,
                   "accelerator": setting.accelerator, "size_mb": path.stat().st_size / 1e6,
                   "android_sdk": int(sdk) if sdk.isdigit() else None}
            if setting.accelerator == "nnapi" and sdk.isdigit() and int(sdk) < NNAPI_MIN_SDK:
                row["skipped"] = f"NNAPI needs Android 8.1 (API {NNAPI_MIN_SDK}); this device runs API {sdk}"
            else:
                row.update(_run_one(serial, remote, setting))
            row["accelerator_detail"] = describe_delegation(row)
            rows.append(row)
            done += 1
            say.advance("phone", done, total)
            say.row("benchmark", row)
    return rows


def _run_one(serial: str, remote: str, setting: AdbRun) -> dict:
    cmd = " ".join([f"{DEVICE_DIR}/benchmark_model", f"--graph={remote}", *setting.flags])
    try:
        done = _shell(serial, cmd)
    except subprocess.TimeoutExpired:
        return {"error": f"benchmark_model ran over {ADB_TIMEOUT_S} s on the device"}
    text = done.stdout + done.stderr
    parsed = parse_benchmark_output(text)
    if done.returncode != 0 or "latency_mean_ms" not in parsed:
        errors = [line.strip() for line in text.splitlines() if "ERROR" in line or "Failed" in line]
        first = next((e for e in errors if "Failed to apply" not in e and "Benchmarking failed" not in e), None)
        last = first or (errors[-1] if errors else (text.strip().splitlines() or ["no output"])[-1])
        if parsed.get("delegation") in ("failed", "unavailable"):  # a finding about the phone, not a harness error
            parsed["skipped"] = f"{parsed['delegate']} delegate could not run this model: {last[-200:]}"
        else:
            parsed["error"] = f"benchmark_model exited {done.returncode}: {last[-200:]}"
    return parsed

"""What a phone's CPU computes, without a phone: exports on arm64 kernels under QEMU user-mode.

``make arm64-env`` (scripts/arm64_env.sh) unpacks Debian's arm64 Python 3.11 into ``.arm64/root``
and the arm64 wheels of numpy, ai-edge-litert and onnxruntime into ``.arm64/site``. Each model
then runs in ``qemu-aarch64-static -cpu CPU -L ROOT ROOT/usr/bin/python3.11 arm64_worker.py``:
XNNPACK, LiteRT's builtin kernels and onnxruntime's MLAS pick their arm64 kernels from the CPU
features QEMU emulates (dot-product and i8mm on ``max``; plain NEON on ``cortex-a53``).

QEMU 7.2 (Debian bookworm) hands an aarch64 guest the host's x86 ``/proc/cpuinfo``; the cpuinfo
library inside LiteRT 2.x and onnxruntime finds no ARM core in it and dereferences a null pointer
(the segfault of issue 30). QEMU 8.2 writes an ARM ``/proc/cpuinfo`` from the emulated CPU's MIDR
and HWCAPs; :func:`cpu_root` does the same for 7.2, in a per-CPU root whose ``proc/cpuinfo`` the
``-L`` prefix serves to the guest (docs/arm64.md).

>>> # rows, section = score_arm64(run, config, entries, items, probs, labels, say)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from skinscan_edge.core import metrics
from skinscan_edge.core.arm64env import CPUS, DEFAULT_CPUS, env_dir, find_env
from skinscan_edge.core.errors import did_you_mean, SkinscanError
from skinscan_edge.core.metrics import score_against_baseline
from skinscan_edge.core.plots import save_confusion
from skinscan_edge.data.imagecache import split_image_loader
from skinscan_edge.runtimes.models import describe, verified_path

#: Linux arm64 HWCAP / HWCAP2 bit names (arch/arm64/include/uapi/asm/hwcap.h), as /proc/cpuinfo prints them.
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
         "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
          "i8mm bf16 dgh rng bti mte").split()
#: The instructions that tell the int8 kernel families apart in a QEMU ``-d in_asm`` trace.
INT8_INSTRUCTIONS = ("smmla", "ummla", "usmmla", "sdot", "udot", "usdot", "sudot", "smlal", "smlal2", "umlal",
                     "umlal2", "smull", "smull2", "sadalp", "sve", "sme")
WORKER = Path(__file__).with_name("arm64_worker.py")






def qemu_version(env: dict) -> str:
    out = subprocess.run([env["qemu"], "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def feature_names(hwcap: int, hwcap2: int) -> list[str]:
    return [n for i, n in enumerate(HWCAP) if hwcap >> i & 1] + [n for i, n in enumerate(HWCAP2) if hwcap2 >> i & 1]


def cpu_root(env: dict, cpu: str) -> tuple[Path, list[str]]:
    """A root for ``-L`` that is ROOT plus a ``proc/cpuinfo`` describing the emulated ``cpu``, and the
    CPU's features. The features are the HWCAPs QEMU hands the guest (read from its auxv), so the
    file says what the cpuinfo library would read on that core; the MIDR is QEMU's for the model."""
    if cpu not in CPUS:
        raise SkinscanError("--arm64-cpu: " + did_you_mean(cpu, list(CPUS), "CPU"))
    overlay = env_dir() / "cpus" / CPUS[cpu][0].replace(",", "_").replace("=", "-")  # per QEMU -cpu value
    cached = overlay / "features.json"
    if cached.exists():
        return overlay, json.loads(cached.read_text())
    overlay.parent.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed into place: two evaluations may start on the same CPU at once.
    tmp = Path(tempfile.mkdtemp(prefix=f".{overlay.name}-", dir=overlay.parent))
    for entry in env["root"].iterdir():
        if entry.is_dir():
            (tmp / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
    probe = ("import struct; d = open('/proc/self/auxv', 'rb').read(); "
             "a = dict(struct.iter_unpack('<QQ', d[:len(d) // 16 * 16])); print(a.get(16, 0), a.get(26, 0))")
    out = _guest(env, cpu, env["root"], ["-c", probe], timeout=600)
    hwcap, hwcap2 = map(int, out.stdout.split())
    features = feature_names(hwcap, hwcap2)
    _, impl, variant, part, rev, _ = CPUS[cpu]
    block = (f"BogoMIPS\t: 100.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: 0x{impl:02x}\n"
             f"CPU architecture: 8\nCPU variant\t: 0x{variant:x}\nCPU part\t: 0x{part:03x}\nCPU revision\t: {rev}\n\n")
    (tmp / "proc").mkdir()
    n = len(os.sched_getaffinity(0))
    (tmp / "proc" / "cpuinfo").write_text("".join(f"processor\t: {i}\n{block}" for i in range(n)))
    (tmp / "features.json").write_text(json.dumps(features))
    try:
        tmp.rename(overlay)
    except OSError:  # another process got there first: its root is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return overlay, features


def _guest(env: dict, cpu: str, root: Path, args: list[str], *, timeout: float, trace: Path | None = None):
    cmd = [env["qemu"], "-cpu", CPUS[cpu][0], "-L", str(root)]
    if trace:
        cmd += ["-d", "in_asm", "-D", str(trace)]
    cmd += [str(root / "usr/bin/python3.11"), "-I", "-S", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C.UTF-8"})
    except subprocess.TimeoutExpired:
        raise SkinscanError(f"--arm64: the arm64 process on -cpu {cpu} ran past {timeout:.0f} s; "
                            f"use --arm64-limit to run fewer images") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise SkinscanError(f"--arm64: the arm64 process on -cpu {cpu} exited {out.returncode}: {last}")
    return out


def run_models(models: list[dict], images: np.ndarray, cpu: str, *, threads: int = 1, trace: bool = False,
               timeout: float = 3600) -> dict:
    """Run ``models`` ({name, path, format, kernels}) on ``images`` (uint8 NHWC) in the arm64 process
    on ``cpu``. Returns the worker's result with ``probs`` per model, the CPU's ``features`` and, with
    ``trace``, ``instructions``: per library, how many int8 kernel instructions QEMU translated."""
    env = find_env()
    root, features = cpu_root(env, cpu)
    with tempfile.TemporaryDirectory(prefix="skinscan-arm64-") as tmp:
        np.save(f"{tmp}/images.npy", np.ascontiguousarray(images, dtype=np.uint8))
        job = {"site": str(env["site"]), "images": f"{tmp}/images.npy", "out": tmp, "threads": threads,
               "models": [{k: str(m[k]) for k in ("name", "path", "format", "kernels")} for m in models]}
        Path(f"{tmp}/job.json").write_text(json.dumps(job))
        start = time.perf_counter()
        _guest(env, cpu, root, [str(WORKER), f"{tmp}/job.json"], timeout=timeout,
               trace=Path(tmp) / "in_asm.log" if trace else None)
        wall = time.perf_counter() - start
        result = json.loads(Path(f"{tmp}/result.json").read_text())
        for i, m in enumerate(result["models"]):
            m["probs"] = np.load(f"{tmp}/{i}.npy")
        if trace:
            result["instructions"] = instruction_counts(Path(tmp) / "in_asm.log", result["maps"])
    result.update(cpu=cpu, features=features, wall_seconds=wall, qemu=qemu_version(env))
    return result


def instruction_counts(log: Path, maps: list[list[str]]) -> dict:
    """Per shared library, how many of :data:`INT8_INSTRUCTIONS` QEMU translated (each translated
    instruction once; what ran at least once, not how often). The release XNNPACK logs nothing of its
    kernel choice, so the instructions it executed are the evidence of which kernels ran."""
    ranges = []
    for fields in maps:
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        ranges.append((lo, hi, Path(fields[-1]).name))
    wanted = set(INT8_INSTRUCTIONS)
    line = re.compile(r"^0x([0-9a-f]+):\s+([0-9a-f]{8})\s+(\S+)")
    counts: dict[str, dict[str, int]] = {}
    with open(log, errors="replace") as f:
        for text in f:
            m = line.match(text)
            if not m:
                continue
            name = m.group(3) if m.group(3) != ".byte" else _undecoded(int(m.group(2), 16))
            if name not in wanted:
                continue
            addr = int(m.group(1), 16)
            lib = next((lib for lo, hi, lib in ranges if lo <= addr < hi), "other")
            per = counts.setdefault(lib, {})
            per[name] = per.get(name, 0) + 1
    return counts


def _undecoded(word: int) -> str:
    """Name what QEMU 7.2's disassembler (capstone 4) prints as ``.byte``: the dot-product and
    i8mm encodings, and SVE / SME as families (Arm ARM, A64 encoding index)."""
    for mask, value, name in ((0xBF20FC00, 0x0E809400, "sdot"), (0xBF20FC00, 0x2E809400, "udot"),
                              (0xBFC0F400, 0x0F80E000, "sdot"), (0xBFC0F400, 0x2F80E000, "udot"),
                              (0xFFE0FC00, 0x4E80A400, "smmla"), (0xFFE0FC00, 0x6E80A400, "ummla"),
                              (0xFFE0FC00, 0x4E80AC00, "usmmla"), (0xBFE0FC00, 0x0E809C00, "usdot")):
        if word & mask == value:
            return name
    if word & 0xFFFFF0FF == 0xD503407F:  # MSR SVCR (SMSTART / SMSTOP)
        return "sme"
    if word & 0x9E000000 == 0x80000000:
        return "sme"
    if word & 0x1E000000 == 0x04000000:
        return "sve"
    return ".byte"


def int8_family(instructions: dict) -> str:
    """The int8 GEMM family the traced instructions show (i8mm > dot-product > widening NEON)."""
    seen = {k for per in instructions.values() for k in per}
    if "sme" in seen:
        return "SME (streaming matrix outer products)"
    if seen & {"smmla", "ummla", "usmmla"}:
        return "i8mm (SMMLA/UMMLA)"
    if seen & {"sdot", "udot", "usdot", "sudot"}:
        return "dot-product (SDOT/UDOT)"
    if seen & {"smlal", "smlal2", "umlal", "umlal2", "smull", "smull2"}:
        return "NEON widening multiply-accumulate (SMLAL/UMLAL)"
    return "no int8 GEMM instruction traced"


# --- evaluate --arm64 -------------------------------------------------------------------------

def arm64_entries(manifest: dict, chosen: list[dict]) -> list[dict]:
    """Every TFLite export, and the int8 ONNX files when they were made for ``--onnx-target arm``."""
    arm_onnx = (manifest.get("onnx_int8_settings") or {}).get("target") == "arm"
    return [e for e in chosen if e["format"] == "tflite" or (e["format"] == "onnx" and arm_onnx
                                                             and e["precision"].startswith("int8"))]


def subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The images the arm64 rows score: all, or a seeded sample of ``limit`` (in split order)."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def compare_to_x86(probs_arm: np.ndarray, probs_x86: np.ndarray, step: float | None) -> dict:
    """Top-1 agreement and the largest score difference between the same file's arm64 and x86 runs;
    in output steps where the output is quantized (how a golden test on a phone counts)."""
    diff = np.abs(probs_arm.astype(np.float64) - probs_x86.astype(np.float64))
    out = {"x86_top1_agreement": metrics.top1_agreement(probs_x86, probs_arm),
           "x86_max_abs_diff": float(diff.max()) if diff.size else 0.0,
           "x86_mean_abs_diff": float(diff.mean()) if diff.size else 0.0, "output_step": step}
    if step:
        steps = np.rint(diff / step)
        out.update(x86_max_steps=int(steps.max()) if steps.size else 0,
                   x86_mean_steps=float(steps.max(axis=1).mean()) if steps.size else 0.0)
    return out


def score_arm64(run, config, manifest: dict, chosen: list[dict], items: list, probs: dict, labels: list[str],
                say) -> tuple[list[dict], dict]:
    """evaluate's arm64 rows: each file of :func:`arm64_entries` on each of ``config.arm64_cpus``,
    scored against Keras like any row (so the gate reads them) plus ``arm64``: agreement and
    output steps against the same file's x86 run, the CPU's features, the int8 instructions its
    kernels executed, and the emulation rate. Returns (rows, the report's ``arm64`` section)."""
    env = find_env()
    entries = [e for e in arm64_entries(manifest, chosen) if not config.arm64_models or e["name"] in config.arm64_models]
    if not entries:
        raise SkinscanError("--arm64: no TFLite export (or ONNX int8 for --onnx-target arm) among the models chosen")
    pick = subset(len(items), config.arm64_limit, config.seed)
    load = split_image_loader(run, config.split)
    images = np.stack([load(items[i][0]) for i in pick]).astype(np.uint8)
    y_true = np.array([items[i][1] for i in pick], dtype=np.int64)
    paths = [str(items[i][0]) for i in pick]
    keras = probs["keras"][pick]
    rows, runs = [], []
    for cpu in config.arm64_cpus:
        for entry in entries:
            label = f"{entry['name']} @arm64 {cpu}"
            say.advance(label, 0, len(pick))
            model = {"name": entry["name"], "path": verified_path(run, entry), "format": entry["format"],
                     "kernels": "xnnpack"}
            result = run_models([model], images, cpu, threads=1, trace=True)
            say.advance(label, len(pick), len(pick))
            m = result["models"][0]
            arm = {"cpu": cpu, "qemu_cpu": CPUS[cpu][0], "cpu_description": CPUS[cpu][5],
                   "features": [f for f in result["features"] if f in ("asimddp", "i8mm", "fphp", "asimdhp", "sve2", "sme")],
                   "int8_kernels": int8_family(result["instructions"]),
                   "instructions": result["instructions"], "xnnpack_nodes": m.get("delegate_nodes"),
                   "images": len(pick), "images_per_s": len(pick) / m["seconds"] if m["seconds"] else None,
                   **compare_to_x86(m["probs"], probs[entry["name"]][pick], m["output_step"])}
            row = {"name": label, **describe(run, entry), "client": f"arm64 kernels under QEMU (-cpu {CPUS[cpu][0]})",
                   "num_images": len(pick), **score_against_baseline(y_true, keras, m["probs"], labels, paths, config),
                   "arm64": arm}
            cm = metrics.confusion(y_true, m["probs"].argmax(axis=1), len(labels))
            row["confusion_matrix"] = cm.tolist()
            row["confusion_png"] = save_confusion(run, label, cm, labels, row["accuracy"])
            rows.append(row)
            runs.append(result["wall_seconds"])
    section = {"qemu": qemu_version(env), "runtime": _wheels(env), "cpus": {c: CPUS[c][5] for c in config.arm64_cpus},
               "images": len(pick), "of_images": len(items), "subset_seed": config.seed if len(pick) < len(items) else None,
               "wall_seconds": sum(runs), "threads": 1}
    return rows, section


def _wheels(env: dict) -> dict:
    """The arm64 runtimes' versions, from their dist-info folder names."""
    out = {}
    for d in env["site"].glob("*.dist-info"):
        name, _, version = d.name[: -len(".dist-info")].rpartition("-")
        if name in ("ai_edge_litert", "onnxruntime", "numpy"):
            out[name] = version
    return out


ARM64_COLUMNS = ["model", "CPU", "images", "agreement with x86", "max steps vs x86", "mean max steps",
                 "max abs Δp vs x86", "int8 kernels traced", "images/s"]


def arm64_rows(results: dict) -> list[list[str]]:
    """The report's arm64 table (evaluate.md), as strings."""
    rows = []
    for m in results["models"]:
        a = m.get("arm64")
        if not a:
            continue
        rows.append([m["name"].split(" @arm64")[0], a["cpu"], str(a["images"]), f"{a['x86_top1_agreement']:.4f}",
                     str(a.get("x86_max_steps", "-")), f"{a['x86_mean_steps']:.2f}" if "x86_mean_steps" in a else "-",
                     f"{a['x86_max_abs_diff']:.4f}", a["int8_kernels"],
                     f"{a['images_per_s']:.2f}" if a["images_per_s"] else "-"])
    return rows


def render_markdown(results: dict) -> str:
    """The arm64 section of evaluate.md ('' without arm64 rows)."""
    rows = arm64_rows(results)
    if not rows:
        return ""
    s = results.get("arm64", {})
    lines = ["", "## arm64 kernels under QEMU", "",
             f"Each file re-run in an arm64 Python ({', '.join(f'{k} {v}' for k, v in s.get('runtime', {}).items())}) "
             f"under {s.get('qemu', 'QEMU')}, on {s.get('images')} of {s.get('of_images')} {results['split']} images"
             + (f" (seeded sample, seed {s['subset_seed']}; the intervals above are this sample's)" if s.get("subset_seed") is not None else "")
             + ". Their rows above are gated against Keras like any export; here they are compared with the same "
             "file's x86 run. Steps: output quantization steps (a golden test's unit).", "",
             "| " + " | ".join(ARM64_COLUMNS) + " |", "|" + "---|" * len(ARM64_COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", *(f"- `{c}`: {d}" for c, d in s.get("cpus", {}).items()), ""]
    return "\n".join(lines)


def check() -> str:
    """Both runtimes import in the arm64 Python on every default CPU: what `make arm64-env` ends with."""
    env = find_env()
    for cpu in DEFAULT_CPUS:
        root, _ = cpu_root(env, cpu)
        _guest(env, cpu, root, ["-c", f"import sys; sys.path.insert(0, {str(env['site'])!r}); import platform, numpy, "
                                     "onnxruntime, ai_edge_litert.interpreter; assert platform.machine() == 'aarch64'"],
               timeout=1800)  # an import under emulation takes seconds, minutes on a loaded host
    return f"arm64 environment ready: {env_dir()} ({qemu_version(env)}; {', '.join(f'{k} {v}' for k, v in _wheels(env).items())})"


def main() -> int:
    """`make arm64-env`'s last step (scripts/arm64_env.sh): one line, exit 2 with the reason."""
    try:
        print(check())
    except SkinscanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0

"""Where the arm64 emulation lives and which CPUs it emulates: what `evaluate --arm64` needs to
exist before it starts (evaluation/arm64.py runs the models). ``make arm64-env`` sets it up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from skinscan_edge.core.errors import SkinscanError


#: Emulated CPUs: name -> (QEMU's -cpu value, MIDR implementer, variant, part, revision, what it stands for).
#: The MIDR values are QEMU's own for these models (target/arm/cpu64.c), so cpuinfo's
#: microarchitecture, and with it XNNPACK's choice among same-ISA kernels, is the emulated core's.
CPUS = {
    # SME off: QEMU 7.2 emulates SME wrongly (the same XNNPACK SME kernels give other scores on
    # QEMU 10.0; docs/arm64.md), and phones with dot-product and i8mm mostly lack SME.
    "max": ("max,sme=off", 0x00, 0x0, 0x051, 0, "QEMU max less SME: dot-product, i8mm, fp16 and SVE2, as on recent phones"),
    "max-sme": ("max", 0x00, 0x0, 0x051, 0, "QEMU max: adds SME, as on the newest phones (trust it only on QEMU >= 10)"),
    "cortex-a53": ("cortex-a53", 0x41, 0x0, 0xD03, 4, "Cortex-A53: NEON without dot-product, as on low-end phones"),
    "cortex-a76": ("cortex-a76", 0x41, 0x4, 0xD0B, 1, "Cortex-A76: dot-product, no i8mm"),
}


DEFAULT_CPUS = ("max", "cortex-a53")


ENV_HINT = "run `make arm64-env` (scripts/arm64_env.sh) first"


def env_dir() -> Path:
    """Where `make arm64-env` put the arm64 Python: $SKINSCAN_ARM64_DIR, else the checkout's .arm64."""
    return Path(os.environ.get("SKINSCAN_ARM64_DIR") or Path(__file__).resolve().parents[2] / ".arm64")


def find_env() -> dict:
    """qemu-aarch64-static, the unpacked arm64 Python and its wheels; one line naming what is missing."""
    qemu = shutil.which(os.environ.get("SKINSCAN_QEMU") or "qemu-aarch64-static")  # another build, to compare
    if not qemu:
        raise SkinscanError(f"--arm64: qemu-aarch64-static is not installed; {ENV_HINT}")
    root, site = env_dir() / "root", env_dir() / "site"
    if not (root / "usr/bin/python3.11").exists():
        raise SkinscanError(f"--arm64: no arm64 Python in {root}; {ENV_HINT}")
    if not (site / ".complete").exists():
        raise SkinscanError(f"--arm64: no arm64 wheels in {site}; {ENV_HINT}")
    return {"qemu": qemu, "root": root, "site": site}

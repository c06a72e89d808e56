"""Mixed precision for training, decided once per run: float16 on GPUs, bfloat16 on CPUs that have it.

``train --mixed-precision/--no-mixed-precision``; by default (``None``) it is on
- with ``mixed_float16`` when every GPU TensorFlow sees has compute capability 7.0 or more
  (Volta and later have the tensor cores that make float16 fast; on older GPUs it is slower);
- with ``mixed_bfloat16`` on a machine without GPUs whose CPU has AVX512_BF16 or AMX-BF16:
  oneDNN then runs the convolutions and matrix products in bfloat16 (measured on a 2-core Zen 4
  with AVX512_BF16, benchmarks/NOTES.md, "Issue 31"). Other CPUs stay float32: without these
  instructions bfloat16 is emulated, and slower.
Under a mixed policy the layers compute in float16/bfloat16 and keep float32 variables, tf-keras'
``compile`` adds loss scaling (float16 only; bfloat16 has float32's range), and the softmax output
layer is built float32 (``model.py``) so the probabilities are not rounded.

Exports are unchanged: the saved ``model.keras`` is a float32 clone (:func:`float32_clone`)
with the same weights, so every converter sees the same graph as after a float32 training.

The GPU path and its speed could not be measured on the machines this was written on (no GPU):
the decision, the float32 output and the float32 clone are tested on CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.host import host_info
from skinscan_edge.core.tf import keras, tf

MIN_COMPUTE_CAPABILITY = (7, 0)
MIXED_POLICY = "mixed_float16"
CPU_MIXED_POLICY = "mixed_bfloat16"
#: CPU flags (as /proc/cpuinfo names them) with native bfloat16 arithmetic that oneDNN uses.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int] | None  # None when TensorFlow does not report it


@dataclass(frozen=True)
class PrecisionDecision:
    mixed: bool
    reason: str
    policy_name: str = ""  # the Keras policy when mixed; "" means mixed_float16

    @property
    def policy(self) -> str:
        return (self.policy_name or MIXED_POLICY) if self.mixed else "float32"

    def describe(self) -> dict:
        return {"policy": self.policy, "reason": self.reason}


def decide(requested: bool | None, gpus: list[Gpu], cpu_bf16: tuple[str, ...] = ()) -> PrecisionDecision:
    """On, off or automatic (``requested=None``) mixed precision for these GPUs, or, without
    GPUs, for a CPU with the bfloat16 instructions ``cpu_bf16`` (:func:`cpu_bf16_flags`).

    >>> decide(None, [Gpu("Tesla T4", (7, 5))]).reason
    'mixed_float16 on Tesla T4 (compute capability 7.5)'
    >>> decide(None, []).reason
    'float32 (no GPU)'
    >>> decide(None, [], ("avx512_bf16",)).reason
    'mixed_bfloat16 on the CPU (avx512_bf16)'
    """
    need = ".".join(map(str, MIN_COMPUTE_CAPABILITY))

    def cc(g: Gpu) -> str:
        return ".".join(map(str, g.compute_capability)) if g.compute_capability else "unknown"

    capable = [g for g in gpus if g.compute_capability and tuple(g.compute_capability) >= MIN_COMPUTE_CAPABILITY]
    if requested is False:
        return PrecisionDecision(False, "float32 (--no-mixed-precision)")
    if gpus and len(capable) == len(gpus):
        names = ", ".join(sorted({f"{g.name} (compute capability {cc(g)})" for g in gpus}))
        return PrecisionDecision(True, f"mixed_float16 on {names}")
    if not gpus and cpu_bf16:
        return PrecisionDecision(True, f"{CPU_MIXED_POLICY} on the CPU ({', '.join(cpu_bf16)})", CPU_MIXED_POLICY)
    if requested:
        have = "no GPU" if not gpus else ", ".join(f"{g.name} (compute capability {cc(g)})" for g in gpus)
        raise SkinscanError(f"--mixed-precision needs GPUs of compute capability {need} or more, or a CPU with "
                            f"AVX512_BF16 or AMX; this machine has {have}. Drop the flag: float32 is chosen "
                            "automatically")
    if not gpus:
        return PrecisionDecision(False, "float32 (no GPU)")
    return PrecisionDecision(False, f"float32 (a GPU below compute capability {need}: "
                             + ", ".join(f"{g.name} {cc(g)}" for g in gpus) + ")")


def cpu_bf16_flags() -> tuple[str, ...]:
    """This CPU's flags of ``CPU_BF16_FLAGS`` (none off x86 Linux, where they are not read)."""
    flags = host_info()["cpu_flags"]
    return tuple(f for f in CPU_BF16_FLAGS if flags.get(f))


def visible_gpus() -> list[Gpu]:
    """The GPUs TensorFlow sees, with their compute capability."""
    t = tf()
    out = []
    for dev in t.config.list_physical_devices("GPU"):
        details = t.config.experimental.get_device_details(dev) or {}
        cc = details.get("compute_capability")
        out.append(Gpu(str(details.get("device_name", dev.name)), tuple(cc) if cc else None))
    return out


@contextlib.contextmanager
def policy(decision: PrecisionDecision):
    """Build and train under the decided global Keras policy; float32 again afterwards, so a
    notebook that trains and then exports in one process exports float32."""
    mp = keras().mixed_precision
    before = mp.global_policy()
    mp.set_global_policy(decision.policy)
    try:
        yield
    finally:
        mp.set_global_policy(before)


def float32_clone(model, weights: list | None = None):
    """The same architecture and weights (``weights``, default the model's own) with every layer in float32 (a no-op copy for a
    float32 model). Mixed-precision variables are float32 already, so the weights carry over
    unchanged; only the layers' compute dtype and the float16 casts go."""
    k = keras()

    def as_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = k.models.clone_model(model, clone_function=as_float32)
    clone.set_weights(model.get_weights() if weights is None else weights)
    return clone

"""Mixed precision for training on GPUs, decided once per run.

``train --mixed-precision/--no-mixed-precision``; by default (``None``) it is on when every GPU
TensorFlow sees has compute capability 7.0 or more (Volta and later have the tensor cores that
make float16 fast; on older GPUs and on CPUs it is slower, not faster). Under the
``mixed_float16`` policy the layers compute in float16 and keep float32 variables, tf-keras'
``compile`` adds loss scaling, and the softmax output layer is built float32 (``model.py``)
so the probabilities are not rounded to float16.

Exports are unchanged: the saved ``model.keras`` is a float32 clone (:func:`float32_clone`)
with the same weights, so every converter sees the same graph as after a float32 training.

Neither the GPU path nor its speed could be measured on the machines this was written on
(no GPU): the decision, the float32 output and the float32 clone are tested on CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from .errors import SkinscanError

MIN_COMPUTE_CAPABILITY = (7, 0)
MIXED_POLICY = "mixed_float16"


@dataclass(frozen=True)
class Gpu:
    name: str
    compute_capability: tuple[int, int] | None  # None when TensorFlow does not report it


@dataclass(frozen=True)
class PrecisionDecision:
    mixed: bool
    reason: str

    def describe(self) -> dict:
        return {"policy": MIXED_POLICY if self.mixed else "float32", "reason": self.reason}


def decide(requested: bool | None, gpus: list[Gpu]) -> PrecisionDecision:
    """On, off or automatic (``requested=None``) mixed precision for these GPUs.

    >>> decide(None, [Gpu("Tesla T4", (7, 5))]).reason
    'mixed_float16 on Tesla T4 (compute capability 7.5)'
    >>> decide(None, []).reason
    'float32 (no GPU)'
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
    if requested:
        have = "no GPU" if not gpus else ", ".join(f"{g.name} (compute capability {cc(g)})" for g in gpus)
        raise SkinscanError(f"--mixed-precision needs GPUs of compute capability {need} or more; this machine "
                            f"has {have}. Drop the flag: float32 is chosen automatically")
    if not gpus:
        return PrecisionDecision(False, "float32 (no GPU)")
    return PrecisionDecision(False, f"float32 (a GPU below compute capability {need}: "
                             + ", ".join(f"{g.name} {cc(g)}" for g in gpus) + ")")


def visible_gpus() -> list[Gpu]:
    """The GPUs TensorFlow sees, with their compute capability."""
    from ._tf import tf

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
    from ._tf import keras

    mp = keras().mixed_precision
    before = mp.global_policy()
    mp.set_global_policy(MIXED_POLICY if decision.mixed else "float32")
    try:
        yield
    finally:
        mp.set_global_policy(before)


def float32_clone(model, weights: list | None = None):
    """The same architecture and weights (``weights``, default the model's own) with every layer in float32 (a no-op copy for a
    float32 model). Mixed-precision variables are float32 already, so the weights carry over
    unchanged; only the layers' compute dtype and the float16 casts go."""
    from ._tf import keras

    k = keras()

    def as_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    clone = k.models.clone_model(model, clone_function=as_float32)
    clone.set_weights(model.get_weights() if weights is None else weights)
    return clone

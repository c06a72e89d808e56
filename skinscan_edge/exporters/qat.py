"""Quantization-aware training with tensorflow-model-optimization (Keras 2 only).

Every layer tfmot's default 8-bit registry supports is annotated; the rest (the Rescaling
layer that normalises 0..255 input, and the concatenations tfmot would permute) are reported
and left in float, and the TFLite converter quantizes them with the representative dataset.

The stride-1 "same" average pools are annotated as the export graph's depthwise conv +
multiply (``exporters/graph.py``), which is the same float function, carrying the very
QuantizeConfig tfmot gives the Keras pool (no weights, the output fake-quantized): the QAT
math is the pool's, and the converted file runs in one XNNPACK partition as ``tflite-int8``
does, instead of ten cut at the builtin AVERAGE_POOL_2D kernels.
"""

from __future__ import annotations

import contextlib
from skinscan_edge.core.errors import SkinscanError
from skinscan_edge.core.files import atomic_write_bytes, sha256_file
from skinscan_edge.core.tf import keras, tf
from skinscan_edge.data.folder import make_dataset
from skinscan_edge.data.imagecache import run_cache
from skinscan_edge.exporters import tflite
from skinscan_edge.exporters.graph import is_rewritable_pool, pool_as_conv_class


def annotate(model, rewrite_pools: bool = True) -> tuple[object, list[str]]:
    """Return (QAT model, names of layers that could not be annotated).

    ``rewrite_pools=False`` keeps Keras' average pools (for the test that the rewrite changes
    nothing but the file's op list)."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_mod,
    )

    k = keras()
    registry = registry_mod.Default8BitQuantizeRegistry()
    skipped: list[str] = []
    pool_cls = pool_as_conv_class()

    clones: dict[str, object] = {}  # original name -> its (unwrapped) clone

    def fresh(layer):
        clones[layer.name] = layer.__class__.from_config(layer.get_config())
        return clones[layer.name]

    def clone(layer):
        if isinstance(layer, k.layers.InputLayer):
            return fresh(layer)
        if rewrite_pools and is_rewritable_pool(layer):
            # The pool's own QuantizeConfig (output fake-quant, no weights): what tfmot would
            # do to the Keras pool, so the QAT model computes the same thing.
            clones[layer.name] = pool_cls(layer.pool_size, name=layer.name)
            return tfmot.quantization.keras.quantize_annotate_layer(
                clones[layer.name], quantize_config=registry.get_quantize_config(layer))
        if isinstance(layer, k.layers.Concatenate) and not _concat_transform_is_safe(layer, k):
            # tfmot's Concatenate transforms rebuild some concatenations with their inputs in
            # another order, permuting the channels every later layer reads. Measured on
            # InceptionV3: mixed3 (3 inputs) and mixed9 (fed by nested concatenations) came
            # out 100%+ off while all their inputs were within 9%; the plain 4-input blocks
            # were right. These stay float in the QAT model; the TFLite converter still
            # quantizes them from the representative data, so the file stays full-integer.
            skipped.append(f"{layer.name} (Concatenate)")
            return fresh(layer)
        # BatchNormalization is not in the registry on its own, but quantize_apply folds each
        # Conv2D + BatchNormalization (+ ReLU) pattern, so it must be annotated with its conv.
        if registry.supports(layer) or isinstance(layer, k.layers.BatchNormalization):
            return tfmot.quantization.keras.quantize_annotate_layer(fresh(layer))
        skipped.append(f"{layer.name} ({layer.__class__.__name__})")
        return fresh(layer)

    annotated = k.models.clone_model(model, clone_function=clone)
    # Copy weights by layer name rather than by the flat order of get_weights(), which
    # depends on how the wrapped clone lists parallel branches (a guard: the measured QAT
    # drift came from the Concatenate transforms above, not from this).
    for layer in model.layers:
        if layer.weights:
            clones[layer.name].set_weights(layer.get_weights())
    with tfmot.quantization.keras.quantize_scope({pool_cls.__name__: pool_cls}):
        qat_model = tfmot.quantization.keras.quantize_apply(annotated)
    return qat_model, skipped


def _concat_transform_is_safe(layer, k) -> bool:
    """Four inputs, none of them itself a Concatenate: the shape tfmot reproduced correctly."""
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    producers = [t._keras_history.layer for t in inputs]
    return len(inputs) == 4 and not any(isinstance(p, k.layers.Concatenate) for p in producers)


#: EMA decay of the activation ranges during our brief QAT fine-tune (tfmot hard-codes 0.999).
RANGE_EMA_DECAY = 0.9


@contextlib.contextmanager
def _range_ema_decay(decay: float):
    """Let the activation ranges follow the data within a few dozen steps.

    tfmot's MovingAverageQuantizer starts every activation range at [-6, 6] and moves it with a
    hard-coded EMA decay of 0.999, so a fine-tune of a few hundred steps exports ranges that
    are still mostly the initial guess: logits clip at 6 and the int8 file's top-1 collapses
    (measured: 3% agreement with Keras on the test fixture). tfmot has no option for the
    decay, so we override the argument where MovingAverageQuantizer calls quant_ops.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    original = quant_ops.MovingAvgQuantize

    def with_decay(*args, **kwargs):
        kwargs["ema_decay"] = decay
        return original(*args, **kwargs)

    quant_ops.MovingAvgQuantize = with_decay
    try:
        yield
    finally:
        quant_ops.MovingAvgQuantize = original


def freeze_batch_norm(qat_model) -> int:
    """Keep every BatchNormalization in inference mode: its moving statistics stay fixed.

    Measured on the demo run (benchmarks/NOTES.md, "Issue 12: QAT defaults"): with the
    statistics updating, one epoch moved the float twin to 0.89 top-1 agreement with Keras at
    lr 1e-5 and 1e-6 alike (and one calibration batch alone to 0.94), so the train batches'
    statistics moved the model whatever the learning rate. Frozen, training and inference
    normalise alike, as in PyTorch's ``freeze_bn_stats``; gamma and beta still train (tfmot's
    QuantizeWrapperV2 keeps them in its own trainable list). Returns how many were frozen.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    bn = keras().layers.BatchNormalization
    frozen = 0
    for layer in qat_model.layers:
        inner = layer.layer if isinstance(layer, QuantizeWrapper) else layer
        if isinstance(inner, bn):
            inner.trainable = False  # Keras 2: a non-trainable BatchNormalization runs in inference mode
            frozen += 1
    return frozen


def calibrate_ranges(qat_model, images) -> None:
    """Start every activation range at one batch's min/max instead of tfmot's [-6, 6]."""
    import numpy as np

    with _range_ema_decay(0.0):
        qat_model(tf().constant(np.asarray(images, dtype=np.float32)), training=True)


def fine_tune(qat_model, train_ds, epochs: int, learning_rate: float) -> dict:
    """Briefly fine-tune the QAT model so weights and activation ranges adapt to fake-quant."""
    k = keras()
    qat_model.compile(k.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    with _range_ema_decay(RANGE_EMA_DECAY):
        hist = qat_model.fit(train_ds, epochs=epochs, verbose=0)  # the caller says one line of ours
    return {k_: [float(v) for v in vals] for k_, vals in hist.history.items()}


#: The QAT model's float twin, written beside the QAT file and listed in its manifest entry.
TWIN_FILE = "model_qat_float_twin.keras"
#: How far the twin may be from the QAT model with fake-quant switched off (max |Δp|): float
#: rounding only, since the twin computes the same float graph with the same weights.
TWIN_TOLERANCE = 1e-4
#: Calibration images the twin check runs on (eagerly, twice through the QAT model).
TWIN_CHECK_IMAGES = 8


def float_twin(model, qat_model):
    """The fine-tuned float weights in a clone of ``model``'s architecture: no fake-quant.

    Each tfmot QuantizeWrapper holds the float variables of the layer it wraps (named
    ``<layer>/kernel`` etc.; the wrapped layer itself no longer lists a kernel it quantizes)
    beside its own quantizer variables (``quant_<layer>/...``), which are left out. Unwrapped
    layers (those ``annotate`` kept float) are taken as they are. Weights are matched by layer
    name and weight name, so a missing or extra one is an error, not a silent shift.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.quantize_wrapper import QuantizeWrapper

    def leaf(var) -> str:
        return var.name.split("/")[-1]

    found: dict[str, dict] = {}  # layer name -> {weight name: variable}
    for layer in qat_model.layers:
        if isinstance(layer, QuantizeWrapper):
            own = layer.name + "/"
            found[layer.layer.name] = {leaf(w): w for w in layer.weights if not w.name.startswith(own)}
        else:
            found[layer.name] = {leaf(w): w for w in layer.weights}
    twin = keras().models.clone_model(model)
    for layer in twin.layers:
        if not layer.weights:
            continue
        src = found.get(layer.name, {})
        names = [leaf(w) for w in layer.weights]
        if sorted(names) != sorted(src):
            raise SkinscanError(f"QAT float twin: layer {layer.name} has weights {names} but the QAT model has "
                                f"{sorted(src)}; this is a bug in exporters/qat.py")
        layer.set_weights([src[n].numpy() for n in names])  # shapes are checked by Keras
    return twin


@contextlib.contextmanager
def _fake_quant_off():
    """Make every tfmot fake-quant op the identity (weights and activations), for ``check_twin``.

    tfmot has no switch for this; like ``_range_ema_decay`` we replace the functions its
    quantizers call (``quant_ops``), for the duration of an eager call only."""
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    saved = quant_ops._FakeQuantWithMinMaxVars, quant_ops.FixedQuantize
    quant_ops._FakeQuantWithMinMaxVars = lambda inputs, *args, **kwargs: inputs
    quant_ops.FixedQuantize = lambda inputs, *args, **kwargs: inputs
    try:
        yield
    finally:
        quant_ops._FakeQuantWithMinMaxVars, quant_ops.FixedQuantize = saved


def check_twin(twin, qat_model, images) -> dict:
    """Check that ``twin`` is the QAT model minus fake-quant, on a few images; raise if not.

    The QAT model is run eagerly (inference mode) with tfmot's fake-quant ops replaced by the
    identity, which leaves exactly the float graph the twin computes. Returns what was measured.
    """
    import numpy as np

    x = tf().constant(np.asarray(images, dtype=np.float32))
    p_twin = np.asarray(twin(x, training=False))
    with _fake_quant_off():
        p_float = np.asarray(qat_model(x, training=False))
    p_quant = np.asarray(qat_model(x, training=False))
    diff = float(np.abs(p_twin - p_float).max()) if len(x) else 0.0
    if not diff <= TWIN_TOLERANCE:  # NaN fails too
        raise SkinscanError(f"QAT float twin differs from the QAT model without fake-quant by max |dp| {diff:.2g} "
                            f"(limit {TWIN_TOLERANCE:g}); this is a bug in exporters/qat.py")
    return {"check_images": int(len(x)), "check_prob_max_abs_diff_vs_qat_without_fake_quant": diff,
            "check_prob_max_abs_diff_vs_qat_with_fake_quant": float(np.abs(p_twin - p_quant).max()) if len(x) else 0.0}


def export_qat(run, model, cfg, calib, tmp, say, twin_path=None) -> tuple[bytes, str, dict | None]:
    """Annotate, calibrate the ranges, fine-tune on the train split, convert to full-integer TFLite.

    With ``twin_path``, also write the fine-tuned float twin there (``float_twin``, checked by
    ``check_twin``) and return its manifest record; otherwise the third value is None.
    """
    from pathlib import Path

    qat_model, skipped = annotate(model)
    if skipped:
        say(f"  QAT: {len(skipped)} layer(s) not annotated, kept float: {', '.join(skipped)}")
    items = run.split_items("train")
    ds = make_dataset([str(p) for p, _ in items], [y for _, y in items], run.img_size(),
                      batch_size=16, training=True, seed=cfg.seed, cache=run_cache(run, "train"))
    if cfg.qat_freeze_bn:
        freeze_batch_norm(qat_model)
    calibrate_ranges(qat_model, calib[:32])
    if cfg.qat_epochs > 0:
        hist = fine_tune(qat_model, ds, cfg.qat_epochs, cfg.qat_lr)
        say(f"  QAT: {cfg.qat_epochs} epoch(s) at lr {cfg.qat_lr:g}: loss {hist['loss'][-1]:.4f}, "
            f"train accuracy {hist['accuracy'][-1]:.4f} (fake-quant on)")
    twin_record = None
    if twin_path is not None:
        twin = float_twin(model, qat_model)
        check = check_twin(twin, qat_model, calib[:TWIN_CHECK_IMAGES])
        saved = Path(tmp) / TWIN_FILE
        twin.save(str(saved))
        atomic_write_bytes(Path(twin_path), saved.read_bytes())
        twin_record = {"file": Path(twin_path).name, "format": "keras", "precision": "fp32",
                       "size_bytes": Path(twin_path).stat().st_size, "sha256": sha256_file(Path(twin_path)), **check}
    serving = tflite.save_serving_model(qat_model, Path(tmp) / "serving_qat")
    data = tflite.convert(serving, "int8", lambda: iter(calib))
    tuned = (f"{cfg.qat_epochs} epoch(s) fine-tuning at lr {cfg.qat_lr:g}" if cfg.qat_epochs > 0 else "no fine-tuning")
    tuned += ", BatchNorm statistics frozen" if cfg.qat_freeze_bn else ", BatchNorm statistics updated"
    notes = f"tfmot quantize_model, {tuned}; not annotated: {', '.join(skipped) or 'none'}"
    return data, notes, twin_record


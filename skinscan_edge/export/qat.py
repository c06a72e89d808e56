"""Quantization-aware training with tensorflow-model-optimization (Keras 2 only).

Every layer tfmot's default 8-bit registry supports is annotated; the rest (for example the
Rescaling layer that normalises 0..255 input) are reported and left in float, and the TFLite
converter quantizes around them with the representative dataset.
"""

from __future__ import annotations


def annotate(model) -> tuple[object, list[str]]:
    """Return (QAT model, names of layers that could not be annotated)."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_mod,
    )

    from .._tf import keras

    k = keras()
    registry = registry_mod.Default8BitQuantizeRegistry()
    skipped: list[str] = []

    def clone(layer):
        if isinstance(layer, k.layers.InputLayer):
            return layer.__class__.from_config(layer.get_config())
        # BatchNormalization is not in the registry on its own, but quantize_apply folds each
        # Conv2D + BatchNormalization (+ ReLU) pattern, so it must be annotated with its conv.
        if registry.supports(layer) or isinstance(layer, k.layers.BatchNormalization):
            return tfmot.quantization.keras.quantize_annotate_layer(layer.__class__.from_config(layer.get_config()))
        skipped.append(f"{layer.name} ({layer.__class__.__name__})")
        return layer.__class__.from_config(layer.get_config())

    annotated = k.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    with tfmot.quantization.keras.quantize_scope():
        qat_model = tfmot.quantization.keras.quantize_apply(annotated)
    return qat_model, skipped


def fine_tune(qat_model, train_ds, epochs: int, learning_rate: float = 1e-5) -> dict:
    """Briefly fine-tune the QAT model so it adapts to the fake-quant ops."""
    from .._tf import keras

    k = keras()
    qat_model.compile(k.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = qat_model.fit(train_ds, epochs=epochs, verbose=2)
    return {k_: [float(v) for v in vals] for k_, vals in hist.history.items()}

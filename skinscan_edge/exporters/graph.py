"""The export graph: the trained Keras model with its stride-1 "same" average pools rewritten.

XNNPACK (LiteRT's CPU delegate) takes AVERAGE_POOL_2D in float only. In a full-integer file
InceptionV3's nine 3x3 stride-1 "same" pools stay on LiteRT's builtin kernels, and each one
cuts the delegated graph: 10 XNNPACK partitions with a hand-off at every cut
(benchmarks/NOTES.md). A "same" average pool that ignores the padding (Keras' semantics) is,
exactly, a depthwise convolution with constant weights followed by a constant per-position
multiplier:

    avg(x)[i, j] = sum_{window}(x) / valid(i, j)
                 = depthwise_conv(x, 1 / (p * q)) * (p * q / valid(i, j))

where ``valid`` counts the window positions inside the image. XNNPACK takes both
DEPTHWISE_CONV_2D and MUL in int8, so the whole network becomes one partition.

The rewrite is for export only: training and the saved model keep the Keras pool.
:func:`export_model` clones the model with the pools swapped and copies every weight.
"""

from __future__ import annotations

import functools

import numpy as np
from skinscan_edge.core.tf import keras, tf


def same_pool_multiplier(height: int, width: int, pool: tuple[int, int]) -> np.ndarray:
    """(1, H, W, 1) float32: ``p*q / valid(i, j)`` for a stride-1 "same" pool of size ``pool``.

    TensorFlow pads a stride-1 "same" window with ``(k - 1) // 2`` before and the rest after,
    so the window of row ``i`` covers rows ``i - before .. i + after`` clipped to the image.
    """
    def valid(n: int, k: int) -> np.ndarray:
        before = (k - 1) // 2
        i = np.arange(n)
        return np.minimum(i + (k - 1 - before), n - 1) - np.maximum(i - before, 0) + 1

    counts = valid(height, pool[0])[:, None] * valid(width, pool[1])[None, :]
    return (pool[0] * pool[1] / counts).astype(np.float32)[None, :, :, None]


def is_rewritable_pool(layer) -> bool:
    """A 2-D average pool with stride 1, "same" padding and channels-last data."""
    k = keras()
    return (isinstance(layer, k.layers.AveragePooling2D) and tuple(layer.strides) == (1, 1)
            and layer.padding == "same" and layer.data_format == "channels_last")


@functools.lru_cache(maxsize=None)  # one class per process: tfmot's scope and clones look it up by name
def pool_as_conv_class():
    """The Keras layer class of the rewritten pool (made on first use: TensorFlow is imported lazily)."""
    k, tf_ = keras(), tf()

    class PoolAsDepthwiseConv(k.layers.Layer):
        """A stride-1 "same" average pool as depthwise conv (constant weights) + constant multiply."""

        def __init__(self, pool_size=(3, 3), **kwargs):
            super().__init__(**kwargs)
            self.pool_size = tuple(pool_size)

        def build(self, input_shape):
            _, h, w, c = input_shape
            p, q = self.pool_size
            self._kernel = np.full((p, q, c, 1), 1.0 / (p * q), np.float32)
            self._multiplier = same_pool_multiplier(h, w, self.pool_size)
            super().build(input_shape)

        def call(self, x):
            y = tf_.nn.depthwise_conv2d(x, tf_.constant(self._kernel), strides=[1, 1, 1, 1], padding="SAME")
            return y * tf_.constant(self._multiplier)

        def get_config(self):
            return {**super().get_config(), "pool_size": self.pool_size}

    return PoolAsDepthwiseConv


def export_model(model):
    """``model`` cloned with every stride-1 "same" AveragePooling2D as depthwise conv + multiply.

    The clone shares no state with ``model``; its weights are copied (the pools have none, so
    the weight lists line up). Returns ``model`` itself when it has no such pool.

    >>> # exported = export_model(run.load_model())   # then save_serving_model(exported, ...)
    """
    if not any(is_rewritable_pool(layer) for layer in model.layers):
        return model
    cls = pool_as_conv_class()

    def clone(layer):
        if is_rewritable_pool(layer):
            return cls(layer.pool_size, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    clone_ = keras().models.clone_model(model, clone_function=clone)
    clone_.set_weights(model.get_weights())
    return clone_

"""A toy format, registered as a plugin: the worked example of docs/adding-a-format.md.

The Keras model saved as a legacy HDF5 file (``.h5``), and a runtime that loads it with
tf-keras. One converter class, one runtime class, one registration each; evaluate, benchmark
and predict are not touched. Loaded through ``SKINSCAN_EDGE_PLUGINS=toy_format`` so the
benchmark's worker processes know it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skinscan_edge.exporters.converters import Converter
from skinscan_edge.core.formats import ExportSpec, Quantization, register_export
from skinscan_edge.runtimes.interface import Runtime, register_runtime


class H5Converter(Converter):
    def convert(self, ctx, path: Path) -> tuple[dict, str]:
        tmp = path.with_name(f".{path.name}.tmp.h5")
        ctx.model.save(str(tmp), save_format="h5", include_optimizer=False)
        tmp.replace(path)
        return {"inputs": [{"name": "image", "shape": [None, *ctx.model.input_shape[1:]], "dtype": "float32"}],
                "outputs": [{"name": "probs", "shape": [None, ctx.model.output_shape[-1]], "dtype": "float32"}]}, \
            "toy format: the Keras model as legacy HDF5"


@register_runtime
class H5Runtime(Runtime):
    format = "keras-h5"
    library = "tensorflow"

    def __init__(self, path: Path, *, name: str, num_threads: int | None = None, device: str = "cpu"):
        from skinscan_edge.core.tf import keras

        self.name, self.accelerator = name, "TensorFlow /CPU:0"
        self.model = keras().models.load_model(str(path), compile=False)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.model.predict(np.asarray(images, np.float32), verbose=0).astype(np.float32)


register_export(ExportSpec("keras-h5", "h5", Quantization.for_fp32(), "model.h5", "keras-h5", H5Converter()))

"""skinscan-edge: fine-tune InceptionV3 for skin screening and ship it to phones.

tfmot's quantization-aware training supports Keras 2 only, so the whole project runs on
tf-keras. TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported, which is why
it is set here, at package import, and why nothing in the package imports TensorFlow at
module level (``skinscan-edge --help`` stays fast).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

#: The input contract shared by the Keras model and every export: NHWC, RGB, 0-255.
INPUT_NAME = "image"
OUTPUT_NAME = "probs"

# The Python API (skinscan_edge/api.py): the same functions the commands call, for notebooks.
# Importing it loads no TensorFlow (each function imports what it needs when called).
from .api import (BenchmarkResult, EvaluateResult, ExplainResult, ExportResult, PipelineResult,  # noqa: E402
                  Prediction, TrainResult, benchmark, bundle, evaluate, explain, export, pipeline, predict, report,
                  train)
from .config import (BenchmarkConfig, BundleConfig, EvaluateConfig, ExplainConfig, ExportConfig,  # noqa: E402
                     GateConfig, TrainConfig)
from .errors import SkinscanError  # noqa: E402
from .progress import Reporter, RichReporter  # noqa: E402
from .stages import PipelineConfig  # noqa: E402

__all__ = ["train", "export", "evaluate", "explain", "benchmark", "bundle", "predict", "report", "pipeline",
           "TrainConfig", "ExportConfig", "BundleConfig", "GateConfig", "EvaluateConfig", "ExplainConfig", "BenchmarkConfig",
           "PipelineConfig", "TrainResult", "ExportResult", "EvaluateResult", "ExplainResult", "BenchmarkResult",
           "Prediction", "PipelineResult", "SkinscanError", "Reporter", "RichReporter", "INPUT_NAME", "OUTPUT_NAME"]

"""skinscan-edge: fine-tune InceptionV3 for skin screening and ship it to phones.

tfmot's quantization-aware training supports Keras 2 only, so the whole project runs on
tf-keras. TF_USE_LEGACY_KERAS must be set before TensorFlow is first imported, which is why
it is set here, at package import, and why nothing in the package imports TensorFlow at
module level (``skinscan-edge --help`` stays fast).
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The version and the input contract (NHWC, RGB, 0-255) live in core/contract.py; re-exported here.
from skinscan_edge.core.contract import INPUT_NAME, OUTPUT_NAME, __version__  # noqa: E402

# The Python API (skinscan_edge/api.py): the same functions the commands call, for notebooks.
# Importing it loads no TensorFlow (each function imports what it needs when called).
from skinscan_edge.api import (BenchmarkResult, EvaluateResult, ExplainResult, ExportResult,  # noqa: E402
                               PipelineConfig, PipelineResult, Prediction, TrainResult, benchmark, bundle,
                               demo_data, evaluate, explain, export, pipeline, predict, report, train)
from skinscan_edge.core.config import ExportConfig, TrainConfig
from skinscan_edge.core.config_stages import BenchmarkConfig, BundleConfig, EvaluateConfig, ExplainConfig
from skinscan_edge.core.config import GateConfig
from skinscan_edge.core.errors import SkinscanError  # noqa: E402
from skinscan_edge.core.progress import Reporter, RichReporter  # noqa: E402

__all__ = ["train", "export", "evaluate", "explain", "benchmark", "bundle", "predict", "report", "pipeline", "demo_data",
           "TrainConfig", "ExportConfig", "BundleConfig", "GateConfig", "EvaluateConfig", "ExplainConfig", "BenchmarkConfig",
           "PipelineConfig", "TrainResult", "ExportResult", "EvaluateResult", "ExplainResult", "BenchmarkResult",
           "Prediction", "PipelineResult", "SkinscanError", "Reporter", "RichReporter", "INPUT_NAME", "OUTPUT_NAME", "__version__"]

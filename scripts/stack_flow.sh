#!/usr/bin/env bash
# train -> export (every precision, QAT included) -> evaluate -> predict, through the CLI, on a
# tiny SYNTHETIC run (75 px, 1+1 epochs). Usage: scripts/stack_flow.sh VENV WORKDIR
# Used by `make test-notebook-stack` on the second stack (.venv-tf220); any venv works.
set -euo pipefail
VENV=$1; WORK=$2
SE="$VENV/bin/skinscan-edge"
rm -rf "$WORK"; mkdir -p "$WORK"
"$VENV/bin/python" -c 'import tensorflow as tf, tf_keras, google.protobuf as pb, numpy, onnx, onnxruntime
print(f"stack: tensorflow {tf.__version__}, tf-keras {tf_keras.__version__}, protobuf {pb.__version__}, "
      f"numpy {numpy.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")' 2>/dev/null
"$SE" demo-data "$WORK/data" --per-class 12 --size 96 --seed 0
"$SE" train --data "$WORK/data" --out "$WORK/run" --img-size 75 --weights none --epochs 1 --fine-tune-epochs 1 \
    --unfreeze-from input --batch-size 8 --fine-tune-lr 1e-3 --no-augment --seed 7
"$SE" export "$WORK/run" --precision fp16 --precision dynamic --precision int8 --precision qat \
    --calib-samples 16 --qat-epochs 1
# The gate is not the point here (1+1 epochs of synthetic data): a lenient one, so exit 0 means
# every export loaded and was scored on the test split.
"$SE" evaluate "$WORK/run" --max-accuracy-drop 100 --max-recall-drop 100
"$SE" predict "$WORK/run" "$WORK/data/Melanoma" --format tflite-int8 --json > "$WORK/predict.json"
"$VENV/bin/python" - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
manifest = json.loads((work / "run/exports/manifest.json").read_text())
names = sorted(e["name"] for e in manifest["exports"])
assert not manifest["failures"], manifest["failures"]
want = {"tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "tflite-qat-int8", "onnx-fp32", "onnx-int8"}
assert want <= set(names), f"missing exports: {sorted(want - set(names))} (have {names})"
preds = json.loads((work / "predict.json").read_text())["results"]
assert preds and all("top_k" in p for p in preds), preds[:3]
print(f"stack flow ok: {len(names)} exports ({', '.join(names)}), {len(preds)} predictions")
PY

"""Exports: TFLite (fp32, fp16, dynamic, int8, QAT int8) and ONNX (fp32, int8), the manifest
that describes them, and the Android bundle."""

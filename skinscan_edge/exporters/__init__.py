"""A trained run to files a deployment needs: TFLite (fp32, fp16, dynamic, int8, QAT int8) and ONNX
(fp32, int8), mixed int8 (``mixed``, with the per-layer error of ``quant_debug``), the export graph
(``graph``), calibration, QAT, TFLite Model Metadata (``metadata``) and ``export_run`` (``run``),
which writes the manifest (``core.manifest``).

May import: ``core``, ``data``, ``training``, ``runtimes``.
"""

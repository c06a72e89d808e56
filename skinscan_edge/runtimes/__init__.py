"""One runtime interface for every format (``interface``: Keras, LiteRT, onnxruntime), the run's
models in one list (``models``), top-k prediction (``prediction``) and the XNNPACK partition
analysis (``xnnpack``).

May import: ``core``, ``data``, ``training``.
"""

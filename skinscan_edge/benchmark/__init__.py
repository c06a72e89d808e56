"""Latency, throughput and memory of Keras and every export: the harness (``harness``), one row per
worker process (``worker``), phones over adb (``adb``), the quantization-order check
(``quant_order``) and the benchmark's Markdown and CSV (``markdown``).

May import: everything below it: ``core`` to ``evaluation``.
"""

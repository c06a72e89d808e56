"""Every export against the Keras baseline: parity metrics and the gate (``metrics``), the evaluate
stage (``evaluate``) and its Markdown (``markdown``), the MediaPipe client (``client``), arm64
kernels under QEMU (``arm64``), and which layers lose the accuracy (``explain``).

May import: ``core``, ``data``, ``training``, ``runtimes``, ``exporters``.
"""

"""How much of a .tflite graph LiteRT's XNNPACK delegate takes: one analysis for export and benchmark.

The export manifest records it per TFLite file (``xnnpack_partitions``, ``builtin_ops``...) and
the benchmark prints it beside each TFLite row, from the same function.
"""

from __future__ import annotations

from pathlib import Path
from skinscan_edge.core.tf import quiet_stderr

#: Ops that carry the network's arithmetic: if any of these misses XNNPACK, the file is slow.
HEAVY_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def delegation(interp) -> dict:
    """XNNPACK's share of an allocated LiteRT interpreter's graph.

    LiteRT replaces each delegated subgraph by one DELEGATE node; walking back from each
    DELEGATE node's outputs to its inputs over the original ops finds what it took.

    Returns flat fields: ``xnnpack_partitions`` (DELEGATE nodes), ``xnnpack_ops`` (ops they
    took), ``ops_total``, ``builtin_ops`` (sorted names of the op types left to LiteRT's builtin
    kernels), ``accelerated`` (every heavy op delegated) and a one-line ``accelerator_detail``.
    """
    ops = interp._get_ops_details()  # the only public-ish view of the node list
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {int(t): o for o in ops if o["op_name"] != "DELEGATE" for t in o["outputs"]}
    taken: set[int] = set()
    for d in delegates:
        stop = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        while todo:
            op = producer.get(todo.pop())
            if op is None or op["index"] in taken:
                continue
            taken.add(op["index"])
            todo.extend(int(t) for t in op["inputs"] if t >= 0 and int(t) not in stop)
    real = [o for o in ops if o["op_name"] != "DELEGATE"]
    left = sorted({o["op_name"] for o in real if o["index"] not in taken})
    heavy = [o for o in real if o["op_name"] in HEAVY_OPS]
    detail = f"XNNPACK took {len(taken)}/{len(real)} ops in {len(delegates)} partition(s)"
    return {"xnnpack_partitions": len(delegates), "xnnpack_ops": len(taken), "ops_total": len(real),
            "builtin_ops": left, "accelerated": bool(heavy) and all(o["index"] in taken for o in heavy),
            "accelerator_detail": detail + (f"; left to builtin kernels: {', '.join(left)}" if left else "")}


def describe_delegation(path: Path) -> dict:
    """:func:`delegation` of a .tflite file as LiteRT's default CPU set-up opens it (for the manifest)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)

    with quiet_stderr():  # LiteRT's "Created TensorFlow Lite XNNPACK delegate" line
        interp.allocate_tensors()
    info = delegation(interp)
    return {k: info[k] for k in ("xnnpack_partitions", "xnnpack_ops", "ops_total", "builtin_ops")}

"""Runs inside the arm64 Python under qemu-aarch64-static: numpy and the runtimes only, no skinscan_edge
import (the package's dependencies have no arm64 copy there). ``arm64.py`` starts it.

    python3.11 -I -S arm64_worker.py JOB.json

JOB.json: ``site`` (the arm64 wheels' folder), ``images`` (a uint8 NHWC .npy), ``out`` (a folder),
``threads``, and ``models``: a list of {name, path, format ('tflite'|'onnx'), kernels ('xnnpack'|
'builtin')}. Writes OUT/<i>.npy (float32 probabilities) per model and OUT/result.json. The input
and output (de)quantization is ``runtimes.TFLiteRuntime.predict``'s, so the x86 and arm64 runs
differ by their kernels alone.
"""

import json
import sys
import time


def hwcaps() -> dict:
    """AT_HWCAP and AT_HWCAP2 as the kernel (here: QEMU) hands them to this process."""
    import struct

    with open("/proc/self/auxv", "rb") as f:
        data = f.read()
    pairs = dict(struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]))
    return {"hwcap": pairs.get(16, 0), "hwcap2": pairs.get(26, 0)}


def open_tflite(path: str, kernels: str, threads: int):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # BUILTIN_WITHOUT_DEFAULT_DELEGATES: LiteRT's own (reference-grade) builtin kernels, no XNNPACK.
    kind = OpResolverType.AUTO if kernels == "xnnpack" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=path, num_threads=threads, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    delegated = sum(o["op_name"] == "DELEGATE" for o in ops)
    return interp, {"delegate_nodes": delegated, "nodes": len(ops)}


def run_tflite(interp, images):
    import numpy as np

    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    probs = []
    for x in images:  # batch 1, as an app calls it
        x = x[None].astype(np.float32)
        if inp["dtype"] in (np.uint8, np.int8):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        else:
            x = x.astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] in (np.uint8, np.int8):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        probs.append(y.astype(np.float32)[0])
    quant = out["quantization"] if out["dtype"] in (np.uint8, np.int8) else None
    return np.stack(probs), (float(quant[0]) if quant else None)


def open_onnx(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def run_onnx(session, images):
    import numpy as np

    name = session.get_inputs()[0].name
    probs = [session.run(None, {name: x[None].astype(np.float32)})[0][0] for x in images]
    return np.stack(probs).astype(np.float32), None


def main(job_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    sys.path.insert(0, job["site"])
    import platform

    import numpy as np

    images = np.load(job["images"])
    result = {"machine": platform.machine(), **hwcaps(), "models": []}
    for i, m in enumerate(job["models"]):
        start = time.perf_counter()
        info = {}
        if m["format"] == "tflite":
            interp, info = open_tflite(m["path"], m["kernels"], job["threads"])
            loaded = time.perf_counter()
            probs, step = run_tflite(interp, images)
        else:
            session, loaded = open_onnx(m["path"], job["threads"]), time.perf_counter()
            probs, step = run_onnx(session, images)
        seconds = time.perf_counter() - loaded
        info["load_seconds"] = loaded - start
        np.save(f"{job['out']}/{i}.npy", probs)
        result["models"].append({**m, **info, "output_step": step, "seconds": seconds, "images": len(images)})
    with open("/proc/self/maps") as f:  # where each library sits: arm64.py attributes instructions by it
        result["maps"] = [line.split() for line in f if ".so" in line and " r-xp " in line]
    with open(f"{job['out']}/result.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])

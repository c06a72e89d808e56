"""A GPU *proxy* measurement for "expected time on a GPU" (docs/kaggle.md).

skinscan-edge trains with TensorFlow, which is not on the lent GPU machine's image (and its
wheel is too big to carry there), so our own `train` has never run on a GPU. This script
measures the same architecture, torchvision's InceptionV3 (23.8 M parameters at 299 px, no
auxiliary head, 10 classes), with PyTorch, which that image has: training steps per second
with every layer trainable (phase 2 from `--unfreeze-from input`), with only the head
trainable (phase 1), and inference. Synthetic tensors already on the GPU: no JPEG decoding,
no input pipeline, so these are upper bounds for the model's compute, not for `train`.

Precision matches what `skinscan-edge train` would get from TensorFlow on the same card:
float32 with TF32 matrix math (TensorFlow's default on Ampere and later GPUs).

    python3 benchmarks/gpu_proxy_torch.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time


def main() -> None:
    import torch
    import torchvision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="images per step (skinscan-edge's default)")
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    assert torch.cuda.is_available(), "no CUDA device"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=10).to(dev)
    x = torch.rand(args.batch, 3, args.size, args.size, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    loss_fn = torch.nn.CrossEntropyLoss()

    def timed(step) -> float:
        for _ in range(args.warmup):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
        return args.steps * args.batch / (time.perf_counter() - t0)

    def train_mode(trainable_head_only: bool):
        for name, p in model.named_parameters():
            p.requires_grad = (not trainable_head_only) or name.startswith("fc.")
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()

        def step():
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

        return timed(step)

    results = {
        "what": "torchvision InceptionV3 (proxy for skinscan-edge's tf-keras model), synthetic input on the GPU",
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version(),
        "batch": args.batch, "size": args.size, "precision": "fp32 with TF32 matmul/conv",
        "train_all_layers_img_s": train_mode(False),
        "train_head_only_img_s": train_mode(True),
    }
    model.eval()
    with torch.no_grad():
        results["inference_img_s"] = timed(lambda: model(x))
    print(json.dumps(results, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

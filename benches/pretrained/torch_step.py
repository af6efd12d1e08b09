#!/usr/bin/env python3
"""PyTorch peer of the Rust train-step benchmark: SegNet (EfficientNet-Lite encoder from the
ImageNet weights + the edge-seg decoder, see lite_torch.py), one SGD step per iteration.

  SGD lr 0.01, momentum 0.9, weight decay 1e-4 (on every parameter); cross-entropy with
  ignore_index 255 over 11 classes; train mode (batch-norm batch statistics); CPU float32.
  Inputs: seeded torch.randn [batch, 3, crop, crop]; labels: seeded uniform 0..10 with ~5 %
  set to 255. Each step = zero_grad + forward + loss + backward + optimizer.step, timed with
  time.perf_counter; the first --warmup steps are run but not recorded. --device cuda runs on
  GPU 0 (float32, cuDNN with its default settings) and synchronises before each step's clock
  stops, as `edge-seg-train bench-step --device cuda` does.

Usage: python benches/pretrained/torch_step.py --variant lite0 --batch 8 --crop 256 \
         --steps 20 --warmup 3 --threads 2 --json OUT.json
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lite_torch import SegNet, wheel_pth  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lite0")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wheel-dir", default="/tmp/pipdl")
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if a.device == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    model = SegNet(a.variant, num_classes=a.classes, pth=wheel_pth(a.variant, a.wheel_dir)).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    g = torch.Generator().manual_seed(a.seed)
    x = torch.randn(a.batch, 3, a.crop, a.crop, generator=g)
    y = torch.randint(0, a.classes, (a.batch, a.crop, a.crop), generator=g)
    y[torch.rand(y.shape, generator=g) < 0.05] = 255
    x, y = x.to(dev), y.to(dev)
    sync()

    times, losses = [], []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        loss.backward()
        opt.step()
        sync()
        dt = (time.perf_counter() - t0) * 1e3
        losses.append(loss.detach().item())
        if i >= a.warmup:
            times.append(dt)
        print(f"step {i:3d} {'warm' if i < a.warmup else 'time'} {dt:9.1f} ms loss {losses[-1]:.4f}", flush=True)

    res = {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "mean_ms": statistics.fmean(times),
        "steps": a.steps,
        "warmup": a.warmup,
        "step_ms": times,
        "losses": losses,
        "variant": a.variant,
        "batch": a.batch,
        "crop": a.crop,
        "threads": a.threads,
        "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
        "classes": a.classes,
        "params": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "command": "python benches/pretrained/torch_step.py " + " ".join(sys.argv[1:]),
    }
    print(f"median {res['median_ms']:.1f} ms  min {res['min_ms']:.1f}  max {res['max_ms']:.1f}  ({a.steps} steps)")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()

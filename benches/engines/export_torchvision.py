#!/usr/bin/env python3
"""Exports torchvision's LR-ASPP MobileNetV3-Large with torch.onnx.export: the "foreign model"
of issue #22 (a plain PyTorch export, no edge-seg metadata). Random weights (seeded): the
point is the graph, not the accuracy.

  python benches/engines/export_torchvision.py --out M.onnx [--classes 11] [--size 360x480]
      [--width 1.0] [--seed 0]

--width < 1 scales the MobileNetV3 backbone's channels (torchvision's own width_mult), which
keeps torchvision's architecture while making the file small enough to commit as a test
fixture: edge-runtime/tests/fixtures/lraspp_mnv3_w025.onnx was written with
  --width 0.25 --classes 11 --size 96x128 --out edge-runtime/tests/fixtures/lraspp_mnv3_w025.onnx
Needs torch and torchvision (pip).
"""

import argparse
import sys

import torch


def build(classes, width):
    from torchvision.models import mobilenetv3
    from torchvision.models.segmentation import lraspp

    settings, last = mobilenetv3._mobilenet_v3_conf("mobilenet_v3_large", width_mult=width, dilated=True)
    backbone = mobilenetv3.MobileNetV3(settings, last)
    return lraspp._lraspp_mobilenetv3(backbone, classes)


class OutOnly(torch.nn.Module):
    """torchvision's segmentation models return a dict; ONNX gets its 'out' tensor."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--classes", type=int, default=11)
    ap.add_argument("--size", default="360x480", help="HEIGHTxWIDTH of the fixed input")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    torch.manual_seed(a.seed)
    model = OutOnly(build(a.classes, a.width)).eval()
    # BN running stats of a random net are 0/1; give them the statistics of a few random
    # batches so the activations stay in a sensible range
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(2, 3, h, w))
    model.eval()
    x = torch.randn(1, 3, h, w)
    torch.onnx.export(model, (x,), a.out, input_names=["input"], output_names=["out"], opset_version=17,
                      dynamo=False)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out}: LR-ASPP MobileNetV3-Large (width {a.width}), {params} parameters, input 1x3x{h}x{w}",
          file=sys.stderr)


if __name__ == "__main__":
    main()

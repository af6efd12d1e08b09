#!/usr/bin/env python3
"""Golden ImageNet logits of EfficientNet-Lite for the Rust loader test.

Writes crates/seg-nn/tests/fixtures/<variant>_golden.json. The input is a formula so that Rust
rebuilds it bit-exactly:
  p[c][y][x] = ((x*7 + y*13 + c*31) % 256) as f32,  c = 0,1,2 are the R,G,B planes,
  x = (p - 127) / 128,  NCHW [1, 3, H, W], H = 64, W = 80.
Full classifier (stem .. head, global average pool, fc) in eval mode, float32, on the CPU.

Debug fields: stem_first8 (first 8 values of the flattened NCHW stem output after BN + ReLU6,
i.e. channel 0, row 0, columns 0..7; channel 0 saturates at 6 on this image), the same before
ReLU6 (stem_bn_first8) and before BN (stem_conv_first8), all 32 channels of the raw stem conv and
of the stem output at the top-left and bottom-right output pixel (stem_conv_at_0_0 / _at_last:
with TF SAME on even sizes the stride-2 stem pads only bottom/right, so the bottom-right pixel
differs from symmetric padding), stem_shape, and per block the output shape, mean and first
4 flattened values (blocks), head_mean (mean of the head output after BN + ReLU6).

Usage: python benches/pretrained/golden.py [--variant lite0] [--out PATH]
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lite_torch import EfficientNetLite, wheel_pth  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def formula_image(h, w):
    y = torch.arange(h, dtype=torch.int64).view(1, h, 1)
    x = torch.arange(w, dtype=torch.int64).view(1, 1, w)
    c = torch.arange(3, dtype=torch.int64).view(3, 1, 1)
    p = ((x * 7 + y * 13 + c * 31) % 256).to(torch.float32)
    return ((p - 127.0) / 128.0).unsqueeze(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="lite0")
    ap.add_argument("--height", type=int, default=64)
    ap.add_argument("--width", type=int, default=80)
    ap.add_argument("--wheel-dir", default="/tmp/pipdl")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(2)
    out = a.out or os.path.join(ROOT, "crates/seg-nn/tests/fixtures", f"{a.variant}_golden.json")

    m = EfficientNetLite(a.variant, pth=wheel_pth(a.variant, a.wheel_dir)).eval()
    x = formula_image(a.height, a.width)
    with torch.no_grad():
        stem_conv = m._conv_stem(x)
        stem_bn = m._bn0(stem_conv)
        stem = m.stem(x)
        _, taps = m.features(x, taps=tuple(range(len(m._blocks))))
        head = torch.nn.functional.relu6(m._bn1(m._conv_head(taps[len(m._blocks) - 1])))
        logits = m(x)[0]
    top = logits.topk(5)
    for i, v in zip(top.indices.tolist(), top.values.tolist()):
        print(f"class {i:4d}  logit {v:.6f}")
    doc = {
        "variant": a.variant,
        "height": a.height,
        "width": a.width,
        "image": "formula",
        "image_formula": "p[c][y][x] = ((x*7 + y*13 + c*31) % 256) as f32, c in RGB planes; x = (p - 127) / 128; NCHW",
        "logits": [float(v) for v in logits.tolist()],
        "top5": top.indices.tolist(),
        "max_abs_logit": float(logits.abs().max()),
        "stem_shape": list(stem.shape),
        "stem_first8": [float(v) for v in stem.flatten()[:8].tolist()],
        "stem_conv_first8": [float(v) for v in stem_conv.flatten()[:8].tolist()],
        "stem_bn_first8": [float(v) for v in stem_bn.flatten()[:8].tolist()],
        "stem_conv_at_0_0": [float(v) for v in stem_conv[0, :, 0, 0].tolist()],
        "stem_conv_at_last": [float(v) for v in stem_conv[0, :, -1, -1].tolist()],
        "stem_at_0_0": [float(v) for v in stem[0, :, 0, 0].tolist()],
        "stem_at_last": [float(v) for v in stem[0, :, -1, -1].tolist()],
        "blocks": [
            {"shape": list(t.shape), "mean": float(t.mean()), "first4": [float(v) for v in t.flatten()[:4].tolist()]}
            for _, t in sorted(taps.items())
        ],
        "head_mean": float(head.mean()),
        "command": "python benches/pretrained/golden.py " + " ".join(sys.argv[1:]),
        "torch_version": torch.__version__,
    }
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print("max |logit|", doc["max_abs_logit"], "stem", doc["stem_shape"], doc["stem_first8"])
    print("wrote", os.path.relpath(out, ROOT))


if __name__ == "__main__":
    main()

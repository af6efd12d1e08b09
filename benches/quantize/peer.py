#!/usr/bin/env python3
"""onnxruntime side of benches/quantize/run.sh (issue #3).

Subcommands (all CPU, onnxruntime's CPUExecutionProvider):
  quantize  onnxruntime's own quantize_static (QDQ, MinMax) from a calibration folder, with the
            same preprocessing as edge-seg (model metadata: input size, mean, std)
  eval      val mIoU of a model in onnxruntime (same preprocessing and metric as `edge-seg eval`)
  latency   median latency of `session.run` on one frame, per model
  records   merge the figures of one run into a docs/results JSON list (replace by name)

Preprocessing mirrors seg_core::preprocess: bilinear resize with half-pixel centres (no
anti-aliasing) to edge_seg.input_height x edge_seg.input_width when the image differs, then
(x/255 - mean)/std per channel, NCHW float32. mIoU mirrors seg_core::metrics: mask value
ignore_id (CamVid 11) skipped, IoU over classes present in target or prediction.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import machine, merge_records, recorder  # noqa: E402,F401  (re-exported for the bench scripts)

IMAGE_EXT = {".png", ".jpg", ".jpeg"}


# ---------------------------------------------------------------- preprocessing
def model_meta(path):
    m = onnx.load(str(path), load_external_data=False)
    md = {p.key: p.value for p in m.metadata_props}
    try:
        h = int(md["edge_seg.input_height"])
        w = int(md["edge_seg.input_width"])
        mean = np.array([float(v) for v in md["edge_seg.mean"].split(",")], np.float32)
        std = np.array([float(v) for v in md["edge_seg.std"].split(",")], np.float32)
        classes = md["edge_seg.classes"].split(",")
    except KeyError as e:
        sys.exit(f"{path}: not an edge-seg model (metadata {e} missing)")
    return {"h": h, "w": w, "mean": mean, "std": std, "classes": classes}


def _axis(src, dst):
    scale = src / dst
    s = np.maximum((np.arange(dst, dtype=np.float32) + 0.5) * np.float32(scale) - 0.5, 0.0)
    i0 = np.minimum(np.floor(s).astype(np.int64), src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, (s - i0).astype(np.float32)


def resize_bilinear(img, h, w):
    """HWC uint8 -> HWC float32, half-pixel bilinear, no anti-aliasing (seg_core::resize_rgb
    rounds back to u8; we round too so both sides see the same pixels)."""
    sh, sw = img.shape[:2]
    y0, y1, wy = _axis(sh, h)
    x0, x1, wx = _axis(sw, w)
    f = img.astype(np.float32)
    rows = f[y0] + (f[y1] - f[y0]) * wy[:, None, None]
    out = rows[:, x0] + (rows[:, x1] - rows[:, x0]) * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def resize_scores(logits, h, w):
    """CHW scores -> CHW at (h, w), half-pixel bilinear (rows, then columns), as edge-seg's
    arg-max does; unchanged when already that size."""
    if logits.shape[1:] == (h, w):
        return logits
    y0, y1, wy = _axis(logits.shape[1], h)
    x0, x1, wx = _axis(logits.shape[2], w)
    rows = logits[:, y0] + (logits[:, y1] - logits[:, y0]) * wy[None, :, None]
    return rows[:, :, x0] + (rows[:, :, x1] - rows[:, :, x0]) * wx[None, None, :]


def preprocess(path, meta):
    img = np.asarray(Image.open(path).convert("RGB"))
    if img.shape[:2] != (meta["h"], meta["w"]):
        img = resize_bilinear(img, meta["h"], meta["w"])
    x = (img.astype(np.float32) / 255.0 - meta["mean"]) / meta["std"]
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def list_images(d):
    return sorted(p for p in Path(d).iterdir() if p.suffix.lower() in IMAGE_EXT)


# ---------------------------------------------------------------- onnxruntime
def session(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def cmd_quantize(a):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    meta = model_meta(a.model)
    paths = list_images(a.calib)
    if not paths:
        sys.exit(f"{a.calib}: no calibration images")
    input_name = onnx.load(str(a.model), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(paths)

        def get_next(self):
            p = next(self.it, None)
            return None if p is None else {input_name: preprocess(p, meta)}

        def rewind(self):
            self.it = iter(paths)

    quantize_static(
        str(a.model),
        str(a.out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=a.per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    print(f"onnxruntime quantize_static: wrote {a.out} ({len(paths)} calibration images, "
          f"{'per-channel' if a.per_channel else 'per-tensor'}, QDQ, MinMax)")


def read_split(data, split):
    """(image, mask) pairs: a CamVid folder split, or a list file of names / CamVid lines."""
    root = Path(data)
    p = Path(split)
    if p.is_file():
        pairs = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name = Path(line.split()[0]).name
            sp = Path(line.split()[0]).parent.name or "val"
            if not (root / sp / name).exists():
                sp = "val"
            pairs.append((root / sp / name, root / f"{sp}annot" / name))
        return pairs
    return [(i, root / f"{split}annot" / i.name) for i in list_images(root / split)]


def cmd_eval(a):
    meta = model_meta(a.model)
    n = len(meta["classes"])
    result = {"model": str(a.model)}
    try:
        sess = session(a.model, a.threads)
        in_name = sess.get_inputs()[0].name
        cm = np.zeros((n, n), np.int64)
        pairs = read_split(a.data, a.split)
        for k, (img, mask) in enumerate(pairs):
            logits = sess.run(None, {in_name: preprocess(img, meta)})[0][0]
            t = np.asarray(Image.open(mask))
            logits = resize_scores(logits, *t.shape)
            pred = logits.argmax(0).astype(np.int64)
            keep = (t != a.ignore_id) & (t < n)
            cm += np.bincount(t[keep].astype(np.int64) * n + pred[keep], minlength=n * n).reshape(n, n)
            if (k + 1) % 20 == 0:
                print(f"  onnxruntime eval {Path(a.model).name}: {k + 1}/{len(pairs)}", file=sys.stderr)
        tp = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - tp
        iou = tp[union > 0] / union[union > 0]
        result.update(miou=float(iou.mean()) if iou.size else 0.0, images=len(pairs))
        print(f"onnxruntime {Path(a.model).name}: mIoU {100 * result['miou']:.2f} % on {len(pairs)} images")
    except Exception as e:  # a graph onnxruntime rejects is a finding, not a crash
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")
        result["error"] = msg
        print(f"onnxruntime {a.model}: FAILED: {msg}", file=sys.stderr)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


def cmd_latency(a):
    out = {}
    for spec in a.models:
        name, path = spec.split("=", 1)
        try:
            meta = model_meta(path)
            x = preprocess(a.frame, meta)
            sess = session(path, a.threads)
            feed = {sess.get_inputs()[0].name: x}
            for _ in range(a.warmup):
                sess.run(None, feed)
            ms = []
            for _ in range(a.runs):
                t = time.perf_counter()
                sess.run(None, feed)
                ms.append((time.perf_counter() - t) * 1e3)
            out[name] = {"median_ms": statistics.median(ms), "min_ms": min(ms), "runs": a.runs,
                         "threads": a.threads, "model": path}
            print(f"onnxruntime {name:<28} median {out[name]['median_ms']:8.2f} ms  "
                  f"min {min(ms):8.2f} ms  ({a.runs} runs, {a.threads} threads)")
        except Exception as e:
            msg = f"{type(e).__name__}: {e}".replace("\n", " ")
            out[name] = {"error": msg}
            print(f"onnxruntime {name}: FAILED: {msg}", file=sys.stderr)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


# ---------------------------------------------------------------- records
# machine, recorder and merge_records live in benches/benchlib.py (imported above)


def cmd_records(a):
    w = Path(a.work)
    load = lambda f: json.loads((w / f).read_text()) if (w / f).exists() else {}
    tract, ort2, ort1 = load("tract_latency.json"), load("ort_latency.json"), load("ort_latency_1t.json")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    mach = machine()
    recs = []

    def add(name, value, unit, split):
        if value is None:
            return
        recs.append({"name": name, "value": round(float(value), 4), "unit": unit, "split": split,
                     "command": a.command, "date": date, "machine": mach})

    def lat(d, k):
        return d.get(k, {}).get("median_ms")

    def ratio(x, y):
        return None if x is None or y is None or y == 0 else x / y

    # accuracy: edge-seg eval --record wrote its own records (value = 100 mIoU) here
    edge = {r["name"]: r for r in (json.loads((w / "edge_records.json").read_text())
                                   if (w / "edge_records.json").exists() else [])}
    for name in ["f32_val_miou", "int8_pertensor_val_miou", "int8_perchannel_val_miou"]:
        if name in edge:
            add(name, edge[name]["value"], "mIoU %", a.split)
        else:
            print(f"no record {name}: edge-seg eval wrote none", file=sys.stderr)
    for name, f in [("ort_f32_val_miou", "ort_f32_eval.json"),
                    ("ort_int8_val_miou", "ort_int8_eval.json"),
                    ("ort_int8_pertensor_val_miou", "ort_int8_pertensor_eval.json"),
                    ("ort_runs_our_perchannel_val_miou", "ort_our_perchannel_eval.json")]:
        r = load(f)
        if "miou" in r:
            add(name, 100.0 * r["miou"], "mIoU %", a.split)
        elif "error" in r:
            print(f"no record {name}: {r['error']}", file=sys.stderr)
    # latency (one frame, median)
    e_f32, e_i8 = lat(tract, "f32"), lat(tract, "int8_pertensor")
    o_f32, o_i8 = lat(ort2, "f32"), lat(ort2, "int8_pertensor")
    add("edge_f32_ms", e_f32, "ms", "-")
    add("edge_int8_ms", e_i8, "ms", "-")
    add("edge_int8_perchannel_ms", lat(tract, "int8_perchannel"), "ms", "-")
    add("ort_f32_ms", o_f32, "ms", "-")
    add("ort_int8_ms", o_i8, "ms", "-")
    add("ort_int8_our_perchannel_ms", lat(ort2, "int8_perchannel"), "ms", "-")
    add("ort_int8_ortq_ms", lat(ort2, "ort_int8"), "ms", "-")
    add("ort_f32_1thread_ms", lat(ort1, "f32"), "ms", "-")
    add("ort_int8_1thread_ms", lat(ort1, "int8_pertensor"), "ms", "-")
    add("ort_int8_ortq_1thread_ms", lat(ort1, "ort_int8"), "ms", "-")
    # ratios (> 1 means the first is slower / the int8 graph is faster)
    add("edge_int8_speedup", ratio(e_f32, e_i8), "x (f32 ms / int8 ms)", "-")
    add("ort_int8_speedup", ratio(o_f32, o_i8), "x (f32 ms / int8 ms)", "-")
    add("ort_int8_ortq_speedup", ratio(o_f32, lat(ort2, "ort_int8")), "x (f32 ms / int8 ms)", "-")
    add("edge_vs_ort_f32_ratio", ratio(e_f32, o_f32), "x (edge ms / ort ms)", "-")
    add("edge_vs_ort_int8_ratio", ratio(e_i8, o_i8), "x (edge ms / ort ms)", "-")
    add("edge_vs_ort_f32_1thread_ratio", ratio(e_f32, lat(ort1, "f32")), "x (edge ms / ort ms)", "-")

    out = merge_records(a.results, recs)
    print(f"\n{len(recs)} records -> {out}")
    for r in recs:
        print(f"  {r['name']:<34} {r['value']:>10.3f}  {r['unit']}  [{r['split']}]")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("--model", required=True)
    q.add_argument("--calib", required=True)
    q.add_argument("--out", required=True)
    q.add_argument("--per-channel", action="store_true")
    e = sub.add_parser("eval")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--split", default="val", help="CamVid folder split or a split-list file")
    e.add_argument("--ignore-id", type=int, default=11)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", required=True)
    l = sub.add_parser("latency")
    l.add_argument("--frame", required=True)
    l.add_argument("--warmup", type=int, default=3)
    l.add_argument("--runs", type=int, default=20)
    l.add_argument("--threads", type=int, default=2)
    l.add_argument("--out", required=True)
    l.add_argument("models", nargs="+", metavar="NAME=MODEL")
    r = sub.add_parser("records")
    r.add_argument("--work", required=True)
    r.add_argument("--results", required=True)
    r.add_argument("--command", required=True)
    r.add_argument("--split", default="val")
    a = ap.parse_args()
    {"quantize": cmd_quantize, "eval": cmd_eval, "latency": cmd_latency, "records": cmd_records}[a.cmd](a)


if __name__ == "__main__":
    main()

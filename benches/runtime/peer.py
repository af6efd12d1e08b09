#!/usr/bin/env python3
"""Helpers of benches/runtime/run.sh (issue #4).

Subcommands:
  record   write frames of a CamVid split as a raw YUYV recording (what a V4L2 camera delivers:
           BT.601 limited range, each pixel pair sharing its mean chroma; same integer formulas
           as edge_seg_runtime::frame::rgb_to_yuyv)
  e2e      the onnxruntime peer of `edge-seg run`: one process, frames read from the same YUYV
           recording, YUYV -> RGB, normalise, session.run, arg-max, 50 % overlay blend with the
           model palette; sequential (no pipelining), CPU execution provider
  records  merge the figures of one run.sh run into docs/results/runtime.json
"""

import argparse
import json
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "quantize"))
from peer import machine, merge_records, model_meta, resize_bilinear, resize_scores, session  # noqa: E402


def rgb_to_yuyv(rgb):
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    y = np.clip(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16, 0, 255)
    u = np.clip(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128, 0, 255)
    v = np.clip(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128, 0, 255)
    h, w = y.shape
    if w % 2:
        sys.exit("record: odd frame widths are not supported here")
    out = np.empty((h, w // 2, 4), np.uint8)
    out[..., 0] = y[:, 0::2]
    out[..., 2] = y[:, 1::2]
    out[..., 1] = (u[:, 0::2] + u[:, 1::2] + 1) // 2
    out[..., 3] = (v[:, 0::2] + v[:, 1::2] + 1) // 2
    return out.tobytes()


def yuyv_to_rgb(buf, w, h):
    q = np.frombuffer(buf, np.uint8).reshape(h, w // 2, 4).astype(np.int32)
    y = np.empty((h, w), np.int32)
    y[:, 0::2], y[:, 1::2] = q[..., 0], q[..., 2]
    d = np.repeat(q[..., 1] - 128, 2, axis=1)
    e = np.repeat(q[..., 3] - 128, 2, axis=1)
    c = 298 * (y - 16)
    rgb = np.stack([(c + 409 * e + 128) >> 8, (c - 100 * d - 208 * e + 128) >> 8, (c + 516 * d + 128) >> 8], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def cmd_record(a):
    frames = sorted(p for p in (Path(a.data) / a.split).iterdir() if p.suffix.lower() == ".png")
    if a.limit:
        frames = frames[: a.limit]
    if not frames:
        sys.exit(f"record: no PNG frames in {Path(a.data) / a.split}")
    size = None
    with open(a.out, "wb") as f:
        for p in frames:
            img = np.asarray(Image.open(p).convert("RGB"))
            if size is None:
                size = img.shape[:2]
            elif img.shape[:2] != size:
                sys.exit(f"record: {p} is {img.shape[1]}x{img.shape[0]}, the others {size[1]}x{size[0]}")
            f.write(rgb_to_yuyv(img))
    print(f"{len(frames)} frames {size[1]}x{size[0]} -> {a.out}")


def cmd_e2e(a):
    meta = model_meta(a.model)
    w, h = (int(v) for v in a.size.split("x"))
    # frames of another size are resized to the network input and the scores back to the frame
    # (half-pixel bilinear both ways), the work edge-seg run does
    same = (h, w) == (meta["h"], meta["w"])
    import onnx

    md = {p.key: p.value for p in onnx.load(a.model, load_external_data=False).metadata_props}
    palette = np.array([[int(c) for c in e.split(",")] for e in md["edge_seg.palette"].split(";")], np.float32)
    sess = session(a.model, a.threads)
    name = sess.get_inputs()[0].name
    frame_bytes = w * h * 2
    lat = []
    n = 0
    t_start = None
    with open(a.input, "rb") as f:
        while True:
            buf = f.read(frame_bytes)
            if len(buf) < frame_bytes:
                break
            t0 = time.perf_counter()
            t_start = t_start or t0
            rgb = yuyv_to_rgb(buf, w, h)
            net_in = rgb if same else resize_bilinear(rgb, meta["h"], meta["w"])
            x = (net_in.astype(np.float32) / 255.0 - meta["mean"]) / meta["std"]
            x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
            logits = sess.run(None, {name: x})[0][0]
            logits = resize_scores(logits, h, w)
            cls = logits.argmax(0)
            if cls.shape != (h, w):
                sys.exit(f"e2e: logits {cls.shape} are not at the input resolution")
            out = (0.5 * rgb + 0.5 * palette[cls]).astype(np.uint8)
            out.sum()  # touch the result
            lat.append((time.perf_counter() - t0) * 1e3)
            n += 1
    wall = time.perf_counter() - t_start
    lat.sort()
    pct = lambda p: lat[min(len(lat), max(1, int(np.ceil(p / 100 * len(lat))))) - 1]
    res = {
        "frames": n,
        "fps": n / wall,
        "latency_p50_ms": pct(50),
        "latency_p99_ms": pct(99),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "threads": a.threads,
    }
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"onnxruntime e2e {Path(a.model).name}: {n} frames, {res['fps']:.1f} FPS, "
          f"p50 {res['latency_p50_ms']:.1f} ms, peak RSS {res['peak_rss_mib']:.0f} MiB")


def cmd_records(a):
    w = Path(a.work)

    def summary(f):
        p = w / f
        if not p.exists():
            return {}
        lines = [json.loads(l) for l in p.read_text().splitlines() if l.strip()]
        return lines[-1].get("summary", {}) if lines else {}

    def load(f):
        return json.loads((w / f).read_text()) if (w / f).exists() else {}

    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    mach = machine()
    recs = []

    def add(name, value, unit, split):
        name = a.prefix + name
        if value is None:
            print(f"no figure for {name}", file=sys.stderr)
            return
        recs.append({"name": name, "value": round(float(value), 4), "unit": unit,
                     "split": f"{split}; model {a.model}", "command": a.command, "date": date,
                     "machine": mach})

    f32, i8 = summary("f32_throughput.jsonl"), summary("int8_throughput.jsonl")
    f32c, i8c = summary("f32_camera.jsonl"), summary("int8_camera.jsonl")
    o32, o8 = load("ort_f32_e2e.json"), load("ort_int8_e2e.json")
    ev = load("eval.json")
    miou = {r["name"]: r["value"] for r in ev} if isinstance(ev, list) else {}
    sp = a.split
    cam = f"{sp}, paced at {a.pace:g} FPS, stale frames dropped"
    add("e2e_fps_f32", f32.get("fps"), "FPS", sp)
    add("e2e_fps_int8", i8.get("fps"), "FPS", sp)
    rss = [s.get("peak_rss_mib") for s in (f32, i8, f32c, i8c) if s.get("peak_rss_mib") is not None]
    add("peak_rss_mib", max(rss) if rss else None, "MiB", f"{sp}, max over the four edge-seg runs")
    add("p50_latency_ms", i8c.get("latency_p50_ms"), "ms", cam + " (int8)")
    add("p99_latency_ms", i8c.get("latency_p99_ms"), "ms", cam + " (int8)")
    add("p50_latency_f32_ms", f32c.get("latency_p50_ms"), "ms", cam + " (f32)")
    add("p99_latency_f32_ms", f32c.get("latency_p99_ms"), "ms", cam + " (f32)")
    add("camera_fps_f32", f32c.get("fps"), "FPS", cam + " (f32)")
    add("camera_fps_int8", i8c.get("fps"), "FPS", cam + " (int8)")
    add("camera_dropped_int8", i8c.get("dropped"), "frames", cam + " (int8)")
    for k, s in (("f32", f32), ("int8", i8)):
        for stage in ("preprocess", "infer", "post", "draw", "output"):
            add(f"stage_{stage}_{k}_ms", s.get(f"mean_{stage}_ms"), "ms (mean)", sp)
    add("ort_e2e_fps_f32", o32.get("fps"), "FPS", sp + f" (onnxruntime, {o32.get('threads')} threads)")
    add("ort_e2e_fps_int8", o8.get("fps"), "FPS", sp + f" (onnxruntime, {o8.get('threads')} threads)")
    add("ort_peak_rss_mib", max(o32.get("peak_rss_mib", 0), o8.get("peak_rss_mib", 0)) or None, "MiB", sp)
    val = "CamVid val (101 frames, edge-seg eval)"
    add("val_miou_f32", miou.get("val_miou_f32"), "mIoU %", val)
    add("val_miou_int8", miou.get("val_miou_int8"), "mIoU %", val)
    ratio = lambda x, y: None if not x or not y else x / y
    add("edge_vs_ort_e2e_fps_f32", ratio(f32.get("fps"), o32.get("fps")), "x (edge FPS / ort FPS)", sp)
    add("edge_vs_ort_e2e_fps_int8", ratio(i8.get("fps"), o8.get("fps")), "x (edge FPS / ort FPS)", sp)
    out = merge_records(a.results, recs)
    print(f"\n{len(recs)} records -> {out}")
    for r in recs:
        print(f"  {r['name']:<28} {r['value']:>10.3f}  {r['unit']}  [{r['split']}]")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--data", required=True)
    r.add_argument("--split", default="val")
    r.add_argument("--limit", type=int, default=0)
    r.add_argument("--out", required=True)
    e = sub.add_parser("e2e")
    e.add_argument("--model", required=True)
    e.add_argument("--input", required=True)
    e.add_argument("--size", required=True)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", required=True)
    c = sub.add_parser("records")
    c.add_argument("--work", required=True)
    c.add_argument("--results", required=True)
    c.add_argument("--command", required=True)
    c.add_argument("--split", required=True)
    c.add_argument("--pace", type=float, required=True)
    c.add_argument("--model", required=True, help="the model file's name, for the records' split")
    c.add_argument("--prefix", default="", help="prefix of the record names")
    a = ap.parse_args()
    {"record": cmd_record, "e2e": cmd_e2e, "records": cmd_records}[a.cmd](a)


if __name__ == "__main__":
    main()

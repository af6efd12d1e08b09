#!/usr/bin/env python3
"""Result records for issue #21 (docs/results/pretrained.json), called by run.sh.

  record.py count --model M.onnx --results R --command C
      default_params (initializer values of the float graph) and default_gflops (2 x the
      multiply-adds of Conv/Gemm/MatMul nodes at the graph's fixed input size, from onnx shape
      inference)
  record.py step --rust RUST.json --torch TORCH.json --results R --command C
      train_step_ms, torch_train_step_ms (medians) and their ratio
  record.py ort --eval EVAL.json --name NAME --results R --command C
      an onnxruntime mIoU written by benches/quantize/peer.py eval
  record.py fps --stats STATS.jsonl --name NAME --split S --results R --command C
      the end-to-end FPS of an `edge-seg run --stats` summary (and its backend in the unit)
  record.py parity --ours RUN/metrics.jsonl --torch TORCH.jsonl --name PREFIX --split S ...
      trainer parity: the final evaluation of our run and of torch_train.py's on the same
      config, and the mean of each one's last three evaluations
      (PREFIX_ours_miou, PREFIX_torch_miou, PREFIX_ours_last3_miou, PREFIX_torch_last3_miou)
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import merge_records, recorder  # noqa: E402


def count(a, add):
    import numpy as np
    import onnx
    from onnx import numpy_helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(a.model))
    g = m.graph
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)  # f16 weight storage counts too
    params = sum(int(np.prod(t.dims)) for t in g.initializer if t.data_type in floats and len(t.dims) > 0)
    shapes = {}
    for vi in list(g.value_info) + list(g.output) + list(g.input):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    inits = {t.name: numpy_helper.to_array(t).shape for t in g.initializer}
    for n in g.node:  # f16 storage: a Cast of an initializer is that weight
        if n.op_type == "Cast" and n.input[0] in inits:
            inits[n.output[0]] = inits[n.input[0]]
    macs = 0
    for n in g.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            out = shapes.get(n.output[0])
            if not out or 0 in out:
                sys.exit(f"{a.model}: no inferred shape for {n.output[0]}")
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("Gemm", "MatMul"):
            out = shapes.get(n.output[0])
            a_shape = shapes.get(n.input[0]) or list(inits.get(n.input[0], []))
            macs += int(np.prod(out)) * int(a_shape[-1])
    add("default_params", params, "parameters", "-")
    hw = "x".join(str(d.dim_value) for d in g.input[0].type.tensor_type.shape.dim[2:])
    add("default_gflops", 2 * macs / 1e9, f"GFLOPs (2 x MACs) per {hw} network input", "-")


def step(a, add):
    r = json.loads(Path(a.rust).read_text())
    t = json.loads(Path(a.torch).read_text())
    add("train_step_ms", r["median_ms"], "ms per step (median; Lite0 seg net, batch 8, 256x256)", "random input")
    add("torch_train_step_ms", t["median_ms"], "ms per step (median; same net and batch, PyTorch 2 threads)", "random input")
    add("train_step_ratio_vs_torch", r["median_ms"] / t["median_ms"], "x (ours / PyTorch, lower is better)", "random input")


def ort(a, add):
    e = json.loads(Path(a.eval).read_text())
    if "error" in e:
        sys.exit(f"{a.eval}: {e['error']}")
    add(a.name, 100 * e["miou"], "mIoU % (onnxruntime)", a.split)


def fps(a, add):
    summary = None
    for line in Path(a.stats).read_text().splitlines():
        if line.strip():
            j = json.loads(line)
            summary = j.get("summary", summary)
    if summary is None:
        sys.exit(f"{a.stats}: no summary line")
    add(a.name, summary["fps"], f"FPS end to end ({summary['backend']}, {summary['frames_out']} frames)", a.split)


def parity(a, add):
    ours = []
    for line in Path(a.ours).read_text().splitlines():
        j = json.loads(line) if line.strip() else {}
        if "val_iou" in j:
            ious = j["val_iou"]
            ours.append(100 * sum(ious) / len(ious))
    torch_ = [json.loads(line)["miou"] for line in Path(a.torch).read_text().splitlines() if line.strip()]
    if len(ours) < 3 or len(torch_) < 3:
        sys.exit(f"{a.ours} / {a.torch}: fewer than three evaluations")
    for who, v in (("ours", ours), ("torch", torch_)):
        add(f"{a.name}_{who}_miou", v[-1], "mIoU % (final evaluation)", a.split)
        add(f"{a.name}_{who}_last3_miou", sum(v[-3:]) / 3, "mIoU % (mean of the last three evaluations)", a.split)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("count", "step", "ort", "fps", "parity"):
        p = sub.add_parser(name)
        p.add_argument("--results", required=True)
        p.add_argument("--command", required=True)
    sub.choices["count"].add_argument("--model", required=True)
    sub.choices["step"].add_argument("--rust", required=True)
    sub.choices["step"].add_argument("--torch", required=True)
    sub.choices["ort"].add_argument("--eval", required=True)
    sub.choices["ort"].add_argument("--name", required=True)
    sub.choices["ort"].add_argument("--split", default="val")
    sub.choices["fps"].add_argument("--stats", required=True)
    sub.choices["fps"].add_argument("--name", required=True)
    sub.choices["fps"].add_argument("--split", required=True)
    sub.choices["parity"].add_argument("--ours", required=True)
    sub.choices["parity"].add_argument("--torch", required=True)
    sub.choices["parity"].add_argument("--name", required=True)
    sub.choices["parity"].add_argument("--split", required=True)
    a = ap.parse_args()
    recs, add = recorder(a.command, echo=True)
    {"count": count, "step": step, "ort": ort, "fps": fps, "parity": parity}[a.cmd](a, add)
    merge_records(a.results, recs)


if __name__ == "__main__":
    main()

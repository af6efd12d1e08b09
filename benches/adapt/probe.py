#!/usr/bin/env python3
"""Two probes of ideas for issue #5 that were measured but not built into the runtime.

  python3 benches/adapt/probe.py [--data ../shared/data/camvid] [--model runs/adapt/day_source.onnx]
                                 [--work runs/adapt_probe] [--results docs/results/adapt_probe.json]
                                 [--parts gate,feature_norm]

Both read the dusk (0001TP) and day val frames, the test of benches/adapt/run.py, so they are a
look at the test, not a way to choose settings; nothing here changes a default.

gate: could a domain gate keep the source weights on day frames and the adapted ones on dusk
  frames, so adaptation could not cost day accuracy? Each frame is described by the per-channel
  mean and standard deviation of its normalised input (what input_norm uses). A nearest-centroid
  gate sends a frame to the adapted weights when it is closer to the centroid of the adaptation
  stream (the 62 dusk frames) than to that of the 8 source frames of run.py (0006R0), distances
  scaled per dimension by the source frames' spread. Records the fraction of val, 0006R0-train
  and dusk frames the gate sends to the adapted weights.

feature_norm: per-frame normalisation of features (alpha-BN, Schneider et al. 2020, with the
  frame's own statistics): after the first K convolutions of the source graph (BatchNorm is
  folded into them, so their output is BatchNorm's), each channel is mapped from its blend of the
  frame's and the source frames' statistics (strength alpha) to the source frames' statistics, as
  input_norm does for the input. The source statistics are taken layer by layer with
  onnxruntime on 8 source frames; the graph is then scored with `edge-seg eval`. Each setting is
  scored twice: on tune.py's synthetic shift (darkened 0016E5 frames; the forgetting check on the
  0006R0 train frames; tune.py's source frames) and on dusk and day val (run.py's source frames).
  The setting tune.py's rule picks on the synthetic shift is recorded as chosen, with its dusk
  and day val figures.

Needs numpy, pillow, onnx, onnxruntime (pip). Writes records name/value/unit/split/command/date/machine.
"""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import merge_records, recorder  # noqa: E402
from run import DUSK, EDGE, miou, source_frame_files  # noqa: E402
from tune import SOURCE, make_set  # noqa: E402

FEATURE_NORM = [(1, 0.25), (1, 0.5), (1, 0.75), (1, 1.0), (None, 0.25), (None, 0.5)]  # (first K convolutions or all, alpha)


def meta(model):
    return {p.key: p.value for p in model.metadata_props}


def inputs(model, files):
    """Normalised CHW inputs ([1, 3, h, w] float32) of `files`, as the runtime computes them."""
    m = meta(model)
    mean = np.array([float(v) for v in m["edge_seg.mean"].split(",")], np.float32)
    std = np.array([float(v) for v in m["edge_seg.std"].split(",")], np.float32)
    h, w = int(m["edge_seg.input_height"]), int(m["edge_seg.input_width"])
    out = []
    for f in files:
        im = Image.open(f).convert("RGB")
        if im.size != (w, h):
            sys.exit(f"{f}: {im.size[0]}x{im.size[1]}, the probe needs frames at the model's {w}x{h}")
        x = (np.asarray(im, np.float32) / 255.0 - mean) / std
        out.append(x.transpose(2, 0, 1)[None].copy())
    return out


def colour_stats(x):
    """Per-channel mean and population std of one normalised input: 6 values."""
    v = x[0].reshape(3, -1).astype(np.float64)
    return np.concatenate([v.mean(1), v.std(1)])


def gate(model, src_files, data, add):
    day = sorted((Path(data) / "train").glob("0006R0_*.png"))
    sets = {
        "val": sorted((Path(data) / "val").glob("*.png")),
        "0006R0": day,
        "dusk": sorted((Path(data) / "train").glob("0001TP_*.png")),
    }
    stats = {k: np.array([colour_stats(x) for x in inputs(model, v)]) for k, v in sets.items()}
    src = np.array([colour_stats(x) for x in inputs(model, src_files)])
    mu, sd = src.mean(0), src.std(0) + 1e-3
    target = stats["dusk"].mean(0)
    for k, v in stats.items():
        d_src = np.sqrt((((v - mu) / sd) ** 2).mean(1))
        d_tgt = np.sqrt((((v - target) / sd) ** 2).mean(1))
        add(f"probe_gate_{k}_to_adapted", 100.0 * float((d_tgt < d_src).mean()), "% of frames",
            f"{k} frames ({len(v)}) sent to the adapted weights by a nearest-centroid gate on colour statistics "
            "(source centroid: the 8 source frames of run.py; target centroid: the 62 dusk frames)")
        add(f"probe_gate_{k}_source_distance", float(np.median(d_src)), "source spreads",
            f"{k} frames: median RMS distance of their colour statistics to the source frames' mean, "
            "per dimension in units of the source frames' spread (the source frames themselves: about 1)")


def feature_norm_graph(model, xs, first, alpha):
    """A copy of `model` with per-frame feature normalisation after its first `first` convolutions
    (all but the classifier when None); source statistics taken layer by layer on inputs `xs`."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    name = g.input[0].name
    convs = [n for n in g.node if n.op_type == "Conv"][:-1]  # never the classifier
    for k, conv in enumerate(convs[:first]):
        out = conv.output[0]
        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        del probe.graph.output[:]
        probe.graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
        sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        ys = [sess.run(None, {name: x})[0] for x in xs]  # [1, c, h, w] each
        y = np.concatenate([v[0].reshape(v.shape[1], -1) for v in ys], 1).astype(np.float64)
        mu, sd = y.mean(1), y.std(1)
        c = mu.shape[0]
        p = f"feature_norm{k}."
        conv.output[0] = p + "in"
        for n, v in [("alpha", np.full(c, alpha)), ("prior_mean", (1 - alpha) * mu),
                     ("prior_std", (1 - alpha) * sd), ("mean", mu), ("std", sd), ("eps", np.full(c, 1e-5))]:
            g.initializer.append(numpy_helper.from_array(np.asarray(v, np.float32).reshape(1, c, 1, 1), p + n))
        r = dict(axes=[2, 3], keepdims=1)
        nodes = [
            helper.make_node("ReduceMean", [p + "in"], [p + "frame_mean"], **r),  # [1, c, 1, 1]
            helper.make_node("Sub", [p + "in", p + "frame_mean"], [p + "centred"]),
            helper.make_node("Mul", [p + "centred", p + "centred"], [p + "squared"]),
            helper.make_node("ReduceMean", [p + "squared"], [p + "frame_var"], **r),
            helper.make_node("Add", [p + "frame_var", p + "eps"], [p + "frame_var_eps"]),
            helper.make_node("Sqrt", [p + "frame_var_eps"], [p + "frame_std"]),
            helper.make_node("Mul", [p + "frame_mean", p + "alpha"], [p + "a_mean"]),
            helper.make_node("Add", [p + "a_mean", p + "prior_mean"], [p + "blend_mean"]),
            helper.make_node("Mul", [p + "frame_std", p + "alpha"], [p + "a_std"]),
            helper.make_node("Add", [p + "a_std", p + "prior_std"], [p + "blend_std"]),
            helper.make_node("Div", [p + "std", p + "blend_std"], [p + "scale"]),
            helper.make_node("Sub", [p + "in", p + "blend_mean"], [p + "shifted"]),
            helper.make_node("Mul", [p + "shifted", p + "scale"], [p + "scaled"]),
            helper.make_node("Add", [p + "scaled", p + "mean"], [out]),  # what the conv's readers read
        ]
        at = list(g.node).index(conv) + 1
        for j, n in enumerate(nodes):
            g.node.insert(at + j, n)
    onnx.checker.check_model(m)
    return m, min(first or len(convs), len(convs))


def feature_norm(model, src_files, a, work, add):
    """Every FEATURE_NORM setting scored on the synthetic tuning shift of tune.py (its source
    frames: 0016E5 train frames) and on dusk and day val (source frames: run.py's); the setting
    tune.py's rule would pick (largest synthetic gain whose day change is at least -0.5) is
    recorded as chosen."""
    log = work / "log.txt"
    tune = work / "tune"
    make_set(a.data, tune)
    sets = {  # name -> (data root, split, what)
        "dark": (str(tune), "train", "darkened 0016E5 train frames (tune.py's synthetic shift)"),
        "day0006R0": (a.data, str(tune / "day.txt"), "0006R0 train frames (tune.py's forgetting check)"),
        "dusk": (a.data, DUSK, f"dusk frames, {DUSK}"),
        "day_val": (a.data, "val", "CamVid val"),
    }
    before = {}
    for k, (root, split, what) in sets.items():
        before[k] = miou(a.model, root, split, log)
        add(f"probe_feature_norm_{k}_miou_before", before[k], "mIoU %", f"{what}; source model")
    stats_from = {"tune": inputs(model, sorted((tune / SOURCE).iterdir())), "run": inputs(model, src_files)}
    scores = {}
    for first, alpha in FEATURE_NORM:
        tag = f"first{first}_a{alpha}" if first else f"all_a{alpha}"
        for frames, keys in (("tune", ("dark", "day0006R0")), ("run", ("dusk", "day_val"))):
            m, k = feature_norm_graph(model, stats_from[frames], first, alpha)
            path = work / f"feature_norm_{tag}_{frames}.onnx"
            onnx.save(m, path)
            what = (f"source model with per-frame feature normalisation after its first {k} convolutions, "
                    f"alpha {alpha}, source statistics from {'tune.py' if frames == 'tune' else 'run.py'}'s source frames")
            for key in keys:
                root, split, name = sets[key]
                v = miou(path, root, split, log)
                scores[(tag, key)] = v
                add(f"probe_feature_norm_{tag}_{key}_miou", v, "mIoU %", f"{name}; {what}")
    ok = [(scores[(t, "dark")] - before["dark"], t) for t in {t for t, _ in scores}
          if scores[(t, "day0006R0")] - before["day0006R0"] >= -0.5]
    if ok:
        gain, tag = max(ok)
        rule = "largest synthetic gain with a 0006R0 change of at least -0.5 (tune.py's rule)"
        add("probe_feature_norm_chosen_dark_gain", gain, "mIoU points", f"{tag}: {rule}")
        add("probe_feature_norm_chosen_dusk_gain", scores[(tag, "dusk")] - before["dusk"], "mIoU points",
            f"{tag}, chosen on the synthetic shift: dusk frames, {DUSK}")
        add("probe_feature_norm_chosen_day_val_change", scores[(tag, "day_val")] - before["day_val"],
            "mIoU points", f"{tag}, chosen on the synthetic shift: CamVid val")
        print(f"chosen on the synthetic shift: {tag}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/camvid")
    ap.add_argument("--model", default="runs/adapt/day_source.onnx", help="from benches/adapt/run.py")
    ap.add_argument("--work", default="runs/adapt_probe")
    ap.add_argument("--results", default="docs/results/adapt_probe.json")
    ap.add_argument("--source-frames", type=int, default=8)
    ap.add_argument("--parts", default="gate,feature_norm")
    a = ap.parse_args()
    if not Path(a.model).exists():
        sys.exit(f"probe.py: {a.model} does not exist (python3 benches/adapt/run.py --parts quality trains it)")
    subprocess.run(["cargo", "build", "--release", "-p", "edge-seg-runtime", "--bin", "edge-seg"], check=True)
    if not Path(EDGE).exists():
        sys.exit(f"probe.py: {EDGE} missing")
    command = "python3 benches/adapt/probe.py" + "".join(f" {x}" for x in sys.argv[1:])
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    recs, add = recorder(command, echo=True)

    model = onnx.load(a.model)
    src_files = source_frame_files(a.data, a.source_frames)  # the source frames of run.py
    parts = set(a.parts.split(","))
    if "gate" in parts:
        gate(model, src_files, a.data, add)
    if "feature_norm" in parts:
        feature_norm(model, src_files, a, work, add)
    print(f"{len(recs)} records -> {merge_records(a.results, recs)}")


if __name__ == "__main__":
    main()

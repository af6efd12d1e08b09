#!/usr/bin/env python3
"""Issue #27: the teacher/student report, cross-sequence protocol at 1/8 (seed 0), written to
docs/results/distill.json.

  python3 benches/distill/report.py [--runs runs/distill] [--timing] [--threads 2]

The teacher is issue #25's CAC run on the xseq protocol (runs/xseq-pre/cac_1_8_s0: EfficientNet-Lite0
from ImageNet weights, 33 labeled pool frames + the rest of the pool and val unlabeled), its last
checkpoint. Students, each 1,000 steps on the same 33 labeled frames (resumable; a row with
`done.json` is skipped):

  scratch       trainer/configs/distill_student_xseq.toml --set method="supervised" (no teacher)
  kd            trainer/configs/distill_student_xseq.toml (KD on the labeled crops)
  kd_unlabeled  ... --set distill.unlabeled_weight=1.0 (+ KD on the 233 other pool frames)
  imagenet      trainer/configs/distill_student_imagenet_xseq.toml (Lite0 from ImageNet at 128x160,
                no teacher: the only ImageNet weights at 1/8 of the teacher's FLOPs)
  imagenet_kd_frame  trainer/configs/distill_student_imagenet_kd_xseq.toml (that student taught on
                the labeled and the 233 unlabeled pool frames; the teacher scores whole frames at its
                own 360x480 and each crop reads its region: `distill.teacher_view = "frame"`)
  imagenet_kd_crop   ... --set distill.teacher_view="crop" (the teacher shown the student's crops,
                at the student's scale)

`--only REGEX` trains and scores only the teacher and the rows whose name matches (the records of
the other rows stay as they are in the results file).

Every model's last checkpoint is exported (`edge-seg-train export --checkpoint last`) and scored by
`edge-seg eval --backend tract` on val and on the 101 frames of 0006R0 (splits/camvid-xseq/eval.txt);
parameters and GFLOPs from `edge-seg-train info`. The val figures: val frames were unlabeled
inputs of the teacher's CAC training (not of any student's). With `--timing` (run it on an idle
machine: nothing else may run), also the tract latency and FPS of each export (`info --runs 30`).

Records: teacher_val_miou, teacher_xseq_miou, teacher_gflops, teacher_params, student_gflops
(the ResNet-lite student), student_<row>_val_miou, student_<row>_xseq_miou, student_<row>_gflops,
student_<row>_params, student_<row>_train_min, student_<row>_retention_<split> (the row's mIoU /
the teacher's), and with --timing `<model>_latency_ms`, `<model>_fps`.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import merge_records, recorder, train_seconds  # noqa: E402

TRAIN = os.environ.get("EDGE_SEG_TRAIN", "target/release/edge-seg-train")
RUNTIME = os.environ.get("EDGE_SEG", "target/release/edge-seg")
TEACHER = Path("runs/xseq-pre/cac_1_8_s0")
STUDENT = "trainer/configs/distill_student_xseq.toml"
ROWS = {
    "scratch": (STUDENT, ["--set", 'method="supervised"']),
    "kd": (STUDENT, []),
    "kd_unlabeled": (STUDENT, ["--set", "distill.unlabeled_weight=1.0"]),
    "imagenet": ("trainer/configs/distill_student_imagenet_xseq.toml", []),
    "imagenet_kd_frame": ("trainer/configs/distill_student_imagenet_kd_xseq.toml", []),
    "imagenet_kd_crop": ("trainer/configs/distill_student_imagenet_kd_xseq.toml",
                         ["--set", 'distill.teacher_view="crop"']),
}
SPLITS = {"val": "val", "xseq": "splits/camvid-xseq/eval.txt"}
RESULTS = "docs/results/distill.json"


def sh(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def train(row, out):
    cfg, extra = ROWS[row]
    cmd = [TRAIN, "train", "--config", cfg, "--out", out, "--no-progress", *extra]
    if (out / "last.safetensors").exists():
        cmd.append("--resume")
    sh(cmd)
    (out / "done.json").write_text("{}")


def export(run, onnx):
    if not onnx.exists():
        sh([TRAIN, "export", "--run", run, "--checkpoint", "last", "--out", onnx])


def evaluate(onnx, split):
    out = onnx.with_suffix(f".{split}.json")
    if not out.exists():
        sh([RUNTIME, "eval", "--model", onnx, "--split", SPLITS[split], "--backend", "tract", "--json", out])
    return json.loads(out.read_text())["miou"]  # already in %


def info(onnx, timing, threads):
    runs = 30 if timing else 1
    p = sh([TRAIN, "info", "--model", onnx, "--runs", runs, "--threads", threads, "--json"],
           capture_output=True, text=True)
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/distill")
    ap.add_argument("--timing", action="store_true", help="also time each export in tract (idle machine only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="only the teacher and the rows matching this regex")
    a = ap.parse_args()
    if not (TEACHER / "done.json").exists():
        sys.exit(f"{TEACHER}: the teacher is not trained: python3 benches/semi/pretrained.py --protocol xseq "
                 "--only '^cac_1_8_s0$'")
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    models = {"teacher": TEACHER}
    rows = [r for r in ROWS if not a.only or re.search(a.only, r)]
    for row in rows:
        out = runs / f"student_{row}"
        if not (out / "done.json").exists():
            train(row, out)
        models[f"student_{row}"] = out
    cmd = "python3 benches/distill/report.py" + (" --timing" if a.timing else "") + \
        (f" --only '{a.only}'" if a.only else "")
    recs, add = recorder(cmd, echo=True)
    scores = {}
    for name, run in models.items():
        onnx = runs / f"{name}.onnx"
        export(run, onnx)
        for split, label in [("val", "camvid val (101 frames)"),
                             ("xseq", "camvid 0006R0 train frames (xseq eval, 101 frames)")]:
            v = evaluate(onnx, split)
            scores[(name, split)] = v
            add(f"{name}_{split}_miou", v, "mIoU %", label)
        i = info(onnx, a.timing, a.threads)
        size = "x".join(str(d) for d in i["input"][2:])
        add(f"{name}_gflops", i["gflops"], f"GFLOPs at {size}", "model")
        add(f"{name}_params", i["params"] / 1e6, "M parameters", "model")
        if name != "teacher":
            add(f"{name}_train_min", (train_seconds(run) or 0.0) / 60.0, "min", "camvid xseq pool, 1/8 seed 0")
        if a.timing:
            ms = i["latency_median_ms"]
            add(f"{name}_latency_ms", ms, f"ms (tract, {a.threads} threads, median of 30)", "model")
            add(f"{name}_fps", 1000.0 / ms, f"frames/s (tract, {a.threads} threads)", "model")
        if name == "student_kd":
            add("student_gflops", i["gflops"], f"GFLOPs at {size}", "model")
    for split in SPLITS:
        t = scores[("teacher", split)]
        for row in rows:
            add(f"student_{row}_retention_{split}", scores[(f"student_{row}", split)] / t,
                "fraction of the teacher's mIoU", split)
    merge_records(RESULTS, recs)


if __name__ == "__main__":
    main()

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
  imagenet_kd_frame_labeled  ... --set distill.unlabeled_weight=0.0 (frame view, KD on the labeled
                crops only)

`--only REGEX` trains and scores only the teacher and the rows whose name matches (the records of
the other rows stay as they are in the results file).

`--teacher lite2` (the issue's larger teacher): the same CAC recipe with EfficientNet-Lite2 and twice the steps
(trainer/configs/xseq_cac_lite2_teacher.toml, trained here into <runs>/teacher_lite2 when not done;
4.92 GFLOPs at 360x480), and the rows that have a teacher (`kd*`, `imagenet_kd_*`) taught by it
into <runs>/lite2/student_<row>; records `lite2_teacher_*` and `lite2_student_<row>_*`. Rows
without a teacher (`scratch`, `imagenet`) are the runs in <runs> (trained there first when missing:
the same run as without --teacher), scored again and recorded under the prefix as well
(`lite2_student_<row>_*`), so that every `lite2_` pairing of a KD row with its no-teacher row
comes from one machine. The student stays at 128x160 (8.4 % of this teacher's FLOPs).

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
LITE2_TEACHER_CONFIG = "trainer/configs/xseq_cac_lite2_teacher.toml"
STUDENT = "trainer/configs/distill_student_xseq.toml"
ROWS = {
    "scratch": (STUDENT, ["--set", 'method="supervised"']),
    "kd": (STUDENT, []),
    "kd_unlabeled": (STUDENT, ["--set", "distill.unlabeled_weight=1.0"]),
    "imagenet": ("trainer/configs/distill_student_imagenet_xseq.toml", []),
    "imagenet_kd_frame": ("trainer/configs/distill_student_imagenet_kd_xseq.toml", []),
    "imagenet_kd_crop": ("trainer/configs/distill_student_imagenet_kd_xseq.toml",
                         ["--set", 'distill.teacher_view="crop"']),
    "imagenet_kd_frame_labeled": ("trainer/configs/distill_student_imagenet_kd_xseq.toml",
                                  ["--set", "distill.unlabeled_weight=0.0"]),
}
SPLITS = {"val": "val", "xseq": "splits/camvid-xseq/eval.txt"}
RESULTS = "docs/results/distill.json"


def sh(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def has_teacher(row):
    return row.startswith("kd") or row.startswith("imagenet_kd")


def train_config(cfg, extra, out):
    cmd = [TRAIN, "train", "--config", cfg, "--out", out, "--no-progress", *extra]
    if (out / "last.safetensors").exists():
        cmd.append("--resume")
    sh(cmd)
    (out / "done.json").write_text("{}")


def train(row, out, teacher_set):
    cfg, extra = ROWS[row]
    train_config(cfg, [*extra, *teacher_set] if has_teacher(row) else extra, out)


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
    ap.add_argument("--teacher", choices=["lite0", "lite2"], default="lite0",
                    help="lite2: the larger teacher (see above); records prefixed lite2_")
    a = ap.parse_args()
    runs = Path(a.runs)
    runs.mkdir(parents=True, exist_ok=True)
    if a.teacher == "lite2":
        teacher, prefix, student_dir = runs / "teacher_lite2", "lite2_", runs / "lite2"
        if not (teacher / "done.json").exists():
            train_config(LITE2_TEACHER_CONFIG, [], teacher)
    else:
        teacher, prefix, student_dir = TEACHER, "", runs
        if not (teacher / "done.json").exists():
            sys.exit(f"{teacher}: the teacher is not trained: python3 benches/semi/pretrained.py --protocol xseq "
                     "--only '^cac_1_8_s0$'")
    teacher_set = ["--set", f'distill.teacher={json.dumps(str(teacher / "last.safetensors"))}']
    models = {"teacher": teacher}
    rows = [r for r in ROWS if not a.only or re.search(a.only, r)]
    shared = set()  # rows without a teacher, reused from <runs> under a larger teacher
    for row in rows:
        if prefix and not has_teacher(row):
            out = runs / f"student_{row}"
            if not (out / "done.json").exists():
                train(row, out, teacher_set)  # no teacher: the same run as without --teacher
            shared.add(f"student_{row}")
        else:
            out = student_dir / f"student_{row}"
            if not (out / "done.json").exists():
                student_dir.mkdir(parents=True, exist_ok=True)
                train(row, out, teacher_set)
        models[f"student_{row}"] = out
    cmd = "python3 benches/distill/report.py" + (" --timing" if a.timing else "") + \
        (f" --only '{a.only}'" if a.only else "") + (f" --teacher {a.teacher}" if prefix else "")
    recs, add = recorder(cmd, echo=True)
    scores = {}
    for name, run in models.items():
        if name == "teacher":
            onnx = runs / f"{prefix}teacher.onnx"
        else:
            onnx = (runs if name in shared else student_dir) / f"{name}.onnx"
        export(run, onnx)
        for split, label in [("val", "camvid val (101 frames)"),
                             ("xseq", "camvid 0006R0 train frames (xseq eval, 101 frames)")]:
            v = evaluate(onnx, split)
            scores[(name, split)] = v
            add(f"{prefix}{name}_{split}_miou", v, "mIoU %", label)
        i = info(onnx, a.timing, a.threads)
        size = "x".join(str(d) for d in i["input"][2:])
        add(f"{prefix}{name}_gflops", i["gflops"], f"GFLOPs at {size}", "model")
        add(f"{prefix}{name}_params", i["params"] / 1e6, "M parameters", "model")
        if name != "teacher" or prefix:
            add(f"{prefix}{name}_train_min", (train_seconds(run, discount_pauses=True) or 0.0) / 60.0, "min", "camvid xseq pool, 1/8 seed 0")
        if a.timing:
            ms = i["latency_median_ms"]
            add(f"{prefix}{name}_latency_ms", ms, f"ms (tract, {a.threads} threads, median of 30)", "model")
            add(f"{prefix}{name}_fps", 1000.0 / ms, f"frames/s (tract, {a.threads} threads)", "model")
        if name == "student_kd" and not prefix:
            add("student_gflops", i["gflops"], f"GFLOPs at {size}", "model")
    for split in SPLITS:
        t = scores[("teacher", split)]
        for row in rows:
            add(f"{prefix}student_{row}_retention_{split}", scores[(f"student_{row}", split)] / t,
                "fraction of the teacher's mIoU", split)
    merge_records(RESULTS, recs)


if __name__ == "__main__":
    main()

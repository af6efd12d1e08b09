#!/usr/bin/env python3
"""Issue #5 measurements in one command: on-device adaptation, day -> dusk on CamVid.

  python3 benches/adapt/run.py [--data ../shared/data/camvid] [--work runs/adapt]
                               [--results docs/results/adapt.json] [--stress 10] [--fps-loops 4]
                               [--source-config trainer/configs/camvid_day_source.toml]

1. Source model: the edge-student architecture trained supervised on the daytime drives only
   (train frames of 0006R0 and 0016E5; trainer/configs/camvid_day_source.toml), exported to
   ONNX. Skipped when runs/day_source already holds the finished run (resumed when partial).
2. Before: mIoU on the 62 labeled dusk frames of 0001TP (train split,
   splits/camvid-dusk/0001TP_train.txt) and on CamVid val (day, 0016E5).
3. `edge-seg adapt` over the 0001TP frames in stream order (unlabeled; default settings, guards
   on; 5 steps per frame, since each 1 Hz frame stands for 30 camera frames of which the worker
   takes one in 6), then the same two evaluations: dusk gain and day forgetting; --seeds
   adaptation seeds (crops, jitter, sampling), reported per seed and as their mean. With source
   frames, also the per-frame input normalisation (input_norm=0.5, off by default) alone and
   under the same fine-tuning (records *_input_norm*).
   Per class (--parts classes, after quality): dusk and day val IoU of every class and pixel
   accuracy, before and after (mean of the seeds).
4. Collapse stress stream: every dusk frame followed by --stress near-constant frames, adapted
   with guards off (naive) and on (guarded); dusk mIoU of each.
   All guarded runs get the source-frame monitor: --source-frames (8) frames of the day drive
   0006R0 spread over its train frames (the source model trained on them; neither the dusk
   drive nor the val drive), linked into WORK/source_frames.
5. Cost: mean adaptation step vs mean inference (from the adapt run), and end-to-end FPS of
   `edge-seg run` with and without --adapt on the dusk frames as a 480x360 YUYV recording
   played --fps-loops times.

6. adabn (issue #25): `edge-seg-train adabn` re-estimates the source run's BatchNorm statistics
   on the unlabeled dusk frames (--adabn-scope, --adabn-mix), alone and followed by the default
   adaptation; bnstats: the same on the device from the exported graph (`edge-seg adapt`,
   encoder_stats = --bnstats-mix, blended with the source frames').

Writes docs/results/adapt.json (records name/value/unit/split/command/date/machine). On the
pretrained backbone (issue #25):
  python3 benches/adapt/run.py --source-config trainer/configs/camvid_day_source_pretrained.toml \
      --source-run runs/day_source_pre --work runs/adapt-pre --results docs/results/adapt_pretrained.json \
      --parts quality,adabn,classes,stress,bnstats --adabn-mix 0.4
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import merge_records, read_toml, recorder  # noqa: E402

TRAIN = "target/release/edge-seg-train"
EDGE = "target/release/edge-seg"
SOURCE_CFG = "trainer/configs/camvid_day_source.toml"
DUSK = "splits/camvid-dusk/0001TP_train.txt"
# CamVid's frames are 1 Hz samples of 30 FPS video; the worker takes one step per
# every_n_frames (6) camera frames, i.e. 5 steps per second of video = per recorded frame.
STEPS = 5


def sh(cmd, log=None):
    print("  $", " ".join(str(c) for c in cmd), flush=True)
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if log:
        with open(log, "a") as f:
            f.write("$ " + " ".join(str(c) for c in cmd) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(str(c) for c in cmd)}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r.stdout


def last_iter(run):
    """The last training step logged in `run`'s metrics (0 when none)."""
    p = run / "metrics.jsonl"
    if not p.exists():
        return 0
    its = [json.loads(l).get("iter", 0) for l in p.read_text().splitlines() if l.strip().startswith("{")]
    return max(its, default=0)


def miou(model, data, split, log=None):
    return evaluate(model, data, split, log)[0]


def evaluate(model, data, split, log=None):
    """(mIoU, {class: IoU}, pixel accuracy) from `edge-seg eval --json` (percent; absent classes
    left out)."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "eval.json"
        sh([EDGE, "eval", "--model", model, "--data", data, "--split", split, "--json", out], log)
        j = json.loads(out.read_text())
    classes = {c: v for c, v in j["classes"].items() if v is not None}
    return j["miou"], classes, j["pixel_accuracy"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/camvid")
    ap.add_argument("--work", default="runs/adapt")
    ap.add_argument("--source-run", default="runs/day_source")
    ap.add_argument("--source-config", default=SOURCE_CFG,
                    help="trainer config of the source model (camvid_day_source_x3.toml: 3x the schedule)")
    ap.add_argument("--results", default="docs/results/adapt.json")
    ap.add_argument("--stress", type=int, default=10)
    ap.add_argument("--fps-loops", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3, help="adaptation seeds of the dusk run")
    ap.add_argument("--fps-reps", type=int, default=3, help="alternating runs with and without --adapt")
    ap.add_argument("--source-frames", type=int, default=8, help="0006R0 frames for guard.source_frames (0: none)")
    ap.add_argument("--parts", default="quality,classes,stress,fps",
                    help="comma list of: quality, classes (per-class dusk IoU of the quality part's models), stress, "
                         "fps, adabn (the encoder's BatchNorm statistics re-estimated on the dusk frames, alone and "
                         "followed by the adaptation), bnstats (the same on the device from the exported graph: "
                         "edge-seg adapt with encoder_stats, no head steps)")
    ap.add_argument("--bnstats-mix", default="0.1",
                    help="encoder_stats of the bnstats part (chosen on the synthetic tuning shift)")
    ap.add_argument("--fps-adapt-set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --adapt-set of the fps part's --adapt runs (repeatable)")
    ap.add_argument("--fps-backend", default="tract", choices=["tract", "auto"],
                    help="--backend of the fps part's runs without --adapt (--adapt always infers in tract): tract "
                         "compares like with like; auto (onnxruntime when installed) gives what --adapt costs a user "
                         "against the fastest backend")
    ap.add_argument("--fps-suffix", default="",
                    help="suffix of the fps part's record names (fps_adapt<suffix>, ...), for runs with --fps-adapt-set")
    ap.add_argument("--adabn-scope", default="encoder", choices=["encoder", "all"])
    ap.add_argument("--adabn-mix", default="1.0")
    a = ap.parse_args()
    if not Path("Cargo.toml").exists() or not Path("benches/adapt").is_dir():
        sys.exit("run.py: run from the repository root")
    if not (Path(a.data) / "train").is_dir():
        sys.exit(f"run.py: {a.data} has no train/ (CamVid layout)")
    command = "python3 benches/adapt/run.py" + "".join(f" {x}" for x in sys.argv[1:])
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    recs, add = recorder(command, echo=True)

    print("== build", flush=True)
    for pkg, binary in (("edge-seg-trainer", "edge-seg-train"), ("edge-seg-runtime", "edge-seg")):
        subprocess.run(["cargo", "build", "--release", "-p", pkg, "--bin", binary], check=True)

    run = Path(a.source_run)
    src = work / "day_source.onnx"
    iterations = int(read_toml(a.source_config)["schedule"]["iterations"])
    if last_iter(run) < iterations:
        print("== train the day source model", flush=True)
        cmd = [TRAIN, "train", "--config", a.source_config, "--out", run, "--data", a.data, "--no-progress"]
        if (run / "last.safetensors").exists():
            cmd.append("--resume")
        sh(cmd, log)
    if not src.exists() or src.stat().st_mtime < (run / "last.safetensors").stat().st_mtime:
        sh([TRAIN, "export", "--run", run, "--checkpoint", "last", "--out", src], log)

    a.src_sets = source_frames(a, work)
    parts = set(a.parts.split(","))
    frames = [a.data + "/train", "--prefix", "0001TP"]
    dusk_split = f"0001TP train frames (62, dusk drive never seen with labels), {DUSK}"
    val_split = "CamVid val (101 frames of the day drive 0016E5)"
    if "quality" in parts:
        quality(a, src, work, log, add, dusk_split, val_split, frames)
    if "classes" in parts:
        classes(a, src, work, log, add, dusk_split)
    if "stress" in parts:
        stress(a, src, work, log, add, dusk_split, frames)
    if "fps" in parts:
        fps_part(a, src, work, log, add)
    if "adabn" in parts:
        adabn(a, run, work, log, add, dusk_split, val_split, frames)
    if "bnstats" in parts:
        bnstats(a, src, work, log, add, dusk_split, val_split, frames)
    out = merge_records(a.results, recs)
    print(f"{len(recs)} records -> {out}")


def source_frames(a, work):
    """--adapt-set arguments giving the guard `a.source_frames` day frames (none when 0)."""
    if a.source_frames == 0:
        return []
    d = work / "source_frames"
    link_frames(source_frame_files(a.data, a.source_frames), d)
    return ["--adapt-set", f'guard.source_frames="{d}"']


def source_frame_files(data, n):
    """The `n` source frames: train frames of the day drive 0006R0, spread evenly over it."""
    day = sorted((Path(data) / "train").glob("0006R0_*.png"))
    return day[len(day) // (2 * n)::max(1, len(day) // n)][:n]


def link_frames(frames, d):
    """Makes folder `d` hold links to exactly `frames` (a guard.source_frames folder)."""
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    for p in frames:
        (d / p.name).symlink_to(p.resolve())


def quality(a, src, work, log, add, dusk_split, val_split, frames):
    print("== before", flush=True)
    add("dusk_miou_before", miou(src, a.data, DUSK, log), "mIoU %", dusk_split)
    add("day_val_miou_before", miou(src, a.data, "val", log), "mIoU %", val_split)

    print(f"== adapt on the dusk stream (guards on), seeds 0..{a.seeds - 1}", flush=True)
    dusk, day, steps, rollbacks = [], [], [], []
    for seed in range(a.seeds):
        adapted = work / f"dusk_adapted_s{seed}.onnx"
        summary = work / f"dusk_adapted_s{seed}.json"
        sh([EDGE, "adapt", "--model", src, "--frames", *frames, "--steps-per-frame", STEPS, "--out", adapted,
            "--adapt-set", f"seed={seed}", *a.src_sets, "--summary", summary], log)
        s = json.loads(summary.read_text())
        dusk.append(miou(adapted, a.data, DUSK, log))
        day.append(miou(adapted, a.data, "val", log))
        steps.append(s["stats"]["steps"])
        rollbacks.append(s["stats"]["rollbacks"])
        add(f"dusk_miou_after_s{seed}", dusk[-1], "mIoU %", f"{dusk_split}; adaptation seed {seed}")
        add(f"day_val_miou_after_s{seed}", day[-1], "mIoU %", f"{val_split}; adaptation seed {seed}")
        if seed == 0:
            add("adapt_step_ms", s["mean_step_ms"], "ms",
                "mean wall time of one adaptation step (2 crops 128x192: frozen part in tract, head + losses + "
                "backward + update in candle), 2 cores, seed 0 run")
            add("infer_ms", s["mean_infer_ms"], "ms",
                "mean inference of one 480x360 frame (preprocess + network), same run")
            add("adapt_check_ms", s["stats"]["mean_check_ms"], "ms",
                f"mean wall time of one guard check (monitors on the held and source frames), one every "
                f"swap_every steps ({s['stats']['checks']} checks), same run")
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    spread = lambda v: (max(v) - min(v)) / 2  # noqa: E731
    add("dusk_miou_after", mean(dusk), "mIoU %",
        f"{dusk_split}; after adapting on them unlabeled, in stream order ({steps[0]} steps), "
        f"mean of {a.seeds} adaptation seeds (+-{spread(dusk):.2f})")
    add("day_val_miou_after", mean(day), "mIoU %",
        f"{val_split}; after the dusk adaptation, mean of {a.seeds} seeds (+-{spread(day):.2f})")
    add("adapt_rollbacks", mean(rollbacks), "rollbacks", "per dusk adaptation run, mean over seeds")

    # the per-frame input normalisation (input_norm, off by default; chosen on the synthetic tuning
    # shift at 0.5): alone (lr 0, no step changes a value) and with the default fine-tuning
    if a.source_frames > 0:
        input_norm(a, src, work, log, add, dusk_split, val_split, frames)


def input_norm(a, src, work, log, add, dusk_split, val_split, frames, alpha=0.5):
    print(f"== input_norm={alpha}: alone, and with the fine-tuning", flush=True)
    norm = ["--adapt-set", f"input_norm={alpha}", *a.src_sets]
    only = work / "dusk_input_norm_only.onnx"
    sh([EDGE, "adapt", "--model", src, "--frames", *frames, "--steps-per-frame", "1", "--out", only,
        "--adapt-set", "lr=0.0", *norm], log)
    add("dusk_miou_input_norm_only", miou(only, a.data, DUSK, log), "mIoU %",
        f"{dusk_split}; source model with the per-frame input normalisation only (input_norm={alpha}, no fine-tuning)")
    add("day_val_miou_input_norm_only", miou(only, a.data, "val", log), "mIoU %",
        f"{val_split}; source model with the per-frame input normalisation only (input_norm={alpha})")
    dusk, day = [], []
    for seed in range(a.seeds):
        adapted = work / f"dusk_adapted_input_norm_s{seed}.onnx"
        sh([EDGE, "adapt", "--model", src, "--frames", *frames, "--steps-per-frame", STEPS, "--out", adapted,
            "--adapt-set", f"seed={seed}", *norm], log)
        dusk.append(miou(adapted, a.data, DUSK, log))
        day.append(miou(adapted, a.data, "val", log))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    add("dusk_miou_after_input_norm", mean(dusk), "mIoU %",
        f"{dusk_split}; default adaptation plus input_norm={alpha}, mean of {a.seeds} seeds "
        f"({', '.join(f'{v:.2f}' for v in dusk)})")
    add("day_val_miou_after_input_norm", mean(day), "mIoU %",
        f"{val_split}; default adaptation plus input_norm={alpha}, mean of {a.seeds} seeds "
        f"({', '.join(f'{v:.2f}' for v in day)})")


def classes(a, src, work, log, add, dusk_split):
    """Per-class dusk IoU and pixel accuracy before and after (mean over the quality part's seeds,
    whose adapted models it reads)."""
    print("== per-class dusk IoU", flush=True)
    _, before, acc_before = evaluate(src, a.data, DUSK, log)
    after = [evaluate(work / f"dusk_adapted_s{s}.onnx", a.data, DUSK, log) for s in range(a.seeds)]
    for c, v in before.items():
        add(f"dusk_iou_{c.lower()}_before", v, "IoU %", dusk_split)
        add(f"dusk_iou_{c.lower()}_after", sum(r[1][c] for r in after) / len(after), "IoU %",
            f"{dusk_split}; after adaptation, mean of {a.seeds} seeds")
    found = [c for c, v in before.items() if v >= 1.0]  # classes the source model finds at all
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    add("dusk_miou_found_classes_before", mean([before[c] for c in found]), "mIoU %",
        f"{dusk_split}; mean IoU over the {len(found)} classes with IoU >= 1 before adapting ({', '.join(found)})")
    add("dusk_miou_found_classes_after", mean([mean([r[1][c] for r in after]) for c in found]), "mIoU %",
        f"{dusk_split}; the same classes after adaptation, mean of {a.seeds} seeds")
    add("dusk_pixel_acc_before", acc_before, "%", dusk_split)
    add("dusk_pixel_acc_after", sum(r[2] for r in after) / len(after), "%",
        f"{dusk_split}; after adaptation, mean of {a.seeds} seeds")
    # where the day val forgetting is
    val_split = "CamVid val (101 frames of the day drive 0016E5)"
    _, vbefore, vacc_before = evaluate(src, a.data, "val", log)
    vafter = [evaluate(work / f"dusk_adapted_s{s}.onnx", a.data, "val", log) for s in range(a.seeds)]
    for c, v in vbefore.items():
        add(f"day_val_iou_{c.lower()}_before", v, "IoU %", val_split)
        add(f"day_val_iou_{c.lower()}_after", sum(r[1][c] for r in vafter) / len(vafter), "IoU %",
            f"{val_split}; after the dusk adaptation, mean of {a.seeds} seeds")
    add("day_val_pixel_acc_before", vacc_before, "%", val_split)
    add("day_val_pixel_acc_after", sum(r[2] for r in vafter) / len(vafter), "%",
        f"{val_split}; after the dusk adaptation, mean of {a.seeds} seeds")


def stress(a, src, work, log, add, dusk_split, frames):
    print(f"== collapse stress stream (each dusk frame + {a.stress} near-constant frames)", flush=True)
    for kind, sets in (("naive", ["--adapt-set", "guard.enabled=false"]), ("guarded", a.src_sets)):
        out = work / f"stress_{kind}.onnx"
        sh([EDGE, "adapt", "--model", src, "--frames", *frames, "--steps-per-frame", STEPS, "--stress", a.stress,
            *sets, "--out", out,
            "--summary", work / f"stress_{kind}.json"], log)
        st = json.loads((work / f"stress_{kind}.json").read_text())
        add(f"stress_{kind}_miou_after", miou(out, a.data, DUSK, log), "mIoU %",
            f"{dusk_split}; after adapting on the stress stream ({st['stats']['steps']} steps, "
            f"{st['stats']['rollbacks']} rollbacks, guards {'off' if kind == 'naive' else 'on'})")


def adabn(a, run, work, log, add, dusk_split, val_split, frames):
    """AdaBN (issue #25): `edge-seg-train adabn` re-estimates the BatchNorm statistics (--adabn-scope,
    --adabn-mix) on the unlabeled dusk frames, all at once, as a calibration before deployment would;
    then the default adaptation runs on that model over the same stream (--seeds seeds)."""
    print(f"== AdaBN ({a.adabn_scope}, mix {a.adabn_mix}) on the dusk frames, alone and then adapted", flush=True)
    model = work / "dusk_adabn.onnx"
    how = f"edge-seg-train adabn --scope {a.adabn_scope} --mix {a.adabn_mix} on the 62 unlabeled dusk frames"
    sh([TRAIN, "adabn", "--run", run, "--checkpoint", "last", "--frames", *frames, "--scope", a.adabn_scope,
        "--mix", a.adabn_mix, "--out", model], log)
    add("dusk_miou_adabn", miou(model, a.data, DUSK, log), "mIoU %", f"{dusk_split}; {how}")
    add("day_val_miou_adabn", miou(model, a.data, "val", log), "mIoU %", f"{val_split}; {how}")
    dusk, day = [], []
    for seed in range(a.seeds):
        adapted = work / f"dusk_adabn_adapted_s{seed}.onnx"
        sh([EDGE, "adapt", "--model", model, "--frames", *frames, "--steps-per-frame", STEPS, "--out", adapted,
            "--adapt-set", f"seed={seed}", *a.src_sets], log)
        dusk.append(miou(adapted, a.data, DUSK, log))
        day.append(miou(adapted, a.data, "val", log))
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    add("dusk_miou_adabn_adapted", mean(dusk), "mIoU %",
        f"{dusk_split}; {how}, then the default adaptation, mean of {a.seeds} seeds ({', '.join(f'{v:.2f}' for v in dusk)})")
    add("day_val_miou_adabn_adapted", mean(day), "mIoU %",
        f"{val_split}; the same models, mean of {a.seeds} seeds ({', '.join(f'{v:.2f}' for v in day)})")


def bnstats(a, src, work, log, add, dusk_split, val_split, frames):
    """The encoder's statistics re-estimated by `edge-seg adapt` (encoder_stats = --bnstats-mix,
    blended with the source frames'; lr 0: no head step changes a value) on the dusk frames."""
    print(f"== encoder_stats={a.bnstats_mix} on the device (edge-seg adapt, no head steps)", flush=True)
    model = work / "dusk_bnstats.onnx"
    summary = work / "dusk_bnstats.json"
    sh([EDGE, "adapt", "--model", src, "--frames", *frames, "--steps-per-frame", "1", "--out", model,
        "--adapt-set", "lr=0.0", "--adapt-set", f"encoder_stats={a.bnstats_mix}", *a.src_sets,
        "--summary", summary], log)
    how = (f"edge-seg adapt --adapt-set encoder_stats={a.bnstats_mix} (the encoder's BatchNorm statistics "
           f"re-estimated on the 62 unlabeled dusk frames from the exported graph, blended with the "
           f"{a.source_frames} source frames'), no head steps")
    add("dusk_miou_bnstats", miou(model, a.data, DUSK, log), "mIoU %", f"{dusk_split}; {how}")
    add("day_val_miou_bnstats", miou(model, a.data, "val", log), "mIoU %", f"{val_split}; {how}")


def fps_part(a, src, work, log, add):
    print("== FPS with and without --adapt", flush=True)
    dusk_dir = work / "dusk_frames"
    dusk_dir.mkdir(exist_ok=True)
    for p in sorted((Path(a.data) / "train").glob("0001TP_*.png")):
        link = dusk_dir / p.name
        if not link.exists():
            link.symlink_to(p.resolve())
    rec = work / "dusk.yuyv"
    sh([sys.executable, "benches/runtime/peer.py", "record", "--data", work, "--split", "dusk_frames", "--out", rec], log)
    loop = work / f"dusk_x{a.fps_loops}.yuyv"
    with open(loop, "wb") as f:
        for _ in range(a.fps_loops):
            f.write(rec.read_bytes())
    fps = {"no_adapt": [], "adapt": []}
    backends = {}
    rss = {"no_adapt": [], "adapt": []}
    for rep in range(a.fps_reps):  # alternate, so drifts in machine speed hit both alike
        extra_sets = [x for kv in a.fps_adapt_set for x in ("--adapt-set", kv)]
        for kind, extra in (("no_adapt", ["--backend", a.fps_backend]),
                            ("adapt", ["--backend", "tract", "--adapt", *a.src_sets, *extra_sets])):
            stats = work / f"fps_{kind}_{rep}.jsonl"
            sh([EDGE, "run", "--model", src, "--input", loop, "--size", "480x360", "--display",
                f"fb:{work}/fb_{kind}", "--fb-geometry", "480x360x32", "--drop", "wait", "--stats", stats, *extra], log)
            summary = json.loads(stats.read_text().splitlines()[-1])["summary"]
            backends[kind] = summary["backend"]
            fps[kind].append(summary["fps"])
            rss[kind].append(summary["peak_rss_mib"])
    median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    sfx = a.fps_suffix
    settings = "default settings" + "".join(f", {kv}" for kv in a.fps_adapt_set)
    for kind in fps:
        add(f"fps_{kind}{sfx}", median(fps[kind]), "FPS",
            f"edge-seg run --backend {backends[kind]} "
            f"{f'--adapt ({settings}, guard.source_frames as the quality runs) ' if kind == 'adapt' else ''}"
            f"{summary['frames_out']} frames "
            f"480x360 YUYV (0001TP x{a.fps_loops}), framebuffer file output, 2 cores; median of {a.fps_reps} runs "
            f"({', '.join(f'{v:.1f}' for v in fps[kind])})")
        add(f"peak_rss_{kind}{sfx}_mib", median(rss[kind]), "MiB",
            f"peak RSS of the same runs, median ({', '.join(f'{v:.0f}' for v in rss[kind])})")
    fps = {k: median(v) for k, v in fps.items()}
    add(f"fps_ratio_adapt{sfx}", fps["adapt"] / fps["no_adapt"], "x", f"fps_adapt{sfx} / fps_no_adapt{sfx}")


if __name__ == "__main__":
    main()

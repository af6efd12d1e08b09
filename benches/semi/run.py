#!/usr/bin/env python3
"""Issue #6 benchmark driver: trains, exports and evaluates every run of the semi-supervised
comparison on the cross-sequence protocol (docs/SEMI.md) and writes docs/results/semi.json.

  python3 benches/semi/run.py [--plan cpu|paper] [--only REGEX] [--runs runs/semi]
                              [--results docs/results/semi.json] [--data ../shared/data/camvid]
                              [--list] [--collect] [--table] [--split-stats]

Resumable and idempotent: a finished run (its `done.json`, or, where its directory is gone, as in a
fresh checkout, its own records in the results file) is skipped; an interrupted one is
continued with `--resume` (same seed, same result as an uninterrupted run). Stop it at any time
and start it again. Runs go in priority order: 1/16 seed 0 of every method, SupOnly 1/8 seed 0, the
full-pool ceiling, SupOnly on a uniform 1/8 (every 8th pool frame: splits/camvid-xseq/uniform_1_8,
written when missing), the other methods at 1/8 seed 0, seed 1 of both ratios, the ceiling at
seed 1, the CAC ablations at 1/8, then 1/32, then SupOnly and CAC at 1/32 with three times the
schedule (`*_1_32_x3_s0`: 4,800 steps, warm-up 1,200), the same at 1/16 and 1/8 seed 0, then at
1/32 seed 1, the full-pool ceiling with three times the schedule (`suponly_full_x3_s0`), and CPS
at 1/16 with three times the schedule (`cps_1_16_x3_s0`).

Plans (the model, crops and schedule are the same for every method of a plan):
  cpu    what finishes on 2 CPU cores: frames at half resolution (input 180x240, random scale
         0.25-1.0 of the full 360x480 frame, i.e. 0.5-2.0 of the half-resolution one), 128x128
         crops, batch 8 labeled + 4 unlabeled, 1,600 steps, semi-supervised losses after a
         400-step SupOnly warm-up; evaluation at 180x240, scored at the label resolution.
  paper  the configs in trainer/configs/xseq_*.toml as written (360x480, 256x256 crops, 1,600
         steps): about 3x-4x the compute; for a GPU (build the trainer with --features cuda).

The cross-sequence mIoU of a run is the mean of its last three evaluations on the 101 0006R0
frames (steps 1,200, 1,400 and 1,600), because single checkpoints are noisy at short schedules;
`val` mIoU is `edge-seg eval` of the exported last checkpoint. Records: per seed
`<run>_xseq_miou` / `<run>_val_miou`; per method and ratio, the mean over the seeds done
(`<method>_<ratio>_xseq_miou`, `..._val_miou`) with `..._xseq_spread` (half the max-min range);
the paired gain over SupOnly on the same labeled split and seed (`<method>_<ratio>_xseq_gain`);
training time per run (`<run>_train_s`: the trainer's own clock, `elapsed_s` in metrics.jsonl,
summed over the resumed pieces of an interrupted run up to where the next piece resumed, so it is
the time of one uninterrupted run; a gap between two log lines of more than 5x the run's median
and 2 minutes more than it, a pause of the process while other benchmarks ran, counts as the
median).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import machine, merge_records, read_metrics, read_toml  # noqa: E402
from benchlib import train_seconds as benchlib_train_seconds  # noqa: E402

TRAIN = "target/release/edge-seg-train"
EDGE = "target/release/edge-seg"
METHODS = {  # name -> config template
    "suponly": "trainer/configs/xseq_supervised.toml",
    "cac": "trainer/configs/xseq_cac.toml",
    "cps": "trainer/configs/xseq_cps.toml",
    "mt": "trainer/configs/xseq_mt.toml",
    "mt_dars": "trainer/configs/xseq_mt_dars.toml",
}
ABLATIONS = {  # variant -> override of the CAC config
    "no_projector": "cac.projector=false",
    "no_directional": "cac.directional=false",
    "no_negative_sampling": "cac.negative_sampling=false",
    "no_positive_filter": "cac.positive_filter=false",
    "no_context": "cac.iou_range=[1.0, 1.0]",
}
PLANS = {
    "cpu": [
        "data.input_size=[180, 240]",
        "augment.crop=[128, 128]",
        "augment.scale_min=0.25",
        "augment.scale_max=1.0",
        "schedule.iterations=1600",
        "schedule.eval_every=200",
    ],
    "paper": [],
}
WARMUP = {"cac": "cac.warmup_iterations=400", "cps": "cps.warmup_iterations=400",
          "mt": "mean_teacher.warmup_iterations=400", "mt_dars": "mean_teacher.warmup_iterations=400"}
LAST_EVALS = 3
X3 = [("1_32", 0), ("1_16", 0), ("1_8", 0), ("1_32", 1)]  # (ratio, seed) of the 3x-schedule runs, in order


UNIFORM = "splits/camvid-xseq/uniform_1_8/labeled.txt"
POOL = "splits/camvid-xseq/pool.txt"


def uniform_split(data):
    """Writes POOL (the train frames of 0016E5 and 0001TP, 266, in name order) and UNIFORM (every
    8th of them, 34 frames, not picked by the split command, which first covers every class) when
    missing."""
    if Path(POOL).exists() and Path(UNIFORM).exists():
        return
    pool = sorted(q.name for q in (Path(data) / "train").glob("*.png") if q.name[:6] in ("0016E5", "0001TP"))
    if not pool:
        sys.exit(f"run.py: no 0016E5 / 0001TP frames in {data}/train; pass --data")
    for path, names in ((POOL, pool), (UNIFORM, pool[::8])):
        p = Path(path)
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("".join(f"{n}\n" for n in names))


def split_sets(ratio, seed):
    base = f"splits/camvid-xseq/{ratio}/seed{seed}"
    return [f'data.train_split="{base}/labeled.txt"',
            f'data.unlabeled_splits=["{base}/unlabeled.txt", "val"]',
            f"schedule.seed={seed}"]


def plan_runs(plan):
    """(name, method, ratio, seed, template, overrides) in priority order."""
    runs = []

    def add(name, method, ratio, seed, extra=(), longer=1):
        sets = list(PLANS[plan]) + split_sets(ratio if ratio in ("1_32", "1_16", "1_8") else "1_8", seed)
        if ratio == "uniform_1_8":  # every 8th pool frame, without the split command's class balancing
            sets.append(f'data.train_split="{UNIFORM}"')
        if plan == "cpu" and method in WARMUP:
            sets.append(WARMUP[method])
        if longer > 1:  # the schedule and the warm-up `longer` times as long, evaluations as often
            sets = [re.sub(r"(iterations)=(\d+)", lambda m: f"{m[1]}={int(m[2]) * longer}", x) for x in sets]
        if ratio == "full":  # the ceiling: every frame of the 266-frame pool labeled
            sets += ['data.train_split="train"', 'data.train_prefixes=["0016E5", "0001TP"]']
        runs.append((name, method, ratio, seed, METHODS[method], sets + list(extra)))

    for m in METHODS:
        add(f"{m}_1_16_s0", m, "1_16", 0)
    add("suponly_1_8_s0", "suponly", "1_8", 0)
    # the ceiling early: the 1/8 target is a fraction of the gap to it
    add("suponly_full_s0", "suponly", "full", 0)
    # why the ceiling sits below the 1/8 subset: as many frames as 1/8, but picked uniformly
    add("suponly_uniform_1_8_s0", "suponly", "uniform_1_8", 0)
    for m in list(METHODS)[1:]:
        add(f"{m}_1_8_s0", m, "1_8", 0)
    for ratio in ("1_16", "1_8"):
        for m in METHODS:
            add(f"{m}_{ratio}_s1", m, ratio, 1)
    # the ceiling at a second seed: the 1/8 target is a fraction of the gap to it
    add("suponly_full_s1", "suponly", "full", 1)
    for v, o in ABLATIONS.items():
        add(f"cac_ablation_{v}_1_8_s0", "cac", "1_8", 0, [o])
    # both seeds of a method before the next method: a row needs two seeds for its spread
    for m in METHODS:
        for seed in (0, 1):
            add(f"{m}_1_32_s{seed}", m, "1_32", seed)
    # does a longer schedule let the unlabeled frames help? SupOnly and CAC at 1/32, 3x the steps
    # (then at 1/16, the target ratio, at 1/8, the gap target's, and a second seed at 1/32)
    if plan == "cpu":
        for ratio, seed in X3:
            for m in ("suponly", "cac"):
                add(f"{m}_{ratio}_x3_s{seed}", m, ratio, seed, longer=3)
        # and the ceiling at 3x: the 1x one came out below the subsets
        add("suponly_full_x3_s0", "suponly", "full", 0, longer=3)
        # the target names CPS too, which lost to SupOnly at 1x: CPS at 1/16 with 3x the steps
        add("cps_1_16_x3_s0", "cps", "1_16", 0, longer=3)
    return runs


def train_seconds(run_dir):
    """Training wall time by the trainer's clock, pauses (SIGSTOP while other benchmarks ran)
    counted as a typical log interval: benchlib.train_seconds."""
    return benchlib_train_seconds(run_dir, discount_pauses=True)


def recorded(results, name):
    """A run finished earlier whose directory is gone (a fresh checkout has no runs/): its own
    records in the results file (`<run>_xseq_miou`, `_val_miou`, `_train_s`), written by this
    script when it finished, as a done.json-like dict with `from_records` set; None when any of
    the three is missing. Such a run is not trained again, and its records are kept as written."""
    p = Path(results)
    recs = {r["name"]: r for r in json.loads(p.read_text())} if p.exists() else {}
    got = [recs.get(f"{name}_{k}") for k in ("xseq_miou", "val_miou", "train_s")]
    if None in got:
        return None
    xs, val, ts = got
    return {"xseq_miou": xs["value"], "val_miou": val["value"], "train_s": ts["value"],
            "machine": xs["machine"], "date": xs["date"], "from_records": True}


def load_done(run_dir, results=None):
    """A finished run's done.json, with its training time taken from metrics.jsonl (the
    driver's own timer misses the pieces of a run that was stopped); without one, and without
    a started run in the directory, the run's records in `results` (see `recorded`)."""
    p = run_dir / "done.json"
    if not p.exists():
        if results is None or (run_dir / "last.safetensors").exists():
            return None
        return recorded(results, run_dir.name)
    d = json.loads(p.read_text())
    d["train_s"] = train_seconds(run_dir) or d["train_s"]
    return d


def xseq_miou(run_dir, iterations):
    evals = {}
    for r in read_metrics(run_dir):
        if "val_miou" in r:
            evals[r["iter"]] = r["val_miou"]  # a resumed run may repeat an evaluation
    steps = sorted(evals)
    if not steps or steps[-1] != iterations:
        return None, steps
    last = steps[-LAST_EVALS:]
    return 100.0 * sum(evals[s] for s in last) / len(last), last


def sh(cmd, log):
    print("  $", " ".join(cmd), flush=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode


def do_run(a, name, template, sets):
    d = Path(a.runs) / name
    done = load_done(d, a.results)  # finished here, or recorded by an earlier checkout
    if done is not None:
        return done
    d.mkdir(parents=True, exist_ok=True)
    (d / "overrides.json").write_text(json.dumps({"template": template, "set": sets}, indent=1) + "\n")
    cmd = [TRAIN, "train", "--config", template, "--out", str(d), "--data", a.data, "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    if (d / "last.safetensors").exists():
        cmd.append("--resume")
    timing = d / "driver_time.json"
    spent = json.loads(timing.read_text())["train_s"] if timing.exists() else 0.0
    t0 = time.time()
    rc = sh(cmd, d / "driver.log")
    spent += time.time() - t0
    timing.write_text(json.dumps({"train_s": spent}) + "\n")
    if rc != 0:
        print(f"  {name}: training failed (exit {rc}), see {d / 'driver.log'}", file=sys.stderr)
        return None
    iterations = int(read_toml(d / "config.toml")["schedule"]["iterations"])
    xs, steps = xseq_miou(d, iterations)
    if xs is None:
        print(f"  {name}: no final evaluation in metrics.jsonl (evaluations at {steps})", file=sys.stderr)
        return None
    onnx = d / "last.onnx"
    if sh([TRAIN, "export", "--run", str(d), "--checkpoint", "last", "--out", str(onnx)], d / "driver.log"):
        return None
    val_json = d / "val_eval.json"
    if sh([EDGE, "eval", "--model", str(onnx), "--data", a.data, "--split", "val", "--record", str(val_json),
           "--record-name", "val_miou"], d / "driver.log"):
        return None
    val = json.loads(val_json.read_text())[0]["value"]
    done = {"xseq_miou": xs, "xseq_evals_at": steps, "val_miou": val, "train_s": train_seconds(d) or spent,
            "driver_s": spent,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()}
    (d / "done.json").write_text(json.dumps(done, indent=1) + "\n")
    return done


def paired_gains(a, runs):
    """{(method, ratio): [0006R0 mIoU of the method minus SupOnly's, for each seed where both
    finished]}: the two runs share the labeled split and the seed, so the difference leaves out
    how lucky the split was."""
    def done(name):
        d = load_done(Path(a.runs) / name, a.results)
        return d["xseq_miou"] if d else None

    gains = {}
    for name, method, ratio, seed, _, _ in runs:
        if method == "suponly" or name.startswith("cac_ablation") or ratio not in ("1_32", "1_16", "1_8"):
            continue
        # the same name with SupOnly for the method (a longer schedule's `_x3` included)
        x, base = done(name), done("suponly" + name[len(method):])
        key = name[len(method) + 1:].rsplit("_s", 1)[0]  # ratio, and _x3 for a longer schedule
        if x is not None and base is not None:
            gains.setdefault((method, key), []).append(x - base)
    return gains


def collect(a, runs, command):
    """Records of the finished runs among `runs` (those --only selected), and the seed means and
    paired gains they belong to, computed over every finished run of the plan."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    recs, groups, fresh = [], {}, set()
    protocol = f"{a.plan} plan (benches/semi/run.py)"
    selected = {r[0] for r in runs}
    every = plan_runs(a.plan)
    for name, method, ratio, seed, _, _ in every:
        d = load_done(Path(a.runs) / name, a.results)
        if d is None:
            continue
        key = name.rsplit("_s", 1)[0]  # drop the seed
        groups.setdefault(key, []).append(d)
        if d.get("from_records") or name not in selected:  # its own records stay as they were written
            continue
        fresh.add(name)
        if recorded(a.results, name) is not None:  # collected before: keep its records' dates
            continue

        def add(n, v, unit, split):
            recs.append({"name": n, "value": round(float(v), 4), "unit": unit, "split": split,
                         "command": command, "date": date, "machine": d.get("machine", machine())})

        xs_split = f"CamVid train frames of 0006R0 (101, unseen drive), mean of the last {LAST_EVALS} evaluations; {protocol}"
        add(f"{name}_xseq_miou", d["xseq_miou"], "mIoU %", xs_split)
        add(f"{name}_val_miou", d["val_miou"], "mIoU %", f"CamVid val (101 frames), last checkpoint; {protocol}")
        add(f"{name}_train_s", d["train_s"], "s", f"wall time of training on this machine; {protocol}")
    # the ceiling's check: the full-pool model and the 1/8 one on the pool's own frames
    for name in ("suponly_full_s0", "suponly_1_8_s0", "suponly_uniform_1_8_s0"):
        d = Path(a.runs) / name
        if not (d / "done.json").exists() or not Path(POOL).exists():
            continue
        rec = d / "pool_eval.json"
        if not rec.exists() and sh([EDGE, "eval", "--model", str(d / "last.onnx"), "--data", a.data, "--split", POOL,
                                    "--record", str(rec), "--record-name", "pool_miou"], d / "driver.log"):
            continue
        recs.append({"name": f"{name}_pool_miou", "value": round(json.loads(rec.read_text())[0]["value"], 4),
                     "unit": "mIoU %", "split": f"the 266 pool frames ({POOL}: the full-pool run's training frames), "
                     f"last checkpoint; {protocol}", "command": command, "date": date, "machine": machine()})
    # a mean or a gain is written again only when one of its runs finished in this checkout
    # (recomputing it from the rounded records of the others would only move its last digit)
    for key, ds in groups.items():
        if not any(n.rsplit("_s", 1)[0] == key for n in fresh):
            continue
        xs = [d["xseq_miou"] for d in ds]
        vs = [d["val_miou"] for d in ds]
        n = len(ds)
        split = f"mean over {n} seed(s); {protocol}"
        for nm, v, unit in ((f"{key}_xseq_miou", sum(xs) / n, "mIoU %"),
                            (f"{key}_xseq_spread", (max(xs) - min(xs)) / 2, "mIoU % (half range)"),
                            (f"{key}_val_miou", sum(vs) / n, "mIoU %")):
            recs.append({"name": nm, "value": round(v, 4), "unit": unit, "split": split, "command": command,
                         "date": date, "machine": ds[0].get("machine", machine())})
    for (method, ratio), g in paired_gains(a, every).items():
        if not any(n.rsplit("_s", 1)[0] in (f"{method}_{ratio}", f"suponly_{ratio}") for n in fresh):
            continue
        recs.append({"name": f"{method}_{ratio}_xseq_gain", "value": round(sum(g) / len(g), 4), "unit": "mIoU points",
                     "split": f"0006R0 mIoU minus SupOnly's on the same labeled split and seed, mean over {len(g)} "
                     f"seed(s) ({', '.join(f'{v:+.2f}' for v in g)}); {protocol}",
                     "command": command, "date": date, "machine": machine()})
    if recs:
        out = merge_records(a.results, recs)
        print(f"{len(recs)} records -> {out}")
    return groups


def gain_cell(g, note=""):
    """Mean of paired gains, then each seed's: `+0.88 (+0.88)`."""
    return f"{sum(g) / len(g):+.2f} ({', '.join(f'{v:+.2f}' for v in g)}{note})"


def table(a, runs):
    """Markdown: one row per method, one column pair per ratio, then the ceiling and the CAC
    ablations: 0006R0 mIoU as mean ± half range (seeds) with the mean training wall time per run,
    val mIoU as the mean; '–' where nothing finished."""
    done = {}
    for name, method, ratio, seed, _, sets in runs:
        d = load_done(Path(a.runs) / name, a.results)
        if d is not None:
            done.setdefault(name.rsplit("_s", 1)[0], []).append(d)

    def cell(key):
        ds = done.get(key)
        if not ds:
            return "–", "–"
        xs = [d["xseq_miou"] for d in ds]
        spread = f" ± {(max(xs) - min(xs)) / 2:.2f}" if len(xs) > 1 else ""
        minutes = sum(d["train_s"] for d in ds) / len(ds) / 60
        return (f"{sum(xs) / len(xs):.2f}{spread} ({len(xs)} seed{'s' if len(xs) > 1 else ''}, {minutes:.0f} min)",
                f"{sum(d['val_miou'] for d in ds) / len(ds):.2f}")

    ratios = ["1_32", "1_16", "1_8"]
    names = {"suponly": "SupOnly", "cac": "CAC", "cps": "CPS", "mt": "Mean teacher", "mt_dars": "Mean teacher + DARS"}
    head = "| method | " + " | ".join(f"{r.replace('_', '/')} 0006R0 | {r.replace('_', '/')} val" for r in ratios) + " |"
    lines = [head, "|---" * (1 + 2 * len(ratios)) + "|"]
    for m in METHODS:
        cells = [c for r in ratios for c in cell(f"{m}_{r}")]
        lines.append(f"| {names.get(m, m)} | " + " | ".join(cells) + " |")
    gains = paired_gains(a, runs)
    lines += ["", "| gain over SupOnly, same split and seed (0006R0) | " + " | ".join(r.replace("_", "/") for r in ratios) + " |",
              "|---" * (1 + len(ratios)) + "|"]
    for m in METHODS:
        if m == "suponly":
            continue
        cells = [gain_cell(g) if (g := gains.get((m, r))) else "–" for r in ratios]
        lines.append(f"| {names.get(m, m)} | " + " | ".join(cells) + " |")
    lines += ["", "| run | 0006R0 | val |", "|---|---|---|"]
    x, v = cell("suponly_full")
    lines.append(f"| SupOnly, full pool (266 labeled frames): the ceiling | {x} | {v} |")
    x, v = cell("suponly_uniform_1_8")
    lines.append(f"| SupOnly, uniform 1/8 (34 frames: every 8th of the pool, not the split command's pick) | {x} | {v} |")
    for variant in ABLATIONS:
        x, v = cell(f"cac_ablation_{variant}_1_8")
        lines.append(f"| CAC without {variant.removeprefix('no_').replace('_', ' ')}, 1/8 | {x} | {v} |")
    if a.plan == "cpu":
        def x3_rows(methods, ratio):
            """A row per method at `ratio` with 3x the schedule, then the last one's paired gain."""
            r = ratio.replace("_", "/")
            for m in methods:
                x, v = cell(f"{m}_{ratio}_x3")
                what = "4,800 steps" + (", warm-up 1,200" if m in WARMUP else "")
                lines.append(f"| {names[m]}, {r}, 3× the schedule ({what}) | {x} | {v} |")
            g = gains.get((methods[-1], f"{ratio}_x3"))
            lines.append(f"| {names[methods[-1]]}'s gain over SupOnly at 3× the schedule, {r} | "
                         f"{gain_cell(g, ', same split and seed') if g else '–'} | |")

        for ratio in dict(X3):
            x3_rows(("suponly", "cac"), ratio)
        x, v = cell("suponly_full_x3")
        lines.append(f"| SupOnly, full pool (266 labeled frames), 3× the schedule (4,800 steps): the ceiling | {x} | {v} |")
        x3_rows(("cps",), "1_16")
    return "\n".join(lines)


CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist"]


def split_stats(a):
    """Markdown: for the pool and each labeled subset, the share of its frames that contain each
    class and each class's share of its labeled pixels (void left out), read from the masks."""
    import numpy as np
    from PIL import Image

    sets = [("pool (266)", POOL), ("uniform 1/8", UNIFORM)]
    sets += [(f"{r.replace('_', '/')} seed {s}", f"splits/camvid-xseq/{r}/seed{s}/labeled.txt")
             for r in ("1_16", "1_8") for s in (0, 1)]
    lines = []
    for what in ("frames containing the class, %", "share of the labeled pixels, %"):
        lines += [f"| {what} | frames | " + " | ".join(CLASSES) + " |", "|---" * (2 + len(CLASSES)) + "|"]
        for label, path in sets:
            if not Path(path).exists():
                continue
            names = [n.strip() for n in Path(path).read_text().splitlines() if n.strip()]
            present, pixels = np.zeros(len(CLASSES)), np.zeros(len(CLASSES))
            for n in names:
                mask = np.asarray(Image.open(Path(a.data) / "trainannot" / n))
                hist = np.bincount(mask.ravel(), minlength=256)[: len(CLASSES)]
                present += hist > 0
                pixels += hist
            row = 100 * present / len(names) if what.startswith("frames") else 100 * pixels / pixels.sum()
            lines.append(f"| {label} | {len(names)} | " + " | ".join(f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", choices=sorted(PLANS), default="cpu")
    ap.add_argument("--only", default="", help="regex on run names")
    ap.add_argument("--runs", default="runs/semi")
    ap.add_argument("--results", default="docs/results/semi.json")
    ap.add_argument("--data", default="../shared/data/camvid")
    ap.add_argument("--list", action="store_true", help="print the plan and what is done, run nothing")
    ap.add_argument("--collect", action="store_true", help="only write the records of finished runs")
    ap.add_argument("--table", action="store_true",
                    help="print the markdown table of finished runs (0006R0 and val mIoU per method and ratio)")
    ap.add_argument("--split-stats", action="store_true",
                    help="print how often each class occurs in the pool and in each labeled subset (markdown), run nothing")
    a = ap.parse_args()
    if not Path("Cargo.toml").exists() or not Path("benches/semi").is_dir():
        sys.exit("run.py: run from the repository root")
    if a.plan == "paper":
        a.runs = a.runs.rstrip("/") + "-paper"
    command = "python3 benches/semi/run.py" + "".join(f" {x}" for x in sys.argv[1:] if x != "--collect")
    runs = [r for r in plan_runs(a.plan) if re.search(a.only, r[0])]
    if a.table:
        print(table(a, runs))
        return
    if a.split_stats:
        print(split_stats(a))
        return
    if a.list:
        for name, *_ in runs:
            d = Path(a.runs) / name
            state = ("done" if (d / "done.json").exists() else "partial" if (d / "last.safetensors").exists()
                     else "recorded" if recorded(a.results, name) else "-")
            print(f"{state:8} {name}")
        return
    if not a.collect:
        if not Path(a.data, "train").is_dir():
            sys.exit(f"run.py: {a.data} has no train/ (CamVid layout); pass --data")
        uniform_split(a.data)
        # one package at a time, as the other scripts and the README build them (no new feature mix)
        subprocess.run(["cargo", "build", "--release", "-p", "edge-seg-trainer"], check=True)
        subprocess.run(["cargo", "build", "--release", "-p", "edge-seg-runtime", "--bin", "edge-seg"], check=True)
        for name, method, ratio, seed, template, sets in runs:
            print(f"== {name}", flush=True)
            done = do_run(a, name, template, sets)
            if done:
                print(f"  {name}: xseq {done['xseq_miou']:.2f}, val {done['val_miou']:.2f}, "
                      f"{done['train_s'] / 60:.0f} min", flush=True)
            collect(a, runs, command)
    if a.collect:
        uniform_split(a.data)
    collect(a, runs, command)


if __name__ == "__main__":
    os.environ.setdefault("RUST_LOG", "info")
    main()

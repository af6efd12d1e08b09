#!/usr/bin/env python3
"""Choosing the adaptation settings without the dusk labels (issue #5).

  python3 benches/adapt/tune.py [--data ../shared/data/camvid] [--work runs/adapt_tune]
                                [--model runs/adapt/day_source.onnx]

The dusk frames (0001TP) are the test of benches/adapt/run.py, so settings are compared on a
synthetic shift of *training* frames instead: every 3rd train frame of the day drive 0016E5,
darkened (gamma 1.8, x0.6), tinted blue and noised (seeded), with its labels. Each candidate
setting adapts the day source model (benches/adapt/run.py trains it) on that stream in order
(5 steps per frame, as run.py) and is scored by the mIoU on the darkened frames (gain) and on
the 0006R0 train frames as they are (forgetting). Rows that use the source-frame monitor get 8
undarkened 0016E5 train frames that are not in the shifted set (runs/adapt_tune/source_frames).
Writes docs/results/adapt_tuning.json.

Issue #25 (the pretrained source): the scope_* rows (which values adapt), the bnstats_* rows
(`encoder_stats` on the device) and, with --source-run, the adabn_* rows (the encoder's BatchNorm statistics re-estimated on the shifted frames by
`edge-seg-train adabn`, alone or followed by the default adaptation):
  python3 benches/adapt/tune.py --model runs/adapt-pre/day_source.onnx --source-run runs/day_source_pre \
      --work runs/adapt_tune_pre --results docs/results/adapt_pretrained.json --only '^(scope_|adabn_|bnstats_)'
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import merge_records, recorder  # noqa: E402
from run import EDGE, TRAIN, link_frames, miou  # noqa: E402
# Every candidate starts from BASE (the previous defaults: lr 0.002, strict recent-frame guards, no
# source frames, no input normalisation) and spells out what it changes. The defaults in AdaptConfig are the chosen row,
# "srcagree0.93_lr0.005_loose_guard" (it was "no_classifier_lr0.002" before the source-frame
# monitor existed); source frames are a deployment input, so rows with a guard.min_source_* key
# get guard.source_frames = SOURCE.
LOOSE = ["guard.min_agreement=0.7", "guard.max_drift=0.2"]  # the looser recent-frame guards
SRC16 = "SRC16"  # in a row's settings: use the 16 source frames (not passed to edge-seg)
BASE = ["train_classifier=false", "lr=0.002", "guard.min_agreement=0.8", "guard.max_drift=0.1",
        "guard.min_source_agreement=0.93", "input_norm=0.0"]
CANDIDATES = {  # name -> --adapt-set overrides
    "classifier_lr0.01": ["train_classifier=true", "lr=0.01"],
    "classifier_lr0.002": ["train_classifier=true", "lr=0.002"],
    "no_classifier_lr0.01": ["train_classifier=false", "lr=0.01"],
    "no_classifier_lr0.05": ["train_classifier=false", "lr=0.05"],
    "no_classifier_lr0.002": ["train_classifier=false", "lr=0.002"],
    "dc_only_lr0.002": ["train_classifier=false", "lr=0.002", "pseudo_weight=0.0"],
    "pseudo_only_lr0.002": ["train_classifier=false", "lr=0.002", "dc_weight=0.0"],
    "decoder_no_classifier_lr0.002": ["scope=\"decoder\"", "train_classifier=false", "lr=0.002"],
    "no_classifier_lr0.01_loose_guard": ["train_classifier=false", "lr=0.01", "guard.min_agreement=0.7",
                                         "guard.max_drift=0.2"],
    "no_classifier_lr0.01_no_guard": ["train_classifier=false", "lr=0.01", "guard.enabled=false"],
    "no_classifier_lr0.002_no_guard": ["train_classifier=false", "lr=0.002", "guard.enabled=false"],
    "no_classifier_lr0.002_anchor1": ["train_classifier=false", "lr=0.002", "anchor_weight=1.0"],
    "no_classifier_lr0.002_anchor10": ["train_classifier=false", "lr=0.002", "anchor_weight=10.0"],
    "no_classifier_lr0.01_anchor10": ["train_classifier=false", "lr=0.01", "anchor_weight=10.0"],
    # the source-frame monitor (guard.source_frames = SOURCE below): forgetting caught on day frames
    "srciou0.9_lr0.002": ["lr=0.002", "guard.min_source_agreement=0.0", "guard.min_source_iou=0.9"],
    "srcagree0.95_lr0.002": ["lr=0.002", "guard.min_source_agreement=0.95"],
    "srcagree0.9_lr0.01_loose_guard": ["lr=0.01", "guard.min_agreement=0.7", "guard.max_drift=0.2", "guard.min_source_agreement=0.9"],
    "srcagree0.95_lr0.01_loose_guard": ["lr=0.01", "guard.min_agreement=0.7", "guard.max_drift=0.2", "guard.min_source_agreement=0.95"],
    "srcagree0.97_lr0.01_loose_guard": ["lr=0.01", "guard.min_agreement=0.7", "guard.max_drift=0.2", "guard.min_source_agreement=0.97"],
    "srcagree0.93_lr0.01_loose_guard": ["lr=0.01", "guard.min_agreement=0.7", "guard.max_drift=0.2", "guard.min_source_agreement=0.93"],
    "srcagree0.93_lr0.005_loose_guard": ["lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2", "guard.min_source_agreement=0.93"],
    "srcagree0.95_lr0.005_loose_guard": ["lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2", "guard.min_source_agreement=0.95"],
    "lr0.005_loose_guard": ["lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2"],
    "srcagree0.93_lr0.005_loose_guard_seed1": ["lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2", "guard.min_source_agreement=0.93", "seed=1"],
    "lr0.005_loose_guard_seed1": ["lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2", "seed=1"],
    "decoder_srcagree0.93_lr0.005_loose_guard": ['scope="decoder"', "lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2",
                                                 "guard.min_source_agreement=0.93"],
    "decoder_srcagree0.93_lr0.005_loose_guard_seed1": ['scope="decoder"', "lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2",
                                                       "guard.min_source_agreement=0.93", "seed=1"],
    "classifier_srcagree0.93_lr0.005_loose_guard": ["train_classifier=true", "lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2",
                                                    "guard.min_source_agreement=0.93"],
    "classifier_srcagree0.93_lr0.005_loose_guard_seed1": ["train_classifier=true", "lr=0.005", "guard.min_agreement=0.7", "guard.max_drift=0.2",
                                                          "guard.min_source_agreement=0.93", "seed=1"],
    # source replay (replay_weight: cross-entropy to the source's own labels on the source frames)
    **{f"replay{w}_srcagree0.93_lr{lr}_loose_guard{sfx}": [f"replay_weight={float(w)}", f"lr={lr}", *LOOSE, "guard.min_source_agreement=0.93", *seed]
       for w, lr, sfx, seed in [("1", "0.005", "", []), ("1", "0.005", "_seed1", ["seed=1"]), ("1", "0.01", "", []),
                                ("1", "0.01", "_seed1", ["seed=1"]), ("0.3", "0.01", "", [])]},
    # weight_ema: the guards check and publish a moving average of the trained values
    **{f"ema{d}_{scope}srcagree0.93_lr{lr}_loose_guard{sfx}": [f"weight_ema={d}", *(['scope="decoder"'] if scope else []),
                                                            f"lr={lr}", *LOOSE, "guard.min_source_agreement=0.93", *seed]
       for d, scope, lr in [("0.9", "", "0.005"), ("0.9", "", "0.01"), ("0.9", "decoder_", "0.005"), ("0.97", "", "0.01")]
       for sfx, seed in [("", []), ("_seed1", ["seed=1"])]},
    # low_rank: a rank-r update B·A of the last decoder convolution's kernel, beside the affine
    **{f"lora{r}_srcagree0.93_lr{lr}_loose_guard{sfx}": [f"low_rank={r}", f"lr={lr}", *LOOSE, "guard.min_source_agreement=0.93", *seed]
       for r, lr in [("4", "0.005"), ("16", "0.005"), ("4", "0.002")]
       for sfx, seed in [("", []), ("_seed1", ["seed=1"])]},
    # ... with its own, lower learning rate (low_rank_lr_mult), the affine's as chosen
    **{f"lora{r}x{m}_srcagree0.93_lr0.005_loose_guard{sfx}": [f"low_rank={r}", f"low_rank_lr_mult={m}", "lr=0.005", *LOOSE,
                                                            "guard.min_source_agreement=0.93", *seed]
       for r, m in [("4", "0.2"), ("4", "0.05")]
       for sfx, seed in [("", []), ("_seed1", ["seed=1"])]},
    # input_norm: per-frame input normalisation toward the source frames' colour statistics
    # (no trained values), alone (lr 0) and under the chosen row
    **{f"innorm{a}_only": [f"input_norm={a}", "lr=0.0", *LOOSE, "guard.min_source_agreement=0.93"]
       for a in ["0.25", "0.5", "0.75", "1.0"]},
    **{f"innorm{a}_srcagree0.93_lr0.005_loose_guard{sfx}": [f"input_norm={a}", "lr=0.005", *LOOSE,
                                                          "guard.min_source_agreement=0.93", *seed]
       for a in ["0.25", "0.5", "0.75", "1.0"]
       for sfx, seed in [("", []), ("_seed1", ["seed=1"])]},
    # the source-frame monitor with 16 source frames instead of 8
    **{f"src16_srcagree{t}_lr0.005_loose_guard{sfx}": [SRC16, "lr=0.005", *LOOSE, f"guard.min_source_agreement={t}", *seed]
       for t in ["0.93", "0.95"]
       for sfx, seed in [("", []), ("_seed1", ["seed=1"])]},
    "srcagree0.95_lr0.01_only": ["lr=0.01", "guard.min_agreement=0.0", "guard.max_drift=1.0",
                                 "guard.min_entropy_ratio=0.0", "guard.min_source_agreement=0.95"],
}
# Issue #25, the pretrained source (trainer/configs/camvid_day_source_pretrained.toml): which scope to
# adapt, each from the chosen defaults (CHOSEN): the last decoder convolution's affines (the
# default), every decoder convolution's, the classifier too, a low-rank update; learning rates.
CHOSEN = ["lr=0.005", *LOOSE, "guard.min_source_agreement=0.93"]
CANDIDATES.update({
    "scope_last": CHOSEN,
    "scope_last_lr0.01": ["lr=0.01", *LOOSE, "guard.min_source_agreement=0.93"],
    "scope_last_lr0.002": ["lr=0.002", *LOOSE, "guard.min_source_agreement=0.93"],
    "scope_decoder": ['scope="decoder"', *CHOSEN],
    "scope_classifier": ["train_classifier=true", *CHOSEN],
    "scope_lora4": ["low_rank=4", *CHOSEN],
})
# ... the encoder's BatchNorm statistics re-estimated on the device (`encoder_stats = α`: on the
# exported graph, blended with the statistics of the source frames; no head steps: lr 0)
CANDIDATES.update({
    f"bnstats_mix{m}": ["lr=0.0", f"encoder_stats={m}", *LOOSE, "guard.min_source_agreement=0.93"]
    for m in ["0.1", "0.2", "0.3", "0.4", "0.5"]
})
# ... and the same with the training checkpoint (AdaBN, `edge-seg-train adabn` on the shifted frames,
# needs --source-run): name -> (adabn flags, adaptation settings afterwards or None)
ADABN = {
    "adabn_encoder": (["--scope", "encoder", "--mix", "1.0"], None),
    "adabn_encoder_mix0.5": (["--scope", "encoder", "--mix", "0.5"], None),
    "adabn_all": (["--scope", "all", "--mix", "1.0"], None),
    "adabn_encoder_then_last": (["--scope", "encoder", "--mix", "1.0"], CHOSEN),
    **{f"adabn_encoder_mix{m}": (["--scope", "encoder", "--mix", m], None) for m in ["0.3", "0.4", "0.7"]},
    "adabn_all_mix0.5": (["--scope", "all", "--mix", "0.5"], None),
    "adabn_encoder_mix0.5_then_last": (["--scope", "encoder", "--mix", "0.5"], CHOSEN),
}
SOURCE = "source_frames"  # folder under --work: 8 undarkened 0016E5 train frames not in the shifted set
SOURCE16 = "source_frames16"  # 16 of them, for rows that name SRC16 in their settings


def make_set(data, work):
    from PIL import Image
    import numpy as np

    (work / "train").mkdir(parents=True, exist_ok=True)
    (work / "trainannot").mkdir(exist_ok=True)
    frames = sorted((Path(data) / "train").glob("0016E5_*.png"))[::3]
    rng = np.random.default_rng(0)
    for p in frames:
        a = np.asarray(Image.open(p).convert("RGB")).astype(np.float32) / 255
        a = (a ** 1.8) * 0.6 * np.array([0.85, 0.9, 1.1]) + rng.normal(0, 0.02, a.shape)
        Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).save(work / "train" / p.name)
        lab = work / "trainannot" / p.name
        if not lab.exists():
            lab.symlink_to((Path(data) / "trainannot" / p.name).resolve())
    # the source-frame monitor's day frames: 8 of the 0016E5 train frames left out of the shifted
    # set (the forgetting test is the other drive, 0006R0)
    rest = sorted((Path(data) / "train").glob("0016E5_*.png"))[1::3]
    link_frames(rest[:: max(1, len(rest) // 8)][:8], work / SOURCE)
    link_frames(rest[:: max(1, len(rest) // 16)][:16], work / SOURCE16)
    day = sorted(p.name for p in (Path(data) / "train").glob("0006R0_*.png"))
    (work / "day.txt").write_text("\n".join(day) + "\n")
    return len(frames)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/camvid")
    ap.add_argument("--work", default="runs/adapt_tune")
    ap.add_argument("--model", default="runs/adapt/day_source.onnx")
    ap.add_argument("--results", default="docs/results/adapt_tuning.json")
    ap.add_argument("--only", default="")
    ap.add_argument("--source-run", default=None,
                    help="training run of --model (for the adabn_* rows: edge-seg-train adabn re-estimates its statistics)")
    a = ap.parse_args()
    work = Path(a.work)
    n = make_set(a.data, work)
    command = "python3 benches/adapt/tune.py" + "".join(f" {x}" for x in sys.argv[1:])
    dark = f"{n} darkened 0016E5 train frames (synthetic shift, {a.work}/train)"
    day = "0006R0 train frames (101, unchanged)"
    recs, add = recorder(command)

    base_dark, base_day = miou(a.model, str(work), "train"), miou(a.model, a.data, str(work / "day.txt"))
    add("tune_source_dark_miou", base_dark, "mIoU %", dark)
    add("tune_source_day_miou", base_day, "mIoU %", day)
    print(f"{'setting':<24} {'dark':>6} {'gain':>6} {'day':>6} {'forget':>6} steps rollbacks")
    print(f"{'source':<24} {base_dark:6.2f} {'':>6} {base_day:6.2f}")
    rows = [(n, None, s) for n, s in CANDIDATES.items()]
    if a.source_run:
        rows += [(n, f, s) for n, (f, s) in ADABN.items()]
    for name, adabn, sets in rows:
        if a.only and not re.search(a.only, name):
            continue
        model = a.model
        if adabn is not None:
            model = str(work / f"{name}_adabn.onnx")
            subprocess.run([TRAIN, "adabn", "--run", a.source_run, "--frames", str(work / "train"), *adabn,
                            "--out", model], capture_output=True, text=True, check=True)
            if sets is None:  # statistics only
                d, y = miou(model, str(work), "train"), miou(model, a.data, str(work / "day.txt"))
                print(f"{name:<24} {d:6.2f} {d - base_dark:+6.2f} {y:6.2f} {y - base_day:+6.2f}", flush=True)
                add(f"tune_{name}_dark_gain", d - base_dark, "mIoU points", dark + "; edge-seg-train adabn " + " ".join(adabn))
                add(f"tune_{name}_day_change", y - base_day, "mIoU points", day + "; edge-seg-train adabn " + " ".join(adabn))
                continue
        out = work / f"{name}.onnx"
        cmd = [EDGE, "adapt", "--model", model, "--frames", str(work / "train"), "--steps-per-frame", "5",
               "--out", str(out), "--summary", str(work / f"{name}.json")]
        for s in BASE + sets:
            if s != SRC16:
                cmd += ["--adapt-set", s]
        if any(s.startswith(("guard.min_source", "replay_weight", "input_norm", "encoder_stats")) for s in sets):
            cmd += ["--adapt-set", f'guard.source_frames="{work / (SOURCE16 if SRC16 in sets else SOURCE)}"']
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        st = json.loads((work / f"{name}.json").read_text())["stats"]
        d, y = miou(str(out), str(work), "train"), miou(str(out), a.data, str(work / "day.txt"))
        print(f"{name:<24} {d:6.2f} {d - base_dark:+6.2f} {y:6.2f} {y - base_day:+6.2f} {st['steps']:5d} {st['rollbacks']:5d}",
              flush=True)
        pre = "" if adabn is None else "edge-seg-train adabn " + " ".join(adabn) + ", then "
        add(f"tune_{name}_dark_gain", d - base_dark, "mIoU points", dark + "; " + pre + " ".join(sets))
        add(f"tune_{name}_day_change", y - base_day, "mIoU points", day + "; " + pre + " ".join(sets))
    print(f"{len(recs)} records -> {merge_records(a.results, recs)}")


if __name__ == "__main__":
    main()

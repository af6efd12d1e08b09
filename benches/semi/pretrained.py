#!/usr/bin/env python3
"""Issue #25 driver: the semi-supervised comparison on the pretrained default net
(trainer/configs/xseqt_*.toml), xseq-target protocol, and docs/results/semi_pretrained.json.

  python3 benches/semi/pretrained.py [--protocol xseqt|xseq] [--only REGEX] [--runs DIR] [--list]
                                     [--collect] [--results docs/results/semi_pretrained.json]
                                     [--weight-init torch_default]

`--protocol xseq` (runs in runs/xseq-pre by default) trains the same configs on issue #6's
cross-sequence protocol: evaluation on the 101 train frames of 0006R0 (splits/camvid-xseq/eval.txt),
unlabeled = the rest of the pool + val (no 0006R0 frame in any form); records `..._xseq_miou`.
The target oracle has no xseq row (it is an xseq-target reference).

Runs go in priority order (1/16 seed 0 of SupOnly, CAC, the target oracle, the weak-to-strong
baseline, CPS, mean teacher + DARS; then 1/8 seed 0; then seed 1 of both; then the full-pool
ceiling `suponly_full_s<seed>`: SupOnly on all 266 pool frames, seeds 0 and 1). Each run's config is
its method's xseqt_*.toml with the split paths and seed of the ratio/seed put in (written to
<run>/../<run>.toml). Resumable: a run with `done.json` is skipped, an interrupted one continues
with `--resume` (same result as an uninterrupted run).

Score of a run: the mean of its last three evaluations on the 51 evaluation frames of 0006R0
(splits/camvid-xseq-target/eval.txt; steps 400, 500, 600 of the 600-step schedule), because
single checkpoints are noisy at short schedules. Records (name, value, unit, split, command,
date, machine): per run `<method>_<ratio>_s<seed>_xseqt_miou` and `..._train_min` (the trainer's
own clock, a SIGSTOP pause counted as one typical log interval; `..._xseq_train_min` for the xseq protocol); per method and ratio the mean over the seeds done, `<method>_<ratio>_xseqt_miou`
(oracle rows: `oracle_<ratio>_xseqt_miou`), and for each method the paired gain over SupOnly on
the same split and seed, `<method>_<ratio>_s<seed>_xseqt_gain`, and the fraction of the
SupOnly-to-oracle gap it closes, `<method>_<ratio>_s<seed>_gap_closed`. A run whose folder is gone
(a new checkout) keeps its recorded score, which the pairing then uses — but only with runs of the
same machine (the CPU model of the records' `machine`): the same config moved 0.3-1.1 points between
two 2-core machines, as much as the gains measured, so a cross-machine pair is left out (printed).
Derived records (means over seeds, gains, gap fractions) name the machines of the runs they come
from (`A + B` when the seeds ran on two), not the machine that collected them.

On xseq-target, after the method grid, the CAC ablations at 1/8 seed 0 (`cac_ablation_<variant>_1_8_s0`:
no_projector, no_directional, no_negative_sampling, no_positive_filter, no_context — one switch of
xseqt_cac.toml each) with their own reference `cac_ablation_none_1_8_s0` (full CAC, the same config
as cac_1_8_s0, re-trained so that every ablation pairs with a run of its own machine); records
`cac_ablation_<variant>_1_8_xseqt_miou` and `cac_ablation_<variant>_1_8_s0_xseqt_gain` (against the
reference).

Val: each finished run's last checkpoint is exported and scored on CamVid val with `edge-seg eval
--backend tract` (cached in <run>/val.json): `<name>_val_miou` and per method and ratio the mean
over the seeds that have a val record for it and for its reference run (SupOnly, or the full-CAC
reference of the ablations; the command names the seeds), `<method>_<ratio>_val_miou` (`..._xseq_val_miou` on the xseq protocol). Both
protocols give the val frames to the semi-supervised methods as unlabeled inputs, so their val
figures are transductive (SupOnly's and the oracle's are not).

`--weight-init torch_default` trains every config with PyTorch's initialisation of the randomly
initialised convolutions (`weight_init = "torch_default"`, issue #21: it closed the trainer parity gap
with PyTorch and lifted SupOnly by ~2 points at 1/8) in runs/xseqt-ti (runs/xseq-pre-ti), recorded
with the prefix `ti_`: a whole ratio is compared on one initialisation, never mixed.

Runs trained on a GPU (benches/gpu/run.sh --parts semi; unpack its semi.tar with
`tar xf semi.tar --strip-components=1 -C runs/xseqt-gpu`) are collected apart, so that every
pairing stays on one machine:
  python3 benches/semi/pretrained.py --collect --runs runs/xseqt-gpu --prefix gpu_ --machine "..."
gives `gpu_<name>_xseqt_miou`, `gpu_<method>_<ratio>_s<seed>_xseqt_gain` (paired with the GPU's
SupOnly) and so on; `--machine` names the machine the runs were trained on.

A set trained here apart from the recorded grid (a pair re-trained on another CPU model, so that
a run can pair with a SupOnly of its own machine without replacing the recorded one):
  python3 benches/semi/pretrained.py --runs runs/xseqt-amd --prefix amd_ --only '^(suponly|cps)_1_16_s1$'
records `amd_<name>_xseqt_miou`, `amd_cps_1_16_s1_xseqt_gain` and so on.
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
from benchlib import machine, merge_records, train_seconds  # noqa: E402

TRAIN = os.environ.get("EDGE_SEG_TRAIN", "target/release/edge-seg-train")  # a copy keeps a rebuild from touching a running run
RUNTIME = os.environ.get("EDGE_SEG", "target/release/edge-seg")
METHODS = ["suponly", "cac", "oracle", "w2s", "cps", "mt_dars"]
LAST_EVALS = 3
# CAC ablations at 1/8 seed 0 on xseq-target: variant -> (line of xseqt_cac.toml, its replacement);
# "none" is the full CAC reference they pair with
ABLATIONS = {
    "none": None,
    "no_projector": ("projector = true", "projector = false"),
    "no_directional": ("directional = true", "directional = false"),
    "no_negative_sampling": ("negative_sampling = true", "negative_sampling = false"),
    "no_positive_filter": ("positive_filter = true", "positive_filter = false"),
    "no_context": ("iou_range = [0.1, 1.0]", "iou_range = [1.0, 1.0]"),
}


PROTOCOLS = {
    # tag, evaluation split, its description
    "xseqt": ("xseqt", "splits/camvid-xseq-target/eval.txt",
              "camvid 0006R0 f02430-f03930 (xseq-target eval, 51 frames)"),
    "xseq": ("xseq", "splits/camvid-xseq/eval.txt", "camvid 0006R0 train frames (xseq eval, 101 frames)"),
}
PROTOCOL = "xseqt"
# weight_init of every run's config: None keeps the configs' own (Kaiming-normal)
WEIGHT_INIT = None


def plan():
    runs = []
    for ratio, seed in [("1_16", 0), ("1_8", 0), ("1_16", 1), ("1_8", 1)]:
        for m in METHODS:
            if PROTOCOL == "xseq" and m == "oracle":
                continue
            runs.append((m, ratio, seed))
    # the full-pool ceiling: SupOnly on all 266 pool frames (no unlabeled frames), two seeds
    runs += [("suponly", "full", 0), ("suponly", "full", 1)]
    if PROTOCOL == "xseqt":
        runs += [(f"cac_ablation_{v}", "1_8", 0) for v in ABLATIONS]
    return runs


def reference(method):
    """The run a method is paired with: the ablations' own full-CAC run, otherwise SupOnly."""
    return "cac_ablation_none" if method.startswith("cac_ablation_") else "suponly"


def same_machine(a, b):
    """Whether two records' `machine` name the same CPU model (the part before the first comma:
    the suffixes changed format over time)."""
    return a.split(",")[0].strip() == b.split(",")[0].strip()


def run_name(m, ratio, seed):
    return f"{m}_{ratio}_s{seed}"


def config_text(m, ratio, seed):
    if m.startswith("cac_ablation_"):
        v = m.removeprefix("cac_ablation_")
        text = config_text("cac", ratio, seed)
        if ABLATIONS[v] is not None:
            old, new = ABLATIONS[v]
            text, n = re.subn(rf"(?m)^{re.escape(old)}$", new, text)
            assert n == 1, f"xseqt_cac.toml: expected one '{old}' line"
        return f"# CAC ablation '{v}' (benches/semi/pretrained.py)\n" + text
    text = Path(f"trainer/configs/xseqt_{m}.toml").read_text()
    if ratio == "full":
        assert m == "suponly", "the full pool is a SupOnly reference"
        text, n = re.subn(r'(?m)^train_split = .*$', 'train_split = "splits/camvid-xseq/pool.txt"', text)
        assert n == 1
        text = ("# the full-pool ceiling: SupOnly on all 266 pool frames (train_split); the comments below\n"
                "# describe the 1/16 config this one is made from\n" + text)
    text = text.replace("1_16/seed0", f"{ratio}/seed{seed}")
    text, n = re.subn(r"(?m)^seed = 0$", f"seed = {seed}", text)
    assert n == 1, f"xseqt_{m}.toml: expected one 'seed = 0' line"
    if PROTOCOL == "xseq":
        # the xseqt header describes the other protocol: replace it
        body = text[text.index("\nname = ") + 1:]
        text = ("# xseq protocol (issue #25, benches/semi/pretrained.py --protocol xseq): trainer/configs/"
                f"xseqt_{m}.toml at {ratio} seed {seed}\n# with evaluation on the 101 train frames of 0006R0 "
                "(splits/camvid-xseq/eval.txt) and unlabeled = the rest\n# of the pool + val: no 0006R0 frame "
                "in any form.\n" + body)
        text, n = re.subn(r'(?m)^name = "camvid-lite0-xseqt"$', 'name = "camvid-lite0-xseq"', text)
        assert n == 1, f"xseqt_{m}.toml: expected the name line"
        text, n = re.subn(r'(?m)^val_split = .*$', f'val_split = "{PROTOCOLS["xseq"][1]}"', text)
        assert n == 1, f"xseqt_{m}.toml: expected one val_split line"
        text, n = re.subn(r'(?m)^unlabeled_splits = \[(".*?unlabeled\.txt"), "val", ".*?"\]$',
                          r'unlabeled_splits = [\1, "val"]', text)
        assert n == 1 or m == "suponly", f"xseqt_{m}.toml: expected the xseq-target unlabeled_splits line"
    if WEIGHT_INIT is not None:
        assert "weight_init" not in text, f"xseqt_{m}.toml sets weight_init itself"
        text, n = re.subn(r'(?m)^(init = "imagenet")$', rf'\1\nweight_init = "{WEIGHT_INIT}"', text)
        assert n == 1, f"xseqt_{m}.toml: expected one 'init = \"imagenet\"' line"
    return text


def flags():
    """The driver flags that select the runs' configs (for the records' commands)."""
    f = f"--protocol {PROTOCOL}"
    return f + (f" --weight-init {WEIGHT_INIT}" if WEIGHT_INIT else "")


def evals(run_dir):
    out = []
    log = run_dir / "metrics.jsonl"
    if not log.exists():
        return out
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if "val_miou" in r:
            out.append((r["iter"], r["val_miou"]))
    return out


def train(run_dir, cfg_path):
    cmd = [TRAIN, "train", "--config", str(cfg_path), "--out", str(run_dir), "--no-progress"]
    if (run_dir / "last.safetensors").exists():
        cmd.append("--resume")
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def score(run_dir):
    e = evals(run_dir)
    if len(e) < LAST_EVALS + 1:  # step 0 + the last three
        return None
    last = [v for _, v in e[-LAST_EVALS:]]
    return 100.0 * sum(last) / len(last), [i for i, _ in e[-LAST_EVALS:]]


def val_record(name):
    """The record name of a run's (or a method and ratio's) val mIoU: xseqt keeps its original
    names, other protocols carry their tag."""
    tag = PROTOCOLS[PROTOCOL][0]
    return f"{name}_{'' if tag == 'xseqt' else tag + '_'}val_miou"


def recorded_scores(results, prefix, val=False):
    """Per-run scores already in the results file: {(method, ratio, seed): (mIoU, machine)};
    with `val`, the runs' CamVid val scores instead."""
    out = {}
    if not Path(results).exists():
        return out
    by_name = {r["name"]: (r["value"], r["machine"]) for r in json.loads(Path(results).read_text())}
    for m, ratio, seed in plan():
        name = run_name(m, ratio, seed)
        v = by_name.get(prefix + (val_record(name) if val else f"{name}_{PROTOCOLS[PROTOCOL][0]}_miou"))
        if v is not None:
            out[(m, ratio, seed)] = v
    return out


def val_score(run_dir):
    """CamVid val mIoU (%) of a finished run's last checkpoint, exported and scored in tract;
    cached in <run>/val.json. None when the run folder has no checkpoint."""
    cached = run_dir / "val.json"
    if not cached.exists():
        if not (run_dir / "last.safetensors").exists():
            return None
        onnx = run_dir / "last.onnx"
        for cmd in ([TRAIN, "export", "--run", str(run_dir), "--checkpoint", "last", "--out", str(onnx)],
                    [RUNTIME, "eval", "--model", str(onnx), "--split", "val", "--backend", "tract",
                     "--json", str(cached)]):
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        onnx.unlink()
    return json.loads(cached.read_text())["miou"]  # already in %


def collect(runs_dir, results, prefix="", mach=None, trained_here=False):
    tag, _, split = PROTOCOLS[PROTOCOL]
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    mach = mach or machine()
    recs = []

    def rec(name, value, unit, command, on=None):
        # `on`: the machine(s) the figure comes from when it derives from recorded runs of another
        recs.append(
            {
                "name": prefix + name,
                "value": round(value, 4),
                "unit": unit,
                "split": split,
                "command": command,
                "date": date,
                "machine": on or mach,
            }
        )

    def machines(ms):
        """The machines of the runs a derived figure comes from, each once."""
        return " + ".join(sorted(set(ms)))

    scores = recorded_scores(results, prefix)
    # val means cover every seed with a val record, not only the run folders on this machine
    vals = recorded_scores(results, prefix, val=True)
    for m, ratio, seed in plan():
        name = run_name(m, ratio, seed)
        d = runs_dir / name
        if not (d / "done.json").exists():
            continue
        s = score(d)
        if s is None:
            continue
        value, steps = s
        scores[(m, ratio, seed)] = (value, mach)
        if prefix and not WEIGHT_INIT and not trained_here:
            cmd = (f"bash benches/gpu/run.sh --parts semi (SEMI_METHODS={m}), then python3 benches/semi/pretrained.py "
                   f"--collect --runs {runs_dir} --prefix {prefix} (mean of the evaluations at steps {steps})")
        else:
            here = f" --runs {runs_dir} --prefix {prefix}" if trained_here else ""
            cmd = (f"python3 benches/semi/pretrained.py {flags()}{here} --only '^{name}$' "
                   f"(mean of the evaluations at steps {steps})")
        rec(f"{name}_{tag}_miou", value, "mIoU %", cmd)
        # xseqt keeps its original record names; other protocols carry their tag
        rec(f"{name}_{'' if tag == 'xseqt' else tag + '_'}train_min", (train_seconds(d, discount_pauses=True) or 0.0) / 60.0, "min", cmd)
        v = val_score(d)
        if v is not None:
            vals[(m, ratio, seed)] = (v, mach)
            rec(val_record(name), v, "mIoU % (camvid val, 101 frames)", cmd)
    collect_cmd = (f"python3 benches/semi/pretrained.py {flags()} --collect --runs {runs_dir}"
                   f"{' --prefix ' + prefix if prefix and not WEIGHT_INIT else ''}")
    methods = METHODS + [f"cac_ablation_{v}" for v in ABLATIONS if v != "none"]
    for m in methods:
        for ratio in ["1_16", "1_8", "full"]:
            got = [(v, vm) for (mm, r, _), (v, vm) in scores.items() if mm == m and r == ratio]
            if got:
                rec(f"{m}_{ratio}_{tag}_miou", sum(v for v, _ in got) / len(got), "mIoU %",
                    f"{collect_cmd} (mean over {len(got)} seed(s))", machines(vm for _, vm in got))
            # only the seeds its reference run also has a val record for, so that the means of
            # one ratio compare like for like
            ref = reference(m)
            ref_seeds = {seed for (mm, r, seed) in vals if mm == ref and r == ratio}
            got = sorted((seed, v, vm) for (mm, r, seed), (v, vm) in vals.items()
                         if mm == m and r == ratio and seed in ref_seeds)
            if got:
                seeds = ", ".join(str(seed) for seed, _, _ in got)
                rec(val_record(f"{m}_{ratio}"), sum(v for _, v, _ in got) / len(got),
                    "mIoU % (camvid val, 101 frames)", f"{collect_cmd} (mean over seed(s) {seeds})",
                    machines(vm for _, _, vm in got))
    for (m, ratio, seed), (v, vm) in scores.items():
        ref = reference(m)
        base = scores.get((ref, ratio, seed))
        if m in ("suponly", "oracle", "cac_ablation_none") or base is None:
            continue
        if not same_machine(vm, base[1]):
            print(f"not paired: {m}_{ratio}_s{seed} ({vm}) and {ref}_{ratio}_s{seed} ({base[1]}) ran on different machines")
            continue
        cmd = f"{collect_cmd} (paired with {prefix}{ref}_{ratio}_s{seed})"
        rec(f"{m}_{ratio}_s{seed}_{tag}_gain", v - base[0], "mIoU points", cmd, machines([vm, base[1]]))
        oracle = scores.get(("oracle", ratio, seed))
        if ref == "suponly" and oracle is not None and oracle[0] > base[0] and same_machine(oracle[1], vm):
            rec(f"{m}_{ratio}_s{seed}_gap_closed", (v - base[0]) / (oracle[0] - base[0]), "fraction", cmd,
                machines([vm, base[1], oracle[1]]))
    merge_records(results, recs)
    for r in recs:
        print(f"{r['name']:40s} {r['value']:9.3f} {r['unit']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="xseqt")
    ap.add_argument("--only", default=None)
    ap.add_argument("--runs", default=None, help="runs folder (default runs/xseqt, runs/xseq-pre for xseq)")
    ap.add_argument("--results", default="docs/results/semi_pretrained.json")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--collect", action="store_true")
    ap.add_argument("--prefix", default="", help="record-name prefix of runs collected apart (gpu_)")
    ap.add_argument("--machine", default=None, help="the machine the runs were trained on (default: this one)")
    ap.add_argument("--weight-init", choices=["torch_default"], default=None,
                    help="weight_init of every run (runs/xseqt-ti, records prefixed ti_)")
    a = ap.parse_args()
    global PROTOCOL, WEIGHT_INIT
    PROTOCOL = a.protocol
    WEIGHT_INIT = a.weight_init
    runs_given = a.runs is not None
    a.runs = a.runs or ("runs/xseqt" if PROTOCOL == "xseqt" else "runs/xseq-pre") + ("-ti" if WEIGHT_INIT else "")
    if a.prefix and not a.collect and not runs_given:
        sys.exit("--prefix: with --collect (runs trained elsewhere) or with --runs (a set trained here apart)")
    trained_here = bool(a.prefix) and not a.collect and not WEIGHT_INIT
    if WEIGHT_INIT and a.prefix:
        sys.exit("--weight-init: its records carry the prefix ti_; no --prefix with it")
    if WEIGHT_INIT:
        a.prefix = "ti_"
    if a.prefix and not re.fullmatch(r"[a-z0-9]+_", a.prefix):
        sys.exit(f"--prefix {a.prefix!r}: expected lower-case letters/digits and a trailing '_' (gpu_)")
    runs_dir = Path(a.runs)
    todo = [r for r in plan() if a.only is None or re.search(a.only, run_name(*r))]
    if a.list:
        for r in todo:
            d = runs_dir / run_name(*r)
            state = "done" if (d / "done.json").exists() else ("partial" if d.exists() else "todo")
            print(f"{run_name(*r):24s} {state}")
        return
    if not a.collect:
        if not Path(TRAIN).exists():
            sys.exit(f"{TRAIN}: missing; cargo build --release -p edge-seg-trainer")
        runs_dir.mkdir(parents=True, exist_ok=True)
        for r in todo:
            d = runs_dir / run_name(*r)
            if (d / "done.json").exists():
                continue
            cfg = runs_dir / f"{run_name(*r)}.toml"
            cfg.write_text(config_text(*r))
            t0 = time.time()
            train(d, cfg)
            (d / "done.json").write_text(json.dumps({"wall_s": time.time() - t0}))
            collect(runs_dir, a.results, a.prefix, trained_here=trained_here)
    collect(runs_dir, a.results, a.prefix, a.machine, trained_here)


if __name__ == "__main__":
    main()

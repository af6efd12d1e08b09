#!/usr/bin/env python3
"""Issue #26, the semi setting with tags: 1/8 pixel labels + 7/8 tags against 1/8 pixel labels +
7/8 unlabeled, on the cross-sequence protocol (evaluation on the 101 train frames of the unseen
drive 0006R0), seed 0, the pretrained default net. Writes docs/results/weak.json:
`semi_1_8_xseq_miou` (CAC, 1/8 labeled + the rest of the pool and val unlabeled: the run
`cac_1_8_s0` of `benches/semi/pretrained.py --protocol xseq`), `semi_1_8_plus_tags_xseq_miou`
(the same CAC run where the 233 other pool frames also carry tags, through CAC's extension with
image-level labels, §3.5) and their difference `semi_1_8_tags_gain_xseq`.

  python3 benches/weak/semi_tags.py [--source cam|segmentation] [--runs runs/xseq-pre] [--weak runs/weak]

`--source segmentation` (a variant, records `..._plus_tags_seg_...`, run `cac_tagseg_1_8_s0`):
y_p from the SLRNet run's segmentation output instead of its CAMs (`cam-labels --from
segmentation`: class probabilities restricted to the image's tags, same thresholds and PAR).

Steps (each skipped when done, resumable):
1. the tags of the 233 tag-only frames (committed: splits/camvid-xseq/1_8/seed0/tags.txt) come
   from `edge-seg-train derive-tags --split splits/camvid-xseq/1_8/seed0/unlabeled.txt`;
2. SLRNet in the semi setting (trainer/configs/xseq_slrnet_semi_1_8.toml: CE on the 33 labeled
   frames, tags of the 233) -> <weak>/slrnet_semi_1_8_s0;
3. its refined CAM pseudo-labels of the 233 frames, `cam-labels --write` -> <weak>/pseudo_1_8_s0
   (scored against their masks by that command only: `slrnet_semi_pseudo_*` records);
4. CAC with `data.pseudo_labels` = that folder and `cac.tag_weight` = 0.4 (CCT's and CAC's
   released weight of the weakly labelled loss), otherwise the run `cac_1_8_s0`'s config
   -> <runs>/cac_tags_1_8_s0.

Score of a run: the mean of its last three evaluations (steps 400, 500, 600), as
benches/semi/pretrained.py.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "semi"))
from benchlib import merge_records, recorder, train_seconds  # noqa: E402
import pretrained  # noqa: E402

TRAIN = os.environ.get("EDGE_SEG_TRAIN", "target/release/edge-seg-train")
LABELED = "splits/camvid-xseq/1_8/seed0"
TAG_WEIGHT = 0.4
RESULTS = "docs/results/weak.json"


def train(cfg, out):
    pretrained.train(out, cfg)  # resumes an interrupted run
    (out / "done.json").write_text("{}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/xseq-pre")
    ap.add_argument("--weak", default="runs/weak")
    ap.add_argument("--source", choices=["cam", "segmentation"], default="cam")
    a = ap.parse_args()
    seg = a.source == "segmentation"
    runs, weak = Path(a.runs), Path(a.weak)
    pretrained.PROTOCOL = "xseq"
    slr = weak / "slrnet_semi_1_8_s0"
    if not (slr / "done.json").exists():
        train(Path("trainer/configs/xseq_slrnet_semi_1_8.toml"), slr)
    pseudo = weak / ("pseudo_seg_1_8_s0" if seg else "pseudo_1_8_s0")
    if not (pseudo / "done.json").exists():
        cmd = [TRAIN, "cam-labels", "--run", str(slr), "--split", f"{LABELED}/unlabeled.txt",
               "--tags", f"{LABELED}/tags.txt", "--scales", "1.0", "--no-flip", "--write", str(pseudo),
               "--name", "slrnet_semi_seg_pseudo" if seg else "slrnet_semi_pseudo", "--record", RESULTS,
               "--from", a.source, "--no-progress"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        (pseudo / "done.json").write_text("{}")
    tag = "cac_tagseg_1_8_s0" if seg else "cac_tags_1_8_s0"
    run = runs / tag
    if not (run / "done.json").exists():
        text = pretrained.config_text("cac", "1_8", 0)
        text, n = re.subn(r"(?m)^(unlabeled_splits = .*)$",
                          lambda mt: f"{mt.group(1)}\npseudo_labels = {json.dumps(str(pseudo))}", text)
        assert n == 1
        text, n = re.subn(r"(?m)^(positive_filter = .*)$", rf"\1\ntag_weight = {TAG_WEIGHT}", text)
        assert n == 1
        runs.mkdir(parents=True, exist_ok=True)
        cfg = runs / f"{tag}.toml"
        cfg.write_text(text)
        train(cfg, run)
    base_dir = runs / "cac_1_8_s0"
    if not (base_dir / "done.json").exists():
        sys.exit(f"{base_dir}: not trained yet: python3 benches/semi/pretrained.py --protocol xseq --only '^cac_1_8_s0$'")
    if (runs / "cac_1_8_s0.toml").read_text() != pretrained.config_text("cac", "1_8", 0):
        sys.exit(f"{runs}/cac_1_8_s0.toml is not the xseq protocol's CAC config: give --runs the xseq runs folder")
    base, tags = pretrained.score(base_dir), pretrained.score(run)
    if base is None or tags is None or base[1] != tags[1]:
        sys.exit(f"{base_dir} and {run}: not evaluated at the same last steps ({base} / {tags})")
    recs, add = recorder(f"python3 benches/weak/semi_tags.py --source {a.source} (mean of the evaluations at "
                         f"steps {tags[1]})", echo=True)
    split = pretrained.PROTOCOLS["xseq"][2]
    v = "_seg" if seg else ""
    add("semi_1_8_xseq_miou", base[0], "mIoU %", split)
    add(f"semi_1_8_plus_tags{v}_xseq_miou", tags[0], "mIoU %", split)
    add(f"semi_1_8_tags{v}_gain_xseq", tags[0] - base[0], "mIoU points", split)
    add(f"semi_1_8_plus_tags{v}_train_min", (train_seconds(run) or 0.0) / 60.0, "min", split)
    add("slrnet_semi_1_8_train_min", (train_seconds(slr) or 0.0) / 60.0, "min", "camvid xseq pool, 1/8 seed 0")
    merge_records(RESULTS, recs)
    print(json.dumps({r["name"]: r["value"] for r in recs}, indent=1))


if __name__ == "__main__":
    main()

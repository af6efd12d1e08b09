#!/usr/bin/env python3
"""Issue #26, the semi setting with tags: 1/8 pixel labels + 7/8 tags against 1/8 pixel labels +
7/8 unlabeled, on the cross-sequence protocol (evaluation on the 101 train frames of the unseen
drive 0006R0), seed 0, the pretrained default net. Writes docs/results/weak.json:
`semi_1_8_xseq_miou` (CAC, 1/8 labeled + the rest of the pool and val unlabeled: the run
`cac_1_8_s0` of `benches/semi/pretrained.py --protocol xseq`), `semi_1_8_plus_tags_xseq_miou`
(the same CAC run where the 233 other pool frames also carry tags, through CAC's extension with
image-level labels, §3.5) and their difference `semi_1_8_tags_gain_xseq`.

  python3 benches/weak/semi_tags.py [--source cam|segmentation|cac] [--no-tags] [--trusted]
                                    [--runs runs/xseq-pre] [--weak runs/weak]

Where y_p (the tag-only frames' pseudo-labels) come from:
- `cam` (default): the SLRNet run's refined CAMs (below);
- `segmentation` (records `..._plus_tags_seg_...`, run `cac_tags_seg_1_8_s0`): the same SLRNet
  run's segmentation output (`cam-labels --from segmentation`: class probabilities renormalised
  over the image's tags, same thresholds and PAR);
- `cac` (records `..._plus_tags_cac_...`, run `cac_tags_cac_1_8_s0`): the segmentation output of
  the CAC run without tags itself (`cac_1_8_s0`, the one this comparison pairs with: 33 labeled
  frames + the 233 frames unlabeled), each tagged class's probabilities divided by their maximum
  over the image (`--from segmentation-max`: every tagged class labels where the net finds it
  most), without PAR (`--no-par`: PAR lowered these labels from 45.2 to 26.4 mIoU). A second
  training stage, so `--no-tags` is its
  control: the same y_p made with every class allowed (a tag file naming all classes: plain
  self-training, no tag information; records `semi_1_8_selftrain_cac_*`, run
  `cac_tags_cac_notags_1_8_s0`); with both runs done, `semi_1_8_tags_cac_gain_over_selftrain_xseq`
  is what the tags add.
- `--trusted` (with `--source cac`; records and runs get `_trusted`): y_p labels only the classes
  the tags can teach (`cam-labels --trusted`: absent from >= 10 % of the 233 tag-only frames, by
  their tag file, the rule of `derive-tags`); every other pixel is ignored by C_w. The classes
  in most frames carry no tag information, so their y_p are plain self-training; this keeps only
  the part the tags decide. With `--no-tags` too: the same classes, y_p without the tags.

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
# where y_p come from: the run, `cam-labels --from`, extra flags, run/record suffix, record stem
SOURCES = {
    "cam": {"from": "cam", "extra": [], "suffix": "", "records": "slrnet_semi"},
    "segmentation": {"from": "segmentation", "extra": [], "suffix": "_seg", "records": "slrnet_semi_seg"},
    "cac": {"from": "segmentation-max", "extra": ["--no-par"], "suffix": "_cac", "records": "cac_semi_segmax"},
}
RESULTS = "docs/results/weak.json"


def train(cfg, out):
    pretrained.train(out, cfg)  # resumes an interrupted run
    (out / "done.json").write_text("{}")


def all_classes_tags(out):
    """A tag file naming every class for each tag-only frame: pseudo-labels made with it use no
    tag information (the self-training control of `--no-tags`)."""
    names = [ln.strip() for ln in Path(f"{LABELED}/unlabeled.txt").read_text().splitlines() if ln.strip()]
    ids = " ".join(str(c) for c in range(11))
    out.write_text("# every class for every image: no tag information (benches/weak/semi_tags.py --no-tags)\n"
                   + "".join(f"{n}: {ids}\n" for n in names))
    return out


def teachable_classes(tag_file, min_absent=0.1):
    """The classes absent from at least `min_absent` of the images of a tag file (names as the
    file spells them): what `derive-tags` calls teachable."""
    rows = [ln.split(":", 1)[1].split() for ln in Path(tag_file).read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    names = sorted({c for r in rows for c in r}, key=lambda c: c.lower())
    return [c for c in names if sum(c not in r for r in rows) >= min_absent * len(rows)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/xseq-pre")
    ap.add_argument("--weak", default="runs/weak")
    ap.add_argument("--source", choices=list(SOURCES), default="cam")
    ap.add_argument("--no-tags", action="store_true",
                    help="the control: the same pseudo-labels made without the tags (every class allowed)")
    ap.add_argument("--trusted", action="store_true",
                    help="y_p only for the classes tags can teach (cam-labels --trusted); other pixels ignored")
    a = ap.parse_args()
    src = SOURCES[a.source]
    if a.no_tags and a.source != "cac":
        sys.exit("--no-tags: only with --source cac (the self-training control)")
    if a.trusted and a.source != "cac":
        sys.exit("--trusted: only with --source cac")
    trusted = teachable_classes(f"{LABELED}/tags.txt") if a.trusted else []
    runs, weak = Path(a.runs), Path(a.weak)
    pretrained.PROTOCOL = "xseq"
    base_dir = runs / "cac_1_8_s0"
    if a.source == "cac":
        maker = base_dir
        if not (maker / "done.json").exists():
            sys.exit(f"{maker}: not trained yet: python3 benches/semi/pretrained.py --protocol xseq --only '^cac_1_8_s0$'")
    else:
        maker = weak / "slrnet_semi_1_8_s0"
        if not (maker / "done.json").exists():
            train(Path("trainer/configs/xseq_slrnet_semi_1_8.toml"), maker)
    tr = "_trusted" if a.trusted else ""
    v = src["suffix"] + tr + ("_notags" if a.no_tags else "")
    pseudo = weak / f"pseudo{v}_1_8_s0"
    if not (pseudo / "done.json").exists():
        weak.mkdir(parents=True, exist_ok=True)
        tags = all_classes_tags(weak / "all_classes_tags_1_8_s0.txt") if a.no_tags else Path(f"{LABELED}/tags.txt")
        cmd = [TRAIN, "cam-labels", "--run", str(maker), "--split", f"{LABELED}/unlabeled.txt",
               "--tags", str(tags), "--scales", "1.0", "--no-flip", "--write", str(pseudo),
               "--name", f"{src['records']}{tr}{'_notags' if a.no_tags else ''}_pseudo", "--record", RESULTS,
               "--from", src["from"], "--no-progress", *src["extra"]]
        if trusted:
            cmd += ["--trusted", ",".join(trusted)]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        (pseudo / "done.json").write_text("{}")
    tag = f"cac_tags{v}_1_8_s0"
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
    if not (base_dir / "done.json").exists():
        sys.exit(f"{base_dir}: not trained yet: python3 benches/semi/pretrained.py --protocol xseq --only '^cac_1_8_s0$'")
    if (runs / "cac_1_8_s0.toml").read_text() != pretrained.config_text("cac", "1_8", 0):
        sys.exit(f"{runs}/cac_1_8_s0.toml is not the xseq protocol's CAC config: give --runs the xseq runs folder")
    base, tags = pretrained.score(base_dir), pretrained.score(run)
    if base is None or tags is None or base[1] != tags[1]:
        sys.exit(f"{base_dir} and {run}: not evaluated at the same last steps ({base} / {tags})")
    flags = (" --no-tags" if a.no_tags else "") + (" --trusted" if a.trusted else "")
    recs, add = recorder(f"python3 benches/weak/semi_tags.py --source {a.source}{flags} "
                         f"(mean of the evaluations at steps {tags[1]})", echo=True)
    split = pretrained.PROTOCOLS["xseq"][2]
    add("semi_1_8_xseq_miou", base[0], "mIoU %", split)
    kind = "selftrain" if a.no_tags else "plus_tags"
    sfx = src["suffix"] + tr
    add(f"semi_1_8_{kind}{sfx}_xseq_miou", tags[0], "mIoU %", split)
    add(f"semi_1_8_{'selftrain' if a.no_tags else 'tags'}{sfx}_gain_xseq", tags[0] - base[0], "mIoU points", split)
    add(f"semi_1_8_{kind}{sfx}_train_min", (train_seconds(run, discount_pauses=True) or 0.0) / 60.0, "min", split)
    if a.source != "cac":
        add("slrnet_semi_1_8_train_min", (train_seconds(maker) or 0.0) / 60.0, "min", "camvid xseq pool, 1/8 seed 0")
    # tags against the same pipeline without them, when both runs are there
    other = runs / f"cac_tags{src['suffix'] + tr if a.no_tags else v + '_notags'}_1_8_s0"
    o = pretrained.score(other) if (other / "done.json").exists() else None
    if o is not None and o[1] == tags[1]:
        with_tags, without = (o[0], tags[0]) if a.no_tags else (tags[0], o[0])
        add(f"semi_1_8_tags{sfx}_gain_over_selftrain_xseq", with_tags - without, "mIoU points", split)
    merge_records(RESULTS, recs)
    print(json.dumps({r["name"]: r["value"] for r in recs}, indent=1))


if __name__ == "__main__":
    main()

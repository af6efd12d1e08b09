#!/usr/bin/env bash
# Prepares the folder that carries benches/gpu/run.sh's inputs to a GPU machine that has no
# network and no Rust (the `device` tool's H200 here): the release CUDA binary (stripped, xz),
# the Lite0 ImageNet weights, a CamVid root with only the frames the `train` part reads (the 17
# labeled frames of splits/camvid-xseq/1_16/seed0 and every 5th frame of
# splits/camvid-xseq-target/eval.txt for the in-training evaluation), and device.sh, which
# runs there. The weights travel xz-compressed (device.sh unpacks them).
#
# --semi adds what run.sh's `semi` part reads (issue #25 on the GPU): every frame of
# splits/camvid-xseq-target/eval.txt (the in-training evaluation on the full 51-frame split, as
# benches/semi/pretrained.py scores runs) and the 400 unlabeled frames of the xseq-target 1/16
# seed 0 pool (splits/camvid-xseq/1_16/seed0/unlabeled.txt, val, splits/camvid-xseq-target/
# target.txt) re-encoded as JPEG (--jpeg-quality, default 90, 4:2:0) under their .png names — the
# loader decodes by content — because as PNG they are ~100 MB and the device tool carries 64 MiB.
# Labeled and evaluation frames stay the original PNG bytes.
#
#   bash benches/gpu/prepare.sh [--out .gpu] [--data ../shared/data/camvid]
#        [--bin /tmp/cuda-target/release/edge-seg-train] [--semi] [--jpeg-quality 90]
#
# Build the binary first: firmware-configs/scripts/cuda-build.sh --release. On the GPU machine,
# from the repository root: bash .gpu/device.sh (WITH_TRAIN=1 adds the training run).
set -euo pipefail
OUT=.gpu
DATA=../shared/data/camvid
BIN=/tmp/cuda-target/release/edge-seg-train
SEMI=
JPEG_Q=90
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --semi) SEMI=1; shift ;;
        --jpeg-quality) JPEG_Q=$2; shift 2 ;;
        *) echo "prepare.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/../.."
[[ -x $BIN ]] || { echo "prepare.sh: --bin $BIN: not built (firmware-configs/scripts/cuda-build.sh --release)" >&2; exit 2; }
[[ -d $DATA/train ]] || { echo "prepare.sh: --data $DATA: no CamVid train folder" >&2; exit 2; }
rm -rf "$OUT/camvid"  # a new mini root each time: no frame of an earlier --semi stays
mkdir -p "$OUT/cache" "$OUT/camvid/train" "$OUT/camvid/trainannot"
strip -o "$OUT/edge-seg-train" "$BIN"
xz -T0 -6 -f "$OUT/edge-seg-train"
[[ $JPEG_Q =~ ^[0-9]+$ ]] && (( JPEG_Q >= 50 && JPEG_Q <= 100 )) \
    || { echo "prepare.sh: --jpeg-quality $JPEG_Q: expected 50..100" >&2; exit 2; }
rm -f "$OUT"/cache/*.pth
EDGE_SEG_PRETRAINED_CACHE=$OUT/cache cargo run --release --locked -q -p edge-seg-trainer -- \
    fetch-pretrained --variant lite0 > /dev/null
for w in "$OUT"/cache/*.pth; do xz -T0 -9 -f "$w"; done
if [[ -n $SEMI ]]; then
    cp splits/camvid-xseq-target/eval.txt "$OUT/eval_short.txt"  # the full split: scored as on the CPU
else
    awk 'NR % 5 == 1' splits/camvid-xseq-target/eval.txt > "$OUT/eval_short.txt"
fi
for f in $(cat splits/camvid-xseq/1_16/seed0/labeled.txt "$OUT/eval_short.txt"); do
    cp "$DATA/train/$f" "$OUT/camvid/train/"
    cp "$DATA/trainannot/$f" "$OUT/camvid/trainannot/"
done
if [[ -n $SEMI ]]; then
    mkdir -p "$OUT/camvid/val"
    python3 - "$DATA" "$OUT/camvid" "$JPEG_Q" splits/camvid-xseq/1_16/seed0/unlabeled.txt \
        splits/camvid-xseq-target/target.txt <<'PY'
import sys
from pathlib import Path

try:
    from PIL import Image
except ImportError:
    sys.exit("prepare.sh --semi: Pillow is needed to re-encode the unlabeled pool (pip install pillow)")
data, out, q = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
names = [("train", n.strip()) for lst in sys.argv[4:] for n in Path(lst).read_text().split() if n.strip()]
names += [("val", p.name) for p in sorted((data / "val").glob("*.png"))]
for folder, name in names:
    if (out / folder / name).exists():  # a labeled or evaluation frame must keep its PNG bytes
        sys.exit(f"prepare.sh --semi: {name} is both unlabeled and labeled/evaluated")
    Image.open(data / folder / name).convert("RGB").save(out / folder / name, "JPEG", quality=q)
print(f"prepare.sh: {len(names)} unlabeled frames as JPEG q{q}")
PY
fi
cp benches/gpu/device.sh "$OUT/device.sh"
du -sh "$OUT"

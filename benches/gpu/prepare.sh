#!/usr/bin/env bash
# Prepares the folder that carries benches/gpu/run.sh's inputs to a GPU machine that has no
# network and no Rust (the `device` tool's H200 here): the release CUDA binary (stripped, xz),
# the Lite0 ImageNet weights, a CamVid root with only the frames the `train` part reads (the 17
# labeled frames of splits/camvid-xseq/1_16/seed0 and every 5th frame of
# splits/camvid-xseq-target/eval.txt for the in-training evaluation), and device.sh, which
# runs there.
#
#   bash benches/gpu/prepare.sh [--out .gpu] [--data ../shared/data/camvid]
#        [--bin /tmp/cuda-target/release/edge-seg-train]
#
# Build the binary first: firmware-configs/scripts/cuda-build.sh --release. On the GPU machine,
# from the repository root: bash .gpu/device.sh (WITH_TRAIN=1 adds the training run).
set -euo pipefail
OUT=.gpu
DATA=../shared/data/camvid
BIN=/tmp/cuda-target/release/edge-seg-train
while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        *) echo "prepare.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/../.."
[[ -x $BIN ]] || { echo "prepare.sh: --bin $BIN: not built (firmware-configs/scripts/cuda-build.sh --release)" >&2; exit 2; }
[[ -d $DATA/train ]] || { echo "prepare.sh: --data $DATA: no CamVid train folder" >&2; exit 2; }
mkdir -p "$OUT/cache" "$OUT/camvid/train" "$OUT/camvid/trainannot"
strip -o "$OUT/edge-seg-train" "$BIN"
xz -T0 -6 -f "$OUT/edge-seg-train"
EDGE_SEG_PRETRAINED_CACHE=$OUT/cache cargo run --release --locked -q -p edge-seg-trainer -- \
    fetch-pretrained --variant lite0 > /dev/null
awk 'NR % 5 == 1' splits/camvid-xseq-target/eval.txt > "$OUT/eval_short.txt"
for f in $(cat splits/camvid-xseq/1_16/seed0/labeled.txt "$OUT/eval_short.txt"); do
    cp "$DATA/train/$f" "$OUT/camvid/train/"
    cp "$DATA/trainannot/$f" "$OUT/camvid/trainannot/"
done
cp benches/gpu/device.sh "$OUT/device.sh"
du -sh "$OUT"

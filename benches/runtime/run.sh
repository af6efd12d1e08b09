#!/usr/bin/env bash
# Issue #4 measurements in one command: end-to-end FPS, per-stage latency and peak RSS of
# `edge-seg run` on 480x360 frames (CamVid val as a raw YUYV recording, the camera code path),
# f32 and int8 models, as fast as possible (no frame dropped) and paced like a 30 FPS camera
# (stale frames dropped); val mIoU of each; the onnxruntime peer on the same recording; for the
# edge student (--model, records without prefix) and the larger shipped model (--also, records
# prefixed small_); writes docs/results/runtime.json (see benches/runtime/README.md).
#
#   bash benches/runtime/run.sh [--data ../shared/data/camvid] [--model assets/models/camvid-edge.onnx]
#                               [--also assets/models/camvid-small.onnx | --also ""] [--pace 30]
#                               [--limit N] [--results docs/results/runtime.json]
#                               [--work target/runtime-bench]
set -euo pipefail

ORIG_ARGS="$*"
DATA=../shared/data/camvid
MODEL=assets/models/camvid-edge.onnx
ALSO=assets/models/camvid-small.onnx
PACE=30
LIMIT=0
RESULTS=docs/results/runtime.json
WORK=target/runtime-bench
PY=${PYTHON:-python3}

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data) DATA=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --also) ALSO=$2; shift 2 ;;
        --pace) PACE=$2; shift 2 ;;
        --limit) LIMIT=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
COMMAND="bash benches/runtime/run.sh${ORIG_ARGS:+ $ORIG_ARGS}"

[[ -f Cargo.toml && -d benches/runtime ]] || { echo "run.sh: run from the repository root" >&2; exit 2; }
[[ -f $MODEL ]] || { echo "run.sh: model $MODEL not found" >&2; exit 2; }
[[ -z $ALSO || -f $ALSO ]] || { echo "run.sh: model $ALSO not found" >&2; exit 2; }
[[ -d $DATA/val && -d $DATA/train ]] || { echo "run.sh: $DATA has no val/ and train/ (CamVid layout)" >&2; exit 2; }
# shellcheck source=../common.sh
source benches/common.sh
require_peer_python run.sh
warn_if_loaded "figures will be low"

step "build edge-seg (release)"
cargo build --release -p edge-seg-runtime --bin edge-seg
EDGE=target/release/edge-seg

fresh_work "$WORK" .runtime-bench

step "inputs: YUYV recording of $DATA/val, int8 calibration set (20 train frames)"
"$PY" benches/runtime/peer.py record --data "$DATA" --split val --limit "$LIMIT" --out "$WORK/val.yuyv"
calib_frames "$DATA" "$WORK/calib"
NFRAMES=$(( $(stat -c %s "$WORK/val.yuyv") / (480 * 360 * 2) ))

bench_model() { # tag model
    local tag=$1 dir=$WORK/$1
    mkdir -p "$dir"
    local f32=$dir/f32.onnx int8=$dir/int8.onnx
    cp "$2" "$f32"
    step "[$tag] int8 model (per-tensor, MinMax, --target tract)"
    "$EDGE" quantize --model "$f32" --calib "$WORK/calib" --out "$int8" --target tract > "$dir/quantize.log" 2>&1 ||
        { cat "$dir/quantize.log" >&2; exit 1; }
    tail -n 1 "$dir/quantize.log"
    # the display stands in for a 480x360 32-bit framebuffer (a file), so output costs what a screen would
    edge_run() { # name model extra-args...
        local name=$1 model=$2
        shift 2
        step "[$tag] edge-seg run: $name"
        "$EDGE" run --model "$model" --input "$WORK/val.yuyv" --size 480x360 --display "fb:$dir/fb_$name" \
            --fb-geometry 480x360x32 --stats "$dir/$name.jsonl" "$@" | tail -n 3
    }
    edge_run f32_throughput "$f32" --drop wait
    edge_run int8_throughput "$int8" --drop wait
    edge_run f32_camera "$f32" --pace "$PACE" --drop drop
    edge_run int8_camera "$int8" --pace "$PACE" --drop drop

    step "[$tag] onnxruntime peer (2 threads), same recording"
    "$PY" benches/runtime/peer.py e2e --model "$f32" --input "$WORK/val.yuyv" --size 480x360 --threads 2 \
        --out "$dir/ort_f32_e2e.json"
    "$PY" benches/runtime/peer.py e2e --model "$int8" --input "$WORK/val.yuyv" --size 480x360 --threads 2 \
        --out "$dir/ort_int8_e2e.json"

    step "[$tag] val mIoU (edge-seg eval)"
    for k in f32 int8; do
        "$EDGE" eval --model "$dir/$k.onnx" --data "$DATA" --split val --record "$dir/eval.json" \
            --record-name "val_miou_$k" | grep mIoU
    done
}

bench_model edge "$MODEL"
[[ -z $ALSO ]] || bench_model small "$ALSO"

step "records"
SPLIT="$(basename "$DATA") val as YUYV 480x360 ($NFRAMES frames)"
"$PY" benches/runtime/peer.py records --work "$WORK/edge" --results "$RESULTS" --command "$COMMAND" \
    --split "$SPLIT" --pace "$PACE" --model "$(basename "$MODEL")"
[[ -z $ALSO ]] || "$PY" benches/runtime/peer.py records --work "$WORK/small" --results "$RESULTS" \
    --command "$COMMAND" --split "$SPLIT" --pace "$PACE" --model "$(basename "$ALSO")" --prefix small_
echo "raw stats kept in $WORK; total $(( $(date +%s) - T0 )) s"

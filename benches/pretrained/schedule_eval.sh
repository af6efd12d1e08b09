#!/usr/bin/env bash
# Val mIoU of a finished training run at several network input sizes (issue #21: the schedule and
# recipe comparisons): its last checkpoint exported at each size
# (`edge-seg-train export --input-size HxW`) and scored on CamVid val by `edge-seg eval`,
# recorded as `<name>_<H>_val_miou` in --results; the per-class JSON of each size is copied to
# --keep when given (a run-files folder under docs/results/).
#
#   bash benches/pretrained/schedule_eval.sh --run runs/lite0_6k --name schedule_6000
#        [--sizes 288x384,360x480] [--backend ort] [--data ../shared/data/camvid]
#        [--results docs/results/pretrained.json] [--keep docs/results/lite0_6k_run]
set -euo pipefail
ORIG_ARGS="$*"
RUN=
NAME=
SIZES=288x384,360x480
BACKEND=ort
DATA=../shared/data/camvid
RESULTS=docs/results/pretrained.json
KEEP=
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --run) RUN=$2; shift 2 ;;
        --name) NAME=$2; shift 2 ;;
        --sizes) SIZES=$2; shift 2 ;;
        --backend) BACKEND=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --keep) KEEP=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "schedule_eval.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ -n $RUN && -n $NAME ]] || { echo "schedule_eval.sh: --run and --name are required" >&2; usage >&2; exit 2; }
[[ $NAME =~ ^[a-z0-9_]+$ ]] || { echo "schedule_eval.sh: --name '$NAME': use a-z, 0-9 and _" >&2; exit 2; }
[[ -f $RUN/last.safetensors ]] || { echo "schedule_eval.sh: --run $RUN: no last.safetensors (not a finished run)" >&2; exit 2; }
cd "$(dirname "$0")/../.."
source benches/common.sh
cargo build --release --locked -q -p edge-seg-trainer -p edge-seg-runtime
WORK=target/schedule-eval/$NAME
mkdir -p "$WORK"
[[ -z $KEEP ]] || mkdir -p "$KEEP"
IFS=, read -ra SIZE_LIST <<< "$SIZES"
for size in "${SIZE_LIST[@]}"; do
    [[ $size =~ ^[0-9]+x[0-9]+$ ]] || { echo "schedule_eval.sh: --sizes: '$size' is not HxW" >&2; exit 2; }
    step "$NAME at $size"
    target/release/edge-seg-train export --run "$RUN" --checkpoint last --input-size "$size" \
        --out "$WORK/m_$size.onnx" | tail -n 1
    target/release/edge-seg eval --backend "$BACKEND" --model "$WORK/m_$size.onnx" --data "$DATA" \
        --split val --json "$WORK/eval_$size.json" --record "$RESULTS" \
        --record-name "${NAME}_${size%x*}_val_miou" | grep -E "^mIoU"
    [[ -z $KEEP ]] || cp "$WORK/eval_$size.json" "$KEEP/eval_$size.json"
done
echo "records ${NAME}_<H>_val_miou in $RESULTS (bash benches/pretrained/schedule_eval.sh $ORIG_ARGS)"

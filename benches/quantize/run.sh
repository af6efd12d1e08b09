#!/usr/bin/env bash
# Issue #3 measurements in one command: f32 vs int8 latency in edge-seg (tract) and onnxruntime
# (CPU, same files), and val mIoU of f32 / our int8 per-tensor / our int8 per-channel /
# onnxruntime's quantize_static int8 from the same calibration images. Writes the figures to
# docs/results/quantize.json (see benches/quantize/README.md).
#
#   bash benches/quantize/run.sh [--data ../shared/data/camvid] [--model assets/models/camvid-small.onnx]
#                                [--calib DIR] [--results docs/results/quantize.json] [--runs 20]
#                                [--warmup 3] [--work target/quantize-bench] [--quick]
set -euo pipefail

ORIG_ARGS="$*"
DATA=../shared/data/camvid
MODEL=assets/models/camvid-small.onnx
CALIB=
RESULTS=docs/results/quantize.json
RUNS=20
WARMUP=3
WORK=target/quantize-bench
QUICK=0
PY=${PYTHON:-python3}

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data) DATA=$2; shift 2 ;;
        --model) MODEL=$2; shift 2 ;;
        --calib) CALIB=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
if [[ $QUICK == 1 && $RUNS == 20 ]]; then RUNS=5; fi
COMMAND="bash benches/quantize/run.sh${ORIG_ARGS:+ $ORIG_ARGS}"

[[ -f Cargo.toml && -d benches/quantize ]] || { echo "run.sh: run from the repository root" >&2; exit 2; }
[[ -f $MODEL ]] || { echo "run.sh: model $MODEL not found" >&2; exit 2; }
[[ -d $DATA/val && -d $DATA/valannot ]] || { echo "run.sh: $DATA has no val/ and valannot/ (CamVid layout)" >&2; exit 2; }
# shellcheck source=../common.sh
source benches/common.sh
require_peer_python run.sh
warn_if_loaded "latency figures will be inflated"

step "build edge-seg (release) and the tract latency bench"
cargo build --release -p edge-seg-runtime --bin edge-seg
cargo bench -p edge-seg-benches --bench quantize_latency --no-run
EDGE=target/release/edge-seg

# the work folder is wiped at each run, so only one this script created (marker file) is removed
fresh_work "$WORK" .quantize-bench
WORK=$(cd "$WORK" && pwd)

# ---------------------------------------------------------------- calibration set
if [[ -z $CALIB ]]; then
    CALIB=$WORK/calib
    calib_frames "$DATA" "$CALIB"
fi
NCALIB=$(find "$CALIB" -maxdepth 1 -type f \( -iname '*.png' -o -iname '*.jpg' -o -iname '*.jpeg' \) | wc -l)
[[ $NCALIB -gt 0 ]] || { echo "run.sh: no calibration images in $CALIB" >&2; exit 2; }

# ---------------------------------------------------------------- val split
if [[ $QUICK == 1 ]]; then
    SPLIT=$WORK/val_quick.txt
    find "$DATA/val" -maxdepth 1 -type f -name '*.png' -printf '%f\n' | LC_ALL=C sort | awk 'NR % 10 == 1 && ++n <= 10' \
        > "$SPLIT"
    SPLIT_LABEL="$(basename "$DATA") val (quick: $(wc -l < "$SPLIT") images)"
else
    SPLIT=val
    SPLIT_LABEL="$(basename "$DATA") val"
fi
FRAME=$(find "$DATA/val" -maxdepth 1 -type f -name '*.png' | LC_ALL=C sort | awk 'NR == 1')
FRAME=$(cd "$(dirname "$FRAME")" && pwd)/$(basename "$FRAME")   # cargo bench runs in benches/

F32=$WORK/f32.onnx
PT=$WORK/int8_pertensor_tract.onnx
PC=$WORK/int8_perchannel_onnxruntime.onnx
ORTQ=$WORK/ort_int8_perchannel.onnx
ORTQ_PT=$WORK/ort_int8_pertensor.onnx
cp "$MODEL" "$F32"

# ---------------------------------------------------------------- quantize
step "quantize: ours ($NCALIB calibration images, MinMax) and onnxruntime quantize_static"
# full per-tensor tables and onnxruntime's warnings go to <work>/quantize_*.log
"$EDGE" quantize --model "$F32" --calib "$CALIB" --out "$PT" --method minmax --target tract \
    --report "$WORK/report_pertensor.json" > "$WORK/quantize_pertensor.log" 2>&1 ||
    { cat "$WORK/quantize_pertensor.log" >&2; exit 1; }
tail -n 1 "$WORK/quantize_pertensor.log"
"$EDGE" quantize --model "$F32" --calib "$CALIB" --out "$PC" --method minmax --target onnxruntime \
    --per-channel --report "$WORK/report_perchannel.json" > "$WORK/quantize_perchannel.log" 2>&1 ||
    { cat "$WORK/quantize_perchannel.log" >&2; exit 1; }
tail -n 1 "$WORK/quantize_perchannel.log"
for pc in 1 0; do
    log=$WORK/quantize_ort_$pc.log
    "$PY" benches/quantize/peer.py quantize --model "$F32" --calib "$CALIB" --out "$([[ $pc == 1 ]] && echo "$ORTQ" || echo "$ORTQ_PT")" \
        $([[ $pc == 1 ]] && echo --per-channel) > "$log" 2>&1 || { cat "$log" >&2; exit 1; }
    tail -n 1 "$log"
done

# ---------------------------------------------------------------- latency (one frame)
step "latency: tract (1 thread), $WARMUP warm-up + median of $RUNS runs on $(basename "$FRAME")"
cargo bench -q -p edge-seg-benches --bench quantize_latency -- --frame "$FRAME" --warmup "$WARMUP" \
    --runs "$RUNS" --out "$WORK/tract_latency.json" f32="$F32" int8_pertensor="$PT" int8_perchannel="$PC"
step "latency: onnxruntime (2 and 1 intra-op threads)"
"$PY" benches/quantize/peer.py latency --frame "$FRAME" --warmup "$WARMUP" --runs "$RUNS" --threads 2 \
    --out "$WORK/ort_latency.json" f32="$F32" int8_pertensor="$PT" int8_perchannel="$PC" ort_int8="$ORTQ"
"$PY" benches/quantize/peer.py latency --frame "$FRAME" --warmup "$WARMUP" --runs "$RUNS" --threads 1 \
    --out "$WORK/ort_latency_1t.json" f32="$F32" int8_pertensor="$PT" ort_int8="$ORTQ"

# ---------------------------------------------------------------- accuracy
edge_eval() { # name model
    step "mIoU (edge-seg / tract): $1"
    "$EDGE" eval --model "$2" --data "$DATA" --split "$SPLIT" --record "$WORK/edge_records.json" \
        --record-name "$1" | grep -E '^(mIoU|pixel acc)'
}
edge_eval f32_val_miou "$F32"
edge_eval int8_pertensor_val_miou "$PT"
edge_eval int8_perchannel_val_miou "$PC"
ort_eval() { # outname model
    step "mIoU (onnxruntime): $(basename "$2")"
    "$PY" benches/quantize/peer.py eval --model "$2" --data "$DATA" --split "$SPLIT" --out "$WORK/$1.json"
}
ort_eval ort_f32_eval "$F32"
ort_eval ort_int8_eval "$ORTQ"
ort_eval ort_int8_pertensor_eval "$ORTQ_PT"
ort_eval ort_our_perchannel_eval "$PC"

# ---------------------------------------------------------------- records
step "records"
"$PY" benches/quantize/peer.py records --work "$WORK" --results "$RESULTS" --command "$COMMAND" \
    --split "$SPLIT_LABEL"
echo "models, reports and raw timings kept in $WORK; total $(( $(date +%s) - T0 )) s"

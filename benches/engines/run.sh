#!/usr/bin/env bash
# Issue #22 in one command: backend (tract, ort) x precision (f32, int8) x model (student,
# default, torchvision) on the same 480x360 frames (CamVid val as a YUYV recording, the camera
# code path): end-to-end FPS of `edge-seg run` in throughput mode (--drop wait, 2 threads) and
# its per-frame inference times there, the median single-frame inference latency of every cell
# (criterion bench benches/benches/engines_latency.rs: one frame after the other, nothing else
# running), and the Python onnxruntime peer (benches/runtime/peer.py e2e, same recording,
# 2 threads) on the same files; writes docs/results/cpu_speed.json.
#
#   bash benches/engines/run.sh [--data ../shared/data/camvid] [--limit N]
#                               [--results docs/results/cpu_speed.json] [--work target/engines-bench]
#
# int8: tract runs the per-tensor `--target tract` graph; onnxruntime and the peer run the
# per-channel `--target onnxruntime` graph (full-range weights; see quantize --weight-range).
# The torchvision model is exported by export_torchvision.py (needs torch and torchvision);
# it is skipped with a warning when they are missing.
set -euo pipefail

ORIG_ARGS="$*"
DATA=../shared/data/camvid
LIMIT=0
RESULTS=docs/results/cpu_speed.json
WORK=target/engines-bench
PY=${PYTHON:-python3}
THREADS=2

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data) DATA=$2; shift 2 ;;
        --limit) LIMIT=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
COMMAND="bash benches/engines/run.sh${ORIG_ARGS:+ $ORIG_ARGS}"
[[ -f Cargo.toml && -d benches/engines ]] || { echo "run.sh: run from the repository root" >&2; exit 2; }
[[ -d $DATA/val && -d $DATA/train ]] || { echo "run.sh: $DATA has no val/ and train/ (CamVid layout)" >&2; exit 2; }
# shellcheck source=../common.sh
source benches/common.sh
require_peer_python run.sh
warn_if_loaded "figures will be low"

step "build edge-seg (release)"
cargo build --release -p edge-seg-runtime --bin edge-seg
EDGE=target/release/edge-seg

fresh_work "$WORK" .engines-bench

step "inputs: YUYV recording of $DATA/val, int8 calibration set (20 train frames)"
"$PY" benches/runtime/peer.py record --data "$DATA" --split val --limit "$LIMIT" --out "$WORK/val.yuyv"
calib_frames "$DATA" "$WORK/calib"

MODELS=(student default)
mkdir -p "$WORK/student" "$WORK/default"
cp assets/models/camvid-edge.onnx "$WORK/student/f32.onnx"
cp assets/models/camvid-lite0.onnx "$WORK/default/f32.onnx"
if "$PY" -c 'import torch, torchvision' 2>/dev/null; then
    step "torchvision LR-ASPP MobileNetV3-Large export (random weights, 11 classes, 360x480)"
    mkdir -p "$WORK/torchvision"
    "$PY" benches/engines/export_torchvision.py --out "$WORK/torchvision/f32.onnx" --classes 11 --size 360x480
    MODELS+=(torchvision)
else
    echo "warning: torch/torchvision missing (pip install torch torchvision); no torchvision row" >&2
fi

for m in "${MODELS[@]}"; do
    d=$WORK/$m
    step "[$m] int8 graphs"
    "$EDGE" quantize --model "$d/f32.onnx" --calib "$WORK/calib" --out "$d/int8_tract.onnx" --target tract \
        2>&1 | tail -n 1
    "$EDGE" quantize --model "$d/f32.onnx" --calib "$WORK/calib" --out "$d/int8_ort.onnx" --target onnxruntime \
        --per-channel 2>&1 | tail -n 1
    # the peer reads edge-seg metadata: the int8 files carry it; the f32 file of a foreign model
    # gets the same description (edge-seg's own defaults) in a copy
    "$PY" benches/engines/describe.py --from "$d/int8_ort.onnx" --model "$d/f32.onnx" --out "$d/f32_described.onnx"
    for backend in tract ort; do
        for prec in f32 int8; do
            model=$d/f32.onnx
            [[ $prec == int8 ]] && model=$d/int8_$backend.onnx
            step "[$m] edge-seg run --backend $backend, $prec"
            "$EDGE" run --backend "$backend" --threads "$THREADS" --model "$model" --input "$WORK/val.yuyv" \
                --size 480x360 --drop wait --stats "$d/${backend}_$prec.jsonl" 2>/dev/null | tail -n 2
        done
    done
    step "[$m] onnxruntime peer (Python, $THREADS threads)"
    "$PY" benches/runtime/peer.py e2e --model "$d/f32_described.onnx" --input "$WORK/val.yuyv" --size 480x360 \
        --threads "$THREADS" --out "$d/peer_f32.json"
    "$PY" benches/runtime/peer.py e2e --model "$d/int8_ort.onnx" --input "$WORK/val.yuyv" --size 480x360 \
        --threads "$THREADS" --out "$d/peer_int8.json"
done

step "median single-frame inference latency of every cell (criterion bench engines_latency)"
rm -rf target/criterion/engines
EDGE_SEG_ENGINES_WORK=$WORK EDGE_SEG_ENGINES_MODELS="${MODELS[*]}" EDGE_SEG_ENGINES_THREADS=$THREADS \
    cargo bench -p edge-seg-benches --bench engines_latency -- --noplot > "$WORK/engines_latency.log" 2>&1 \
    || { tail -n 20 "$WORK/engines_latency.log" >&2; exit 1; }
grep -E "^engines|time:|warning" "$WORK/engines_latency.log" || true

step "records"
NFRAMES=$(( $(stat -c %s "$WORK/val.yuyv") / (480 * 360 * 2) ))
"$PY" benches/engines/records.py --work "$WORK" --results "$RESULTS" --command "$COMMAND" \
    --split "$(basename "$DATA") val as YUYV 480x360 ($NFRAMES frames)" --models "${MODELS[@]}" \
    --criterion target/criterion/engines
echo "raw stats kept in $WORK; total $(( $(date +%s) - T0 )) s"

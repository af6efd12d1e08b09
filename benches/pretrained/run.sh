#!/usr/bin/env bash
# Issue #21 measurements in one command, written to docs/results/pretrained.json:
#   export   the trained run -> ONNX (BN folded) + candle-vs-tract parity (parity_max_abs_diff)
#   eval     val mIoU of the f32 model in edge-seg/tract (default_val_miou)
#   quantize int8 per-channel (onnxruntime target) evaluated in onnxruntime
#            (default_int8_val_miou, beside default_ort_f32_val_miou) and int8 per-tensor
#            (tract target) evaluated in tract (default_int8_pertensor_val_miou)
#   count    default_params, default_gflops (benches/pretrained/record.py)
#   step     one training step of the Lite0 net, ours vs PyTorch (pip, 2 threads) in the same
#            run: train_step_ms, torch_train_step_ms, ratio. Nothing else should run meanwhile.
#   golden   the Lite0 ImageNet logits vs PyTorch's (imagenet_logits_max_abs_diff; needs the
#            weights: edge-seg-train fetch-pretrained)
#   student  the same run exported at --student-size (the edge student: Lite0 at a lower
#            resolution) to --student-out: student_val_miou (edge-seg eval), and
#            student_e2e_fps: `edge-seg run` on CamVid val as a 480x360 YUYV recording
#            (the camera path), throughput mode, 2 threads, the fastest backend (auto), drawn
#            to a 480x360x32 framebuffer file as in benches/runtime
#
#   --f16    export --out with its weights stored as f16 (`export --f16-weights`: half the
#            file; edge-seg reads the weights back as f32; other runtimes run its Cast nodes)
#
#   bash benches/pretrained/run.sh [--run runs/lite0] [--out assets/models/camvid-lite0.onnx]
#        [--input-size HxW] [--f16] [--student-out assets/models/camvid-lite0-student.onnx]
#        [--student-size 240x320] [--data ../shared/data/camvid]
#        [--results docs/results/pretrained.json]
#        [--parts export,eval,quantize,count,step,golden,student] [--steps 10]
set -euo pipefail
ORIG_ARGS="$*"
RUN=runs/lite0
OUT=assets/models/camvid-lite0.onnx
DATA=../shared/data/camvid
RESULTS=docs/results/pretrained.json
PARTS=export,eval,quantize,count,step,golden
STEPS=10
INPUT_SIZE=
F16=
STUDENT_OUT=assets/models/camvid-lite0-student.onnx
STUDENT_SIZE=240x320
WORK=target/pretrained-bench
PY=${PYTHON:-python3}
usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --run) RUN=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --parts) PARTS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --input-size) INPUT_SIZE=$2; shift 2 ;;
        --f16) F16=--f16-weights; shift ;;
        --student-out) STUDENT_OUT=$2; shift 2 ;;
        --student-size) STUDENT_SIZE=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/../.."
source benches/common.sh
CMD="bash benches/pretrained/run.sh $ORIG_ARGS"
has() { [[ ",$PARTS," == *",$1,"* ]]; }
mkdir -p "$WORK"
step "build (release)"
cargo build --release --locked -q -p edge-seg-trainer -p edge-seg-runtime
TRAIN=target/release/edge-seg-train
EDGE=target/release/edge-seg

if has export; then
    step "export $RUN -> $OUT"
    "$TRAIN" export --run "$RUN" --checkpoint last --out "$OUT" --record "$RESULTS" ${INPUT_SIZE:+--input-size "$INPUT_SIZE"} $F16
fi
if has eval; then
    step "val mIoU in edge-seg (tract)"
    "$EDGE" eval --backend tract --model "$OUT" --data "$DATA" --split val --record "$RESULTS" \
        --record-name default_val_miou
fi
if has quantize; then
    require_peer_python run.sh
    CALIB=$WORK/calib
    rm -rf "$CALIB"
    calib_frames "$DATA" "$CALIB"
    step "int8 per-channel (onnxruntime target) and per-tensor (tract target)"
    "$EDGE" quantize --model "$OUT" --calib "$CALIB" --out "$WORK/pc.onnx" --per-channel --target onnxruntime
    "$EDGE" quantize --model "$OUT" --calib "$CALIB" --out "$WORK/pt.onnx" --target tract
    "$EDGE" eval --backend tract --model "$WORK/pt.onnx" --data "$DATA" --split val --record "$RESULTS" \
        --record-name default_int8_pertensor_val_miou
    for m in pc f32; do
        f=$WORK/$m.onnx; [[ $m == f32 ]] && f=$OUT
        "$PY" benches/quantize/peer.py eval --model "$f" --data "$DATA" --split val --out "$WORK/eval_$m.json"
    done
    "$PY" benches/pretrained/record.py ort --eval "$WORK/eval_pc.json" --name default_int8_val_miou \
        --results "$RESULTS" --command "$CMD"
    "$PY" benches/pretrained/record.py ort --eval "$WORK/eval_f32.json" --name default_ort_f32_val_miou \
        --results "$RESULTS" --command "$CMD"
fi
if has count; then
    step "parameters and GFLOPs"
    "$PY" benches/pretrained/record.py count --model "$OUT" --results "$RESULTS" --command "$CMD"
fi
if has step; then
    warn_if_loaded "the step times below are not clean"
    step "one training step: ours vs PyTorch ($STEPS steps each)"
    "$TRAIN" fetch-pretrained --variant lite0 > /dev/null
    "$TRAIN" bench-step --config trainer/configs/camvid_lite0.toml --batch 8 --crop 256 \
        --steps "$STEPS" --warmup 2 --json "$WORK/step_rust.json"
    "$PY" benches/pretrained/torch_step.py --variant lite0 --batch 8 --crop 256 --steps "$STEPS" \
        --warmup 2 --threads 2 --json "$WORK/step_torch.json"
    "$PY" benches/pretrained/record.py step --rust "$WORK/step_rust.json" --torch "$WORK/step_torch.json" \
        --results "$RESULTS" --command "$CMD"
fi
if has golden; then
    step "ImageNet logits vs PyTorch"
    EDGE_SEG_REQUIRE_PRETRAINED=1 EDGE_SEG_RECORD_GOLDEN=$PWD/$RESULTS \
        cargo test --release --locked -q -p seg-nn --test pretrained issue21_lite0_imagenet_logits_match_pytorch
fi
if has student; then
    require_peer_python run.sh
    step "edge student: $RUN at $STUDENT_SIZE -> $STUDENT_OUT"
    "$TRAIN" export --run "$RUN" --checkpoint last --out "$STUDENT_OUT" --input-size "$STUDENT_SIZE"
    "$EDGE" eval --backend tract --model "$STUDENT_OUT" --data "$DATA" --split val --record "$RESULTS" \
        --record-name student_val_miou
    "$PY" benches/runtime/peer.py record --data "$DATA" --split val --out "$WORK/val.yuyv"
    warn_if_loaded "the FPS below is not clean"
    "$EDGE" run --model "$STUDENT_OUT" --input "$WORK/val.yuyv" --size 480x360 --drop wait --threads 2 \
        --display "fb:$WORK/student_fb" --fb-geometry 480x360x32 --stats "$WORK/student_e2e.jsonl" | tail -n 3
    "$PY" benches/pretrained/record.py fps --stats "$WORK/student_e2e.jsonl" --name student_e2e_fps \
        --split "$(basename "$DATA") val as YUYV 480x360" --results "$RESULTS" --command "$CMD"
fi
step "done: $RESULTS"

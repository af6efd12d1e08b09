#!/usr/bin/env bash
# The CUDA checks of issue #28, on a machine with an NVIDIA GPU and the CUDA 13 user-space
# libraries (cuBLAS, cuRAND, NVRTC, the runtime: NVIDIA's pip packages, as PyTorch cu13x installs
# them). The binary is built elsewhere by firmware-configs/scripts/cuda-build.sh --release.
#   parity   edge-seg-train parity --device cuda: the Lite0 net from ImageNet weights with the same
#            weights and seeded input on CPU and GPU; evaluation-mode logits (2x360x480) and one
#            training step's loss and every gradient compared
#   step     one training step (forward, backward, SGD) of the Lite0 net on GPU, ours
#            (bench-step --device cuda) vs PyTorch (torch_step.py --device cuda) in the same
#            run, batch 8 of 256x256 crops (the CPU benchmark's shape) and batch 32
#   train    edge-seg-train train on the GPU: trainer/configs/xseqt_suponly.toml (SupOnly,
#            17 labeled frames, 600 steps; its CPU run is in docs/results/semi.json), exported
#            to ONNX for evaluation on the CPU machine (edge-seg eval on the full eval split)
#   semi     issue #25 on the GPU: the xseq-target 1/16 seed 0 runs of SEMI_METHODS (default
#            "suponly mt_dars"; trainer/configs/xseqt_<m>.toml, 600 steps, evaluated on the full
#            51-frame split every 100 steps) trained concurrently, one process each, with the GPU's
#            utilisation sampled each second (semi/gpu_util.csv); each run's last checkpoint is
#            exported to semi/<m>_1_16_s0_gpu.onnx. --data must hold the unlabeled pool
#            (prepare.sh --semi). Collected here by benches/semi/pretrained.py --collect --prefix gpu_
# Records go to --results (merged by name); raw JSON and logs to --work.
#
#   bash benches/gpu/run.sh --bin BIN --data DATA --weights DIR [--work DIR]
#        [--results docs/results/cuda.json] [--parts parity,step,train,semi] [--steps 20]
#        [--train-eval SPLIT]
set -euo pipefail
ORIG_ARGS="$*"
BIN=
DATA=
WEIGHTS=
WORK=target/gpu-bench
RESULTS=docs/results/cuda.json
PARTS=parity,step,train
STEPS=20
TRAIN_EVAL=
PY=${PYTHON:-python3}
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) BIN=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --weights) WEIGHTS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --parts) PARTS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --train-eval) TRAIN_EVAL=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
cd "$(dirname "$0")/../.."
for v in BIN DATA WEIGHTS; do
    [[ -n ${!v} ]] || { echo "run.sh: --${v,,} is required" >&2; exit 2; }
done
[[ -x $BIN ]] || { echo "run.sh: --bin $BIN: not an executable" >&2; exit 2; }
source benches/common.sh
CMD="bash benches/gpu/run.sh $ORIG_ARGS"
has() { [[ ",$PARTS," == *",$1,"* ]]; }
mkdir -p "$WORK"
export EDGE_SEG_PRETRAINED_CACHE=$WEIGHTS

step "CUDA libraries"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$WORK/gpu.txt"
# the pip packages' library folders (nvidia/cu13/lib or nvidia/<lib>/lib), then the driver's
SITE=$("$PY" -c 'import site; print(" ".join(site.getsitepackages()))')
LIBDIRS=$(for s in $SITE; do find "$s/nvidia" -name 'lib*.so*' \( -name 'libcublas*' -o -name 'libcurand*' \
    -o -name 'libnvrtc*' -o -name 'libcudart*' \) 2>/dev/null; done | xargs -r -n1 dirname | sort -u | tr '\n' ':' || true)
export LD_LIBRARY_PATH=${LIBDIRS}/usr/local/nvidia/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
if ldd "$BIN" | grep 'not found'; then
    echo "run.sh: $BIN: libraries not found (above)" >&2
    exit 2
fi

if has parity; then
    step "parity: CUDA vs CPU"
    rm -f "$WORK/parity.json"
    "$BIN" parity --config trainer/configs/camvid_lite0.toml --imagenet --device cuda --batch 2 \
        --size 360x480 --json "$WORK/parity.json"
fi
if has step; then
    step "training step on the GPU: ours vs PyTorch ($STEPS steps each)"
    rm -f "$WORK"/step_*.json
    for b in 8 32; do
        # a failed batch size leaves the other's figures (recorded below) standing
        "$BIN" bench-step --config trainer/configs/camvid_lite0.toml --imagenet --device cuda \
            --batch "$b" --crop 256 --steps "$STEPS" --warmup 3 --json "$WORK/step_rust_b$b.json" &&
            "$PY" benches/pretrained/torch_step.py --variant lite0 --device cuda --batch "$b" --crop 256 \
                --steps "$STEPS" --warmup 3 --threads 4 --json "$WORK/step_torch_b$b.json" ||
            echo "run.sh: the batch-$b step timing failed" >&2
    done
fi
if has train; then
    step "train on the GPU: xseqt SupOnly 1/16 seed 0 (600 steps)"
    rm -rf "$WORK/suponly" "$WORK/suponly_gpu.onnx"
    CFG=trainer/configs/xseqt_suponly.toml
    if [[ -n $TRAIN_EVAL ]]; then
        # a shorter in-training evaluation split (the exported model is evaluated on the full one)
        sed "s|^val_split = .*|val_split = \"$TRAIN_EVAL\"|" "$CFG" > "$WORK/suponly.toml"
        CFG=$WORK/suponly.toml
    fi
    "$BIN" train --config "$CFG" --data "$DATA" --out "$WORK/suponly" --no-progress
    "$BIN" export --run "$WORK/suponly" --checkpoint last --out "$WORK/suponly_gpu.onnx"
fi
if has semi; then
    METHODS=${SEMI_METHODS:-suponly mt_dars}
    step "semi-supervised on the GPU: xseqt 1/16 seed 0 of $METHODS, concurrently"
    rm -rf "$WORK/semi"
    mkdir -p "$WORK/semi"
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$WORK/semi/gpu_util.csv" &
    SMI=$!
    pids=()
    for m in $METHODS; do
        name=${m}_1_16_s0
        [[ -f trainer/configs/xseqt_$m.toml ]] || { echo "run.sh: SEMI_METHODS: no trainer/configs/xseqt_$m.toml" >&2; exit 2; }
        sed "s|^val_split = .*|val_split = \"${TRAIN_EVAL:-splits/camvid-xseq-target/eval.txt}\"|" \
            "trainer/configs/xseqt_$m.toml" > "$WORK/semi/$name.toml"
        (
            s0=$(date +%s)
            "$BIN" train --config "$WORK/semi/$name.toml" --data "$DATA" --out "$WORK/semi/$name" --no-progress \
                && echo "{\"wall_s\": $(( $(date +%s) - s0 ))}" > "$WORK/semi/$name/done.json" \
                && "$BIN" export --run "$WORK/semi/$name" --checkpoint last --out "$WORK/semi/${name}_gpu.onnx"
        ) > "$WORK/semi/$name.log" 2>&1 &
        pids+=($!)
    done
    rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    kill "$SMI" 2>/dev/null || true
    tail -n 3 "$WORK"/semi/*.log
    [[ $rc == 0 ]] || echo "run.sh: a semi run failed (its log above)" >&2
fi
step "records -> $RESULTS"
"$PY" benches/gpu/record.py --work "$WORK" --results "$RESULTS" --command "$CMD" --parts "$PARTS" \
    ${TRAIN_EVAL:+--train-eval "$TRAIN_EVAL"}

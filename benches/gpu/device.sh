#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, as `bash <folder>/device.sh`, where <folder>
# is what benches/gpu/prepare.sh made (.gpu by default): unpacks the CUDA binary and the weights
# and runs benches/gpu/run.sh part by part (a failed part does not stop the next), each under a
# time limit. Parts: PARTS (default parity,step); WITH_TRAIN=1 adds train, SEMI=1 adds semi
# (needs prepare.sh --semi). The records go to /tmp/gw/cuda.json (starting from
# <folder>/cuda_prev.json when present), the files worth bringing back to $OUT (or /tmp/gw/out).
set -o pipefail
G=$(dirname "$0")  # the prepared folder (.gpu, or prepare.sh --out)
W=/tmp/gw
OUTDIR=${OUT:-$W/out}
mkdir -p "$W/cache" "$OUTDIR"
[[ -f $G/cuda_prev.json ]] && cp "$G/cuda_prev.json" "$W/cuda.json"
unxz() { python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$1" "$2"; }
unxz "$G/edge-seg-train.xz" /tmp/edge-seg-train
chmod +x /tmp/edge-seg-train
for w in "$G"/cache/*.pth.xz; do unxz "$w" "$W/cache/$(basename "${w%.xz}")"; done
A=(--bin /tmp/edge-seg-train --data "$G/camvid" --weights "$W/cache" --work "$W" --results "$W/cuda.json"
    --train-eval "$G/eval_short.txt" --steps 20)
PARTS=${PARTS:-parity,step}
[[ -n ${WITH_TRAIN:-} ]] && PARTS=$PARTS,train
[[ -n ${SEMI:-} ]] && PARTS=$PARTS,semi
declare -A LIMIT=([parity]=90 [step]=120 [train]=${TRAIN_TIMEOUT:-240} [semi]=${SEMI_TIMEOUT:-540})
for part in ${PARTS//,/ }; do
    timeout "${LIMIT[$part]:-60}" bash benches/gpu/run.sh "${A[@]}" --parts "$part" || echo "PART $part FAILED rc=$?"
done
cp "$W/cuda.json" "$W/parity.json" "$W/suponly_gpu.onnx" "$OUTDIR"/ 2>/dev/null
cp "$W/suponly/metrics.jsonl" "$OUTDIR"/ 2>/dev/null
(cd "$W" && tar cf "$OUTDIR/steps.tar" step_*.json gpu.txt 2>/dev/null)
# semi: each run's metrics, resolved config and log (no checkpoints: over the size the tool returns)
(cd "$W" && tar cf "$OUTDIR/semi.tar" semi/*.log semi/*.toml semi/*.csv semi/*/metrics.jsonl semi/*/*.toml \
    semi/*/done.json gpu.txt 2>/dev/null)
cp "$W"/semi/*_gpu.onnx "$OUTDIR"/ 2>/dev/null
ls -la "$OUTDIR"

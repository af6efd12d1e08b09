#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, as `bash <folder>/device.sh`, where <folder>
# is what benches/gpu/prepare.sh made (.gpu by default): unpacks the CUDA binary and runs
# benches/gpu/run.sh part by part (a failed part does not stop the next), each under a time limit;
# WITH_TRAIN=1 adds the training run. The records go to /tmp/gw/cuda.json (starting from
# <folder>/cuda_prev.json when present), the files worth bringing back to $OUT (or /tmp/gw/out).
set -o pipefail
G=$(dirname "$0")  # the prepared folder (.gpu, or prepare.sh --out)
W=/tmp/gw
OUTDIR=${OUT:-$W/out}
mkdir -p "$W" "$OUTDIR"
[[ -f $G/cuda_prev.json ]] && cp "$G/cuda_prev.json" "$W/cuda.json"
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open('/tmp/edge-seg-train', 'wb'))" "$G/edge-seg-train.xz"
chmod +x /tmp/edge-seg-train
A=(--bin /tmp/edge-seg-train --data "$G/camvid" --weights "$G/cache" --work "$W" --results "$W/cuda.json"
    --train-eval "$G/eval_short.txt" --steps 20)
timeout 90 bash benches/gpu/run.sh "${A[@]}" --parts parity || echo "PART parity FAILED rc=$?"
timeout 120 bash benches/gpu/run.sh "${A[@]}" --parts step || echo "PART step FAILED rc=$?"
if [[ -n ${WITH_TRAIN:-} ]]; then
    timeout "${TRAIN_TIMEOUT:-240}" bash benches/gpu/run.sh "${A[@]}" --parts train || echo "PART train FAILED rc=$?"
fi
cp "$W/cuda.json" "$W/parity.json" "$W/suponly_gpu.onnx" "$OUTDIR"/ 2>/dev/null
cp "$W/suponly/metrics.jsonl" "$OUTDIR"/ 2>/dev/null
(cd "$W" && tar cf "$OUTDIR/steps.tar" step_*.json gpu.txt 2>/dev/null)
ls -la "$OUTDIR"

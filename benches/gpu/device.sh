#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with the folder benches/gpu/prepare.sh made
# in .gpu/: unpacks the CUDA binary and runs benches/gpu/run.sh part by part (a failed part
# does not stop the next), each under a time limit; WITH_TRAIN=1 adds the training run. The
# records go to /tmp/gw/cuda.json (merged into .gpu/cuda_prev.json when present), the files
# worth bringing back to $OUT (or /tmp/gw/out).
set -o pipefail
W=/tmp/gw
OUTDIR=${OUT:-$W/out}
mkdir -p "$W" "$OUTDIR"
[[ -f .gpu/cuda_prev.json ]] && cp .gpu/cuda_prev.json "$W/cuda.json"
python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('.gpu/edge-seg-train.xz'), open('/tmp/edge-seg-train', 'wb'))"
chmod +x /tmp/edge-seg-train
A=(--bin /tmp/edge-seg-train --data .gpu/camvid --weights .gpu/cache --work "$W" --results "$W/cuda.json"
    --train-eval .gpu/eval_short.txt --steps 20)
timeout 90 bash benches/gpu/run.sh "${A[@]}" --parts parity || echo "PART parity FAILED rc=$?"
timeout 120 bash benches/gpu/run.sh "${A[@]}" --parts step || echo "PART step FAILED rc=$?"
if [[ -n ${WITH_TRAIN:-} ]]; then
    timeout "${TRAIN_TIMEOUT:-240}" bash benches/gpu/run.sh "${A[@]}" --parts train || echo "PART train FAILED rc=$?"
fi
cp "$W/cuda.json" "$W/parity.json" "$W/suponly_gpu.onnx" "$OUTDIR"/ 2>/dev/null
cp "$W/suponly/metrics.jsonl" "$OUTDIR"/ 2>/dev/null
(cd "$W" && tar cf "$OUTDIR/steps.tar" step_*.json gpu.txt 2>/dev/null)
ls -la "$OUTDIR"

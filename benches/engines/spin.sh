#!/usr/bin/env bash
# Issue #22: does `--no-spin` (onnxruntime's idle intra-op threads sleep instead of spinning)
# give the pipeline's other stages more of the 2 cores? `edge-seg run --backend ort --threads 2
# --drop wait` on CamVid val as a 480x360 YUYV recording, with and without the flag, alternating,
# --reps times each, for the default model and the torchvision LR-ASPP export; median end-to-end
# FPS and median inference ms written to docs/results/cpu_speed.json as
# `spin_e2e_fps_<model>_{spin,nospin}`, `spin_infer_ms_<model>_{spin,nospin}`. Idle machine only.
#
#   bash benches/engines/spin.sh [--data ../shared/data/camvid] [--reps 3]
#                                [--results docs/results/cpu_speed.json] [--work target/spin-bench]
set -euo pipefail
ORIG_ARGS="$*"
DATA=../shared/data/camvid
REPS=3
RESULTS=docs/results/cpu_speed.json
WORK=target/spin-bench
PY=${PYTHON:-python3}
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data) DATA=$2; shift 2 ;;
        --reps) REPS=$2; shift 2 ;;
        --results) RESULTS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "spin.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "spin.sh: --reps '$REPS': expected a positive integer" >&2; exit 2; }
cd "$(dirname "$0")/../.."
[[ -d $DATA/val ]] || { echo "spin.sh: $DATA has no val/ (CamVid layout)" >&2; exit 2; }
source benches/common.sh
require_peer_python spin.sh
"$PY" -c 'import torch, torchvision' 2>/dev/null || { echo "spin.sh: needs torch and torchvision (pip)" >&2; exit 2; }
warn_if_loaded "figures will be low"
cargo build --release --locked -q -p edge-seg-runtime --bin edge-seg
fresh_work "$WORK" .spin-bench
"$PY" benches/runtime/peer.py record --data "$DATA" --split val --limit 0 --out "$WORK/val.yuyv"
"$PY" benches/engines/export_torchvision.py --out "$WORK/torchvision.onnx" --classes 11 --size 360x480
cp assets/models/camvid-lite0.onnx "$WORK/default.onnx"
for rep in $(seq "$REPS"); do
    for m in default torchvision; do
        for v in spin nospin; do
            flag=()
            [[ $v == nospin ]] && flag=(--no-spin)
            step "rep $rep: $m, $v"
            target/release/edge-seg run --backend ort --threads 2 "${flag[@]}" --model "$WORK/$m.onnx" \
                --input "$WORK/val.yuyv" --size 480x360 --drop wait --stats "$WORK/${m}_${v}_$rep.jsonl" \
                >/dev/null 2>&1
        done
    done
done
"$PY" - "$WORK" "$REPS" "$RESULTS" "bash benches/engines/spin.sh${ORIG_ARGS:+ $ORIG_ARGS}" <<'PY'
import json, statistics, sys
from pathlib import Path
sys.path.insert(0, "benches")
from benchlib import merge_records, recorder
work, reps, results, command = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
recs, add = recorder(command, echo=True)
split = "camvid val as YUYV 480x360 (101 frames), ort, 2 threads, --drop wait"
for m in ("default", "torchvision"):
    for v in ("spin", "nospin"):
        fps, infer = [], []
        for r in range(1, reps + 1):
            lines = [json.loads(l) for l in (work / f"{m}_{v}_{r}.jsonl").read_text().splitlines()]
            fps.append([l["summary"] for l in lines if "summary" in l][-1]["fps"])
            infer.append(statistics.median(l["infer_ms"] for l in lines if "infer_ms" in l))
        add(f"spin_e2e_fps_{m}_{v}", statistics.median(fps), f"FPS (median of {reps})", split)
        add(f"spin_infer_ms_{m}_{v}", statistics.median(infer), f"ms (median of {reps} run medians)", split)
merge_records(results, recs)
PY

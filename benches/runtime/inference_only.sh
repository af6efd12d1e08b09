#!/usr/bin/env bash
# Issue #24: what an inference-only `edge-seg` (`--no-default-features`: without the `adapt`
# feature, so without candle, seg-nn and safetensors) saves against the default build. Measured
# deterministically: the size of the stripped release binary of each, and the number of distinct
# crates each compiles (`cargo tree -e normal`, host target). With --timed also the wall-clock time
# of each release build from an empty target folder of its own ($WORK/default, $WORK/inference-only;
# run it on an idle machine: on a shared CPU the times are not comparable). Without --timed the
# builds go to ./target (the default build last, so target/release/edge-seg keeps adaptation).
# Writes the records to docs/results/runtime.json (benches/benchlib.py merge_records).
#
#   bash benches/runtime/inference_only.sh [--timed] [--results docs/results/runtime.json]
#                                          [--work target/inference-only-bench]
set -euo pipefail

ORIG_ARGS="$*"
TIMED=0
RESULTS=docs/results/runtime.json
WORK=target/inference-only-bench
PY=${PYTHON:-python3}

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --timed) TIMED=1; shift ;;
        --results) RESULTS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "inference_only.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
COMMAND="bash benches/runtime/inference_only.sh${ORIG_ARGS:+ $ORIG_ARGS}"

[[ -f Cargo.toml && -d benches/runtime ]] || { echo "inference_only.sh: run from the repository root" >&2; exit 2; }
command -v strip > /dev/null || { echo "inference_only.sh: needs strip (binutils)" >&2; exit 2; }
# shellcheck source=../common.sh
source benches/common.sh
if [[ $TIMED == 1 ]]; then
    warn_if_loaded "build times will be high"
fi
fresh_work "$WORK" .inference-only-bench
ROWS=$WORK/records.tsv
: > "$ROWS"
row() { printf '%s\t%s\t%s\t%s\n' "$@" >> "$ROWS"; } # name value unit split

TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
# variant suffix cargo-flags...
measure() {
    local variant=$1 suffix=$2
    shift 2
    local target=target
    if [[ $TIMED == 1 ]]; then
        target=$WORK/$variant
    fi
    local flags=${*:+ $*} # " --no-default-features" or ""
    step "$variant: cargo build --release -p edge-seg-runtime --bin edge-seg$flags"
    local t0 t1
    t0=$(date +%s.%N)
    CARGO_TARGET_DIR=$target cargo build --release --locked -p edge-seg-runtime --bin edge-seg "$@"
    t1=$(date +%s.%N)
    strip -o "$WORK/edge-seg-$variant" "$target/release/edge-seg"
    local bytes crates
    bytes=$(stat -c %s "$WORK/edge-seg-$variant")
    crates=$(cargo tree --locked -p edge-seg-runtime -e normal --prefix none "$@" | sed 's/ (\*)//' | sort -u | wc -l)
    echo "  stripped: $bytes bytes; crates: $crates"
    echo "$bytes" > "$WORK/$variant.bytes"
    row "edge_seg_stripped_mib$suffix" "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" MiB \
        "release edge-seg, stripped (strip -o), $TRIPLE; cargo build --release -p edge-seg-runtime$flags"
    row "edge_seg_crates$suffix" "$crates" crates \
        "distinct crates: cargo tree -p edge-seg-runtime -e normal --prefix none$flags | sed 's/ (\\*)//' | sort -u | wc -l"
    if [[ $TIMED == 1 ]]; then
        row "edge_seg_release_build_s$suffix" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" s \
            "cargo build --release -p edge-seg-runtime --bin edge-seg$flags from an empty target folder, $(nproc) jobs"
    fi
}

measure inference-only _inference_only --no-default-features
measure default ""
saved=$(awk -v d="$(cat "$WORK/default.bytes")" -v i="$(cat "$WORK/inference-only.bytes")" \
    'BEGIN { print 100 * (d - i) / d }')
row edge_seg_stripped_saved_pct_inference_only "$saved" "%" \
    "stripped release edge-seg: (default - --no-default-features) / default, $TRIPLE"

step "records -> $RESULTS"
"$PY" - "$ROWS" "$RESULTS" "$COMMAND" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "benches")
from benchlib import merge_records, recorder  # noqa: E402

rows, results, command = sys.argv[1:]
recs, add = recorder(command, echo=True)
for line in Path(rows).read_text().splitlines():
    name, value, unit, split = line.split("\t")
    add(name, float(value), unit, split)
print(f"wrote {merge_records(results, recs)}")
EOF

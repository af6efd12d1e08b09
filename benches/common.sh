# Shared by benches/quantize/run.sh and benches/runtime/run.sh (sourced, after argument parsing).
#   require_peer_python NAME   exits 2 unless $PY imports the peer's packages
#   step MESSAGE               prints a section header with the seconds since sourcing
#   warn_if_loaded WHAT        warns on stderr when the 1-minute load average is above 0.5

require_peer_python() {
    "$PY" -c 'import onnxruntime, onnx, numpy, PIL' 2>/dev/null || {
        echo "$1: needs onnxruntime, onnx, numpy, pillow: pip install -r benches/quantize/requirements.txt" >&2
        exit 2
    }
}

T0=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - T0 ))s] $*"; }

warn_if_loaded() {
    local load1
    read -r load1 _ < /proc/loadavg
    if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
        echo "warning: load average $load1 — other processes compete for the CPU; $1" >&2
    fi
}

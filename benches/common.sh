# Shared by benches/quantize/run.sh and benches/runtime/run.sh (sourced, after argument parsing).
#   require_peer_python NAME   exits 2 unless $PY imports the peer's packages
#   step MESSAGE               prints a section header with the seconds since sourcing
#   warn_if_loaded WHAT        warns on stderr when the 1-minute load average is above 0.5
#   fresh_work DIR MARKER      empties DIR for a new run (only if it is empty or has MARKER, the
#                              file a previous run left; otherwise exits 2) and leaves MARKER
#   calib_frames DATA OUT      copies the int8 calibration set into OUT: 20 CamVid train frames,
#                              every 18th file of DATA/train sorted by name (deterministic)

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

fresh_work() {
    if [[ -d $1 && -n $(ls -A "$1") && ! -f $1/$2 ]]; then
        echo "run.sh: --work $1 exists and was not made by run.sh; not wiping it" >&2
        exit 2
    fi
    rm -rf "$1"
    mkdir -p "$1"
    touch "$1/$2"
}

calib_frames() {
    mkdir -p "$2"
    find "$1/train" -maxdepth 1 -type f \( -name '*.png' -o -name '*.jpg' \) | LC_ALL=C sort |
        awk 'NR % 18 == 1 && ++n <= 20' | while read -r f; do cp "$f" "$2/"; done
}

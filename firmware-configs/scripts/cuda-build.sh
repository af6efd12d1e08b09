#!/usr/bin/env bash
# Builds the trainer and the runtime with their `cuda` features (candle on CUDA through cudarc:
# the trainer, and the runtime's adaptation learner; issue #28) on a
# machine with no CUDA installation and no GPU, from NVIDIA's PyPI wheels, and records the
# outcome as `cuda_build_ok` in docs/results/jetson.json.
#
#   firmware-configs/scripts/cuda-build.sh [--release] [--results FILE]
#
# --release builds the release profile (the binary that `benches/gpu/run.sh` carries to a GPU).
#
# The known hurdles, and what this does about each:
#   versions     one CUDA release for every wheel: 13.0 (CUDA_WHEELS below). The CUDA 12 wheels
#                (nvidia-cuda-nvcc-cu12, up to 12.9) ship ptxas and libnvvm but no `nvcc` driver,
#                which candle-kernels' build script runs; the CUDA 13 wheels ship the whole
#                compiler (nvidia-cuda-nvcc + -crt + nvidia-nvvm) in one tree, nvidia/cu13/.
#                (JetPack 6 has CUDA 12.6, with nvcc, in /usr/local/cuda: on a Jetson build there.)
#   CUDA_ROOT    cudarc's build script finds the libraries under it, nvcc on PATH gives the
#                version (cudarc's `cuda-version-from-build-system`); CUDA_ROOT=$CUDA_DIR.
#   CUDA_COMPUTE_CAP  no GPU to ask (nvidia-smi): given, default 80 (PTX for sm_80 is JIT-compiled
#                on newer GPUs, e.g. 87 Orin, 90 H100/H200); Xavier (72) is not supported by CUDA 13.
#   unversioned .so names  the wheels ship libcublas.so.13 etc.; the linker wants libcublas.so:
#                symlinks in $CUDA_DIR/lib.
#   libcuda.so   the driver is in no wheel; cudarc links -lcuda. A stub (soname libcuda.so.1, every
#                cu* entry point cudarc declares, each returning CUDA_ERROR_STUB_LIBRARY) in
#                $CUDA_DIR/lib/stubs, for link time only: the binary needs the real driver's
#                libcuda.so.1 at run time.
# Afterwards it runs the CUDA binary without a driver, and with a stub driver library, and
# records how it fails (exit code, lines) with the build.
# Environment: CUDA_DIR (default /tmp/cuda-13.0), CUDA_WHEELS_DIR (/tmp/cuda-wheels-13.0),
# CARGO_TARGET_DIR (/tmp/cuda-target), CUDA_COMPUTE_CAP (80).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=docs/results/jetson.json
PROFILE=debug
while [[ $# -gt 0 ]]; do
    case "$1" in
        --release) PROFILE=release; shift ;;
        --results) RESULTS=$2; shift 2 ;;
        *) echo "cuda-build.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
CUDA_WHEELS=(
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.1.3
    nvidia-curand==10.4.0.35 nvidia-cuda-cccl==13.0.85
)
CUDA_DIR=${CUDA_DIR:-/tmp/cuda-13.0}
WHEELS=${CUDA_WHEELS_DIR:-/tmp/cuda-wheels-13.0}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/cuda-target}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-80}
LOG=$CARGO_TARGET_DIR/cuda-build.log
mkdir -p "$WHEELS" "$CARGO_TARGET_DIR"

echo "== CUDA from PyPI wheels into $CUDA_DIR"
python3 -m pip download --no-deps --only-binary=:all: -q -d "$WHEELS" "${CUDA_WHEELS[@]}"
rm -rf "$CUDA_DIR.tmp"
mkdir -p "$CUDA_DIR.tmp"
for w in "$WHEELS"/*.whl; do
    case $(basename "$w") in
        nvidia_cuda_nvcc-13.0.88-* | nvidia_cuda_crt-13.0.88-* | nvidia_nvvm-13.0.88-* | \
            nvidia_cuda_runtime-13.0.96-* | nvidia_cuda_nvrtc-13.0.88-* | nvidia_cublas-13.1.1.3-* | \
            nvidia_curand-10.4.0.35-* | nvidia_cuda_cccl-13.0.85-*)
            python3 -m zipfile -e "$w" "$CUDA_DIR.tmp/" ;;
    esac
done
rm -rf "$CUDA_DIR"
mv "$CUDA_DIR.tmp/nvidia/cu13" "$CUDA_DIR"
rm -rf "$CUDA_DIR.tmp"
chmod +x "$CUDA_DIR"/bin/* "$CUDA_DIR"/nvvm/bin/* 2>/dev/null || true
# unversioned names for the linker
for so in "$CUDA_DIR"/lib/lib*.so.[0-9]*; do
    base=$(basename "$so")
    name=${base%%.so.*}.so
    [[ $base == *.alt.* || -e $CUDA_DIR/lib/$name ]] || ln -s "$base" "$CUDA_DIR/lib/$name"
done
# the link-time libcuda stub, from the entry points cudarc declares
CUDARC=$(cargo metadata --locked --format-version 1 --features edge-seg-trainer/cuda 2>/dev/null \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); print(next(p["manifest_path"] for p in m["packages"] if p["name"]=="cudarc").rsplit("/",1)[0])')
mkdir -p "$CUDA_DIR/lib/stubs"
python3 - "$CUDARC/src/driver/sys/mod.rs" > "$CUDA_DIR/lib/stubs/libcuda-stub.c" <<'EOF'
import re, sys
names = sorted(set(re.findall(r"pub unsafe fn (cu\w+)\(", open(sys.argv[1]).read())))
print("/* link-time stand-in for the NVIDIA driver's libcuda.so.1 (no driver on this machine) */")
print("#define CUDA_ERROR_STUB_LIBRARY 34")
print('static const char *msg = "stub libcuda: no NVIDIA driver";')
for n in names:
    if n in ("cuGetErrorString", "cuGetErrorName"):
        print(f"int {n}(int e, const char **s) {{ (void)e; if (s) *s = msg; return 0; }}")
    else:
        print(f"int {n}(void) {{ return CUDA_ERROR_STUB_LIBRARY; }}")
EOF
gcc -shared -fPIC -w -Wl,-soname,libcuda.so.1 -o "$CUDA_DIR/lib/stubs/libcuda.so" "$CUDA_DIR/lib/stubs/libcuda-stub.c"
echo "stub: $(grep -c '^int ' "$CUDA_DIR/lib/stubs/libcuda-stub.c") entry points"

export CUDA_ROOT=$CUDA_DIR
export PATH=$CUDA_DIR/bin:$PATH
export LIBRARY_PATH=$CUDA_DIR/lib:$CUDA_DIR/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
NVCC_VERSION=$(nvcc --version | sed -n 's/^Cuda compilation tools, //p')
echo "nvcc: $NVCC_VERSION; CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP; gcc $(gcc -dumpfullversion)"

CMD="cargo build --locked -p edge-seg-trainer -p edge-seg-runtime --features edge-seg-trainer/cuda,edge-seg-runtime/cuda"
[[ $PROFILE == release ]] && CMD="$CMD --release"
echo "== $CMD (CARGO_TARGET_DIR=$CARGO_TARGET_DIR; log: $LOG)"
start=$(date +%s)
ok=0
if nice -n 10 $CMD > "$LOG" 2>&1; then
    ok=1
    echo "built in $(( $(date +%s) - start )) s: $CARGO_TARGET_DIR/$PROFILE/edge-seg-train, $CARGO_TARGET_DIR/$PROFILE/edge-seg"
else
    echo "FAILED after $(( $(date +%s) - start )) s; the last lines of $LOG:" >&2
    tail -n 25 "$LOG" >&2
fi

nodriver=""
if [[ $ok == 1 ]]; then
    BIN=$CARGO_TARGET_DIR/$PROFILE/edge-seg-train
    echo "== linked against: $(readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | grep -E 'cuda|cublas|curand|nvrtc|cudart' | tr '\n' ' ')"
    probe=$(mktemp -d)
    set +e
    # 1. no driver (no libcuda.so.1): the dynamic loader stops it before main, on one line
    out1=$(env -u RUST_BACKTRACE LD_LIBRARY_PATH="$CUDA_DIR/lib" "$BIN" --help 2>&1)
    rc1=$?
    # 2. a libcuda.so.1 that cannot drive a GPU (the stub, like NVIDIA's own stub library):
    #    `train` asks candle for GPU 0 and the trainer prints candle's error on one line
    mkdir -p "$probe/driver"
    ln -s "$CUDA_DIR/lib/stubs/libcuda.so" "$probe/driver/libcuda.so.1"
    out2=$(env -u RUST_BACKTRACE LD_LIBRARY_PATH="$CUDA_DIR/lib:$probe/driver" "$BIN" train \
        --config trainer/configs/camvid_baseline.toml --out "$probe/run" 2>&1)
    rc2=$?
    # 3. the runtime: inference needs no GPU; `--adapt` asks candle for GPU 0 and stops on one line
    out3=$(env -u RUST_BACKTRACE LD_LIBRARY_PATH="$CUDA_DIR/lib:$probe/driver" \
        "$CARGO_TARGET_DIR/$PROFILE/edge-seg" run --input docs/img/overlay.png --output "$probe/out" --adapt 2>&1)
    rc3=$?
    set -e
    rm -rf "$probe"
    n1=$(printf '%s\n' "$out1" | grep -c .)
    n2=$(printf '%s\n' "$out2" | grep -c .)
    n3=$(printf '%s\n' "$out3" | grep -c .)
    echo "no driver: exit $rc1, $n1 line(s): $out1"
    echo "stub driver, train: exit $rc2, $n2 line(s): $out2"
    echo "stub driver, edge-seg run --adapt: exit $rc3, $n3 line(s): $out3"
    nodriver="; without a driver: exit $rc1, $n1 line ($(printf '%s' "$out1" | head -n 1 | sed 's|^[^:]*: ||')); with a libcuda.so.1 stub, train: exit $rc2, $n2 line ($(printf '%s' "$out2" | head -n 1)); edge-seg run --adapt: exit $rc3, $n3 line ($(printf '%s' "$out3" | head -n 1))"
fi

cargo build --locked -q -p edge-seg-firmware --example record
"${CARGO_TARGET_DIR}/debug/examples/record" "$RESULTS" cuda_build_ok "$ok" "1/0" \
    "edge-seg-trainer and edge-seg-runtime --features cuda, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" \
    "firmware-configs/scripts/cuda-build.sh: $CMD with CUDA $NVCC_VERSION from PyPI wheels (${CUDA_WHEELS[*]}), gcc $(gcc -dumpfullversion), $(rustc -V | cut -d' ' -f1-2), no GPU (build only)$nodriver"
[[ $ok == 1 ]]

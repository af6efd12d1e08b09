#!/usr/bin/env bash
# Writes the Jetson records of docs/results/jetson.json (issue #28) from commands run here:
#   boards               shipped board files (firmware-configs/boards/) that `edge-seg image` turned
#                        into an overlay
#   image_files_written  files those overlays hold, all boards together (without --binary: no
#                        aarch64 binary can be built on a machine without the aarch64 std)
#   unit_verified        1 when `systemd-analyze verify` accepts every board's units with no
#                        warning (in a root of the host's units, the overlay and stand-ins for the
#                        Jetson-only programs), 0 otherwise or when systemd-analyze is missing
#   aarch64_tree_ok      1 when firmware-configs/scripts/cross-build.sh --check-only passes: the
#                        dependency tree resolves for aarch64-unknown-linux-gnu, no build script
#                        needs a sysroot or runs target code, no SIMD without a portable path
# cuda_build_ok is written by firmware-configs/scripts/cuda-build.sh.
# Usage: firmware-configs/scripts/results.sh [--results FILE]
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=docs/results/jetson.json
[[ ${1:-} == --results ]] && RESULTS=$2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SELF=firmware-configs/scripts/results.sh
nice -n 5 cargo build --locked -q -p edge-seg-runtime --bin edge-seg
nice -n 5 cargo build --locked -q -p edge-seg-firmware --example record
EDGE=target/debug/edge-seg
record() { target/debug/examples/record "$RESULTS" "$@"; }

analyze=$(command -v systemd-analyze || true)
host_units=""
for d in /usr/lib/systemd/system /lib/systemd/system; do
    [[ -f $d/sysinit.target ]] && { host_units=$d; break; }
done
boards=0 files=0 verified=1 names=()
for f in firmware-configs/boards/*.toml; do
    b=$(basename "$f" .toml)
    "$EDGE" image --board "$b" --model assets/models/camvid-lite0.onnx --out "$WORK/$b" > "$WORK/$b.log"
    n=$(grep -vc '^#' "$WORK/$b/edge-seg-image.manifest")
    boards=$((boards + 1))
    files=$((files + n))
    names+=("$b")
    echo "$b: overlay of $n files"
    if [[ -z $analyze || -z $host_units ]]; then
        verified=0
        continue
    fi
    root=$WORK/$b/rootfs
    mkdir -p "$root/usr/lib/systemd" "$root/usr/local/bin" "$root/sbin" "$root/usr/bin"
    cp -a "$host_units" "$root/usr/lib/systemd/system"
    # stand-ins for what exists only on the board: the aarch64 binary, v4l2loopback's modprobe,
    # GStreamer (nvpmodel is an ExecStartPre=- command, which verify does not require)
    for s in usr/local/bin/edge-seg sbin/modprobe usr/bin/gst-launch-1.0; do
        printf '#!/bin/sh\n' > "$root/$s"
        chmod 755 "$root/$s"
    done
    units=(/etc/systemd/system/edge-seg.service)
    [[ -f $root/etc/systemd/system/edge-seg-camera.service ]] && units+=(/etc/systemd/system/edge-seg-camera.service)
    if log=$("$analyze" verify --root="$root" "${units[@]}" 2>&1) && [[ -z $log ]]; then
        echo "$b: systemd-analyze verify: ${#units[@]} unit(s) OK"
    else
        echo "$b: systemd-analyze verify FAILED: $log" >&2
        verified=0
    fi
done
if [[ -z $analyze ]]; then
    echo "systemd-analyze is not installed (apt-get install systemd): unit_verified = 0" >&2
    vcmd="$SELF (systemd-analyze not installed)"
else
    vcmd="$SELF: $("$analyze" --version | head -n 1) verify --root=<host units + overlay> edge-seg.service [edge-seg-camera.service], ${#names[@]} boards"
fi

checks=0
if firmware-configs/scripts/cross-build.sh --check-only > "$WORK/cross.log" 2>&1; then
    checks=1
fi
sed -n 's/^== summary: /cross-build.sh --check-only: /p' "$WORK/cross.log"

split="shipped boards: ${names[*]}"
record boards "$boards" boards "$split" "$SELF: edge-seg image --board NAME --model assets/models/camvid-lite0.onnx --out DIR, for every firmware-configs/boards/NAME.toml"
record image_files_written "$files" files "$split" "$SELF: edge-seg image (no --binary) per board; lines of each edge-seg-image.manifest, summed"
record unit_verified "$verified" "1/0" "$split" "$vcmd"
record aarch64_tree_ok "$checks" "1/0" "aarch64-unknown-linux-gnu, edge-seg-runtime" "firmware-configs/scripts/cross-build.sh --check-only (cargo tree --target aarch64-unknown-linux-gnu -p edge-seg-runtime; build scripts; SIMD); the build itself not run: no aarch64 std here"

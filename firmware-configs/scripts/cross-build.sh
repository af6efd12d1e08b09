#!/usr/bin/env bash
# Cross-builds the aarch64 `edge-seg` for Jetson boards (issue #28):
#
#   cargo build --release --locked --target aarch64-unknown-linux-gnu -p edge-seg-runtime
#   -> target/aarch64-unknown-linux-gnu/release/edge-seg   (for `edge-seg image --binary`)
#
# It needs the aarch64 Rust standard library (`rustup target add aarch64-unknown-linux-gnu`) and
# Debian's cross compiler (`apt-get install gcc-aarch64-linux-gnu`: the linker named in
# .cargo/config.toml, and the assembler tract-linalg's build script uses for its aarch64 kernels).
# Where the target's standard library is missing, it says so plainly, builds nothing, and runs
# the checks that need no aarch64 standard library:
#   1. the dependency tree resolves for the target (cargo tree --target ...);
#   2. build scripts: the only ones that compile C or assembly for the target are the reviewed
#      ones (tract-linalg, through the `cc` crate, which picks aarch64-linux-gnu-gcc for this
#      target or CC_aarch64_unknown_linux_gnu), and none runs a program other than rustc (no
#      target code run at build time, no sysroot needed);
#   3. hand-written SIMD (std::arch, core::arch, target_feature, _mm* intrinsics) in our crates
#      sits behind cfg(target_arch) with a portable path.
#
# Usage: firmware-configs/scripts/cross-build.sh [--check-only]
# Writes target/jetson/aarch64-checks.env (tree_ok, build_scripts_ok, simd_ok, built).
# Exit: 0 when the checks pass (and the build, when it ran, succeeded), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=aarch64-unknown-linux-gnu
CHECK_ONLY=0
[[ ${1:-} == --check-only ]] && CHECK_ONLY=1
OUT=target/jetson
mkdir -p "$OUT"
fail=0

echo "== 1. dependency tree for $TARGET"
tree_ok=0
if nice -n 5 cargo tree --locked --target "$TARGET" -p edge-seg-runtime -e normal,build > "$OUT/aarch64-tree.txt"; then
    tree_ok=1
    n=$(nice -n 5 cargo tree --locked --target "$TARGET" -p edge-seg-runtime -e normal,build --prefix none \
        | sed 's/ (\*)$//' | sort -u | wc -l)
    echo "ok: $n packages ($OUT/aarch64-tree.txt)"
else
    echo "FAILED: cargo tree --target $TARGET" >&2
    fail=1
fi

echo "== 2. build scripts of the target's dependencies"
# reviewed: these compile C/assembly for the target through the cc crate (esaxx-rs only with its
# `cpp` feature, which is off: checked below)
CC_REVIEWED=" tract-linalg "
# reviewed: commands other than rustc, each gated to other targets (libc: freebsd-version on
# FreeBSD, emcc on Emscripten)
CMD_REVIEWED=" libc "
build_scripts_ok=0
if nice -n 5 cargo metadata --locked --format-version 1 --filter-platform "$TARGET" > "$OUT/aarch64-metadata.json"; then
    status=0
    python3 - "$OUT/aarch64-metadata.json" "$CC_REVIEWED" "$CMD_REVIEWED" > "$OUT/aarch64-build-scripts.txt" <<'EOF' || status=$?
import json, re, sys
meta, cc_ok, cmd_ok = json.load(open(sys.argv[1])), sys.argv[2].split(), sys.argv[3].split()
pk = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = next(i for i, p in pk.items() if p["name"] == "edge-seg-runtime")
seen, stack = set(), [root]
while stack:  # normal and build dependencies, not dev
    i = stack.pop()
    if i in seen:
        continue
    seen.add(i)
    for d in nodes[i]["deps"]:
        if any(k["kind"] in (None, "build") for k in d["dep_kinds"]):
            stack.append(d["pkg"])
bad = 0
for i in sorted(seen, key=lambda i: pk[i]["name"]):
    p = pk[i]
    for t in p["targets"]:
        if "custom-build" not in t["kind"]:
            continue
        src = open(t["src_path"]).read()
        # a build script may be split over files of its folder
        import os
        d = os.path.dirname(t["src_path"])
        if os.path.basename(d) == "build":
            for f in os.listdir(d):
                if f.endswith(".rs"):
                    src += open(os.path.join(d, f)).read()
        cc = "cc::Build" in src or "cc::windows_registry" in src
        feats = nodes[i]["features"]
        if p["name"] == "esaxx-rs" and "cpp" not in feats:
            cc = False  # its build.rs compiles C++ only under cfg(feature = "cpp")
        cmds = sorted(set(re.findall(r"Command::new\(([^()]*(?:\([^()]*\))?[^()]*)\)", src)))
        other = [c for c in cmds if not re.search(r"rustc|RUSTC|wrapper", c)]
        verdict = "ok"
        if cc and p["name"] not in cc_ok:
            verdict, bad = "REVIEW: compiles C for the target", bad + 1
        if other and p["name"] not in cmd_ok:
            verdict, bad = f"REVIEW: runs {', '.join(other)}", bad + 1
        notes = []
        if cc:
            notes.append("cc (cross C compiler)")
        if cmds:
            notes.append("runs " + ", ".join(cmds))
        print(f"{p['name']} {p['version']}: {verdict}{' (' + '; '.join(notes) + ')' if notes else ''}")
print(f"{len(seen)} packages; {bad} build scripts to review")
sys.exit(1 if bad else 0)
EOF
    grep -E "REVIEW|cc \(|packages;" "$OUT/aarch64-build-scripts.txt" || true
    if [[ $status == 0 ]]; then build_scripts_ok=1; else fail=1; fi
else
    echo "FAILED: cargo metadata --filter-platform $TARGET" >&2
    fail=1
fi

echo "== 3. hand-written SIMD in our crates"
simd_ok=1
files=$(grep -rlE "std::arch|core::arch|target_feature|_mm(256|512)?_[a-z]|is_(x86|aarch64)_feature_detected" \
    --include='*.rs' crates edge-runtime trainer quantize firmware-configs 2>/dev/null | grep -v '^firmware-configs/scripts/' || true)
if [[ -z $files ]]; then
    echo "ok: none (std::arch, core::arch, target_feature, _mm* intrinsics): every kernel is portable Rust"
else
    for f in $files; do
        if grep -qE "cfg\((all\()?target_arch" "$f" && grep -qE "cfg\(not\((any\()?target_arch|cfg\(not\(all\(target_arch" "$f"; then
            echo "ok: $f (behind cfg(target_arch), with a not(target_arch) path)"
        else
            echo "FAILED: $f uses SIMD intrinsics without a cfg(not(target_arch)) fallback" >&2
            simd_ok=0
            fail=1
        fi
    done
fi

echo "== 4. the build"
built=0
sysroot=$(rustc --print sysroot)
if [[ $CHECK_ONLY == 1 ]]; then
    echo "skipped: --check-only"
elif ! [[ -d $sysroot/lib/rustlib/$TARGET/lib ]] && ! (command -v rustup > /dev/null && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"); then
    echo "SKIPPED, NOT BUILT: this Rust ($(rustc -V)) has no standard library for $TARGET"
    echo "  (no $sysroot/lib/rustlib/$TARGET). Where it can be installed:"
    echo "    rustup target add $TARGET && apt-get install gcc-aarch64-linux-gnu"
    echo "  then rerun this script. Checks 1-3 above ran without it."
elif ! command -v aarch64-linux-gnu-gcc > /dev/null; then
    echo "SKIPPED, NOT BUILT: no aarch64-linux-gnu-gcc (the linker in .cargo/config.toml): apt-get install gcc-aarch64-linux-gnu"
else
    export CC_aarch64_unknown_linux_gnu=${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}
    export AR_aarch64_unknown_linux_gnu=${AR_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-ar}
    if nice -n 5 cargo build --release --locked --target "$TARGET" -p edge-seg-runtime; then
        built=1
        echo "built target/$TARGET/release/edge-seg: edge-seg image --board NAME --model M.onnx --out DIR --binary target/$TARGET/release/edge-seg"
    else
        echo "FAILED: cargo build --release --target $TARGET -p edge-seg-runtime" >&2
        fail=1
    fi
fi

cat > "$OUT/aarch64-checks.env" << EOF
tree_ok=$tree_ok
build_scripts_ok=$build_scripts_ok
simd_ok=$simd_ok
built=$built
EOF
echo "== summary: tree_ok=$tree_ok build_scripts_ok=$build_scripts_ok simd_ok=$simd_ok built=$built ($OUT/aarch64-checks.env)"
exit $fail

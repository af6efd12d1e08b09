#!/usr/bin/env python3
"""int8 variants for onnxruntime (issue #22): per model, `edge-seg quantize --target onnxruntime`
per-tensor or per-channel, with 7-bit or full-range weights, against f32: median latency of
`session.run` (2 threads, one val frame) and val mIoU in onnxruntime. Records
`int8_variant_<model>_<variant>_ms` / `_val_miou` into docs/results/cpu_speed.json.

  python benches/engines/variants.py [--data ../shared/data/camvid] [--work target/engines-variants]
Needs a release edge-seg (cargo build --release -p edge-seg-runtime) and the peer's packages.
"""

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "quantize"))
import peer  # noqa: E402

MODELS = {"student": "assets/models/camvid-edge.onnx", "default": "assets/models/camvid-lite0.onnx"}
VARIANTS = {  # name: extra quantize flags (None = the float model)
    "f32": None,
    "pc7": ["--per-channel", "--weight-range", "reduced"],
    "pc8": ["--per-channel", "--weight-range", "full"],
    "pt7": ["--weight-range", "reduced"],
    "pt8": ["--weight-range", "full"],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/camvid")
    ap.add_argument("--work", default="target/engines-variants")
    ap.add_argument("--results", default="docs/results/cpu_speed.json")
    a = ap.parse_args()
    w = Path(a.work)
    shutil.rmtree(w, ignore_errors=True)
    (w / "calib").mkdir(parents=True)
    train = sorted(p for p in (Path(a.data) / "train").iterdir() if p.suffix == ".png")
    for p in [p for i, p in enumerate(train) if i % 18 == 0][:20]:
        shutil.copy(p, w / "calib")
    frame = sorted((Path(a.data) / "val").glob("*.png"))[0]
    command = "python benches/engines/variants.py" + "".join(f" {x}" for x in sys.argv[1:])
    recs, add = peer.recorder(command, echo=True)
    for m, src in MODELS.items():
        for v, flags in VARIANTS.items():
            path = src if flags is None else str(w / f"{m}_{v}.onnx")
            if flags is not None:
                subprocess.run(["target/release/edge-seg", "quantize", "--model", src, "--calib", str(w / "calib"),
                                "--out", path, "--target", "onnxruntime", *flags], check=True,
                               stdout=subprocess.DEVNULL)
            lat = argparse.Namespace(models=[f"{m}_{v}={path}"], frame=str(frame), warmup=3, runs=20, threads=2,
                                     out=str(w / f"{m}_{v}_lat.json"))
            peer.cmd_latency(lat)
            ev = argparse.Namespace(model=path, data=a.data, split="val", threads=2, ignore_id=11,
                                    out=str(w / f"{m}_{v}_eval.json"))
            peer.cmd_eval(ev)
            import json
            lj = json.loads(Path(lat.out).read_text())[f"{m}_{v}"]
            ej = json.loads(Path(ev.out).read_text())
            add(f"int8_variant_{m}_{v}_ms", lj["median_ms"], "ms (onnxruntime session.run, 2 threads)", "one val frame")
            add(f"int8_variant_{m}_{v}_val_miou", 100 * ej["miou"], "mIoU % (onnxruntime)", "camvid val")
    print(f"wrote {peer.merge_records(a.results, recs)}")


if __name__ == "__main__":
    main()

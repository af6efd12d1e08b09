#!/usr/bin/env python3
"""Records of benches/engines/run.sh into docs/results/cpu_speed.json:
  <backend>_<precision>_<model>_ms     median single-frame inference latency (ms): the criterion
                                       bench engines_latency (`Segmenter::infer` on one frame after
                                       the other, nothing else running)
  <backend>_<precision>_<model>_busy_ms median inference ms per frame inside the throughput run
                                       of `edge-seg run` (--stats), the other stages sharing the cores
  e2e_fps_<backend>_<precision>_<model> end-to-end FPS of that run (its summary)
  ort_py_<precision>_<model>_ms        median latency per frame of the Python onnxruntime peer
                                       (whole loop: convert, run, arg-max, blend)
  peer_e2e_fps_<precision>_<model>     the peer's end-to-end FPS
  e2e_ratio_<backend>_<precision>_<model> edge-seg FPS / peer FPS (target >= 1.2)
  int8_speedup_<backend>_<model>       end-to-end FPS of int8 / FPS of f32
  int8_infer_speedup_<backend>_<model> single-frame latency of f32 / that of int8
  int8_busy_infer_speedup_<backend>_<model> the same from the throughput run's inference medians
  ort_<precision>_<model>_<stage>_ms   median ms per frame of the other pipeline stages on
                                       onnxruntime (stage: preprocess, post, draw, output)
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchlib import merge_records, recorder  # noqa: E402


def stats(path):
    frames, summary = [], None
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        j = json.loads(line)
        if "summary" in j:
            summary = j["summary"]
        else:
            frames.append(j)
    if summary is None or not frames:
        sys.exit(f"{path}: no frames or no summary")
    return statistics.median(f["infer_ms"] for f in frames), summary["fps"], frames


STAGES = ("preprocess", "post", "draw", "output")


def criterion_ms(root, cell):
    """Median (ms) of criterion's last run of `engines/<cell>`."""
    p = Path(root) / cell / "new" / "estimates.json"
    if not p.exists():
        sys.exit(f"{p}: missing (run the engines_latency bench first)")
    return json.loads(p.read_text())["median"]["point_estimate"] / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--split", required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--criterion", required=True, help="target/criterion/engines of the engines_latency bench")
    a = ap.parse_args()
    recs, add = recorder(a.command, echo=True)
    for m in a.models:
        d = Path(a.work) / m
        peer = {p: json.loads((d / f"peer_{p}.json").read_text()) for p in ("f32", "int8")}
        fps, busy, single = {}, {}, {}
        for backend in ("tract", "ort"):
            for prec in ("f32", "int8"):
                ms, f, frames = stats(d / f"{backend}_{prec}.jsonl")
                fps[backend, prec], busy[backend, prec] = f, ms
                single[backend, prec] = criterion_ms(a.criterion, f"{backend}_{prec}_{m}")
                if backend == "ort":
                    for st in STAGES:
                        v = statistics.median(fr[f"{st}_ms"] for fr in frames)
                        add(f"ort_{prec}_{m}_{st}_ms", v, "ms (median per frame)", a.split)
                add(f"{backend}_{prec}_{m}_ms", single[backend, prec],
                    "ms (median single-frame inference, criterion engines_latency)", a.split)
                add(f"{backend}_{prec}_{m}_busy_ms", ms, "ms (median inference in the throughput run)", a.split)
                add(f"e2e_fps_{backend}_{prec}_{m}", f, "FPS", a.split)
                add(f"e2e_ratio_{backend}_{prec}_{m}", f / peer[prec]["fps"], "x peer", a.split)
            add(f"int8_speedup_{backend}_{m}", fps[backend, "int8"] / fps[backend, "f32"], "x", a.split)
            add(f"int8_infer_speedup_{backend}_{m}", single[backend, "f32"] / single[backend, "int8"], "x", a.split)
            add(f"int8_busy_infer_speedup_{backend}_{m}", busy[backend, "f32"] / busy[backend, "int8"], "x", a.split)
        for prec in ("f32", "int8"):
            add(f"ort_py_{prec}_{m}_ms", peer[prec]["latency_p50_ms"], "ms", a.split)
            add(f"peer_e2e_fps_{prec}_{m}", peer[prec]["fps"], "FPS", a.split)
    print(f"wrote {merge_records(a.results, recs)}")


if __name__ == "__main__":
    main()

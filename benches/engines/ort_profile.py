#!/usr/bin/env python3
"""Where onnxruntime spends an ONNX graph's inference time, by op type (its own profiler).

  python3 benches/engines/ort_profile.py MODEL.onnx [--threads 2] [--runs 30]

Runs the graph --runs times on a random input of its fixed input shape after 5 warm-up runs,
with onnxruntime's CPU provider and every graph optimisation on (as `edge-seg run --backend ort`
asks), and prints for each kernel (the op types after onnxruntime's fusions, e.g. `QLinearConv`
where a `DQ → Conv → Q` was fused, `Conv` where it was not) its ms per run, its share and its
node count. Used for issue #22 (docs/BENCHMARKS.md, "Inference engines").
"""

import argparse
import collections
import json
import os
import tempfile

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort_profile")
    s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    inp = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(5):
        s.run(None, {inp.name: x})
    # the profile holds the warm-up runs too: count only the last --runs of each node
    for _ in range(a.runs):
        s.run(None, {inp.name: x})
    events = json.load(open(s.end_profiling()))
    per_node = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[e["name"]].append((e["args"].get("op_name"), e["dur"]))
    total, count = collections.Counter(), collections.Counter()
    for runs in per_node.values():
        for op, dur in runs[-a.runs:]:
            total[op] += dur
        count[runs[0][0]] += 1
    all_us = sum(total.values())
    print(f"{a.model}: {all_us / a.runs / 1000:.2f} ms per run in kernels ({a.threads} threads)")
    for op, us in total.most_common():
        print(f"  {op:26s} {us / a.runs / 1000:7.2f} ms  {100 * us / all_us:5.1f} %  {count[op]} nodes")


if __name__ == "__main__":
    main()

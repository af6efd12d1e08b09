#!/usr/bin/env python3
"""Result records of benches/gpu/run.sh (docs/results/cuda.json), from the raw JSON it left in
--work: the CUDA-vs-CPU parity, the GPU training-step times (ours, PyTorch, ratio) and the GPU
training run's wall time and its last in-training mIoU — only for the --parts that this command
ran (run.sh removes each part's old outputs before running it). The machine field names the GPU
(nvidia-smi) and the host CPU.

  record.py --work DIR --results FILE --command CMD --parts parity,step,train [--train-eval SPLIT]
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchlib import machine, merge_records, recorder  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--parts", required=True)
    ap.add_argument("--train-eval", default=None)
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    w = Path(a.work)
    gpu = (w / "gpu.txt").read_text().strip() if (w / "gpu.txt").exists() else "unknown GPU"
    recs, add = recorder(a.command, echo=True)

    def load(name):
        p = w / name
        return json.loads(p.read_text()) if p.exists() else None

    def add_raw(name, value, unit, split):
        # parity figures are far below recorder()'s 3-decimal rounding: keep them as measured
        add(name, value, unit, split)
        recs[-1]["value"] = value

    p = load("parity.json") if "parity" in parts else None
    if p:
        s = "seeded input " + "x".join(str(d) for d in p["input"])
        add_raw("cuda_parity_logits_max_abs_diff", p["logits_max_abs_diff"],
            f"max |logit difference| CUDA vs CPU, evaluation mode (max |logit| {p['logits_max_abs']:.2f})", s)
        add_raw("cuda_parity_argmax_agreement", p["argmax_agreement"], "fraction of pixels with the same class", s)
        add_raw("cuda_parity_loss_abs_diff", abs(p["loss_cpu"] - p["loss_device"]),
            f"|training loss difference| (CPU {p['loss_cpu']:.6f})", s)
        add_raw("cuda_parity_grad_rel_l2", p["grad_rel_l2"],
                f"||g_cuda - g_cpu|| / ||g_cpu|| over all {p['grads_compared']} parameter gradients as one vector", s)
        add_raw("cuda_parity_grad_max_rel_diff", p["grad_max_rel_diff"],
                f"max over parameters of max |gradient difference| / max(max |CPU gradient|, 1e-3 x "
                f"{p['grad_max_abs']:.3e}) (worst: {p['grad_worst']}, its max |gradient| {p['grad_worst_scale']:.3e})", s)
    for b in (8, 32) if "step" in parts else ():
        r, t = load(f"step_rust_b{b}.json"), load(f"step_torch_b{b}.json")
        if r and t:
            shape = f"Lite0 seg net from ImageNet weights, batch {b}, 256x256"
            add(f"cuda_train_step_ms_b{b}", r["median_ms"],
                f"ms per step (median; {shape}; GPU; forward+loss {r['forward_median_ms']:.1f}, backward "
                f"{r['backward_median_ms']:.1f}, SGD update {r['update_median_ms']:.1f} ms)", "random input")
            add(f"torch_cuda_train_step_ms_b{b}", t["median_ms"],
                f"ms per step (median; same net and batch, PyTorch {t.get('torch_version', '?')} on the GPU)",
                "random input")
            add(f"cuda_train_step_ratio_vs_torch_b{b}", r["median_ms"] / t["median_ms"],
                "x (ours / PyTorch, lower is better)", "random input")
    run = w / "suponly"
    if "train" in parts and (run / "metrics.jsonl").exists():
        lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
        evals = [e for e in lines if "val_miou" in e]
        steps = [e for e in lines if "elapsed_s" in e]
        if evals:
            add("cuda_suponly_in_training_miou", 100 * evals[-1]["val_miou"],
                f"mIoU % at step {evals[-1]['iter']} (in-training evaluation)",
                f"in-training evaluation on {a.train_eval or 'the config val_split'} (see command)")
        if steps:
            add("cuda_suponly_train_seconds", steps[-1]["elapsed_s"],
                f"s of training wall time to step {steps[-1]['iter']} on the GPU (evaluations included)", "-")
    host = machine()
    for r in recs:
        r["machine"] = f"{gpu}; host {host}"
    out = merge_records(a.results, recs)
    print(f"{len(recs)} records -> {out}")


if __name__ == "__main__":
    main()

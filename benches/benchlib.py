#!/usr/bin/env python3
"""Helpers shared by the bench scripts (standard library only, so that a script that only writes
records needs no numpy, onnx or PIL):

  machine()                 "<CPU model>, <n> cores" of this machine
  recorder(command, echo)   (recs, add): add(name, value, unit, split) appends a result record
  merge_records(path, recs) replace-by-name merge into a docs/results JSON list, atomically
  read_toml(path)           a TOML file (a run's config.toml) as a dict
  read_metrics(run_dir)     the records of a run's metrics.jsonl (torn last lines skipped)
  train_seconds(run_dir)    training wall time by the trainer's own clock

Import with `sys.path.insert(0, <benches>)` then `from benchlib import ...`.
"""

import json
import os
import platform
import sys
import tomllib
from datetime import datetime, timezone
from pathlib import Path


def machine():
    """CPU model, core count and, on x86, whether it has VNNI (int8 speed and onnxruntime's
    int8 accuracy depend on it; the same model name has come with and without it here)."""
    cpu, flags = platform.machine(), None
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu == platform.machine():
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and flags is None:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    isa = ""
    if flags is not None and "avx2" in flags:
        isa = ", VNNI" if flags & {"avx512_vnni", "avx_vnni"} else ", AVX2 without VNNI"
    return f"{cpu}, {cores} cores{isa}"


def recorder(command, echo=False):
    """`(recs, add)`: `add(name, value, unit, split)` appends a result record (value rounded to 3
    decimals) with `command`, today's date (UTC) and this machine to the list `recs`, and prints
    it when `echo`."""
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    mach = machine()
    recs = []

    def add(name, value, unit, split):
        recs.append({"name": name, "value": round(value, 3), "unit": unit, "split": split,
                     "command": command, "date": date, "machine": mach})
        if echo:
            print(f"  {name} = {value:.3f} {unit}", flush=True)

    return recs, add


def merge_records(path, recs):
    """Replace-by-name merge of `recs` into the JSON list at `path`, written atomically."""
    out = Path(path)
    all_recs = json.loads(out.read_text()) if out.exists() else []
    if not isinstance(all_recs, list) or not all(isinstance(x, dict) and "name" in x for x in all_recs):
        sys.exit(f"{out}: exists and is not a list of result records; not overwriting it")
    for r in recs:
        for i, x in enumerate(all_recs):
            if x["name"] == r["name"]:
                all_recs[i] = r
                break
        else:
            all_recs.append(r)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(all_recs, indent=2) + "\n")
    os.replace(tmp, out)
    return out


def read_toml(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def read_metrics(run_dir):
    """The JSON records of `run_dir/metrics.jsonl`; a torn line (a run killed mid-write) is
    skipped. Empty when there is no log."""
    log = Path(run_dir) / "metrics.jsonl"
    out = []
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def train_seconds(run_dir, discount_pauses=False):
    """Training wall time of a run by the trainer's clock: the last `elapsed_s` of its log (the
    trainer keeps counting across --resume, from the time saved in the checkpoint). None without
    one. With `discount_pauses`, a gap between two log lines longer than max(5 x the median gap,
    the median + 120 s) -- the process stopped (SIGSTOP) while another benchmark ran -- counts as
    one median gap."""
    points = [(r["iter"], r["elapsed_s"]) for r in read_metrics(run_dir) if "elapsed_s" in r]
    if not points:
        return None
    if not discount_pauses:
        return points[-1][1]
    gaps = sorted(b[1] - a[1] for a, b in zip(points, points[1:]))
    typical = gaps[len(gaps) // 2] if gaps else 0.0
    total = points[0][1]
    for a, b in zip(points, points[1:]):
        gap = b[1] - a[1]
        total += typical if gap > max(5 * typical, typical + 120) else gap
    return total

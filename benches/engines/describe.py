#!/usr/bin/env python3
"""Copies the edge_seg.* metadata of --from (a file edge-seg wrote) into a copy of --model, for
the Python peer, which needs it (benches/engines/run.sh)."""

import argparse

import onnx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="src", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    src = {p.key: p.value for p in onnx.load(a.src, load_external_data=False).metadata_props
           if p.key.startswith("edge_seg.") and p.key != "edge_seg.quantization"}
    m = onnx.load(a.model)
    keep = [p for p in m.metadata_props if p.key not in src]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    for k, v in src.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, a.out)


if __name__ == "__main__":
    main()

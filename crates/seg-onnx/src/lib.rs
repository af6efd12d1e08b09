//! ONNX graph building, reading and writing for edge-seg.
//!
//! Uses the protobuf types of `tract_onnx::pb` with `prost`, so what we write is what tract (and
//! onnxruntime) read. Shared by the trainer's exporter and the `quantize` crate.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
pub use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

/// The ONNX opset we write.
pub const OPSET: i64 = 17;
/// IR version matching [`OPSET`].
pub const IR_VERSION: i64 = 8;

/// Errors reading or writing ONNX files.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX protobuf.
    #[error("{path}: not a valid ONNX model: {reason}")]
    Decode {
        /// The file.
        path: String,
        /// What the decoder said.
        reason: String,
    },
    /// The graph is structurally unusable.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file (or model name).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor of an unsupported data type was asked for as f32.
    #[error("tensor '{name}': unsupported data type {data_type} (expected float32)")]
    DataType {
        /// Tensor name.
        name: String,
        /// The ONNX data type id.
        data_type: i32,
    },
}

/// An attribute value for [`GraphBuilder::node`].
#[derive(Debug, Clone)]
pub enum Attr {
    /// A single int.
    Int(i64),
    /// A list of ints.
    Ints(Vec<i64>),
    /// A single float.
    Float(f32),
    /// A string.
    Str(String),
}

/// Builds an ONNX graph node by node; names are kept as given (so weight names equal the
/// training-side parameter names).
#[derive(Debug, Default)]
pub struct GraphBuilder {
    graph: pb::GraphProto,
    counter: usize,
}

impl GraphBuilder {
    /// A new, empty graph.
    pub fn new(name: &str) -> Self {
        Self {
            graph: pb::GraphProto {
                name: name.to_string(),
                ..Default::default()
            },
            counter: 0,
        }
    }

    /// Declares a float32 graph input of a fixed shape.
    pub fn input(&mut self, name: &str, shape: &[i64]) {
        self.graph.input.push(value_info(name, DataType::Float, shape));
    }

    /// Declares a float32 graph output (shape optional).
    pub fn output(&mut self, name: &str, shape: &[i64]) {
        self.graph.output.push(value_info(name, DataType::Float, shape));
    }

    /// Adds a float32 initializer and returns its name.
    pub fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) -> String {
        self.graph.initializer.push(tensor_f32(name, dims, data));
        name.to_string()
    }

    /// Adds an int64 initializer and returns its name.
    pub fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) -> String {
        self.graph.initializer.push(pb::TensorProto {
            name: name.to_string(),
            dims: dims.to_vec(),
            data_type: DataType::Int64 as i32,
            int64_data: data.to_vec(),
            ..Default::default()
        });
        name.to_string()
    }

    /// A fresh tensor name with the given prefix.
    pub fn fresh(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    /// Adds a node with one output named `out` and returns `out`.
    pub fn node(&mut self, op: &str, inputs: &[&str], out: &str, attrs: &[(&str, Attr)]) -> String {
        self.counter += 1;
        let node = pb::NodeProto {
            name: format!("{op}_{}", self.counter),
            op_type: op.to_string(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            attribute: attrs.iter().map(|(n, a)| attribute(n, a)).collect(),
            ..Default::default()
        };
        self.graph.node.push(node);
        out.to_string()
    }

    /// Finishes the graph into a model with the given metadata.
    pub fn finish(self, metadata: &BTreeMap<String, String>) -> pb::ModelProto {
        pb::ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "edge-seg".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            metadata_props: metadata
                .iter()
                .map(|(k, v)| pb::StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

fn attribute(name: &str, a: &Attr) -> pb::AttributeProto {
    use pb::attribute_proto::AttributeType as T;
    let mut p = pb::AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match a {
        Attr::Int(i) => {
            p.r#type = T::Int as i32;
            p.i = *i;
        }
        Attr::Ints(v) => {
            p.r#type = T::Ints as i32;
            p.ints = v.clone();
        }
        Attr::Float(f) => {
            p.r#type = T::Float as i32;
            p.f = *f;
        }
        Attr::Str(s) => {
            p.r#type = T::String as i32;
            p.s = s.as_bytes().to_vec();
        }
    }
    p
}

/// A float32 tensor proto (data stored as raw little-endian bytes).
pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// Reads a float32 tensor proto's values (raw or typed storage).
pub fn tensor_to_f32(t: &pb::TensorProto) -> Result<Vec<f32>, OnnxError> {
    if t.data_type != DataType::Float as i32 {
        return Err(OnnxError::DataType {
            name: t.name.clone(),
            data_type: t.data_type,
        });
    }
    if !t.raw_data.is_empty() {
        Ok(t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    } else {
        Ok(t.float_data.clone())
    }
}

fn value_info(name: &str, dt: DataType, shape: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: dt as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: shape
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Serialises a model.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Writes a model atomically (temp file + rename).
pub fn save(model: &pb::ModelProto, path: &Path) -> Result<(), OnnxError> {
    seg_fs::write_atomic(path, &encode(model)).map_err(|source| OnnxError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Decodes ONNX bytes and folds f16 weight storage back to f32 initializers ([`expand_f16`]):
/// every reader of a model in edge-seg goes through here, so the rest of the code sees f32
/// weights under their own names whichever way the file stores them.
pub fn decode(bytes: &[u8]) -> Result<pb::ModelProto, prost::DecodeError> {
    let mut model = pb::ModelProto::decode(bytes)?;
    expand_f16(&mut model);
    Ok(model)
}

/// The suffix of an f16-stored initializer's name (`<weight>.f16`, cast to `<weight>`).
pub const F16_SUFFIX: &str = ".f16";

/// f16 weight storage: every f32 initializer of at least `min_elems` values becomes an f16
/// initializer `<name>.f16` and a `Cast(to = FLOAT)` node producing `<name>` at the start of the
/// graph, so the file stays a valid ONNX model for any runtime (tract and onnxruntime fold the
/// casts when they load it) at about half the size. Returns how many initializers were
/// converted. The values are rounded to the nearest f16 (overflow to ±inf is refused: such a
/// tensor stays f32).
pub fn compact_f16(model: &mut pb::ModelProto, min_elems: usize) -> usize {
    let Some(g) = model.graph.as_mut() else {
        return 0;
    };
    let mut casts = Vec::new();
    for t in g.initializer.iter_mut() {
        if t.data_type != DataType::Float as i32 || t.name.ends_with(F16_SUFFIX) {
            continue;
        }
        let Ok(v) = tensor_to_f32(t) else { continue };
        if v.len() < min_elems.max(1) {
            continue;
        }
        let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
        if h.iter().zip(&v).any(|(a, b)| a.is_infinite() && b.is_finite()) {
            continue;
        }
        let name = std::mem::take(&mut t.name);
        t.name = format!("{name}{F16_SUFFIX}");
        t.data_type = DataType::Float16 as i32;
        t.float_data.clear();
        t.raw_data = h.iter().flat_map(|x| x.to_le_bytes()).collect();
        casts.push(pb::NodeProto {
            name: format!("{name}.cast"),
            op_type: "Cast".into(),
            input: vec![t.name.clone()],
            output: vec![name],
            attribute: vec![pb::AttributeProto {
                name: "to".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: DataType::Float as i64,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    let n = casts.len();
    casts.append(&mut g.node);
    g.node = casts;
    n
}

/// The inverse of [`compact_f16`]: each `Cast(to = FLOAT)` of an f16 initializer that nothing
/// else reads becomes an f32 initializer named after the cast's output, and the cast goes.
/// Other graphs are left as they are. Returns how many casts were folded.
pub fn expand_f16(model: &mut pb::ModelProto) -> usize {
    let Some(g) = model.graph.as_mut() else {
        return 0;
    };
    let mut readers: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for n in &g.node {
        for i in &n.input {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    let f16: std::collections::HashMap<&str, usize> = g
        .initializer
        .iter()
        .enumerate()
        .filter(|(_, t)| t.data_type == DataType::Float16 as i32)
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    // (node index, initializer index) of the casts to fold
    let mut fold = Vec::new();
    for (ni, n) in g.node.iter().enumerate() {
        let to_float = n
            .attribute
            .iter()
            .any(|a| a.name == "to" && a.i == DataType::Float as i64);
        if n.op_type != "Cast" || !to_float || n.input.len() != 1 || n.output.len() != 1 {
            continue;
        }
        if let Some(&ti) = f16.get(n.input[0].as_str()) {
            let t = &g.initializer[ti];
            // outside bytes: dims may be negative or overflow; such a tensor is left alone
            let numel = t
                .dims
                .iter()
                .try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)));
            let Some(numel) = numel else { continue };
            let raw_ok = Some(t.raw_data.len()) == numel.checked_mul(2);
            let typed_ok = t.raw_data.is_empty() && t.int32_data.len() == numel;
            if readers.get(n.input[0].as_str()) == Some(&1) && (raw_ok || typed_ok) {
                fold.push((ni, ti));
            }
        }
    }
    if fold.is_empty() {
        return 0;
    }
    for &(ni, ti) in &fold {
        let out = g.node[ni].output[0].clone();
        let t = &mut g.initializer[ti];
        let values: Vec<f32> = if t.raw_data.is_empty() {
            // ONNX keeps typed f16 values as their bit patterns in int32_data
            t.int32_data
                .iter()
                .map(|&b| half::f16::from_bits(b as u16).to_f32())
                .collect()
        } else {
            t.raw_data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect()
        };
        *t = tensor_f32(&out, &t.dims.clone(), &values);
    }
    let drop: std::collections::HashSet<usize> = fold.iter().map(|&(ni, _)| ni).collect();
    let mut i = 0;
    g.node.retain(|_| {
        let keep = !drop.contains(&i);
        i += 1;
        keep
    });
    fold.len()
}

/// Reads and decodes an ONNX file, checking that it has a graph (f16 weight storage folded back
/// to f32, as [`decode`]).
pub fn load(path: &Path) -> Result<pb::ModelProto, OnnxError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: p.clone(),
        source,
    })?;
    let model = decode(bytes.as_slice()).map_err(|e| OnnxError::Decode {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    match &model.graph {
        Some(g) if !g.node.is_empty() => Ok(model),
        _ => Err(OnnxError::Invalid {
            path: p,
            reason: "the model has no graph nodes".into(),
        }),
    }
}

/// The model's `metadata_props` as a map.
pub fn metadata(model: &pb::ModelProto) -> BTreeMap<String, String> {
    model
        .metadata_props
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

/// Replaces the float32 initializer `name` by `data` (same shape): how adapted weights go into
/// a graph.
pub fn set_initializer(model: &mut pb::ModelProto, name: &str, data: &[f32]) -> Result<(), OnnxError> {
    let invalid = |reason: String| OnnxError::Invalid {
        path: "set_initializer".into(),
        reason,
    };
    let t = model
        .graph
        .as_mut()
        .and_then(|g| g.initializer.iter_mut().find(|t| t.name == name))
        .ok_or_else(|| invalid(format!("the model has no initializer '{name}'")))?;
    let n: i64 = t.dims.iter().product();
    if t.data_type != DataType::Float as i32 || n as usize != data.len() {
        return Err(invalid(format!(
            "initializer '{name}' is {n} values of type {}, got {} float32 values",
            t.data_type,
            data.len()
        )));
    }
    *t = tensor_f32(name, &t.dims.clone(), data);
    Ok(())
}

/// Tensor name → index of the node that produces it.
pub fn producers(graph: &pb::GraphProto) -> std::collections::HashMap<&str, usize> {
    graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect()
}

/// The part of `model` that computes `outputs`: the nodes they depend on, walking back until a
/// graph input, an initializer or one of `inputs` (named tensors that become the new graph's
/// float32 inputs, with the given shapes). Node order, initializers and metadata are kept. Used to
/// split a network (e.g. the encoder for frozen features, the head that adaptation trains).
pub fn extract(
    model: &pb::ModelProto,
    inputs: &[(&str, &[i64])],
    outputs: &[&str],
) -> Result<pb::ModelProto, OnnxError> {
    use std::collections::HashSet;
    let invalid = |reason: String| OnnxError::Invalid {
        path: "extract".into(),
        reason,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| invalid("the model has no graph".into()))?;
    let producer = producers(graph);
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let cut: HashSet<&str> = inputs.iter().map(|(n, _)| *n).collect();
    for (n, _) in inputs {
        if !producer.contains_key(n) && !graph.input.iter().any(|i| i.name == *n) {
            return Err(invalid(format!("no tensor named '{n}' to start from")));
        }
    }
    let (mut keep, mut used_inits, mut used_inputs) = (HashSet::new(), HashSet::new(), Vec::new());
    let mut stack: Vec<&str> = outputs.to_vec();
    let mut seen = HashSet::new();
    while let Some(t) = stack.pop() {
        if t.is_empty() || !seen.insert(t) {
            continue;
        }
        if cut.contains(t) {
            continue;
        }
        if inits.contains(t) {
            used_inits.insert(t);
        } else if let Some(&i) = producer.get(t) {
            keep.insert(i);
            stack.extend(graph.node[i].input.iter().map(String::as_str));
        } else if let Some(inp) = graph.input.iter().find(|i| i.name == t) {
            used_inputs.push(inp.clone());
        } else {
            return Err(invalid(format!("tensor '{t}' is produced by nothing in the graph")));
        }
    }
    let mut new_inputs: Vec<pb::ValueInfoProto> = inputs
        .iter()
        .map(|(n, shape)| value_info(n, DataType::Float, shape))
        .collect();
    used_inputs.sort_by_key(|i| graph.input.iter().position(|g| g.name == i.name));
    new_inputs.extend(used_inputs);
    let g = pb::GraphProto {
        name: graph.name.clone(),
        node: graph
            .node
            .iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, n)| n.clone())
            .collect(),
        initializer: graph
            .initializer
            .iter()
            .filter(|t| used_inits.contains(t.name.as_str()))
            .cloned()
            .collect(),
        input: new_inputs,
        output: outputs
            .iter()
            .map(|o| {
                let mut v = value_info(o, DataType::Float, &[]);
                if let Some(pb::type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) {
                    t.shape = None;
                }
                v
            })
            .collect(),
        ..Default::default()
    };
    Ok(pb::ModelProto {
        graph: Some(g),
        ..model.clone()
    })
}

/// The graph's first real input: the first one that is not also an initializer (older exporters
/// list the weights as inputs too).
pub fn first_input(model: &pb::ModelProto) -> Option<&pb::ValueInfoProto> {
    let g = model.graph.as_ref()?;
    g.input.iter().find(|i| !g.initializer.iter().any(|t| t.name == i.name))
}

/// The declared dimensions of a graph input or output: `Some(n)` for a fixed size, `None` for a
/// symbolic or missing one (an empty list when the value has no tensor shape).
pub fn static_dims(v: &pb::ValueInfoProto) -> Vec<Option<i64>> {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as T;
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(T::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(n)) => Some(n),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    fn run_tract(bytes: &[u8], x: &[f32]) -> Vec<f32> {
        seg_test_support::tract_run(bytes, &[1, x.len()], x)
    }

    /// Issue #21 (a lean repository): f16 weight storage is a valid graph tract runs (with the
    /// casts), half the weight bytes, and [`decode`] gives back the f32 initializers under their
    /// own names, rounded to f16, with the casts gone; small tensors and other casts stay.
    #[test]
    fn issue21_f16_storage_round_trip() {
        let mut g = GraphBuilder::new("t");
        g.input("x", &[1, 3]);
        let w: Vec<f32> = (0..120).map(|i| (i as f32 - 59.5) * 0.0123457).collect();
        g.init_f32("w", &[3, 40], &w);
        let b: Vec<f32> = (0..40).map(|i| 1.0 / (i as f32 + 3.0)).collect();
        g.init_f32("b", &[40], &b);
        let mm = g.node("MatMul", &["x", "w"], "mm", &[]);
        g.node("Add", &[&mm, "b"], "y", &[]);
        g.output("y", &[1, 40]);
        let f32_model = g.finish(&BTreeMap::new());
        let x = [0.3f32, -1.2, 2.5];
        let want = run_tract(&encode(&f32_model), &x);
        let mut small = f32_model.clone();
        // only tensors of at least 100 values: `w` (120) is stored as f16, `b` (40) stays f32
        assert_eq!(compact_f16(&mut small, 100), 1);
        let gph = small.graph.as_ref().unwrap();
        assert_eq!(gph.node[0].op_type, "Cast");
        assert!(gph
            .initializer
            .iter()
            .any(|t| t.name == "w.f16" && t.data_type == DataType::Float16 as i32));
        assert!(gph
            .initializer
            .iter()
            .any(|t| t.name == "b" && t.data_type == DataType::Float as i32));
        let bytes = encode(&small);
        assert!(bytes.len() < encode(&f32_model).len());
        // tract runs the stored graph as it is
        let got = run_tract(&bytes, &x);
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-2 && err > 0.0, "{err}");
        // decode folds the cast: same names, f16-rounded values, no Cast node
        let back = decode(&bytes).unwrap();
        let bg = back.graph.as_ref().unwrap();
        assert_eq!(bg.node.len(), f32_model.graph.as_ref().unwrap().node.len());
        assert!(bg.node.iter().all(|n| n.op_type != "Cast"));
        let wt = bg.initializer.iter().find(|t| t.name == "w").unwrap();
        let rounded: Vec<f32> = w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
        assert_eq!(tensor_to_f32(wt).unwrap(), rounded);
        assert_eq!(run_tract(&encode(&back), &x), got);
        // a file without f16 storage decodes unchanged
        assert_eq!(decode(&encode(&f32_model)).unwrap(), f32_model);
        // a cast whose f16 input is read twice is left alone (the graph stays valid)
        let mut shared = small.clone();
        let sg = shared.graph.as_mut().unwrap();
        sg.node.push(pb::NodeProto {
            op_type: "Identity".into(),
            input: vec!["w.f16".into()],
            output: vec!["w16".into()],
            ..Default::default()
        });
        assert_eq!(expand_f16(&mut shared), 0);
        // hostile dims (negative, overflowing) leave the cast in place instead of panicking
        for dims in [vec![-1i64, 240], vec![i64::MAX, 4]] {
            let mut bad = small.clone();
            let bg = bad.graph.as_mut().unwrap();
            bg.initializer.iter_mut().find(|t| t.name == "w.f16").unwrap().dims = dims;
            assert_eq!(expand_f16(&mut bad), 0);
        }
    }

    #[test]
    fn written_graph_runs_in_tract_and_keeps_metadata() {
        let mut g = GraphBuilder::new("t");
        g.input("x", &[1, 2]);
        g.init_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        g.init_f32("b", &[2], &[0.5, -0.5]);
        let mm = g.node("MatMul", &["x", "w"], "mm", &[]);
        g.node("Add", &[&mm, "b"], "y", &[]);
        g.output("y", &[1, 2]);
        let mut meta = BTreeMap::new();
        meta.insert("classes".to_string(), "a,b".to_string());
        let model = g.finish(&meta);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        save(&model, &path).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(metadata(&back)["classes"], "a,b");
        let plan = tract_onnx::onnx()
            .model_for_path(&path)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap();
        let x = tract_ndarray::arr2(&[[1.0f32, 1.0]]).into_tensor();
        let y = plan.run(tvec!(x.into())).unwrap();
        let y = y[0].to_plain_array_view::<f32>().unwrap();
        assert_eq!(y.as_slice().unwrap(), &[4.5, 5.5]);
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.onnx");
        std::fs::write(&path, b"\xff\xff\xff not onnx").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("bad.onnx") && e.contains("not a valid ONNX"), "{e}");
    }

    #[test]
    fn f32_tensor_round_trip() {
        let t = tensor_f32("w", &[3], &[1.0, -2.5, 3.25]);
        assert_eq!(tensor_to_f32(&t).unwrap(), vec![1.0, -2.5, 3.25]);
    }

    /// The shipped model cut at the encoder's two outputs: encoder then head computes what the
    /// whole graph computes.
    #[test]
    fn extracted_encoder_and_head_compose_to_the_model() {
        let model = load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../assets/models/camvid-small.onnx"
        )))
        .unwrap();
        let (low, high) = ("encoder.layer1.0.out", "encoder.layer4.0.out");
        let encoder = extract(&model, &[], &[low, high]).unwrap();
        let head = extract(
            &model,
            &[(low, &[1, 32, 90, 120]), (high, &[1, 192, 12, 15])],
            &["classifier.out"],
        )
        .unwrap();
        let full = extract(&model, &[], &["classifier.out"]).unwrap();
        let eg = encoder.graph.as_ref().unwrap();
        assert!(eg
            .node
            .iter()
            .all(|n| !n.name.is_empty() && !n.output.iter().any(|o| o.starts_with("decoder"))));
        assert!(eg.initializer.iter().all(|t| t.name.starts_with("encoder.")));
        let hg = head.graph.as_ref().unwrap();
        assert!(hg
            .node
            .iter()
            .all(|n| n.output.iter().all(|o| !o.starts_with("encoder."))));
        assert_eq!(hg.input.len(), 2);
        let run = |m: &pb::ModelProto, inputs: TVec<TValue>| -> TVec<TValue> {
            let mut p = tract_onnx::onnx().model_for_proto_model(m).unwrap();
            for (i, v) in inputs.iter().enumerate() {
                p = p.with_input_fact(i, TypedFact::shape_and_dt_of(v).into()).unwrap();
            }
            p.into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap()
                .run(inputs)
                .unwrap()
        };
        let x: Vec<f32> = (0..3 * 360 * 480usize)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let x = tract_ndarray::Array4::from_shape_vec((1, 3, 360, 480), x)
            .unwrap()
            .into_tensor();
        let feats = run(&encoder, tvec!(x.clone().into()));
        let composed = run(&head, feats);
        let whole = run(&full, tvec!(x.into()));
        let (a, b) = (
            composed[0].to_plain_array_view::<f32>().unwrap(),
            whole[0].to_plain_array_view::<f32>().unwrap(),
        );
        assert_eq!(a.shape(), &[1, 11, 90, 120]);
        let d = a.iter().zip(b.iter()).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
        assert!(d < 1e-4, "max |diff| {d}");
        assert!(extract(&model, &[("nope", &[1])], &["classifier.out"]).is_err());
    }
}

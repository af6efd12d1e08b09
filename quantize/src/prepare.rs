//! Graph preparation before quantization, written over the `pb` graph: validation,
//! `Constant` nodes → initializers, BatchNormalization folded into a preceding Conv.
//!
//! Not done here (left to tract, which folds them when it loads the graph): Shape / Gather /
//! Concat / Unsqueeze / Cast chains over constants or static shapes. They never carry f32
//! activations, so the QDQ pass leaves them alone.

use std::collections::{BTreeSet, HashMap};

use seg_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use crate::QuantizeError;

/// The name used for a node in errors: its name, or `#index` (first output) if it has none.
pub(crate) fn node_label(index: usize, node: &pb::NodeProto) -> String {
    if node.name.is_empty() {
        format!("#{index} ({})", node.output.first().map(String::as_str).unwrap_or(""))
    } else {
        node.name.clone()
    }
}

pub(crate) fn node_err(index: usize, node: &pb::NodeProto, reason: impl Into<String>) -> QuantizeError {
    QuantizeError::Node {
        node: node_label(index, node),
        op: node.op_type.clone(),
        reason: reason.into(),
    }
}

/// What [`prepare`] changed.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct PrepareSummary {
    /// BatchNormalization nodes folded into their Conv (`bn node → conv node`).
    pub folded_bn: Vec<String>,
    /// `Constant` nodes turned into initializers.
    pub constants_to_initializers: usize,
    /// `Identity` nodes over initializers turned into initializers (PyTorch's exporter shares
    /// equal weights, e.g. zero biases, through them).
    pub identities_to_initializers: usize,
}

/// Checks that every node input exists (graph input, initializer or a node output) and that
/// no tensor is produced twice.
pub fn validate(graph: &pb::GraphProto) -> Result<(), QuantizeError> {
    let mut defined: BTreeSet<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    defined.extend(graph.initializer.iter().map(|t| t.name.as_str()));
    let mut produced: HashMap<&str, usize> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            if let Some(&j) = produced.get(o.as_str()) {
                return Err(node_err(
                    i,
                    node,
                    format!(
                        "output '{o}' is also produced by node '{}'",
                        node_label(j, &graph.node[j])
                    ),
                ));
            }
            produced.insert(o, i);
        }
    }
    for (i, node) in graph.node.iter().enumerate() {
        for inp in node.input.iter().filter(|s| !s.is_empty()) {
            if !defined.contains(inp.as_str()) && !produced.contains_key(inp.as_str()) {
                return Err(node_err(
                    i,
                    node,
                    format!("input '{inp}' is not a graph input, an initializer or any node's output"),
                ));
            }
        }
    }
    let constants = constant_tensors(graph);
    for (i, node) in graph.node.iter().enumerate() {
        check_attributes(node).map_err(|r| node_err(i, node, r))?;
        check_resize(node, &constants).map_err(|r| node_err(i, node, r))?;
    }
    for o in &graph.output {
        if !defined.contains(o.name.as_str()) && !produced.contains_key(o.name.as_str()) {
            return Err(QuantizeError::Tensor {
                name: o.name.clone(),
                reason: "graph output is not produced by any node".into(),
            });
        }
    }
    Ok(())
}

/// Window attributes that backends index with unchecked (a stride of 0 divides by zero in
/// tract): strides, dilations and kernel sizes must be positive, pads non-negative, group ≥ 1.
fn check_attributes(node: &pb::NodeProto) -> Result<(), String> {
    const WINDOW_OPS: &[&str] = &[
        "Conv",
        "ConvTranspose",
        "ConvInteger",
        "QLinearConv",
        "MaxPool",
        "AveragePool",
        "LpPool",
    ];
    if !node.domain.is_empty() || !WINDOW_OPS.contains(&node.op_type.as_str()) {
        return Ok(());
    }
    // every per-axis attribute must agree with the kernel's rank (tract indexes them unchecked)
    let rank = node
        .attribute
        .iter()
        .find(|a| a.name == "kernel_shape")
        .map(|a| a.ints.len())
        .or_else(|| {
            node.attribute
                .iter()
                .find(|a| matches!(a.name.as_str(), "strides" | "dilations"))
                .map(|a| a.ints.len())
        });
    if let Some(k) = rank {
        if !(1..=3).contains(&k) {
            return Err(format!("a {k}-D window is not supported (1-D to 3-D)"));
        }
        for a in &node.attribute {
            let want = match a.name.as_str() {
                "strides" | "dilations" | "kernel_shape" | "output_padding" | "output_shape" => k,
                "pads" => 2 * k,
                _ => continue,
            };
            if a.ints.len() != want {
                return Err(format!(
                    "attribute {} has {} values, expected {want} for a {k}-D window",
                    a.name,
                    a.ints.len()
                ));
            }
        }
    }
    for a in &node.attribute {
        let bad = match a.name.as_str() {
            "strides" | "dilations" | "kernel_shape" => a.ints.iter().any(|&v| v < 1),
            "pads" | "output_padding" => a.ints.iter().any(|&v| v < 0),
            "group" => a.i < 1,
            _ => false,
        };
        if bad {
            let v = if a.name == "group" {
                a.i.to_string()
            } else {
                format!("{:?}", a.ints)
            };
            return Err(format!("attribute {} = {v} is out of range", a.name));
        }
    }
    Ok(())
}

/// Largest constant `Resize` scale accepted.
pub const MAX_RESIZE_SCALE: f32 = 64.0;
/// Most elements a constant `Resize` `sizes` may ask for (2³⁰ f32 = 4 GiB).
pub const MAX_RESIZE_ELEMENTS: i64 = 1 << 30;

/// Initializers and `Constant` node values by name.
fn constant_tensors(graph: &pb::GraphProto) -> HashMap<&str, &pb::TensorProto> {
    let mut m: HashMap<&str, &pb::TensorProto> = graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    for n in graph
        .node
        .iter()
        .filter(|n| n.op_type == "Constant" && n.domain.is_empty())
    {
        if let (Some(out), Some(t)) = (
            n.output.first(),
            n.attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref()),
        ) {
            m.insert(out.as_str(), t);
        }
    }
    m
}

/// A `Resize` with constant `scales` or `sizes` must not ask tract for an absurd allocation:
/// scales in (0, 64], sizes positive with at most 2³⁰ elements.
fn check_resize(node: &pb::NodeProto, constants: &HashMap<&str, &pb::TensorProto>) -> Result<(), String> {
    if node.op_type != "Resize" || !node.domain.is_empty() {
        return Ok(());
    }
    if let Some(t) = node
        .input
        .get(2)
        .filter(|n| !n.is_empty())
        .and_then(|n| constants.get(n.as_str()))
    {
        if let Ok(scales) = seg_onnx::tensor_to_f32(t) {
            if let Some(s) = scales
                .iter()
                .find(|s| !(s.is_finite() && **s > 0.0 && **s <= MAX_RESIZE_SCALE))
            {
                return Err(format!("Resize scale {s} is outside (0, {MAX_RESIZE_SCALE}]"));
            }
        }
    }
    if let Some(t) = node
        .input
        .get(3)
        .filter(|n| !n.is_empty())
        .and_then(|n| constants.get(n.as_str()))
    {
        let sizes: Vec<i64> = if !t.raw_data.is_empty() {
            t.raw_data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        } else {
            t.int64_data.clone()
        };
        let mut total: i64 = 1;
        for &v in &sizes {
            total = total.saturating_mul(v.max(0));
            if v < 1 || total > MAX_RESIZE_ELEMENTS {
                return Err(format!(
                    "Resize sizes {sizes:?} ask for more than {MAX_RESIZE_ELEMENTS} elements or a size below 1"
                ));
            }
        }
    }
    Ok(())
}

/// Validates, turns `Constant` nodes (with a `value` tensor) into initializers and folds
/// BatchNormalization into a preceding Conv whose output feeds only that BN.
pub fn prepare(proto: &pb::ModelProto) -> Result<(pb::ModelProto, PrepareSummary), QuantizeError> {
    let mut model = proto.clone();
    let graph = model.graph.as_mut().ok_or(QuantizeError::NoGraph)?;
    validate(graph)?;
    let mut summary = PrepareSummary::default();
    constants_to_initializers(graph, &mut summary)?;
    identities_to_initializers(graph, &mut summary);
    fold_batch_norms(graph, &mut summary)?;
    validate(graph)?;
    Ok((model, summary))
}

fn constants_to_initializers(graph: &mut pb::GraphProto, summary: &mut PrepareSummary) -> Result<(), QuantizeError> {
    let mut keep = Vec::with_capacity(graph.node.len());
    for (i, node) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        let value = (node.op_type == "Constant" && node.domain.is_empty())
            .then(|| {
                node.attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.clone())
            })
            .flatten();
        match (value, node.output.first()) {
            (Some(mut t), Some(out)) if node.output.len() == 1 => {
                if t.data_location == Some(1) {
                    return Err(node_err(i, &node, "external tensor data is not supported"));
                }
                t.name = out.clone();
                graph.initializer.push(t);
                summary.constants_to_initializers += 1;
            }
            _ => keep.push(node),
        }
    }
    graph.node = keep;
    Ok(())
}

/// `Identity(initializer)` → a copy of the initializer under the output's name, until none is
/// left (chains of them included).
fn identities_to_initializers(graph: &mut pb::GraphProto, summary: &mut PrepareSummary) {
    loop {
        let inits: HashMap<String, usize> = graph
            .initializer
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let graph_outputs: std::collections::HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let found = graph.node.iter().position(|n| {
            n.op_type == "Identity"
                && n.domain.is_empty()
                && n.input.len() == 1
                && n.output.len() == 1
                && inits.contains_key(&n.input[0])
                && !graph_outputs.contains(n.output[0].as_str())
        });
        let Some(k) = found else { return };
        let node = graph.node.remove(k);
        let mut t = graph.initializer[inits[&node.input[0]]].clone();
        t.name = node.output[0].clone();
        graph.initializer.push(t);
        summary.identities_to_initializers += 1;
    }
}

/// An initializer's f32 values, or an error naming the node that needs them.
pub(crate) fn init_f32(
    graph: &pb::GraphProto,
    name: &str,
    index: usize,
    node: &pb::NodeProto,
    role: &str,
) -> Result<Vec<f32>, QuantizeError> {
    let t = graph
        .initializer
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| node_err(index, node, format!("{role} '{name}' is not an initializer")))?;
    if t.data_type != DataType::Float as i32 {
        let dt = DataType::try_from(t.data_type)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| t.data_type.to_string());
        return Err(node_err(
            index,
            node,
            format!("{role} '{name}' has data type {dt}, expected FLOAT"),
        ));
    }
    let v = seg_onnx::tensor_to_f32(t).map_err(|e| node_err(index, node, e.to_string()))?;
    let expect: i64 = t.dims.iter().product();
    if v.len() as i64 != expect {
        return Err(node_err(
            index,
            node,
            format!("{role} '{name}' has {} values for dims {:?}", v.len(), t.dims),
        ));
    }
    Ok(v)
}

pub(crate) fn init_dims<'a>(graph: &'a pb::GraphProto, name: &str) -> Option<&'a [i64]> {
    graph
        .initializer
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.dims.as_slice())
}

fn fold_batch_norms(graph: &mut pb::GraphProto, summary: &mut PrepareSummary) -> Result<(), QuantizeError> {
    loop {
        let consumers = consumer_counts(graph);
        let producer = seg_onnx::producers(graph);
        let outputs: BTreeSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        let mut found = None;
        for (bi, bn) in graph.node.iter().enumerate() {
            if bn.op_type != "BatchNormalization" || bn.input.len() != 5 {
                continue;
            }
            if bn.output.iter().skip(1).any(|o| !o.is_empty()) {
                continue; // training-mode outputs requested
            }
            let Some(&ci) = producer.get(bn.input[0].as_str()) else {
                continue;
            };
            let conv = &graph.node[ci];
            let x = conv.output[0].as_str();
            if conv.op_type == "Conv"
                && conv.output.len() == 1
                && consumers.get(x).copied().unwrap_or(0) == 1
                && !outputs.contains(x)
                && conv.input.len() >= 2
                && init_dims(graph, &conv.input[1]).is_some()
                && (conv.input.len() < 3 || conv.input[2].is_empty() || init_dims(graph, &conv.input[2]).is_some())
            {
                found = Some((ci, bi));
                break;
            }
        }
        let Some((ci, bi)) = found else {
            return Ok(());
        };
        fold_one(graph, ci, bi, &consumers, summary)?;
    }
}

fn consumer_counts(graph: &pb::GraphProto) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for n in &graph.node {
        for i in n.input.iter().filter(|s| !s.is_empty()) {
            *c.entry(i.clone()).or_insert(0) += 1;
        }
    }
    c
}

fn fold_one(
    graph: &mut pb::GraphProto,
    ci: usize,
    bi: usize,
    consumers: &HashMap<String, usize>,
    summary: &mut PrepareSummary,
) -> Result<(), QuantizeError> {
    let (conv, bn) = (graph.node[ci].clone(), graph.node[bi].clone());
    let w_name = conv.input[1].clone();
    let w_dims = init_dims(graph, &w_name).unwrap_or_default().to_vec();
    let w = init_f32(graph, &w_name, ci, &conv, "weight")?; // [c_out, c_in/g, kh, kw]
    let c_out = *w_dims
        .first()
        .ok_or_else(|| node_err(ci, &conv, format!("weight '{w_name}' has no dimensions")))? as usize;
    if c_out == 0 || w.len() % c_out != 0 {
        return Err(node_err(
            ci,
            &conv,
            format!("weight '{w_name}' dims {w_dims:?} are unusable"),
        ));
    }
    let bias = match conv.input.get(2).filter(|s| !s.is_empty()) {
        Some(b) => init_f32(graph, b, ci, &conv, "bias")?,
        None => vec![0.0; c_out],
    };
    let p = |k: usize, role: &str| -> Result<Vec<f32>, QuantizeError> {
        let v = init_f32(graph, &bn.input[k], bi, &bn, role)?;
        if v.len() != c_out {
            return Err(node_err(
                bi,
                &bn,
                format!(
                    "{role} '{}' has {} values, conv has {c_out} output channels",
                    bn.input[k],
                    v.len()
                ),
            ));
        }
        Ok(v)
    };
    let (gamma, beta, mean, var) = (p(1, "scale")?, p(2, "bias")?, p(3, "mean")?, p(4, "var")?);
    let eps = bn
        .attribute
        .iter()
        .find(|a| a.name == "epsilon")
        .map(|a| a.f)
        .unwrap_or(1e-5);
    let per = w.len() / c_out;
    let mut w2 = w;
    let mut b2 = bias;
    for o in 0..c_out {
        let s = gamma[o] / (var[o] + eps).sqrt();
        w2[o * per..(o + 1) * per].iter_mut().for_each(|v| *v *= s);
        b2[o] = (b2[o] - mean[o]) * s + beta[o];
    }
    // Reuse the weight's name when the conv is its only user (keeps the conv's names, as the
    // exporter does), else write new initializers.
    let shared = |n: &str| consumers.get(n).copied().unwrap_or(0) > 1;
    let new_w = if shared(&w_name) {
        format!("{w_name}.bn_folded")
    } else {
        w_name.clone()
    };
    let old_b = conv.input.get(2).filter(|s| !s.is_empty()).cloned();
    let new_b = match &old_b {
        Some(b) if !shared(b) => b.clone(),
        _ => format!(
            "{}.bias_bn_folded",
            if conv.name.is_empty() {
                &conv.output[0]
            } else {
                &conv.name
            }
        ),
    };
    graph.initializer.retain(|t| t.name != new_w && t.name != new_b);
    graph.initializer.push(seg_onnx::tensor_f32(&new_w, &w_dims, &w2));
    graph
        .initializer
        .push(seg_onnx::tensor_f32(&new_b, &[c_out as i64], &b2));
    let c = &mut graph.node[ci];
    c.input.truncate(2);
    c.input[1] = new_w;
    c.input.push(new_b);
    c.output[0] = bn.output[0].clone();
    summary
        .folded_bn
        .push(format!("{} → {}", node_label(bi, &bn), node_label(ci, &conv)));
    graph.node.remove(bi);
    remove_unused_initializers(graph);
    Ok(())
}

/// Drops initializers no node uses (and that are not graph outputs).
pub(crate) fn remove_unused_initializers(graph: &mut pb::GraphProto) {
    let used: BTreeSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    graph.initializer.retain(|t| used.contains(&t.name));
}

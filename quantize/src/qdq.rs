//! Writing the QDQ graph: `QuantizeLinear → DequantizeLinear` pairs on the float activations
//! feeding quantizable ops, `DequantizeLinear` over int8 weights (and int32 biases for
//! onnxruntime), all scales and zero points constant initializers.
//!
//! Choices:
//! - Activations are **uint8 asymmetric** for [`Target::Tract`] and [`Target::OnnxRuntime`]:
//!   post-ReLU tensors are one-sided, so asymmetric u8 spends all 256 levels on the observed
//!   range (int8 symmetric would waste half), onnxruntime's x86 QDQ kernels are U8S8 (u8
//!   activations, s8 weights), and tract has a dedicated `QuantizeLinearU8` kernel. TensorRT only
//!   accepts symmetric int8 (zero point 0), so [`Target::TensorRt`] gets int8 symmetric.
//! - Weights are **int8 symmetric** (zero point 0, `[-127, 127]`), per output channel (axis 0
//!   for Conv, axis 1 for ConvTranspose with group 1) when asked for, except for
//!   [`Target::Tract`], which is kept per-tensor (see the crate README for what tract does).
//!   With `reduce_range` they use `[-63, 63]`: onnxruntime's x86 U8S8 kernels saturate on
//!   full-range weights on CPUs without VNNI ([`QParams::symmetric_i7`]).
//! - Biases stay **float** for Tract (it dequantizes weights back to f32 and runs an f32 conv, so
//!   an int32 bias buys nothing) and TensorRT (which quantizes biases itself and expects float);
//!   for onnxruntime they become **int32** with `scale = s_in · s_w` (per channel when the weight
//!   is) and zero point 0, which is what its `QLinearConv` fusion of `DQ → Conv → Q` wants and
//!   what its own quantizer writes.
//! - Placement: the float activations feeding ops with int8 kernels get QDQ pairs; for
//!   onnxruntime also the output of every weight layer (after a following `Relu` / `Clip`),
//!   so that each `DQ → Conv → Q` becomes a `QLinearConv` even where float ops read the result
//!   (see `quantize_weight_layer_outputs`).

use std::collections::{BTreeMap, BTreeSet};

use seg_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use crate::params::{sqnr_db, QParams};
use crate::prepare::{init_dims, init_f32, node_err, node_label, remove_unused_initializers};
use crate::{QuantizeError, QuantizeOptions, Target};

/// What an op is to the QDQ pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Its float activation inputs get QDQ pairs (weights: int8 DQ).
    Quantized,
    /// Known, left in float.
    Float,
}

fn role(op: &str) -> Option<Role> {
    const QUANTIZED: &[&str] = &[
        "Conv",
        "ConvTranspose",
        "MatMul",
        "Gemm",
        "Add",
        "Concat",
        "GlobalAveragePool",
        "AveragePool",
        "MaxPool",
        "Resize",
    ];
    const FLOAT: &[&str] = &[
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Clip",
        "Sigmoid",
        "Tanh",
        "HardSigmoid",
        "HardSwish",
        "Softmax",
        "LogSoftmax",
        "ArgMax",
        "ArgMin",
        "Mul",
        "Sub",
        "Div",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Exp",
        "Log",
        "Neg",
        "Abs",
        "Erf",
        "Floor",
        "Ceil",
        "Round",
        "Min",
        "Max",
        "Sum",
        "Mean",
        "Reshape",
        "Flatten",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Shape",
        "Size",
        "Gather",
        "Cast",
        "Slice",
        "Split",
        "Pad",
        "Identity",
        "Dropout",
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "Upsample",
        "Constant",
        "ConstantOfShape",
        "Expand",
        "Tile",
        "ReduceMean",
        "ReduceMax",
        "ReduceSum",
        "Range",
        "Equal",
        "Less",
        "Greater",
        "Where",
        "Not",
        "And",
        "Or",
        "DepthToSpace",
        "SpaceToDepth",
        "GlobalMaxPool",
    ];
    if QUANTIZED.contains(&op) {
        Some(Role::Quantized)
    } else if FLOAT.contains(&op) {
        Some(Role::Float)
    } else {
        None
    }
}

fn is_weight_layer(op: &str) -> bool {
    matches!(op, "Conv" | "ConvTranspose" | "MatMul" | "Gemm")
}

/// Which tensors get quantized, and where.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    /// Activation tensor → indices of the nodes whose input it is to be replaced.
    pub activations: BTreeMap<String, BTreeSet<usize>>,
    /// Nodes that are quantized (their weights too).
    pub nodes: Vec<usize>,
    /// Nodes left in float because they were excluded (by name or first/last), with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Decides what to quantize; errors name the node and op (unknown op, already-quantized graph,
/// weights that are not f32 initializers).
pub(crate) fn plan(graph: &pb::GraphProto, opts: &QuantizeOptions) -> Result<Plan, QuantizeError> {
    let inits: BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let weight_layers: Vec<usize> = (0..graph.node.len())
        .filter(|&i| is_weight_layer(&graph.node[i].op_type))
        .collect();
    let mut p = Plan::default();
    for (i, node) in graph.node.iter().enumerate() {
        let label = node_label(i, node);
        let excluded = opts.exclude.iter().any(|e| e == &label || e == &node.name);
        if !node.domain.is_empty() && node.domain != "ai.onnx" && !excluded {
            return Err(node_err(
                i,
                node,
                format!("op of domain '{}' is not supported", node.domain),
            ));
        }
        match (role(&node.op_type), excluded) {
            (_, true) => {
                p.skipped.push((label, "excluded".into()));
                continue;
            }
            (None, false) if matches!(node.op_type.as_str(), "QuantizeLinear" | "DequantizeLinear") => {
                return Err(node_err(i, node, "the graph is already quantized"));
            }
            (None, false) => {
                return Err(node_err(
                    i,
                    node,
                    "unsupported op for quantization (list the node in `exclude` to keep it in float)",
                ));
            }
            (Some(Role::Float), false) => continue,
            (Some(Role::Quantized), false) => {}
        }
        if opts.keep_first_last_float
            && is_weight_layer(&node.op_type)
            && (weight_layers.first() == Some(&i) || weight_layers.last() == Some(&i))
        {
            p.skipped.push((label, "first/last layer kept in float".into()));
            continue;
        }
        // Structural checks, so that a bad weight is reported before calibration runs.
        if matches!(node.op_type.as_str(), "Conv" | "ConvTranspose") {
            let w = node
                .input
                .get(1)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| node_err(i, node, "missing weight input"))?;
            init_f32(graph, w, i, node, "weight")?;
            if init_dims(graph, w).is_some_and(|d| d.len() < 3) {
                return Err(node_err(i, node, format!("weight '{w}' must have rank ≥ 3")));
            }
            if let Some(b) = node.input.get(2).filter(|s| !s.is_empty()) {
                init_f32(graph, b, i, node, "bias")?;
            }
        }
        let act_inputs: &[usize] = match node.op_type.as_str() {
            "Conv" | "ConvTranspose" | "GlobalAveragePool" | "AveragePool" | "MaxPool" | "Resize" => &[0],
            "MatMul" | "Gemm" => &[0, 1],
            _ => &[],
        };
        let all: Vec<usize> = (0..node.input.len()).collect();
        let act_inputs = if act_inputs.is_empty() { &all[..] } else { act_inputs };
        for &k in act_inputs {
            let Some(name) = node.input.get(k).filter(|s| !s.is_empty()) else {
                continue;
            };
            if inits.contains(name.as_str()) {
                if matches!(node.op_type.as_str(), "MatMul" | "Gemm") {
                    init_f32(graph, name, i, node, "weight")?;
                }
                continue;
            }
            p.activations.entry(name.clone()).or_default().insert(i);
        }
        p.nodes.push(i);
    }
    if opts.target == Target::OnnxRuntime {
        quantize_weight_layer_outputs(graph, &mut p);
    }
    Ok(p)
}

/// onnxruntime turns `DQ → Conv → Q` into an integer `QLinearConv` (likewise `MatMul`, `Gemm`),
/// but only when the layer's output is quantized. The pass above quantizes the inputs of ops
/// with int8 kernels, so a layer whose output feeds only float ops (MobileNetV3's HardSwish,
/// HardSigmoid, the squeeze-excite `Mul`) would run as a float Conv over dequantized weights,
/// slower than the float graph. Such an output gets its own QDQ pair — after a single `Relu` /
/// `Clip` that follows the layer, which onnxruntime folds into the quantization — and every
/// reader reads it dequantized. Graph outputs, and outputs read by a layer kept in float
/// (`exclude`, `keep_first_last_float`), are left as they are.
fn quantize_weight_layer_outputs(graph: &pb::GraphProto, p: &mut Plan) {
    let consumers = |t: &str| -> BTreeSet<usize> {
        (0..graph.node.len())
            .filter(|&j| graph.node[j].input.iter().any(|x| x == t))
            .collect()
    };
    let is_output = |t: &str| graph.output.iter().any(|o| o.name == t);
    let planned: BTreeSet<usize> = p.nodes.iter().copied().collect();
    for &i in &p.nodes.clone() {
        let node = &graph.node[i];
        if !is_weight_layer(&node.op_type) {
            continue;
        }
        let Some(mut t) = node.output.first().cloned() else {
            continue;
        };
        let mut users = consumers(&t);
        if let [j] = users.iter().copied().collect::<Vec<_>>()[..] {
            let next = &graph.node[j];
            if matches!(next.op_type.as_str(), "Relu" | "Clip") && !is_output(&t) {
                if let Some(o) = next.output.first() {
                    t = o.clone();
                    users = consumers(&t);
                }
            }
        }
        // a reader that was kept in float on purpose (`exclude`, first/last layer) keeps a float
        // input
        let kept_float = users
            .iter()
            .any(|&j| role(&graph.node[j].op_type) == Some(Role::Quantized) && !planned.contains(&j));
        if users.is_empty() || is_output(&t) || kept_float {
            continue;
        }
        // float readers of an output that is quantized for other readers read it dequantized
        // too, so that the layer's only reader is its QuantizeLinear
        p.activations.entry(t).or_default().extend(users);
    }
}

/// A quantized activation: its parameters and element type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActQ {
    pub params: QParams,
    pub dtype: DataType,
}

/// One quantized weight (for the report).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightReport {
    /// Initializer name.
    pub name: String,
    /// The node using it.
    pub node: String,
    /// Quantization axis (`None`: per-tensor).
    pub axis: Option<usize>,
    /// Number of scales.
    pub scales: usize,
    /// Smallest scale.
    pub scale_min: f32,
    /// Largest scale.
    pub scale_max: f32,
    /// SQNR of the int8 weight vs the float one.
    pub sqnr_db: f64,
    /// Whether its bias was made int32.
    pub int32_bias: bool,
}

fn scalar_tensor(name: &str, dt: DataType, raw: Vec<u8>, dims: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

fn zp_bytes(dt: DataType, zp: i32) -> Vec<u8> {
    match dt {
        DataType::Uint8 => vec![zp as u8],
        DataType::Int8 => vec![zp as i8 as u8],
        _ => zp.to_le_bytes().to_vec(),
    }
}

fn qdq_node(op: &str, name: &str, inputs: [&str; 3], out: &str, axis: Option<usize>) -> pb::NodeProto {
    pb::NodeProto {
        name: name.to_string(),
        op_type: op.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![out.to_string()],
        attribute: axis
            .map(|a| pb::AttributeProto {
                name: "axis".into(),
                r#type: pb::attribute_proto::AttributeType::Int as i32,
                i: a as i64,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Rewrites `graph` with QDQ pairs for `acts` (only the tensors of `plan` that have
/// parameters, i.e. that calibration found to be f32) and int8 weights for the planned nodes.
pub(crate) fn write(
    graph: &pb::GraphProto,
    plan: &Plan,
    acts: &BTreeMap<String, ActQ>,
    opts: &QuantizeOptions,
) -> Result<(pb::GraphProto, Vec<WeightReport>), QuantizeError> {
    let mut g = graph.clone();
    let mut head: Vec<pb::NodeProto> = Vec::new(); // weight / bias DQ nodes and graph-input QDQ
    let mut after: BTreeMap<String, Vec<pb::NodeProto>> = BTreeMap::new(); // tensor → its QDQ
    let mut weights: Vec<WeightReport> = Vec::new();
    let mut done_weights: BTreeMap<String, String> = BTreeMap::new(); // weight → DQ output
    let per_channel = opts.per_channel && opts.target != Target::Tract;

    // Activation QDQ pairs.
    for (t, q) in acts {
        let (s, z, qn, dq) = (
            format!("{t}_scale"),
            format!("{t}_zero_point"),
            format!("{t}_quantized"),
            format!("{t}_dequantized"),
        );
        g.initializer.push(seg_onnx::tensor_f32(&s, &[], &[q.params.scale]));
        g.initializer
            .push(scalar_tensor(&z, q.dtype, zp_bytes(q.dtype, q.params.zero_point), &[]));
        let nodes = vec![
            qdq_node("QuantizeLinear", &format!("{t}_QuantizeLinear"), [t, &s, &z], &qn, None),
            qdq_node(
                "DequantizeLinear",
                &format!("{t}_DequantizeLinear"),
                [&qn, &s, &z],
                &dq,
                None,
            ),
        ];
        if graph.input.iter().any(|i| &i.name == t) {
            head.extend(nodes);
        } else {
            after.insert(t.clone(), nodes);
        }
    }

    // Rewire activation inputs (of the quantized nodes, and of the float readers of a quantized
    // layer output, see `quantize_weight_layer_outputs`).
    for (i, node) in graph.node.iter().enumerate() {
        for (k, name) in node.input.iter().enumerate() {
            if acts.contains_key(name) && plan.activations.get(name).is_some_and(|c| c.contains(&i)) {
                g.node[i].input[k] = format!("{name}_dequantized");
            }
        }
    }
    for &i in &plan.nodes {
        let node = &graph.node[i];
        // Weights.
        let weight_inputs: Vec<usize> = match node.op_type.as_str() {
            "Conv" | "ConvTranspose" => vec![1],
            "MatMul" | "Gemm" => (0..2.min(node.input.len()))
                .filter(|&k| graph.initializer.iter().any(|t| t.name == node.input[k]))
                .collect(),
            _ => vec![],
        };
        for k in weight_inputs {
            let w = node.input[k].clone();
            if let Some(dq) = done_weights.get(&w) {
                g.node[i].input[k] = dq.clone();
                continue;
            }
            let dims = init_dims(graph, &w).unwrap_or_default().to_vec();
            let values = init_f32(graph, &w, i, node, "weight")?;
            let group = node
                .attribute
                .iter()
                .find(|a| a.name == "group")
                .map(|a| a.i)
                .unwrap_or(1);
            let axis = match node.op_type.as_str() {
                "Conv" if per_channel => Some(0),
                "ConvTranspose" if per_channel && group == 1 => Some(1),
                _ => None,
            };
            let (q, params) =
                quantize_weight(&values, &dims, axis, opts.reduce_range).map_err(|r| node_err(i, node, r))?;
            let fq: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(j, &v)| v as f32 * params[channel_of(j, &dims, axis)].scale)
                .collect();
            let scales: Vec<f32> = params.iter().map(|p| p.scale).collect();
            let pdims: Vec<i64> = if axis.is_some() {
                vec![scales.len() as i64]
            } else {
                vec![]
            };
            let (qn, s, z, dq) = (
                format!("{w}_quantized"),
                format!("{w}_scale"),
                format!("{w}_zero_point"),
                format!("{w}_dequantized"),
            );
            g.initializer.push(scalar_tensor(
                &qn,
                DataType::Int8,
                q.iter().map(|&v| v as u8).collect(),
                &dims,
            ));
            g.initializer.push(seg_onnx::tensor_f32(&s, &pdims, &scales));
            g.initializer
                .push(scalar_tensor(&z, DataType::Int8, vec![0; scales.len()], &pdims));
            head.push(qdq_node(
                "DequantizeLinear",
                &format!("{w}_DequantizeLinear"),
                [&qn, &s, &z],
                &dq,
                axis,
            ));
            g.node[i].input[k] = dq.clone();
            done_weights.insert(w.clone(), dq);
            let mut report = WeightReport {
                name: w.clone(),
                node: node_label(i, node),
                axis,
                scales: scales.len(),
                scale_min: scales.iter().copied().fold(f32::INFINITY, f32::min),
                scale_max: scales.iter().copied().fold(0.0, f32::max),
                sqnr_db: sqnr_db(&values, &fq),
                int32_bias: false,
            };
            // int32 bias for onnxruntime.
            let bias = node.input.get(2).filter(|s| !s.is_empty()).cloned();
            let s_in = acts.get(&node.input[0]).map(|a| a.params.scale);
            if let (Target::OnnxRuntime, Some(b), Some(s_in), true) = (
                opts.target,
                bias,
                s_in,
                matches!(node.op_type.as_str(), "Conv" | "ConvTranspose"),
            ) {
                let bv = init_f32(graph, &b, i, node, "bias")?;
                let bscales: Vec<f32> = if axis.is_some() {
                    scales.iter().map(|sw| s_in * sw).collect()
                } else {
                    vec![s_in * scales[0]]
                };
                if bscales.len() == 1 || bscales.len() == bv.len() {
                    let bq: Vec<i32> = bv
                        .iter()
                        .enumerate()
                        .map(|(j, &v)| {
                            let sb = bscales[if bscales.len() == 1 { 0 } else { j }];
                            if sb > 0.0 {
                                (v as f64 / sb as f64)
                                    .round_ties_even()
                                    .clamp(i32::MIN as f64, i32::MAX as f64) as i32
                            } else {
                                0
                            }
                        })
                        .collect();
                    let bd = init_dims(graph, &b).unwrap_or_default().to_vec();
                    let (bqn, bs, bz, bdq) = (
                        format!("{b}_quantized"),
                        format!("{b}_scale"),
                        format!("{b}_zero_point"),
                        format!("{b}_dequantized"),
                    );
                    let bpd: Vec<i64> = if axis.is_some() {
                        vec![bscales.len() as i64]
                    } else {
                        vec![]
                    };
                    g.initializer.push(scalar_tensor(
                        &bqn,
                        DataType::Int32,
                        bq.iter().flat_map(|v| v.to_le_bytes()).collect(),
                        &bd,
                    ));
                    g.initializer.push(seg_onnx::tensor_f32(&bs, &bpd, &bscales));
                    g.initializer
                        .push(scalar_tensor(&bz, DataType::Int32, vec![0; 4 * bscales.len()], &bpd));
                    let bax = axis.map(|_| 0);
                    head.push(qdq_node(
                        "DequantizeLinear",
                        &format!("{b}_DequantizeLinear"),
                        [&bqn, &bs, &bz],
                        &bdq,
                        bax,
                    ));
                    g.node[i].input[2] = bdq;
                    report.int32_bias = true;
                }
            }
            weights.push(report);
        }
    }

    // Node order: DQ of constants and graph-input QDQ first, then each node followed by the
    // QDQ pairs of its outputs (keeps the graph topologically sorted).
    let mut nodes = head;
    for n in g.node.drain(..) {
        let outs = n.output.clone();
        nodes.push(n);
        for o in outs {
            if let Some(extra) = after.remove(&o) {
                nodes.extend(extra);
            }
        }
    }
    if let Some((t, _)) = after.into_iter().next() {
        return Err(QuantizeError::Tensor {
            name: t,
            reason: "quantized tensor is produced by no node".into(),
        });
    }
    g.node = nodes;
    remove_unused_initializers(&mut g);
    Ok((g, weights))
}

fn channel_of(j: usize, dims: &[i64], axis: Option<usize>) -> usize {
    match axis {
        None => 0,
        Some(a) => {
            let inner: i64 = dims[a + 1..].iter().product();
            (j / inner.max(1) as usize) % dims[a].max(1) as usize
        }
    }
}

/// Symmetric int8 weights, per tensor or per channel along `axis`; returns the values and one
/// [`QParams`] per channel.
/// `reduce_range` keeps them in `[-63, 63]` ([`QParams::symmetric_i7`]).
fn quantize_weight(
    values: &[f32],
    dims: &[i64],
    axis: Option<usize>,
    reduce_range: bool,
) -> Result<(Vec<i8>, Vec<QParams>), String> {
    let channels = match axis {
        Some(a) if a < dims.len() && dims[a] > 0 => dims[a] as usize,
        Some(a) => return Err(format!("weight dims {dims:?} have no axis {a}")),
        None => 1,
    };
    let mut absmax = vec![0f32; channels];
    for (j, v) in values.iter().enumerate() {
        if !v.is_finite() {
            return Err(format!("weight value {v} is not finite"));
        }
        let c = channel_of(j, dims, axis);
        absmax[c] = absmax[c].max(v.abs());
    }
    let params: Vec<QParams> = absmax
        .iter()
        .map(|&m| {
            if reduce_range {
                QParams::symmetric_i7(m)
            } else {
                QParams::symmetric_i8(m)
            }
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let q = values
        .iter()
        .enumerate()
        .map(|(j, &v)| params[channel_of(j, dims, axis)].quantize(v) as i8)
        .collect();
    Ok((q, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #22: 7-bit weights stay within [-63, 63] per channel and round-trip within half a
    /// step; full range reaches ±127.
    #[test]
    fn issue22_reduced_range_weights() {
        let values = [0.5f32, -1.0, 0.25, 2.0, -0.1, 0.0];
        let dims = [2i64, 3];
        let (q, p) = quantize_weight(&values, &dims, Some(0), true).unwrap();
        assert!(q.iter().all(|v| (-63..=63).contains(v)), "{q:?}");
        assert_eq!((q[1], q[3]), (-63, 63));
        for (j, (&v, &qv)) in values.iter().zip(&q).enumerate() {
            let s = p[j / 3].scale;
            assert!((qv as f32 * s - v).abs() <= 0.5 * s + 1e-7);
        }
        let (q, _) = quantize_weight(&values, &dims, Some(0), false).unwrap();
        assert_eq!((q[1], q[3]), (-127, 127));
    }
}

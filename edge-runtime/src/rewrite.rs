//! Graph rewrites the runtime applies to a model before handing it to its backend. Each one
//! keeps the network's function (up to float rounding) and makes it cheaper in tract; each is
//! checked against the graph as written (tests here and in `segmenter`).
//!
//! - [`strip_final_resize`]: the final bilinear upsampling of the class scores is left to the
//!   runtime's arg-max, which interpolates straight to the frame size;
//! - [`resizes_to_matmuls`]: every other bilinear half-pixel `Resize` becomes two `MatMul`s with
//!   fixed interpolation matrices (the way `seg-nn` computes it in training), which run on
//!   tract's optimised, multi-threaded matrix kernels instead of its per-element Resize;
//! - [`fuse_qdq_pairs`]: an activation `QuantizeLinear → DequantizeLinear` pair (int8 QDQ graphs)
//!   becomes a chain of scalar `Mul`, `Max`, `Min`, `Add`, `Sub` on floats with the same values
//!   (the same clamp, round half to even), one pass that tract fuses, instead of a u8 tensor
//!   written and read back.

use seg_onnx::pb;

/// What [`prepare_graph`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrites {
    /// The final `Resize` that was removed.
    pub stripped_resize: Option<String>,
    /// How many `Resize` nodes became `MatMul`s.
    pub resizes_as_matmuls: usize,
    /// How many `QuantizeLinear → DequantizeLinear` pairs were fused.
    pub fused_qdq: usize,
}

/// Applies every rewrite; `input_hw` is the fixed network input size (the shapes of inner
/// tensors are inferred from it).
pub fn prepare_graph(proto: &mut pb::ModelProto, input_hw: (u32, u32)) -> Result<Rewrites, String> {
    let stripped_resize = strip_final_resize(proto);
    let resizes_as_matmuls = resizes_to_matmuls(proto, input_hw)?;
    let fused_qdq = fuse_qdq_pairs(proto);
    Ok(Rewrites {
        stripped_resize,
        resizes_as_matmuls,
        fused_qdq,
    })
}

/// The output size of a `Resize` that is bilinear with half-pixel centres, not anti-aliased,
/// without ROI, spatial only (batch and channels kept), with constant `sizes` or `scales`.
/// `Sizes` carries the four output sizes; `Scales` the four factors; `Spatial` the output
/// height and width of sizes computed as `Concat(Shape(x)[0:2], [h, w])` — batch and channels
/// of the input kept, the way `torch.onnx.export` writes `F.interpolate(x, size=(h, w))`.
#[derive(Debug, Clone, PartialEq)]
enum ResizeTo {
    Sizes(Vec<i64>),
    Scales(Vec<f32>),
    Spatial([i64; 2]),
}

/// The node that writes `name`.
fn producer<'g>(graph: &'g pb::GraphProto, name: &str) -> Option<&'g pb::NodeProto> {
    graph.node.iter().find(|n| n.output.iter().any(|o| o == name))
}

/// A constant tensor: an initializer or the `value` of a `Constant` node.
fn constant<'g>(graph: &'g pb::GraphProto, name: &str) -> Option<&'g pb::TensorProto> {
    if let Some(t) = graph.initializer.iter().find(|t| t.name == name) {
        return Some(t);
    }
    let node = producer(graph, name).filter(|n| n.op_type == "Constant")?;
    node.attribute.iter().find(|a| a.name == "value")?.t.as_ref()
}

/// The values of a constant int64 tensor.
fn constant_i64(graph: &pb::GraphProto, name: &str) -> Option<Vec<i64>> {
    let t = constant(graph, name)?;
    if t.data_type != pb::tensor_proto::DataType::Int64 as i32 {
        return None;
    }
    if t.int64_data.is_empty() {
        let raw = &t.raw_data;
        (raw.len() % 8 == 0).then(|| {
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect()
        })
    } else {
        Some(t.int64_data.clone())
    }
}

/// `[h, w]` when `sizes` is `Concat(axis 0; Slice(Shape(src), [0], [2]), [h, w])`: the resize
/// keeps the batch and channels of `src` and brings its spatial axes to constant sizes.
fn spatial_sizes(graph: &pb::GraphProto, sizes: &str, src: &str) -> Option<[i64; 2]> {
    let concat = producer(graph, sizes).filter(|n| n.op_type == "Concat" && n.input.len() == 2)?;
    let axis = concat.attribute.iter().find(|a| a.name == "axis").map(|a| a.i);
    if axis != Some(0) {
        return None;
    }
    let slice = producer(graph, &concat.input[0]).filter(|n| n.op_type == "Slice")?;
    let arg = |i: usize| slice.input.get(i).filter(|s| !s.is_empty());
    let shape = producer(graph, arg(0)?)
        .filter(|n| n.op_type == "Shape" && n.input.first().map(String::as_str) == Some(src))?;
    // opset 15's start/end attributes would take another part of the shape
    if !shape.attribute.is_empty() {
        return None;
    }
    let bounds = (constant_i64(graph, arg(1)?)?, constant_i64(graph, arg(2)?)?);
    let axes_ok = arg(3).is_none_or(|a| constant_i64(graph, a).as_deref() == Some(&[0]));
    let steps_ok = arg(4).is_none_or(|a| constant_i64(graph, a).as_deref() == Some(&[1]));
    if bounds != (vec![0], vec![2]) || !axes_ok || !steps_ok {
        return None;
    }
    match constant_i64(graph, &concat.input[1])?.as_slice() {
        &[h, w] if h > 0 && w > 0 => Some([h, w]),
        _ => None,
    }
}

fn bilinear_half_pixel(node: &pb::NodeProto, graph: &pb::GraphProto) -> Option<ResizeTo> {
    if node.op_type != "Resize" || node.input.is_empty() || node.output.len() != 1 {
        return None;
    }
    let attr = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let text = |name: &str| attr(name).map(|a| String::from_utf8_lossy(&a.s).into_owned());
    let linear = text("mode").as_deref() == Some("linear");
    let half_pixel = matches!(
        text("coordinate_transformation_mode").as_deref(),
        Some("half_pixel") | Some("pytorch_half_pixel")
    );
    let antialias = attr("antialias").is_some_and(|a| a.i != 0);
    let axes = attr("axes").is_some();
    let input = |i: usize| node.input.get(i).filter(|s| !s.is_empty());
    if !linear || !half_pixel || antialias || axes || input(1).is_some() {
        return None;
    }
    match (input(2), input(3)) {
        (Some(scales), None) => constant(graph, scales)
            .and_then(|t| seg_onnx::tensor_to_f32(t).ok())
            .filter(|v| v.len() == 4 && v[0] == 1.0 && v[1] == 1.0)
            .map(ResizeTo::Scales),
        (None, Some(sizes)) => match constant_i64(graph, sizes) {
            Some(v) => (v.len() == 4 && v[0] == 1).then_some(ResizeTo::Sizes(v)),
            None => spatial_sizes(graph, sizes, &node.input[0]).map(ResizeTo::Spatial),
        },
        _ => None,
    }
}

/// When the graph's only output is a bilinear, half-pixel, spatial-only `Resize` of the class
/// scores (edge-seg's exports end so, as do many PyTorch exports with `align_corners=False`,
/// whose sizes may be computed from the scores' shape), the node is removed with whatever only
/// fed it, and the low-resolution scores become the output.
/// [`crate::segmenter::argmax_resized`] then does the same half-pixel bilinear interpolation
/// straight to the frame size, row by row, without building the full-resolution `[C, H, W]`
/// tensor: tract's Resize was about a quarter of the inference time (docs/BENCHMARKS.md).
/// Returns the removed node's name.
pub fn strip_final_resize(proto: &mut pb::ModelProto) -> Option<String> {
    use pb::type_proto::Value;
    let graph = proto.graph.as_mut()?;
    if graph.output.len() != 1 {
        return None;
    }
    let out_name = graph.output[0].name.clone();
    let idx = graph.node.iter().position(|n| n.output.first() == Some(&out_name))?;
    bilinear_half_pixel(&graph.node[idx], graph)?;
    let node = graph.node.remove(idx);
    let src = node.input[0].clone();
    // nothing else may read the full-resolution output
    if graph.node.iter().any(|n| n.input.contains(&out_name)) {
        graph.node.insert(idx, node);
        return None;
    }
    let out = &mut graph.output[0];
    out.name = src;
    if let Some(Value::TensorType(t)) = out.r#type.as_mut().and_then(|t| t.value.as_mut()) {
        t.shape = None;
    }
    // the size computation of a PyTorch export (Shape → Slice → Concat) now feeds nothing
    prune_dead_nodes(graph);
    Some(node.name)
}

/// Removes the nodes whose outputs no node reads and no graph output names, until none is
/// left; returns how many went. A graph with subgraphs (`If`, `Loop`, `Scan`: their bodies may
/// read outer names) is left as it is.
fn prune_dead_nodes(graph: &mut pb::GraphProto) -> usize {
    let has_subgraphs = graph
        .node
        .iter()
        .any(|n| n.attribute.iter().any(|a| a.g.is_some() || !a.graphs.is_empty()));
    if has_subgraphs {
        return 0;
    }
    let before = graph.node.len();
    loop {
        let read: std::collections::HashSet<&str> = graph
            .node
            .iter()
            .flat_map(|n| n.input.iter())
            .chain(graph.output.iter().map(|o| &o.name))
            .map(String::as_str)
            .collect();
        let dead: Vec<usize> = (0..graph.node.len())
            .filter(|&i| !graph.node[i].output.iter().any(|o| read.contains(o.as_str())))
            .collect();
        if dead.is_empty() {
            break;
        }
        for i in dead.into_iter().rev() {
            graph.node.remove(i);
        }
    }
    before - graph.node.len()
}

/// The `[dst, src]` matrix of a half-pixel linear resize along one axis: row `d` holds the
/// weights of the source samples of output `d`.
pub fn interpolation_matrix(src: usize, dst: usize) -> Vec<f32> {
    let mut m = vec![0f32; dst * src];
    for (d, (i0, i1, f)) in seg_core::preprocess::half_pixel_taps(src, dst).into_iter().enumerate() {
        m[d * src + i0] += 1.0 - f;
        m[d * src + i1] += f;
    }
    m
}

/// Rewrites every eligible bilinear half-pixel `Resize` of a 4-D tensor (see the module doc) as
/// `MatMul(x, Aᵀ_w)` along the width, then `MatMul(A_h, ·)` along the height, with `A` from
/// [`interpolation_matrix`]; an axis whose size does not change gets no product. The input
/// shapes come from tract's shape inference at `input_hw`. Returns how many were rewritten.
pub fn resizes_to_matmuls(proto: &mut pb::ModelProto, input_hw: (u32, u32)) -> Result<usize, String> {
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(0);
    };
    let candidates: Vec<(usize, ResizeTo)> = graph
        .node
        .iter()
        .enumerate()
        .filter_map(|(i, n)| bilinear_half_pixel(n, graph).map(|t| (i, t)))
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    for &(i, _) in &candidates {
        if graph.node[i].name.is_empty() {
            graph.node[i].name = format!("edge_seg.resize.{i}");
        }
    }
    let names: Vec<String> = candidates.iter().map(|(i, _)| graph.node[*i].name.clone()).collect();
    let shapes = input_shapes(proto, input_hw, &names)?;
    let graph = proto.graph.as_mut().expect("checked above");
    let mut done = 0;
    // from the back, so the indices before the one being replaced stay valid
    for ((idx, to), shape) in candidates.into_iter().zip(shapes).rev() {
        let Some(shape) = shape.filter(|s| s.len() == 4) else {
            continue;
        };
        let (h_in, w_in) = (shape[2], shape[3]);
        let (h_out, w_out) = match to {
            // batch and channels must be kept: the matrices act on the last two axes only
            ResizeTo::Sizes(s) if s[1] as usize != shape[1] => continue,
            ResizeTo::Sizes(s) => (s[2] as usize, s[3] as usize),
            ResizeTo::Spatial([h, w]) => (h as usize, w as usize),
            ResizeTo::Scales(s) => {
                let (h, w) = ((h_in as f32 * s[2]).floor(), (w_in as f32 * s[3]).floor());
                // the half-pixel mapping uses the scale itself: only exact ratios match the
                // size-based matrices
                if h != h_in as f32 * s[2] || w != w_in as f32 * s[3] {
                    continue;
                }
                (h as usize, w as usize)
            }
        };
        // pytorch_half_pixel maps a length-1 output to 0, not to the centre
        if h_out <= 1 || w_out <= 1 || h_in == 0 || w_in == 0 {
            continue;
        }
        let node = graph.node.remove(idx);
        let (name, out) = (node.name.clone(), node.output[0].clone());
        let mut cur = node.input[0].clone();
        let mut nodes = Vec::new();
        let steps = [(w_in != w_out), (h_in != h_out)];
        if steps[0] {
            // [w_out, w_in] transposed to [w_in, w_out]: x [.., h, w_in] · Aᵀ -> [.., h, w_out]
            let a = interpolation_matrix(w_in, w_out);
            let mut at = vec![0f32; a.len()];
            for d in 0..w_out {
                for s in 0..w_in {
                    at[s * w_out + d] = a[d * w_in + s];
                }
            }
            let init = format!("{name}.interp_w");
            graph
                .initializer
                .push(seg_onnx::tensor_f32(&init, &[w_in as i64, w_out as i64], &at));
            let y = if steps[1] {
                format!("{name}.along_w")
            } else {
                out.clone()
            };
            nodes.push(matmul(&format!("{name}.matmul_w"), &cur, &init, &y));
            cur = y;
        }
        if steps[1] {
            // A [h_out, h_in] · x [.., h_in, w] -> [.., h_out, w]
            let init = format!("{name}.interp_h");
            graph.initializer.push(seg_onnx::tensor_f32(
                &init,
                &[h_out as i64, h_in as i64],
                &interpolation_matrix(h_in, h_out),
            ));
            nodes.push(matmul(&format!("{name}.matmul_h"), &init, &cur, &out));
        }
        if nodes.is_empty() {
            nodes.push(pb::NodeProto {
                op_type: "Identity".into(),
                name,
                input: vec![cur],
                output: vec![out],
                ..Default::default()
            });
        }
        for (k, n) in nodes.into_iter().enumerate() {
            graph.node.insert(idx + k, n);
        }
        done += 1;
    }
    Ok(done)
}

fn matmul(name: &str, a: &str, b: &str, out: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: "MatMul".into(),
        name: name.into(),
        input: vec![a.into(), b.into()],
        output: vec![out.into()],
        ..Default::default()
    }
}

/// The concrete input-0 shapes of the named nodes, from tract's shape inference.
fn input_shapes(
    proto: &pb::ModelProto,
    (h, w): (u32, u32),
    names: &[String],
) -> Result<Vec<Option<Vec<usize>>>, String> {
    use tract_onnx::prelude::*;
    // tract asserts on some graphs that pass validation: its panic is this model's error
    let model = crate::pipeline::catch_reported(|| {
        tract_onnx::onnx()
            .model_for_proto_model(proto)
            .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, h as usize, w as usize]).into()))
            .and_then(|m| m.into_typed())
            .map_err(|e| format!("{e:#}").replace('\n', " "))
    })
    .map_err(|p| {
        format!(
            "tract failed on this graph: {}",
            crate::pipeline::panic_message(p.as_ref())
        )
    })??;
    Ok(names
        .iter()
        .map(|n| {
            let node = model.node_by_name(n).ok()?;
            let fact = model.outlet_fact(*node.inputs.first()?).ok()?;
            fact.shape.as_concrete().map(|s| s.to_vec())
        })
        .collect())
}

/// A scalar initializer's value as f32 (`float`, `uint8`, `int8`), with its element type.
fn scalar(graph: &pb::GraphProto, name: &str) -> Option<(f32, i32)> {
    use pb::tensor_proto::DataType;
    let t = graph.initializer.iter().find(|t| t.name == name)?;
    if t.dims.iter().product::<i64>() != 1 {
        return None;
    }
    let dt = t.data_type;
    let v = if dt == DataType::Float as i32 {
        *seg_onnx::tensor_to_f32(t).ok()?.first()?
    } else if dt == DataType::Uint8 as i32 {
        match (t.raw_data.first(), t.int32_data.first()) {
            (Some(b), _) => *b as f32,
            (None, Some(v)) => *v as f32,
            _ => return None,
        }
    } else if dt == DataType::Int8 as i32 {
        match (t.raw_data.first(), t.int32_data.first()) {
            (Some(b), _) => *b as i8 as f32,
            (None, Some(v)) => *v as f32,
            _ => return None,
        }
    } else {
        return None;
    };
    Some((v, dt))
}

/// `1.5 · 2²³`: for `|v| < 2²²`, `(v + M) − M` in f32 is `v` rounded to the nearest integer,
/// ties to even (IEEE round-to-nearest), which is how `QuantizeLinear` rounds.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// Replaces each per-tensor `QuantizeLinear(x, s, z)` whose output only feeds
/// `DequantizeLinear`s with the same scale and zero point by
/// `s · round(clamp(x · (1/s), q_min − z, q_max − z))`, the value of the pair computed in floats:
/// clamping before rounding is the same for integer bounds, and the rounding is done by adding
/// and subtracting `1.5 · 2²³`, so the whole is a chain of scalar binary operations that
/// tract runs as one pass over the tensor (its `QuantizeLinear` also multiplies by `1/s`).
/// Returns how many pairs were fused.
pub fn fuse_qdq_pairs(proto: &mut pb::ModelProto) -> usize {
    use pb::tensor_proto::DataType;
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let mut fused = 0;
    let mut i = 0;
    while i < graph.node.len() {
        let q = &graph.node[i];
        let plan = (|| {
            if q.op_type != "QuantizeLinear" || q.input.len() != 3 || q.output.len() != 1 {
                return None;
            }
            let (s, s_dt) = scalar(graph, &q.input[1])?;
            let (z, z_dt) = scalar(graph, &q.input[2])?;
            let (lo, hi) = if z_dt == DataType::Uint8 as i32 {
                (0.0, 255.0)
            } else if z_dt == DataType::Int8 as i32 {
                (-128.0, 127.0)
            } else {
                return None;
            };
            if s_dt != DataType::Float as i32 || s.is_nan() || s <= 0.0 {
                return None;
            }
            let y = &q.output[0];
            if graph.output.iter().any(|o| &o.name == y) {
                return None;
            }
            let readers: Vec<usize> = (0..graph.node.len())
                .filter(|&k| graph.node[k].input.contains(y))
                .collect();
            let same = |k: &usize| {
                let d = &graph.node[*k];
                d.op_type == "DequantizeLinear"
                    && d.input.len() == 3
                    && d.input[0] == *y
                    && scalar(graph, &d.input[1]) == Some((s, s_dt))
                    && scalar(graph, &d.input[2]) == Some((z, z_dt))
            };
            if readers.is_empty() || !readers.iter().all(|k| *k > i && same(k)) {
                return None;
            }
            Some((q.input[0].clone(), q.input[1].clone(), s, lo - z, hi - z, readers))
        })();
        let Some((x, s_name, s, lo, hi, readers)) = plan else {
            i += 1;
            continue;
        };
        let base = if graph.node[i].name.is_empty() {
            format!("edge_seg.qdq.{i}")
        } else {
            graph.node[i].name.clone()
        };
        let outs: Vec<String> = readers.iter().map(|&k| graph.node[k].output[0].clone()).collect();
        for &k in readers.iter().rev() {
            graph.node.remove(k);
        }
        graph.node.remove(i);
        let inv = format!("{base}.inv_scale");
        let (qmin, qmax, magic) = (format!("{base}.qmin"), format!("{base}.qmax"), format!("{base}.round"));
        graph.initializer.push(seg_onnx::tensor_f32(&inv, &[], &[1.0 / s]));
        graph.initializer.push(seg_onnx::tensor_f32(&qmin, &[], &[lo]));
        graph.initializer.push(seg_onnx::tensor_f32(&qmax, &[], &[hi]));
        graph
            .initializer
            .push(seg_onnx::tensor_f32(&magic, &[], &[ROUND_MAGIC]));
        let node = |op: &str, suffix: &str, a: &str, b: &str, output: String| pb::NodeProto {
            op_type: op.into(),
            name: format!("{base}.{suffix}"),
            input: vec![a.to_string(), b.to_string()],
            output: vec![output],
            ..Default::default()
        };
        let t = |k: usize| format!("{base}.t{k}");
        let mut nodes = vec![
            node("Mul", "fq_scale", &x, &inv, t(0)),
            node("Max", "fq_max", &t(0), &qmin, t(1)),
            node("Min", "fq_min", &t(1), &qmax, t(2)),
            node("Add", "fq_add", &t(2), &magic, t(3)),
            node("Sub", "fq_sub", &t(3), &magic, t(4)),
            node("Mul", "fq_rescale", &t(4), &s_name, outs[0].clone()),
        ];
        for (k, o) in outs.iter().enumerate().skip(1) {
            nodes.push(pb::NodeProto {
                op_type: "Identity".into(),
                name: format!("{base}.copy{k}"),
                input: vec![outs[0].clone()],
                output: vec![o.clone()],
                ..Default::default()
            });
        }
        let n = nodes.len();
        for (k, nd) in nodes.into_iter().enumerate() {
            graph.node.insert(i + k, nd);
        }
        i += n;
        fused += 1;
    }
    fused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{tract::TractBackend, Backend};
    use seg_onnx::{Attr, GraphBuilder};
    use std::collections::BTreeMap;

    fn run(proto: &pb::ModelProto, hw: (u32, u32), input: &[f32]) -> Vec<f32> {
        TractBackend::new(proto, "test", hw).unwrap().run(input).unwrap().data
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32) * 0.07 - 3.0).collect()
    }

    /// `input [1,3,h,w] → Resize(linear, half_pixel) → Relu → output`.
    fn resize_model(
        hw: (usize, usize),
        sizes: Option<[i64; 4]>,
        scales: Option<[f32; 4]>,
        mode: &str,
    ) -> pb::ModelProto {
        let mut g = GraphBuilder::new("resize");
        g.input("input", &[1, 3, hw.0 as i64, hw.1 as i64]);
        let (sc, sz) = match (sizes, scales) {
            (Some(s), _) => (String::new(), g.init_i64("sizes", &[4], &s)),
            (_, Some(s)) => (g.init_f32("scales", &[4], &s), String::new()),
            _ => unreachable!(),
        };
        let y = g.node(
            "Resize",
            &["input", "", &sc, &sz],
            "up",
            &[
                ("mode", Attr::Str(mode.into())),
                ("coordinate_transformation_mode", Attr::Str("half_pixel".into())),
            ],
        );
        g.node("Relu", &[&y], "output", &[]);
        g.output("output", &[]);
        g.finish(&BTreeMap::new())
    }

    /// Up, down and by scales: the two-MatMul form computes tract's own Resize.
    #[test]
    fn resizes_as_matmuls_match_the_resize() {
        type Case = ((usize, usize), Option<[i64; 4]>, Option<[f32; 4]>);
        let cases: [Case; 4] = [
            ((6, 10), Some([1, 3, 15, 23]), None),
            ((12, 16), Some([1, 3, 5, 7]), None),
            ((8, 10), None, Some([1.0, 1.0, 2.0, 4.0])),
            ((7, 9), Some([1, 3, 7, 20]), None), // only the width changes
        ];
        for (hw, sizes, scales) in cases {
            let model = resize_model(hw, sizes, scales, "linear");
            let input = ramp(3 * hw.0 * hw.1);
            let want = run(&model, (hw.0 as u32, hw.1 as u32), &input);
            let mut rewritten = model.clone();
            assert_eq!(resizes_to_matmuls(&mut rewritten, (hw.0 as u32, hw.1 as u32)), Ok(1));
            let graph = rewritten.graph.as_ref().unwrap();
            assert!(graph.node.iter().all(|n| n.op_type != "Resize"));
            let got = run(&rewritten, (hw.0 as u32, hw.1 as u32), &input);
            assert_eq!(got.len(), want.len());
            let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff <= 1e-5, "{hw:?} {sizes:?} {scales:?}: max |diff| {diff}");
        }
        // nearest-neighbour resizes are left alone
        let mut nearest = resize_model((4, 4), Some([1, 3, 8, 8]), None, "nearest");
        assert_eq!(resizes_to_matmuls(&mut nearest, (4, 4)), Ok(0));
    }

    fn scalar_init(name: &str, dt: pb::tensor_proto::DataType, byte: u8) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            data_type: dt as i32,
            raw_data: vec![byte],
            ..Default::default()
        }
    }

    /// `input → QuantizeLinear → DequantizeLinear → Relu → output` with the given zero point.
    fn qdq_model(scale: f32, zp: pb::TensorProto) -> pb::ModelProto {
        let mut g = GraphBuilder::new("qdq");
        g.input("input", &[1, 3, 4, 20]);
        g.init_f32("s", &[], &[scale]);
        g.node("QuantizeLinear", &["input", "s", "z"], "q", &[]);
        g.node("DequantizeLinear", &["q", "s", "z"], "dq", &[]);
        g.node("Relu", &["dq"], "output", &[]);
        g.output("output", &[]);
        let mut m = g.finish(&BTreeMap::new());
        m.graph.as_mut().unwrap().initializer.push(zp);
        m
    }

    /// The fused float chain gives exactly the pair's values: ties (x/s = k + ½) round to even,
    /// values beyond the range clamp, for u8 and i8 zero points.
    #[test]
    fn fused_qdq_pairs_equal_quantize_dequantize() {
        use pb::tensor_proto::DataType;
        for (scale, zp) in [
            (0.05f32, scalar_init("z", DataType::Uint8, 128)),
            (0.1, scalar_init("z", DataType::Int8, (-3i8) as u8)),
        ] {
            let model = qdq_model(scale, zp);
            // ties, near-ties, a ramp and outliers far beyond the 256 levels
            let mut input: Vec<f32> = (-130..110).map(|k| (k as f32 + 0.5) * scale).collect();
            input.truncate(200);
            input.extend(ramp(40).iter().map(|v| v * 30.0));
            input.truncate(3 * 4 * 20);
            input.resize(3 * 4 * 20, 1e6);
            input[5] = -1e6;
            let want = run(&model, (4, 20), &input);
            let mut fused = model.clone();
            assert_eq!(fuse_qdq_pairs(&mut fused), 1);
            let graph = fused.graph.as_ref().unwrap();
            assert!(graph.node.iter().all(|n| !n.op_type.contains("QuantizeLinear")));
            let got = run(&fused, (4, 20), &input);
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-6, "x = {}: fused {a}, QDQ {b}", input[i]);
            }
        }
        // a pair whose dequantization uses another scale is not a pair
        let mut m = qdq_model(0.05, scalar_init("z", DataType::Uint8, 128));
        m.graph
            .as_mut()
            .unwrap()
            .initializer
            .push(seg_onnx::tensor_f32("s2", &[], &[0.1]));
        m.graph.as_mut().unwrap().node[1].input[1] = "s2".into();
        assert_eq!(fuse_qdq_pairs(&mut m), 0);
    }

    /// `input → Relu → x → Resize(x, sizes = Concat(Slice(Shape(x), [0], [2]), [h, w]))`, the
    /// way `torch.onnx.export` writes `F.interpolate(x, size=(h, w), mode="bilinear")`; `[h, w]`
    /// a `Constant` node as torch writes it; `tail` adds a `Relu` after the resize.
    fn torch_resize_model(hw: (i64, i64), to: [i64; 2], slice_end: i64, tail: bool) -> pb::ModelProto {
        let mut g = GraphBuilder::new("torch_resize");
        g.input("input", &[1, 3, hw.0, hw.1]);
        g.node("Relu", &["input"], "x", &[]);
        g.node("Shape", &["x"], "shape", &[]);
        g.init_i64("start", &[1], &[0]);
        g.init_i64("end", &[1], &[slice_end]);
        g.init_i64("axes", &[1], &[0]);
        g.node("Slice", &["shape", "start", "end", "axes"], "nc", &[]);
        g.init_i64("hw", &[2], &to);
        g.node("Concat", &["nc", "hw"], "sizes", &[("axis", Attr::Int(0))]);
        let up = if tail { "up" } else { "output" };
        g.node(
            "Resize",
            &["x", "", "", "sizes"],
            up,
            &[
                ("mode", Attr::Str("linear".into())),
                ("coordinate_transformation_mode", Attr::Str("half_pixel".into())),
            ],
        );
        if tail {
            g.node("Relu", &[up], "output", &[]);
        }
        g.output("output", &[]);
        let mut m = g.finish(&BTreeMap::new());
        // [h, w] as a Constant node
        let graph = m.graph.as_mut().unwrap();
        let at = graph.initializer.iter().position(|t| t.name == "hw").unwrap();
        let t = graph.initializer.remove(at);
        graph.node.insert(
            0,
            pb::NodeProto {
                op_type: "Constant".into(),
                name: "hw_const".into(),
                output: vec!["hw".into()],
                attribute: vec![pb::AttributeProto {
                    name: "value".into(),
                    r#type: pb::attribute_proto::AttributeType::Tensor as i32,
                    t: Some(t),
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        m
    }

    /// Issue #22: a PyTorch export computes the sizes of its final upsampling from the shape of
    /// the scores (torchvision's LR-ASPP does): that Resize is stripped too, with the size
    /// computation that then feeds nothing, and as an inner Resize it becomes MatMuls that
    /// compute tract's own Resize. Sizes that take more than batch and channels from the shape
    /// are left alone.
    #[test]
    fn issue22_torch_computed_sizes_are_recognised() {
        let mut m = torch_resize_model((6, 8), [15, 20], 2, false);
        assert!(strip_final_resize(&mut m).is_some());
        let graph = m.graph.as_ref().unwrap();
        let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(
            ops,
            ["Relu"],
            "the Shape → Slice → Concat chain and its Constant are gone"
        );
        assert_eq!(graph.output[0].name, "x");
        // the stripped graph gives the low-resolution scores
        let input = ramp(3 * 6 * 8);
        assert_eq!(run(&m, (6, 8), &input).len(), 3 * 6 * 8);

        let mut other = torch_resize_model((6, 8), [15, 20], 3, false);
        assert_eq!(
            strip_final_resize(&mut other),
            None,
            "Shape[0:3] is not batch and channels"
        );
        assert_eq!(other.graph.as_ref().unwrap().node.len(), 6, "nothing removed");

        let model = torch_resize_model((6, 8), [15, 20], 2, true);
        let want = run(&model, (6, 8), &input);
        let mut rewritten = model.clone();
        assert_eq!(resizes_to_matmuls(&mut rewritten, (6, 8)), Ok(1));
        let got = run(&rewritten, (6, 8), &input);
        assert_eq!(got.len(), want.len());
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-5, "max |diff| {diff}");
    }
}

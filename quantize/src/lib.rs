//! int8 quantization for edge-seg (issue #3): float ONNX → QDQ ONNX with calibration.
//!
//! Pipeline ([`quantize_model`]): [`prepare()`] (validate, `Constant` → initializers, BN folded
//! into Conv) → plan which activations and weights to quantize ([`qdq`]) → [`calibrate`] (run the
//! float graph in tract over images, per-tensor statistics, range by MinMax / Percentile /
//! Entropy) → write the QDQ graph → a second pass over the images measures clipping and SQNR of
//! every quantized activation for the [`Report`]. See `quantize/README.md` for what tract does
//! with the result.

pub mod calibrate;
pub mod params;
pub mod prepare;
pub mod qdq;
pub mod report;

use std::collections::BTreeMap;

use image::RgbImage;
use seg_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::prelude::*;

pub use calibrate::{load_images, Method, Preprocess, TensorStats, TractRunner};
pub use params::{sqnr_db, QParams, QuantError};
pub use prepare::{prepare, validate, PrepareSummary};
pub use qdq::WeightReport;
pub use report::{ActivationReport, Report};

/// Metadata key describing the quantization (JSON: method, target, types).
pub const META_QUANTIZATION: &str = "edge_seg.quantization";

/// Errors of the quantization pipeline. Graph errors name the node and its op.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    /// A node is malformed or cannot be quantized.
    #[error("node '{node}' (op {op}): {reason}")]
    Node {
        /// Node name (or `#index (first output)` when unnamed).
        node: String,
        /// Its op type.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is malformed.
    #[error("tensor '{name}': {reason}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The model has no graph.
    #[error("the model has no graph")]
    NoGraph,
    /// The model's opset is too old for QDQ.
    #[error("default-domain opset {0} is below 13 (needed for per-axis QuantizeLinear/DequantizeLinear)")]
    Opset(i64),
    /// Missing or bad edge-seg metadata.
    #[error("model metadata: {0}")]
    Meta(String),
    /// An option out of range (the caller's setting, not the model's fault).
    #[error("{option} {value}: {reason}")]
    Option {
        /// The option (its CLI flag).
        option: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// tract failed to load or run the graph.
    #[error("tract: {0}")]
    Tract(String),
    /// A file could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file or folder.
        path: String,
        /// The cause.
        reason: String,
    },
    /// No calibration images were given.
    #[error("no calibration images")]
    NoCalibration,
    /// Bad quantization parameters.
    #[error(transparent)]
    Params(#[from] QuantError),
}

/// The runtime the QDQ graph is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// tract: u8 activations, per-tensor weights, float biases.
    #[default]
    Tract,
    /// onnxruntime: u8 activations, per-channel weights if asked, int32 biases.
    OnnxRuntime,
    /// TensorRT: int8 symmetric activations, per-channel weights if asked, float biases.
    TensorRt,
}

/// Options of [`quantize_model`].
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantizeOptions {
    /// Activation range method.
    pub method: Method,
    /// Percentile in percent for [`Method::Percentile`] (e.g. 99.99).
    pub percentile: f64,
    /// Per-output-channel weight scales (ignored for [`Target::Tract`]).
    pub per_channel: bool,
    /// Target runtime.
    pub target: Target,
    /// Node names kept in float.
    pub exclude: Vec<String>,
    /// Keep the first and last weight layers (Conv/ConvTranspose/MatMul/Gemm) in float.
    pub keep_first_last_float: bool,
    /// 7-bit weights (`[-63, 63]`), for onnxruntime's U8S8 kernels on x86 CPUs without VNNI,
    /// which saturate on full-range weights (see [`params::QParams::symmetric_i7`]).
    pub reduce_range: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            method: Method::MinMax,
            percentile: 99.99,
            per_channel: true,
            target: Target::Tract,
            exclude: Vec::new(),
            keep_first_last_float: false,
            reduce_range: false,
        }
    }
}

/// Prepares, calibrates on `calib` (preprocessed per the model's edge-seg metadata) and writes
/// the QDQ model; metadata is kept and [`META_QUANTIZATION`] added.
pub fn quantize_model(
    proto: &pb::ModelProto,
    calib: &[RgbImage],
    opts: &QuantizeOptions,
) -> Result<(pb::ModelProto, Report), QuantizeError> {
    let pre = Preprocess::from_model(proto)?;
    quantize_model_with(proto, calib, opts, pre)
}

/// [`quantize_model`] with explicit preprocessing (for models without edge-seg metadata).
pub fn quantize_model_with(
    proto: &pb::ModelProto,
    calib: &[RgbImage],
    opts: &QuantizeOptions,
    pre: Preprocess,
) -> Result<(pb::ModelProto, Report), QuantizeError> {
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .unwrap_or(0);
    if opset < 13 {
        return Err(QuantizeError::Opset(opset));
    }
    if !(opts.percentile > 50.0 && opts.percentile <= 100.0) {
        return Err(QuantizeError::Option {
            option: "--percentile",
            value: opts.percentile.to_string(),
            reason: "must be in (50, 100]".into(),
        });
    }
    let (prepared, summary) = prepare::prepare(proto)?;
    let graph = prepared.graph.as_ref().ok_or(QuantizeError::NoGraph)?;
    let plan = qdq::plan(graph, opts)?;
    if calib.is_empty() {
        return Err(QuantizeError::NoCalibration);
    }
    let names: Vec<String> = plan.activations.keys().cloned().collect();
    let stats = calibrate::collect_stats(&prepared, &names, calib, pre)?;

    // Parameters per activation.
    let act_dtype = if opts.target == Target::TensorRt {
        DataType::Int8
    } else {
        DataType::Uint8
    };
    let mut acts: BTreeMap<String, qdq::ActQ> = BTreeMap::new();
    let mut ranges: BTreeMap<String, (f32, f32)> = BTreeMap::new();
    for (name, s) in &stats {
        let (lo, hi) = s.range(opts.method, opts.percentile);
        let params = if act_dtype == DataType::Int8 {
            QParams::symmetric_i8_activation(lo.abs().max(hi.abs()))?
        } else {
            QParams::asymmetric_u8(lo, hi)?
        };
        acts.insert(
            name.clone(),
            qdq::ActQ {
                params,
                dtype: act_dtype,
            },
        );
        ranges.insert(name.clone(), (lo, hi));
    }

    // Second pass: clipping and SQNR of every quantized activation.
    let mut acc: BTreeMap<String, (u64, u64, f64, f64)> = BTreeMap::new(); // clipped, n, signal, noise
    let runner = TractRunner::new(&prepared, &names, pre)?;
    for img in calib {
        for (name, t) in runner.run(img)? {
            let Some(q) = acts.get(&name) else { continue };
            let view = t.to_plain_array_view::<f32>().map_err(calibrate::tract_err)?;
            let (rlo, rhi) = q.params.range();
            let half = q.params.scale / 2.0;
            let e = acc.entry(name).or_default();
            for &x in view.iter().filter(|x| x.is_finite()) {
                e.0 += u64::from(x < rlo - half || x > rhi + half);
                e.1 += 1;
                e.2 += (x as f64).powi(2);
                e.3 += ((x - q.params.fake_quant(x)) as f64).powi(2);
            }
        }
    }

    let (mut out_graph, weights) = qdq::write(graph, &plan, &acts, opts)?;
    out_graph.name = format!("{}_qdq", graph.name);
    let node_names = |idx: &std::collections::BTreeSet<usize>| -> Vec<String> {
        idx.iter().map(|&i| prepare::node_label(i, &graph.node[i])).collect()
    };
    let activations = acts
        .iter()
        .map(|(name, q)| {
            let s = &stats[name];
            let (clipped, n, signal, noise) = acc.get(name).copied().unwrap_or_default();
            ActivationReport {
                tensor: name.clone(),
                consumers: plan.activations.get(name).map(node_names).unwrap_or_default(),
                shape: s.shape.clone(),
                dtype: if q.dtype == DataType::Int8 { "int8" } else { "uint8" }.into(),
                min: s.min,
                max: s.max,
                range_lo: ranges[name].0,
                range_hi: ranges[name].1,
                scale: q.params.scale,
                zero_point: q.params.zero_point,
                clip_fraction: if n == 0 { 0.0 } else { clipped as f64 / n as f64 },
                sqnr_db: if noise == 0.0 {
                    f64::INFINITY
                } else {
                    10.0 * (signal / noise).log10()
                },
            }
        })
        .collect();
    let report = Report {
        method: opts.method,
        percentile: opts.percentile,
        target: opts.target,
        per_channel: opts.per_channel && opts.target != Target::Tract,
        images: calib.len(),
        prepare: summary,
        activations,
        weights,
        skipped: plan.skipped.clone(),
        not_float: names.iter().filter(|n| !acts.contains_key(*n)).cloned().collect(),
    };

    let mut model = prepared.clone();
    model.graph = Some(out_graph);
    let desc = serde_json::json!({
        "method": opts.method,
        "percentile": opts.percentile,
        "target": opts.target,
        "activations": if act_dtype == DataType::Int8 { "int8 symmetric" } else { "uint8 asymmetric" },
        "weights": if report.per_channel { "int8 symmetric per-channel" } else { "int8 symmetric per-tensor" },
        "bias": if opts.target == Target::OnnxRuntime { "int32" } else { "float" },
        "calibration_images": calib.len(),
        "quantized_activations": report.activations.len(),
        "quantized_weights": report.weights.len(),
    });
    model.metadata_props.retain(|e| e.key != META_QUANTIZATION);
    model.metadata_props.push(pb::StringStringEntryProto {
        key: META_QUANTIZATION.into(),
        value: desc.to_string(),
    });
    Ok((model, report))
}

/// How close two models' outputs are on some images.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct OutputComparison {
    /// Share of pixels whose argmax over channels (axis 1 of `[1, C, H, W]`) agrees.
    pub argmax_agreement: f64,
    /// SQNR (dB) of the second model's first output vs the first's.
    pub sqnr_db: f64,
}

/// Runs both models in tract on `images` and compares their first outputs (`[1, C, H, W]`).
pub fn compare_outputs(
    reference: &pb::ModelProto,
    other: &pb::ModelProto,
    images: &[RgbImage],
    pre: Preprocess,
) -> Result<OutputComparison, QuantizeError> {
    let (a, b) = (
        TractRunner::new(reference, &[], pre)?,
        TractRunner::new(other, &[], pre)?,
    );
    let (mut agree, mut total, mut signal, mut noise) = (0u64, 0u64, 0f64, 0f64);
    for img in images {
        let (ya, yb) = (a.run(img)?, b.run(img)?);
        let va = ya[0].1.to_plain_array_view::<f32>().map_err(calibrate::tract_err)?;
        let vb = yb[0].1.to_plain_array_view::<f32>().map_err(calibrate::tract_err)?;
        if va.shape() != vb.shape() || va.ndim() != 4 {
            return Err(QuantizeError::Tensor {
                name: ya[0].0.clone(),
                reason: format!(
                    "outputs have shapes {:?} and {:?}, expected equal [1, C, H, W]",
                    va.shape(),
                    vb.shape()
                ),
            });
        }
        for (x, y) in va.iter().zip(vb.iter()) {
            signal += (*x as f64).powi(2);
            noise += ((x - y) as f64).powi(2);
        }
        let (c, h, w) = (va.shape()[1], va.shape()[2], va.shape()[3]);
        let argmax = |v: &tract_ndarray::ArrayViewD<f32>, y: usize, x: usize| {
            (0..c)
                .max_by(|&i, &j| v[[0, i, y, x]].total_cmp(&v[[0, j, y, x]]))
                .unwrap_or(0)
        };
        for y in 0..h {
            for x in 0..w {
                agree += u64::from(argmax(&va, y, x) == argmax(&vb, y, x));
                total += 1;
            }
        }
    }
    Ok(OutputComparison {
        argmax_agreement: if total == 0 { 0.0 } else { agree as f64 / total as f64 },
        sqnr_db: if noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (signal / noise).log10()
        },
    })
}

//! The quantization report: per quantized activation and weight, serialisable to JSON and
//! printable as a plain-text table.

use std::fmt::Write as _;

use crate::calibrate::Method;
use crate::prepare::PrepareSummary;
use crate::qdq::WeightReport;
use crate::Target;

/// One quantized activation tensor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActivationReport {
    /// ONNX tensor name.
    pub tensor: String,
    /// Nodes reading it through the QDQ pair.
    pub consumers: Vec<String>,
    /// Shape of one calibration sample.
    pub shape: Vec<usize>,
    /// `uint8` or `int8`.
    pub dtype: String,
    /// Smallest calibration value.
    pub min: f32,
    /// Largest calibration value.
    pub max: f32,
    /// Chosen range, lower end.
    pub range_lo: f32,
    /// Chosen range, upper end.
    pub range_hi: f32,
    /// Quantization step.
    pub scale: f32,
    /// Zero point.
    pub zero_point: i32,
    /// Share of calibration values outside the representable range (saturated).
    pub clip_fraction: f64,
    /// SQNR (dB) of the fake-quantized vs the float activation over the calibration set
    /// (`null` in JSON when infinite).
    pub sqnr_db: f64,
}

/// Everything a quantization run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Range method.
    pub method: Method,
    /// Percentile (used by [`Method::Percentile`]).
    pub percentile: f64,
    /// Target runtime.
    pub target: Target,
    /// Whether weights were quantized per channel.
    pub per_channel: bool,
    /// Calibration images.
    pub images: usize,
    /// Graph preparation.
    pub prepare: PrepareSummary,
    /// Quantized activations.
    pub activations: Vec<ActivationReport>,
    /// Quantized weights.
    pub weights: Vec<WeightReport>,
    /// Nodes left in float on purpose, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Candidate tensors that turned out not to be f32 (left alone).
    pub not_float: Vec<String>,
}

impl Report {
    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report is plain data")
    }

    /// Plain-text tables (activations, then weights).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "method {:?} (percentile {}), target {:?}, per-channel {}, {} calibration images, {} BN folded",
            self.method,
            self.percentile,
            self.target,
            self.per_channel,
            self.images,
            self.prepare.folded_bn.len()
        );
        let w = self
            .activations
            .iter()
            .map(|a| a.tensor.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            s,
            "{:<w$}  {:>5}  {:>10}  {:>10}  {:>10}  {:>4}  {:>8}  {:>7}",
            "tensor", "type", "lo", "hi", "scale", "zp", "clip %", "SQNR dB"
        );
        for a in &self.activations {
            let _ = writeln!(
                s,
                "{:<w$}  {:>5}  {:>10.4}  {:>10.4}  {:>10.3e}  {:>4}  {:>8.4}  {:>7.2}",
                a.tensor,
                a.dtype,
                a.range_lo,
                a.range_hi,
                a.scale,
                a.zero_point,
                100.0 * a.clip_fraction,
                a.sqnr_db
            );
        }
        let w = self.weights.iter().map(|a| a.name.len()).max().unwrap_or(6).max(6);
        let _ = writeln!(
            s,
            "{:<w$}  {:>6}  {:>10}  {:>10}  {:>7}  {:>5}",
            "weight", "scales", "scale min", "scale max", "SQNR dB", "bias"
        );
        for r in &self.weights {
            let _ = writeln!(
                s,
                "{:<w$}  {:>6}  {:>10.3e}  {:>10.3e}  {:>7.2}  {:>5}",
                r.name,
                r.scales,
                r.scale_min,
                r.scale_max,
                r.sqnr_db,
                if r.int32_bias { "i32" } else { "f32" }
            );
        }
        for (n, why) in &self.skipped {
            let _ = writeln!(s, "float: {n} ({why})");
        }
        s
    }
}

//! Calibration: running the float graph in tract over images, per-tensor statistics
//! (min/max + histograms) and the range choice (MinMax, Percentile, Entropy).

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbImage;
use seg_onnx::pb;
use tract_onnx::prelude::*;

use crate::QuantizeError;

/// How the quantization range of an activation is chosen from its calibration statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The exact observed `[min, max]`.
    #[default]
    MinMax,
    /// `[quantile(1 − p), quantile(p)]` of all values (both tails), from a 2048-bin histogram.
    Percentile,
    /// TensorRT's entropy calibrator: the `|x|` threshold minimising KL(P‖Q) between the
    /// clipped reference distribution and its 128-level quantised version.
    Entropy,
}

/// Number of histogram bins (TensorRT's entropy calibrator uses 2048).
pub const HIST_BINS: usize = 2048;
/// Quantised levels the entropy calibrator compares against (the int8 magnitude range).
pub const ENTROPY_LEVELS: usize = 128;

/// A histogram over `[lo, hi]` that widens (re-binning its counts by bin centre) when later
/// values fall outside. With `anchored` the lower end stays at 0 (for `|x|`).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Lower end of the first bin.
    pub lo: f32,
    /// Upper end of the last bin.
    pub hi: f32,
    /// Counts per bin, `[bins]`.
    pub counts: Vec<u64>,
    anchored: bool,
}

impl Histogram {
    /// An empty histogram of `bins` bins (`anchored`: lower end fixed at 0).
    pub fn new(bins: usize, anchored: bool) -> Self {
        Self {
            lo: 0.0,
            hi: 0.0,
            counts: vec![0; bins.max(1)],
            anchored,
        }
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Width of one bin.
    pub fn bin_width(&self) -> f32 {
        (self.hi - self.lo) / self.counts.len() as f32
    }

    /// Adds finite values (non-finite ones are ignored).
    pub fn add(&mut self, xs: &[f32]) {
        let (mut mn, mut mx) = (f32::INFINITY, f32::NEG_INFINITY);
        for &x in xs.iter().filter(|x| x.is_finite()) {
            mn = mn.min(x);
            mx = mx.max(x);
        }
        if mn > mx {
            return;
        }
        if self.anchored {
            mn = 0.0;
        }
        if self.total() == 0 {
            self.lo = mn;
            self.hi = if mx > mn {
                mx
            } else {
                mn + f32::EPSILON * mn.abs().max(1.0)
            };
        } else if mn < self.lo || mx > self.hi {
            self.widen(mn.min(self.lo), mx.max(self.hi));
        }
        let n = self.counts.len();
        let scale = n as f32 / (self.hi - self.lo);
        for &x in xs.iter().filter(|x| x.is_finite()) {
            let i = ((x - self.lo) * scale).floor().clamp(0.0, (n - 1) as f32) as usize;
            self.counts[i] += 1;
        }
    }

    fn widen(&mut self, lo: f32, hi: f32) {
        let n = self.counts.len();
        let old_w = self.bin_width() as f64;
        let new_w = (hi - lo) as f64 / n as f64;
        let mut counts = vec![0u64; n];
        for (i, &c) in self.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let centre = self.lo as f64 + (i as f64 + 0.5) * old_w;
            let j = ((centre - lo as f64) / new_w).floor().clamp(0.0, (n - 1) as f64) as usize;
            counts[j] += c;
        }
        self.counts = counts;
        self.lo = lo;
        self.hi = hi;
    }

    /// The value below which a fraction `q` (0..=1) of the counts lie, interpolated linearly
    /// inside the bin that crosses it.
    pub fn quantile(&self, q: f64) -> f32 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let target = q.clamp(0.0, 1.0) * total as f64;
        let w = self.bin_width() as f64;
        let mut acc = 0.0f64;
        for (i, &c) in self.counts.iter().enumerate() {
            let next = acc + c as f64;
            if next >= target && c > 0 {
                let frac = ((target - acc) / c as f64).clamp(0.0, 1.0);
                return (self.lo as f64 + (i as f64 + frac) * w) as f32;
            }
            acc = next;
        }
        self.hi
    }
}

/// Statistics of one activation tensor over the calibration set.
#[derive(Debug, Clone)]
pub struct TensorStats {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    /// Number of values seen.
    pub count: u64,
    /// Histogram of the values.
    pub signed: Histogram,
    /// Histogram of `|x|`.
    pub abs: Histogram,
    /// Shape of one sample (as tract computed it).
    pub shape: Vec<usize>,
}

impl Default for TensorStats {
    fn default() -> Self {
        Self {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            count: 0,
            signed: Histogram::new(HIST_BINS, false),
            abs: Histogram::new(HIST_BINS, true),
            shape: Vec::new(),
        }
    }
}

impl TensorStats {
    /// Statistics of `xs` alone (convenience for tests and tools).
    pub fn from_values(xs: &[f32]) -> Self {
        let mut s = Self::default();
        s.add(xs);
        s
    }

    /// Accumulates values.
    pub fn add(&mut self, xs: &[f32]) {
        for &x in xs.iter().filter(|x| x.is_finite()) {
            self.min = self.min.min(x);
            self.max = self.max.max(x);
            self.count += 1;
        }
        self.signed.add(xs);
        let abs: Vec<f32> = xs.iter().map(|x| x.abs()).collect();
        self.abs.add(&abs);
    }

    /// The range `[lo, hi]` to quantise to with `method` (`percentile` in percent, used by
    /// [`Method::Percentile`]). Always inside `[min, max]`; `[0, 0]` if nothing was seen.
    pub fn range(&self, method: Method, percentile: f64) -> (f32, f32) {
        if self.count == 0 {
            return (0.0, 0.0);
        }
        let (lo, hi) = match method {
            Method::MinMax => (self.min, self.max),
            Method::Percentile => {
                let p = (percentile / 100.0).clamp(0.5, 1.0);
                (self.signed.quantile(1.0 - p), self.signed.quantile(p))
            }
            Method::Entropy => {
                let t = entropy_threshold(&self.abs.counts, self.abs.bin_width());
                (-t, t)
            }
        };
        (lo.max(self.min), hi.min(self.max))
    }
}

/// TensorRT's KL-divergence threshold over a histogram of `|x|` (`counts[i]` covers
/// `[i·w, (i+1)·w)`): for every candidate end bin `i` in `128..=n`, the reference `P` is
/// `counts[..i]` with all outliers added to its last bin, `Q` is `counts[..i]` merged into 128
/// levels and spread back evenly over the non-empty bins; returns `i·w` for the `i` with the
/// smallest KL(P‖Q). With fewer than 128 bins, returns the histogram's end.
pub fn entropy_threshold(counts: &[u64], bin_width: f32) -> f32 {
    let n = counts.len();
    if n <= ENTROPY_LEVELS {
        return n as f32 * bin_width;
    }
    let mut best = (f64::INFINITY, n);
    let mut p = vec![0f64; n];
    let mut q = vec![0f64; n];
    let mut suffix = vec![0u64; n + 1]; // suffix[i] = sum(counts[i..])
    for i in (0..n).rev() {
        suffix[i] = suffix[i + 1] + counts[i];
    }
    if suffix[0] == 0 {
        return 0.0;
    }
    for i in ENTROPY_LEVELS..=n {
        for (pk, &c) in p[..i].iter_mut().zip(&counts[..i]) {
            *pk = c as f64;
        }
        p[i - 1] += suffix[i] as f64;
        for j in 0..ENTROPY_LEVELS {
            let (start, end) = (j * i / ENTROPY_LEVELS, (j + 1) * i / ENTROPY_LEVELS);
            let chunk = &counts[start..end];
            let total: u64 = chunk.iter().sum();
            let nonzero = chunk.iter().filter(|&&c| c > 0).count();
            for (k, &c) in chunk.iter().enumerate() {
                q[start + k] = if c > 0 { total as f64 / nonzero as f64 } else { 0.0 };
            }
        }
        let kl = kl_divergence(&p[..i], &q[..i]);
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 * bin_width
}

/// KL(P‖Q) of two unnormalised histograms after normalising and smoothing (TensorRT / MXNet
/// `_smooth_distribution`, ε = 1e-4) so that empty bins do not make it infinite.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    fn smooth(h: &[f64]) -> Option<Vec<f64>> {
        let sum: f64 = h.iter().sum();
        if sum <= 0.0 {
            return None;
        }
        let eps = 1e-4;
        let zeros = h.iter().filter(|&&v| v == 0.0).count();
        let nonzeros = h.len() - zeros;
        if nonzeros == 0 {
            return None;
        }
        let eps1 = eps * zeros as f64 / nonzeros as f64;
        Some(h.iter().map(|&v| if v == 0.0 { eps } else { v / sum - eps1 }).collect())
    }
    let (Some(p), Some(q)) = (smooth(p), smooth(q)) else {
        return f64::INFINITY;
    };
    p.iter()
        .zip(&q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| a * (a / b.max(1e-12)).ln())
        .sum()
}

/// How images become network inputs: resize to `input_hw`, `(x/255 − mean)/std`, CHW.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Network input `(height, width)`.
    pub input_hw: (u32, u32),
    /// Per-channel mean (on 0..1 pixels).
    pub mean: [f32; 3],
    /// Per-channel std.
    pub std: [f32; 3],
}

impl Preprocess {
    /// From the edge-seg metadata of a model (`edge_seg.input_height`/`width`/`mean`/`std`).
    pub fn from_model(proto: &pb::ModelProto) -> Result<Self, QuantizeError> {
        let meta = seg_core::meta::ModelMeta::from_map(&seg_onnx::metadata(proto)).map_err(QuantizeError::Meta)?;
        Ok(Self {
            input_hw: meta.input_hw,
            mean: meta.mean,
            std: meta.std,
        })
    }

    /// One image as a `[1, 3, h, w]` f32 tensor.
    pub fn tensor(&self, img: &RgbImage) -> Tensor {
        let (h, w) = self.input_hw;
        let resized;
        let img = if img.dimensions() == (w, h) {
            img
        } else {
            resized = seg_core::preprocess::resize_rgb(img, h, w);
            &resized
        };
        let data = seg_core::preprocess::normalize(img, self.mean, self.std);
        tract_ndarray::Array4::from_shape_vec((1, 3, h as usize, w as usize), data)
            .expect("normalize returns 3*h*w values")
            .into_tensor()
    }
}

pub(crate) fn tract_err(e: TractError) -> QuantizeError {
    QuantizeError::Tract(format!("{e:#}").replace('\n', " "))
}

/// A float (or QDQ) graph in tract, with extra named tensors exposed as outputs.
pub struct TractRunner {
    plan: std::sync::Arc<TypedSimplePlan>,
    names: Vec<String>,
    pre: Preprocess,
}

impl TractRunner {
    /// Builds an optimised plan whose outputs are the graph's outputs followed by the tensors
    /// `extra` (ONNX tensor names), for a fixed `[1, 3, h, w]` input.
    pub fn new(proto: &pb::ModelProto, extra: &[String], pre: Preprocess) -> Result<Self, QuantizeError> {
        let (h, w) = pre.input_hw;
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(tract_err)?
            .with_input_fact(0, f32::fact([1, 3, h as usize, w as usize]).into())
            .map_err(tract_err)?;
        let graph = proto.graph.as_ref().ok_or(QuantizeError::NoGraph)?;
        let mut names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        names.extend(extra.iter().filter(|n| !names.contains(n)).cloned().collect::<Vec<_>>());
        model.select_outputs_by_name(&names).map_err(tract_err)?;
        let plan = model
            .into_optimized()
            .map_err(tract_err)?
            .into_runnable()
            .map_err(tract_err)?;
        Ok(Self { plan, names, pre })
    }

    /// Runs one image; returns `(tensor name, value)` for every output, graph outputs first.
    pub fn run(&self, img: &RgbImage) -> Result<Vec<(String, TValue)>, QuantizeError> {
        let out = self.plan.run(tvec!(self.pre.tensor(img).into())).map_err(tract_err)?;
        Ok(self.names.iter().cloned().zip(out).collect())
    }
}

/// Runs the float graph over `images` and collects statistics of the tensors `names`.
/// Tensors that turn out not to be f32 (shape arithmetic, indices) are left out of the result.
pub fn collect_stats(
    proto: &pb::ModelProto,
    names: &[String],
    images: &[RgbImage],
    pre: Preprocess,
) -> Result<BTreeMap<String, TensorStats>, QuantizeError> {
    let runner = TractRunner::new(proto, names, pre)?;
    let mut stats: BTreeMap<String, TensorStats> = BTreeMap::new();
    for img in images {
        for (name, t) in runner.run(img)? {
            if !names.contains(&name) || t.datum_type() != f32::datum_type() {
                continue;
            }
            let view = t.to_plain_array_view::<f32>().map_err(tract_err)?;
            let values: Vec<f32> = view.iter().copied().collect();
            let s = stats.entry(name).or_default();
            s.shape = view.shape().to_vec();
            s.add(&values);
        }
    }
    Ok(stats)
}

/// Loads every `.png` / `.jpg` / `.jpeg` file of a folder (sorted by name) as RGB.
pub fn load_images(dir: &Path) -> Result<Vec<RgbImage>, QuantizeError> {
    let io = |e: std::io::Error| QuantizeError::Io {
        path: dir.display().to_string(),
        reason: e.to_string(),
    };
    let paths = seg_core::io::image_files(dir).map_err(io)?;
    if paths.is_empty() {
        return Err(QuantizeError::NoCalibration);
    }
    paths
        .iter()
        .map(|p| {
            image::open(p).map(|i| i.to_rgb8()).map_err(|e| QuantizeError::Io {
                path: p.display().to_string(),
                reason: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded uniform values in the open interval (0, 1).
    fn uniform(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| (rng.random_range(0u32..1 << 24) as f32 + 0.5) / (1u32 << 24) as f32)
            .collect()
    }

    fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let u = uniform(2 * n, seed);
        u.chunks_exact(2)
            .map(|c| (-2.0 * c[0].ln()).sqrt() * (std::f32::consts::TAU * c[1]).cos())
            .collect()
    }

    #[test]
    fn minmax_is_the_exact_extremes() {
        let xs = [0.3f32, -1.25, 7.5, 2.0, f32::NAN, 0.0];
        let s = TensorStats::from_values(&xs);
        assert_eq!(s.range(Method::MinMax, 99.99), (-1.25, 7.5));
        assert_eq!(s.count, 5);
    }

    #[test]
    fn percentile_is_close_to_the_known_quantile() {
        // Uniform on (0, 10): the 99th percentile is 9.9, the 1st 0.1.
        let xs: Vec<f32> = uniform(200_000, 1).iter().map(|u| 10.0 * u).collect();
        let s = TensorStats::from_values(&xs);
        let (lo, hi) = s.range(Method::Percentile, 99.0);
        assert!((hi - 9.9).abs() < 0.03, "{hi}");
        assert!((lo - 0.1).abs() < 0.03, "{lo}");
        // A single huge outlier does not move the 99.9th percentile of a Gaussian much (≈ 3.09).
        let mut g = gaussian(200_000, 2);
        g.push(1000.0);
        let s = TensorStats::from_values(&g);
        let (_, hi) = s.range(Method::Percentile, 99.9);
        assert!((hi - 3.09).abs() < 0.8, "{hi}");
        assert_eq!(s.range(Method::MinMax, 0.0).1, 1000.0);
    }

    #[test]
    fn histogram_widening_keeps_counts_and_range() {
        let mut h = Histogram::new(64, false);
        h.add(&[0.0, 1.0, 0.5]);
        h.add(&[-3.0, 4.0]);
        assert_eq!(h.total(), 5);
        assert_eq!((h.lo, h.hi), (-3.0, 4.0));
        let q = h.quantile(1.0);
        assert!(q <= 4.0 && q > 3.8, "{q}");
    }

    #[test]
    fn entropy_clips_a_long_tail_below_its_max() {
        // |Gaussian| with a few far outliers: KL keeps the bulk, clips the tail.
        let mut g = gaussian(100_000, 3);
        g.extend([40.0, -35.0, 50.0]);
        let s = TensorStats::from_values(&g);
        let (lo, hi) = s.range(Method::Entropy, 0.0);
        assert!(hi < 0.5 * s.max, "threshold {hi} not below max {}", s.max);
        assert!(hi > 2.0, "threshold {hi} clips the bulk of N(0,1)");
        assert!(lo < -2.0 && lo >= s.min);
    }

    #[test]
    fn entropy_keeps_a_bounded_uniform_distribution_nearly_whole() {
        let xs: Vec<f32> = uniform(100_000, 4).iter().map(|u| 2.0 * u - 1.0).collect();
        let s = TensorStats::from_values(&xs);
        let (_, hi) = s.range(Method::Entropy, 0.0);
        assert!(hi > 0.9, "{hi}");
    }
}

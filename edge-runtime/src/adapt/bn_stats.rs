//! The encoder's BatchNorm statistics re-estimated on frames of a new scene, on the exported
//! graph (AdaBN without the training checkpoint; `encoder_stats = α`; issue #25).
//!
//! An exported edge-seg model has every BatchNorm folded into the convolution before it, so a
//! folded convolution's output `y` is the BatchNorm's output: on the source domain each channel
//! has the mean `β` and spread `|γ|` the BatchNorm gives it. Re-normalising with other
//! statistics is then a per-channel affine of `y`. With `μ_s, σ_s` the statistics of `y` on
//! source frames (`guard.source_frames`) and `μ_t, σ_t` on the new frames, the BatchNorm with the
//! blended statistics `μ = (1 − α) μ_s + α μ_t`, `σ² = (1 − α) σ_s² + α σ_t²` is
//!
//! ```text
//! y' = (σ_s / σ) · (y − μ) + μ_s
//! ```
//!
//! folded back into the convolution's kernel and bias, so the graph keeps its shape and speed.
//! `α = 1` is AdaBN (Li et al. 2017), `α` in between the source/target blend of Schneider et al.
//! (2020). `edge-seg-train adabn` is the training-side twin: it reads the source statistics from
//! the checkpoint instead of measuring them on a few source frames, and measures every layer in
//! one training-mode pass (lower layers normalised by the frames' own statistics) where this
//! measures each level through the lower levels' blended corrections; below `α = 1` the two
//! blends are not on the same scale.
//!
//! The guards of `edge-seg adapt` take the re-estimated model as their source: they do not
//! check (or roll back) what the re-estimation itself changes.
//!
//! A layer's new-frame statistics depend on the corrections of the layers before it (AdaBN
//! normalises each layer given the re-normalised ones before). Correcting every layer from one
//! measurement compounds: each later layer rescales inputs that the earlier corrections already
//! rescaled (on a ResNet this overshot by orders of magnitude, and iterating oscillated). So the
//! layers are corrected level by level: a tract plan of the graph up to one level's outputs,
//! with every lower level already corrected, measures that level (layers of one level do not feed
//! each other). That is a plan and a run over the frames per level: about one per layer of depth.

use seg_core::meta::ModelMeta;
use seg_core::preprocess::normalize_resized_into;
use seg_onnx::pb;
use tract_onnx::prelude::*;

use crate::RuntimeError;

/// Added to variances before square roots.
const EPS: f64 = 1e-5;

/// One folded convolution whose statistics are re-estimated.
#[derive(Debug, Clone)]
struct Layer {
    weight: String,
    bias: String,
    output: String,
}

/// What a re-estimation did.
#[derive(Debug, Clone, PartialEq)]
pub struct BnStatsReport {
    /// Folded convolutions corrected.
    pub layers: usize,
    /// Levels measured one after the other (tract plans built and run over the frames).
    pub levels: usize,
    /// Frames measured: the new ones and the source ones.
    pub frames: usize,
    /// Source frames measured.
    pub source_frames: usize,
    /// Mean over the first level's channels of `|μ_t − μ_s| / σ_s`: how far the new frames sit
    /// from the source statistics where no correction has acted yet.
    pub shift: f64,
}

/// The folded convolutions whose kernel is an initializer named `<prefix>….weight` with a bias
/// initializer, in graph order.
fn layers(graph: &pb::GraphProto, prefix: &str) -> Vec<Layer> {
    let is_init = |n: &str| graph.initializer.iter().any(|t| t.name == n && t.data_type == 1);
    graph
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" && n.input.len() == 3 && n.output.len() == 1)
        .filter(|n| n.input[1].starts_with(prefix) && is_init(&n.input[1]) && is_init(&n.input[2]))
        .map(|n| Layer {
            weight: n.input[1].clone(),
            bias: n.input[2].clone(),
            output: n.output[0].clone(),
        })
        .collect()
}

/// Per layer, per channel: (mean, population variance) of the layers' outputs over `inputs`
/// (normalised `3 · h · w` frames), from one tract plan of `model` that outputs all of them.
fn measure(
    model: &pb::ModelProto,
    layers: &[Layer],
    inputs: &[Vec<f32>],
    hw: (usize, usize),
    origin: &str,
) -> Result<Vec<Vec<(f64, f64)>>, RuntimeError> {
    let model_err = |reason: String| RuntimeError::Model {
        path: origin.to_string(),
        reason: format!("encoder statistics: {reason}"),
    };
    let outs: Vec<&str> = layers.iter().map(|l| l.output.as_str()).collect();
    let g = seg_onnx::extract(model, &[], &outs).map_err(|e| model_err(e.to_string()))?;
    let plan = crate::backend::tract::plan(&g, [1, 3, hw.0, hw.1])
        .map_err(|e| model_err(format!("{e:#}").replace('\n', " ")))?;
    // per layer: per channel (sum, sum of squares), and the values per channel summed over
    let mut sums: Vec<Vec<(f64, f64)>> = vec![Vec::new(); layers.len()];
    let mut counts = vec![0f64; layers.len()];
    for x in inputs {
        let t = tract_ndarray::Array4::from_shape_vec((1, 3, hw.0, hw.1), x.clone())
            .map_err(|e| model_err(e.to_string()))?
            .into_tensor();
        let res = plan.run(tvec!(t.into())).map_err(|e| model_err(format!("{e:#}")))?;
        for (i, r) in res.iter().enumerate().take(layers.len()) {
            let v = r.to_plain_array_view::<f32>().map_err(|e| model_err(e.to_string()))?;
            let shape = v.shape().to_vec();
            if shape.len() != 4 || shape[0] != 1 {
                return Err(model_err(format!(
                    "'{}' has shape {shape:?}, not [1, c, h, w]",
                    outs[i]
                )));
            }
            let (c, plane) = (shape[1], shape[2] * shape[3]);
            let flat = v
                .as_slice()
                .ok_or_else(|| model_err("a non-contiguous output".into()))?;
            if sums[i].is_empty() {
                sums[i] = vec![(0.0, 0.0); c];
            }
            for (ch, s) in sums[i].iter_mut().enumerate() {
                for &y in &flat[ch * plane..(ch + 1) * plane] {
                    s.0 += y as f64;
                    s.1 += (y as f64) * (y as f64);
                }
            }
            counts[i] += plane as f64;
        }
    }
    Ok(sums
        .into_iter()
        .zip(counts)
        .map(|(s, n)| {
            s.into_iter()
                .map(|(a, b)| {
                    let m = a / n.max(1.0);
                    (m, (b / n.max(1.0) - m * m).max(0.0))
                })
                .collect()
        })
        .collect())
}

/// Frames resized to the model's input and normalised as its metadata says.
fn prepare(frames: &[image::RgbImage], meta: &ModelMeta) -> Vec<Vec<f32>> {
    let (h, w) = meta.input_hw;
    frames
        .iter()
        .map(|f| {
            let mut x = vec![0f32; 3 * h as usize * w as usize];
            normalize_resized_into(f, h, w, meta.mean, meta.std, &mut x);
            x
        })
        .collect()
}

/// Per layer, its level: how many of the other layers lie on the longest path from the input
/// to it. Layers of one level do not feed each other, so one measurement serves them all once
/// every lower level is corrected.
fn levels(graph: &pb::GraphProto, layers: &[Layer]) -> Vec<usize> {
    use std::collections::HashMap;
    let mut depth: HashMap<&str, usize> = HashMap::new();
    let mut level: HashMap<&str, usize> = HashMap::new();
    for n in &graph.node {
        let d = n
            .input
            .iter()
            .filter_map(|i| depth.get(i.as_str()))
            .copied()
            .max()
            .unwrap_or(0);
        let is_layer = layers.iter().any(|l| n.output.first() == Some(&l.output));
        if is_layer {
            level.insert(n.output[0].as_str(), d);
        }
        for o in &n.output {
            depth.insert(o.as_str(), d + is_layer as usize);
        }
    }
    layers
        .iter()
        .map(|l| level.get(l.output.as_str()).copied().unwrap_or(0))
        .collect()
}

/// `model` with the statistics of the folded convolutions whose kernels are named `prefix…`
/// re-estimated on `frames`, blended with those measured on `source` by `mix` (see the module
/// docs). Level by level ([`levels`]): each level's statistics are measured on the graph whose
/// lower levels are already corrected (at `mix = 1`, as AdaBN's forward pass in training mode
/// would see them). `origin` names the model in errors.
pub fn reestimate(
    model: &pb::ModelProto,
    origin: &str,
    source: &[image::RgbImage],
    frames: &[image::RgbImage],
    mix: f64,
    prefix: &str,
) -> Result<(pb::ModelProto, BnStatsReport), RuntimeError> {
    let model_err = |reason: String| RuntimeError::Model {
        path: origin.to_string(),
        reason: format!("encoder statistics: {reason}"),
    };
    if !(0.0..=1.0).contains(&mix) || source.is_empty() || frames.is_empty() {
        return Err(RuntimeError::Adapt(format!(
            "encoder statistics: need mix in [0, 1] ({mix}), source frames ({}) and frames ({})",
            source.len(),
            frames.len()
        )));
    }
    let meta = ModelMeta::from_map(&seg_onnx::metadata(model))
        .map_err(|e| model_err(format!("not an edge-seg model: {e}")))?;
    let graph = model.graph.as_ref().ok_or_else(|| model_err("no graph".into()))?;
    let layers = layers(graph, prefix);
    if layers.is_empty() {
        return Err(model_err(format!(
            "no folded convolution with a '{prefix}*' kernel and a bias (a BN-folded float edge-seg model is needed)"
        )));
    }
    let level = levels(graph, &layers);
    let hw = (meta.input_hw.0 as usize, meta.input_hw.1 as usize);
    let src = measure(model, &layers, &prepare(source, &meta), hw, origin)?;
    let tgt_inputs = prepare(frames, &meta);
    let (mut shift, mut n) = (0.0, 0usize);
    let mut current = model.clone();
    let top = level.iter().copied().max().unwrap_or(0);
    for lv in 0..=top {
        let idx: Vec<usize> = (0..layers.len()).filter(|&i| level[i] == lv).collect();
        if idx.is_empty() {
            continue;
        }
        let these: Vec<Layer> = idx.iter().map(|&i| layers[i].clone()).collect();
        let seen = measure(&current, &these, &tgt_inputs, hw, origin)?;
        for (&i, t) in idx.iter().zip(&seen) {
            let l = &layers[i];
            let s = &src[i];
            if s.len() != t.len() {
                return Err(model_err(format!("'{}' changed its channel count", l.weight)));
            }
            // y' = k · y + c per output channel, folded into the kernel and the bias
            let (mut k, mut c) = (Vec::with_capacity(s.len()), Vec::with_capacity(s.len()));
            for (&(ms, vs), &(mt, vt)) in s.iter().zip(t) {
                let sd = (vs + EPS).sqrt();
                if lv == 0 {
                    shift += (mt - ms).abs() / sd;
                    n += 1;
                }
                let m = (1.0 - mix) * ms + mix * mt;
                let v = (1.0 - mix) * vs + mix * vt;
                let kk = sd / (v + EPS).sqrt();
                k.push(kk);
                c.push(ms - kk * m);
            }
            let get = |name: &str| -> Result<(Vec<i64>, Vec<f32>), RuntimeError> {
                let t = graph
                    .initializer
                    .iter()
                    .find(|t| t.name == name)
                    .expect("listed by layers()");
                Ok((
                    t.dims.clone(),
                    seg_onnx::tensor_to_f32(t).map_err(|e| model_err(e.to_string()))?,
                ))
            };
            let ((wd, w), (_, b)) = (get(&l.weight)?, get(&l.bias)?);
            let out_ch = k.len();
            if wd.first().copied() != Some(out_ch as i64) || b.len() != out_ch || w.len() % out_ch != 0 {
                return Err(model_err(format!(
                    "'{}' does not have {out_ch} output channels",
                    l.weight
                )));
            }
            let per = w.len() / out_ch;
            let w2: Vec<f32> = w
                .iter()
                .enumerate()
                .map(|(j, &x)| (x as f64 * k[j / per]) as f32)
                .collect();
            let b2: Vec<f32> = b
                .iter()
                .zip(k.iter().zip(&c))
                .map(|(&x, (&kk, &cc))| (kk * x as f64 + cc) as f32)
                .collect();
            if w2.iter().chain(&b2).any(|x| !x.is_finite()) {
                return Err(model_err(format!(
                    "'{}': the re-estimated statistics are not finite",
                    l.weight
                )));
            }
            seg_onnx::set_initializer(&mut current, &l.weight, &w2).map_err(|e| model_err(e.to_string()))?;
            seg_onnx::set_initializer(&mut current, &l.bias, &b2).map_err(|e| model_err(e.to_string()))?;
        }
    }
    Ok((
        current,
        BnStatsReport {
            layers: layers.len(),
            levels: top + 1,
            frames: frames.len(),
            source_frames: source.len(),
            shift: shift / n.max(1) as f64,
        },
    ))
}

/// At most this many frames (spread evenly over the list) are measured.
pub const MAX_FRAMES: usize = 64;

/// [`reestimate`] on the encoder (`encoder.*` kernels) of the ONNX `bytes`, from the source frames
/// in folder `source_dir` and the frames `files` (at most [`MAX_FRAMES`] of each, spread evenly);
/// returns the new model's bytes.
pub fn reestimate_encoder(
    bytes: &[u8],
    origin: &str,
    source_dir: &std::path::Path,
    files: &[std::path::PathBuf],
    mix: f64,
) -> Result<(Vec<u8>, BnStatsReport), RuntimeError> {
    let spread = |v: &[std::path::PathBuf]| -> Vec<std::path::PathBuf> {
        let step = v.len().div_ceil(MAX_FRAMES).max(1);
        v.iter().step_by(step).cloned().collect()
    };
    let src_paths = super::source_frame_files(source_dir)?;
    let source = super::read_frames(&spread(&src_paths))?;
    let frames = super::read_frames(&spread(files))?;
    let model = seg_onnx::decode(bytes).map_err(|e| RuntimeError::Model {
        path: origin.to_string(),
        reason: format!("not a valid ONNX model: {e}"),
    })?;
    let (m, report) = reestimate(&model, origin, &source, &frames, mix, "encoder.")?;
    Ok((seg_onnx::encode(&m), report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> pb::ModelProto {
        seg_onnx::decode(crate::SMALL_MODEL).unwrap()
    }

    fn day() -> Vec<image::RgbImage> {
        crate::DEFAULT_SAMPLES
            .iter()
            .map(|(_, b)| image::load_from_memory(b).unwrap().to_rgb8())
            .collect()
    }

    /// The day samples darkened and tinted (a dusk-like shift).
    fn dusk() -> Vec<image::RgbImage> {
        day()
            .into_iter()
            .map(|mut f| {
                for p in f.pixels_mut() {
                    let [r, g, b] = p.0;
                    p.0 = [
                        (r as f32 * 0.35) as u8,
                        (g as f32 * 0.4) as u8,
                        (b as f32 * 0.55 + 10.0) as u8,
                    ];
                }
                f
            })
            .collect()
    }

    fn inits(m: &pb::ModelProto) -> Vec<(String, Vec<f32>)> {
        m.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .filter(|t| t.data_type == 1)
            .map(|t| (t.name.clone(), seg_onnx::tensor_to_f32(t).unwrap()))
            .collect()
    }

    /// Mean over the encoder's folded convolutions and channels of `|μ_a − μ_b| / σ_b`: model `a`
    /// on frames `fa` against model `b` on frames `fb`.
    fn distance(a: &pb::ModelProto, fa: &[image::RgbImage], b: &pb::ModelProto, fb: &[image::RgbImage]) -> f64 {
        let meta = ModelMeta::from_map(&seg_onnx::metadata(a)).unwrap();
        let hw = (meta.input_hw.0 as usize, meta.input_hw.1 as usize);
        let ls = layers(a.graph.as_ref().unwrap(), "encoder.");
        let sa = measure(a, &ls, &prepare(fa, &meta), hw, "a").unwrap();
        let sb = measure(b, &ls, &prepare(fb, &meta), hw, "b").unwrap();
        let (mut d, mut n) = (0.0, 0);
        for (la, lb) in sa.iter().zip(&sb) {
            for (&(ma, _), &(mb, vb)) in la.iter().zip(lb) {
                d += (ma - mb).abs() / (vb + EPS).sqrt();
                n += 1;
            }
        }
        d / n as f64
    }

    /// Issue #25: with α = 1 the re-estimated encoder gives the new frames the statistics the
    /// source encoder gives the source frames, at every folded convolution (what AdaBN does).
    #[test]
    fn issue25_encoder_statistics_reach_the_source_statistics() {
        let (m, day, dusk) = (model(), day(), dusk());
        let before = distance(&m, &dusk, &m, &day);
        let (new, r) = reestimate(&m, "small", &day, &dusk, 1.0, "encoder.").unwrap();
        assert!(
            r.layers > 5 && r.levels > 5 && r.levels <= r.layers && r.shift > 0.2,
            "{r:?}"
        );
        let after = distance(&new, &dusk, &m, &day);
        assert!(
            after < 1e-3 * before,
            "distance to the source statistics: {before} -> {after}"
        );
        // half way: the blend sits between
        let (half, _) = reestimate(&m, "small", &day, &dusk, 0.5, "encoder.").unwrap();
        let mid = distance(&half, &dusk, &m, &day);
        assert!(after < mid && mid < before, "{before} > {mid} > {after}");
    }

    /// Issue #25: `mix = 0` and the source frames themselves change nothing; the decoder and
    /// classifier are never touched.
    #[test]
    fn issue25_encoder_statistics_identities() {
        let (m, day, dusk) = (model(), day(), dusk());
        let (zero, _) = reestimate(&m, "small", &day, &dusk, 0.0, "encoder.").unwrap();
        assert_eq!(inits(&zero), inits(&m));
        let (same, r) = reestimate(&m, "small", &day, &day, 1.0, "encoder.").unwrap();
        assert!(r.shift < 1e-6, "{r:?}");
        for ((n, a), (_, b)) in inits(&same).iter().zip(inits(&m).iter()) {
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= 1e-4 * y.abs().max(1e-2), "{n}: {y} -> {x}");
            }
        }
        let (moved, _) = reestimate(&m, "small", &day, &dusk, 0.7, "encoder.").unwrap();
        let changed: Vec<String> = inits(&moved)
            .into_iter()
            .zip(inits(&m))
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect();
        assert!(
            !changed.is_empty() && changed.iter().all(|n| n.starts_with("encoder.")),
            "{changed:?}"
        );
    }

    #[test]
    fn bad_settings_and_models_are_errors() {
        let (m, day) = (model(), day());
        assert!(reestimate(&m, "small", &day, &day, 1.5, "encoder.").is_err());
        assert!(reestimate(&m, "small", &[], &day, 1.0, "encoder.").is_err());
        let e = reestimate(&m, "small", &day, &day, 1.0, "nothing.")
            .unwrap_err()
            .to_string();
        assert!(e.contains("small") && e.contains("nothing."), "{e}");
    }
}

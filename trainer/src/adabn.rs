//! AdaBN: a run's BatchNorm statistics re-estimated on unlabeled frames of a new scene, then
//! exported (`edge-seg-train adabn`; issue #25, "encoder BN statistics" among the adaptation
//! scopes).
//!
//! No gradient and no label: the model runs in training mode over the frames, so every BatchNorm
//! normalises with the statistics of its own inputs given the layers before it, already
//! re-normalised (Li et al., "Revisiting Batch Normalization For Practical Domain Adaptation",
//! 2017). Each batch's per-channel mean and unbiased variance are read back from the running
//! statistics ([`seg_nn::layers::BN_MOMENTUM`]); the frames' statistics are their pooled mean
//! and variance (the mean of the batch variances plus the variance of the batch means, batches
//! weighted by their frames). `mix`
//! blends them with the source statistics, `(1 − mix) · source + mix · frames`, as Schneider et
//! al. ("Improving robustness against common corruptions by covariate shift adaptation", 2020)
//! blend source and target statistics with a prior; `mix = 1` is AdaBN. `scope` says which layers
//! change: the encoder's BatchNorms only, or every BatchNorm.
//!
//! The source statistics are the running ones of training: random-scale crops with photometric
//! augmentation, not whole frames, so even frames of the training scene move them a little. The
//! device's twin (`edge-seg adapt`, `encoder_stats`, `edge_seg_runtime::adapt::bn_stats`) works
//! on the exported graph instead: it measures the source statistics on a few source frames and
//! each layer through the lower layers' blended corrections, where this measures every layer
//! in one training-mode pass (each lower layer normalised by the frames' own statistics). The
//! two agree at `mix = 1` up to the source statistics; below it their mixes are not the same
//! scale.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use seg_core::preprocess::normalize_resized_into;
use seg_nn::layers::BN_MOMENTUM;
use seg_nn::SegModel;

use crate::config::TrainConfig;

/// Which BatchNorms get the new statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// The encoder's (`encoder.*`); the decoder keeps the source statistics.
    Encoder,
    /// Every BatchNorm of the network.
    All,
}

impl Scope {
    fn covers(self, name: &str) -> bool {
        match self {
            Scope::Encoder => name.starts_with("encoder."),
            Scope::All => true,
        }
    }
}

/// Settings of one re-estimation.
#[derive(Debug, Clone)]
pub struct AdaBnOptions {
    /// Which BatchNorms change.
    pub scope: Scope,
    /// Weight of the frames' statistics, in [0, 1] (1 = AdaBN).
    pub mix: f64,
    /// Frames per forward pass.
    pub batch: usize,
}

impl AdaBnOptions {
    /// Checks the ranges (errors name the flags of `edge-seg-train adabn`).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..=1.0).contains(&self.mix),
            "--mix must be in [0, 1], got {}",
            self.mix
        );
        ensure!(self.batch >= 1, "--batch must be at least 1");
        Ok(())
    }
}

/// What a re-estimation did, for the log and the tests.
#[derive(Debug, Clone)]
pub struct AdaBnReport {
    /// BatchNorm layers whose statistics changed.
    pub layers: usize,
    /// Frames seen.
    pub frames: usize,
    /// Mean over the changed layers of `|frames' mean − source mean| / sqrt(source var)` per channel:
    /// how far the frames sit from the source statistics.
    pub mean_shift: f64,
}

/// The image files of `dir` whose names start with `prefix` (all when `None`), sorted.
pub fn frame_files(dir: &Path, prefix: Option<&str>) -> Result<Vec<PathBuf>> {
    let mut files = seg_core::io::image_files(dir)
        .with_context(|| format!("--frames {}: cannot list the folder", dir.display()))?;
    if let Some(p) = prefix {
        files.retain(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with(p)));
    }
    if files.is_empty() {
        bail!(
            "--frames {}: no .png or .jpg frames{}",
            dir.display(),
            prefix.map(|p| format!(" starting with '{p}'")).unwrap_or_default()
        );
    }
    Ok(files)
}

/// The running-statistics variables of `varmap` (`…running_mean` / `…running_var`), by name.
fn running_stats(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut v: Vec<(String, candle_core::Var)> = data
        .iter()
        .filter(|(n, _)| n.ends_with(".running_mean") || n.ends_with(".running_var"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Re-estimates the BatchNorm statistics of `model` (whose variables are `varmap`) on `frames`
/// (decoded RGB, any size: resized to `cfg.data.input_size` and normalised as in training).
/// The variables outside `opts.scope` end as they started.
pub fn reestimate(
    model: &SegModel,
    varmap: &VarMap,
    cfg: &TrainConfig,
    frames: &[image::RgbImage],
    opts: &AdaBnOptions,
) -> Result<AdaBnReport> {
    opts.validate()?;
    ensure!(!frames.is_empty(), "no frames to estimate the statistics on");
    let dev = Device::Cpu;
    let stats = running_stats(varmap);
    ensure!(!stats.is_empty(), "the model has no BatchNorm statistics");
    let source: HashMap<String, Tensor> = stats
        .iter()
        .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
        .collect::<candle_core::Result<_>>()?;
    // per variable: sum over batches of the batch values, and (means only) of their squares
    let mut sum: HashMap<String, Tensor> = HashMap::new();
    let mut sum_sq: HashMap<String, Tensor> = HashMap::new();
    let [h, w] = cfg.data.input_size;
    let (h, w) = (h as usize, w as usize);
    for chunk in frames.chunks(opts.batch) {
        let mut x = vec![0f32; chunk.len() * 3 * h * w];
        for (k, img) in chunk.iter().enumerate() {
            normalize_resized_into(
                img,
                h as u32,
                w as u32,
                cfg.data.mean,
                cfg.data.std,
                &mut x[k * 3 * h * w..(k + 1) * 3 * h * w],
            );
        }
        // zero running values: after the pass each holds BN_MOMENTUM × the batch's value
        for (_, v) in &stats {
            v.set(&v.as_tensor().zeros_like()?)?;
        }
        let input = Tensor::from_vec(x, (chunk.len(), 3, h, w), &dev)?;
        model.forward_t(&input, true)?;
        // each batch weighs by its frames (a short last batch counts for what it holds)
        let wb = chunk.len() as f64;
        for (n, v) in &stats {
            let b = (v.as_tensor() / BN_MOMENTUM)?;
            if n.ends_with(".running_mean") {
                let sq = (b.sqr()? * wb)?;
                sum_sq
                    .entry(n.clone())
                    .and_modify(|s| *s = (&*s + &sq).expect("same shape"))
                    .or_insert(sq);
            }
            let b = (b * wb)?;
            sum.entry(n.clone())
                .and_modify(|s| *s = (&*s + &b).expect("same shape"))
                .or_insert(b);
        }
    }
    let nb = frames.len() as f64;
    let mut layers = 0usize;
    let mut shifts = Vec::new();
    for (n, v) in &stats {
        let src = &source[n];
        if !opts.scope.covers(n) {
            v.set(src)?;
            continue;
        }
        let mean_of = |name: &str| -> candle_core::Result<Tensor> { &sum[name] / nb };
        let target = if let Some(base) = n.strip_suffix(".running_var") {
            // pooled variance: mean of the batch variances + variance of the batch means (both
            // weighted by the batches' frames)
            let mname = format!("{base}.running_mean");
            let m = mean_of(&mname)?;
            let between = ((&sum_sq[&mname] / nb)? - m.sqr()?)?.relu()?;
            (mean_of(n)? + between)?
        } else {
            layers += 1;
            let m = mean_of(n)?;
            let var_src = &source[&format!("{}.running_var", n.trim_end_matches(".running_mean"))];
            let z = ((&m - src)?.abs()? / (var_src + 1e-5)?.sqrt()?)?;
            shifts.push(z.mean_all()?.to_scalar::<f32>()? as f64);
            m
        };
        let blended = ((src * (1.0 - opts.mix))? + (target * opts.mix)?)?;
        let finite = blended.flatten_all()?.to_vec1::<f32>()?.iter().all(|x| x.is_finite());
        ensure!(finite, "{n}: the re-estimated statistics are not finite");
        v.set(&blended)?;
    }
    Ok(AdaBnReport {
        layers,
        frames: frames.len(),
        mean_shift: if shifts.is_empty() {
            0.0
        } else {
            shifts.iter().sum::<f64>() / shifts.len() as f64
        },
    })
}

/// Reads `files` as RGB frames; the first unreadable one is an error naming it.
pub fn load_frames(files: &[PathBuf]) -> Result<Vec<image::RgbImage>> {
    files
        .iter()
        .map(|p| {
            image::open(p)
                .map(|i| i.to_rgb8())
                .with_context(|| format!("{}: not a readable image", p.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use seg_core::preprocess::normalize_into;

    use super::*;
    use candle_core::DType;
    use candle_nn::VarBuilder;
    use image::{Rgb, RgbImage};

    fn setup() -> (TrainConfig, VarMap, SegModel) {
        let mut cfg = TrainConfig::default();
        cfg.data.input_size = [96, 128];
        cfg.model = seg_nn::ModelConfig::tiny();
        let varmap = VarMap::new();
        let model = SegModel::new(&cfg.model, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        seg_nn::init::reseed(&varmap, 1).unwrap(); // the seeded init (the builder's is all zeros)
        (cfg, varmap, model)
    }

    /// Frames far from what a freshly initialised net's statistics (mean 0, variance 1) describe:
    /// dark, low-contrast, tinted.
    fn dark_frames(n: u32) -> Vec<RgbImage> {
        (0..n)
            .map(|i| {
                RgbImage::from_fn(128, 96, |x, y| {
                    let v = ((x * 7 + y * 13 + i * 31) % 40) as u8;
                    Rgb([v / 2 + 5, v / 2 + 8, v + 20])
                })
            })
            .collect()
    }

    fn input(cfg: &TrainConfig, frames: &[RgbImage]) -> Tensor {
        let (h, w) = (96, 128);
        let mut x = vec![0f32; frames.len() * 3 * h * w];
        for (k, f) in frames.iter().enumerate() {
            normalize_into(
                f,
                cfg.data.mean,
                cfg.data.std,
                &mut x[k * 3 * h * w..(k + 1) * 3 * h * w],
            );
        }
        Tensor::from_vec(x, (frames.len(), 3, h, w), &Device::Cpu).unwrap()
    }

    fn values(varmap: &VarMap) -> Vec<(String, Vec<f32>)> {
        running_stats(varmap)
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
            .collect()
    }

    fn dist(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Issue #25: after AdaBN on a set of frames (one batch, every layer), evaluation mode
    /// normalises those frames as training mode does on them: the logits move from the source
    /// statistics' to the frames' own (up to the unbiased-variance factor of small maps).
    #[test]
    fn issue25_adabn_eval_mode_matches_the_frames_own_normalisation() {
        let (cfg, varmap, model) = setup();
        let frames = dark_frames(4);
        let x = input(&cfg, &frames);
        let before = model.logits(&x).unwrap();
        let running = values(&varmap);
        let own = model.forward_t(&x, true).unwrap().logits;
        for ((n, v), (_, was)) in running_stats(&varmap).iter().zip(&running) {
            v.set(&Tensor::from_vec(was.clone(), was.len(), &Device::Cpu).unwrap())
                .unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        let opts = AdaBnOptions {
            scope: Scope::All,
            mix: 1.0,
            batch: 4,
        };
        let r = reestimate(&model, &varmap, &cfg, &frames, &opts).unwrap();
        assert!(r.layers > 5 && r.frames == 4, "{r:?}");
        assert!(
            r.mean_shift > 0.1,
            "the dark frames are far from the init statistics: {r:?}"
        );
        let after = model.logits(&x).unwrap();
        let (d0, d1) = (dist(&before, &own), dist(&after, &own));
        assert!(
            d1 < 0.1 * d0,
            "eval after AdaBN {d1} vs before {d0} from the train-mode logits"
        );
    }

    /// Issue #25: `mix = 0` changes nothing; the encoder scope leaves the decoder's statistics as
    /// they were and changes the encoder's; two batches pool to the one-batch statistics at the
    /// first layer (whose input no normalisation touches).
    #[test]
    fn issue25_adabn_scope_mix_and_pooling() {
        let frames = dark_frames(4);
        let (cfg, varmap, model) = setup();
        let src = values(&varmap);
        let none = AdaBnOptions {
            scope: Scope::All,
            mix: 0.0,
            batch: 2,
        };
        reestimate(&model, &varmap, &cfg, &frames, &none).unwrap();
        for ((n, a), (_, b)) in values(&varmap).iter().zip(&src) {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                    "{n}: mix 0 changed {y} to {x}"
                );
            }
        }
        let enc = AdaBnOptions {
            scope: Scope::Encoder,
            mix: 1.0,
            batch: 2,
        };
        reestimate(&model, &varmap, &cfg, &frames, &enc).unwrap();
        let two = values(&varmap);
        for ((n, a), (_, b)) in two.iter().zip(&src) {
            if n.starts_with("encoder.") {
                assert!(a != b, "{n}: the encoder scope left it unchanged");
            } else {
                assert_eq!(a, b, "{n}: outside the encoder scope");
            }
        }
        let (cfg1, varmap1, model1) = setup();
        let one = AdaBnOptions {
            scope: Scope::Encoder,
            mix: 1.0,
            batch: 4,
        };
        reestimate(&model1, &varmap1, &cfg1, &frames, &one).unwrap();
        let one = values(&varmap1);
        let first = "encoder.stem.0.bn.running_";
        let mut seen = 0;
        for ((n, a), (_, b)) in two.iter().zip(&one) {
            if n.starts_with(first) {
                seen += 1;
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 2e-3 * y.abs().max(1e-2),
                        "{n}: two batches {x}, one batch {y}"
                    );
                }
            }
        }
        assert_eq!(seen, 2, "no statistics named {first}*");
    }

    #[test]
    fn adabn_rejects_bad_settings() {
        let (cfg, varmap, model) = setup();
        let frames = dark_frames(1);
        for (mix, batch) in [(1.5, 1), (-0.1, 1), (f64::NAN, 1), (1.0, 0)] {
            let opts = AdaBnOptions {
                scope: Scope::All,
                mix,
                batch,
            };
            assert!(
                reestimate(&model, &varmap, &cfg, &frames, &opts).is_err(),
                "mix {mix} batch {batch}"
            );
        }
        let opts = AdaBnOptions {
            scope: Scope::All,
            mix: 1.0,
            batch: 1,
        };
        assert!(reestimate(&model, &varmap, &cfg, &[], &opts).is_err());
        let dir = tempfile::tempdir().unwrap();
        let e = frame_files(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("--frames") && e.contains("no .png"), "{e}");
    }
}

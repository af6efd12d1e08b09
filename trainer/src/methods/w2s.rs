//! Weak-to-strong consistency in the style of FixMatch / UniMatch (Yang et al., CVPR 2023): the
//! strongest public anchor the seeds' methods are judged against (issue #25).
//!
//! Per unlabeled crop, one weak view (scale, crop, flip) and one strong view (the same crop with
//! photometric jitter, blur and grayscale):
//!
//! 1. The model, in training mode, encodes the weak view once. Its scores on those features
//!    give the pseudo-labels `ŷ = argmax p_w` and confidences `max p_w` (no gradient).
//! 2. **Image-level stream**: the strong view is CutMixed with the next crop of the batch inside
//!    a random box (as [`super::cps`] does); the pseudo-labels and confidences are mixed with the
//!    same box; `L_s = Σ 1{conf ≥ τ, valid} · CE(model(strong_mix), ŷ_mix) / #valid`.
//! 3. **Feature-level stream** (UniMatch's "FP"): channel dropout (Dropout2d, p = `fp_dropout`)
//!    on both encoder outputs of the weak view, then the decoder; `L_fp` is the same masked CE
//!    against `ŷ`. It shares the encoder pass with step 1, as UniMatch does.
//!
//! `L = CE(labeled) + λ_s L_s + λ_fp L_fp` (UniMatch with one strong view: λ_s = λ_fp = 0.5 and
//! an overall ½ that only rescales the learning rate; here the supervised term keeps weight 1).
//!
//! What differs from UniMatch: one strong view instead of two (the 2-core budget; UniMatch's
//! second view is its "dual-stream" gain), the CutMix partner is the next crop of the same
//! batch rather than a separately loaded image, and the pseudo-labels of the mixed-in crop come
//! from its training-mode prediction (UniMatch predicts the mix partner in evaluation mode).

use candle_core::{DType, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seg_nn::{consistency, loss};
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};

/// The `[w2s]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct W2sConfig {
    /// τ: confidence a weak-view pixel needs to supervise (UniMatch: 0.95).
    pub threshold: f32,
    /// λ_s: weight of the image-level (strong view) stream.
    pub weight_strong: f64,
    /// λ_fp: weight of the feature-perturbation stream (0 turns it off).
    pub weight_fp: f64,
    /// Channel-dropout probability of the feature stream (UniMatch: 0.5).
    pub fp_dropout: f32,
    /// CutMix the strong view with the next crop of the batch.
    pub cutmix: bool,
    /// `[min, max]` fraction of the crop covered by the CutMix box.
    pub cutmix_area: [f32; 2],
    /// Supervised-only steps before the unlabeled losses start.
    pub warmup_iterations: u64,
}

impl Default for W2sConfig {
    fn default() -> Self {
        Self {
            threshold: 0.95,
            weight_strong: 0.5,
            weight_fp: 0.5,
            fp_dropout: 0.5,
            cutmix: true,
            cutmix_area: [0.25, 0.5],
            warmup_iterations: 0,
        }
    }
}

impl W2sConfig {
    /// Checks ranges.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.threshold) {
            return Err(format!("w2s.threshold {} must be in [0, 1]", self.threshold));
        }
        if !(0.0..1.0).contains(&self.fp_dropout) {
            return Err(format!("w2s.fp_dropout {} must be in [0, 1)", self.fp_dropout));
        }
        for (k, v) in [("weight_strong", self.weight_strong), ("weight_fp", self.weight_fp)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("w2s.{k} {v} must be finite and >= 0"));
            }
        }
        let [lo, hi] = self.cutmix_area;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(format!("w2s.cutmix_area [{lo}, {hi}] must satisfy 0 < min <= max <= 1"));
        }
        Ok(())
    }
}

/// The weak-to-strong method (stateless between steps apart from its statistics).
pub struct WeakToStrong {
    cfg: W2sConfig,
    seed: u64,
    stats: Vec<(&'static str, f64)>,
}

impl WeakToStrong {
    /// Registry constructor.
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        Ok(Box::new(Self {
            cfg: init.cfg.w2s.clone(),
            seed: init.cfg.schedule.seed,
            stats: Vec::new(),
        }))
    }
}

/// Dropout2d: each `[b, c]` channel of `x` `[b, c, h, w]` zeroed with probability `p`, the kept
/// ones scaled by `1 / (1 − p)`.
pub fn channel_dropout(x: &Tensor, p: f32, rng: &mut impl Rng) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    let keep = 1.0 / (1.0 - p);
    let m: Vec<f32> = (0..b * c)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    x.broadcast_mul(&Tensor::from_vec(m, (b, c, 1, 1), x.device())?)
}

impl Method for WeakToStrong {
    fn name(&self) -> &'static str {
        "w2s"
    }

    fn unlabeled_view(&self) -> UnlabeledView {
        UnlabeledView::Views
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        let (out, ce) = super::supervised_ce(ctx)?;
        let dev = out.logits.device().clone();
        self.stats.clear();
        let Some(UnlabeledBatch::Views {
            strong, weak, valid, ..
        }) = ctx.unlabeled
        else {
            candle_core::bail!("w2s: the step has no unlabeled views");
        };
        if ctx.iteration < self.cfg.warmup_iterations {
            return Ok(vec![
                ("ce", ce),
                ("strong", super::zero(&dev)?),
                ("fp", super::zero(&dev)?),
            ]);
        }
        let (b, _, h, w) = weak.dims4()?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x3257 ^ ctx.iteration.wrapping_mul(0x9e37_79b9));
        let (low, high) = ctx.model.encoder.forward_t(weak, true)?; // [b,w1,h/4,w/4], [b,w4,h/32,w/32]
        let p_w = ctx
            .model
            .decode_t(&low.detach(), &high.detach(), (h, w), true)?
            .logits
            .detach(); // [b, C, h, w]
        let (conf, label) = consistency::confidence_and_label(&p_w)?; // [b, h, w] f32, u32
        let valid_f = valid.to_dtype(DType::F32)?; // [b, h, w]
        let n_valid = valid_f.sum_all()?.maximum(1.0)?;
        let keep = (conf.ge(self.cfg.threshold as f64)?.to_dtype(DType::F32)? * &valid_f)?; // [b, h, w]

        // image-level stream: CutMix of the strong views, labels mixed with the same box
        let (x_s, y_s, keep_s) = if self.cfg.cutmix {
            let m = Tensor::from_vec(
                super::cutmix_boxes(b, h, w, self.cfg.cutmix_area, &mut rng),
                (b, h, w),
                &dev,
            )?;
            let inside = m.ne(0f32)?; // [b, h, w] u8
            let mix = |a: &Tensor| -> Result<Tensor> { inside.where_cond(a, &super::roll(a)?) };
            let m4 = m.unsqueeze(1)?; // [b, 1, h, w]
            let x = (strong.broadcast_mul(&m4)? + super::roll(strong)?.broadcast_mul(&m4.affine(-1.0, 1.0)?)?)?;
            (x, mix(&label)?, mix(&keep)?)
        } else {
            (strong.clone(), label.clone(), keep.clone())
        };
        let s_logits = ctx.model.forward_t(&x_s, true)?.logits; // [b, C, h, w]
        let l_s = loss::pseudo_label_ce(&s_logits, &y_s, seg_core::IGNORE as u32, Some(&keep_s), &n_valid)?;

        // feature-level stream: Dropout2d on both encoder outputs of the weak view
        let l_fp = if self.cfg.weight_fp > 0.0 {
            let low_d = channel_dropout(&low, self.cfg.fp_dropout, &mut rng)?;
            let high_d = channel_dropout(&high, self.cfg.fp_dropout, &mut rng)?;
            let fp_logits = ctx.model.decode_t(&low_d, &high_d, (h, w), true)?.logits; // [b, C, h, w]
            loss::pseudo_label_ce(&fp_logits, &label, seg_core::IGNORE as u32, Some(&keep), &n_valid)?
        } else {
            super::zero(&dev)?
        };
        let kept = keep.sum_all()?.to_scalar::<f32>()? as f64 / n_valid.to_scalar::<f32>()? as f64;
        self.stats = vec![
            ("strong_raw", l_s.to_scalar::<f32>()? as f64),
            ("fp_raw", l_fp.to_scalar::<f32>()? as f64),
            ("mask_ratio", kept),
        ];
        Ok(vec![
            ("ce", ce),
            ("strong", (l_s * self.cfg.weight_strong)?),
            ("fp", (l_fp * self.cfg.weight_fp)?),
        ])
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn channel_dropout_zeroes_whole_channels_and_rescales() {
        let x = Tensor::ones((2, 64, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let y = channel_dropout(&x, 0.5, &mut rng).unwrap();
        let flat = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut zeros = 0;
        for ch in flat.chunks(9) {
            // a channel is all 0 or all 2
            assert!(ch.iter().all(|&a| a == 0.0) || ch.iter().all(|&a| a == 2.0), "{ch:?}");
            zeros += (ch[0] == 0.0) as usize;
        }
        assert!((32..96).contains(&zeros), "{zeros} of 128 channels dropped");
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(W2sConfig::default().validate().is_ok());
        for bad in [
            W2sConfig {
                threshold: 1.5,
                ..Default::default()
            },
            W2sConfig {
                fp_dropout: 1.0,
                ..Default::default()
            },
            W2sConfig {
                weight_fp: f64::NAN,
                ..Default::default()
            },
            W2sConfig {
                cutmix_area: [0.0, 0.5],
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}

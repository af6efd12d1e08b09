//! CAC: context-aware consistency with the directional contrastive loss (Lai et al., CVPR 2021).
//!
//! Per unlabeled image two overlapping crops of the same randomly scaled image (IoU in
//! `iou_range`, own flip and photometric jitter each; [`seg_core::data::pair`]). The stride-4
//! decoder embedding of each crop is 2×2 average-pooled (stride 8), projected by Φ (1×1 conv →
//! ReLU → 1×1 conv to `proj_dim`) and L2-normalised; the classifier scores pooled the same way
//! give the confidences and pseudo-labels. On the overlap cells of both crops,
//! `L_dc = (1/B) Σ_b (l_dc(φ_o1, φ_o2) + l_dc(φ_o2, φ_o1))` ([`seg_nn::consistency`]), with
//! negatives from every valid cell of both crops of every unlabeled image in the batch plus a
//! memory bank of cells of past batches (with their pseudo-labels). `L = L_ce + λ L_dc`; SupOnly
//! for the first `warmup_iterations`.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seg_core::data::pair::PairConfig;
use seg_nn::consistency::{self, cells, values, DcConfig, MemoryBank, OverlapCells};
use seg_nn::init;
use seg_nn::layers::Conv2d;
use seg_nn::optim::ParamGroup;
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};

/// Feature stride of the consistency features: stride-4 embedding, then a 2×2 average pool.
pub const STRIDE: u32 = 8;

/// The `[cac]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacConfig {
    /// λ: weight of the directional contrastive loss.
    pub weight: f64,
    /// τ of `r(a, b) = exp(cos(a, b) / τ)`.
    pub temperature: f32,
    /// γ of the positive filter.
    pub gamma: f32,
    /// `[min, max]` IoU of the two crops (`[1, 1]`: no contextual augmentation).
    pub iou_range: [f32; 2],
    /// Projector output channels.
    pub proj_dim: usize,
    /// Supervised-only steps before the consistency loss starts.
    pub warmup_iterations: u64,
    /// Memory bank capacity in feature rows (0: negatives from the current batch only).
    pub memory_bank: usize,
    /// Rows of the current batch pushed into the bank per step (a random subset).
    pub bank_push: usize,
    /// Negatives per chunk of the similarity computation (bounds memory).
    pub negative_chunk: usize,
    /// Ablation: use the projector Φ (off: the pooled embedding itself, normalised).
    pub projector: bool,
    /// Ablation: directional mask (off: both sides pulled toward each other everywhere).
    pub directional: bool,
    /// Ablation: negative sampling by pseudo-label (off: every negative counts).
    pub negative_sampling: bool,
    /// Ablation: positive filtering with γ.
    pub positive_filter: bool,
}

impl Default for CacConfig {
    fn default() -> Self {
        Self {
            weight: 0.1,
            temperature: 0.1,
            gamma: 0.75,
            iou_range: [0.1, 1.0],
            proj_dim: 128,
            warmup_iterations: 0,
            memory_bank: 8192,
            bank_push: 1024,
            negative_chunk: 4096,
            projector: true,
            directional: true,
            negative_sampling: true,
            positive_filter: true,
        }
    }
}

impl CacConfig {
    /// Checks ranges; `crop` is the training crop (a multiple of the feature stride).
    pub fn validate(&self, crop: [u32; 2]) -> std::result::Result<(), String> {
        let [lo, hi] = self.iou_range;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(format!("cac.iou_range [{lo}, {hi}] must satisfy 0 < min <= max <= 1"));
        }
        if !(self.temperature > 0.02 && self.temperature.is_finite()) {
            return Err(format!("cac.temperature {} must be > 0.02", self.temperature));
        }
        if self.proj_dim == 0 || self.negative_chunk == 0 {
            return Err("cac.proj_dim and cac.negative_chunk must be > 0".into());
        }
        if crop.iter().any(|c| c % STRIDE != 0 || *c < 2 * STRIDE) {
            return Err(format!(
                "augment.crop {crop:?} must be multiples of {STRIDE} (at least {}) for cac",
                2 * STRIDE
            ));
        }
        Ok(())
    }
}

/// The CAC method: projector, memory bank, step statistics.
pub struct Cac {
    cfg: CacConfig,
    dc: DcConfig,
    seed: u64,
    vars: VarMap,
    proj: [Conv2d; 2],
    bank: MemoryBank,
    stats: Vec<(&'static str, f64)>,
}

impl Cac {
    /// Registry constructor: a seeded projector on the decoder embedding.
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        let cfg = init.cfg.cac.clone();
        let d = init.cfg.model.decoder_channels;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, init.device);
        let proj = [
            Conv2d::new(d, d, 1, 1, true, vb.pp("proj.0"))?,
            Conv2d::new(d, cfg.proj_dim, 1, 1, true, vb.pp("proj.1"))?,
        ];
        init::reseed(&vars, init.cfg.schedule.seed ^ 0xcac0_cac0)?;
        let dim = if cfg.projector { cfg.proj_dim } else { d };
        let dc = DcConfig {
            temperature: cfg.temperature,
            gamma: cfg.gamma,
            directional: cfg.directional,
            positive_filter: cfg.positive_filter,
            negative_sampling: cfg.negative_sampling,
            chunk: cfg.negative_chunk,
        };
        Ok(Box::new(Self {
            bank: MemoryBank::new(cfg.memory_bank, dim),
            cfg,
            dc,
            seed: init.cfg.schedule.seed,
            vars,
            proj,
            stats: Vec::new(),
        }))
    }

    /// Φ on `[b, d, h, w]` features, then L2 normalisation over channels.
    fn project(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.cfg.projector {
            let h = self.proj[0].forward(x)?.relu()?; // [b, d, h, w]
            self.proj[1].forward(&h)? // [b, proj_dim, h, w]
        } else {
            x.clone()
        };
        consistency::l2_normalize(&y, 1)
    }
}

impl Method for Cac {
    fn name(&self) -> &'static str {
        "cac"
    }

    fn unlabeled_view(&self) -> UnlabeledView {
        UnlabeledView::Pairs(PairConfig {
            iou: self.cfg.iou_range,
            stride: STRIDE,
            ..Default::default()
        })
    }

    fn param_groups(&self) -> Vec<ParamGroup> {
        if !self.cfg.projector {
            return Vec::new();
        }
        super::prefixed_groups(&self.vars, 1.0, "cac.")
            .into_iter()
            .filter(|g| !g.params.is_empty())
            .collect()
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        let (out, ce) = super::supervised_ce(ctx)?;
        let dev = out.logits.device().clone();
        self.stats.clear();
        let Some(UnlabeledBatch::Pairs { crops, geometry }) = ctx.unlabeled else {
            candle_core::bail!("cac: the step has no crop pairs");
        };
        if ctx.iteration < self.cfg.warmup_iterations {
            return Ok(vec![("ce", ce), ("dc", super::zero(&dev)?)]);
        }
        let b = crops[0].dim(0)?;
        let x = Tensor::cat(&[&crops[0], &crops[1]], 0)?; // [2b, 3, h, w]: first crops, then second
        let u = ctx.model.forward_t(&x, true)?;
        let emb = u.embedding.avg_pool2d(2)?; // [2b, d, h/8, w/8]
        let scores = u.logits_low.avg_pool2d(2)?; // [2b, C, h/8, w/8] (= C(pooled embedding))
        let (conf, label) = consistency::confidence_and_label(&scores)?; // [2b, h/8, w/8] each
        let phi = self.project(&emb)?; // [2b, k, h/8, w/8], unit norm
                                       // Negatives: every valid cell of both crops of every image, detached, plus the bank.
        let phi_d = phi.detach();
        let (mut batch_feats, mut batch_labels) = (Vec::new(), Vec::new());
        for k in 0..2 {
            for (i, g) in geometry.iter().enumerate() {
                let idx: Vec<u32> = g
                    .cell_valid(k, STRIDE)
                    .iter()
                    .enumerate()
                    .filter(|(_, &v)| v)
                    .map(|(j, _)| j as u32)
                    .collect();
                if idx.is_empty() {
                    continue;
                }
                let n = idx.len();
                let idx = Tensor::from_vec(idx, n, &dev)?;
                batch_feats.push(cells(&phi_d, k * b + i, &idx)?); // [n, k]
                batch_labels.push(values(&label, k * b + i, &idx)?); // [n]
            }
        }
        let (batch_feats, batch_labels) = if batch_feats.is_empty() {
            let dim = phi.dim(1)?;
            (
                Tensor::zeros((0, dim), DType::F32, &dev)?,
                Tensor::zeros(0, DType::U32, &dev)?,
            )
        } else {
            (Tensor::cat(&batch_feats, 0)?, Tensor::cat(&batch_labels, 0)?)
        };
        let (negatives, negative_labels) = match self.bank.tensors(&dev)? {
            Some((bf, bl)) => (
                Tensor::cat(&[&batch_feats, &bf], 0)?,
                Tensor::cat(&[&batch_labels, &bl], 0)?,
            ),
            None => (batch_feats.clone(), batch_labels.clone()),
        };
        // The loss per image and direction on the overlap cells.
        let mut total = super::zero(&dev)?;
        let (mut kept, mut locations) = (0f64, 0f64);
        for (i, g) in geometry.iter().enumerate() {
            // [n, k] features, [n] confidences and labels of each side
            let Some(o) = OverlapCells::gather(&phi, &conf, &label, [i, b + i], &g.overlap(STRIDE))? else {
                continue;
            };
            let l = consistency::directional_contrastive_both(
                o.side(0),
                o.side(1),
                &negatives,
                &negative_labels,
                Some(&o.valid),
                &self.dc,
            )?;
            total = (total + l)?;
            for (ca, cp) in [(&o.conf[0], &o.conf[1]), (&o.conf[1], &o.conf[0])] {
                let m = (consistency::dc_positive_mask(ca, cp, &self.dc)? * &o.valid)?;
                kept += m.sum_all()?.to_scalar::<f32>()? as f64;
            }
            locations += 2.0 * o.valid.sum_all()?.to_scalar::<f32>()? as f64;
        }
        let l_dc = (total / b as f64)?;
        // Push a random subset of this batch's cells into the bank for the next steps.
        let rows = batch_feats.dim(0)?;
        let push = self.cfg.bank_push.min(rows);
        if self.bank.capacity() > 0 && push > 0 {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xba9c ^ ctx.iteration.wrapping_mul(0x9e37_79b9));
            let pick: Vec<u32> = sample(&mut rng, rows, push).into_iter().map(|v| v as u32).collect();
            let pick = Tensor::from_vec(pick, push, &dev)?;
            self.bank.push(
                &batch_feats.index_select(&pick, 0)?,
                &batch_labels.index_select(&pick, 0)?,
            )?;
        }
        self.stats = vec![
            ("dc_raw", l_dc.to_scalar::<f32>()? as f64),
            (
                "dc_positive_ratio",
                if locations > 0.0 { kept / locations } else { 0.0 },
            ),
            ("dc_negatives", negatives.dim(0)? as f64),
        ];
        let dc = (l_dc * self.cfg.weight)?;
        Ok(vec![("ce", ce), ("dc", dc)])
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        self.stats.clone()
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut s = super::vars_state(&self.vars, "");
        for (n, t) in self.bank.state()? {
            s.push((format!("bank.{n}"), t));
        }
        Ok(s)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        super::load_vars(&self.vars, state, "")?;
        let get = |n: &str| {
            state
                .get(&format!("bank.{n}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint has no method state 'bank.{n}'")))
        };
        self.bank.load_state(get("feats")?, get("labels")?, get("meta")?)?;
        Ok(())
    }
}

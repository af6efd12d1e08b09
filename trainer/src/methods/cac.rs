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
//!
//! With extra image-level labels (CAC §3.5, `tag_weight` = λ_w > 0): the tagged unlabeled images
//! come with pseudo-labels y_p made beforehand from their tags by a CAM model (`data.pseudo_labels`,
//! `edge-seg-train cam-labels --write`), cropped with the crops. An auxiliary classifier C_w
//! (a 1×1 conv on the stride-4 decoder embedding, upsampled bilinearly like the model's own
//! classifier) learns them: `L = L_ce + λ L_dc + λ_w · ½ (CE(C_w(f_u1), y_p1) + CE(C_w(f_u2), y_p2))`,
//! from the first step (the warm-up holds back only L_dc). C_w is method state, not part of the
//! model, so the export drops it; y_p reach the exported net only through the shared encoder and
//! decoder (the model's own classifier never sees them).

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seg_core::data::pair::PairConfig;
use seg_nn::bilinear;
use seg_nn::consistency::{self, CacCells, DcConfig, MemoryBank};
use seg_nn::init;
use seg_nn::layers::Conv2d;
use seg_nn::optim::ParamGroup;
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};

/// Stride of the cells ([`consistency::CAC_STRIDE`]: the stride-4 embedding, 2×2-pooled).
pub const STRIDE: u32 = consistency::CAC_STRIDE;

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
    /// λ_w of CAC's extension with image-level labels (§3.5): the weight of an auxiliary
    /// classifier's cross-entropy on the pseudo-labels of tagged unlabeled images
    /// (`data.pseudo_labels`), on both crops; 0 (default): off.
    pub tag_weight: f64,
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
            tag_weight: 0.0,
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
        if !(self.tag_weight >= 0.0 && self.tag_weight.is_finite()) {
            return Err(format!("cac.tag_weight {} must be finite and >= 0", self.tag_weight));
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
    /// C_w and its variables, when `tag_weight > 0` (a varmap of its own, so that the
    /// projector's seeded initialisation is that of CAC without tags).
    aux: Option<(VarMap, Conv2d)>,
    bank: MemoryBank,
    stats: Vec<(&'static str, f64)>,
}

impl Cac {
    /// Registry constructor: a seeded projector on the decoder embedding.
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        let cfg = init.cfg.cac.clone();
        let d = init.cfg.model.embedding_channels();
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, init.device);
        let proj = [
            Conv2d::new(d, d, 1, 1, true, vb.pp("proj.0"))?,
            Conv2d::new(d, cfg.proj_dim, 1, 1, true, vb.pp("proj.1"))?,
        ];
        init::reseed_with(&vars, init.cfg.schedule.seed ^ 0xcac0_cac0, init.cfg.weight_init)?;
        let aux = if cfg.tag_weight > 0.0 {
            let aux_vars = VarMap::new();
            let vb = VarBuilder::from_varmap(&aux_vars, DType::F32, init.device);
            let conv = Conv2d::new(d, init.cfg.model.num_classes, 1, 1, true, vb.pp("aux"))?;
            init::reseed_with(&aux_vars, init.cfg.schedule.seed ^ 0xcac0_7a95, init.cfg.weight_init)?;
            Some((aux_vars, conv))
        } else {
            None
        };
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
            aux,
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
        let mut groups = Vec::new();
        if self.cfg.projector {
            groups.extend(super::prefixed_groups(&self.vars, 1.0, "cac."));
        }
        if let Some((aux_vars, _)) = &self.aux {
            groups.extend(super::prefixed_groups(aux_vars, 1.0, "cac_aux."));
        }
        groups.into_iter().filter(|g| !g.params.is_empty()).collect()
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        let (out, ce) = super::supervised_ce(ctx)?;
        let dev = out.logits.device().clone();
        self.stats.clear();
        let Some(UnlabeledBatch::Pairs {
            crops,
            geometry,
            pseudo,
        }) = ctx.unlabeled
        else {
            candle_core::bail!("cac: the step has no crop pairs");
        };
        let warmup = ctx.iteration < self.cfg.warmup_iterations;
        if warmup && self.aux.is_none() {
            return Ok(vec![("ce", ce), ("dc", super::zero(&dev)?)]);
        }
        let x = Tensor::cat(&[&crops[0], &crops[1]], 0)?; // [2b, 3, h, w]: first crops, then second
        let u = ctx.model.forward_t(&x, true)?;
        let mut terms = vec![("ce", ce)];
        if let Some((_, c_w)) = &self.aux {
            let Some(pseudo) = pseudo else {
                candle_core::bail!("cac: cac.tag_weight > 0 but the step has no pseudo-labels (data.pseudo_labels)");
            };
            let (b, _, h, w) = crops[0].dims4()?;
            let low = c_w.forward(&u.embedding)?; // [2b, C, h/4, w/4]
            let logits = bilinear::resize(&low, h, w)?; // [2b, C, h, w]
            let ignore = seg_core::IGNORE as u32;
            let ce1 = seg_nn::loss::cross_entropy(&logits.narrow(0, 0, b)?, &pseudo[0], ignore, None)?;
            let ce2 = seg_nn::loss::cross_entropy(&logits.narrow(0, b, b)?, &pseudo[1], ignore, None)?;
            let raw = ((ce1 + ce2)? * 0.5)?;
            let labelled = Tensor::cat(&[&pseudo[0], &pseudo[1]], 0)?
                .ne(ignore)?
                .to_dtype(DType::F32)?
                .mean_all()?
                .to_scalar::<f32>()?; // share of both crops' pixels with a pseudo-label
            self.stats.push(("tag_raw", raw.to_scalar::<f32>()? as f64));
            self.stats.push(("tag_coverage", labelled as f64));
            terms.push(("tag", (raw * self.cfg.tag_weight)?));
        }
        if warmup {
            terms.push(("dc", super::zero(&dev)?));
            return Ok(terms);
        }
        let c = CacCells::pool(&u.embedding, &u.logits_low)?; // stride-8 cells of both crops
        let phi = self.project(&c.emb)?; // [2b, k, h/8, w/8], unit norm
                                         // negatives: every valid cell of both crops of every image, plus the bank
        let step = consistency::cac_step(
            &phi,
            &c.conf,
            &c.label,
            geometry,
            &self.bank,
            &self.dc,
            true,
            &mut |_, _, idx| idx,
        )?;
        let l_dc = step.loss.expect("asked for the loss");
        // Push a random subset of this batch's cells into the bank for the next steps.
        let rows = step.feats.dim(0)?;
        let push = self.cfg.bank_push.min(rows);
        if self.bank.capacity() > 0 && push > 0 {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xba9c ^ ctx.iteration.wrapping_mul(0x9e37_79b9));
            let pick: Vec<u32> = sample(&mut rng, rows, push).into_iter().map(|v| v as u32).collect();
            consistency::push_to_bank(&mut self.bank, &step.feats, &step.labels, pick)?;
        }
        self.stats.extend([
            ("dc_raw", l_dc.to_scalar::<f32>()? as f64),
            ("dc_positive_ratio", step.positive_ratio),
            ("dc_negatives", step.negatives as f64),
        ]);
        terms.push(("dc", (l_dc * self.cfg.weight)?));
        Ok(terms)
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        self.stats.clone()
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut s = super::vars_state(&self.vars, "");
        if let Some((aux_vars, _)) = &self.aux {
            s.extend(super::vars_state(aux_vars, ""));
        }
        for (n, t) in self.bank.state()? {
            s.push((format!("bank.{n}"), t));
        }
        Ok(s)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        super::load_vars(&self.vars, state, "")?;
        if let Some((aux_vars, _)) = &self.aux {
            super::load_vars(aux_vars, state, "")?;
        }
        let get = |n: &str| {
            state
                .get(&format!("bank.{n}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("checkpoint has no method state 'bank.{n}'")))
        };
        self.bank.load_state(get("feats")?, get("labels")?, get("meta")?)?;
        Ok(())
    }
}

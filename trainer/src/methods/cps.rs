//! CPS: cross pseudo supervision (Chen et al., CVPR 2021).
//!
//! Two networks of the same architecture with different initialisations: the trainer's model
//! (net 1, the one evaluated and exported) and a second one owned by this method (its
//! parameters are optimised by the trainer's SGD and kept in checkpoints as `net2.*`). On
//! unlabeled (and, with `on_labeled`, labeled) images each network learns the other's one-hot
//! argmax: `L_cps = CE(P1, argmax P2) + CE(P2, argmax P1)`, no gradient through the argmax
//! ([`seg_nn::consistency::cross_pseudo_supervision`]); `L = CE(P1, y) + CE(P2, y) + λ L_cps`.
//!
//! With `cutmix`, each unlabeled crop is mixed with the next one of the batch inside a random
//! box; the pseudo-labels come from each network's predictions on the unmixed crops (no
//! gradient), mixed with the same box, as in the paper's CutMix variant.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seg_nn::optim::ParamGroup;
use seg_nn::{consistency, init, loss, SegModel};
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};

/// The `[cps]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CpsConfig {
    /// λ_cps.
    pub weight: f64,
    /// CutMix on unlabeled pairs.
    pub cutmix: bool,
    /// `[min, max]` fraction of the crop covered by the CutMix box.
    pub cutmix_area: [f32; 2],
    /// Also apply the CPS loss to the labeled images.
    pub on_labeled: bool,
    /// Supervised-only steps (both networks) before the CPS loss starts.
    pub warmup_iterations: u64,
}

impl Default for CpsConfig {
    fn default() -> Self {
        Self {
            weight: 1.5,
            cutmix: true,
            cutmix_area: [0.25, 0.5],
            on_labeled: true,
            warmup_iterations: 0,
        }
    }
}

impl CpsConfig {
    /// Checks ranges.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let [lo, hi] = self.cutmix_area;
        if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
            return Err(format!("cps.cutmix_area [{lo}, {hi}] must satisfy 0 < min <= max <= 1"));
        }
        Ok(())
    }
}

/// The CPS method: the second network.
pub struct Cps {
    cfg: CpsConfig,
    seed: u64,
    encoder_lr_mult: f64,
    vars: VarMap,
    net2: SegModel,
    stats: Vec<(&'static str, f64)>,
}

impl Cps {
    /// Registry constructor: net 2 built like the model, initialised from another seed.
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        let vars = VarMap::new();
        let net2 = SegModel::new(&init.cfg.model, VarBuilder::from_varmap(&vars, DType::F32, init.device))?;
        init::reseed_with(&vars, init.cfg.schedule.seed ^ 0xc25_0002, init.cfg.weight_init)?;
        if let Some(path) = init.pretrained {
            // both networks start from ImageNet (as in the paper); only their heads differ
            seg_nn::pretrained::load_into(&vars, path).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        }
        Ok(Box::new(Self {
            cfg: init.cfg.cps.clone(),
            seed: init.cfg.schedule.seed,
            encoder_lr_mult: init.cfg.optim.encoder_lr_mult,
            vars,
            net2,
            stats: Vec::new(),
        }))
    }

    /// The second network's variables.
    pub fn net2_vars(&self) -> &VarMap {
        &self.vars
    }
}

impl Method for Cps {
    fn name(&self) -> &'static str {
        "cps"
    }

    fn unlabeled_view(&self) -> UnlabeledView {
        UnlabeledView::Views
    }

    fn param_groups(&self) -> Vec<ParamGroup> {
        super::prefixed_groups(&self.vars, self.encoder_lr_mult, "net2.")
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        let ignore = seg_core::IGNORE as u32;
        let x = &ctx.labeled.images;
        let l1 = ctx.model.forward_t(x, true)?.logits; // [b, C, h, w]
        let l2 = self.net2.forward_t(x, true)?.logits; // [b, C, h, w]
        let sup1 = ctx.labeled_ce(&l1)?;
        let sup2 = ctx.labeled_ce(&l2)?;
        let dev = l1.device().clone();
        self.stats.clear();
        let Some(UnlabeledBatch::Views { strong, valid, .. }) = ctx.unlabeled else {
            candle_core::bail!("cps: the step has no unlabeled views");
        };
        if ctx.iteration < self.cfg.warmup_iterations {
            return Ok(vec![("sup1", sup1), ("sup2", sup2), ("cps", super::zero(&dev)?)]);
        }
        let mut cps = if self.cfg.on_labeled {
            consistency::cross_pseudo_supervision(&l1, &l2, None)?
        } else {
            super::zero(&dev)?
        };
        let cps_u = if self.cfg.cutmix {
            let (b, _, h, w) = strong.dims4()?;
            // pseudo-labels on the unmixed crops (no gradient)
            let p1 = ctx.model.forward_t(strong, true)?.logits.detach().argmax(1)?; // [b, h, w]
            let p2 = self.net2.forward_t(strong, true)?.logits.detach().argmax(1)?; // [b, h, w]
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xc07 ^ ctx.iteration.wrapping_mul(0x9e37_79b9));
            let m = Tensor::from_vec(
                super::cutmix_boxes(b, h, w, self.cfg.cutmix_area, &mut rng),
                (b, h, w),
                &dev,
            )?; // [b, h, w]
            let inside = m.ne(0f32)?; // [b, h, w] u8
            let mix = |a: &Tensor| -> Result<Tensor> { inside.where_cond(a, &super::roll(a)?) };
            let m4 = m.unsqueeze(1)?; // [b, 1, h, w]
            let x_mix = (strong.broadcast_mul(&m4)? + super::roll(strong)?.broadcast_mul(&m4.affine(-1.0, 1.0)?)?)?; // [b, 3, h, w]
            let v_mix = mix(valid)?.ne(0u32)?; // [b, h, w]
            let ign = Tensor::full(ignore, (b, h, w), &dev)?;
            let y1 = v_mix.where_cond(&mix(&p1)?, &ign)?;
            let y2 = v_mix.where_cond(&mix(&p2)?, &ign)?;
            let s1 = ctx.model.forward_t(&x_mix, true)?.logits; // [b, C, h, w]
            let s2 = self.net2.forward_t(&x_mix, true)?.logits; // [b, C, h, w]
            (loss::cross_entropy(&s1, &y2, ignore, None)? + loss::cross_entropy(&s2, &y1, ignore, None)?)?
        } else {
            let u1 = ctx.model.forward_t(strong, true)?.logits; // [b, C, h, w]
            let u2 = self.net2.forward_t(strong, true)?.logits; // [b, C, h, w]
            consistency::cross_pseudo_supervision(&u1, &u2, Some(valid))?
        };
        cps = (cps + &cps_u)?;
        self.stats = vec![
            ("cps_raw", cps.to_scalar::<f32>()? as f64),
            ("cps_unlabeled_raw", cps_u.to_scalar::<f32>()? as f64),
        ];
        Ok(vec![("sup1", sup1), ("sup2", sup2), ("cps", (cps * self.cfg.weight)?)])
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        self.stats.clone()
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(super::vars_state(&self.vars, "net2."))
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        super::load_vars(&self.vars, state, "net2.")
    }
}

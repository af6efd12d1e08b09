//! SLRNet (Pan et al., IJCV 2022): single-stage weakly supervised segmentation from image-level
//! tags with cross-view low-rank self-supervision (issue #26, method 2). It is the `cam` method
//! (its `[cam]` section: CAM head, features, thresholds, PAR, weights, warm-up) with two views
//! and the LR module; `[slrnet]` holds what SLRNet adds.
//!
//! Per step, on the weak view `x₁` of each tagged crop and `x₂`, the same crop downscaled by
//! `view_scale` (bilinear, sides kept multiples of 32):
//!
//! 1. The model, in training mode, gives both views' features (`cam.features`). With `lowrank`,
//!    the LR module ([`seg_nn::lowrank::LowRankModule`]) factorises the two views' ReLU'd
//!    features together by collective NMF — one dictionary per image, shared by its views,
//!    `rank` bases, `steps` multiplicative updates unrolled (gradient through the last one with
//!    `one_step_grad`) — and adds each view's low-rank reconstruction back through a 1×1
//!    convolution that starts at zero.
//! 2. The CAM head on each view: `L_cls`, the multi-label BCE of both views (mean).
//! 3. `L_cv`, cross-view consistency: the L1 distance between the views' CAMs (ReLU'd, each
//!    map divided by its detached maximum, restricted to the image's tags; view 2's upsampled to
//!    view 1's size), averaged over the tagged maps.
//! 4. After `cam.warmup_iterations`: online pseudo-labels from the mean of the two views'
//!    normalised CAMs, refined by PAR and thresholded as in `cam`; `L_seg` is the segmentation
//!    cross-entropy on view 1 against them.
//!
//! `L = w_sup · CE(labeled) + cam.weight_cls · L_cls + weight_cv · L_cv + cam.weight_seg · L_seg`.
//!
//! What follows the paper and what does not (also in docs/WEAK.md): two views, collective
//! factorisation with a dictionary shared across the views, the reconstruction added back, a
//! cross-view consistency and online pseudo-labels in one training cycle follow it. Simplified or
//! different: the factorisation is the multiplicative NMF of the description, where the
//! reference code uses a softmax-code step initialised from class-weighted means; the
//! reconstruction is added without the outer ReLU and through a zero-started convolution; the
//! cross-view term compares the CAMs only (the reference also compares the views' codes, and
//! uses normalised global weighted pooling with a focal mask penalty and a soft-margin loss
//! where this uses global average pooling and BCE); the online pseudo-labels use PAR and this
//! crate's thresholds (on the two views' mean, normalised again per class) instead of PAMR with
//! per-class cut-offs, and no class-balanced CE; the reference's cross-view weight is 4 (here
//! `weight_cv = 1` by default), it runs one factorisation step (here `steps = 6`), has an
//! auxiliary classification head, and drops an image whose pseudo-label misses one of its tags
//! (none of these here). The LR module feeds the CAM head only, so the exported segmentation net
//! does not contain it. `cam-labels` evaluates the CAMs one view (scale, flip) at a time, the LR
//! module factorising that view alone, as the reference does at test time; in training it
//! factorises the two views together. `lowrank = false` is the ablation (everything else equal).

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use seg_nn::cam::{self, CamHead, PseudoLabelRule};
use seg_nn::lowrank::{LowRankModule, NmfConfig};
use seg_nn::optim::ParamGroup;
use seg_nn::{bilinear, init};
use serde::{Deserialize, Serialize};

use super::cam::{pseudo_label_targets, tagged_step, train_features, CamConfig, CamFeatures, TaggedViews};
use super::{Method, MethodInit, StepContext, UnlabeledView};

/// The `[slrnet]` config section (the CAM pipeline's settings are `[cam]`'s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlrnetConfig {
    /// The LR module on (off: the ablation).
    pub lowrank: bool,
    /// NMF bases (the reference uses the number of classes).
    pub rank: usize,
    /// Unrolled multiplicative-update steps.
    pub steps: usize,
    /// Back-propagate through the last update only.
    pub one_step_grad: bool,
    /// Scale of the second view (the reference: 0.5).
    pub view_scale: f64,
    /// Weight of the cross-view CAM consistency.
    pub weight_cv: f64,
}

impl Default for SlrnetConfig {
    fn default() -> Self {
        Self {
            lowrank: true,
            rank: 11,
            steps: 6,
            one_step_grad: true,
            view_scale: 0.5,
            weight_cv: 1.0,
        }
    }
}

impl SlrnetConfig {
    /// The second view's side for a crop side `v`: scaled by `view_scale`, rounded to a
    /// multiple of 32 (at least 32).
    pub fn view_side(&self, v: usize) -> usize {
        (((v as f64 * self.view_scale) / 32.0).round().max(1.0) as usize) * 32
    }

    /// Checks ranges against the training crop `crop` (and that the `[cam]` part it uses has
    /// no group mining).
    pub fn validate(&self, cam: &CamConfig, crop: [u32; 2]) -> std::result::Result<(), String> {
        if !(1..=50).contains(&self.steps) {
            return Err(format!("slrnet.steps {} must be in 1..=50", self.steps));
        }
        if !(self.view_scale.is_finite() && (0.25..1.0).contains(&self.view_scale)) {
            return Err(format!("slrnet.view_scale {} must be in [0.25, 1)", self.view_scale));
        }
        let [h, w] = crop.map(|v| v as usize);
        if self.view_side(h) == h && self.view_side(w) == w {
            return Err(format!(
                "slrnet.view_scale {}: the second view of a {h}x{w} crop (sides rounded to multiples of 32) is the crop itself",
                self.view_scale
            ));
        }
        let stride = match cam.features {
            CamFeatures::Embedding => 4,
            CamFeatures::Encoder => 32,
        };
        let pixels = (h / stride) * (w / stride);
        if self.rank == 0 || self.rank > pixels.min(256) {
            return Err(format!(
                "slrnet.rank {} must be in 1..={} (at most 256, and the {pixels} feature positions of one {h}x{w} crop at stride {stride})",
                self.rank,
                pixels.min(256)
            ));
        }
        if !(self.weight_cv.is_finite() && (0.0..=100.0).contains(&self.weight_cv)) {
            return Err(format!("slrnet.weight_cv {} must be in [0, 100]", self.weight_cv));
        }
        if cam.group.enabled {
            return Err("slrnet: cam.group (group-wise mining) is an option of method 'cam' only".into());
        }
        Ok(())
    }

    fn nmf(&self) -> NmfConfig {
        NmfConfig {
            rank: self.rank,
            steps: self.steps,
            one_step_grad: self.one_step_grad,
            ..NmfConfig::default()
        }
    }

    /// The trained LR module of a checkpoint (`method.slrnet.lr.proj.weight`), `None` when the
    /// run had it off.
    pub fn load_lowrank(
        &self,
        cam: &CamConfig,
        model: &seg_nn::ModelConfig,
        state: &std::collections::HashMap<String, Tensor>,
        dev: &candle_core::Device,
    ) -> Result<Option<LowRankModule>> {
        if !self.lowrank {
            return Ok(None);
        }
        let Some(w) = state.get("method.slrnet.lr.proj.weight") else {
            candle_core::bail!("the checkpoint has no LR module (method.slrnet.lr.proj.weight)");
        };
        let tensors = std::collections::HashMap::from([("lr.proj.weight".to_string(), w.clone())]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
        Ok(Some(LowRankModule::new(
            &self.nmf(),
            cam.feature_channels(model, dev)?,
            vb.pp("lr"),
        )?))
    }
}

/// The SLRNet method: CAM head, LR module and step statistics.
pub struct Slrnet {
    cam: CamConfig,
    cfg: SlrnetConfig,
    rule: PseudoLabelRule,
    /// `(w₊, w₋)` of the classification loss with `cam.balance_cls` (set in `prepare`).
    bce_weights: Option<(Tensor, Tensor)>,
    num_classes: usize,
    device: candle_core::Device,
    vars: VarMap,
    head: CamHead,
    lowrank: Option<LowRankModule>,
    stats: Vec<(&'static str, f64)>,
}

impl Slrnet {
    /// Registry constructor: a seeded CAM head, and the LR module with its projection at zero.
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        let cam = init.cfg.cam.clone();
        let cfg = init.cfg.slrnet.clone();
        let channels = cam.feature_channels(&init.cfg.model, init.device)?;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, init.device);
        let head = CamHead::new(channels, init.cfg.model.num_classes, vb.pp("cam"))?;
        let lowrank = if cfg.lowrank {
            Some(LowRankModule::new(&cfg.nmf(), channels, vb.pp("lr"))?)
        } else {
            None
        };
        init::reseed_with(&vars, init.cfg.schedule.seed ^ 0x0005_1ae7, init.cfg.weight_init)?;
        if let Some(var) = vars.data().lock().expect("varmap lock").get("lr.proj.weight") {
            var.set(&var.zeros_like()?)?; // the module starts as the identity
        }
        cam.check_balance(&init.cfg.data)?;
        Ok(Box::new(Self {
            rule: cam.rule(&init.cfg.data.classes.names),
            bce_weights: None,
            num_classes: init.cfg.model.num_classes,
            device: init.device.clone(),
            cam,
            cfg,
            vars,
            head,
            lowrank,
            stats: Vec::new(),
        }))
    }
}

/// ReLU'd CAMs `[b, C, h, w]`, each map divided by its detached maximum (+1e-5), times the
/// tags `[b, C]`.
fn normalized(cams: &Tensor, tags: &Tensor) -> Result<Tensor> {
    let (b, c, _, _) = cams.dims4()?;
    let r = cams.relu()?;
    let max = r.max_keepdim(D::Minus1)?.max_keepdim(D::Minus2)?.detach(); // [b, C, 1, 1]
    r.broadcast_div(&(max + 1e-5)?)?
        .broadcast_mul(&tags.reshape((b, c, 1, 1))?)
}

impl Method for Slrnet {
    fn name(&self) -> &'static str {
        "slrnet"
    }

    fn prepare(&mut self, _labeled: &crate::data::Samples, unlabeled: &crate::data::Samples) -> Result<()> {
        self.bce_weights = self.cam.bce_weights(&unlabeled.tags, self.num_classes, &self.device)?;
        Ok(())
    }

    fn unlabeled_view(&self) -> UnlabeledView {
        UnlabeledView::Views
    }

    fn needs_tags(&self) -> bool {
        true
    }

    fn param_groups(&self) -> Vec<ParamGroup> {
        super::prefixed_groups(&self.vars, 1.0, "method.slrnet.")
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(super::vars_state(&self.vars, "method.slrnet."))
    }

    fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        super::load_vars(&self.vars, state, "method.slrnet.")
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        self.stats.clone()
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        self.stats.clear();
        let (TaggedViews { weak, valid, tags }, mut terms) = tagged_step(&self.cam, ctx, "slrnet")?;
        let dev = weak.device().clone();
        let (b, _, h, w) = weak.dims4()?;
        let x2 = bilinear::resize(weak, self.cfg.view_side(h), self.cfg.view_side(w))?; // [b, 3, h2, w2]
        let (f1, logits1) = train_features(&self.cam, ctx, weak, true)?; // [b, F, hf, wf], [b, C, h, w]
        let logits1 = logits1.expect("asked for");
        let (f2, _) = train_features(&self.cam, ctx, &x2, false)?; // [b, F, hf2, wf2]
        let (f1, f2) = match &self.lowrank {
            Some(lr) => {
                let mut out = lr.forward(&[&f1, &f2])?;
                let f2 = out.pop().expect("two views");
                (out.pop().expect("two views"), f2)
            }
            None => (f1, f2),
        };
        let (cams1, cls1) = self.head.forward(&f1)?; // [b, C, hf, wf], [b, C]
        let (cams2, cls2) = self.head.forward(&f2)?; // [b, C, hf2, wf2], [b, C]
        let w = self.bce_weights.as_ref().map(|(p, n)| (p, n));
        let cls =
            ((seg_nn::loss::multilabel_bce(&cls1, tags, w)? + seg_nn::loss::multilabel_bce(&cls2, tags, w)?)? * 0.5)?;
        self.stats.push(("cls_bce", cls.to_scalar::<f32>()? as f64));
        terms.push(("cls", (cls * self.cam.weight_cls)?));

        let (_, c, hf, wf) = cams1.dims4()?;
        let n1 = normalized(&cams1, tags)?; // [b, C, hf, wf]
        let n2 = bilinear::resize(&normalized(&cams2, tags)?, hf, wf)?; // [b, C, hf, wf]
        let tagged = tags.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64;
        let cv = ((&n1 - &n2)?.abs()?.sum_all()? / (tagged * (hf * wf) as f64))?;
        self.stats.push(("cv_l1", cv.to_scalar::<f32>()? as f64));
        terms.push(("cv", (cv * self.cfg.weight_cv)?));

        if ctx.iteration < self.cam.warmup_iterations || self.cam.weight_seg == 0.0 {
            terms.push(("seg", super::zero(&dev)?));
            return Ok(terms);
        }
        // online pseudo-labels: the mean of both views' normalised CAMs
        let tag_host = tags.flatten_all()?.to_vec1::<f32>()?;
        let host = |t: &Tensor| -> Result<Vec<f32>> { t.detach().flatten_all()?.to_vec1::<f32>() };
        let a = cam::normalize_cams(&host(&cams1)?, (b, c, hf, wf), &tag_host);
        let up2 = bilinear::resize(&cams2.detach(), hf, wf)?;
        let z = cam::normalize_cams(&host(&up2)?, (b, c, hf, wf), &tag_host);
        // the mean peaks below 1 where the views' peaks differ: normalised again per tagged
        // class, so `cam.high`/`cam.low` mean what they mean for `cam`
        let mean: Vec<f32> = a.iter().zip(&z).map(|(p, q)| 0.5 * (p + q)).collect();
        let norm = cam::normalize_cams(&mean, (b, c, hf, wf), &tag_host);
        let (targets, coverage) = pseudo_label_targets(&self.cam, &self.rule, norm, (b, c, hf, wf), weak, valid)?;
        self.stats.push(("pseudo_coverage", coverage));
        let seg = seg_nn::loss::cross_entropy(&logits1, &targets, seg_core::IGNORE as u32, None)?;
        terms.push(("seg", (seg * self.cam.weight_seg)?));
        Ok(terms)
    }
}

//! Training methods. A method is one file implementing [`Method`], returning named loss terms
//! that the trainer sums, logs and back-propagates; adding one is one file plus one line in
//! [`REGISTRY`].
//!
//! Besides its losses a method may ask for an unlabeled view ([`Method::unlabeled_view`]), own
//! trainable parameters that the trainer's SGD optimises ([`Method::param_groups`]: a
//! projector, a second network), update state after each optimiser step
//! ([`Method::after_step`]: an EMA teacher) and keep state in the checkpoints
//! ([`Method::state`] / [`Method::load_state`]). Methods never live in the model.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor};
use candle_nn::VarMap;
use seg_core::data::pair::PairGeometry;
use seg_nn::optim::ParamGroup;
use seg_nn::SegModel;

use crate::config::TrainConfig;
pub use crate::data::UnlabeledView;

pub mod cac;
pub mod cam;
pub mod cps;
pub mod distill;
pub mod mean_teacher;
pub mod slrnet;
pub mod supervised;
pub mod w2s;

/// A labeled batch: normalised images and their targets.
#[derive(Debug)]
pub struct LabeledBatch {
    /// `[b, 3, h, w]` normalised images.
    pub images: Tensor,
    /// `[b, h, w]` class ids (`u32`), [`seg_core::IGNORE`] where unlabeled.
    pub targets: Tensor,
    /// Where each crop came from (indices into the labeled samples).
    pub origins: Vec<crate::data::CropOrigin>,
}

/// An unlabeled batch on the training device, in the view the method asked for.
#[derive(Debug)]
pub enum UnlabeledBatch {
    /// [`UnlabeledView::Views`].
    Views {
        /// `[b, 3, h, w]` photometrically jittered crops.
        strong: Tensor,
        /// `[b, 3, h, w]` the same crops without photometric jitter.
        weak: Tensor,
        /// `[b, h, w]` u32: 1 inside the image, 0 in padding.
        valid: Tensor,
        /// `[b, C]` f32 multi-hot tags of the images, when `data.tag_file` is set.
        tags: Option<Tensor>,
        /// Where each crop came from (indices into the unlabeled samples).
        origins: Vec<crate::data::CropOrigin>,
    },
    /// [`UnlabeledView::Pairs`]: two overlapping crops of each image.
    Pairs {
        /// `[b, 3, h, w]` first and second crops.
        crops: [Tensor; 2],
        /// Geometry of each pair (overlap, flips).
        geometry: Vec<PairGeometry>,
        /// `[b, h, w]` u32 pseudo-labels of both crops ([`seg_core::IGNORE`] where none), when
        /// `data.pseudo_labels` is set (CAC with extra tags).
        pseudo: Option<[Tensor; 2]>,
    },
}

/// What a method sees at one step.
pub struct StepContext<'a> {
    /// The model being trained.
    pub model: &'a SegModel,
    /// This step's labeled batch.
    pub labeled: &'a LabeledBatch,
    /// This step's unlabeled batch, when the method asked for one.
    pub unlabeled: Option<&'a UnlabeledBatch>,
    /// Optional `[C]` class weights for the supervised cross-entropy.
    pub class_weights: Option<&'a Tensor>,
    /// Hard example mining for the supervised cross-entropy (`optim.ohem`).
    pub ohem: Option<seg_nn::loss::Ohem>,
    /// The step index (0-based).
    pub iteration: u64,
}

/// What a method gets when it is built (after the model is initialised, before a resume).
pub struct MethodInit<'a> {
    /// The run's resolved config (its method section included).
    pub cfg: &'a TrainConfig,
    /// The trained model's variables (e.g. to copy into an EMA teacher).
    pub model_vars: &'a VarMap,
    /// The training device.
    pub device: &'a Device,
    /// Per-class pixel frequencies of the labeled training set (sum 1).
    pub class_frequencies: &'a [f64],
    /// The ImageNet weights file of a fresh `init = "imagenet"` run (`None` otherwise), for a
    /// method's own networks (CPS's second one).
    pub pretrained: Option<&'a std::path::Path>,
}

/// A training method: returns named loss terms; the trainer sums them.
pub trait Method: Send {
    /// The method's registry name.
    fn name(&self) -> &'static str;
    /// Called once the labeled and unlabeled images are loaded (also on `--resume`), before the
    /// first step (default: nothing): e.g. for a teacher to score every frame once.
    fn prepare(&mut self, _labeled: &crate::data::Samples, _unlabeled: &crate::data::Samples) -> Result<()> {
        Ok(())
    }
    /// The unlabeled view it needs (default: none).
    fn unlabeled_view(&self) -> UnlabeledView {
        UnlabeledView::None
    }
    /// Whether it learns from image-level tags (`data.tag_file` must then tag every image of
    /// `data.unlabeled_splits`).
    fn needs_tags(&self) -> bool {
        false
    }
    /// Trainable parameters of its own, optimised with the model's (names must not clash with
    /// the model's: prefix them with the method's name).
    fn param_groups(&self) -> Vec<ParamGroup> {
        Vec::new()
    }
    /// The loss terms of one step.
    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>>;
    /// Called after the optimiser step of `iteration`.
    fn after_step(&mut self, _iteration: u64) -> Result<()> {
        Ok(())
    }
    /// Scalars to log with the losses (e.g. the pseudo-label mask ratio of the last step).
    fn metrics(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// Tensors to keep in checkpoints (own parameters, buffers, banks), by name.
    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(Vec::new())
    }
    /// Restores what [`Self::state`] saved.
    fn load_state(&mut self, _state: &HashMap<String, Tensor>) -> Result<()> {
        Ok(())
    }
}

/// Builds a boxed method.
pub type Constructor = fn(&MethodInit) -> Result<Box<dyn Method>>;

/// Name → constructor of every method.
pub const REGISTRY: &[(&str, Constructor)] = &[
    ("supervised", supervised::Supervised::boxed),
    ("cac", cac::Cac::boxed),
    ("cps", cps::Cps::boxed),
    ("mean_teacher", mean_teacher::MeanTeacher::boxed),
    ("distill", distill::Distill::boxed),
    ("w2s", w2s::WeakToStrong::boxed),
    ("cam", cam::Cam::boxed),
    ("slrnet", slrnet::Slrnet::boxed),
];

/// Whether `name` is in [`REGISTRY`].
pub fn is_known(name: &str) -> bool {
    REGISTRY.iter().any(|(n, _)| *n == name)
}

/// Builds a method by name (`None` when unknown).
pub fn build(name: &str, init: &MethodInit) -> Option<Result<Box<dyn Method>>> {
    REGISTRY.iter().find(|(n, _)| *n == name).map(|(_, f)| f(init))
}

/// Copies the variables of `vars` into `ParamGroup`s (`encoder.*` at `encoder_lr_mult`, the
/// rest at 1; BatchNorm running statistics left out), names prefixed with `prefix`.
pub fn prefixed_groups(vars: &VarMap, encoder_lr_mult: f64, prefix: &str) -> Vec<ParamGroup> {
    seg_nn::optim::encoder_rest_groups(vars, encoder_lr_mult)
        .into_iter()
        .map(|g| ParamGroup {
            name: format!("{prefix}{}", g.name),
            lr_mult: g.lr_mult,
            params: g.params.into_iter().map(|(n, v)| (format!("{prefix}{n}"), v)).collect(),
        })
        .collect()
}

/// Every variable of `vars` as `(prefix + name, tensor)` for [`Method::state`].
pub fn vars_state(vars: &VarMap, prefix: &str) -> Vec<(String, Tensor)> {
    let data = vars.data().lock().expect("varmap lock poisoned");
    let mut out: Vec<(String, Tensor)> = data
        .iter()
        .map(|(n, v)| (format!("{prefix}{n}"), v.as_tensor().clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Sets every variable of `vars` from `state[prefix + name]` (all must be present, same shape).
pub fn load_vars(vars: &VarMap, state: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
    let data = vars.data().lock().expect("varmap lock poisoned");
    for (n, v) in data.iter() {
        let key = format!("{prefix}{n}");
        let Some(t) = state.get(&key) else {
            candle_core::bail!("checkpoint has no method state '{key}'");
        };
        if t.dims() != v.dims() {
            candle_core::bail!("method state '{key}' has shape {:?}, expected {:?}", t.dims(), v.dims());
        }
        v.set(&t.to_device(v.device())?)?;
    }
    Ok(())
}

/// The model's training-mode forward pass on the labeled batch and its masked cross-entropy: the
/// supervised term every method starts from.
pub fn supervised_ce(ctx: &StepContext) -> Result<(seg_nn::SegOutput, Tensor)> {
    let out = ctx.model.forward_t(&ctx.labeled.images, true)?;
    let ce = ctx.labeled_ce(&out.logits)?;
    Ok((out, ce))
}

impl StepContext<'_> {
    /// The supervised cross-entropy of `logits` (`[b, C, H, W]`) against the labeled batch's
    /// targets, with the run's class weights and hard example mining (`optim.ohem`).
    pub fn labeled_ce(&self, logits: &Tensor) -> Result<Tensor> {
        let (target, ignore) = (&self.labeled.targets, seg_core::IGNORE as u32);
        match self.ohem {
            Some(o) => seg_nn::loss::ohem_cross_entropy(logits, target, ignore, self.class_weights, o),
            None => seg_nn::loss::cross_entropy(logits, target, ignore, self.class_weights),
        }
    }
}

/// A scalar 0 on `dev` (the value of a loss term that is off at this step).
pub fn zero(dev: &Device) -> Result<Tensor> {
    Tensor::new(0f32, dev)
}

/// `[b, ...]` → the batch rolled by one (image k takes image k + 1's place).
pub fn roll(x: &Tensor) -> Result<Tensor> {
    let b = x.dim(0)?;
    if b < 2 {
        return Ok(x.clone());
    }
    Tensor::cat(&[&x.narrow(0, 1, b - 1)?, &x.narrow(0, 0, 1)?], 0)
}

/// Random CutMix boxes `[b, h, w]` (1 inside the box), area fraction in `area`.
pub fn cutmix_boxes(b: usize, h: usize, w: usize, area: [f32; 2], rng: &mut impl rand::Rng) -> Vec<f32> {
    let mut m = vec![0f32; b * h * w];
    for k in 0..b {
        let a = area[0] + (area[1] - area[0]) * rng.random::<f32>();
        let aspect = (rng.random_range(-1.0f32..1.0) * std::f32::consts::LN_2).exp(); // 1/2..2
        let bh = ((a * (h * w) as f32 * aspect).sqrt().round() as usize).clamp(1, h);
        let bw = ((a * (h * w) as f32 / bh as f32).round() as usize).clamp(1, w);
        let (y0, x0) = (rng.random_range(0..=h - bh), rng.random_range(0..=w - bw));
        for y in y0..y0 + bh {
            m[k * h * w + y * w + x0..k * h * w + y * w + x0 + bw].fill(1.0);
        }
    }
    m
}

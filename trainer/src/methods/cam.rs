//! CAM pseudo-labels from image-level tags, trained in one stage (issue #26, method 1).
//!
//! The tagged images come through `data.unlabeled_splits` with `data.tag_file`; their masks are
//! never read. Per step, on the weak view of each tagged crop (scale, crop, flip; no photometric
//! jitter):
//!
//! 1. The model, in training mode, computes its scores and features once. A multi-label head
//!    ([`seg_nn::cam::CamHead`], a bias-free 1×1 conv owned by this method and dropped at export)
//!    on the features gives class activation maps; their spatial mean is trained against the tags
//!    with [`seg_nn::loss::multilabel_bce`] (`L_cls`).
//! 2. After `warmup_iterations`, the detached CAMs are ReLU'd, max-normalised per class and
//!    restricted to the image's tags, refined by pixel-adaptive affinity propagation
//!    ([`seg_nn::cam::Par`], on the image at the CAMs' resolution) and thresholded into
//!    pseudo-labels ([`seg_nn::cam::pseudo_labels`]: `high`, and `low` with a background class;
//!    untrusted classes and padding ignored). `L_seg` is the cross-entropy of the segmentation
//!    scores against them.
//!
//! `L = w_sup · CE(labeled) + w_cls · L_cls + w_seg · L_seg`; with `supervised_weight = 0` the
//! labeled batch is not even forwarded (training from tags alone).
//!
//! With `[cam.group] enabled = true`, the features pass through group-wise semantic mining
//! ([`seg_nn::group`]) first: the step's tagged images that share a tag exchange co-attention
//! messages.
//!
//! What differs from AFA (the single-stage reference): CAMs come from the segmentation network's
//! own features (the decoder's stride-4 embedding by default, or the encoder's last stage) with
//! global average pooling instead of AFA's transformer features with global max pooling; no
//! affinity-from-attention loss; one view per image (no multi-scale CAMs during training — the
//! `cam-labels` command evaluates them with scales and flips).

use candle_core::{DType, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seg_nn::cam::{self, CamHead, Par, PseudoLabelRule};
use seg_nn::group::{GroupConfig, GroupMining};
use seg_nn::init;
use seg_nn::optim::ParamGroup;
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};

/// The most feature positions per crop that group mining takes: its affinities are
/// `[b, b, n, n]` (at b = 8 and n = 1024, 256 MiB).
pub const GROUP_MAX_POSITIONS: usize = 1024;

/// Which feature map the CAM head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CamFeatures {
    /// The decoder's stride-4 embedding (before the segmentation classifier).
    #[default]
    Embedding,
    /// The encoder's last stage (stride 32).
    Encoder,
}

/// The `[cam]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CamConfig {
    /// Feature map of the CAM head.
    pub features: CamFeatures,
    /// Weight of the labeled cross-entropy (0: tags only).
    pub supervised_weight: f64,
    /// Weight of the multi-label classification loss.
    pub weight_cls: f64,
    /// Class-balanced classification loss: each class's positives weighted `1 / (2p)` and its
    /// negatives `1 / (2(1 − p))`, `p` the share of the tagged training images (those of
    /// `data.unlabeled_splits`, which the tag file must list exactly) tagged with it
    /// (`seg_nn::loss::balanced_bce_weights`), so a class tagged in almost every frame (CamVid's
    /// road, sky, building) still learns from the frames without it. Off: plain BCE.
    pub balance_cls: bool,
    /// Weight of the cross-entropy on the CAM pseudo-labels.
    pub weight_seg: f64,
    /// Steps of classification only before the pseudo-label loss starts.
    pub warmup_iterations: u64,
    /// A tagged class labels a pixel when its normalised CAM is at least this.
    pub high: f32,
    /// With `background`: below this for every tagged class → background.
    pub low: f32,
    /// Name of a background class, if the label set has one (VOC: "background"); CamVid: none.
    pub background: Option<String>,
    /// Classes whose CAMs may label pixels (names); empty: all.
    pub trusted_classes: Vec<String>,
    /// Refine CAMs by pixel-adaptive affinity propagation.
    pub par: bool,
    /// PAR neighbour dilations (pixels at the CAMs' resolution).
    pub par_dilations: Vec<usize>,
    /// PAR propagation steps.
    pub par_iterations: usize,
    /// Group-wise semantic mining on the CAM features (`[cam.group]`, off by default): the
    /// tagged images of a step that share tags refine each other's features.
    pub group: GroupConfig,
}

impl Default for CamConfig {
    fn default() -> Self {
        let par = Par::default();
        let rule = PseudoLabelRule::default();
        Self {
            features: CamFeatures::Embedding,
            supervised_weight: 1.0,
            weight_cls: 1.0,
            balance_cls: false,
            weight_seg: 0.1,
            warmup_iterations: 100,
            high: rule.high,
            low: rule.low,
            background: None,
            trusted_classes: Vec::new(),
            par: true,
            par_dilations: par.dilations,
            par_iterations: par.iterations,
            group: GroupConfig::default(),
        }
    }
}

impl CamConfig {
    /// Checks ranges, and class names against `classes`; `crop` is the training crop (CAMs are
    /// upsampled to it by an integer factor).
    pub fn validate(&self, classes: &[String], crop: [u32; 2]) -> std::result::Result<(), String> {
        if crop.iter().any(|c| c % 32 != 0) {
            return Err(format!("augment.crop {crop:?} must be multiples of 32 for cam"));
        }
        for (k, v) in [
            ("supervised_weight", self.supervised_weight),
            ("weight_cls", self.weight_cls),
            ("weight_seg", self.weight_seg),
        ] {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return Err(format!("cam.{k} {v} must be in [0, 100]"));
            }
        }
        if !(self.low >= 0.0 && self.low <= self.high && self.high <= 1.0) {
            return Err(format!(
                "cam.low {} and cam.high {} must satisfy 0 <= low <= high <= 1",
                self.low, self.high
            ));
        }
        for name in self.background.iter().chain(&self.trusted_classes) {
            if !classes.iter().any(|c| c.eq_ignore_ascii_case(name)) {
                return Err(format!("cam: unknown class '{name}' (classes: {})", classes.join(", ")));
            }
        }
        if self.par_dilations.iter().any(|&d| d == 0 || d > 256) || self.par_iterations > 100 {
            return Err("cam.par_dilations must be in 1..=256 and cam.par_iterations <= 100".into());
        }
        self.group.validate()?;
        let stride = match self.features {
            CamFeatures::Embedding => 4,
            CamFeatures::Encoder => 32,
        };
        let positions = (crop[0] / stride) as usize * (crop[1] / stride) as usize;
        if self.group.enabled && positions > GROUP_MAX_POSITIONS {
            return Err(format!(
                "cam.group: {positions} feature positions per {}x{} crop (features at stride {stride}); \
                 co-attention holds every pair of positions of every pair of images, so at most \
                 {GROUP_MAX_POSITIONS} (use features = \"encoder\" or a smaller crop)",
                crop[0], crop[1]
            ));
        }
        Ok(())
    }

    /// The pseudo-label rule for `classes`.
    pub fn rule(&self, classes: &[String]) -> PseudoLabelRule {
        let find = |n: &str| classes.iter().position(|c| c.eq_ignore_ascii_case(n));
        PseudoLabelRule {
            high: self.high,
            low: self.low,
            background: self.background.as_deref().and_then(find).map(|i| i as u8),
            trusted: if self.trusted_classes.is_empty() {
                Vec::new()
            } else {
                let ids: Vec<usize> = self.trusted_classes.iter().filter_map(|n| find(n)).collect();
                (0..classes.len()).map(|i| ids.contains(&i)).collect()
            },
        }
    }

    /// With `balance_cls`, the tags must come from somewhere: checked when the method is built.
    pub fn check_balance(&self, data: &crate::config::DataConfig) -> Result<()> {
        if self.balance_cls && data.tag_file.is_none() {
            candle_core::bail!("cam.balance_cls weighs classes by their tags: set data.tag_file");
        }
        Ok(())
    }

    /// The per-class `(w₊, w₋)` of the classification loss (`[C]` each) with `balance_cls`,
    /// from the presence of each class among the tagged training images (`tags`: class ids
    /// per image, as loaded); `None` when off.
    pub fn bce_weights(
        &self,
        tags: &[Vec<u8>],
        num_classes: usize,
        dev: &candle_core::Device,
    ) -> Result<Option<(Tensor, Tensor)>> {
        if !self.balance_cls {
            return Ok(None);
        }
        if tags.is_empty() {
            candle_core::bail!("cam.balance_cls: no tagged image among data.unlabeled_splits");
        }
        let n = tags.len() as f64;
        let presence: Vec<f64> = seg_core::tags::presence(tags.iter().map(Vec::as_slice), num_classes)
            .iter()
            .map(|&k| k as f64 / n)
            .collect();
        let (pos, neg) = seg_nn::loss::balanced_bce_weights(&presence);
        Ok(Some((
            Tensor::from_vec(pos, num_classes, dev)?,
            Tensor::from_vec(neg, num_classes, dev)?,
        )))
    }

    /// The refinement, `None` when off.
    pub fn refinement(&self) -> Option<Par> {
        self.par.then(|| Par {
            dilations: self.par_dilations.clone(),
            iterations: self.par_iterations,
            ..Par::default()
        })
    }
}

impl CamConfig {
    /// Channels of the feature map the head reads, for `model`.
    pub fn feature_channels(&self, model: &seg_nn::ModelConfig, dev: &candle_core::Device) -> Result<usize> {
        Ok(match self.features {
            CamFeatures::Embedding => model.embedding_channels(),
            CamFeatures::Encoder => {
                seg_nn::model::Encoder::new(model, VarBuilder::from_varmap(&VarMap::new(), DType::F32, dev))?
                    .channels()
                    .1
            }
        })
    }

    /// The trained head of a checkpoint of `method` (`cam` or `slrnet`) from its method state
    /// (`method.<method>.cam.weight`).
    pub fn load_head(
        &self,
        method: &str,
        model: &seg_nn::ModelConfig,
        state: &std::collections::HashMap<String, Tensor>,
        dev: &candle_core::Device,
    ) -> Result<CamHead> {
        let key = format!("method.{method}.cam.weight");
        let Some(w) = state.get(&key) else {
            candle_core::bail!("the checkpoint has no CAM head ({key}): was it trained with method 'cam' or 'slrnet'?");
        };
        let tensors = std::collections::HashMap::from([("cam.weight".to_string(), w.clone())]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
        CamHead::new(self.feature_channels(model, dev)?, model.num_classes, vb.pp("cam"))
    }

    /// The trained group-mining module of a checkpoint (`method.cam.group.*`), `None` when the
    /// run did not use it.
    pub fn load_group(
        &self,
        model: &seg_nn::ModelConfig,
        state: &std::collections::HashMap<String, Tensor>,
        dev: &candle_core::Device,
    ) -> Result<Option<GroupMining>> {
        if !self.group.enabled {
            return Ok(None);
        }
        let tensors: std::collections::HashMap<String, Tensor> = state
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("method.cam.").map(|k| (k.to_string(), v.clone())))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
        Ok(Some(GroupMining::new(
            &self.group,
            self.feature_channels(model, dev)?,
            vb.pp("group"),
        )?))
    }

    /// Evaluation-mode CAMs `[b, C, hf, wf]` of normalised images `x` `[b, 3, H, W]` (stride 4
    /// for the embedding, 32 for the encoder); with `group`, the images of `x` are one group
    /// joined by the given graph; with `lowrank`, SLRNet's LR module on the features (one view).
    pub fn cams(
        &self,
        model: &seg_nn::SegModel,
        head: &CamHead,
        group: Option<(&GroupMining, &[Vec<bool>])>,
        lowrank: Option<&seg_nn::lowrank::LowRankModule>,
        x: &Tensor,
    ) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (low, high) = model.encoder.forward_t(x, false)?; // [b,w1,H/4,W/4], [b,w4,H/32,W/32]
        let features = match self.features {
            CamFeatures::Embedding => model.decode_t(&low, &high, (h, w), false)?.embedding, // [b,d,H/4,W/4]
            CamFeatures::Encoder => high,
        };
        let features = match group {
            Some((g, adj)) => g.forward(&features, adj, false, &mut ChaCha8Rng::seed_from_u64(0))?,
            None => features,
        };
        let features = match lowrank {
            Some(lr) => lr.forward(&[&features])?.remove(0),
            None => features,
        };
        Ok(head.forward(&features)?.0)
    }
}

/// The tagged images of a step, weak views: `[b, 3, h, w]` crops, `valid` `[b, h, w]` (1
/// inside the image), `tags` `[b, C]` multi-hot.
pub(super) struct TaggedViews<'a> {
    pub weak: &'a Tensor,
    pub valid: &'a Tensor,
    pub tags: &'a Tensor,
}

/// The step's tagged views (an error naming `method` without them), and the labeled
/// cross-entropy term `ce` when `cfg.supervised_weight > 0` (else no term: the labeled batch is
/// not forwarded). Shared by `cam` and `slrnet`.
pub(super) fn tagged_step<'a>(
    cfg: &CamConfig,
    ctx: &StepContext<'a>,
    method: &str,
) -> Result<(TaggedViews<'a>, Vec<(&'static str, Tensor)>)> {
    let Some(UnlabeledBatch::Views {
        weak,
        valid,
        tags: Some(tags),
        ..
    }) = ctx.unlabeled
    else {
        candle_core::bail!("{method}: the step has no tagged images (set data.tag_file)");
    };
    let mut terms = Vec::new();
    if cfg.supervised_weight > 0.0 {
        let (_, ce) = super::supervised_ce(ctx)?;
        terms.push(("ce", (ce * cfg.supervised_weight)?));
    }
    Ok((TaggedViews { weak, valid, tags }, terms))
}

/// The CAM features of `x` `[b, 3, h, w]` in training mode (`cfg.features`), and with
/// `logits` the segmentation scores `[b, C, h, w]` (the decoder runs only when needed).
pub(super) fn train_features(
    cfg: &CamConfig,
    ctx: &StepContext,
    x: &Tensor,
    logits: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (_, _, h, w) = x.dims4()?;
    let (low, high) = ctx.model.encoder.forward_t(x, true)?; // [b,w1,h/4,w/4], [b,w4,h/32,w/32]
    if cfg.features == CamFeatures::Encoder && !logits {
        return Ok((high, None)); // [b, w4, h/32, w/32]
    }
    let out = ctx.model.decode_t(&low, &high, (h, w), true)?;
    let f = match cfg.features {
        CamFeatures::Embedding => out.embedding, // [b, d, h/4, w/4]
        CamFeatures::Encoder => high,            // [b, w4, h/32, w/32]
    };
    Ok((f, Some(out.logits)))
}

/// The segmentation targets `[b, h, w]` of the weak views `weak` `[b, 3, h, w]` from normalised
/// CAMs `norm` (`[b, C, hf, wf]` flat, [`cam::normalize_cams`]): refined by PAR on the image
/// when `cfg.par`, thresholded by `rule`, upsampled to the crop; padding (`valid` 0) and
/// unlabelled pixels ignored. Also the share of pixels labelled. Shared by `cam` and `slrnet`.
pub(super) fn pseudo_label_targets(
    cfg: &CamConfig,
    rule: &PseudoLabelRule,
    mut norm: Vec<f32>,
    (b, c, hf, wf): (usize, usize, usize, usize),
    weak: &Tensor,
    valid: &Tensor,
) -> Result<(Tensor, f64)> {
    let (_, _, h, w) = weak.dims4()?;
    let f = h / hf;
    if hf * f != h || wf * f != w {
        candle_core::bail!("cam: crop {h}x{w} is not a multiple of the CAMs' stride {f}");
    }
    if let Some(par) = cfg.refinement() {
        let img = weak.flatten_all()?.to_vec1::<f32>()?;
        let n = 3 * h * w;
        let maps = c * hf * wf;
        for k in 0..b {
            let small = cam::downsample_mean(&img[k * n..(k + 1) * n], 3, (h, w), f);
            par.refine(&small, 3, &mut norm[k * maps..(k + 1) * maps], c, (hf, wf));
        }
    }
    let labels = cam::pseudo_labels(&norm, (b, c, hf, wf), rule);
    let labels = cam::upsample_nearest(&labels, (b, hf, wf), f);
    let inside = valid.flatten_all()?.to_vec1::<u32>()?;
    let targets: Vec<u32> = labels
        .iter()
        .zip(&inside)
        .map(|(&l, &v)| if v == 0 { seg_core::IGNORE as u32 } else { l as u32 })
        .collect();
    let covered = targets.iter().filter(|&&t| t != seg_core::IGNORE as u32).count();
    let coverage = covered as f64 / targets.len().max(1) as f64;
    Ok((Tensor::from_vec(targets, (b, h, w), weak.device())?, coverage))
}

/// The CAM method: its head and step statistics.
pub struct Cam {
    cfg: CamConfig,
    rule: PseudoLabelRule,
    /// `(w₊, w₋)` of the classification loss with `cam.balance_cls` (set in `prepare`).
    bce_weights: Option<(Tensor, Tensor)>,
    num_classes: usize,
    device: candle_core::Device,
    vars: VarMap,
    head: CamHead,
    group: Option<GroupMining>,
    seed: u64,
    stats: Vec<(&'static str, f64)>,
}

impl Cam {
    /// Registry constructor: a seeded CAM head on the configured features.
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        let cfg = init.cfg.cam.clone();
        let channels = cfg.feature_channels(&init.cfg.model, init.device)?;
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, init.device);
        let head = CamHead::new(channels, init.cfg.model.num_classes, vb.pp("cam"))?;
        let group = if cfg.group.enabled {
            Some(GroupMining::new(&cfg.group, channels, vb.pp("group"))?)
        } else {
            None
        };
        init::reseed_with(&vars, init.cfg.schedule.seed ^ 0x0ca3_0ca3, init.cfg.weight_init)?;
        cfg.check_balance(&init.cfg.data)?;
        Ok(Box::new(Self {
            rule: cfg.rule(&init.cfg.data.classes.names),
            bce_weights: None,
            num_classes: init.cfg.model.num_classes,
            device: init.device.clone(),
            cfg,
            vars,
            head,
            group,
            seed: init.cfg.schedule.seed,
            stats: Vec::new(),
        }))
    }
}

impl Method for Cam {
    fn name(&self) -> &'static str {
        "cam"
    }

    fn prepare(&mut self, _labeled: &crate::data::Samples, unlabeled: &crate::data::Samples) -> Result<()> {
        self.bce_weights = self.cfg.bce_weights(&unlabeled.tags, self.num_classes, &self.device)?;
        Ok(())
    }

    fn unlabeled_view(&self) -> UnlabeledView {
        UnlabeledView::Views
    }

    fn needs_tags(&self) -> bool {
        true
    }

    fn param_groups(&self) -> Vec<ParamGroup> {
        super::prefixed_groups(&self.vars, 1.0, "method.cam.")
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(super::vars_state(&self.vars, "method.cam."))
    }

    fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        super::load_vars(&self.vars, state, "method.cam.")
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        self.stats.clone()
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        self.stats.clear();
        let (TaggedViews { weak, valid, tags }, mut terms) = tagged_step(&self.cfg, ctx, "cam")?;
        let dev = weak.device().clone();
        let b = weak.dim(0)?;
        let (features, seg_logits) = train_features(&self.cfg, ctx, weak, true)?; // [b, F, hf, wf], [b, C, h, w]
        let seg_logits = seg_logits.expect("asked for");
        let features = &features;
        let mined;
        let features = match &self.group {
            Some(g) => {
                let (_, c) = tags.dims2()?;
                let adj = seg_nn::group::tag_graph(&tags.flatten_all()?.to_vec1::<f32>()?, b, c);
                // graph dropout drawn from (seed, step): the same on a resumed run
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ctx.iteration);
                mined = g.forward(features, &adj, true, &mut rng)?; // [b, F, hf, wf]
                &mined
            }
            None => features,
        };
        let (cams, logits) = self.head.forward(features)?; // [b, C, hf, wf], [b, C]
        let weights = self.bce_weights.as_ref().map(|(p, n)| (p, n));
        let cls = seg_nn::loss::multilabel_bce(&logits, tags, weights)?;
        self.stats.push(("cls_bce", cls.to_scalar::<f32>()? as f64));
        terms.push(("cls", (cls * self.cfg.weight_cls)?));
        if ctx.iteration < self.cfg.warmup_iterations || self.cfg.weight_seg == 0.0 {
            terms.push(("seg", super::zero(&dev)?));
            return Ok(terms);
        }
        let (_, c, hf, wf) = cams.dims4()?;
        let cam_host = cams.detach().flatten_all()?.to_vec1::<f32>()?;
        let tag_host = tags.flatten_all()?.to_vec1::<f32>()?;
        let norm = cam::normalize_cams(&cam_host, (b, c, hf, wf), &tag_host);
        let (targets, coverage) = pseudo_label_targets(&self.cfg, &self.rule, norm, (b, c, hf, wf), weak, valid)?;
        self.stats.push(("pseudo_coverage", coverage));
        let seg = seg_nn::loss::cross_entropy(&seg_logits, &targets, seg_core::IGNORE as u32, None)?;
        terms.push(("seg", (seg * self.cfg.weight_seg)?));
        Ok(terms)
    }
}

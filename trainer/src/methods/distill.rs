//! Knowledge distillation of a trained teacher into a (smaller) student (issue #27).
//!
//! The teacher is frozen and runs with no gradient, in evaluation mode, on the student's crops.
//! It is either a finished edge-seg run (`distill.teacher` = one of its checkpoints, with the run's
//! `config.toml` beside it for the teacher's architecture) or any segmentation ONNX
//! (`distill.teacher` ending in `.onnx`: an edge-seg export, or a PyTorch one with
//! `distill.teacher_mean`/`teacher_std`), run in tract ([`crate::teacher::OnnxTeacher`]).
//! The student learns
//!
//! `L = CE(student, labels) + λ·T²·KL(softmax(t/T) ‖ softmax(s/T))` (labeled crops)
//! `  + λ_u·T²·KL(…)` on unlabeled frames that the teacher labels (`unlabeled_weight`),
//! `  + λ_f·d(adaptor(e_s), e_t)` feature distillation (`feature_weight`, MSE or cosine),
//! `  + λ_a·mean (cos(e_s,i, e_s,j) − cos(e_t,i, e_t,j))²` pair-wise distillation (`affinity_weight`),
//!
//! per pixel at stride 4 (both nets' `logits_low`, decoder embeddings `e`;
//! [`seg_nn::loss::distillation_kl`], [`seg_nn::loss::feature_distillation`],
//! [`seg_nn::loss::affinity_distillation`]). The adaptor is a 1×1 convolution from the student's
//! embedding width to the teacher's, trained with the student and kept in the checkpoints. The
//! feature and pair-wise terms need a checkpoint teacher (an ONNX graph gives only its scores).
//! On unlabeled frames both nets see the weak view (no photometric jitter). The teacher is read
//! again on `--resume`, so it must not change during a run.
//!
//! What the teacher looks at (`teacher_view`): `crop` — the student's crops, at the student's
//! scale; `frame` — each whole training frame once, before the first step, at the teacher's own
//! input size (a checkpoint's `data.input_size`, an ONNX graph's fixed input), and every crop
//! then reads its own region of those scores through the crop's geometry (scale, offset, flip),
//! pooled onto the student's stride-4 grid ([`crate::teacher::crop_scores`]), crop padding
//! masked out. A student trained at a smaller input than its teacher (issue #27's Lite0 at
//! 128×160 under a 360×480 teacher) thus learns from the teacher at the scale the teacher was
//! trained for, with the whole frame as context. The KL terms only (the feature and pair-wise
//! terms need the teacher's embedding of the very crop).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use seg_nn::loss::{self, FeatureLoss};
use seg_nn::optim::ParamGroup;
use seg_nn::SegModel;
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};
use crate::data::{CropOrigin, Samples};
use crate::teacher::{crop_scores, FrameScores, OnnxTeacher};

/// What the teacher looks at (`distill.teacher_view`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeacherView {
    /// The student's crops, as the student sees them.
    #[default]
    Crop,
    /// Each whole training frame once, at the teacher's own input size; crops read their region.
    Frame,
}

/// The `[distill]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// The teacher: a checkpoint (`<run>/best.safetensors` or `last.safetensors`, its run's
    /// `config.toml` beside it) or an ONNX file (`*.onnx`).
    pub teacher: PathBuf,
    /// An ONNX teacher's input normalisation mean, when its file has no edge-seg metadata.
    pub teacher_mean: Option<[f32; 3]>,
    /// An ONNX teacher's input normalisation std, when its file has no edge-seg metadata.
    pub teacher_std: Option<[f32; 3]>,
    /// Softmax temperature T.
    pub temperature: f64,
    /// λ: weight of the distillation term on the labeled crops.
    pub weight: f64,
    /// λ_u: weight of the distillation term on unlabeled frames (0: off; > 0 needs
    /// `data.unlabeled_splits`).
    pub unlabeled_weight: f64,
    /// λ_f: weight of feature distillation through the adaptor (0: off; checkpoint teachers).
    pub feature_weight: f64,
    /// The feature distance: `mse` or `cosine`.
    pub feature_loss: FeatureLoss,
    /// λ_a: weight of pair-wise (affinity) distillation (0: off; checkpoint teachers).
    pub affinity_weight: f64,
    /// At most this many positions per image in the affinity matrices (pooled down to it).
    pub affinity_positions: usize,
    /// What the teacher looks at: `crop` (the student's crops) or `frame` (whole frames at its
    /// own input size, read at each crop's place; KL terms only).
    pub teacher_view: TeacherView,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            teacher: PathBuf::new(),
            teacher_mean: None,
            teacher_std: None,
            temperature: 2.0,
            weight: 1.0,
            unlabeled_weight: 0.0,
            feature_weight: 0.0,
            feature_loss: FeatureLoss::Mse,
            affinity_weight: 0.0,
            affinity_positions: 1024,
            teacher_view: TeacherView::Crop,
        }
    }
}

impl DistillConfig {
    /// Checks ranges.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.teacher.as_os_str().is_empty() {
            return Err("distill.teacher must name the teacher's checkpoint".into());
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err("distill.temperature must be > 0".into());
        }
        for (name, w) in [
            ("weight", self.weight),
            ("unlabeled_weight", self.unlabeled_weight),
            ("feature_weight", self.feature_weight),
            ("affinity_weight", self.affinity_weight),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(format!("distill.{name} must be ≥ 0 (0 turns the term off)"));
            }
        }
        if !(1..=16384).contains(&self.affinity_positions) {
            return Err("distill.affinity_positions must be 1 to 16384".into());
        }
        if self.is_onnx() {
            if self.feature_weight > 0.0 || self.affinity_weight > 0.0 {
                return Err(format!(
                    "distill.feature_weight and distill.affinity_weight need a checkpoint teacher: the ONNX teacher {} gives only class scores",
                    self.teacher.display()
                ));
            }
        } else if self.teacher_mean.is_some() || self.teacher_std.is_some() {
            return Err("distill.teacher_mean/teacher_std are for ONNX teachers: a checkpoint teacher's run config has its normalisation".into());
        }
        if self.teacher_view == TeacherView::Frame && (self.feature_weight > 0.0 || self.affinity_weight > 0.0) {
            return Err("distill.teacher_view = \"frame\" gives the KL terms only: distill.feature_weight and distill.affinity_weight need teacher_view = \"crop\"".into());
        }
        if self.teacher_mean.is_some() != self.teacher_std.is_some() {
            return Err("distill.teacher_mean and distill.teacher_std go together".into());
        }
        Ok(())
    }

    /// Whether the teacher is an ONNX file.
    pub fn is_onnx(&self) -> bool {
        self.teacher.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    }
}

/// The frozen teacher.
enum Teacher {
    /// A finished edge-seg run.
    Run {
        model: Box<SegModel>,
        /// Its embedding width (decoder channels).
        width: usize,
        /// Its input size (`data.input_size` of its run), for whole frames.
        input_hw: (usize, usize),
        // keeps the teacher's weights alive
        _vars: VarMap,
    },
    /// An ONNX graph in tract.
    Onnx(Box<OnnxTeacher>),
}

/// What the teacher says about a batch: stride-4 scores, and the embedding when it has one.
struct TeacherOut {
    logits_low: Tensor,
    embedding: Option<Tensor>,
}

impl Teacher {
    fn run(&mut self, images: &Tensor, low_hw: (usize, usize)) -> Result<TeacherOut> {
        match self {
            Teacher::Run { model, .. } => {
                let out = model.forward_t(images, false)?;
                Ok(TeacherOut {
                    logits_low: out.logits_low.detach(),
                    embedding: Some(out.embedding.detach()),
                })
            }
            Teacher::Onnx(t) => Ok(TeacherOut {
                logits_low: t
                    .scores(images, low_hw)
                    .map_err(|e| candle_core::Error::msg(format!("{e:#}")))?,
                embedding: None,
            }),
        }
    }

    /// The teacher's stride-4 scores of a whole frame, resized to its own input size (an ONNX
    /// graph with a free input size: the frame's size) and normalised with `mean`/`std` (the
    /// student's; an ONNX teacher re-normalises).
    fn frame(
        &mut self,
        img: &image::RgbImage,
        mean: [f32; 3],
        std: [f32; 3],
        dev: &candle_core::Device,
    ) -> Result<FrameScores> {
        let (h, w) = match self {
            Teacher::Run { input_hw, .. } => *input_hw,
            Teacher::Onnx(t) => t.input_hw().unwrap_or((img.height() as usize, img.width() as usize)),
        };
        let resized = seg_core::preprocess::resize_rgb(img, h as u32, w as u32);
        let mut x = vec![0f32; 3 * h * w];
        seg_core::preprocess::normalize_into(&resized, mean, std, &mut x);
        let x = Tensor::from_vec(x, (1, 3, h, w), dev)?; // [1, 3, h, w]
        let low = self.run(&x, (h.div_ceil(4), w.div_ceil(4)))?.logits_low; // [1, C, h/4, w/4]
        let (_, c, lh, lw) = low.dims4()?;
        Ok(FrameScores {
            c,
            h: lh,
            w: lw,
            data: low.flatten_all()?.to_vec1::<f32>()?,
        })
    }
}

/// The teacher's scores of a batch of crops read from its whole-frame scores: `[b, C, h, w]`
/// scores and `[b, h, w]` the share of each cell inside its frame, on `dev`.
fn frame_batch(
    frames: &[FrameScores],
    origins: &[CropOrigin],
    (h, w): (usize, usize),
    dev: &candle_core::Device,
) -> Result<(Tensor, Tensor)> {
    let c = frames.first().map_or(0, |f| f.c);
    let (mut scores, mut share) = (Vec::with_capacity(origins.len() * c * h * w), Vec::new());
    for o in origins {
        let f = frames
            .get(o.index)
            .ok_or_else(|| candle_core::Error::msg(format!("distill: no teacher scores for image {}", o.index)))?;
        let (s, m) = crop_scores(f, &o.geometry, (h, w));
        scores.extend(s);
        share.extend(m);
    }
    let b = origins.len();
    Ok((
        Tensor::from_vec(scores, (b, c, h, w), dev)?,
        Tensor::from_vec(share, (b, h, w), dev)?,
    ))
}

/// The distillation method: the frozen teacher and the feature adaptor.
pub struct Distill {
    cfg: DistillConfig,
    teacher: Teacher,
    /// `[d_teacher, d_student]` weight and `[d_teacher]` bias of the 1×1 adaptor (feature term),
    /// held in a [`VarMap`] (`adaptor.weight`, `adaptor.bias`) for the checkpoint state.
    adaptor: Option<(Var, Var, VarMap)>,
    /// `teacher_view = "frame"`: the teacher's scores of every labeled and unlabeled frame.
    frames: Option<(Vec<FrameScores>, Vec<FrameScores>)>,
    /// The student's normalisation and the device (for the frames).
    norm: ([f32; 3], [f32; 3]),
    device: candle_core::Device,
    stats: Vec<(&'static str, f64)>,
}

/// Prefix of the method's state and parameter names.
const PREFIX: &str = "distill.";

impl Distill {
    /// Registry constructor: loads the teacher and builds the adaptor (seeded).
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        let cfg = init.cfg.distill.clone();
        let msg = |e: anyhow::Error| candle_core::Error::msg(format!("{e:#}"));
        let teacher = if cfg.is_onnx() {
            let data = &init.cfg.data;
            let norm = cfg.teacher_mean.zip(cfg.teacher_std);
            Teacher::Onnx(Box::new(
                OnnxTeacher::open(&cfg.teacher, &data.classes, data.mean, data.std, norm).map_err(msg)?,
            ))
        } else {
            let (model, width, input_hw, vars) = load_teacher(&cfg.teacher, init).map_err(msg)?;
            Teacher::Run {
                model: Box::new(model),
                width,
                input_hw,
                _vars: vars,
            }
        };
        let adaptor = match &teacher {
            Teacher::Run { width, .. } if cfg.feature_weight > 0.0 => {
                use rand::{Rng, SeedableRng};
                let ds = init.cfg.model.embedding_channels();
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(init.cfg.schedule.seed ^ 0x0d15_7111);
                let bound = 1.0 / (ds as f32).sqrt();
                let w: Vec<f32> = (0..width * ds).map(|_| rng.random_range(-bound..bound)).collect();
                let (w, b) = (
                    Var::from_vec(w, (*width, ds), init.device)?,
                    Var::zeros(*width, DType::F32, init.device)?,
                );
                let vars = VarMap::new();
                {
                    let mut data = vars.data().lock().expect("varmap lock poisoned");
                    data.insert("adaptor.weight".into(), w.clone());
                    data.insert("adaptor.bias".into(), b.clone());
                }
                Some((w, b, vars))
            }
            _ => None,
        };
        Ok(Box::new(Self {
            cfg,
            teacher,
            adaptor,
            frames: None,
            norm: (init.cfg.data.mean, init.cfg.data.std),
            device: init.device.clone(),
            stats: Vec::new(),
        }))
    }

    /// The adaptor applied to `[b, d_s, h, w]` student features: `[b, d_t, h, w]`.
    fn adapt(&self, e: &Tensor) -> Result<Tensor> {
        let Some((w, bias, _)) = &self.adaptor else {
            candle_core::bail!("distill: no adaptor (feature_weight is 0)");
        };
        let (b, d, h, wd) = e.dims4()?;
        let x = e.reshape((b, d, h * wd))?; // [b, d_s, n]
        let y = w.as_tensor().broadcast_matmul(&x)?; // [b, d_t, n]
        y.broadcast_add(&bias.as_tensor().reshape((1, (), 1))?)?
            .reshape((b, (), h, wd)) // [b, d_t, h, w]
    }

    /// The feature and pair-wise terms of one batch (student output `s`, teacher `t`).
    fn feature_terms(
        &self,
        s: &seg_nn::SegOutput,
        t: &TeacherOut,
        out: &mut Vec<(&'static str, Tensor)>,
    ) -> Result<()> {
        let Some(te) = &t.embedding else {
            return Ok(());
        };
        if self.cfg.feature_weight > 0.0 {
            let f = loss::feature_distillation(&self.adapt(&s.embedding)?, te, self.cfg.feature_loss, None)?;
            out.push(("feat", (f * self.cfg.feature_weight)?));
        }
        if self.cfg.affinity_weight > 0.0 {
            let a = loss::affinity_distillation(&s.embedding, te, self.cfg.affinity_positions)?;
            out.push(("pair", (a * self.cfg.affinity_weight)?));
        }
        Ok(())
    }
}

/// Reads the teacher's run config and checkpoint and checks that it sees the same inputs and
/// classes as the student.
fn load_teacher(
    path: &std::path::Path,
    init: &MethodInit,
) -> anyhow::Result<(SegModel, usize, (usize, usize), VarMap)> {
    let run = path.parent().unwrap_or(std::path::Path::new("."));
    let tcfg = crate::checkpoint::load_config(run)
        .map_err(|e| anyhow::anyhow!("distill.teacher {}: {e:#}", path.display()))?;
    let (s, t) = (&init.cfg.data, &tcfg.data);
    anyhow::ensure!(
        s.classes == t.classes && s.mean == t.mean && s.std == t.std,
        "distill.teacher {}: the teacher was trained with other classes or normalisation than this run",
        path.display()
    );
    let vars = VarMap::new();
    let model = SegModel::new(&tcfg.model, VarBuilder::from_varmap(&vars, DType::F32, init.device))?;
    crate::checkpoint::load(path, &vars, init.device)?;
    let [ih, iw] = tcfg.data.input_size;
    Ok((model, tcfg.model.embedding_channels(), (ih as usize, iw as usize), vars))
}

impl Method for Distill {
    fn name(&self) -> &'static str {
        "distill"
    }

    fn prepare(&mut self, labeled: &Samples, unlabeled: &Samples) -> Result<()> {
        if self.cfg.teacher_view != TeacherView::Frame {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let (mean, std) = self.norm;
        let mut score = |s: &Samples| -> Result<Vec<FrameScores>> {
            s.images
                .iter()
                .map(|img| self.teacher.frame(img, mean, std, &self.device))
                .collect()
        };
        // Unlabeled frames are read only by the unlabeled KD term.
        let unlabeled = if self.cfg.unlabeled_weight > 0.0 {
            score(unlabeled)?
        } else {
            Vec::new()
        };
        let frames = (score(labeled)?, unlabeled);
        tracing::info!(
            labeled = frames.0.len(),
            unlabeled = frames.1.len(),
            seconds = started.elapsed().as_secs_f64(),
            "teacher scored every frame at its own input size"
        );
        self.frames = Some(frames);
        Ok(())
    }

    fn unlabeled_view(&self) -> UnlabeledView {
        if self.cfg.unlabeled_weight > 0.0 {
            UnlabeledView::Views
        } else {
            UnlabeledView::None
        }
    }

    fn param_groups(&self) -> Vec<ParamGroup> {
        match &self.adaptor {
            Some((_, _, vars)) => super::prefixed_groups(vars, 1.0, PREFIX)
                .into_iter()
                .filter(|g| !g.params.is_empty())
                .collect(),
            None => Vec::new(),
        }
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        let (out, ce) = super::supervised_ce(ctx)?;
        let (_, _, lh, lw) = out.logits_low.dims4()?;
        let (t, mask) = match &self.frames {
            Some((labeled, _)) => {
                let (scores, mask) = frame_batch(labeled, &ctx.labeled.origins, (lh, lw), out.logits_low.device())?;
                let t = TeacherOut {
                    logits_low: scores,
                    embedding: None,
                };
                (t, Some(mask))
            }
            None => (self.teacher.run(&ctx.labeled.images, (lh, lw))?, None),
        }; // [b, C, h/4, w/4]
        let kd = loss::distillation_kl(&out.logits_low, &t.logits_low, self.cfg.temperature, mask.as_ref())?;
        self.stats = vec![("kd_raw", kd.to_scalar::<f32>()? as f64)];
        let mut terms = vec![("ce", ce), ("kd", (kd * self.cfg.weight)?)];
        self.feature_terms(&out, &t, &mut terms)?;
        if self.cfg.unlabeled_weight > 0.0 {
            let Some(UnlabeledBatch::Views {
                weak, valid, origins, ..
            }) = ctx.unlabeled
            else {
                candle_core::bail!("distill: the step has no unlabeled views");
            };
            let s = ctx.model.forward_t(weak, true)?;
            let (_, _, uh, uw) = s.logits_low.dims4()?;
            // the teacher's scores and the share of each stride-4 cell inside the image (0 in crop
            // padding)
            let (tu, mask) = match &self.frames {
                Some((_, unlabeled)) => frame_batch(unlabeled, origins, (uh, uw), s.logits_low.device())?,
                None => (
                    self.teacher.run(weak, (uh, uw))?.logits_low,
                    seg_nn::bilinear::resize(&valid.to_dtype(DType::F32)?.unsqueeze(1)?, uh, uw)?.squeeze(1)?,
                ),
            }; // [b, C, h/4, w/4], [b, h/4, w/4]
            let kdu = loss::distillation_kl(&s.logits_low, &tu, self.cfg.temperature, Some(&mask))?;
            self.stats.push(("kd_unlabeled_raw", kdu.to_scalar::<f32>()? as f64));
            terms.push(("kd_u", (kdu * self.cfg.unlabeled_weight)?));
        }
        Ok(terms)
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        self.stats.clone()
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(match &self.adaptor {
            Some((_, _, vars)) => super::vars_state(vars, PREFIX),
            None => Vec::new(),
        })
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        match &self.adaptor {
            Some((_, _, vars)) => super::load_vars(vars, state, PREFIX),
            None => Ok(()),
        }
    }
}

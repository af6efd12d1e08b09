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

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use seg_nn::loss::{self, FeatureLoss};
use seg_nn::optim::ParamGroup;
use seg_nn::SegModel;
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};
use crate::teacher::OnnxTeacher;

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
}

/// The distillation method: the frozen teacher and the feature adaptor.
pub struct Distill {
    cfg: DistillConfig,
    teacher: Teacher,
    /// `[d_teacher, d_student]` weight and `[d_teacher]` bias of the 1×1 adaptor (feature term),
    /// held in a [`VarMap`] (`adaptor.weight`, `adaptor.bias`) for the checkpoint state.
    adaptor: Option<(Var, Var, VarMap)>,
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
            let (model, width, vars) = load_teacher(&cfg.teacher, init).map_err(msg)?;
            Teacher::Run {
                model: Box::new(model),
                width,
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
fn load_teacher(path: &std::path::Path, init: &MethodInit) -> anyhow::Result<(SegModel, usize, VarMap)> {
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
    Ok((model, tcfg.model.embedding_channels(), vars))
}

impl Method for Distill {
    fn name(&self) -> &'static str {
        "distill"
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
        let t = self.teacher.run(&ctx.labeled.images, (lh, lw))?; // [b, C, h/4, w/4]
        let kd = loss::distillation_kl(&out.logits_low, &t.logits_low, self.cfg.temperature, None)?;
        self.stats = vec![("kd_raw", kd.to_scalar::<f32>()? as f64)];
        let mut terms = vec![("ce", ce), ("kd", (kd * self.cfg.weight)?)];
        self.feature_terms(&out, &t, &mut terms)?;
        if self.cfg.unlabeled_weight > 0.0 {
            let Some(UnlabeledBatch::Views { weak, valid, .. }) = ctx.unlabeled else {
                candle_core::bail!("distill: the step has no unlabeled views");
            };
            let s = ctx.model.forward_t(weak, true)?;
            let (_, _, uh, uw) = s.logits_low.dims4()?;
            let tu = self.teacher.run(weak, (uh, uw))?;
            // the share of each stride-4 cell inside the image (0 in crop padding)
            let mask = seg_nn::bilinear::resize(&valid.to_dtype(DType::F32)?.unsqueeze(1)?, uh, uw)?.squeeze(1)?; // [b, h/4, w/4]
            let kdu = loss::distillation_kl(&s.logits_low, &tu.logits_low, self.cfg.temperature, Some(&mask))?;
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

//! Mean teacher self-training, with DARS as an option.
//!
//! An EMA teacher (`t ← α t + (1 − α) s` after every optimiser step, BatchNorm statistics
//! included; [`seg_nn::optim::ema_update`]) labels the weak view of each unlabeled crop
//! (evaluation mode); the student learns those pseudo-labels on the strong view (the same crop
//! with photometric jitter). Which pixels get a pseudo-label:
//!
//! - fixed threshold: teacher confidence `≥ threshold`;
//! - DARS (He et al., ICCV 2021; `dars = true`): per-class thresholds chosen so the selected
//!   pseudo-labels follow the class distribution of the labeled set, ties at a threshold sampled
//!   at random ([`seg_nn::consistency::dars_select`]). The number of pseudo-labels per batch is
//!   `dars_ratio` × valid pixels, or (with `dars_ratio = 0`) as many as the fixed threshold
//!   would select, so the two variants differ only in which pixels are kept.
//!
//! `L = CE(student, labeled) + λ · Σ_selected NLL / #valid unlabeled pixels`.

use std::collections::HashMap;

use candle_core::{DType, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seg_nn::{consistency, loss, optim, SegModel};
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};

/// The `[mean_teacher]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeanTeacherConfig {
    /// λ: weight of the unlabeled loss.
    pub weight: f64,
    /// EMA decay α of the teacher (0.99–0.999 usual).
    pub ema_decay: f64,
    /// Confidence threshold of the fixed-threshold variant (and DARS's budget when
    /// `dars_ratio = 0`).
    pub threshold: f32,
    /// Supervised-only steps before the unlabeled loss starts (the teacher is updated anyway).
    pub warmup_iterations: u64,
    /// Use DARS per-class thresholds instead of the fixed one.
    pub dars: bool,
    /// DARS: fraction of valid unlabeled pixels to pseudo-label; 0 = as many as the fixed
    /// threshold selects in the same batch.
    pub dars_ratio: f32,
}

impl Default for MeanTeacherConfig {
    fn default() -> Self {
        Self {
            weight: 1.0,
            ema_decay: 0.99,
            threshold: 0.9,
            warmup_iterations: 0,
            dars: false,
            dars_ratio: 0.0,
        }
    }
}

impl MeanTeacherConfig {
    /// Checks ranges.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(format!("mean_teacher.ema_decay {} must be in [0, 1)", self.ema_decay));
        }
        if !(0.0..=1.0).contains(&self.threshold) || !(0.0..=1.0).contains(&self.dars_ratio) {
            return Err("mean_teacher.threshold and mean_teacher.dars_ratio must be in [0, 1]".into());
        }
        Ok(())
    }
}

/// The mean-teacher method: the EMA teacher and the step statistics.
pub struct MeanTeacher {
    cfg: MeanTeacherConfig,
    seed: u64,
    student: VarMap,
    teacher_vars: VarMap,
    teacher: SegModel,
    class_frequencies: Vec<f64>,
    stats: Vec<(&'static str, f64)>,
}

impl MeanTeacher {
    /// Registry constructor: the teacher starts as a copy of the (initialised) student.
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        let teacher_vars = VarMap::new();
        let teacher = SegModel::new(
            &init.cfg.model,
            VarBuilder::from_varmap(&teacher_vars, DType::F32, init.device),
        )?;
        optim::ema_update(&teacher_vars, init.model_vars, 0.0)?; // copy
        Ok(Box::new(Self {
            cfg: init.cfg.mean_teacher.clone(),
            seed: init.cfg.schedule.seed,
            student: init.model_vars.clone(),
            teacher_vars,
            teacher,
            class_frequencies: init.class_frequencies.to_vec(),
            stats: Vec::new(),
        }))
    }

    /// The teacher's variables (for tests and inspection).
    pub fn teacher_vars(&self) -> &VarMap {
        &self.teacher_vars
    }

    /// Pseudo-label targets `[b, h, w]` u32 (IGNORE where not selected) from teacher scores.
    fn targets(&mut self, teacher_logits: &Tensor, valid: &Tensor, iteration: u64) -> Result<(Tensor, f64)> {
        let (conf, label) = consistency::confidence_and_label(teacher_logits)?; // [b, h, w]
        let shape = label.shape().clone();
        let dev = label.device().clone();
        let conf_v = conf.flatten_all()?.to_vec1::<f32>()?;
        let label_v = label.flatten_all()?.to_vec1::<u32>()?;
        let valid_v: Vec<bool> = valid.flatten_all()?.to_vec1::<u32>()?.iter().map(|&v| v != 0).collect();
        let fixed: Vec<bool> = conf_v
            .iter()
            .zip(&valid_v)
            .map(|(&c, &v)| v && c >= self.cfg.threshold)
            .collect();
        let selected = if self.cfg.dars {
            let n_valid = valid_v.iter().filter(|&&v| v).count();
            let budget = if self.cfg.dars_ratio > 0.0 {
                (self.cfg.dars_ratio as f64 * n_valid as f64).round() as usize
            } else {
                fixed.iter().filter(|&&v| v).count()
            };
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xda25 ^ iteration.wrapping_mul(0x9e37_79b9_7f4a));
            consistency::dars_select(&conf_v, &label_v, &valid_v, &self.class_frequencies, budget, &mut rng).selected
        } else {
            fixed
        };
        let n_sel = selected.iter().filter(|&&v| v).count();
        let n_valid = valid_v.iter().filter(|&&v| v).count().max(1);
        let target: Vec<u32> = label_v
            .iter()
            .zip(&selected)
            .map(|(&l, &s)| if s { l } else { seg_core::IGNORE as u32 })
            .collect();
        Ok((Tensor::from_vec(target, shape, &dev)?, n_sel as f64 / n_valid as f64))
    }
}

impl Method for MeanTeacher {
    fn name(&self) -> &'static str {
        "mean_teacher"
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
            candle_core::bail!("mean_teacher: the step has no unlabeled views");
        };
        if ctx.iteration < self.cfg.warmup_iterations {
            return Ok(vec![("ce", ce), ("unsup", super::zero(&dev)?)]);
        }
        let t_logits = self.teacher.forward_t(weak, false)?.logits.detach(); // [b, C, h, w]
        let (target, ratio) = self.targets(&t_logits, valid, ctx.iteration)?; // [b, h, w]
        let s_logits = ctx.model.forward_t(strong, true)?.logits; // [b, C, h, w]
        let n_valid = valid.to_dtype(DType::F32)?.sum_all()?.maximum(1.0)?;
        // unselected pixels carry the ignore id in `target`: no mask beyond it
        let unsup = loss::pseudo_label_ce(&s_logits, &target, seg_core::IGNORE as u32, None, &n_valid)?;
        self.stats = vec![("unsup_raw", unsup.to_scalar::<f32>()? as f64), ("mask_ratio", ratio)];
        Ok(vec![("ce", ce), ("unsup", (unsup * self.cfg.weight)?)])
    }

    fn after_step(&mut self, _iteration: u64) -> Result<()> {
        optim::ema_update(&self.teacher_vars, &self.student, self.cfg.ema_decay)
    }

    fn metrics(&self) -> Vec<(&'static str, f64)> {
        self.stats.clone()
    }

    fn state(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(super::vars_state(&self.teacher_vars, "teacher."))
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        super::load_vars(&self.teacher_vars, state, "teacher.")
    }
}

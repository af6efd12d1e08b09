//! Knowledge distillation of a trained teacher into a (smaller) student.
//!
//! The teacher is a finished edge-seg run (`distill.teacher`: one of its checkpoints, with the
//! run's `config.toml` beside it for the teacher's architecture). It runs in evaluation mode, with
//! no gradient, on the same labeled crops as the student; the student learns
//!
//! `L = CE(student, labels) + λ · T² · KL(softmax(t / T) ‖ softmax(s / T))`
//!
//! per pixel at stride 4 (both nets' `logits_low`; [`seg_nn::loss::distillation_kl`]), with
//! `λ = distill.weight` and `T = distill.temperature` (Hinton et al. 2015). The teacher is read
//! again on `--resume`, so it must not change during a run.

use std::path::PathBuf;

use candle_core::{DType, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use seg_nn::{loss, SegModel};
use serde::{Deserialize, Serialize};

use super::{Method, MethodInit, StepContext};

/// The `[distill]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// The teacher's checkpoint (`<run>/best.safetensors` or `last.safetensors`); its run's
    /// `config.toml` must sit beside it.
    pub teacher: PathBuf,
    /// Softmax temperature T.
    pub temperature: f64,
    /// λ: weight of the distillation term.
    pub weight: f64,
}

impl Default for DistillConfig {
    fn default() -> Self {
        Self {
            teacher: PathBuf::new(),
            temperature: 2.0,
            weight: 1.0,
        }
    }
}

impl DistillConfig {
    /// Checks ranges.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.teacher.as_os_str().is_empty() {
            return Err("distill.teacher must name the teacher's checkpoint".into());
        }
        if self.temperature.is_nan() || self.temperature <= 0.0 || self.weight.is_nan() || self.weight < 0.0 {
            return Err("distill.temperature must be > 0 and distill.weight ≥ 0".into());
        }
        Ok(())
    }
}

/// The distillation method: the frozen teacher.
pub struct Distill {
    cfg: DistillConfig,
    teacher: SegModel,
    // keeps the teacher's weights alive
    _teacher_vars: VarMap,
}

impl Distill {
    /// Registry constructor: loads the teacher.
    pub fn boxed(init: &MethodInit) -> Result<Box<dyn Method>> {
        let cfg = init.cfg.distill.clone();
        let (teacher, vars) =
            load_teacher(&cfg.teacher, init).map_err(|e| candle_core::Error::msg(format!("{e:#}")))?;
        Ok(Box::new(Self {
            cfg,
            teacher,
            _teacher_vars: vars,
        }))
    }
}

/// Reads the teacher's run config and checkpoint and checks that it sees the same inputs and
/// classes as the student.
fn load_teacher(path: &std::path::Path, init: &MethodInit) -> anyhow::Result<(SegModel, VarMap)> {
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
    Ok((model, vars))
}

impl Method for Distill {
    fn name(&self) -> &'static str {
        "distill"
    }

    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>> {
        let (out, ce) = super::supervised_ce(ctx)?;
        let teacher = self.teacher.forward_t(&ctx.labeled.images, false)?.logits_low.detach(); // [b, C, h/4, w/4]
        let kd = loss::distillation_kl(&out.logits_low, &teacher, self.cfg.temperature, None)?;
        Ok(vec![("ce", ce), ("kd", (kd * self.cfg.weight)?)])
    }
}

//! What adaptation has done so far, and the outcome of a guard check.

use serde::Serialize;

use super::Monitors;

/// What adaptation has done so far (shown in the status line, saved in the state file).
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdaptStats {
    /// Training steps taken.
    pub steps: u64,
    /// Guard checks made.
    pub checks: u64,
    /// Rollbacks (to the last good weights or the source).
    pub rollbacks: u64,
    /// Rollbacks that restored the source weights.
    pub resets: u64,
    /// Step and reason of the last rollback.
    pub last_rollback: Option<(u64, String)>,
    /// Monitor values at the last check.
    pub monitors: Option<Monitors>,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Mean wall time of a step (ms).
    pub mean_step_ms: f64,
    /// Inference plans built for publishing.
    pub plans_built: u64,
    /// Mean wall time of building one (fold + rewrite + tract optimisation), ms.
    pub mean_plan_ms: f64,
    /// Mean wall time of a guard check (the monitors on the held and source frames), ms.
    pub mean_check_ms: f64,
    /// Rollbacks in a row (reset by a passing check).
    pub consecutive_trips: u32,
}

impl AdaptStats {
    /// The status-line text.
    pub fn status(&self) -> String {
        let mut s = format!("adapt: {} steps", self.steps);
        match &self.last_rollback {
            Some((step, why)) => s.push_str(&format!(", {} rollbacks (last at step {step}: {why})", self.rollbacks)),
            None => s.push_str(", no rollback"),
        }
        if let Some(m) = &self.monitors {
            s.push_str(&format!(
                " | conf {:.2} ent {:.2}/{:.2} agree {:.3} drift {:.3}",
                m.confidence, m.entropy, m.anchor_entropy, m.agreement, m.drift
            ));
            if let (Some(a), Some(v)) = (m.source_agreement, m.source_iou) {
                s.push_str(&format!(" src-agree {a:.3} src-iou {v:.3}"));
            }
        }
        s
    }
}

/// The outcome of a guard check.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The weights passed (or guards are off): they are the new last good set.
    Pass,
    /// A monitor tripped; the weights were restored to the last good set.
    RolledBack(String),
    /// A monitor tripped `reset_after` times in a row; the source weights were restored.
    Reset(String),
}

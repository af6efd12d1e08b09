//! Guard rails of on-device adaptation: monitors computed on a held buffer of recent frames,
//! compared with the source (anchor) model on the same frames, and the rule that trips a
//! rollback.
//!
//! Test-time adaptation is known to collapse (a model trained on its own predictions can drift
//! to predicting one class everywhere, confidently). The monitors catch the signatures of that:
//! - **agreement** with the anchor: the fraction of held pixels whose class is the source
//!   model's. Adapting to a new scene changes some pixels; a collapse changes most.
//! - **class-histogram drift**: total-variation distance between the predicted class
//!   distributions of the adapted and the source model on the held frames (0 = same, 1 =
//!   disjoint).
//! - **entropy** (normalised by `ln C`) against the anchor's: a collapse is over-confident.
//! - mean **confidence** is reported.
//! - **source-frame agreement** (optional, `source_frames`): on a few frames of the *source*
//!   domain kept on the device, the share of pixels whose class is still the source model's
//!   (and, off by default, the mean per-class IoU between the two). The monitors above only see
//!   recent frames, so they cannot tell when adapting to the current scene makes the model worse
//!   on the scene it was trained for (forgetting); this one can.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When to roll back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Guards on (off = naive adaptation: no checks, no rollback).
    pub enabled: bool,
    /// Frames in the held buffer.
    pub held: usize,
    /// Every this many observed frames, one goes to the held buffer (the first one included).
    pub hold_every: u64,
    /// Roll back when fewer held pixels than this agree with the source model.
    pub min_agreement: f64,
    /// Roll back when the predicted class histogram moved more than this (total variation).
    pub max_drift: f64,
    /// Roll back when the mean entropy falls below this fraction of the source model's.
    pub min_entropy_ratio: f64,
    /// After this many rollbacks in a row, restore the source weights instead of the last
    /// good ones.
    pub reset_after: u32,
    /// A folder of frames from the source (training) domain, `.png` / `.jpg` (none: no
    /// source-frame monitor).
    pub source_frames: Option<PathBuf>,
    /// Roll back when fewer source-frame pixels than this keep the source model's class.
    pub min_source_agreement: f64,
    /// Roll back when the mean per-class IoU between the adapted and the source model's classes
    /// on the source frames falls below this (stricter: a few pixels of a rare class count as
    /// much as a whole road).
    pub min_source_iou: f64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            held: 6,
            hold_every: 10,
            min_agreement: 0.7,
            max_drift: 0.2,
            min_entropy_ratio: 0.6,
            reset_after: 3,
            source_frames: None,
            min_source_agreement: 0.93,
            min_source_iou: 0.0,
        }
    }
}

impl GuardConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.held == 0 || self.hold_every == 0 {
            return Err("guard.held and guard.hold_every must be at least 1".into());
        }
        if self.held > 256 || self.hold_every > 1 << 20 {
            return Err(format!(
                "guard.held = {} / guard.hold_every = {}: limits are 256 / {}",
                self.held,
                self.hold_every,
                1 << 20
            ));
        }
        for (k, v) in [
            ("min_agreement", self.min_agreement),
            ("max_drift", self.max_drift),
            ("min_entropy_ratio", self.min_entropy_ratio),
            ("min_source_agreement", self.min_source_agreement),
            ("min_source_iou", self.min_source_iou),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("guard.{k} must be in [0, 1], got {v}"));
            }
        }
        if self.reset_after == 0 {
            return Err("guard.reset_after must be at least 1".into());
        }
        Ok(())
    }

    /// Why `m` should roll back, or `None` when it is fine.
    pub fn verdict(&self, m: &Monitors) -> Option<String> {
        if m.agreement < self.min_agreement {
            return Some(format!(
                "agreement with source {:.3} < {:.3}",
                m.agreement, self.min_agreement
            ));
        }
        if m.drift > self.max_drift {
            return Some(format!("class-histogram drift {:.3} > {:.3}", m.drift, self.max_drift));
        }
        if m.entropy < self.min_entropy_ratio * m.anchor_entropy {
            return Some(format!(
                "entropy {:.3} < {:.2} x source {:.3}",
                m.entropy, self.min_entropy_ratio, m.anchor_entropy
            ));
        }
        if let Some(s) = m.source_agreement.filter(|&s| s < self.min_source_agreement) {
            return Some(format!(
                "agreement with source on source frames {s:.3} < {:.3}",
                self.min_source_agreement
            ));
        }
        match m.source_iou {
            Some(s) if s < self.min_source_iou => Some(format!(
                "class IoU with source on source frames {s:.3} < {:.3}",
                self.min_source_iou
            )),
            _ => None,
        }
    }
}

/// Monitor values on the held buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Monitors {
    /// Mean max-class probability.
    pub confidence: f64,
    /// Mean entropy / ln C.
    pub entropy: f64,
    /// The source model's mean entropy / ln C on the same frames.
    pub anchor_entropy: f64,
    /// Fraction of pixels whose class is the source model's.
    pub agreement: f64,
    /// Total-variation distance of the class histograms.
    pub drift: f64,
    /// Fraction of source-frame pixels whose class is the source model's (`None` without
    /// source frames).
    pub source_agreement: Option<f64>,
    /// Mean per-class IoU between the adapted and the source model's classes on the source
    /// frames (`None` without source frames).
    pub source_iou: Option<f64>,
}

/// Per-pixel summary of class probabilities: `(class, max prob, entropy / ln C)`, from
/// probabilities laid out `[C, P]` (class-major).
pub fn summarise(prob: &[f32], classes: usize) -> Vec<(u32, f32, f32)> {
    let p = prob.len() / classes.max(1);
    let ln_c = (classes.max(2) as f32).ln();
    (0..p)
        .map(|i| {
            let (mut best, mut arg, mut ent) = (f32::NEG_INFINITY, 0u32, 0f32);
            for c in 0..classes {
                let v = prob[c * p + i];
                if v > best {
                    best = v;
                    arg = c as u32;
                }
                if v > 0.0 {
                    ent -= v * v.ln();
                }
            }
            (arg, best, ent / ln_c)
        })
        .collect()
}

/// Class histogram (fractions) of `labels`.
pub fn histogram(labels: impl Iterator<Item = u32>, classes: usize) -> Vec<f64> {
    let mut h = vec![0f64; classes];
    let mut n = 0f64;
    for l in labels {
        if let Some(v) = h.get_mut(l as usize) {
            *v += 1.0;
        }
        n += 1.0;
    }
    h.iter_mut().for_each(|v| *v /= n.max(1.0));
    h
}

/// Monitors from the adapted model's per-pixel summaries and the anchor's classes and entropy
/// on the same pixels (all held frames concatenated).
pub fn monitors(current: &[(u32, f32, f32)], anchor_class: &[u32], anchor_entropy: &[f32], classes: usize) -> Monitors {
    let n = current.len().max(1) as f64;
    let agree = current.iter().zip(anchor_class).filter(|(c, a)| c.0 == **a).count() as f64;
    let hc = histogram(current.iter().map(|c| c.0), classes);
    let ha = histogram(anchor_class.iter().copied(), classes);
    Monitors {
        confidence: current.iter().map(|c| c.1 as f64).sum::<f64>() / n,
        entropy: current.iter().map(|c| c.2 as f64).sum::<f64>() / n,
        anchor_entropy: anchor_entropy.iter().map(|&e| e as f64).sum::<f64>() / anchor_entropy.len().max(1) as f64,
        agreement: agree / n,
        drift: 0.5 * hc.iter().zip(&ha).map(|(a, b)| (a - b).abs()).sum::<f64>(),
        source_agreement: None,
        source_iou: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitors_of_a_collapse_trip_and_of_the_source_pass() {
        // 3 classes, 4 pixels, class-major [C, P]: the source predicts 0, 1, 2, 1 at 0.6
        let mut src = vec![0.2f32; 12];
        for (i, &c) in [0usize, 1, 2, 1].iter().enumerate() {
            src[c * 4 + i] = 0.6;
        }
        let s = summarise(&src, 3);
        assert_eq!(s.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2, 1]);
        let anchor_class: Vec<u32> = s.iter().map(|x| x.0).collect();
        let anchor_ent: Vec<f32> = s.iter().map(|x| x.2).collect();
        let g = GuardConfig::default();
        let same = monitors(&s, &anchor_class, &anchor_ent, 3);
        assert_eq!((same.agreement, same.drift), (1.0, 0.0));
        assert!((same.entropy - same.anchor_entropy).abs() < 1e-9);
        assert!(g.verdict(&same).is_none());
        // collapse: class 0 everywhere, confidently
        let mut col = vec![0.01f32; 12];
        col[..4].iter_mut().for_each(|v| *v = 0.98);
        let m = monitors(&summarise(&col, 3), &anchor_class, &anchor_ent, 3);
        assert_eq!(m.agreement, 0.25);
        assert!((m.drift - 0.75).abs() < 1e-9, "{m:?}");
        assert!(m.entropy < 0.2 * m.anchor_entropy && m.confidence > 0.97);
        assert!(g.verdict(&m).unwrap().contains("agreement"));
        // over-confident but the same classes: the entropy rule
        let mut sharp = vec![0.01f32; 12];
        for (i, &c) in [0usize, 1, 2, 1].iter().enumerate() {
            sharp[c * 4 + i] = 0.98;
        }
        let m = monitors(&summarise(&sharp, 3), &anchor_class, &anchor_ent, 3);
        assert_eq!((m.agreement, m.drift), (1.0, 0.0));
        assert!(g.verdict(&m).unwrap().contains("entropy"));
        // forgetting: the recent frames look fine, the source frames do not
        let mut m = same;
        m.source_agreement = Some(0.9);
        assert!(g
            .verdict(&m)
            .unwrap()
            .contains("agreement with source on source frames"));
        m.source_agreement = Some(0.99);
        assert!(g.verdict(&m).is_none());
        m.source_iou = Some(0.55);
        assert!(g.verdict(&m).is_none(), "the class-IoU rule is off by default");
        let strict = GuardConfig {
            min_source_iou: 0.9,
            ..g.clone()
        };
        assert!(strict.verdict(&m).unwrap().contains("class IoU"));
        m.source_iou = Some(0.95);
        assert!(strict.verdict(&m).is_none());
        assert!(GuardConfig {
            min_source_iou: 1.5,
            ..g.clone()
        }
        .validate()
        .is_err());
        assert!(GuardConfig { held: 0, ..g.clone() }.validate().is_err());
        assert!(GuardConfig { max_drift: 2.0, ..g }.validate().is_err());
    }
}

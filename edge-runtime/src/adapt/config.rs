//! The adaptation settings (`--adapt-config FILE`, `--adapt-set key=value`) and their ranges.

use seg_nn::adapt::HeadScope;
use serde::{Deserialize, Serialize};

use super::GuardConfig;

/// Adaptation settings (`--adapt-config FILE`, `--adapt-set key=value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptConfig {
    /// `edge-seg run --adapt`: hand one frame in this many to the worker (it takes one step per
    /// frame it gets; frames arriving while it is busy are dropped). `edge-seg adapt` hands over
    /// every frame (see its `--steps-per-frame`).
    pub every_n_frames: u64,
    /// Recent frames kept for training.
    pub ring: usize,
    /// Which affines train: `last` (the last decoder convolution's; everything before it runs
    /// frozen in tract; default) or `decoder` (every decoder convolution's).
    pub scope: HeadScope,
    /// Train the classifier too (off: only per-channel affines, as TENT).
    pub train_classifier: bool,
    /// Rank of a trainable low-rank update `ΔW = B · A` of the last decoder convolution's
    /// kernel (LoRA; `B` starts at zero, `A` at random from `seed`), trained beside the affines
    /// and folded into the kernel when published (0 = off).
    pub low_rank: usize,
    /// Learning rate of the low-rank update, as a multiple of `lr`.
    pub low_rank_lr_mult: f64,
    /// Learning rate (constant; 0: the steps change nothing).
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Crop `[h, w]` (multiples of 32).
    pub crop: [u32; 2],
    /// Random scale `[min, max]` of the frame (relative to the network input) before cropping.
    pub scale: [f32; 2],
    /// IoU range of the two crops (`[1, 1]`: no contextual augmentation).
    pub iou: [f32; 2],
    /// Weight of the directional contrastive loss.
    pub dc_weight: f64,
    /// DC temperature τ.
    pub temperature: f32,
    /// DC positive-filtering threshold γ.
    pub gamma: f32,
    /// Negatives kept from past steps.
    pub bank: usize,
    /// Negatives pushed to the bank per step.
    pub bank_push: usize,
    /// Negatives drawn from the step's own crops (at random among their valid cells).
    pub pair_negatives: usize,
    /// Weight of the cross-view pseudo-label cross-entropy.
    pub pseudo_weight: f64,
    /// Confidence a pseudo-label needs.
    pub pseudo_threshold: f32,
    /// Weight of entropy minimisation (TENT's loss; 0 = off).
    pub entropy_weight: f64,
    /// Weight of an L2 pull of the trainable values toward their source values (0 = off).
    pub anchor_weight: f64,
    /// Weight of source replay: each step also fits the source model's own labels on one of
    /// the `guard.source_frames` (cross-entropy on its stride-4 argmax), so the head keeps what
    /// it knew on the training domain while it moves toward the new one (0 = off; needs
    /// `guard.source_frames`). Their frozen features are computed once, so a replay step
    /// costs a head forward and backward, not an encoder run.
    pub replay_weight: f64,
    /// CoTTA stochastic restore: after each step, each trainable value returns to its source
    /// value with this probability (0 = off).
    pub restore_prob: f64,
    /// Publish an exponential moving average of the trained values, with this decay per step
    /// (0 = off: the values of the last step). The guards check, and the inference path and
    /// the state file get, the average; training goes on from the raw values. A rollback
    /// restarts both from the last good set.
    pub weight_ema: f64,
    /// Strength `α` of the per-frame input normalisation toward the colour statistics of
    /// `guard.source_frames` ([`crate::adapt::input_norm`]; 0 = off; needs the source frames, which are what
    /// it normalises toward). It has no trained values: each frame's own statistics, blended
    /// with the source's by `α`, map it toward the source domain, in the adapter and in the
    /// published graph. Off by default: chosen on the synthetic tuning shift (`α = 0.5`), it did
    /// not help on the day → dusk test (docs/BENCHMARKS.md).
    pub input_norm: f64,
    /// `edge-seg adapt` only: before the steps, re-estimate the encoder's BatchNorm statistics on
    /// the folder's frames (AdaBN on the exported graph, [`crate::adapt::bn_stats`]), blended with
    /// the statistics of `guard.source_frames` by this weight (0 = off, 1 = the frames' own;
    /// needs the source frames). Off by default: for the pretrained source, 0.1 was the largest
    /// blend that kept the day frames within 0.5 mIoU on the synthetic tuning shift (+7.3 there),
    /// and it lost on the day → dusk test (docs/BENCHMARKS.md). `run --adapt` refuses it. The
    /// guards take the re-estimated model as their source: they do not check what the
    /// re-estimation changes.
    pub encoder_stats: f64,
    /// Check the guards and publish the weights every this many steps.
    pub swap_every: u64,
    /// Threads of the adaptation's own pool for candle's work (see [`crate::adapt::in_pool`]).
    pub threads: usize,
    /// `run --adapt`: the largest share of wall time the worker may be busy (steps, checks, plan
    /// builds), in (0, 1]. Past it the worker pauses, and the frames handed to it meanwhile are
    /// dropped, so a model fast enough to feed it more frames than it can take does not lose its
    /// FPS to adaptation (1 = no pause).
    pub max_busy: f64,
    /// Guard rails.
    pub guard: GuardConfig,
    /// Random seed.
    pub seed: u64,
}

impl Default for AdaptConfig {
    fn default() -> Self {
        Self {
            every_n_frames: 6,
            ring: 16,
            scope: HeadScope::Last,
            train_classifier: false,
            low_rank: 0,
            low_rank_lr_mult: 1.0,
            lr: 0.005,
            momentum: 0.9,
            crop: [128, 192],
            scale: [0.7, 1.1],
            iou: [0.1, 1.0],
            dc_weight: 1.0,
            temperature: 0.1,
            gamma: 0.75,
            bank: 1024,
            bank_push: 128,
            pair_negatives: 512,
            pseudo_weight: 1.0,
            pseudo_threshold: 0.9,
            entropy_weight: 0.0,
            anchor_weight: 0.0,
            replay_weight: 0.0,
            restore_prob: 0.0,
            weight_ema: 0.0,
            input_norm: 0.0,
            encoder_stats: 0.0,
            swap_every: 10,
            threads: 1,
            max_busy: 1.0,
            guard: GuardConfig::default(),
            seed: 0,
        }
    }
}

impl AdaptConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.every_n_frames == 0 || self.ring == 0 || self.swap_every == 0 || self.threads == 0 {
            return Err("every_n_frames, ring, swap_every and threads must be at least 1".into());
        }
        crate::limits::check_threads(self.threads, "threads")?;
        // counts that size buffers or loops: bounded before anything is allocated from them
        for (k, v, max) in [
            ("ring", self.ring as u64, 1024),
            ("bank", self.bank as u64, 1 << 18),
            ("bank_push", self.bank_push as u64, 1 << 16),
            ("pair_negatives", self.pair_negatives as u64, 1 << 16),
            ("low_rank", self.low_rank as u64, 256),
            ("every_n_frames", self.every_n_frames, 1 << 20),
            ("swap_every", self.swap_every, 1 << 20),
        ] {
            if v > max {
                return Err(format!("{k} = {v} is above its limit {max}"));
            }
        }
        if self.crop.iter().any(|&c| c == 0 || c % 32 != 0 || c > 2048) {
            return Err(format!(
                "crop {:?}: both sides must be positive multiples of 32, at most 2048",
                self.crop
            ));
        }
        if !(self.scale[0] > 0.0 && self.scale[0] <= self.scale[1] && self.scale[1] <= 8.0) {
            return Err(format!("scale {:?}: need 0 < min <= max <= 8", self.scale));
        }
        // lr = 0: no step changes a value (the per-frame input normalisation alone, as
        // benches/adapt/run.py measures it)
        if !(self.lr.is_finite() && self.lr >= 0.0 && self.lr <= 10.0) {
            return Err(format!("lr must be in [0, 10], got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.temperature.is_finite() && self.temperature >= 1e-3 && self.temperature <= 100.0) {
            return Err(format!("temperature must be in [0.001, 100], got {}", self.temperature));
        }
        for (k, v) in [("gamma", self.gamma), ("pseudo_threshold", self.pseudo_threshold)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{k} must be in [0, 1], got {v}"));
            }
        }
        for (k, v) in [
            ("dc_weight", self.dc_weight),
            ("pseudo_weight", self.pseudo_weight),
            ("entropy_weight", self.entropy_weight),
            ("anchor_weight", self.anchor_weight),
        ] {
            if !(v.is_finite() && (0.0..=1e3).contains(&v)) {
                return Err(format!("{k} must be in [0, 1000], got {v}"));
            }
        }
        if !(0.0 <= self.iou[0] && self.iou[0] <= self.iou[1] && self.iou[1] <= 1.0) {
            return Err(format!("iou {:?}: need 0 <= min <= max <= 1", self.iou));
        }
        if !(self.replay_weight >= 0.0 && self.replay_weight.is_finite()) {
            return Err(format!("replay_weight must be >= 0, got {}", self.replay_weight));
        }
        if self.replay_weight > 0.0 && self.guard.source_frames.is_none() {
            return Err("replay_weight > 0 needs guard.source_frames (the frames it replays)".into());
        }
        if !(0.0..=1.0).contains(&self.restore_prob) {
            return Err(format!("restore_prob must be in [0, 1], got {}", self.restore_prob));
        }
        if !(self.low_rank_lr_mult >= 0.0 && self.low_rank_lr_mult.is_finite()) {
            return Err(format!("low_rank_lr_mult must be >= 0, got {}", self.low_rank_lr_mult));
        }
        if !(0.0..1.0).contains(&self.weight_ema) {
            return Err(format!("weight_ema must be in [0, 1), got {}", self.weight_ema));
        }
        if !(0.0..=1.0).contains(&self.input_norm) {
            return Err(format!("input_norm must be in [0, 1], got {}", self.input_norm));
        }
        if !(self.max_busy > 0.0 && self.max_busy <= 1.0) {
            return Err(format!("max_busy must be in (0, 1], got {}", self.max_busy));
        }
        if !(0.0..=1.0).contains(&self.encoder_stats) {
            return Err(format!("encoder_stats must be in [0, 1], got {}", self.encoder_stats));
        }
        if self.encoder_stats > 0.0 && self.guard.source_frames.is_none() {
            return Err("encoder_stats > 0 needs guard.source_frames (the statistics it blends with)".into());
        }
        if self.input_norm > 0.0 && self.guard.source_frames.is_none() {
            return Err("input_norm > 0 needs guard.source_frames (their colour statistics)".into());
        }
        self.guard.validate()
    }
}

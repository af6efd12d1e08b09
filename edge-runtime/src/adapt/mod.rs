//! On-device adaptation (issue #5): the model keeps learning from the unlabeled frames its camera
//! sees, with guards that roll it back when it gets worse.
//!
//! **What is trained.** By default (`scope = "last"`, `train_classifier = false`) only the
//! per-channel affine after the last decoder convolution (BatchNorm's affine, TENT's choice of
//! parameters: 64 values for the edge student) trains, in candle
//! ([`seg_nn::adapt::AdaptHead`]). Everything before that convolution is frozen and runs in tract
//! (the exported float graph cut with [`seg_onnx::extract`] at the convolution's inputs, before
//! the ASPP upsampling). `scope = "decoder"` trains every decoder affine (the frozen part is then
//! the encoder), and `train_classifier` adds the classifier. On a synthetic shift of training
//! frames the default gained as much as training the classifier too, without its forgetting
//! (`benches/adapt/tune.py`). It is cheap enough to step on a CPU core beside inference, cannot
//! forget the encoder's features, and folds back into plain convolution weights, so the inference
//! graph keeps its shape and speed. `low_rank = r` adds the other light option, a rank-`r`
//! update `B · A` of that convolution's kernel (LoRA), which folds into the same kernel.
//!
//! **The step** ([`Adapter::step`]) is CAC's context-aware consistency made light: a frame from
//! a ring buffer of recent frames is scaled at random, two overlapping crops are taken (IoU in
//! `[0.1, 1]`, [`seg_core::data::pair`]) with their own flip and photometric jitter; both go through
//! the frozen encoder and the trainable head; on the overlap cells (stride 8, flip-aware) the
//! trainer's directional contrastive loss ([`seg_nn::consistency::directional_contrastive`]: the
//! less confident side pulled toward the more confident one, positive filtering, pseudo-label
//! negative sampling, a memory bank of negatives) plus a cross-view pseudo-label cross-entropy
//! where the other crop is confident. The DC loss acts on the L2-normalised decoder embedding
//! directly: the exported model has no projector, and a projector trained from scratch on the
//! device would first have to learn what the trainer's did.
//!
//! **Guards** ([`guard`]): every `swap_every` steps the adapted head is scored on a held buffer of
//! recent frames against the source model, and on the source-domain frames of
//! `guard.source_frames` when given (forgetting, which recent frames cannot show); when a
//! monitor trips, the weights roll back to the last good set (to the source after `reset_after`
//! trips in a row). Only weights that passed a check are ever published to the inference path
//! ([`slot::Slot`]), so a degradation between checks never reaches the screen. An optional
//! CoTTA-style stochastic restore resets a random fraction of the trainable values to the source
//! after each step. `weight_ema` publishes a moving average of the trained values instead of the
//! last step's (off by default: on the synthetic tuning shift it did not beat the default).
//!
//! **Input normalisation** ([`input_norm`], `input_norm = α`, off by default): each frame is
//! mapped toward the colour statistics of the source frames before the network, in the adapter
//! and in the published graph. It has no trained values. It won on the synthetic tuning shift
//! and lost on the day → dusk test (docs/BENCHMARKS.md).
//!
//! **Encoder statistics** ([`bn_stats`], `encoder_stats = α`, `edge-seg adapt` only, off by
//! default): before any step, the encoder's BatchNorm statistics are re-estimated on the folder's
//! frames from the exported graph (AdaBN), blended with those of `guard.source_frames`. On the
//! pretrained source every trained scope lost on the synthetic tuning shift and this won there;
//! on day → dusk it lost too (docs/BENCHMARKS.md, issue #25).
//!
//! **The `adapt` feature** (default; issue #24): the learner, its settings, the frozen part, the
//! state file and the worker hold candle tensors and train with `seg-nn`, so they are compiled
//! only with it. What needs no candle stays in every build: the guards' monitors, input
//! normalisation, the statistics and the hot-swap [`slot::Slot`] that the pipeline's
//! [`AdaptLink`](crate::pipeline::AdaptLink) polls.

pub mod bn_stats;
pub mod guard;
pub mod input_norm;
pub mod slot;
mod stats;

pub use guard::{GuardConfig, Monitors};
pub use stats::{AdaptStats, Verdict};

// the learner and what holds its tensors: candle and seg-nn
#[cfg(feature = "adapt")]
mod config;
#[cfg(feature = "adapt")]
mod frozen;
#[cfg(feature = "adapt")]
mod learner;
#[cfg(feature = "adapt")]
pub mod offline;
#[cfg(feature = "adapt")]
pub mod state;
#[cfg(feature = "adapt")]
pub mod worker;

#[cfg(feature = "adapt")]
use learner::adapt_err;
#[cfg(feature = "adapt")]
pub use {
    config::AdaptConfig,
    frozen::head_inputs,
    learner::{fingerprint, in_pool, Adapter},
};

/// The image files of a `guard.source_frames` folder `dir`, sorted; an unreadable or empty
/// folder is an error naming it.
pub(crate) fn source_frame_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, crate::RuntimeError> {
    let err = |reason: String| crate::RuntimeError::Input {
        path: dir.display().to_string(),
        reason,
    };
    let paths = seg_core::io::image_files(dir).map_err(|e| err(format!("guard.source_frames: {e}")))?;
    if paths.is_empty() {
        return Err(err("guard.source_frames: no .png or .jpg frames in this folder".into()));
    }
    Ok(paths)
}

/// Reads `paths` as RGB frames; an unreadable one is an error naming it.
pub(crate) fn read_frames(paths: &[std::path::PathBuf]) -> Result<Vec<image::RgbImage>, crate::RuntimeError> {
    paths
        .iter()
        .map(|p| {
            image::open(p)
                .map(|i| i.to_rgb8())
                .map_err(|e| crate::RuntimeError::Input {
                    path: p.display().to_string(),
                    reason: format!("not a readable image: {e}"),
                })
        })
        .collect()
}

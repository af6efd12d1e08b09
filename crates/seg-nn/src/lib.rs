//! edge-seg models, losses and optimiser on candle.
//!
//! - [`bilinear`]: trainable bilinear resize (matmuls with fixed interpolation matrices).
//! - [`layers`]: plain layer structs (`new(cfg, vb)` + `forward`) with their ONNX emitters.
//! - [`model`]: the encoder–decoder segmentation net ([`model::SegModel`]).
//! - [`loss`]: loss functions (free functions with explicit ignore index / masks).
//! - [`consistency`]: semi-supervised losses (CAC directional contrastive, CPS), DARS thresholds,
//!   a memory bank of past features.
//! - [`conv`], [`fused`]: CPU training kernels — convolution as im2col + matmul with a col2im
//!   backward, training BatchNorm(+ReLU) as one op with a hand-written backward.
//! - [`adapt`]: the exported model's decoder and classifier as a light trainable head (on-device
//!   adaptation).
//! - [`optim`]: SGD with momentum and weight decay, poly learning-rate schedule.
//! - [`init`]: seeded weight initialisation.
//! - [`export`]: ONNX export with BatchNorm folded.

pub mod adapt;
pub mod bilinear;
pub mod consistency;
pub mod conv;
pub mod export;
pub mod fused;
pub mod init;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optim;

pub use candle_core::{DType, Device, Result, Tensor, Var};
pub use model::{ModelConfig, SegModel, SegOutput};

/// The largest absolute element-wise difference of two tensors of the same shape (`f32`): how
/// the tests compare a kernel with its reference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()
}

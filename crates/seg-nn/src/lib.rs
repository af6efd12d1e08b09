//! edge-seg models, losses and optimiser on candle.
//!
//! - [`bilinear`]: trainable bilinear resize (matmuls with fixed interpolation matrices).
//! - [`layers`]: plain layer structs (`new(cfg, vb)` + `forward`) with their ONNX emitters.
//! - [`model`]: the encoder–decoder segmentation net ([`model::SegModel`]).
//! - [`loss`]: loss functions (free functions with explicit ignore index / masks).
//! - [`cam`]: class activation maps from image-level tags (head, normalisation, pseudo-labels,
//!   pixel-adaptive refinement).
//! - [`lowrank`]: unrolled (collective) non-negative matrix factorisation, SLRNet's low-rank
//!   module.
//! - [`consistency`]: semi-supervised losses (CAC directional contrastive, CPS), DARS thresholds,
//!   a memory bank of past features.
//! - [`group`]: group-wise semantic mining (co-attention between images that share tags).
//! - [`conv`], [`depthwise`], [`fused`]: CPU training kernels — convolution as im2col + matmul
//!   with a col2im backward, depthwise convolution as direct loops with its own backward,
//!   training BatchNorm(+ReLU/ReLU6) as one op with a hand-written backward.
//! - [`efficientnet`]: EfficientNet-Lite0/1/2 encoders; [`pth`] reads the legacy PyTorch files
//!   their ImageNet weights ship in, [`pretrained`] maps them onto the model's names.
//! - [`adapt`]: the exported model's decoder and classifier as a light trainable head (on-device
//!   adaptation).
//! - [`optim`]: SGD with momentum and weight decay, poly learning-rate schedule.
//! - [`init`]: seeded weight initialisation.
//! - [`export`]: ONNX export with BatchNorm folded.

pub mod adapt;
pub mod bilinear;
pub mod cam;
pub mod consistency;
pub mod conv;
pub mod depthwise;
pub mod efficientnet;
pub mod export;
pub mod fused;
pub mod group;
pub mod init;
pub mod layers;
pub mod loss;
pub mod lowrank;
pub mod model;
pub mod optim;
pub mod pretrained;
pub mod pth;

pub use candle_core::{DType, Device, Result, Tensor, Var};
pub use model::{EncoderKind, ModelConfig, SegModel, SegOutput};

/// The largest absolute element-wise difference of two tensors of the same shape (`f32`): how
/// the tests compare a kernel with its reference.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()
}

//! Training methods. A method is one file implementing [`Method`], returning named loss terms
//! that the trainer sums, logs and back-propagates; adding one is one file plus one line in
//! [`REGISTRY`].

use candle_core::{Result, Tensor};
use seg_nn::SegModel;

pub mod supervised;

/// A labeled batch: normalised images and their targets.
#[derive(Debug)]
pub struct LabeledBatch {
    /// `[b, 3, h, w]` normalised images.
    pub images: Tensor,
    /// `[b, h, w]` class ids (`u32`), [`seg_core::IGNORE`] where unlabeled.
    pub targets: Tensor,
}

/// What a method sees at one step.
pub struct StepContext<'a> {
    /// The model being trained.
    pub model: &'a SegModel,
    /// This step's labeled batch.
    pub labeled: &'a LabeledBatch,
    /// Optional `[C]` class weights for the supervised cross-entropy.
    pub class_weights: Option<&'a Tensor>,
    /// The step index (0-based).
    pub iteration: u64,
}

/// A training method: returns named loss terms; the trainer sums them.
pub trait Method: Send {
    /// The method's registry name.
    fn name(&self) -> &'static str;
    /// The loss terms of one step.
    fn losses(&mut self, ctx: &StepContext) -> Result<Vec<(&'static str, Tensor)>>;
}

/// Builds a boxed method.
pub type Constructor = fn() -> Box<dyn Method>;

/// Name → constructor of every method.
pub const REGISTRY: &[(&str, Constructor)] = &[("supervised", supervised::Supervised::boxed)];

/// Builds a method by name.
pub fn build(name: &str) -> Option<Box<dyn Method>> {
    REGISTRY.iter().find(|(n, _)| *n == name).map(|(_, f)| f())
}

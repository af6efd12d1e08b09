//! Inference backends. The pipeline talks to [`Backend`] only; a backend is one file.

pub mod tract;

/// Class scores of one frame at the network's resolution, `[classes, height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Number of classes.
    pub classes: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Row-major `[classes, height, width]` scores.
    pub data: Vec<f32>,
}

/// Runs a segmentation network on one normalised `[1, 3, h, w]` input.
pub trait Backend: Send {
    /// Short name shown in the status line.
    fn name(&self) -> &'static str;
    /// Runs the network.
    fn run(&mut self, input: &[f32]) -> Result<Logits, crate::RuntimeError>;
}

//! tract (CPU) backend.

use tract_onnx::prelude::*;

use super::{Backend, Logits};
use crate::RuntimeError;

/// Threads tract uses for its matrix products, process-wide (1 = single-threaded, the default).
/// Values above 1 run them on a rayon pool of that size.
pub fn set_threads(n: usize) {
    use tract_linalg::multithread::{set_default_executor, Executor};
    set_default_executor(if n <= 1 {
        Executor::SingleThread
    } else {
        Executor::multithread(n)
    });
}

/// The optimised, runnable tract plan of `proto` with its first input fixed to f32 `shape`.
pub fn plan(proto: &seg_onnx::pb::ModelProto, shape: [usize; 4]) -> TractResult<std::sync::Arc<TypedSimplePlan>> {
    tract_onnx::onnx()
        .model_for_proto_model(proto)?
        .with_input_fact(0, f32::fact(shape).into())?
        .into_optimized()?
        .into_runnable()
}

/// An optimised tract plan for a fixed input shape (cloning shares the plan).
#[derive(Clone)]
pub struct TractBackend {
    plan: std::sync::Arc<TypedSimplePlan>,
    input_shape: [usize; 4],
}

impl TractBackend {
    /// Builds the plan from a decoded ONNX model with a fixed `[1, 3, h, w]` input.
    pub fn new(proto: &seg_onnx::pb::ModelProto, origin: &str, hw: (u32, u32)) -> Result<Self, RuntimeError> {
        let err = |e: TractError| RuntimeError::Model {
            path: origin.to_string(),
            reason: format!("{e:#}").replace('\n', " "),
        };
        let shape = [1usize, 3, hw.0 as usize, hw.1 as usize];
        let plan = plan(proto, shape).map_err(err)?;
        Ok(Self {
            plan,
            input_shape: shape,
        })
    }
}

impl Backend for TractBackend {
    fn name(&self) -> &'static str {
        "tract"
    }

    fn run(&mut self, input: &[f32]) -> Result<Logits, RuntimeError> {
        let err = |e: TractError| RuntimeError::Backend(format!("tract: {e:#}").replace('\n', " "));
        let x = tract_ndarray::Array4::from_shape_vec(self.input_shape, input.to_vec())
            .map_err(|e| RuntimeError::Backend(format!("input: {e}")))?
            .into_tensor();
        let out = self.plan.run(tvec!(x.into())).map_err(err)?;
        // a graph may give no output at all (issue #23: a mutated graph did, and indexing it panicked)
        let first = out
            .first()
            .ok_or_else(|| RuntimeError::Backend("tract: the graph gave no output".into()))?;
        let view = first.to_plain_array_view::<f32>().map_err(err)?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        Logits::from_output(&shape, view.iter().copied().collect())
    }
}
